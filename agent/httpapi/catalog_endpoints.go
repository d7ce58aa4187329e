package httpapi

import (
	"net/http"

	"github.com/trellismesh/trellis/api"
	"github.com/trellismesh/trellis/raftstore/structs"
)

func (s *Server) catalogRegister(w http.ResponseWriter, r *http.Request) (any, error) {
	var body catalogRegisterBody
	if err := decodeBody(r, &body, false); err != nil {
		return nil, err
	}
	if dc := r.URL.Query().Get("dc"); dc != "" && body.Datacenter == "" {
		body.Datacenter = dc
	}
	var reply structs.WriteReply
	if err := s.agent.RPC(r.Context(), structs.MethodCatalogRegister, body.toStructs(), &reply); err != nil {
		return nil, err
	}
	return true, nil
}

func (s *Server) catalogDeregister(w http.ResponseWriter, r *http.Request) (any, error) {
	var body struct {
		Node, Datacenter, ServiceID, CheckID string
	}
	if err := decodeBody(r, &body, false); err != nil {
		return nil, err
	}
	if dc := r.URL.Query().Get("dc"); dc != "" && body.Datacenter == "" {
		body.Datacenter = dc
	}
	req := &structs.DeregisterRequest{Datacenter: body.Datacenter, Node: body.Node, ServiceID: body.ServiceID, CheckID: body.CheckID}
	var reply structs.WriteReply
	if err := s.agent.RPC(r.Context(), structs.MethodCatalogDeregister, req, &reply); err != nil {
		return nil, err
	}
	return true, nil
}

func (s *Server) catalogDatacenters(w http.ResponseWriter, r *http.Request) (any, error) {
	var out []string
	if err := s.agent.RPC(r.Context(), structs.MethodCatalogListDatacenters, &structs.DCSpecificRequest{}, &out); err != nil {
		return nil, err
	}
	setLeaderHeaders(w, true, 0)
	return nonNilSlice(out), nil
}

func (s *Server) catalogNodes(w http.ResponseWriter, r *http.Request) (any, error) {
	var req structs.DCSpecificRequest
	if err := parseQuery(r, &req.Datacenter, &req.QueryOptions); err != nil {
		return nil, err
	}
	var err error
	if req.NodeMetaFilters, err = nodeMetaFilters(r); err != nil {
		return nil, err
	}
	var reply structs.IndexedNodes
	if err := s.agent.RPC(r.Context(), structs.MethodCatalogListNodes, &req, &reply); err != nil {
		return nil, err
	}
	setMeta(w, &reply.QueryMeta)
	out := make([]*api.Node, 0, len(reply.Nodes))
	for _, n := range reply.Nodes {
		out = append(out, toAPINode(n))
	}
	return applyFilter(r, out)
}

func (s *Server) catalogServices(w http.ResponseWriter, r *http.Request) (any, error) {
	var req structs.DCSpecificRequest
	if err := parseQuery(r, &req.Datacenter, &req.QueryOptions); err != nil {
		return nil, err
	}
	if r.URL.Query().Get("filter") != "" {
		return nil, badRequest("?filter is not supported on /v1/catalog/services; filter /v1/catalog/service/:name instead")
	}
	var reply structs.IndexedServices
	if err := s.agent.RPC(r.Context(), structs.MethodCatalogListServices, &req, &reply); err != nil {
		return nil, err
	}
	setMeta(w, &reply.QueryMeta)
	return nonNilMap(reply.Services), nil
}

// serviceRequest reads the parameters of the per-service endpoints.
func serviceRequest(r *http.Request) (*structs.ServiceSpecificRequest, error) {
	req := &structs.ServiceSpecificRequest{ServiceName: r.PathValue("name")}
	if err := parseQuery(r, &req.Datacenter, &req.QueryOptions); err != nil {
		return nil, err
	}
	if tags := r.URL.Query()["tag"]; len(tags) > 0 {
		req.ServiceTags, req.TagFilter = tags, true
	}
	var err error
	req.NodeMetaFilters, err = nodeMetaFilters(r)
	return req, err
}

func (s *Server) catalogService(w http.ResponseWriter, r *http.Request) (any, error) {
	return s.catalogServiceNodes(w, r, false)
}

// catalogConnect answers /v1/catalog/connect/:name: the mesh endpoints of
// the service (its sidecar proxies and its mesh-native instances) in the
// shape of /v1/catalog/service/:name.
func (s *Server) catalogConnect(w http.ResponseWriter, r *http.Request) (any, error) {
	return s.catalogServiceNodes(w, r, true)
}

// catalogServiceNodes answers the instances of a service, or with connect
// its mesh endpoints.
func (s *Server) catalogServiceNodes(w http.ResponseWriter, r *http.Request, connect bool) (any, error) {
	req, err := serviceRequest(r)
	if err != nil {
		return nil, err
	}
	req.Connect = connect
	var reply structs.IndexedServiceNodes
	if err := s.agent.RPC(r.Context(), structs.MethodCatalogServiceNodes, req, &reply); err != nil {
		return nil, err
	}
	setMeta(w, &reply.QueryMeta)
	out := make([]*api.CatalogService, 0, len(reply.ServiceNodes))
	for _, sn := range reply.ServiceNodes {
		out = append(out, toCatalogService(sn))
	}
	return applyFilter(r, out)
}

func (s *Server) catalogNode(w http.ResponseWriter, r *http.Request) (any, error) {
	req := &structs.NodeSpecificRequest{Node: r.PathValue("node")}
	if err := parseQuery(r, &req.Datacenter, &req.QueryOptions); err != nil {
		return nil, err
	}
	var reply structs.IndexedNodeServices
	if err := s.agent.RPC(r.Context(), structs.MethodCatalogNodeServices, req, &reply); err != nil {
		return nil, err
	}
	setMeta(w, &reply.QueryMeta)
	if reply.NodeServices == nil {
		// Consul answers an unknown node with null, not 404.
		return nil, nil
	}
	out := &api.CatalogNode{Node: toAPINode(reply.NodeServices.Node), Services: make(map[string]*api.AgentService)}
	for id, svc := range reply.NodeServices.Services {
		out.Services[id] = toAPIService(svc, reply.NodeServices.Node.Datacenter)
	}
	if r.URL.Query().Get("filter") != "" {
		filtered, err := applyFilter(r, out.Services)
		if err != nil {
			return nil, err
		}
		out.Services = filtered.(map[string]*api.AgentService)
	}
	return out, nil
}
