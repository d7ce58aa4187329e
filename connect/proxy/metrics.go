package proxy

import (
	"slices"
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

func incrCounter(key []string, labels []metrics.Label) {
	metrics.IncrCounterWithLabels(key, 1, labels)
}

// gaugeCounter is a count published as a gauge on every change.
type gaugeCounter struct{ n atomic.Int64 }

func (g *gaugeCounter) add(delta int64, key []string, labels []metrics.Label) {
	metrics.SetGaugeWithLabels(key, float32(g.n.Add(delta)), labels)
}

// Byte counters are emitted when this much is pending, or a second after
// the last emission, so a busy connection costs a metric call per few MiB,
// not per read.
const (
	meterFlushBytes    = 4 << 20
	meterFlushInterval = time.Second
)

// meter accumulates a byte counter of one direction of one connection.
// add is called by one goroutine at a time; flush from any goroutine.
type meter struct {
	key     []string
	labels  []metrics.Label
	pending atomic.Int64
	last    time.Time // of the last emission by add; used only by add
}

func newMeter(key []string, labels []metrics.Label) *meter {
	return &meter{key: key, labels: labels, last: time.Now()}
}

func (m *meter) add(n int) {
	if m.pending.Add(int64(n)) >= meterFlushBytes {
		m.flush()
		return
	}
	if now := time.Now(); now.Sub(m.last) >= meterFlushInterval {
		m.last = now
		m.flush()
	}
}

func (m *meter) flush() {
	if n := m.pending.Swap(0); n > 0 {
		metrics.IncrCounterWithLabels(m.key, float32(n), m.labels)
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
