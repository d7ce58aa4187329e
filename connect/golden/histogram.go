package golden

import (
	"math/bits"
	"sync/atomic"
	"time"
)

// Histogram counts latencies in log-linear buckets: exact below 16µs, then
// eight buckets per power of two (a relative error under 7%), up to about
// 12 days. Recording is one atomic add; a snapshot swaps every bucket to
// zero, so each snapshot covers the samples since the previous one. The
// zero value is ready to use.
type Histogram struct {
	buckets [histBuckets]atomic.Uint64
}

const (
	histLinear  = 16
	histSub     = 8 // buckets per power of two; a power of two itself
	histSubBits = 3
	histMaxExp  = 40
	histBuckets = histLinear + (histMaxExp-4+1)*histSub
)

func histIndex(us uint64) int {
	if us < histLinear {
		return int(us)
	}
	e := bits.Len64(us) - 1 // ≥ 4
	if e > histMaxExp {
		return histBuckets - 1
	}
	sub := int(us>>(uint(e)-histSubBits)) & (histSub - 1)
	return histLinear + (e-4)*histSub + sub
}

// histBounds returns the [low, high) microseconds of bucket i.
func histBounds(i int) (low, high uint64) {
	if i < histLinear {
		return uint64(i), uint64(i) + 1
	}
	e := uint((i-histLinear)/histSub + 4)
	sub := uint64((i - histLinear) % histSub)
	width := uint64(1) << (e - histSubBits)
	low = (histSub + sub) * width
	return low, low + width
}

// Record adds one sample.
func (h *Histogram) Record(d time.Duration) {
	us := d.Microseconds()
	if us < 0 {
		us = 0
	}
	h.buckets[histIndex(uint64(us))].Add(1)
}

// addBuckets adds counts in the form Snapshot.Buckets returns.
func (h *Histogram) addBuckets(b [][2]uint64) {
	for _, lc := range b {
		h.buckets[histIndex(lc[0])].Add(lc[1])
	}
}

// Snapshot takes (and resets) the counts.
func (h *Histogram) Snapshot() (s Snapshot) {
	for i := range h.buckets {
		if n := h.buckets[i].Load(); n != 0 {
			n = h.buckets[i].Swap(0)
			s.counts[i] = n
			s.total += n
		}
	}
	return s
}

// Snapshot is the counts of a histogram over some interval; snapshots of
// several histograms (or intervals) merge with Add.
type Snapshot struct {
	counts [histBuckets]uint64
	total  uint64
}

// Total is the number of samples.
func (s *Snapshot) Total() uint64 { return s.total }

// Add merges o's counts into s.
func (s *Snapshot) Add(o *Snapshot) {
	if o.total == 0 {
		return
	}
	for i, n := range o.counts {
		s.counts[i] += n
	}
	s.total += o.total
}

// Quantile returns the q-th quantile (0 < q ≤ 1) as a duration: the middle
// of the bucket that holds it. 0 when there are no samples.
func (s *Snapshot) Quantile(q float64) time.Duration {
	if s.total == 0 {
		return 0
	}
	rank := uint64(q*float64(s.total) + 0.5)
	if rank < 1 {
		rank = 1
	}
	var seen uint64
	for i, n := range s.counts {
		seen += n
		if seen >= rank {
			lo, hi := histBounds(i)
			return time.Duration((lo+hi)/2) * time.Microsecond
		}
	}
	lo, hi := histBounds(histBuckets - 1)
	return time.Duration((lo+hi)/2) * time.Microsecond
}

// Buckets returns the non-empty buckets, each as its lower bound in
// microseconds and its count: the wire form of a snapshot. It names bounds,
// not bucket numbers, so a peer with other buckets can still read it.
func (s *Snapshot) Buckets() [][2]uint64 {
	var out [][2]uint64
	for i, n := range s.counts {
		if n != 0 {
			lo, _ := histBounds(i)
			out = append(out, [2]uint64{lo, n})
		}
	}
	return out
}

// AddBuckets merges counts in the form Buckets returns.
func (s *Snapshot) AddBuckets(b [][2]uint64) {
	for _, lc := range b {
		s.counts[histIndex(lc[0])] += lc[1]
		s.total += lc[1]
	}
}
