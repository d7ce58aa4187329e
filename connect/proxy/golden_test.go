package proxy

import (
	"testing"

	"github.com/trellismesh/trellis/connect"
	"github.com/trellismesh/trellis/connect/golden"
)

// Both sides of an L4 edge count connections and failures (a denial on
// each side) into the recorder the agent reports from.
func TestProxy_Golden_countsConnectionsOnBothSides(t *testing.T) {
	t.Parallel()
	rec := golden.NewRecorder()
	app := newEchoServer(t)
	ca := newTestCA(t, "root-1")
	b := bundle(t, ca)
	authz := newTestAuthz("db", true)
	server := startProxy(t, Config{ProxyID: proxyID(t, "db-sidecar"), Service: "db", LocalAppAddr: app.addr(),
		Certs: newTestCerts(ca.leaf("db", leafOpts{}), b), Authorizer: authz, Golden: rec})
	client := startProxy(t, Config{ProxyID: proxyID(t, "web-sidecar"), Service: "web",
		Certs: newTestCerts(ca.leaf("web", leafOpts{}), b), Upstreams: []UpstreamConfig{{DestinationName: "db"}}, Golden: rec})
	client.SetInstances("db", []Instance{{Node: "node-db", Addr: server.PublicAddr().String(), Service: "db"}})

	for range 3 {
		checkEcho(t, client, "db")
	}
	authz.setIntentions(intention("web", "db", connect.IntentionDeny))
	c := dialUpstream(t, client, "db")
	c.Write([]byte("let me in"))
	if err := expectClosed(c); err != nil {
		t.Fatal(err)
	}

	got := map[golden.Side]golden.Sample{}
	for _, s := range rec.Collect() {
		if s.Source != "web" || s.Destination != "db" || s.Protocol != "tcp" {
			t.Errorf("unexpected sample %+v", s)
		}
		got[s.Side] = s
	}
	for _, side := range []golden.Side{golden.Outbound, golden.Inbound} {
		s, ok := got[side]
		if !ok {
			t.Errorf("no %s sample", side)
			continue
		}
		if s.Requests != 4 || s.Failures != 1 {
			t.Errorf("%s: %d connections, %d failed; want 4 and 1", side, s.Requests, s.Failures)
		}
		if err := golden.Validate([]golden.Sample{s}); err != nil {
			t.Errorf("%s: %v", side, err)
		}
	}
}
