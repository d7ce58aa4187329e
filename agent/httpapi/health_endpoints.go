package httpapi

import (
	"net/http"

	"github.com/trellismesh/trellis/api"
	"github.com/trellismesh/trellis/raftstore/structs"
)

func (s *Server) healthService(w http.ResponseWriter, r *http.Request) (any, error) {
	return s.healthServiceNodes(w, r, false)
}

// healthConnect answers /v1/health/connect/:name: the mesh endpoints of the
// service (its sidecar proxies, with the checks of the instance each fronts
// folded in, and its mesh-native instances) in the shape of
// /v1/health/service/:name.
func (s *Server) healthConnect(w http.ResponseWriter, r *http.Request) (any, error) {
	return s.healthServiceNodes(w, r, true)
}

// healthServiceNodes answers the instances of a service, or with connect
// its mesh endpoints, with their checks.
func (s *Server) healthServiceNodes(w http.ResponseWriter, r *http.Request, connect bool) (any, error) {
	req, err := serviceRequest(r)
	if err != nil {
		return nil, err
	}
	req.PassingOnly = boolParam(r, "passing")
	req.Connect = connect
	var reply structs.IndexedCheckServiceNodes
	if err := s.agent.RPC(r.Context(), structs.MethodHealthServiceNodes, req, &reply); err != nil {
		return nil, err
	}
	setMeta(w, &reply.QueryMeta)
	out := make([]*api.ServiceEntry, 0, len(reply.Nodes))
	for _, n := range reply.Nodes {
		out = append(out, &api.ServiceEntry{
			Node:    toAPINode(n.Node),
			Service: toAPIService(n.Service, n.Node.Datacenter),
			Checks:  toAPIChecks(n.Checks),
		})
	}
	return applyFilter(r, out)
}

// checksAnswer writes a list of checks, filtered.
func checksAnswer(w http.ResponseWriter, r *http.Request, reply *structs.IndexedHealthChecks) (any, error) {
	setMeta(w, &reply.QueryMeta)
	return applyFilter(r, toAPIChecks(reply.HealthChecks))
}

func (s *Server) healthNode(w http.ResponseWriter, r *http.Request) (any, error) {
	req := &structs.NodeSpecificRequest{Node: r.PathValue("node")}
	if err := parseQuery(r, &req.Datacenter, &req.QueryOptions); err != nil {
		return nil, err
	}
	var reply structs.IndexedHealthChecks
	if err := s.agent.RPC(r.Context(), structs.MethodHealthNodeChecks, req, &reply); err != nil {
		return nil, err
	}
	return checksAnswer(w, r, &reply)
}

func (s *Server) healthChecks(w http.ResponseWriter, r *http.Request) (any, error) {
	req, err := serviceRequest(r)
	if err != nil {
		return nil, err
	}
	var reply structs.IndexedHealthChecks
	if err := s.agent.RPC(r.Context(), structs.MethodHealthServiceChecks, req, &reply); err != nil {
		return nil, err
	}
	return checksAnswer(w, r, &reply)
}

func (s *Server) healthState(w http.ResponseWriter, r *http.Request) (any, error) {
	req := &structs.ChecksInStateRequest{State: r.PathValue("state")}
	if err := parseQuery(r, &req.Datacenter, &req.QueryOptions); err != nil {
		return nil, err
	}
	var reply structs.IndexedHealthChecks
	if err := s.agent.RPC(r.Context(), structs.MethodHealthChecksInState, req, &reply); err != nil {
		return nil, err
	}
	return checksAnswer(w, r, &reply)
}
