package l7

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/trellismesh/trellis/connect"
	"github.com/trellismesh/trellis/connect/proxy/l7/h2link"
	"github.com/trellismesh/trellis/connect/proxy/rawsock"
)

// errOverloaded means a circuit breaker refused the request.
var errOverloaded = errors.New("circuit breaker open")

// connectError is a failure to reach an instance: the request was not sent.
type connectError struct {
	addr string
	err  error
}

func (e *connectError) Error() string { return fmt.Sprintf("connect to %s: %v", e.addr, e.err) }
func (e *connectError) Unwrap() error { return e.err }

// hostConns are the HTTP/2 connections to one endpoint (address and
// identity). There is normally one: it multiplexes every request. Another
// is dialled only when all are at their peer's stream limit or going away.
type hostConns struct {
	addr    string
	service string
	pool    *pool
	tls     *tls.Config

	mu     sync.Mutex
	conns  []*h2link.ClientConn // guarded by mu
	dial   *dialCall            // guarded by mu; the dial in progress
	closed bool                 // guarded by mu
}

type dialCall struct {
	done chan struct{}
	err  error // set before done is closed
	// abandoned (set before done is closed) means the dial failed once
	// the request that made it had ended: its waiters dial themselves.
	abandoned bool
}

// pool holds the connections of one Outbound to every endpoint.
type pool struct {
	o *Outbound

	mu       sync.Mutex
	hosts    map[string]*hostConns           // guarded by mu; by addr + "|" + service
	draining map[*h2link.ClientConn]struct{} // guarded by mu; closing once idle
	closed   bool                            // guarded by mu

	// conns counts open connections (circuit breaking: MaxConnections);
	// pending counts requests waiting for one (MaxPendingRequests).
	conns   atomic.Int64
	pending atomic.Int64
	// handshakes counts TLS handshakes done, for tests and logs.
	handshakes atomic.Int64
}

func newPool(o *Outbound) *pool {
	return &pool{o: o, hosts: make(map[string]*hostConns)}
}

// host returns the connections of ep, made on first use.
func (p *pool) host(addr, service string) *hostConns {
	k := addr + "|" + service
	p.mu.Lock()
	defer p.mu.Unlock()
	if h := p.hosts[k]; h != nil {
		return h
	}
	cfg := connect.ClientTLSConfig(p.o.cfg.Certs, connect.ExpectService(service), ALPN)
	h := &hostConns{addr: addr, service: service, pool: p, tls: cfg}
	p.hosts[k] = h
	return h
}

// retain closes the connections of every endpoint not in keep (by addr +
// "|" + service), letting their requests finish.
func (p *pool) retain(keep map[string]bool) {
	p.mu.Lock()
	var drop []*hostConns
	for k, h := range p.hosts {
		if !keep[k] {
			drop = append(drop, h)
			delete(p.hosts, k)
		}
	}
	p.mu.Unlock()
	for _, h := range drop {
		h.shutdown(false)
	}
}

// closeAll closes every connection at once, draining ones too.
func (p *pool) closeAll() {
	p.mu.Lock()
	hosts := p.hosts
	p.hosts = map[string]*hostConns{}
	draining := p.draining
	p.draining = nil
	p.closed = true
	p.mu.Unlock()
	for _, h := range hosts {
		h.shutdown(true)
	}
	for cc := range draining {
		cc.Close()
	}
}

// shutdown closes the connections: at once when now, else each once its
// requests are done.
func (h *hostConns) shutdown(now bool) {
	h.mu.Lock()
	h.closed = true
	conns := h.conns
	h.conns = nil
	h.mu.Unlock()
	for _, cc := range conns {
		h.pool.conns.Add(-1)
		if now {
			cc.Close()
			continue
		}
		h.pool.drain(cc)
	}
}

// drainAll moves every connection to draining: new requests dial new
// connections (with the current certificates), those in flight finish.
func (p *pool) drainAll() {
	p.mu.Lock()
	hosts := make([]*hostConns, 0, len(p.hosts))
	for _, h := range p.hosts {
		hosts = append(hosts, h)
	}
	p.mu.Unlock()
	for _, h := range hosts {
		h.mu.Lock()
		conns := h.conns
		h.conns = nil
		h.mu.Unlock()
		for _, cc := range conns {
			p.conns.Add(-1)
			p.drain(cc)
		}
	}
}

// drain closes cc once no request is in flight on it (or at closeAll).
func (p *pool) drain(cc *h2link.ClientConn) {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		cc.Close()
		return
	}
	if p.draining == nil {
		p.draining = make(map[*h2link.ClientConn]struct{})
	}
	p.draining[cc] = struct{}{}
	p.mu.Unlock()
	if cc.Err() != nil {
		// Closed already: its onClose may have forgotten it before it was
		// put here.
		p.forget(cc)
		cc.Close()
		return
	}
	cc.Drain()
}

// forget drops a closed connection from the draining ones.
func (p *pool) forget(cc *h2link.ClientConn) {
	p.mu.Lock()
	delete(p.draining, cc)
	p.mu.Unlock()
}

// get returns a connection with a stream reserved for one request,
// dialling when none can take it. maxConns and maxPending are the circuit
// breaker's limits (0: none). connectTimeout bounds a dial.
//
// reused reports that the connection had carried requests before: a
// request that fails on it may have met a connection the peer had just
// closed.
func (h *hostConns) get(ctx context.Context, maxConns, maxPending int64, connectTimeout time.Duration) (cc *h2link.ClientConn, reused bool, err error) {
	var dialled *h2link.ClientConn // by this call
	for {
		h.mu.Lock()
		if h.closed {
			h.mu.Unlock()
			return nil, false, &connectError{addr: h.addr, err: errors.New("endpoint removed")}
		}
		live := h.conns[:0]
		var got *h2link.ClientConn
		for _, cc := range h.conns {
			if cc.Err() != nil {
				cc.Close()
				h.pool.conns.Add(-1)
				continue
			}
			if got == nil && cc.Reserve() == nil {
				got = cc
			}
			live = append(live, cc)
		}
		clear(h.conns[len(live):])
		h.conns = live
		if got != nil {
			h.mu.Unlock()
			return got, got != dialled, nil
		}
		if call := h.dial; call != nil {
			// Another request is dialling: wait for its connection.
			if maxPending > 0 && h.pool.pending.Load() >= maxPending {
				h.mu.Unlock()
				return nil, false, errOverloaded
			}
			h.pool.pending.Add(1)
			h.mu.Unlock()
			select {
			case <-call.done:
				h.pool.pending.Add(-1)
			case <-ctx.Done():
				h.pool.pending.Add(-1)
				return nil, false, ctx.Err()
			}
			if call.err != nil && !call.abandoned {
				return nil, false, call.err
			}
			continue
		}
		if maxConns > 0 && h.pool.conns.Load() >= maxConns {
			h.mu.Unlock()
			return nil, false, errOverloaded
		}
		call := &dialCall{done: make(chan struct{})}
		h.dial = call
		h.pool.conns.Add(1)
		h.mu.Unlock()

		cc, err = h.dialConn(ctx, connectTimeout)
		h.mu.Lock()
		h.dial = nil
		if err == nil && h.closed {
			err = &connectError{addr: h.addr, err: errors.New("endpoint removed")}
			cc.Close()
		}
		if err == nil {
			h.conns = append(h.conns, cc)
		} else {
			h.pool.conns.Add(-1)
		}
		h.mu.Unlock()
		call.err = err
		call.abandoned = err != nil && ctx.Err() != nil
		close(call.done)
		if err != nil {
			return nil, false, err
		}
		dialled = cc
	}
}

// dialConn opens a connection to the endpoint: dialTLS, then HTTP/2.
func (h *hostConns) dialConn(ctx context.Context, timeout time.Duration) (*h2link.ClientConn, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tc, err := h.dialTLS(ctx)
	if err != nil {
		return nil, err
	}
	var cc *h2link.ClientConn
	var made sync.WaitGroup // cc is set before onClose can use it
	made.Add(1)
	cc, err = h2link.NewClientConn(tc, func() {
		made.Wait()
		h.pool.forget(cc)
	})
	made.Done()
	if err != nil {
		return nil, &connectError{addr: h.addr, err: err}
	}
	return cc, nil
}

// dialTLS dials the endpoint and runs the mutual-TLS handshake, which
// checks the endpoint's identity and that it speaks ALPN.
func (h *hostConns) dialTLS(ctx context.Context) (*tls.Conn, error) {
	var d net.Dialer
	raw, err := d.DialContext(ctx, "tcp", h.addr)
	if err != nil {
		return nil, &connectError{addr: h.addr, err: err}
	}
	raw = rawsock.Wrap(raw)
	tc := tls.Client(raw, h.tls)
	if err := tc.HandshakeContext(ctx); err != nil {
		raw.Close()
		return nil, &connectError{addr: h.addr, err: fmt.Errorf("TLS handshake: %w", err)}
	}
	h.pool.handshakes.Add(1)
	h.pool.o.dials.inc()
	if p := tc.ConnectionState().NegotiatedProtocol; p != ALPN {
		raw.Close()
		return nil, &connectError{addr: h.addr, err: fmt.Errorf("peer did not negotiate ALPN %q (got %q)", ALPN, p)}
	}
	return tc, nil
}
