package httpapi

import (
	"net/http"

	"github.com/trellismesh/trellis/raftstore/structs"
)

func (s *Server) statusLeader(w http.ResponseWriter, r *http.Request) (any, error) {
	var leader string
	if err := s.agent.RPC(r.Context(), structs.MethodStatusLeader, &struct{}{}, &leader); err != nil {
		return nil, err
	}
	setLeaderHeaders(w, leader != "", 0)
	return leader, nil
}

func (s *Server) statusPeers(w http.ResponseWriter, r *http.Request) (any, error) {
	var peers []string
	if err := s.agent.RPC(r.Context(), structs.MethodStatusPeers, &struct{}{}, &peers); err != nil {
		return nil, err
	}
	setLeaderHeaders(w, len(peers) > 0, 0)
	return nonNilSlice(peers), nil
}
