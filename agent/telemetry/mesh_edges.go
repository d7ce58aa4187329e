package telemetry

import (
	"bufio"
	"fmt"
	"io"
	"strconv"

	"github.com/hashicorp/go-metrics"

	"github.com/trellismesh/trellis/connect/golden"
)

// WriteMeshEdges writes the running totals of the mesh's edges, as the
// agent's proxies counted them, in Prometheus text format: two counters and
// a latency histogram (in seconds, golden.PromBounds' buckets), labelled by
// side, source, destination and protocol.
func WriteMeshEdges(w io.Writer, edges []golden.EdgeTotal) error {
	if len(edges) == 0 {
		return nil
	}
	labels := make([]string, len(edges))
	for i, e := range edges {
		labels[i] = formatLabels([]metrics.Label{
			{Name: "side", Value: string(e.Side)}, {Name: "source", Value: e.Source},
			{Name: "destination", Value: e.Destination}, {Name: "protocol", Value: e.Protocol},
		})
	}
	bw := bufio.NewWriter(w)
	const (
		reqs = "trellis_mesh_edge_requests_total"
		fail = "trellis_mesh_edge_failures_total"
		lat  = "trellis_mesh_edge_latency_seconds"
	)
	fmt.Fprintf(bw, "# HELP %s requests (for tcp, connections) through the mesh, by edge and side\n# TYPE %s counter\n", reqs, reqs)
	for i, e := range edges {
		fmt.Fprintf(bw, "%s%s %d\n", reqs, labels[i], e.Requests)
	}
	fmt.Fprintf(bw, "# HELP %s of those, the failures (5xx answers; refused or failed connections)\n# TYPE %s counter\n", fail, fail)
	for i, e := range edges {
		fmt.Fprintf(bw, "%s%s %d\n", fail, labels[i], e.Failures)
	}
	fmt.Fprintf(bw, "# HELP %s latency of those requests (for tcp, of connecting)\n# TYPE %s histogram\n", lat, lat)
	for i, e := range edges {
		inner := labels[i][1 : len(labels[i])-1] // the labels without braces, to add le
		var cum uint64
		for j, n := range e.Buckets {
			cum += n
			le := "+Inf"
			if j < len(golden.PromBounds) {
				le = strconv.FormatFloat(golden.PromBounds[j], 'g', -1, 64)
			}
			fmt.Fprintf(bw, "%s_bucket{%s,le=%q} %d\n", lat, inner, le, cum)
		}
		fmt.Fprintf(bw, "%s_sum%s %s\n%s_count%s %d\n", lat, labels[i], formatFloat(e.SumSeconds), lat, labels[i], cum)
	}
	return bw.Flush()
}
