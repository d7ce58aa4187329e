// Package procs runs the Go scheduler on one processor while the agent is
// lightly loaded, and on all of them once it is busy.
//
// A proxy hands each request between goroutines a few times. With more
// than one processor (GOMAXPROCS) and little load, every hand-off wakes an
// idle thread on another CPU to run the goroutine, and that thread soon
// finds nothing more and sleeps again: on a virtual machine each such
// wake-up is an interrupt to another CPU, and under HTTP traffic at
// 1,000 requests/s they were most of the proxies' CPU. On one processor
// the goroutine runs where it was readied. A Tuner sets GOMAXPROCS to 1
// while the process uses less than a core, and back to the runtime's
// default as soon as it uses more.
//
// An explicit GOMAXPROCS in the environment is the operator's choice:
// Start then changes nothing.
package procs

import (
	"os"
	"runtime"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/trellismesh/trellis/internal/periodic"
)

// interval is how often the tuner reads the process's CPU time.
const interval = time.Second

// Thresholds, in CPU seconds per second: on one processor, using raiseAt
// of it means the process could use more; on all of them, using less
// than lowerAt for quietTicks intervals in a row means one would do.
const (
	raiseAt    = 0.4
	lowerAt    = 0.3
	quietTicks = 10
)

// Tuner changes GOMAXPROCS while it runs.
type Tuner struct {
	logger hclog.Logger
	loop   *periodic.Loop

	max   int           // owned by the goroutine; the default's processors
	procs int           // owned by the goroutine; the current setting
	quiet int           // owned by the goroutine; light intervals in a row
	last  time.Duration // owned by the goroutine; CPU time at the last tick
	at    time.Time     // owned by the goroutine; when it was read
}

// Start starts a tuner, or returns nil when GOMAXPROCS is set in the
// environment or the default is one processor already (Stop on a nil
// Tuner does nothing). The process starts on one processor.
func Start(logger hclog.Logger) *Tuner {
	if _, set := os.LookupEnv("GOMAXPROCS"); set {
		return nil
	}
	max := runtime.GOMAXPROCS(0)
	if max <= 1 {
		return nil
	}
	t := &Tuner{logger: logger, max: max, procs: max, last: cpuTime(), at: time.Now()}
	t.set(1)
	t.loop = periodic.Start(interval, t.tick)
	return t
}

// Stop ends the tuner and gives GOMAXPROCS back to the runtime's default.
// It returns once the tuner's goroutine is gone. Idempotent.
func (t *Tuner) Stop() {
	if t == nil {
		return
	}
	if t.loop.Stop() {
		runtime.SetDefaultGOMAXPROCS()
	}
}

// tick reads the CPU time the process used since the last tick and sets
// the processors step says.
func (t *Tuner) tick(now time.Time) {
	used := cpuTime()
	load := (used - t.last).Seconds() / now.Sub(t.at).Seconds()
	t.last, t.at = used, now
	if p := t.step(load); p != t.procs {
		t.set(p)
	}
}

// step returns the processors to run with after an interval in which the
// process used load CPU seconds per second.
func (t *Tuner) step(load float64) int {
	if t.procs == 1 {
		if load >= raiseAt {
			t.quiet = 0
			return t.max
		}
		return 1
	}
	if load < lowerAt {
		t.quiet++
		if t.quiet >= quietTicks {
			t.quiet = 0
			return 1
		}
	} else {
		t.quiet = 0
	}
	return t.procs
}

func (t *Tuner) set(p int) {
	runtime.GOMAXPROCS(p)
	t.logger.Debug("GOMAXPROCS", "procs", p)
	t.procs = p
}

// cpuTime is the process's user and system CPU time so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
