package golden

import (
	"sort"
	"sync"
)

// PromBounds are the upper bounds, in seconds, of the cumulative latency
// histograms an agent exposes to Prometheus (Totals).
var PromBounds = []float64{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10}

// Totals keeps running totals of samples since the agent started, for a
// Prometheus scrape: counters never reset, and latency histograms in
// PromBounds' buckets. Its methods are safe for concurrent use.
type Totals struct {
	mu    sync.Mutex
	edges map[Key]*EdgeTotal // guarded by mu
}

// EdgeTotal is the running total of one edge as one side saw it.
type EdgeTotal struct {
	Key
	Requests uint64
	Failures uint64
	// Buckets counts latencies per PromBounds bucket (not cumulative); the
	// last one is above every bound.
	Buckets []uint64
	// SumSeconds is the sum of the latencies (each taken at the middle of
	// its fine bucket).
	SumSeconds float64
}

// NewTotals returns empty totals.
func NewTotals() *Totals { return &Totals{edges: make(map[Key]*EdgeTotal)} }

// Add adds samples (as Collect returns them) to the totals. Past MaxEdges
// edges, new ones are left out.
func (t *Totals) Add(samples []Sample) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for i := range samples {
		s := &samples[i]
		k := s.key()
		e := t.edges[k]
		if e == nil {
			if len(t.edges) >= MaxEdges {
				continue
			}
			e = &EdgeTotal{Key: k, Buckets: make([]uint64, len(PromBounds)+1)}
			t.edges[k] = e
		}
		e.Requests += s.Requests
		e.Failures += s.Failures
		for _, b := range s.Latency {
			lo, hi := histBounds(histIndex(b[0]))
			mid := float64(lo+hi) / 2 / 1e6
			j := sort.SearchFloat64s(PromBounds, mid) // the first bound ≥ mid
			e.Buckets[j] += b[1]
			e.SumSeconds += mid * float64(b[1])
		}
	}
}

// Snapshot copies the totals, sorted by source, destination, protocol and
// side.
func (t *Totals) Snapshot() []EdgeTotal {
	t.mu.Lock()
	out := make([]EdgeTotal, 0, len(t.edges))
	for _, e := range t.edges {
		c := *e
		c.Buckets = append([]uint64(nil), e.Buckets...)
		out = append(out, c)
	}
	t.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Key.less(out[j].Key) })
	return out
}
