package checks

import (
	"context"
	"math/rand/v2"
	"time"

	"github.com/trellismesh/trellis/raftstore/structs"
)

// probeFunc runs one probe, bounded by ctx, and returns its status and output.
type probeFunc func(ctx context.Context) (status, output string)

// periodic runs a probe every interval, damps its results and reports them.
// HTTP and TCP checks are periodic.
type periodic struct {
	base
	life     lifecycle
	interval time.Duration
	timeout  time.Duration
	probe    probeFunc
	damp     damper // used only by the run goroutine
}

func newPeriodic(b base, probe probeFunc) *periodic {
	return &periodic{
		base:     b,
		interval: b.def.Interval,
		timeout:  probeTimeout(b.def.Timeout, b.def.Interval),
		probe:    probe,
		damp: damper{
			successBefore:  b.def.SuccessBeforePassing,
			failuresBefore: b.def.FailuresBeforeCritical,
		},
	}
}

// probeTimeout is the definition's timeout, DefaultTimeout when zero, and
// never more than the interval.
func probeTimeout(timeout, interval time.Duration) time.Duration {
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	if interval > 0 && timeout > interval {
		timeout = interval
	}
	return timeout
}

// firstDelay is the random delay before the first probe; see the package doc.
func firstDelay(interval time.Duration) time.Duration {
	return randDuration(min(interval, MaxFirstDelay))
}

// secondDelay is the random delay between the first and second probe, in
// [interval/2, interval), which spreads checks that started together.
func secondDelay(interval time.Duration) time.Duration {
	return interval/2 + randDuration(interval-interval/2)
}

// randDuration returns a random duration in [0, d); 0 when d <= 0.
func randDuration(d time.Duration) time.Duration {
	if d <= 0 {
		return 0
	}
	return rand.N(d)
}

func (p *periodic) Start() { p.life.start(p.run) }
func (p *periodic) Stop()  { p.life.stop() }

func (p *periodic) run(ctx context.Context) {
	timer := time.NewTimer(firstDelay(p.interval))
	defer timer.Stop()
	for n := 0; ; n++ {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		}
		p.once(ctx)
		if ctx.Err() != nil {
			return // stopped mid-probe: the result says nothing about the target
		}
		next := p.interval
		if n == 0 {
			next = secondDelay(p.interval)
		}
		timer.Reset(next)
	}
}

// once runs one probe and reports its result when damping allows.
func (p *periodic) once(ctx context.Context) {
	pctx, cancel := context.WithTimeout(ctx, p.timeout)
	status, output := p.probe(pctx)
	cancel()
	if ctx.Err() != nil {
		return
	}
	if !p.damp.admit(status) {
		p.logger.Debug("holding back result until enough probes agree",
			"status", status, "successes", p.damp.successes, "failures", p.damp.failures)
		return
	}
	p.report(status, output)
}

// damper holds back status changes until enough consecutive probes agree.
type damper struct {
	successBefore  int
	failuresBefore int
	successes      int // consecutive passing results
	failures       int // consecutive non-passing results
}

// admit records a result and reports whether it may be reported.
func (d *damper) admit(status string) bool {
	if status == structs.HealthPassing {
		d.successes++
		d.failures = 0
		return d.successes >= d.successBefore
	}
	d.failures++
	d.successes = 0
	return d.failures >= d.failuresBefore
}
