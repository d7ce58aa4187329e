// Package heapfloor keeps the Go garbage collector from running often on a
// small heap.
//
// With the default GOGC of 100 a collection starts when the heap has grown
// by as much as was live after the last one. An agent's live heap is a few
// megabytes, so under traffic the collector ran several times a second,
// and the requests that met a collection's mark phase made the proxies'
// tail latency. While collections come more than once a second, a Tuner
// keeps the heap's growth allowance at least a floor: the GOGC percentage
// is raised while the live heap is small, and is the default again once
// the live heap passes the floor, so memory use grows by at most the
// floor. After quietTicks seconds without a collection (an idle agent) the
// default is back and the spare memory is returned to the system, so an
// idle agent's memory is what it would be without the tuner.
//
// An explicit GOGC in the environment is the operator's choice: Start then
// changes nothing. GOMEMLIMIT is honoured by the runtime either way.
package heapfloor

import (
	"os"
	"runtime/debug"
	"runtime/metrics"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/trellismesh/trellis/internal/periodic"
)

// DefaultFloor is the agent's growth allowance: a few seconds of proxy
// traffic at 1,000 requests/s between collections.
const DefaultFloor = 16 << 20

// maxPercent bounds the GOGC percentage the tuner sets, for a live heap
// far below the floor.
const maxPercent = 2000

// interval is how often the tuner reads the runtime's figures.
const interval = time.Second

// busyCycles collections within one interval raise the percentage;
// quietTicks intervals in a row without one lower it again.
const (
	busyCycles = 2
	quietTicks = 30
)

// The runtime metrics read: heap bytes marked live by the last collection,
// and collections so far.
const (
	liveHeap = "/gc/heap/live:bytes"
	gcCycles = "/gc/cycles/total:gc-cycles"
)

// Tuner adjusts the GOGC percentage while it runs.
type Tuner struct {
	floor   uint64
	base    int // the percentage at Start, restored by Stop
	logger  hclog.Logger
	loop    *periodic.Loop
	sample  []metrics.Sample
	percent int    // owned by the goroutine; the percentage last set
	raised  bool   // owned by the goroutine; collections are frequent
	cycles  uint64 // owned by the goroutine; collections at the last tick
	quiet   int    // owned by the goroutine; ticks since a collection
}

// Start starts a tuner keeping the heap's growth allowance at least floor
// bytes, or returns nil when GOGC is set in the environment, collection is
// off, or floor is 0 (Stop on a nil Tuner does nothing).
func Start(floor uint64, logger hclog.Logger) *Tuner {
	if _, set := os.LookupEnv("GOGC"); set || floor == 0 {
		return nil
	}
	base := debug.SetGCPercent(100)
	debug.SetGCPercent(base)
	if base <= 0 {
		return nil // collection is off, or set to run always: not ours to change
	}
	t := &Tuner{
		floor:   floor,
		base:    base,
		logger:  logger,
		sample:  []metrics.Sample{{Name: liveHeap}, {Name: gcCycles}},
		percent: base,
	}
	metrics.Read(t.sample)
	if t.sample[1].Value.Kind() == metrics.KindUint64 {
		t.cycles = t.sample[1].Value.Uint64()
	}
	t.loop = periodic.Start(interval, func(time.Time) { t.adjust() })
	return t
}

// Stop ends the tuner and restores the GOGC percentage it found. It
// returns once the tuner's goroutine is gone. Idempotent.
func (t *Tuner) Stop() {
	if t == nil {
		return
	}
	if t.loop.Stop() {
		debug.SetGCPercent(t.base)
	}
}

// adjust reads the runtime's figures and sets the percentage step says.
func (t *Tuner) adjust() {
	metrics.Read(t.sample)
	if t.sample[0].Value.Kind() != metrics.KindUint64 || t.sample[1].Value.Kind() != metrics.KindUint64 {
		return // not reported by this runtime
	}
	live := t.sample[0].Value.Uint64()
	p := t.step(live, t.sample[1].Value.Uint64())
	if p == t.percent {
		return
	}
	debug.SetGCPercent(p)
	t.logger.Trace("GC percentage", "percent", p, "live_bytes", live, "frequent", t.raised)
	lowered := p < t.percent
	t.percent = p
	if lowered && !t.raised {
		// Quiet for a while: give back what the busy spell's heap took
		// (the runtime would return it only slowly).
		debug.FreeOSMemory()
	}
}

// step notes the collections since the last tick (cycles is the total so
// far) and returns the percentage to run with: raised for the live heap
// the last collection left while collections are frequent, the base
// otherwise. A change of less than a tenth keeps the current one: the
// live heap moves all the time.
func (t *Tuner) step(live, cycles uint64) int {
	n := cycles - t.cycles
	t.cycles = cycles
	switch {
	case n >= busyCycles:
		t.raised, t.quiet = true, 0
	case n > 0:
		t.quiet = 0
	default:
		t.quiet++
		if t.quiet >= quietTicks {
			t.raised = false
		}
	}
	if !t.raised {
		return t.base
	}
	p := Percent(live, t.floor, t.base)
	if p > t.percent*9/10 && p < t.percent*11/10 {
		return t.percent
	}
	return p
}

// heapMinimum is the runtime's smallest heap goal at GOGC=100 (4 MB); it
// scales with the percentage, so a high percentage raises it too.
const heapMinimum = 4 << 20

// Percent is the GOGC percentage that lets a heap with live bytes live
// grow by about floor bytes before the next collection, and never less
// than base. The runtime's goal is the larger of live*(1+p/100) and
// heapMinimum*p/100; both are kept near live+floor.
func Percent(live, floor uint64, base int) int {
	p := (live + floor) * 100 / heapMinimum // the minimum goal is live+floor
	if live > 0 {
		p = min(p, floor*100/live) // growth is floor
	}
	p = min(p, maxPercent)
	return max(int(p), base)
}
