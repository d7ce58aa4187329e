package httpapi

import (
	"math"
	"net/http"
	"time"

	"github.com/trellismesh/trellis/connect/golden"
	"github.com/trellismesh/trellis/raftstore/structs"
)

// defaultMetricsWindow is the window of GET /v1/connect/metrics when the
// request names none.
const defaultMetricsWindow = 30 * time.Second

// meshMetricsOut is the answer of GET /v1/connect/metrics (a Trellis
// addition): the golden signals of the mesh's edges, as the proxies on
// both sides of each reported them to the leader.
type meshMetricsOut struct {
	// Window is the span the figures cover, as a Go duration.
	Window string
	Edges  []meshEdgeOut
}

type meshEdgeOut struct {
	Source      string
	Destination string
	Protocol    string
	// Unit says what Requests counts: "requests" for L7 protocols,
	// "connections" for tcp.
	Unit     string
	Outbound *meshSideOut
	Inbound  *meshSideOut
}

type meshSideOut struct {
	Requests          uint64
	Failures          uint64
	RequestsPerSecond float64
	SuccessRate       float64
	P50Ms             float64
	P99Ms             float64
	Reporters         int
}

// connectMetrics answers GET /v1/connect/metrics?service=&window=&filter=:
// the edges of service (both directions; all edges without it) over the
// last window (30s by default, 5m at most). ?filter= selects edges by the
// fields above, e.g. `Protocol == http`.
func (s *Server) connectMetrics(w http.ResponseWriter, r *http.Request) (any, error) {
	q := r.URL.Query()
	window := defaultMetricsWindow
	if v := q.Get("window"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			return nil, badRequest("invalid window %q: want a positive duration such as 30s or 5m", v)
		}
		window = d
	}
	req := &structs.MetricsEdgesRequest{Datacenter: q.Get("dc"), Service: q.Get("service"), WindowMs: window.Milliseconds()}
	if req.WindowMs <= 0 {
		return nil, badRequest("invalid window %q: want at least 1ms", q.Get("window"))
	}
	var reply structs.MetricsEdgesReply
	if err := s.rpc(r.Context(), structs.MethodMetricsEdges, req, &reply); err != nil {
		return nil, err
	}
	out := meshMetricsOut{Window: (time.Duration(reply.WindowMs) * time.Millisecond).String(), Edges: []meshEdgeOut{}}
	for _, e := range reply.Edges {
		unit := "requests"
		if e.Protocol == "tcp" {
			unit = "connections"
		}
		out.Edges = append(out.Edges, meshEdgeOut{Source: e.Source, Destination: e.Destination, Protocol: e.Protocol, Unit: unit,
			Outbound: sideOut(e.Outbound), Inbound: sideOut(e.Inbound)})
	}
	filtered, err := applyFilter(r, out.Edges)
	if err != nil {
		return nil, err
	}
	out.Edges = filtered.([]meshEdgeOut)
	return out, nil
}

func sideOut(s *golden.SideStats) *meshSideOut {
	if s == nil {
		return nil
	}
	round := func(v float64) float64 { return math.Round(v*1000) / 1000 }
	return &meshSideOut{Requests: s.Requests, Failures: s.Failures, RequestsPerSecond: round(s.RequestsPerSecond),
		SuccessRate: math.Round(s.SuccessRate*1e6) / 1e6, P50Ms: round(s.P50Ms), P99Ms: round(s.P99Ms), Reporters: s.Reporters}
}

// proxyMetricsIn is the body of PUT /v1/agent/connect/proxy-metrics.
type proxyMetricsIn struct {
	Samples []golden.Sample
}

// agentProxyMetrics takes the golden signals a proxy run by trellis
// connect proxy counted since its last call, and adds them to what this
// agent reports (a Trellis addition).
func (s *Server) agentProxyMetrics(_ http.ResponseWriter, r *http.Request) (any, error) {
	var in proxyMetricsIn
	if err := decodeBody(r, &in, false); err != nil {
		return nil, err
	}
	if err := golden.Validate(in.Samples); err != nil {
		return nil, structs.Invalid("Samples", "%v", err)
	}
	if err := s.agent.AddMeshSamples(in.Samples); err != nil {
		return nil, err
	}
	return nil, nil
}
