package main

import (
	"encoding/json"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/trellismesh/trellis/api"
	"github.com/trellismesh/trellis/internal/retry"
	"github.com/trellismesh/trellis/internal/testcluster"
	"github.com/trellismesh/trellis/internal/testutil"
)

// TestCLI_ConnectMetrics: connections from web to api through web's
// sidecar, on a dev agent that reports every 200ms, show up as the
// web → api row of `trellis connect metrics`.
func TestCLI_ConnectMetrics(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	t.Parallel()
	a := testcluster.StartAgent(t, testcluster.Options{Name: "cli-metrics", HCL: `telemetry { mesh_metrics_interval = "200ms" }`})
	addr := a.HTTPAddr()

	// Before any traffic, the table says there is none, and when it comes.
	if r := run(t, addr, "connect", "metrics"); r.code != 0 || !strings.Contains(r.stdout, "No traffic through the mesh in the last 30s") ||
		!strings.Contains(r.stdout, "telemetry.mesh_metrics_interval") {
		t.Errorf("no traffic yet: %+v", r)
	}

	up := testutil.FreePorts(t, 1)[0]
	apiFile, webFile := meshServiceFiles(t, "api", up)
	for _, f := range []string{apiFile, webFile} {
		if r := run(t, addr, "services", "register", f); r.code != 0 {
			t.Fatalf("register %s: %+v", f, r)
		}
	}
	// Whatever the agent's default policy, web may call api.
	if r := run(t, addr, "intention", "create", "web", "api"); r.code != 0 {
		t.Fatalf("intention create: %+v", r)
	}
	upstream := fmt.Sprintf("127.0.0.1:%d", up)
	retry.RunWith(&retry.Timer{Timeout: 30 * time.Second, Wait: 100 * time.Millisecond}, t, func(r *retry.R) {
		if body, err := fetch(upstream, "/warm"); err != nil || body != "api /warm" {
			r.Fatalf("through web's upstream: %q, %v", body, err)
		}
	})
	for i := range 5 {
		if body, err := fetch(upstream, "/"); err != nil || body != "api /" {
			t.Fatalf("request %d: %q, %v", i, body, err)
		}
	}

	// tcp (the default protocol) counts connections; both sidecars report,
	// and the figures shown are the outbound side's. The warm-up may have
	// failed a few times before web's proxy knew api's instance, and those
	// may be reported first: wait for the six that passed.
	header := regexp.MustCompile(`(?m)^SOURCE\s+DESTINATION\s+PROTO\s+RATE\s+SUCCESS\s+P50\s+P99\s+SEEN BY$`)
	row := regexp.MustCompile(`(?m)^web\s+api\s+tcp\s+\d+\.\d+ conn/s\s+\d+(\.\d)?%\s+\d+\.\d+m?s\s+\d+\.\d+m?s\s+outbound$`)
	var table string
	retry.RunWith(&retry.Timer{Timeout: 30 * time.Second, Wait: 200 * time.Millisecond}, t, func(r *retry.R) {
		res := run(t, addr, "connect", "metrics", "-format", "json", "-window", "1m", "api")
		if res.code != 0 {
			r.Fatalf("-format json: %+v", res)
		}
		var m api.MeshMetrics
		if err := json.Unmarshal([]byte(res.stdout), &m); err != nil {
			r.Fatalf("-format json does not parse as api.MeshMetrics: %v\n%s", err, res.stdout)
		}
		if m.Window != "1m0s" || len(m.Edges) != 1 {
			r.Fatalf("-format json: %+v", m)
		}
		e := m.Edges[0]
		if e.Source != "web" || e.Destination != "api" || e.Unit != "connections" {
			r.Fatalf("-format json edge: %+v", e)
		}
		for side, s := range map[string]*api.MeshEdgeSide{"outbound": e.Outbound, "inbound": e.Inbound} {
			if s == nil || s.Requests-s.Failures < 6 {
				r.Fatalf("-format json %s side: %+v", side, s)
			}
		}
		res = run(t, addr, "connect", "metrics", "api")
		if res.code != 0 || !header.MatchString(res.stdout) || !row.MatchString(res.stdout) {
			r.Fatalf("connect metrics api has no web → api row: %+v", res)
		}
		table = res.stdout
	})
	t.Logf("connect metrics api:\n%s", table)

	// -service is the argument's twin; a filter that matches nothing leaves
	// the helpful line.
	if r := run(t, addr, "connect", "metrics", "-service", "web", "-window", "5m"); r.code != 0 || !row.MatchString(r.stdout) {
		t.Errorf("-service web -window 5m: %+v", r)
	}
	if r := run(t, addr, "connect", "metrics", "-filter", "Protocol == http", "web"); r.code != 0 ||
		!strings.Contains(r.stdout, "No traffic to or from web matching the filter in the last 30s") {
		t.Errorf("-filter 'Protocol == http': %+v", r)
	}

	for _, tc := range []struct {
		args []string
		err  string
	}{
		{[]string{"connect", "metrics", "-window", "soon"}, `-window "soon"`},
		{[]string{"connect", "metrics", "-window", "10m"}, "-window 10m: at most 5m"},
		{[]string{"connect", "metrics", "-format", "yaml"}, `-format "yaml"`},
		{[]string{"connect", "metrics", "web", "api"}, "at most one argument"},
		{[]string{"connect", "metrics", "-filter", "Protocol ==", "api"}, "the agent answered 400"},
	} {
		if r := run(t, addr, tc.args...); r.code != 1 || !strings.Contains(r.stderr, tc.err) {
			t.Errorf("trellis %s: %+v, want exit 1 and stderr with %q", strings.Join(tc.args, " "), r, tc.err)
		}
	}
	if r := run(t, "127.0.0.1:1", "connect", "metrics"); r.code != 1 || !strings.Contains(r.stderr, "connection refused") {
		t.Errorf("no agent: %+v", r)
	}
}
