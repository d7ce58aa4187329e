package proxy

import (
	"sync/atomic"
	"time"
)

// workerIdle is how long a goroutine that finished its function waits for
// another before it ends.
//
// A new goroutine starts with a small stack, and the first connection it
// serves grows it a few times (TLS, HTTP/2 framing and the balancer run
// deep): each growth copies the stack and walks its frames, and for a new
// connection per request those copies were about a seventh of the proxies'
// CPU. A goroutine kept for the next function starts it with the stack the
// last one grew.
const workerIdle = 5 * time.Second

// maxIdleWorkers bounds the goroutines waiting for work, across all the
// proxies of the process: an agent runs a proxy per sidecar, and each
// idle goroutine holds its grown stack (100 sidecars' proxies that each
// kept a few took 2–3 MB more).
const maxIdleWorkers = 16

// idleWorkers counts the goroutines waiting for work, in all proxies.
var idleWorkers atomic.Int32

// workers hands functions to the proxy's idle goroutines.
type workers struct {
	// work is taken by idle workers; unbuffered, so a send succeeds only
	// when one is waiting.
	work chan func()
	// started counts the goroutines started (for tests).
	started atomic.Int64
}

// goFunc runs f in a goroutine that Close waits for: one that finished
// earlier work and waits for more if there is one, else a new one. It
// returns false, and runs nothing, once Close has begun.
func (p *Proxy) goFunc(f func()) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return false
	}
	select {
	case p.workers.work <- f: // does not wait: the worker takes no lock to receive
		return true
	default:
	}
	p.goroutines.Add(1)
	p.workers.started.Add(1)
	go p.work(f)
	return true
}

// work runs f, then the functions handed to it, until none came for
// workerIdle, the proxy closes, or maxIdleWorkers already wait. Its count
// in p.goroutines lasts its life.
func (p *Proxy) work(f func()) {
	defer p.goroutines.Done()
	var idle *time.Timer
	for {
		f()
		if idleWorkers.Add(1) > maxIdleWorkers {
			idleWorkers.Add(-1)
			return
		}
		if idle == nil {
			idle = time.NewTimer(workerIdle)
			defer idle.Stop()
		} else {
			idle.Reset(workerIdle)
		}
		select {
		case f = <-p.workers.work:
			idleWorkers.Add(-1)
		case <-idle.C:
			idleWorkers.Add(-1)
			return
		case <-p.ctx.Done():
			idleWorkers.Add(-1)
			return
		}
	}
}
