package golden

import (
	"sort"
	"sync"
	"sync/atomic"
	"time"
)

// Side says which proxy of an edge saw its traffic.
type Side string

// The two sides of an edge.
const (
	// Outbound is the caller's proxy: its upstream listener.
	Outbound Side = "outbound"
	// Inbound is the destination's proxy: its public listener.
	Inbound Side = "inbound"
)

// Key names an edge as one side saw it. Protocol is "tcp" (each connection
// counts as a request, its latency is the time to connect through the mesh)
// or the L7 protocol ("http", "http2", "grpc").
type Key struct {
	Side        Side
	Source      string
	Destination string
	Protocol    string
}

// Edge counts one side's traffic of one edge. A nil *Edge counts nothing,
// so a proxy without a recorder needs no checks.
type Edge struct {
	requests atomic.Uint64
	failures atomic.Uint64
	latency  Histogram
}

// Observe counts one request (or connection) that took d; failed is an
// answer of 5xx, a refused or failed connection.
func (e *Edge) Observe(failed bool, d time.Duration) {
	if e == nil {
		return
	}
	e.requests.Add(1)
	if failed {
		e.failures.Add(1)
	}
	e.latency.Record(d)
}

// MaxEdges bounds the edges a recorder (and a report) holds: past it, new
// edges are counted under the source or destination OtherService.
const MaxEdges = 4096

// OtherService names the peers past MaxEdges.
const OtherService = "(other)"

// Recorder holds the edges of an agent's proxies. Its methods are safe for
// concurrent use; a nil *Recorder hands out nil edges.
type Recorder struct {
	mu    sync.Mutex
	edges map[Key]*Edge // guarded by mu; edges are never removed: proxies keep them
}

// NewRecorder returns an empty recorder.
func NewRecorder() *Recorder { return &Recorder{edges: make(map[Key]*Edge)} }

// Edge returns the counter of k, made on first use. Callers keep it (an
// upstream its edge, an inbound tunnel its source's) rather than look it
// up per request.
func (r *Recorder) Edge(k Key) *Edge {
	if r == nil {
		return nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if e := r.edges[k]; e != nil {
		return e
	}
	if len(r.edges) >= MaxEdges {
		if k.Side == Outbound {
			k.Destination = OtherService
		} else {
			k.Source = OtherService
		}
		if e := r.edges[k]; e != nil {
			return e
		}
	}
	e := &Edge{}
	r.edges[k] = e
	return e
}

// Add counts samples another process collected (a proxy run by trellis
// connect proxy hands its counts to its agent this way). Validate them
// first.
func (r *Recorder) Add(samples []Sample) {
	for i := range samples {
		s := &samples[i]
		e := r.Edge(s.key())
		if e == nil {
			return
		}
		e.requests.Add(s.Requests)
		e.failures.Add(s.Failures)
		e.latency.addBuckets(s.Latency)
	}
}

// Active reports whether any edge was ever made: an agent with none has
// nothing to report.
func (r *Recorder) Active() bool {
	if r == nil {
		return false
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.edges) > 0
}

// Collect drains the counts since the last Collect into samples, one per
// edge that saw traffic, in a stable order.
func (r *Recorder) Collect() []Sample {
	if r == nil {
		return nil
	}
	r.mu.Lock()
	keys := make([]Key, 0, len(r.edges))
	edges := make([]*Edge, 0, len(r.edges))
	for k, e := range r.edges {
		keys = append(keys, k)
		edges = append(edges, e)
	}
	r.mu.Unlock()
	var out []Sample
	for i, e := range edges {
		// The reverse of Observe's order: a request that lands between
		// two of these is in this sample's count but not yet in its
		// failures or latencies, never the other way round. (Its latency
		// then shows in the next sample, whose latencies may outnumber its
		// requests by that much.)
		snap := e.latency.Snapshot()
		f := e.failures.Swap(0)
		n := e.requests.Swap(0)
		if n == 0 && snap.Total() == 0 {
			continue
		}
		out = append(out, Sample{
			Side: keys[i].Side, Source: keys[i].Source, Destination: keys[i].Destination, Protocol: keys[i].Protocol,
			Requests: n, Failures: min(f, n), Latency: snap.Buckets(),
		})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].key().less(out[j].key()) })
	return out
}

func (k Key) less(o Key) bool {
	if k.Source != o.Source {
		return k.Source < o.Source
	}
	if k.Destination != o.Destination {
		return k.Destination < o.Destination
	}
	if k.Protocol != o.Protocol {
		return k.Protocol < o.Protocol
	}
	return k.Side < o.Side
}

// Sample is one edge's traffic on one side over a report interval: the
// wire form an agent sends to the servers.
type Sample struct {
	Side        Side
	Source      string
	Destination string
	Protocol    string
	Requests    uint64
	Failures    uint64
	// Latency is the histogram's non-empty buckets: lower bound in
	// microseconds, count.
	Latency [][2]uint64 `json:",omitempty"`
}

func (s *Sample) key() Key {
	return Key{Side: s.Side, Source: s.Source, Destination: s.Destination, Protocol: s.Protocol}
}
