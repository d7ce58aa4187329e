package proxy

import (
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-metrics"
)

// Metric keys; the package doc lists what each one counts. go-metrics may
// append to a key or label slice it is given, so every shared slice has
// len == cap and an append copies it.
var (
	keyInboundConnections   = []string{"trellis", "proxy", "inbound", "connections"}
	keyInboundActive        = []string{"trellis", "proxy", "inbound", "active"}
	keyInboundClosed        = []string{"trellis", "proxy", "inbound", "closed"}
	keyInboundBytesIn       = []string{"trellis", "proxy", "inbound", "bytes_in"}
	keyInboundBytesOut      = []string{"trellis", "proxy", "inbound", "bytes_out"}
	keyInboundHandshakeFail = []string{"trellis", "proxy", "inbound", "tls_handshake_failures"}
	keyInboundDenied        = []string{"trellis", "proxy", "inbound", "denied"}

	keyUpstreamConnections   = []string{"trellis", "proxy", "upstream", "connections"}
	keyUpstreamActive        = []string{"trellis", "proxy", "upstream", "active"}
	keyUpstreamClosed        = []string{"trellis", "proxy", "upstream", "closed"}
	keyUpstreamBytesSent     = []string{"trellis", "proxy", "upstream", "bytes_sent"}
	keyUpstreamBytesReceived = []string{"trellis", "proxy", "upstream", "bytes_received"}
	keyUpstreamDialFail      = []string{"trellis", "proxy", "upstream", "dial_failures"}
	keyUpstreamHandshakeFail = []string{"trellis", "proxy", "upstream", "tls_handshake_failures"}
	keyUpstreamDenied        = []string{"trellis", "proxy", "upstream", "denied"}
)

// clipLabels returns labels with no spare capacity, safe to share.
func clipLabels(labels []metrics.Label) []metrics.Label { return slices.Clip(labels) }

// withLabel returns base plus one label, in a new clipped slice.
func withLabel(base []metrics.Label, name, value string) []metrics.Label {
	out := make([]metrics.Label, len(base)+1)
	copy(out, base)
	out[len(base)] = metrics.Label{Name: name, Value: value}
	return out
}

// metricsInterval is how often a proxy emits what it counted. Counting
// is an atomic add on the connection's path; the emission with labels
// (string building, locks, two sinks) happens here, once per interval.
var metricsInterval = time.Second

// counter is a counter metric counted in memory and emitted by the
// proxy's flusher.
type counter struct {
	key     []string
	labels  []metrics.Label
	n       atomic.Int64
	emitted int64 // guarded by registry.flushMu
}

func (c *counter) add(n int) { c.n.Add(int64(n)) }
func (c *counter) inc()      { c.n.Add(1) }

// gauge is a gauge metric kept in memory, emitted by the flusher.
type gauge struct {
	key    []string
	labels []metrics.Label
	n      atomic.Int64
	last   int64 // guarded by registry.flushMu
	set    bool  // guarded by registry.flushMu
}

func (g *gauge) add(d int64) { g.n.Add(d) }

// registry holds a proxy's metrics.
type registry struct {
	flushMu  sync.Mutex // serialises flushes (emitted, last and set)
	mu       sync.Mutex
	counters []*counter
	gauges   []*gauge
	labelled map[string]*counter // guarded by mu; by key and extra label
}

func (r *registry) counter(key []string, labels []metrics.Label) *counter {
	c := &counter{key: key, labels: labels}
	r.mu.Lock()
	r.counters = append(r.counters, c)
	r.mu.Unlock()
	return c
}

func (r *registry) gauge(key []string, labels []metrics.Label) *gauge {
	g := &gauge{key: key, labels: labels}
	r.mu.Lock()
	r.gauges = append(r.gauges, g)
	r.mu.Unlock()
	return g
}

// withExtra returns the counter of key with base labels plus name=value,
// made on first use.
func (r *registry) withExtra(key []string, base []metrics.Label, name, value string) *counter {
	id := strings.Join(key, ".") + "|" + value
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.labelled == nil {
		r.labelled = map[string]*counter{}
	}
	if c := r.labelled[id]; c != nil {
		return c
	}
	c := &counter{key: key, labels: withLabel(base, name, value)}
	r.labelled[id] = c
	r.counters = append(r.counters, c)
	return c
}

// flush emits what changed since the last flush.
func (r *registry) flush() {
	r.flushMu.Lock()
	defer r.flushMu.Unlock()
	r.mu.Lock()
	cs := slices.Clone(r.counters)
	gs := slices.Clone(r.gauges)
	r.mu.Unlock()
	for _, c := range cs {
		if n := c.n.Load(); n != c.emitted {
			metrics.IncrCounterWithLabels(c.key, float32(n-c.emitted), c.labels)
			c.emitted = n
		}
	}
	for _, g := range gs {
		if n := g.n.Load(); !g.set || n != g.last {
			metrics.SetGaugeWithLabels(g.key, float32(n), g.labels)
			g.last, g.set = n, true
		}
	}
}

// logLimiter keeps a flood of similar log lines (refused handshakes from a
// scanner, a denied client retrying) from drowning the log: at most
// logBurst lines per logWindow, then a count of what was left out.
type logLimiter struct {
	mu         sync.Mutex
	start      time.Time // guarded by mu; of the current window
	n          int       // guarded by mu; lines allowed in the window
	suppressed int       // guarded by mu; lines dropped since the last allowed one
}

const (
	logBurst  = 10
	logWindow = 10 * time.Second
)

// allow reports whether to log a line now, and how many were dropped since
// the last line allowed (to say so in it).
func (l *logLimiter) allow() (ok bool, suppressed int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := time.Now()
	if now.Sub(l.start) >= logWindow {
		l.start, l.n = now, 0
	}
	if l.n >= logBurst {
		l.suppressed++
		return false, 0
	}
	l.n++
	suppressed, l.suppressed = l.suppressed, 0
	return true, suppressed
}

// logArgs appends the count of suppressed lines, when there were any.
func logArgs(suppressed int, args ...any) []any {
	if suppressed > 0 {
		args = append(args, "suppressed_similar", suppressed)
	}
	return args
}
