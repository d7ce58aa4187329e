package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-metrics"
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
	active gaugeCounter

	mu        sync.Mutex
	endpoints []*endpoint // guarded by mu; replaced whole by SetInstances
}

// endpoint is an instance with the state the balancer keeps about it.
type endpoint struct {
	inst   Instance
	key    string       // the pool's key: address and expected identity
	active atomic.Int64 // application connections using or opening a tunnel to it

	// guarded by upstream.mu:
	failures     int
	backoffUntil time.Time
}

func newUpstream(p *Proxy, uc UpstreamConfig, ln net.Listener) *upstream {
	return &upstream{
		p:      p,
		name:   uc.DestinationName,
		ln:     ln,
		labels: withLabel(p.labels, "upstream", uc.DestinationName),
	}
}

func endpointKey(inst Instance) string { return inst.Addr + "|" + inst.Service }

// SetInstances replaces the healthy instances of the upstream to
// destination; instances is copied. Until it is called again the proxy keeps
// using this list, also while the servers are unreachable. An instance that
// stays in the list keeps its balancing state (active connections,
// backoff). Instances without an address are ignored; one without a Service
// expects the destination's identity. Unknown destinations are ignored.
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
		ep := old[key]
		if ep == nil {
			ep = &endpoint{key: key}
		}
		ep.inst = inst
		next = append(next, ep)
	}
	u.endpoints = next
}

// pick chooses an instance not in tried by the power of two choices on
// active connections, preferring instances not backed off; nil when every
// instance has been tried.
func (u *upstream) pick(tried []*endpoint) *endpoint {
	now := time.Now()
	u.mu.Lock()
	defer u.mu.Unlock()
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
	p := u.p
	if !p.trackApp(app) {
		return
	}
	defer func() {
		p.untrackApp(app)
		app.Close()
	}()
	incrCounter(keyUpstreamConnections, u.labels)
	u.active.add(1, keyUpstreamActive, u.labels)
	defer func() {
		u.active.add(-1, keyUpstreamActive, u.labels)
		incrCounter(keyUpstreamClosed, u.labels)
	}()

	sent := newMeter(keyUpstreamBytesSent, u.labels)
	received := newMeter(keyUpstreamBytesReceived, u.labels)
	defer sent.flush()
	defer received.flush()

	var triedBuf [4]*endpoint
	tried := triedBuf[:0]
	for {
		ep := u.pick(tried)
		if ep == nil {
			if p.ctx.Err() == nil {
				if ok, suppressed := p.logDial.allow(); ok {
					p.logger.Warn("no instance of the upstream could be reached; closing the application connection",
						logArgs(suppressed, "upstream", u.name, "tried", len(tried), "client", app.RemoteAddr())...)
				}
			}
			return
		}
		tried = append(tried, ep)
		ep.active.Add(1)
		t, err := u.open(ep, app, sent)
		if err == nil {
			u.succeeded(ep)
			u.pipe(t, app, received)
			ep.active.Add(-1)
			return
		}
		ep.active.Add(-1)
		if errors.Is(err, errDenied) || p.ctx.Err() != nil {
			return
		}
		var de *dialError
		if errors.As(err, &de) && de.tls {
			incrCounter(keyUpstreamHandshakeFail, u.labels)
		}
		incrCounter(keyUpstreamDialFail, u.labels)
		u.failed(ep)
		if ok, suppressed := p.logDial.allow(); ok {
			p.logger.Warn("could not open a tunnel to an upstream instance; trying another",
				logArgs(suppressed, "upstream", u.name, "instance", ep.inst.Addr, "node", ep.inst.Node, "error", err)...)
		}
	}
}

// outboundTunnel is an open CONNECT stream to an instance.
type outboundTunnel struct {
	ep     *endpoint
	resp   *http.Response
	body   *appBody
	cancel context.CancelFunc // ends the stream
}

// open opens a CONNECT stream to ep for app. A stream that fails on a
// pooled connection is tried once more on a fresh one (the pooled one may
// have died unnoticed); failures after that are ep's.
func (u *upstream) open(ep *endpoint, app net.Conn, sent *meter) (*outboundTunnel, error) {
	for attempt := 0; ; attempt++ {
		t, reused, err := u.roundTrip(ep, app, sent)
		if err == nil || errors.Is(err, errDenied) {
			return t, err
		}
		var se *statusError
		var de *dialError
		if reused && attempt == 0 && !errors.As(err, &se) && !errors.As(err, &de) && u.p.ctx.Err() == nil {
			continue
		}
		return nil, err
	}
}

// statusError is a refusal of the tunnel other than 403.
type statusError struct{ status string }

func (e *statusError) Error() string { return "destination answered " + e.status }

// roundTrip sends a CONNECT request to ep over a pooled tunnel connection
// and waits for the answer; reused reports whether the connection had
// served before (a failure on it may be the connection's, not ep's).
func (u *upstream) roundTrip(ep *endpoint, app net.Conn, sent *meter) (t *outboundTunnel, reused bool, err error) {
	p := u.p
	ctx, cancel := context.WithCancel(p.ctx)
	body := newAppBody(app, sent)
	req, err := http.NewRequestWithContext(ctx, http.MethodConnect, "https://"+ep.inst.Service, body)
	if err != nil {
		cancel()
		return nil, false, fmt.Errorf("CONNECT request for service %q: %w", ep.inst.Service, err)
	}
	tc, reused, err := p.pool.get(ctx, ep)
	if err != nil {
		cancel()
		return nil, false, err
	}
	// The destination dials its application within its dial timeout, then
	// answers; a silent one is given up on after twice that.
	timer := time.AfterFunc(2*p.dialTimeout, cancel)
	resp, err := tc.cc.RoundTrip(req)
	timedOut := !timer.Stop()
	fail := func(err error) (*outboundTunnel, bool, error) {
		body.Close()
		if resp != nil {
			resp.Body.Close()
		}
		cancel()
		if tc.broken() {
			p.pool.drop(tc)
		}
		return nil, reused, err
	}
	switch {
	case err != nil && timedOut:
		return fail(fmt.Errorf("CONNECT %s at %s: no answer within %s", ep.inst.Service, ep.inst.Addr, 2*p.dialTimeout))
	case err != nil:
		return fail(fmt.Errorf("CONNECT %s at %s: %w", ep.inst.Service, ep.inst.Addr, err))
	case resp.StatusCode == http.StatusForbidden:
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		incrCounter(keyUpstreamDenied, u.labels)
		if ok, suppressed := p.logDenied.allow(); ok {
			p.logger.Info("the destination denied the connection",
				logArgs(suppressed, "upstream", u.name, "instance", ep.inst.Addr, "node", ep.inst.Node, "message", strings.TrimSpace(string(msg)))...)
		}
		return fail(errDenied)
	case resp.StatusCode != http.StatusOK:
		return fail(&statusError{status: resp.Status})
	}
	return &outboundTunnel{ep: ep, resp: resp, body: body, cancel: cancel}, reused, nil
}

// pipe copies an open tunnel and its application connection both ways and
// returns once both directions have ended. The application's bytes flow
// through t.body, read by the HTTP/2 transport; the destination's are
// copied here.
func (u *upstream) pipe(t *outboundTunnel, app net.Conn, received *meter) {
	t.body.open()
	err := copyStream(app, t.resp.Body, nil, received)
	if err == nil {
		// The destination ended its direction: pass the EOF on, and wait
		// for the application to end its own, or for the destination to
		// reset the stream (it does once its application has closed).
		closeWrite(app)
		select {
		case <-t.body.ended:
		case <-t.body.done:
		case <-u.p.ctx.Done():
		}
	}
	t.body.Close()
	// Closing the response body ends the stream and waits for the
	// transport to be done reading t.body.
	t.resp.Body.Close()
	t.cancel()
}
