package golden

import (
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"
)

// Limits on what a report may carry; Validate enforces them.
const (
	maxNameLen     = 256
	maxBucketsWire = histBuckets
	maxCount       = 1 << 40 // requests or latencies in one sample
)

// Validate checks samples from the network before they are kept: known
// sides and protocols, names of sane length, no more failures than
// requests, at most MaxEdges samples and sane histograms.
func Validate(samples []Sample) error {
	if len(samples) > MaxEdges {
		return fmt.Errorf("%d samples, more than the %d allowed", len(samples), MaxEdges)
	}
	for i := range samples {
		s := &samples[i]
		switch {
		case s.Side != Outbound && s.Side != Inbound:
			return fmt.Errorf("sample %d: Side %q: want %q or %q", i, s.Side, Outbound, Inbound)
		case s.Source == "" || len(s.Source) > maxNameLen:
			return fmt.Errorf("sample %d: Source: want 1 to %d characters", i, maxNameLen)
		case s.Destination == "" || len(s.Destination) > maxNameLen:
			return fmt.Errorf("sample %d: Destination: want 1 to %d characters", i, maxNameLen)
		case !knownProtocol(s.Protocol):
			return fmt.Errorf("sample %d: Protocol %q: want tcp, http, http2 or grpc", i, s.Protocol)
		case s.Failures > s.Requests:
			return fmt.Errorf("sample %d: %d failures of %d requests", i, s.Failures, s.Requests)
		case len(s.Latency) > maxBucketsWire:
			return fmt.Errorf("sample %d: Latency: %d buckets, more than %d", i, len(s.Latency), maxBucketsWire)
		}
		// Latencies may outnumber requests a little (a request counted in
		// one sample can have its latency in the next); the bound keeps
		// merged counts far from overflowing.
		if s.Requests > maxCount {
			return fmt.Errorf("sample %d: %d requests, more than %d", i, s.Requests, uint64(maxCount))
		}
		var n uint64
		for _, b := range s.Latency {
			if b[1] > maxCount {
				return fmt.Errorf("sample %d: Latency: a bucket of %d samples, more than %d", i, b[1], uint64(maxCount))
			}
			n += b[1]
		}
		if n > maxCount {
			return fmt.Errorf("sample %d: Latency counts %d samples, more than %d", i, n, uint64(maxCount))
		}
	}
	return nil
}

func knownProtocol(p string) bool {
	switch p {
	case "tcp", "http", "http2", "grpc":
		return true
	}
	return false
}

// Window keeps the recent reports of every node, in memory, for the
// leader to answer with (they are not worth a Raft write: a new leader
// starts empty and fills within one report interval).
type Window struct {
	retain time.Duration
	mu     sync.Mutex
	nodes  map[string][]report // guarded by mu; oldest first
	// lastExpire is when expire last ran; guarded by mu.
	lastExpire time.Time
}

type report struct {
	at       time.Time
	interval time.Duration
	samples  []Sample
}

// NewWindow returns a window that keeps reports for retain.
func NewWindow(retain time.Duration) *Window {
	return &Window{retain: retain, nodes: make(map[string][]report)}
}

// Reset forgets every report.
func (w *Window) Reset() {
	w.mu.Lock()
	defer w.mu.Unlock()
	clear(w.nodes)
}

// Retain is how far back the window can answer.
func (w *Window) Retain() time.Duration { return w.retain }

// Add keeps a node's report, received at now, of the interval before it.
// Validate the samples first.
// A new node past MaxNodes is refused with ErrFull.
func (w *Window) Add(node string, interval time.Duration, samples []Sample, now time.Time) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	// Expiring walks every node: once a second is enough (the node's own
	// old reports go in compact below).
	if now.Sub(w.lastExpire) >= time.Second {
		w.expire(now)
		w.lastExpire = now
	}
	if _, known := w.nodes[node]; !known && len(w.nodes) >= MaxNodes {
		return ErrFull
	}
	w.nodes[node] = compact(append(w.nodes[node], report{at: now, interval: interval, samples: samples}), now)
	return nil
}

// MaxNodes bounds the nodes a window keeps reports of.
const MaxNodes = 16384

// ErrFull refuses a report of a new node when the window holds MaxNodes.
var ErrFull = errors.New("the window keeps reports of as many nodes as it may")

// Reports older than compactAfter are merged into reports of about
// compactSpan each: a query of the last seconds sees every report, a query
// of minutes sees them in 30-second steps, and a node costs about a sixth of
// the memory of keeping every report.
const (
	compactAfter = 30 * time.Second
	compactSpan  = 30 * time.Second
)

// compact merges the reports of rs (oldest first) older than compactAfter
// into ones covering up to compactSpan.
func compact(rs []report, now time.Time) []report {
	n := 0
	for n < len(rs) && now.Sub(rs[n].at) > compactAfter {
		n++
	}
	if n < 2 {
		return rs
	}
	out := make([]report, 0, len(rs))
	cur := rs[0]
	for _, r := range rs[1:n] {
		if cur.interval+r.interval <= compactSpan {
			cur = merge(cur, r)
			continue
		}
		out = append(out, cur)
		cur = r
	}
	out = append(out, cur)
	return append(out, rs[n:]...)
}

// merge returns the report covering a then b (b the later).
func merge(a, b report) report {
	out := report{at: b.at, interval: a.interval + b.interval, samples: make([]Sample, 0, max(len(a.samples), len(b.samples)))}
	idx := make(map[Key]int, len(a.samples)+len(b.samples))
	for _, rs := range [2][]Sample{a.samples, b.samples} {
		for _, s := range rs {
			k := s.key()
			i, ok := idx[k]
			if !ok {
				idx[k] = len(out.samples)
				out.samples = append(out.samples, s)
				continue
			}
			m := &out.samples[i]
			m.Requests += s.Requests
			m.Failures += s.Failures
			m.Latency = mergeBuckets(m.Latency, s.Latency)
		}
	}
	return out
}

// mergeBuckets adds two sparse histograms (sorted by lower bound), into a
// new slice.
func mergeBuckets(a, b [][2]uint64) [][2]uint64 {
	out := make([][2]uint64, 0, max(len(a), len(b)))
	i, j := 0, 0
	for i < len(a) || j < len(b) {
		switch {
		case j == len(b) || (i < len(a) && a[i][0] < b[j][0]):
			out = append(out, a[i])
			i++
		case i == len(a) || b[j][0] < a[i][0]:
			out = append(out, b[j])
			j++
		default:
			out = append(out, [2]uint64{a[i][0], a[i][1] + b[j][1]})
			i++
			j++
		}
	}
	return out
}

// expire drops reports older than retain, and nodes left with none.
func (w *Window) expire(now time.Time) {
	for node, rs := range w.nodes {
		i := 0
		for i < len(rs) && now.Sub(rs[i].at) > w.retain {
			i++
		}
		switch {
		case i == len(rs):
			delete(w.nodes, node)
		case i > 0:
			w.nodes[node] = append([]report(nil), rs[i:]...)
		}
	}
}

// EdgeStats is one edge's golden signals over a span, from each side that
// reported it (nil for a side that did not).
type EdgeStats struct {
	Source      string
	Destination string
	Protocol    string
	Outbound    *SideStats
	Inbound     *SideStats
}

// SideStats is what the proxies of one side saw of an edge.
type SideStats struct {
	// Requests and Failures are counts over the span (for tcp, connections).
	Requests uint64
	Failures uint64
	// RequestsPerSecond is Requests over the time the reporting nodes
	// covered (the span, or less for a node that began reporting later).
	RequestsPerSecond float64
	// SuccessRate is 1 - Failures/Requests.
	SuccessRate float64
	// P50Ms and P99Ms are latency quantiles in milliseconds: to the end of
	// the answer for L7, to the connection's acceptance for tcp.
	P50Ms float64
	P99Ms float64
	// Reporters is how many nodes reported this side.
	Reporters int
}

type sideAcc struct {
	requests, failures uint64
	hist               Snapshot
	covered            time.Duration // the most any reporting node covered
	reporters          int
}

// Edges merges the reports received within span before now into each
// edge's stats, sorted by source, destination and protocol. match selects
// the edges (nil for all).
func (w *Window) Edges(span time.Duration, now time.Time, match func(source, destination string) bool) []EdgeStats {
	type edgeKey struct{ src, dst, proto string }
	acc := make(map[edgeKey]*[2]*sideAcc)
	w.mu.Lock()
	for _, rs := range w.nodes {
		var covered time.Duration
		seen := make(map[Key]bool)
		for _, r := range rs {
			if now.Sub(r.at) > span {
				continue
			}
			covered += r.interval
			for i := range r.samples {
				s := &r.samples[i]
				if match != nil && !match(s.Source, s.Destination) {
					continue
				}
				ek := edgeKey{s.Source, s.Destination, s.Protocol}
				sides := acc[ek]
				if sides == nil {
					sides = &[2]*sideAcc{}
					acc[ek] = sides
				}
				idx := 0
				if s.Side == Inbound {
					idx = 1
				}
				a := sides[idx]
				if a == nil {
					a = &sideAcc{}
					sides[idx] = a
				}
				a.requests += s.Requests
				a.failures += s.Failures
				a.hist.AddBuckets(s.Latency)
				if k := s.key(); !seen[k] {
					seen[k] = true
					a.reporters++
				}
			}
		}
		// A node's coverage counts for every edge it reported in the span.
		for k := range seen {
			sides := acc[edgeKey{k.Source, k.Destination, k.Protocol}]
			idx := 0
			if k.Side == Inbound {
				idx = 1
			}
			if a := sides[idx]; a != nil {
				a.covered = max(a.covered, min(covered, span))
			}
		}
	}
	w.mu.Unlock()

	out := make([]EdgeStats, 0, len(acc))
	for k, sides := range acc {
		out = append(out, EdgeStats{Source: k.src, Destination: k.dst, Protocol: k.proto,
			Outbound: sides[0].stats(), Inbound: sides[1].stats()})
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if a.Source != b.Source {
			return a.Source < b.Source
		}
		if a.Destination != b.Destination {
			return a.Destination < b.Destination
		}
		return a.Protocol < b.Protocol
	})
	return out
}

func (a *sideAcc) stats() *SideStats {
	if a == nil {
		return nil
	}
	st := &SideStats{Requests: a.requests, Failures: a.failures, Reporters: a.reporters, SuccessRate: 1}
	if a.requests > 0 {
		st.SuccessRate = 1 - float64(a.failures)/float64(a.requests)
	}
	if a.covered > 0 {
		st.RequestsPerSecond = float64(a.requests) / a.covered.Seconds()
	}
	st.P50Ms = float64(a.hist.Quantile(0.5).Microseconds()) / 1000
	st.P99Ms = float64(a.hist.Quantile(0.99).Microseconds()) / 1000
	return st
}
