package proxymgr

import (
	"reflect"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/trellismesh/trellis/agent/mesh"
	"github.com/trellismesh/trellis/connect/chain"
	"github.com/trellismesh/trellis/connect/configentry"
	"github.com/trellismesh/trellis/connect/proxy"
)

// readyTimeout is how long a new chain waits for the first endpoints of
// the targets it adds before it is applied anyway: until then new
// connections keep going where the previous chain led, rather than finding
// a target with no instances known yet.
const readyTimeout = 2 * time.Second

// follower keeps one upstream of a proxy on its destination's discovery
// chain: it watches the endpoints of every target the chain leads tcp
// connections to (the primary and the failovers), sets the chain on the
// proxy once the targets it adds have reported their endpoints (or after
// readyTimeout), and releases the watches of targets no longer referenced.
//
// Lock order: mu, then the proxy's. The mesh cache calls back without
// holding mu's callers' locks: nothing holding mu waits for a watch.
type follower struct {
	cache  *mesh.Cache
	p      *proxy.Proxy
	dest   string
	logger hclog.Logger

	release func() // of the chain subscription; set once follow returns

	mu         sync.Mutex
	closed     bool                // guarded by mu
	appliedIDs map[string]bool     // guarded by mu; the tcp targets of the chain the proxy has
	pending    *chain.Chain        // guarded by mu; waiting for its targets' first endpoints
	timer      *time.Timer         // guarded by mu; applies pending after readyTimeout
	timerDone  chan struct{}       // guarded by mu; closed when timer's callback has ended
	targets    map[string]*watched // guarded by mu; by target ID
}

// watched is the endpoint watch of one target.
type watched struct {
	id     string
	target chain.Target // as subscribed: a change of definition resubscribes

	// guarded by follower.mu:
	has     bool // the first endpoints arrived (or the watch could not start)
	insts   []proxy.Instance
	release func()
}

// follow starts following the chain of dest for the upstream of p to it.
func follow(c *mesh.Cache, p *proxy.Proxy, dest string, logger hclog.Logger) (*follower, error) {
	f := &follower{cache: c, p: p, dest: dest, logger: logger, targets: map[string]*watched{}}
	release, err := c.SubscribeChain(dest, f.onChain)
	if err != nil {
		return nil, err
	}
	f.release = release
	return f, nil
}

// tcpTargets returns the IDs of the targets of c that tcp connections use.
func tcpTargets(c *chain.Chain) map[string]*chain.Target {
	out := map[string]*chain.Target{}
	primary, failover := c.TCPTarget()
	if primary == "" {
		return out
	}
	for _, id := range append([]string{primary}, failover...) {
		if t := c.Targets[id]; t != nil {
			out[id] = t
		}
	}
	return out
}

// usedTargets returns the targets of c the upstream's connections use: for
// an http chain every target (routes and splits lead anywhere), for tcp the
// primary and the failovers.
func usedTargets(c *chain.Chain) map[string]*chain.Target {
	if configentry.IsHTTP(c.Protocol) {
		return c.Targets
	}
	return tcpTargets(c)
}

// onChain takes a new chain of the destination (from the chain watch; the
// calls of one subscription never overlap).
func (f *follower) onChain(c *chain.Chain) {
	want := usedTargets(c)
	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		return
	}
	var drop, add []*watched
	for id, w := range f.targets {
		if t, ok := want[id]; !ok || !reflect.DeepEqual(&w.target, t) {
			drop = append(drop, w)
			delete(f.targets, id)
		}
	}
	for id, t := range want {
		if f.targets[id] == nil {
			w := &watched{id: id, target: *t}
			f.targets[id] = w
			add = append(add, w)
		}
	}
	f.pending = c
	f.mu.Unlock()

	// Outside mu: a subscription delivers the endpoints it has at once, and
	// releasing the last subscriber of a watch waits for its goroutine.
	for _, w := range drop {
		f.mu.Lock()
		release := w.release
		w.release = nil
		f.mu.Unlock()
		if release != nil {
			release()
		}
	}
	for _, w := range add {
		release, err := f.cache.SubscribeTarget(&w.target, func(in []proxy.Instance) { f.onTarget(w, in) })
		f.mu.Lock()
		current := !f.closed && f.targets[w.id] == w
		switch {
		case err != nil:
			f.logger.Error("cannot watch the endpoints of a target of the discovery chain", "upstream", f.dest, "target", w.id, "error", err)
			w.has = true // it has none: failover, if any, takes over
		case current:
			w.release = release
		}
		f.mu.Unlock()
		if err == nil && !current {
			release()
		}
	}

	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.closed {
		f.applyLocked(false)
		if f.pending != nil && f.timer == nil {
			done := make(chan struct{})
			var t *time.Timer
			t = time.AfterFunc(readyTimeout, func() {
				defer close(done)
				f.mu.Lock()
				defer f.mu.Unlock()
				if !f.closed && f.timer == t {
					f.logger.Warn("applying the discovery chain before every target reported its endpoints", "upstream", f.dest, "waited", readyTimeout)
					f.applyLocked(true)
				}
			})
			f.timer, f.timerDone = t, done
		}
	}
}

// onTarget takes new endpoints of a target (from its watch).
func (f *follower) onTarget(w *watched, in []proxy.Instance) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed || f.targets[w.id] != w {
		return // released, or replaced: late call
	}
	w.insts, w.has = in, true
	if f.appliedIDs[w.id] {
		f.p.SetTargetInstances(f.dest, w.id, in)
	}
	f.applyLocked(false)
}

// applyLocked sets the pending chain on the proxy, with the endpoints of
// its targets, once each of them has reported (or at once with force).
func (f *follower) applyLocked(force bool) {
	c := f.pending
	if c == nil {
		return
	}
	want := usedTargets(c)
	if !force {
		for id := range want {
			if w := f.targets[id]; w != nil && !w.has {
				return
			}
		}
	}
	f.pending = nil
	if f.timer != nil {
		f.timer.Stop() // a callback already started sees it is not current
		f.timer, f.timerDone = nil, nil
	}
	f.appliedIDs = map[string]bool{}
	f.p.SetChain(f.dest, c)
	for id := range want {
		f.appliedIDs[id] = true
		if w := f.targets[id]; w != nil && w.has {
			f.p.SetTargetInstances(f.dest, id, w.insts)
		}
	}
}

// close stops following: no chain or endpoints reach the proxy afterwards,
// every watch is released and the ready timer is stopped.
func (f *follower) close() {
	f.mu.Lock()
	f.closed = true
	targets := f.targets
	f.targets = nil
	t, done := f.timer, f.timerDone
	f.timer, f.timerDone = nil, nil
	var releases []func()
	for _, w := range targets {
		if w.release != nil {
			releases = append(releases, w.release)
			w.release = nil
		}
	}
	f.mu.Unlock()
	if t != nil && !t.Stop() {
		<-done // its callback runs: wait for it to see closed
	}
	if f.release != nil {
		f.release()
	}
	for _, r := range releases {
		r()
	}
}
