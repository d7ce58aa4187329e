package httpapi

import (
	"net/http"
	"strings"

	"github.com/trellismesh/trellis/internal/authz"
)

// routeAccess is what a route asks the Authorizer: the resource, the path
// value that names it (if any), and the access when the method does not
// say it (GET and HEAD read, the others write).
type routeAccess struct {
	prefix   string
	resource authz.Resource // "" for routes anyone may call
	name     string         // path value naming the resource
	access   authz.Access   // when set, the access whatever the method
}

// routeAccesses map route patterns, longest prefix first, to what they
// touch, in the terms of Consul's ACL rules.
var routeAccesses = []routeAccess{
	{prefix: "/v1/agent/connect/authorize", resource: authz.Intention, access: authz.Read},
	// A leaf comes with its private key: who gets it can act as the service.
	{prefix: "/v1/agent/connect/ca/leaf/", resource: authz.Service, name: "service", access: authz.Write},
	{prefix: "/v1/agent/connect/ca/roots", resource: authz.Mesh},
	{prefix: "/v1/agent/connect/proxy-config/", resource: authz.Service},
	{prefix: "/v1/agent/connect/proxy-metrics", resource: authz.Service},
	{prefix: "/v1/agent/health/service/", resource: authz.Service, name: "name"},
	{prefix: "/v1/agent/service", resource: authz.Service},
	{prefix: "/v1/agent/check", resource: authz.Node},
	{prefix: "/v1/agent/", resource: authz.Agent},
	{prefix: "/v1/catalog/register", resource: authz.Node},
	{prefix: "/v1/catalog/deregister", resource: authz.Node},
	{prefix: "/v1/catalog/node", resource: authz.Node, name: "node"},
	{prefix: "/v1/catalog/datacenters"},
	{prefix: "/v1/catalog/", resource: authz.Service, name: "name"},
	{prefix: "/v1/health/node/", resource: authz.Node, name: "node"},
	{prefix: "/v1/health/state/", resource: authz.Node},
	{prefix: "/v1/health/", resource: authz.Service, name: "name"},
	{prefix: "/v1/status/"},
	{prefix: "/v1/operator/keyring", resource: authz.Keyring},
	{prefix: "/v1/operator/", resource: authz.Operator},
	{prefix: "/v1/connect/ca/configuration", resource: authz.Operator},
	{prefix: "/v1/connect/ca/rotate", resource: authz.Operator},
	{prefix: "/v1/connect/ca/", resource: authz.Mesh},
	{prefix: "/v1/connect/intentions", resource: authz.Intention},
	{prefix: "/v1/connect/metrics", resource: authz.Service},
	{prefix: "/v1/config", resource: authz.Mesh},
	{prefix: "/v1/discovery-chain/", resource: authz.Service, name: "service", access: authz.Read},
}

// accessOf returns what pattern's route touches; ok is false for a
// pattern the table does not cover (a test keeps that from happening).
func accessOf(pattern string) (routeAccess, bool) {
	for _, ra := range routeAccesses {
		if strings.HasPrefix(pattern, ra.prefix) {
			return ra, true
		}
	}
	return routeAccess{}, false
}

// request builds the authorization request of r.
func (ra routeAccess) request(r *http.Request) authz.Request {
	req := authz.Request{Token: requestToken(r), Resource: ra.resource, Access: authz.Read}
	if ra.name != "" {
		req.Name = r.PathValue(ra.name)
	}
	switch {
	case ra.access != 0:
		req.Access = ra.access
	case r.Method != http.MethodGet && r.Method != http.MethodHead:
		req.Access = authz.Write
	}
	return req
}

// requestToken is the caller's ACL token, as Consul's clients send it:
// the X-Consul-Token header, an Authorization bearer, or ?token=.
func requestToken(r *http.Request) string {
	if t := r.Header.Get("X-Consul-Token"); t != "" {
		return t
	}
	if t, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok {
		return strings.TrimSpace(t)
	}
	return r.URL.Query().Get("token")
}
