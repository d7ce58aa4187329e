package httpapi

import (
	"fmt"
	"net/http"

	"github.com/trellismesh/trellis/api"
	"github.com/trellismesh/trellis/connect/proxy"
	"github.com/trellismesh/trellis/raftstore/structs"
)

// ProxyConfigResponse is the body of GET /v1/agent/connect/proxy-config/{id},
// a Trellis path.
type ProxyConfigResponse struct {
	Proxy proxy.Description
	// Intentions apply to the proxy's service, in precedence order.
	Intentions []*api.Intention
	// DefaultIntentionPolicy is "allow" or "deny".
	DefaultIntentionPolicy string
}

// agentProxyConfig serves GET /v1/agent/connect/proxy-config/{id}.
func (s *Server) agentProxyConfig(_ http.ResponseWriter, r *http.Request) (any, error) {
	id := r.PathValue("id")
	desc, ixns, found := s.agent.DescribeProxy(id)
	if !found {
		return nil, fmt.Errorf("no proxy %q on this agent: %w", id, structs.ErrNotFound)
	}
	policy := "deny"
	if s.agent.DefaultIntentionAllow() {
		policy = "allow"
	}
	// toAPIIntentions sorts by precedence, the order ixns already has.
	return ProxyConfigResponse{Proxy: desc, Intentions: toAPIIntentions(ixns), DefaultIntentionPolicy: policy}, nil
}
