package checks

import (
	"context"
	"sync"
	"time"

	"github.com/trellismesh/trellis/raftstore/structs"
)

// ttlExpiredOutput is the output of a TTL check whose TTL passed.
const ttlExpiredOutput = "TTL expired"

// TTL is a check whose status is set from outside (the agent's
// check/pass|warn|fail|update endpoints) through SetStatus. When TTL passes
// without a SetStatus, it turns critical with the output "TTL expired",
// followed by the last output it was given. The TTL is counted from Start,
// or from the last SetStatus.
type TTL struct {
	base
	life    lifecycle
	ttl     time.Duration
	resetCh chan struct{} // wakes the goroutine after SetStatus; buffered 1

	// mu serialises SetStatus with expiry, so the notifier sees results in
	// the order they happened.
	mu         sync.Mutex
	expires    time.Time // guarded by mu; zero until Start or SetStatus
	expired    bool      // guarded by mu; the expiry was reported
	lastOutput string    // guarded by mu
}

var _ Check = (*TTL)(nil)

func newTTL(b base) *TTL {
	return &TTL{base: b, ttl: b.def.TTL, resetCh: make(chan struct{}, 1)}
}

// Start starts counting the TTL.
func (c *TTL) Start() { c.life.start(c.run) }

// Stop stops counting and waits for the goroutine. A TTL check that is
// stopped no longer expires; SetStatus still reports.
func (c *TTL) Stop() { c.life.stop() }

// SetStatus sets the check's status and output, reports them, and restarts
// the TTL. status must be passing, warning or critical; output is cut to
// OutputMaxSize.
func (c *TTL) SetStatus(status, output string) error {
	switch status {
	case structs.HealthPassing, structs.HealthWarning, structs.HealthCritical:
	default:
		return structs.Invalid("Status", "%q is not one of passing, warning, critical", status)
	}
	c.mu.Lock()
	c.expires = time.Now().Add(c.ttl)
	c.expired = false
	c.lastOutput = truncate(output, c.outputMax())
	c.report(status, c.lastOutput)
	c.mu.Unlock()
	select {
	case c.resetCh <- struct{}{}:
	default: // a wake-up is already pending
	}
	return nil
}

func (c *TTL) run(ctx context.Context) {
	c.mu.Lock()
	if c.expires.IsZero() {
		c.expires = time.Now().Add(c.ttl)
	}
	c.mu.Unlock()

	timer := time.NewTimer(c.ttl)
	defer timer.Stop()
	for {
		c.mu.Lock()
		wait, expired := time.Until(c.expires), c.expired
		c.mu.Unlock()
		var timerC <-chan time.Time
		if !expired {
			timer.Reset(max(wait, 0))
			timerC = timer.C
		}
		select {
		case <-ctx.Done():
			return
		case <-c.resetCh:
		case <-timerC:
			c.expireIfDue()
		}
	}
}

// expireIfDue reports the check critical if its TTL has passed and no
// SetStatus came in meanwhile.
func (c *TTL) expireIfDue() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.expired || time.Now().Before(c.expires) {
		return
	}
	c.expired = true
	output := ttlExpiredOutput
	if c.lastOutput != "" {
		output += " (last output before timeout follows): " + c.lastOutput
	}
	c.logger.Warn("check missed its TTL", "ttl", c.ttl)
	c.report(structs.HealthCritical, output)
}
