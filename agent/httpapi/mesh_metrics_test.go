package httpapi

import (
	"net/http"
	"strings"
	"testing"

	"github.com/trellismesh/trellis/api"
)

// An external proxy's counts reach the agent validated; bad ones are a
// 400 naming what is wrong, and nothing is kept.
func TestAgentProxyMetrics(t *testing.T) {
	t.Parallel()
	a, srv, _, cl := startAPI(t)
	good := api.MeshSample{Side: "outbound", Source: "web", Destination: "api", Protocol: "http", Requests: 3, Failures: 1, Latency: [][2]uint64{{1024, 3}}}
	if err := cl.Agent().ConnectProxyMetrics([]api.MeshSample{good}, nil); err != nil {
		t.Fatal(err)
	}
	a.mu.Lock()
	got := a.samples
	a.mu.Unlock()
	if len(got) != 1 || got[0].Source != "web" || got[0].Requests != 3 || got[0].Failures != 1 || len(got[0].Latency) != 1 {
		t.Fatalf("the agent got %+v", got)
	}

	bad := good
	bad.Failures = 9
	if err := cl.Agent().ConnectProxyMetrics([]api.MeshSample{bad}, nil); err == nil || !strings.Contains(err.Error(), "Samples") {
		t.Errorf("more failures than requests: %v", err)
	}
	bad = good
	bad.Side = "sideways"
	if err := cl.Agent().ConnectProxyMetrics([]api.MeshSample{bad}, nil); err == nil || !strings.Contains(err.Error(), "Side") {
		t.Errorf("an unknown side: %v", err)
	}
	resp, _ := do(t, http.MethodPut, "http://"+srv.Addrs()[0].String()+"/v1/agent/connect/proxy-metrics", strings.NewReader(strings.Repeat(" ", MaxBodyBytes+10)))
	if resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Errorf("a body over the cap: %d", resp.StatusCode)
	}
	a.mu.Lock()
	n := len(a.samples)
	a.mu.Unlock()
	if n != 1 {
		t.Errorf("%d samples kept after the refused ones, want 1", n)
	}
}
