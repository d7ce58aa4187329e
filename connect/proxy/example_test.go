package proxy_test

import (
	"crypto/tls"
	"log"
	"sync/atomic"

	"github.com/trellismesh/trellis/connect"
	"github.com/trellismesh/trellis/connect/intentions"
	"github.com/trellismesh/trellis/connect/proxy"
)

// certs is a CertSource fed by whatever renews the leaf and watches the
// roots (the agent's proxy manager).
type certs struct {
	leaf   atomic.Pointer[tls.Certificate]
	bundle atomic.Pointer[connect.Bundle]
}

func (c *certs) Certificate() *tls.Certificate { return c.leaf.Load() }
func (c *certs) Bundle() *connect.Bundle       { return c.bundle.Load() }

// The sidecar of service web, whose application listens on 127.0.0.1:8080
// and reaches db through 127.0.0.1:9191.
func Example() {
	src := &certs{} // filled in by the certificate watch
	var ixns atomic.Pointer[intentions.Set]
	ixns.Store(intentions.NewSet(nil)) // replaced by the intentions watch

	p, err := proxy.New(proxy.Config{
		ProxyID:      "web-sidecar-proxy",
		Service:      "web",
		PublicAddr:   "0.0.0.0:21000",
		LocalAppAddr: "127.0.0.1:8080",
		Upstreams:    []proxy.UpstreamConfig{{DestinationName: "db", LocalBindPort: 9191}},
		Certs:        src,
		Authorizer: proxy.AuthorizerFunc(func(source connect.ServiceID) intentions.Decision {
			return ixns.Load().Decide(source.Service, "web", false)
		}),
	})
	if err != nil {
		log.Fatal(err)
	}
	defer p.Close()

	// From the catalog watch of db's healthy sidecars:
	p.SetInstances("db", []proxy.Instance{
		{Node: "node-2", Addr: "10.0.0.2:21000", Service: "db"},
		{Node: "node-3", Addr: "10.0.0.3:21000", Service: "db"},
	})
	// After an intentions update:
	p.Reauthorize()
	// After a change of the trusted roots:
	p.Reverify()
}
