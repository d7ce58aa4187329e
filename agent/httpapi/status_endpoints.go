package httpapi

import (
	"net/http"

	"github.com/trellismesh/trellis/api"

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

func (s *Server) operatorRaftConfiguration(w http.ResponseWriter, r *http.Request) (any, error) {
	req := &structs.DCSpecificRequest{Datacenter: r.URL.Query().Get("dc")}
	var reply structs.RaftConfigurationResponse
	if err := s.agent.RPC(r.Context(), structs.MethodOperatorRaftConfig, req, &reply); err != nil {
		return nil, err
	}
	out := &api.RaftConfiguration{Index: reply.Index, Servers: []*api.RaftServer{}}
	for _, srv := range reply.Servers {
		out.Servers = append(out.Servers, &api.RaftServer{ID: srv.ID, Node: srv.Node, Address: srv.Address, Leader: srv.Leader, Voter: srv.Voter, ProtocolVersion: "3"})
	}
	setLeaderHeaders(w, true, 0)
	return out, nil
}
