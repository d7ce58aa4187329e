package mesh

import (
	"fmt"
	"net/http"
	"strings"

	"github.com/trellismesh/trellis/connect"
	"github.com/trellismesh/trellis/connect/intentions"
)

// AuthorizeHTTP decides one HTTP request from source to target: as
// Authorize, and when the deciding intention has L7 permissions, the first
// permission that matches r decides (none matching: the default policy).
func (c *Cache) AuthorizeHTTP(target string, source connect.ServiceID, r *http.Request) intentions.Decision {
	if b := c.Bundle(); b != nil && !strings.EqualFold(source.TrustDomain, b.TrustDomain) {
		return intentions.Decision{Reason: fmt.Sprintf("identity %s is of another trust domain than %s", source, b.TrustDomain)}
	}
	set, _, ok := c.intentions.get()
	if !ok {
		return intentions.Decision{Reason: "the intentions are not known yet"}
	}
	return set.DecideHTTP(source.Service, target, r, c.cfg.DefaultAllow)
}

// AuthorizeHTTP makes a service's authorizer decide HTTP requests too
// (the proxy's L7 path asks for it).
func (a authorizer) AuthorizeHTTP(source connect.ServiceID, r *http.Request) intentions.Decision {
	return a.c.AuthorizeHTTP(a.target, source, r)
}
