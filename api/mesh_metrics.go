package api

import (
	"net/url"
	"time"
)

// MeshMetrics is the answer of GET /v1/connect/metrics (a Trellis path;
// Consul has none): the golden signals of the mesh's edges over a window,
// as the proxies on each side reported them.
type MeshMetrics struct {
	// Window is the span the figures cover, as a Go duration ("30s").
	Window string
	Edges  []MeshEdge
}

// MeshEdge is one caller → destination pair.
type MeshEdge struct {
	Source      string
	Destination string
	// Protocol is tcp, http, http2 or grpc.
	Protocol string
	// Unit is what Requests counts: "requests", or "connections" for tcp.
	Unit string
	// Outbound is what the callers' proxies saw (latency includes the mesh
	// hop); nil when none reported.
	Outbound *MeshEdgeSide
	// Inbound is what the destination's proxies saw (denials included);
	// nil when none reported.
	Inbound *MeshEdgeSide
}

// MeshEdgeSide is one side's figures. For http a failure is a 5xx answer;
// for tcp a connection refused by intentions or that reached no instance.
type MeshEdgeSide struct {
	Requests          uint64
	Failures          uint64
	RequestsPerSecond float64
	// SuccessRate is 1 - Failures/Requests.
	SuccessRate float64
	// P50Ms and P99Ms are latency quantiles in milliseconds: to the end of
	// the answer for http, to the connection's acceptance for tcp.
	P50Ms     float64
	P99Ms     float64
	Reporters int
}

// Metrics returns the golden signals of service's edges, both directions
// (every edge when service is empty), over the last window (the server's
// default, 30s, when 0). q.Filter selects edges.
func (h *Connect) Metrics(service string, window time.Duration, q *QueryOptions) (*MeshMetrics, error) {
	p := url.Values{}
	if service != "" {
		p.Set("service", service)
	}
	if window > 0 {
		p.Set("window", window.String())
	}
	var out MeshMetrics
	if _, err := h.c.query("/v1/connect/metrics", &out, q, p); err != nil {
		return nil, err
	}
	return &out, nil
}

// MeshSample is what a proxy counted of one edge, on one side, since its
// last report: the body's element of PUT /v1/agent/connect/proxy-metrics.
type MeshSample struct {
	// Side is "outbound" (the caller's proxy) or "inbound".
	Side        string
	Source      string
	Destination string
	// Protocol is tcp, http, http2 or grpc.
	Protocol string
	Requests uint64
	Failures uint64
	// Latency is the histogram's non-empty buckets: lower bound in
	// microseconds, count.
	Latency [][2]uint64 `json:",omitempty"`
}

// ConnectProxyMetrics hands the agent what a proxy it does not run (trellis
// connect proxy) counted, for the agent to report with its own proxies'
// (a Trellis path). w may be nil.
func (a *Agent) ConnectProxyMetrics(samples []MeshSample, w *WriteOptions) error {
	_, err := a.c.write("/v1/agent/connect/proxy-metrics", struct{ Samples []MeshSample }{samples}, nil, w, nil)
	return err
}
