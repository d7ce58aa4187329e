package agent_test

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/trellismesh/trellis/api"
	"github.com/trellismesh/trellis/internal/retry"
	"github.com/trellismesh/trellis/internal/testcluster"
	"github.com/trellismesh/trellis/internal/testutil"
)

// TestMesh_GoldenMetricsAcrossAgents sends traffic from web (one client
// agent) to api (another); each agent reports its proxy's side to the
// leader, and any agent answers /v1/connect/metrics with both sides (and
// /v1/connect/ca/leaves with the leaves of both nodes).
func TestMesh_GoldenMetricsAcrossAgents(t *testing.T) {
	t.Parallel()
	c := testcluster.StartCluster(t, testcluster.ClusterOptions{Servers: 1, Clients: 2, Modify: func(i int, o *testcluster.Options) {
		o.HCL = `telemetry { mesh_metrics_interval = "200ms" }`
	}})
	up := testutil.FreePorts(t, 1)[0]
	registerWithSidecar(t, c.Clients[1], "api", startHTTPApp(t, "api"), nil)
	registerWithSidecar(t, c.Clients[0], "web", startHTTPApp(t, "web"), map[string]int{"api": up})
	upstream := fmt.Sprintf("127.0.0.1:%d", up)
	retry.RunWith(&retry.Timer{Timeout: 30 * time.Second, Wait: 20 * time.Millisecond}, t, func(r *retry.R) {
		if body, err := get(upstream, "/warm"); err != nil || body != "api /warm" {
			r.Fatalf("through the upstream: %q, %v", body, err)
		}
	})
	const n = 20
	for i := range n {
		if body, err := get(upstream, "/"); err != nil || body != "api /" {
			t.Fatalf("request %d: %q, %v", i, body, err)
		}
	}

	// Asked through the agent that runs neither proxy.
	for _, via := range []*testcluster.Agent{c.Servers[0], c.Clients[1]} {
		retry.RunWith(&retry.Timer{Timeout: 20 * time.Second, Wait: 100 * time.Millisecond}, t, func(r *retry.R) {
			m, err := trellisClient(t, via).Connect().Metrics("api", 5*time.Minute, nil)
			if err != nil {
				r.Fatal(err)
			}
			if len(m.Edges) != 1 {
				r.Fatalf("edges %+v", m.Edges)
			}
			e := m.Edges[0]
			if e.Source != "web" || e.Destination != "api" || e.Protocol != "tcp" || e.Unit != "connections" || m.Window != "5m0s" {
				r.Fatalf("edge %+v in window %s", e, m.Window)
			}
			// The warm-up may have taken a few tries (before the proxy
			// knew api's instance, they failed).
			for side, s := range map[string]*api.MeshEdgeSide{"outbound": e.Outbound, "inbound": e.Inbound} {
				if s == nil || s.Requests-s.Failures < n+1 || s.Reporters != 1 || s.RequestsPerSecond <= 0 || s.P99Ms <= 0 || s.P50Ms > s.P99Ms {
					r.Fatalf("%s side %+v", side, s)
				}
			}
			if e.Inbound.Failures != 0 {
				r.Fatalf("inbound failures %d: the destination refused nothing", e.Inbound.Failures)
			}
		})
	}

	// The running totals of web's side, as Prometheus scrapes web's agent:
	// counters and a latency histogram whose +Inf bucket is its count.
	retry.RunWith(&retry.Timer{Timeout: 10 * time.Second, Wait: 100 * time.Millisecond}, t, func(r *retry.R) {
		resp, err := http.Get("http://" + c.Clients[0].HTTPAddr() + "/v1/agent/metrics?format=prometheus")
		if err != nil {
			r.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		text := string(b)
		const lbl = `side="outbound",source="web",destination="api",protocol="tcp"`
		var reqs, inf, count int
		for _, line := range strings.Split(text, "\n") {
			var v int
			switch {
			case strings.HasPrefix(line, "trellis_mesh_edge_requests_total{"+lbl+"} "):
				fmt.Sscan(line[strings.LastIndexByte(line, ' ')+1:], &v)
				reqs = v
			case strings.HasPrefix(line, "trellis_mesh_edge_latency_seconds_bucket{"+lbl+`,le="+Inf"} `):
				fmt.Sscan(line[strings.LastIndexByte(line, ' ')+1:], &v)
				inf = v
			case strings.HasPrefix(line, "trellis_mesh_edge_latency_seconds_count{"+lbl+"} "):
				fmt.Sscan(line[strings.LastIndexByte(line, ' ')+1:], &v)
				count = v
			}
		}
		if reqs < n+1 || inf != reqs || count != reqs || !strings.Contains(text, "# TYPE trellis_mesh_edge_latency_seconds histogram") {
			r.Fatalf("requests %d, +Inf bucket %d, count %d; want at least %d, all equal", reqs, inf, count, n+1)
		}
	})

	// The leaves of both services, on the nodes that hold them, as any
	// agent answers.
	leaves, _, err := trellisClient(t, c.Servers[0]).Connect().CALeaves(nil)
	if err != nil {
		t.Fatal(err)
	}
	held := map[string]string{}
	for _, l := range leaves {
		held[l.Service] = l.Node
		if l.SerialNumber == "" || l.RootID == "" || time.Until(l.ValidBefore) < time.Hour {
			t.Errorf("leaf %+v", l)
		}
	}
	if held["api"] != c.Clients[1].Config.NodeName || held["web"] != c.Clients[0].Config.NodeName {
		t.Errorf("leaves held: %v", held)
	}

	// A sample from a proxy this agent does not front is refused, and
	// nothing of its request is kept.
	err = trellisClient(t, c.Clients[0]).Agent().ConnectProxyMetrics([]api.MeshSample{
		{Side: "outbound", Source: "web", Destination: "api", Protocol: "tcp", Requests: 1},
		{Side: "inbound", Source: "web", Destination: "made-up", Protocol: "tcp", Requests: 1},
	}, nil)
	if err == nil || !strings.Contains(err.Error(), `Samples[1]`) || !strings.Contains(err.Error(), "made-up") {
		t.Errorf("a sample of a service without a sidecar here: %v", err)
	}

	// A bad filter or window is refused, naming it.
	_, err = trellisClient(t, c.Clients[0]).Connect().Metrics("", -time.Second, &api.QueryOptions{Filter: "Protocol =="})
	if err == nil || !strings.Contains(err.Error(), "filter") {
		t.Errorf("a bad filter: %v", err)
	}
	resp, err := http.Get("http://" + c.Clients[0].HTTPAddr() + "/v1/connect/metrics?window=soon")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), "window") {
		t.Errorf("window=soon: %d %s", resp.StatusCode, body)
	}
}

func trellisClient(t *testing.T, a *testcluster.Agent) *api.Client {
	t.Helper()
	cl, err := api.NewClient(&api.Config{Address: a.HTTPAddr()})
	if err != nil {
		t.Fatal(err)
	}
	return cl
}
