package httpapi

import (
	"errors"
	"net/http"

	"github.com/trellismesh/trellis/api"
	"github.com/trellismesh/trellis/raftstore/structs"
)

func (s *Server) agentJoin(w http.ResponseWriter, r *http.Request) (any, error) {
	if _, err := s.agent.Join(r.Context(), []string{r.PathValue("address")}); err != nil {
		return nil, err
	}
	return noBody, nil
}

func (s *Server) agentLeave(w http.ResponseWriter, r *http.Request) (any, error) {
	if err := s.agent.Leave(r.Context()); err != nil {
		return nil, err
	}
	return noBody, nil
}

func (s *Server) agentForceLeave(w http.ResponseWriter, r *http.Request) (any, error) {
	if err := s.agent.ForceLeave(r.Context(), r.PathValue("node")); err != nil {
		return nil, err
	}
	return noBody, nil
}

func (s *Server) operatorRaftRemovePeer(w http.ResponseWriter, r *http.Request) (any, error) {
	q := r.URL.Query()
	req := &structs.RaftRemovePeerRequest{Datacenter: q.Get("dc"), ID: q.Get("id"), Address: q.Get("address")}
	if err := s.agent.RPC(r.Context(), structs.MethodOperatorRaftRemovePeer, req, &struct{}{}); err != nil {
		return nil, err
	}
	return noBody, nil
}

// keyringOps maps the methods of /v1/operator/keyring to operations.
var keyringOps = map[string]string{
	http.MethodGet: "list", http.MethodPost: "install", http.MethodPut: "use", http.MethodDelete: "remove",
}

func (s *Server) operatorKeyring(w http.ResponseWriter, r *http.Request) (any, error) {
	op := keyringOps[r.Method]
	var body api.KeyringRequest
	if op != "list" {
		if err := decodeBody(r, &body, false); err != nil {
			return nil, err
		}
		if body.Key == "" {
			return nil, structs.Invalid("Key", "required")
		}
	}
	resp, err := s.agent.Keyring(r.Context(), op, body.Key)
	if err != nil {
		return nil, err
	}
	if op == "list" {
		setLeaderHeaders(w, true, 0)
		return []*api.KeyringResponse{resp}, nil
	}
	if len(resp.Messages) > 0 {
		msg := "keyring " + op + " failed on some members:"
		for node, m := range resp.Messages {
			msg += "\n  " + node + ": " + m
		}
		return nil, errors.New(msg)
	}
	return noBody, nil
}
