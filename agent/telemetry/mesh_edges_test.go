package telemetry

import (
	"strings"
	"testing"

	"github.com/trellismesh/trellis/connect/golden"
)

func TestWriteMeshEdges(t *testing.T) {
	t.Parallel()
	buckets := make([]uint64, len(golden.PromBounds)+1)
	buckets[0], buckets[3], buckets[len(buckets)-1] = 2, 1, 1
	var b strings.Builder
	err := WriteMeshEdges(&b, []golden.EdgeTotal{{
		Key:      golden.Key{Side: golden.Inbound, Source: `we"b`, Destination: "api", Protocol: "http"},
		Requests: 4, Failures: 1, Buckets: buckets, SumSeconds: 12.5,
	}})
	if err != nil {
		t.Fatal(err)
	}
	out := b.String()
	const lbl = `side="inbound",source="we\"b",destination="api",protocol="http"`
	for _, want := range []string{
		"# TYPE trellis_mesh_edge_requests_total counter\ntrellis_mesh_edge_requests_total{" + lbl + "} 4\n",
		"# TYPE trellis_mesh_edge_failures_total counter\ntrellis_mesh_edge_failures_total{" + lbl + "} 1\n",
		"# TYPE trellis_mesh_edge_latency_seconds histogram\n",
		"trellis_mesh_edge_latency_seconds_bucket{" + lbl + `,le="0.0005"} 2` + "\n",
		"trellis_mesh_edge_latency_seconds_bucket{" + lbl + `,le="0.0025"} 2` + "\n",
		"trellis_mesh_edge_latency_seconds_bucket{" + lbl + `,le="0.005"} 3` + "\n",
		"trellis_mesh_edge_latency_seconds_bucket{" + lbl + `,le="10"} 3` + "\n",
		"trellis_mesh_edge_latency_seconds_bucket{" + lbl + `,le="+Inf"} 4` + "\n",
		"trellis_mesh_edge_latency_seconds_sum{" + lbl + "} 12.5\n",
		"trellis_mesh_edge_latency_seconds_count{" + lbl + "} 4\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	var empty strings.Builder
	if err := WriteMeshEdges(&empty, nil); err != nil || empty.Len() != 0 {
		t.Errorf("no edges wrote %q, %v", empty.String(), err)
	}
}
