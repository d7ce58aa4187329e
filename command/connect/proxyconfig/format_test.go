package proxyconfig

import (
	"strings"
	"testing"
	"time"

	"github.com/trellismesh/trellis/api"
)

func TestFormatText(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 0, 0, 0, time.UTC)
	pc := &api.ProxyConfig{
		Proxy: api.ProxyDescription{
			ProxyID: "web-sidecar-proxy", Service: "web", PublicAddr: "127.0.0.1:21000", LocalAppAddr: "127.0.0.1:8080",
			ServiceConfig: api.ProxyServiceConfig{Protocol: "http", LocalRequestTimeout: "3s", MaxInboundConnections: 7},
			Upstreams: []api.ProxyUpstream{{
				DestinationName: "db", LocalAddr: "127.0.0.1:9191", Protocol: "tcp", Mode: "tcp",
				Chain: &api.ProxyChain{ServiceName: "db", Target: "db.default.default.dc1", Failover: []string{"db-v2.default.default.dc1"}},
				Targets: []api.ProxyTarget{
					{ID: "db.default.default.dc1", Identity: "db", Role: "primary", Instances: []api.ProxyInstance{
						{Addr: "10.0.0.1:21000", Node: "n1", Identity: "db", BackedOff: true, BackoffUntil: now.Add(time.Second)},
						{Addr: "10.0.0.2:21000", Node: "n2", Identity: "db", ActiveRequests: 3, ConsecutiveFailures: 5, Ejected: true, EjectedUntil: now.Add(30 * time.Second)}}},
					{ID: "db-v2.default.default.dc1", Identity: "db-v2", Role: "failover"},
				},
			}},
			Certificate: &api.ProxyCertificate{SpiffeID: "spiffe://x.trellis/ns/default/dc/dc1/svc/web", Serial: "01", NotBefore: now.Add(-time.Hour), NotAfter: now.Add(2 * time.Hour)},
			TrustBundle: &api.ProxyTrustBundle{TrustDomain: "x.trellis", Roots: 2, ActiveRootID: "aa"},
		},
		Intentions:             []*api.Intention{{SourceName: "api", DestinationName: "web", Action: "allow", Precedence: 9}, {SourceName: "*", DestinationName: "web", Action: "deny", Precedence: 8}},
		DefaultIntentionPolicy: "deny",
	}
	out := formatText(pc, now)
	for _, want := range []string{
		"Proxy web-sidecar-proxy (service web)",
		"Public listener: 127.0.0.1:21000 -> application 127.0.0.1:8080",
		"Protocol:        http (local request timeout 3s, max inbound 7)",
		"  db on 127.0.0.1:9191, mode tcp, protocol tcp, 0 active",
		"chain of db: target db.default.default.dc1, failover db-v2.default.default.dc1",
		"target db.default.default.dc1 (primary, identity db):",
		"10.0.0.1:21000 node n1 identity db, 0 active, backed off for 1s",
		"10.0.0.2:21000 node n2 identity db, 3 active, 5 failures in a row, ejected for 30s",
		"target db-v2.default.default.dc1 (failover, identity db-v2):\n      (no instances)",
		"default policy deny):\n  api => web allow (precedence 9)\n  * => web deny (precedence 8)",
		"Certificate: spiffe://x.trellis/ns/default/dc/dc1/svc/web",
		"(2h0m0s left)",
		"Trust:   x.trellis, 2 root(s), active aa",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}
