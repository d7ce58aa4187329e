package l7

import (
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-metrics"

	"github.com/trellismesh/trellis/connect/golden"
)

// Metric keys; the package doc lists what each one counts. go-metrics may
// append to the key and label slices it is given, so every shared slice is
// clipped (len == cap) and an append copies it.
var (
	keyUpstreamRequests        = []string{"trellis", "proxy", "http", "upstream", "requests"}
	keyUpstreamLatency         = []string{"trellis", "proxy", "http", "upstream", "latency_ms"}
	keyUpstreamRetries         = []string{"trellis", "proxy", "http", "upstream", "retries"}
	keyUpstreamBudgetExhausted = []string{"trellis", "proxy", "http", "upstream", "retry_budget_exhausted"}
	keyUpstreamOverloaded      = []string{"trellis", "proxy", "http", "upstream", "overloaded"}
	keyUpstreamEjections       = []string{"trellis", "proxy", "http", "upstream", "ejections"}
	keyUpstreamTimeouts        = []string{"trellis", "proxy", "http", "upstream", "timeouts"}
	keyUpstreamConnectFailures = []string{"trellis", "proxy", "http", "upstream", "connect_failures"}
	keyUpstreamConnections     = []string{"trellis", "proxy", "http", "upstream", "connections"}

	keyInboundRequests = []string{"trellis", "proxy", "http", "inbound", "requests"}
	keyInboundLatency  = []string{"trellis", "proxy", "http", "inbound", "latency_ms"}
	keyInboundDenied   = []string{"trellis", "proxy", "http", "inbound", "denied"}
	keyInboundTimeouts = []string{"trellis", "proxy", "http", "inbound", "timeouts"}
	keyInboundAppFail  = []string{"trellis", "proxy", "http", "inbound", "app_errors"}
	keyInboundOverload = []string{"trellis", "proxy", "http", "inbound", "overloaded"}
)

// metricsInterval is how often the proxies emit what they counted.
var metricsInterval = time.Second

// The quantiles emitted from each latency histogram.
var quantiles = []struct {
	q     float64
	label string
}{{0.5, "0.5"}, {0.9, "0.9"}, {0.99, "0.99"}}

// Response classes, by the first digit of the status.
var classNames = [6]string{"other", "1xx", "2xx", "3xx", "4xx", "5xx"}

// statusClientGone is the status a request is counted with when its client
// went away before its answer (nginx's 499): class "other", since nothing
// was answered.
const statusClientGone = 499

func classOf(status int) int {
	if status == statusClientGone {
		return 0
	}
	if c := status / 100; c >= 1 && c <= 5 {
		return c
	}
	return 0
}

// counter is counted in memory (an atomic add) and emitted by the flusher.
type counter struct {
	key     []string
	labels  []metrics.Label
	n       atomic.Int64
	emitted int64 // guarded by registry.flushMu
}

func (c *counter) inc() { c.n.Add(1) }

// reqStats are the per-request metrics of one label set (an upstream's
// route, or an inbound source): a counter per class and a latency histogram.
type reqStats struct {
	classes [len(classNames)]*counter
	hist    golden.Histogram
	histKey []string
	labels  []metrics.Label
	// qlabels are labels plus quantile, one set per quantile.
	qlabels [][]metrics.Label
}

// observe counts one response.
func (s *reqStats) observe(status int, d time.Duration) {
	s.classes[classOf(status)].inc()
	s.hist.Record(d)
}

// registry holds a proxy side's metrics and emits them.
type registry struct {
	flushMu  sync.Mutex // serialises flushes
	mu       sync.Mutex
	counters []*counter          // guarded by mu
	stats    []*reqStats         // guarded by mu
	byKey    map[string]*counter // guarded by mu
	reqs     sync.Map            // string → *reqStats
}

func withLabels(base []metrics.Label, kv ...string) []metrics.Label {
	out := make([]metrics.Label, len(base), len(base)+len(kv)/2)
	copy(out, base)
	for i := 0; i+1 < len(kv); i += 2 {
		out = append(out, metrics.Label{Name: kv[i], Value: kv[i+1]})
	}
	return slices.Clip(out)
}

// counter returns a new counter of key with labels.
func (g *registry) counter(key []string, labels []metrics.Label) *counter {
	c := &counter{key: key, labels: slices.Clip(labels)}
	g.mu.Lock()
	g.counters = append(g.counters, c)
	g.mu.Unlock()
	return c
}

// counterFor returns the counter of key with base plus one label, made on
// first use.
func (g *registry) counterFor(key []string, base []metrics.Label, name, value string) *counter {
	id := strings.Join(key, ".") + "\x00" + name + "\x00" + value
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.byKey == nil {
		g.byKey = make(map[string]*counter)
	}
	if c := g.byKey[id]; c != nil {
		return c
	}
	c := &counter{key: key, labels: withLabels(base, name, value)}
	g.byKey[id] = c
	g.counters = append(g.counters, c)
	return c
}

// reqStatsFor returns the request metrics of base plus the label name=value,
// made on first use; countKey and histKey are their keys.
func (g *registry) reqStatsFor(countKey, histKey []string, base []metrics.Label, name, value string) *reqStats {
	id := strings.Join(countKey, ".") + "\x00" + name + "\x00" + value
	if s, ok := g.reqs.Load(id); ok {
		return s.(*reqStats)
	}
	labels := withLabels(base, name, value)
	s := &reqStats{histKey: histKey, labels: labels}
	for i, cn := range classNames {
		s.classes[i] = &counter{key: countKey, labels: withLabels(labels, "class", cn)}
	}
	for _, q := range quantiles {
		s.qlabels = append(s.qlabels, withLabels(labels, "quantile", q.label))
	}
	actual, loaded := g.reqs.LoadOrStore(id, s)
	if loaded {
		return actual.(*reqStats)
	}
	g.mu.Lock()
	g.stats = append(g.stats, s)
	g.counters = append(g.counters, s.classes[:]...)
	g.mu.Unlock()
	return s
}

// flush emits the counters' increments since the last flush, and the
// quantiles of each histogram's samples since then (nothing for a
// histogram without samples).
func (g *registry) flush() {
	g.flushMu.Lock()
	defer g.flushMu.Unlock()
	g.mu.Lock()
	counters := slices.Clone(g.counters)
	stats := slices.Clone(g.stats)
	g.mu.Unlock()
	for _, c := range counters {
		n := c.n.Load()
		if d := n - c.emitted; d != 0 {
			metrics.IncrCounterWithLabels(c.key, float32(d), c.labels)
			c.emitted = n
		}
	}
	for _, s := range stats {
		snap := s.hist.Snapshot()
		if snap.Total() == 0 {
			continue
		}
		for i, q := range quantiles {
			ms := float32(snap.Quantile(q.q).Microseconds()) / 1000
			metrics.SetGaugeWithLabels(s.histKey, ms, s.qlabels[i])
		}
	}
}

// run flushes every metricsInterval until stop is closed, then once more.
func (g *registry) run(stop <-chan struct{}) {
	t := time.NewTicker(metricsInterval)
	defer t.Stop()
	for {
		select {
		case <-stop:
			g.flush()
			return
		case <-t.C:
			g.flush()
		}
	}
}
