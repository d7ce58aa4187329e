package proxy

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-metrics"

	"github.com/trellismesh/trellis/connect/golden"
	"github.com/trellismesh/trellis/connect/proxy/rawsock"
)

// Backoff of an instance that failed: backoffBase after the first failure,
// doubling up to backoffMax. New connections prefer instances not backed
// off; a success clears it.
const (
	backoffBase = 250 * time.Millisecond
	backoffMax  = 15 * time.Second
)

// upstream is one local listener and the instances it leads to.
type upstream struct {
	p      *Proxy
	name   string // destination service
	ln     net.Listener
	labels []metrics.Label // proxy, service, upstream

	active        *gauge
	connections   *counter
	closed        *counter
	bytesSent     *counter
	bytesReceived *counter
	dialFail      *counter
	handshakeFail *counter
	denied        *counter
	edge          *golden.Edge // the L4 path's golden signals
	drained       *counter

	mu        sync.Mutex
	endpoints []*endpoint // guarded by mu; replaced whole by SetInstances
	// route is the discovery chain the upstream follows (chain.go); nil:
	// connections go to endpoints.
	route   *route                // guarded by mu
	targets map[string]*targetSet // guarded by mu; instances of route's targets, by target ID
	conns   map[*upConn]struct{}  // guarded by mu; established connections
	http    upstreamHTTP          // the L7 side (http.go)
}

// endpoint is an instance with the state the balancer keeps about it.
type endpoint struct {
	inst   Instance // immutable (its Node is the one of creation; see node)
	node   atomic.Pointer[string]
	key    string       // the pool's key: address and expected identity
	active atomic.Int64 // application connections using or opening a tunnel to it

	// guarded by upstream.mu:
	failures     int
	backoffUntil time.Time
}

func newUpstream(p *Proxy, uc UpstreamConfig, ln net.Listener) *upstream {
	u := &upstream{
		p:      p,
		name:   uc.DestinationName,
		ln:     ln,
		labels: withLabel(p.labels, "upstream", uc.DestinationName),
	}
	r := &p.reg
	u.active = r.gauge(keyUpstreamActive, u.labels)
	u.connections = r.counter(keyUpstreamConnections, u.labels)
	u.closed = r.counter(keyUpstreamClosed, u.labels)
	u.bytesSent = r.counter(keyUpstreamBytesSent, u.labels)
	u.bytesReceived = r.counter(keyUpstreamBytesReceived, u.labels)
	u.dialFail = r.counter(keyUpstreamDialFail, u.labels)
	u.handshakeFail = r.counter(keyUpstreamHandshakeFail, u.labels)
	u.denied = r.counter(keyUpstreamDenied, u.labels)
	u.edge = p.cfg.Golden.Edge(golden.Key{Side: golden.Outbound, Source: p.cfg.Service, Destination: u.name, Protocol: "tcp"})
	u.drained = r.counter(keyUpstreamDrained, u.labels)
	return u
}

func endpointKey(inst Instance) string { return inst.Addr + "|" + inst.Service }

// nodeName returns the node the instance was last reported on.
func (ep *endpoint) nodeName() string {
	if n := ep.node.Load(); n != nil {
		return *n
	}
	return ep.inst.Node
}

// SetInstances replaces the healthy instances of the upstream to
// destination; instances is copied. Until it is called again the proxy keeps
// using this list, also while the servers are unreachable. An instance that
// stays in the list keeps its balancing state (active connections,
// backoff). Instances without an address are ignored; one without a Service
// expects the destination's identity. While the upstream follows a
// discovery chain (SetChain), these instances are kept but not used.
// Unknown destinations are ignored.
func (p *Proxy) SetInstances(destination string, instances []Instance) {
	u := p.upstreams[destination]
	if u == nil {
		p.logger.Debug("instances for an unknown upstream ignored", "upstream", destination)
		return
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	old := make(map[string]*endpoint, len(u.endpoints))
	for _, ep := range u.endpoints {
		old[ep.key] = ep
	}
	next := make([]*endpoint, 0, len(instances))
	seen := make(map[string]bool, len(instances))
	for _, inst := range instances {
		if inst.Addr == "" {
			continue
		}
		if inst.Service == "" {
			inst.Service = destination
		}
		key := endpointKey(inst)
		if seen[key] {
			continue
		}
		seen[key] = true
		// inst's address and identity make the key, so only the node can
		// differ; connections read it without the lock.
		ep := old[key]
		if ep == nil {
			ep = &endpoint{key: key, inst: inst}
		}
		ep.node.Store(&inst.Node)
		next = append(next, ep)
	}
	u.endpoints = next
	u.reviewLocked()
}

// pick chooses an instance not in tried by the power of two choices on
// active connections, preferring instances not backed off; nil when every
// instance has been tried.
func (u *upstream) pick(tried []*endpoint) *endpoint {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.pickLocked(tried, time.Now())
}

func (u *upstream) pickLocked(tried []*endpoint, now time.Time) *endpoint {
	eligible := func(ep *endpoint, backedOffToo bool) bool {
		for _, t := range tried {
			if t == ep {
				return false
			}
		}
		return backedOffToo || !now.Before(ep.backoffUntil)
	}
	for _, backedOffToo := range []bool{false, true} {
		n := 0
		for _, ep := range u.endpoints {
			if eligible(ep, backedOffToo) {
				n++
			}
		}
		if n == 0 {
			continue
		}
		nth := func(i int) *endpoint {
			for _, ep := range u.endpoints {
				if eligible(ep, backedOffToo) {
					if i == 0 {
						return ep
					}
					i--
				}
			}
			panic("proxy: balancer counted more eligible instances than it found") // n was counted under the same lock
		}
		if n == 1 {
			return nth(0)
		}
		i := rand.IntN(n)
		j := rand.IntN(n - 1)
		if j >= i {
			j++
		}
		a, b := nth(i), nth(j)
		if b.active.Load() < a.active.Load() {
			return b
		}
		return a
	}
	return nil
}

// failed backs ep off for a growing interval.
func (u *upstream) failed(ep *endpoint) {
	u.mu.Lock()
	defer u.mu.Unlock()
	ep.failures++
	d := backoffMax
	if ep.failures < 16 {
		d = min(backoffBase<<(ep.failures-1), backoffMax)
	}
	ep.backoffUntil = time.Now().Add(d)
}

// succeeded clears ep's backoff.
func (u *upstream) succeeded(ep *endpoint) {
	u.mu.Lock()
	defer u.mu.Unlock()
	ep.failures = 0
	ep.backoffUntil = time.Time{}
}

func (u *upstream) accept() {
	acceptLoop(u.p, u.ln, "upstream "+u.name, u.serve)
}

// errDenied means the destination refused the tunnel (403): final.
var errDenied = errors.New("denied by the destination")

// serve forwards one application connection to an instance.
func (u *upstream) serve(app net.Conn) {
	app = rawsock.Wrap(app)
	if out := u.httpOutbound(); out != nil {
		// The chain says http: the L7 side serves the connection's requests
		// (it owns app from here, and closes it).
		out.ServeConn(app)
		return
	}
	p := u.p
	if !p.trackApp(app) {
		return
	}
	defer func() {
		p.untrackApp(app)
		app.Close()
	}()
	u.connections.inc()
	u.active.add(1)
	defer func() {
		u.active.add(-1)
		u.closed.inc()
	}()

	start := time.Now()
	out := newOutbound(app, u.bytesSent)
	out.received = u.bytesReceived
	var triedBuf [4]*endpoint
	tried := triedBuf[:0]
	for {
		ch := u.choose(tried, app.RemoteAddr())
		ep := ch.ep
		if ep == nil {
			if p.ctx.Err() == nil {
				u.edge.Observe(true, time.Since(start))
				if ok, suppressed := p.logDial.allow(); ok {
					p.logger.Warn("no instance of the upstream could be reached; closing the application connection",
						logArgs(suppressed, "upstream", u.name, "tried", len(tried), "client", app.RemoteAddr())...)
				}
			}
			return
		}
		tried = append(tried, ep)
		ep.active.Add(1)
		st, err := u.open(p.ctx, ep, out, ch.timeout)
		if err == nil {
			u.edge.Observe(false, time.Since(start))
			u.succeeded(ep)
			c := &upConn{st: st, key: ep.key, target: ch.target, primary: ch.primary, drain: ch.drain}
			if ch.counted != nil {
				ch.counted.inc()
			}
			u.track(c)
			// Attached last: what arrived with the answer may reach the
			// application at once, and the counts above come first.
			st.setApp(app)
			<-st.done
			out.wait()
			u.untrack(c)
			ep.active.Add(-1)
			return
		}
		ep.active.Add(-1)
		if errors.Is(err, errDenied) {
			u.edge.Observe(true, time.Since(start))
			return
		}
		if p.ctx.Err() != nil {
			return
		}
		if errors.Is(err, errSharedDial) {
			continue // the dial this connection waited for failed, and was counted
		}
		var de *dialError
		if errors.As(err, &de) && de.tls {
			u.handshakeFail.inc()
		}
		u.dialFail.inc()
		u.failed(ep)
		if ok, suppressed := p.logDial.allow(); ok {
			p.logger.Warn("could not open a tunnel to an upstream instance; trying another",
				logArgs(suppressed, "upstream", u.name, "target", ch.target, "instance", ep.inst.Addr, "node", ep.nodeName(), "error", err)...)
		}
	}
}

// open opens a CONNECT stream to ep and returns it accepted; the caller
// attaches out.app to it (st.setApp), after counting the success. A stream
// that fails on a pooled tunnel is tried once more on a fresh one (the
// pooled one may have died unnoticed, or be one the destination wants no
// new streams on); failures after that are ep's. ctx is the proxy's
// (cancelled by Close). timeout, when above 0, bounds a dial of a new
// tunnel in place of Config.DialTimeout (a resolver's connect_timeout may
// be longer or shorter); a stream on a pooled tunnel needs no dial, and no
// timeout.
func (u *upstream) open(ctx context.Context, ep *endpoint, out *outbound, timeout time.Duration) (*stream, error) {
	for attempt := 0; ; attempt++ {
		st, reused, err := u.connect(ctx, ep, out, timeout)
		if err == nil || errors.Is(err, errDenied) {
			return st, err
		}
		var se *statusError
		var de *dialError
		retryable := errors.Is(err, errMisdirected) || (!errors.As(err, &se) && !errors.As(err, &de) && !errors.Is(err, errSharedDial))
		if reused && attempt == 0 && retryable && u.p.ctx.Err() == nil {
			continue
		}
		return nil, err
	}
}

// statusError is a refusal of the tunnel other than 403.
type statusError struct {
	status  int
	message string
}

func (e *statusError) Error() string {
	return fmt.Sprintf("destination answered %d %s", e.status, strings.TrimSpace(e.message))
}

// errMisdirected is a 421 answer: the destination takes no new streams on
// this tunnel (the client certificate it was opened with has expired), and
// a new one may do.
var errMisdirected = errors.New("destination answered 421 Misdirected Request: takes no new streams on this tunnel")

// connect opens a stream on a pooled tunnel to ep and waits for the
// destination's answer; reused reports whether the tunnel had served
// before (a failure on it may be the tunnel's, not ep's). ctx is the
// proxy's (cancelled by Close); timeout is as for open.
func (u *upstream) connect(ctx context.Context, ep *endpoint, out *outbound, timeout time.Duration) (st *stream, reused bool, err error) {
	p := u.p
	// timeout bounds a dial, if the pool has to make one: a pooled tunnel
	// costs no timer.
	ot, reused, err := p.pool.get(ctx, ep, timeout)
	if err != nil {
		return nil, false, err
	}
	st, sent, err := ot.open(ep.inst.Service, nil, out.first())
	if err != nil {
		return nil, reused, fmt.Errorf("CONNECT %s at %s: %w", ep.inst.Service, ep.inst.Addr, err)
	}
	// The application's bytes go out now, ahead of the answer.
	stop, ok := out.attempt(p, st, sent)
	if !ok {
		st.abort(errProxyClosed, true)
		return nil, reused, errProxyClosed
	}
	defer func() {
		if err != nil {
			stop() // what the pump read is kept for the next attempt
		}
	}()
	// The destination dials its application within its dial timeout, then
	// answers; a silent one is given up on after twice the bound of this
	// connection's dial (a resolver's connect_timeout, when it sets one).
	answerTimeout := 2 * p.dialTimeout
	if timeout > 0 {
		answerTimeout = 2 * timeout
	}
	timer := time.NewTimer(answerTimeout)
	defer timer.Stop()
	var a answer
	select {
	case a = <-st.answerCh:
	case <-timer.C:
		st.abort(errors.New("no answer"), true)
		ot.drain() // a tunnel this slow is suspect: no new streams on it
		return nil, reused, fmt.Errorf("CONNECT %s at %s: no answer within %s", ep.inst.Service, ep.inst.Addr, answerTimeout)
	case <-ctx.Done():
		st.abort(errProxyClosed, true)
		return nil, reused, errProxyClosed
	}
	switch {
	case a.err != nil:
		return nil, reused, fmt.Errorf("CONNECT %s at %s: %w", ep.inst.Service, ep.inst.Addr, a.err)
	case a.status == 200:
		out.accepted()
		st.onDeliver = out.received.add
		return st, reused, nil // the caller attaches out.app (st.setApp)
	case a.status == 403:
		u.denied.inc()
		if ok, suppressed := p.logDenied.allow(); ok {
			p.logger.Info("the destination denied the connection",
				logArgs(suppressed, "upstream", u.name, "instance", ep.inst.Addr, "node", ep.nodeName(), "message", strings.TrimSpace(a.message))...)
		}
		return nil, reused, errDenied
	case a.status == 421:
		ot.drain()
		return nil, reused, errMisdirected
	}
	return nil, reused, &statusError{status: a.status, message: a.message}
}
