package connectmetrics

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/trellismesh/trellis/api"
)

func TestFormatTable(t *testing.T) {
	m := &api.MeshMetrics{Window: "30s", Edges: []api.MeshEdge{
		{Source: "web", Destination: "api", Protocol: "http", Unit: "requests",
			Outbound: &api.MeshEdgeSide{Requests: 370, Failures: 1, RequestsPerSecond: 12.333, SuccessRate: 0.997297, P50Ms: 1.234, P99Ms: 48.26, Reporters: 2},
			Inbound:  &api.MeshEdgeSide{Requests: 370, RequestsPerSecond: 12.333, SuccessRate: 1, P50Ms: 0.8, P99Ms: 30, Reporters: 1}},
		{Source: "api", Destination: "db", Protocol: "tcp", Unit: "connections",
			Inbound: &api.MeshEdgeSide{Requests: 120, RequestsPerSecond: 4, SuccessRate: 1, P50Ms: 0.42, P99Ms: 2.5, Reporters: 1}},
		{Source: "batch", Destination: "db", Protocol: "tcp", Unit: "connections"},
	}}
	got := formatTable(m, query{window: 30 * time.Second})
	lines := strings.Split(strings.TrimRight(got, "\n"), "\n")
	want := []string{
		"SOURCE  DESTINATION  PROTO  RATE        SUCCESS  P50      P99     SEEN BY",
		"api     db           tcp    4.0 conn/s  100%     0.420ms  2.50ms  inbound",
		"batch   db           tcp    -           -        -        -       -",
		"web     api          http   12.3 req/s  99.7%    1.23ms   48.3ms  outbound",
	}
	if len(lines) != len(want) {
		t.Fatalf("got %d lines, want %d:\n%s", len(lines), len(want), got)
	}
	for i := range want {
		if strings.TrimRight(lines[i], " ") != want[i] {
			t.Errorf("line %d:\n got %q\nwant %q", i, lines[i], want[i])
		}
	}
}

func TestFormatTable_Empty(t *testing.T) {
	for _, tc := range []struct {
		m    *api.MeshMetrics
		q    query
		want string
	}{
		{&api.MeshMetrics{Window: "30s", Edges: []api.MeshEdge{}}, query{window: 30 * time.Second},
			"No traffic through the mesh in the last 30s (figures arrive every telemetry.mesh_metrics_interval, 5s by default).\n"},
		// The leader's window wins, without trailing zero units.
		{&api.MeshMetrics{Window: "5m0s"}, query{service: "web", window: time.Minute},
			"No traffic to or from web in the last 5m (figures arrive every telemetry.mesh_metrics_interval, 5s by default).\n"},
		{nil, query{filter: "Protocol == http", window: 90 * time.Second},
			"No traffic through the mesh matching the filter in the last 1m30s (figures arrive every telemetry.mesh_metrics_interval, 5s by default).\n"},
	} {
		if got := formatTable(tc.m, tc.q); got != tc.want {
			t.Errorf("formatTable(%+v, %+v) = %q, want %q", tc.m, tc.q, got, tc.want)
		}
	}
}

func TestRate(t *testing.T) {
	for _, tc := range []struct {
		perSec         float64
		unit, protocol string
		want           string
	}{
		{12.345, "requests", "http", "12.3 req/s"},
		{4, "connections", "tcp", "4.0 conn/s"},
		{0, "requests", "grpc", "0.0 req/s"},
		{0.033, "requests", "http", "0.033 req/s"},
		{0.1, "connections", "tcp", "0.1 conn/s"},
		{2500, "requests", "http2", "2500.0 req/s"},
		// Without a unit, the protocol decides.
		{1, "", "tcp", "1.0 conn/s"},
		{1, "", "http", "1.0 req/s"},
		{1, "streams", "grpc", "1.0 streams/s"},
	} {
		if got := rate(tc.perSec, tc.unit, tc.protocol); got != tc.want {
			t.Errorf("rate(%v, %q, %q) = %q, want %q", tc.perSec, tc.unit, tc.protocol, got, tc.want)
		}
	}
}

func TestSuccess(t *testing.T) {
	for _, tc := range []struct {
		s    api.MeshEdgeSide
		want string
	}{
		{api.MeshEdgeSide{Requests: 500, Failures: 1, SuccessRate: 0.998}, "99.8%"},
		{api.MeshEdgeSide{Requests: 100, SuccessRate: 1}, "100%"},
		// One failure in 10,000 does not round up to 100%.
		{api.MeshEdgeSide{Requests: 10000, Failures: 1, SuccessRate: 0.9999}, "99.9%"},
		{api.MeshEdgeSide{Requests: 3, Failures: 3, SuccessRate: 0}, "0.0%"},
		{api.MeshEdgeSide{Requests: 3, Failures: 1, SuccessRate: 0.666667}, "66.6%"},
		{api.MeshEdgeSide{}, "-"},
	} {
		if got := success(&tc.s); got != tc.want {
			t.Errorf("success(%+v) = %q, want %q", tc.s, got, tc.want)
		}
	}
}

func TestLatency(t *testing.T) {
	some := &api.MeshEdgeSide{Requests: 1}
	for ms, want := range map[float64]string{
		0: "0.000ms", 0.042: "0.042ms", 0.42: "0.420ms", 0.9996: "1.00ms", 1.234: "1.23ms", 9.999: "10.0ms",
		12.34: "12.3ms", 99.96: "100ms", 123.4: "123ms", 999.7: "1.00s", 1234: "1.23s", 12345: "12.3s",
	} {
		if got := latency(some, ms); got != want {
			t.Errorf("latency(%v) = %q, want %q", ms, got, want)
		}
	}
	if got := latency(&api.MeshEdgeSide{}, 3); got != "-" {
		t.Errorf("latency without requests = %q, want -", got)
	}
}

func TestShortDuration(t *testing.T) {
	for d, want := range map[time.Duration]string{
		30 * time.Second: "30s", 10 * time.Second: "10s", 5 * time.Minute: "5m", 90 * time.Second: "1m30s",
		time.Hour: "1h", 500 * time.Millisecond: "500ms",
	} {
		if got := shortDuration(d); got != want {
			t.Errorf("shortDuration(%v) = %q, want %q", d, got, want)
		}
	}
}

// TestJSON: -format json prints the answer as the API gives it, so that
// it reads back as api.MeshMetrics, nil sides included.
func TestJSON(t *testing.T) {
	m := &api.MeshMetrics{Window: "30s", Edges: []api.MeshEdge{
		{Source: "web", Destination: "api", Protocol: "tcp", Unit: "connections",
			Outbound: &api.MeshEdgeSide{Requests: 4, RequestsPerSecond: 0.133, SuccessRate: 1, P50Ms: 0.5, P99Ms: 1, Reporters: 1}},
	}}
	out, err := formatJSON(m)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "\n    \"Window\": \"30s\",") || !strings.Contains(out, `"Inbound": null`) {
		t.Errorf("not indented as the neighbours do, or a nil side is not null:\n%s", out)
	}
	var back api.MeshMetrics
	if err := json.Unmarshal([]byte(out), &back); err != nil {
		t.Fatal(err)
	}
	if len(back.Edges) != 1 || back.Edges[0].Inbound != nil || back.Edges[0].Outbound == nil || *back.Edges[0].Outbound != *m.Edges[0].Outbound {
		t.Errorf("read back %+v", back)
	}
}
