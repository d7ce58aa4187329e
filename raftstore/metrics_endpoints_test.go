package raftstore

import (
	"strings"
	"testing"

	"github.com/trellismesh/trellis/connect/golden"
	"github.com/trellismesh/trellis/raftstore/structs"
)

// Reports are checked before they are kept: a node of the catalog, a sane
// interval, valid samples; the leader merges what it kept.
func TestMetricsReport(t *testing.T) {
	t.Parallel()
	s := startServer(t, "")
	register(t, s, &structs.RegisterRequest{Node: "c1", Address: "127.0.0.1"})
	sample := golden.Sample{Side: golden.Outbound, Source: "web", Destination: "api", Protocol: "tcp", Requests: 3}
	for _, tc := range []struct {
		req  structs.MetricsReportRequest
		want string
	}{
		{structs.MetricsReportRequest{Node: "ghost", IntervalMs: 1000, Samples: []golden.Sample{sample}}, "not a node of the catalog"},
		{structs.MetricsReportRequest{Node: "c1", IntervalMs: 0}, "IntervalMs"},
		{structs.MetricsReportRequest{Node: "c1", IntervalMs: 1000, Samples: []golden.Sample{{Side: "up"}}}, "Samples"},
	} {
		if err := s.RPC(t.Context(), structs.MethodMetricsReport, &tc.req, &struct{}{}); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: %v, want an error with %q", tc.req, err, tc.want)
		}
	}
	if err := s.RPC(t.Context(), structs.MethodMetricsReport, &structs.MetricsReportRequest{Node: "c1", IntervalMs: 1000, Samples: []golden.Sample{sample}}, &struct{}{}); err != nil {
		t.Fatal(err)
	}
	var reply structs.MetricsEdgesReply
	if err := s.RPC(t.Context(), structs.MethodMetricsEdges, &structs.MetricsEdgesRequest{Service: "api", WindowMs: 60000}, &reply); err != nil {
		t.Fatal(err)
	}
	if len(reply.Edges) != 1 || reply.Edges[0].Outbound == nil || reply.Edges[0].Outbound.Requests != 3 {
		t.Errorf("edges %+v: only the valid report counts", reply.Edges)
	}
}
