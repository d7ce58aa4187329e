package httpapi

import (
	"net/http"
)

// route is one line of the route table.
type route struct {
	methods []string
	pattern string
	handler func(s *Server) handlerFunc
}

var (
	get = []string{http.MethodGet}
	put = []string{http.MethodPut}
)

// routes is the whole HTTP API. Patterns are Go ServeMux patterns; the
// methods are checked by the wrapper so that OPTIONS and 405 behave alike.
var routes = []route{
	// The local agent.
	{get, "/v1/agent/self", func(s *Server) handlerFunc { return s.agentSelf }},
	{get, "/v1/agent/members", func(s *Server) handlerFunc { return s.agentMembers }},
	{get, "/v1/agent/metrics", func(s *Server) handlerFunc { return s.agentMetrics }},
	{get, "/v1/agent/services", func(s *Server) handlerFunc { return s.agentServices }},
	{get, "/v1/agent/service/{id}", func(s *Server) handlerFunc { return s.agentService }},
	{put, "/v1/agent/service/register", func(s *Server) handlerFunc { return s.agentServiceRegister }},
	{put, "/v1/agent/service/deregister/{id}", func(s *Server) handlerFunc { return s.agentServiceDeregister }},
	{get, "/v1/agent/checks", func(s *Server) handlerFunc { return s.agentChecks }},
	{put, "/v1/agent/check/register", func(s *Server) handlerFunc { return s.agentCheckRegister }},
	{put, "/v1/agent/check/deregister/{id}", func(s *Server) handlerFunc { return s.agentCheckDeregister }},
	{put, "/v1/agent/check/pass/{id}", func(s *Server) handlerFunc { return s.agentCheckTTL("pass") }},
	{put, "/v1/agent/check/warn/{id}", func(s *Server) handlerFunc { return s.agentCheckTTL("warn") }},
	{put, "/v1/agent/check/fail/{id}", func(s *Server) handlerFunc { return s.agentCheckTTL("fail") }},
	{put, "/v1/agent/check/update/{id}", func(s *Server) handlerFunc { return s.agentCheckUpdate }},
	{get, "/v1/agent/health/service/name/{name}", func(s *Server) handlerFunc { return s.agentHealthByName }},
	{get, "/v1/agent/health/service/id/{id}", func(s *Server) handlerFunc { return s.agentHealthByID }},
	{put, "/v1/agent/join/{address}", func(s *Server) handlerFunc { return s.agentJoin }},
	{put, "/v1/agent/leave", func(s *Server) handlerFunc { return s.agentLeave }},
	{put, "/v1/agent/force-leave/{node}", func(s *Server) handlerFunc { return s.agentForceLeave }},

	// The catalog.
	{put, "/v1/catalog/register", func(s *Server) handlerFunc { return s.catalogRegister }},
	{put, "/v1/catalog/deregister", func(s *Server) handlerFunc { return s.catalogDeregister }},
	{get, "/v1/catalog/datacenters", func(s *Server) handlerFunc { return s.catalogDatacenters }},
	{get, "/v1/catalog/nodes", func(s *Server) handlerFunc { return s.catalogNodes }},
	{get, "/v1/catalog/services", func(s *Server) handlerFunc { return s.catalogServices }},
	{get, "/v1/catalog/service/{name}", func(s *Server) handlerFunc { return s.catalogService }},
	{get, "/v1/catalog/connect/{name}", func(s *Server) handlerFunc { return s.catalogConnect }},
	{get, "/v1/catalog/node/{node}", func(s *Server) handlerFunc { return s.catalogNode }},

	// Health.
	{get, "/v1/health/service/{name}", func(s *Server) handlerFunc { return s.healthService }},
	{get, "/v1/health/connect/{name}", func(s *Server) handlerFunc { return s.healthConnect }},
	{get, "/v1/health/node/{node}", func(s *Server) handlerFunc { return s.healthNode }},
	{get, "/v1/health/checks/{name}", func(s *Server) handlerFunc { return s.healthChecks }},
	{get, "/v1/health/state/{state}", func(s *Server) handlerFunc { return s.healthState }},

	// Status.
	{get, "/v1/status/leader", func(s *Server) handlerFunc { return s.statusLeader }},
	{get, "/v1/status/peers", func(s *Server) handlerFunc { return s.statusPeers }},

	// Operator.
	{get, "/v1/operator/raft/configuration", func(s *Server) handlerFunc { return s.operatorRaftConfiguration }},
	{[]string{http.MethodDelete}, "/v1/operator/raft/peer", func(s *Server) handlerFunc { return s.operatorRaftRemovePeer }},
	{[]string{http.MethodGet, http.MethodPost, http.MethodPut, http.MethodDelete}, "/v1/operator/keyring", func(s *Server) handlerFunc { return s.operatorKeyring }},

	// The mesh: certificate authority and intentions.
	{get, "/v1/connect/ca/roots", func(s *Server) handlerFunc { return s.connectCARoots }},
	{[]string{http.MethodGet, http.MethodPut}, "/v1/connect/ca/configuration", func(s *Server) handlerFunc { return s.connectCAConfiguration }},
	{[]string{http.MethodPost}, "/v1/connect/ca/rotate", func(s *Server) handlerFunc { return s.connectCARotate }},
	{get, "/v1/connect/ca/leaves", func(s *Server) handlerFunc { return s.connectCALeaves }},
	{get, "/v1/agent/connect/ca/roots", func(s *Server) handlerFunc { return s.agentConnectCARoots }},
	{get, "/v1/agent/connect/ca/leaf/{service}", func(s *Server) handlerFunc { return s.agentConnectCALeaf }},
	{[]string{http.MethodPost}, "/v1/agent/connect/authorize", func(s *Server) handlerFunc { return s.agentConnectAuthorize }},
	{get, "/v1/agent/connect/proxy-config/{id}", func(s *Server) handlerFunc { return s.agentProxyConfig }},
	{[]string{http.MethodPut}, "/v1/agent/connect/proxy-metrics", func(s *Server) handlerFunc { return s.agentProxyMetrics }},
	{[]string{http.MethodGet, http.MethodPost}, "/v1/connect/intentions", func(s *Server) handlerFunc { return s.connectIntentions }},
	{[]string{http.MethodGet, http.MethodPut, http.MethodDelete}, "/v1/connect/intentions/exact", func(s *Server) handlerFunc { return s.connectIntentionExact }},
	{get, "/v1/connect/intentions/match", func(s *Server) handlerFunc { return s.connectIntentionMatch }},
	{get, "/v1/connect/intentions/check", func(s *Server) handlerFunc { return s.connectIntentionCheck }},
	{get, "/v1/connect/metrics", func(s *Server) handlerFunc { return s.connectMetrics }},
	{[]string{http.MethodGet, http.MethodPut, http.MethodDelete}, "/v1/connect/intentions/{id}", func(s *Server) handlerFunc { return s.connectIntentionByID }},

	// Config entries and discovery chains (config_endpoints.go).
	{put, "/v1/config", func(s *Server) handlerFunc { return s.configApply }},
	{get, "/v1/config/{kind}", func(s *Server) handlerFunc { return s.configList }},
	{[]string{http.MethodGet, http.MethodDelete}, "/v1/config/{kind}/{name}", func(s *Server) handlerFunc { return s.configEntry }},
	{[]string{http.MethodGet, http.MethodPost}, "/v1/discovery-chain/{service}", func(s *Server) handlerFunc { return s.discoveryChain }},
}

func (s *Server) registerRoutes(ui http.Handler) {
	for _, rt := range routes {
		s.mux.Handle(rt.pattern, s.wrap(rt.pattern, rt.methods, rt.handler(s)))
	}
	s.mux.Handle("/v1/", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "no such endpoint: "+r.URL.Path, http.StatusNotFound)
	}))
	if ui != nil {
		s.mux.Handle("/ui/", ui)
		s.mux.Handle("/{$}", http.RedirectHandler("/ui/", http.StatusMovedPermanently))
	} else {
		s.mux.Handle("/ui/", uiDisabled())
		s.mux.Handle("/{$}", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			_, _ = w.Write([]byte("Trellis agent: the HTTP API is under /v1/ (the web UI is disabled)\n"))
		}))
	}
}
