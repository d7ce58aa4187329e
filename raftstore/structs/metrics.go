package structs

import "github.com/trellismesh/trellis/connect/golden"

// Methods of the mesh's golden signals. They run on the leader, which keeps
// the reports in memory (never in Raft).
const (
	MethodMetricsReport = "Metrics.Report" // MetricsReportRequest → struct{}
	MethodMetricsEdges  = "Metrics.Edges"  // MetricsEdgesRequest → MetricsEdgesReply
)

// MetricsReportRequest carries what a node's proxies counted over the
// report interval before it was sent.
type MetricsReportRequest struct {
	Datacenter string
	Node       string
	// IntervalMs is the span the samples cover, in milliseconds.
	IntervalMs int64
	Samples    []golden.Sample
	WriteRequest
}

// MetricsEdgesRequest asks for the golden signals of the edges of a
// service (both directions), or of every edge when Service is empty, over
// the last WindowMs milliseconds.
type MetricsEdgesRequest struct {
	Datacenter string
	Service    string
	WindowMs   int64
	QueryOptions
}

// MetricsEdgesReply is the merged signals of the edges asked for.
type MetricsEdgesReply struct {
	// WindowMs is the window used (the one asked for, clamped to the
	// retention).
	WindowMs int64
	Edges    []golden.EdgeStats
}
