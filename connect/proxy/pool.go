package proxy

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/trellismesh/trellis/connect"
)

// poolIdleTimeout closes a pooled tunnel that has carried no stream for this
// long.
const poolIdleTimeout = 2 * time.Minute

// dialError is a failure to establish a tunnel.
type dialError struct {
	addr string
	tls  bool // the TCP connection was made; the handshake failed
	err  error
}

func (e *dialError) Error() string {
	if e.tls {
		return fmt.Sprintf("TLS handshake with %s: %v", e.addr, e.err)
	}
	return fmt.Sprintf("dial %s: %v", e.addr, e.err)
}

func (e *dialError) Unwrap() error { return e.err }

// errSharedDial marks the failure of a dial that another connection made,
// and counted, while this one waited for it.
var errSharedDial = errors.New("tunnel attempt shared with another application connection failed")

// errProxyClosed is returned by a pool whose proxy is closing.
var errProxyClosed = errors.New("proxy closed")

// pool holds the outbound tunnels of a proxy, by instance.
type pool struct {
	p *Proxy

	mu        sync.Mutex
	closed    bool                    // guarded by mu
	conns     map[string][]*outTunnel // guarded by mu; by endpoint key
	dials     map[string]*pendingDial // guarded by mu; dials in progress, by endpoint key
	lastPrune time.Time               // guarded by mu
}

// outTunnel is a pooled tunnel to one instance.
type outTunnel struct {
	*tunnel
	key   string
	chain []*x509.Certificate // the server's, as verified at the handshake
}

// pendingDial lets the connections that want an instance while a tunnel to
// it is being made wait for that one.
type pendingDial struct {
	done chan struct{}
	err  error // set before done is closed
}

func newPool(p *Proxy) *pool {
	return &pool{p: p, conns: make(map[string][]*outTunnel), dials: make(map[string]*pendingDial)}
}

// get returns a tunnel to ep that takes a new stream: a pooled one, else a
// new one (one dial at a time per instance; the others wait for it).
// reused reports whether it existed before. ctx is the proxy's; dialTimeout
// bounds a dial that this call makes (Config.DialTimeout when 0). A pooled
// tunnel is returned without deriving any context or timer; a call that
// waits for another's dial waits at most as long as that dial's bound.
func (pl *pool) get(ctx context.Context, ep *endpoint, dialTimeout time.Duration) (ot *outTunnel, reused bool, err error) {
	for {
		pl.mu.Lock()
		if pl.closed {
			pl.mu.Unlock()
			return nil, false, errProxyClosed
		}
		now := time.Now()
		if now.Sub(pl.lastPrune) >= poolIdleTimeout/4 {
			pl.lastPrune = now
			pl.mu.Unlock()
			pl.prune(now)
			continue
		}
		for _, t := range pl.conns[ep.key] {
			if t.canOpen() {
				pl.mu.Unlock()
				return t, true, nil
			}
		}
		if d := pl.dials[ep.key]; d != nil {
			pl.mu.Unlock()
			select {
			case <-d.done:
			case <-ctx.Done():
				return nil, false, ctx.Err()
			}
			if d.err != nil {
				return nil, false, fmt.Errorf("%w: %v", errSharedDial, d.err)
			}
			continue
		}
		d := &pendingDial{done: make(chan struct{})}
		pl.dials[ep.key] = d
		pl.mu.Unlock()

		t, err := pl.dial(ctx, ep, dialTimeout)
		pl.mu.Lock()
		delete(pl.dials, ep.key)
		var late *outTunnel // made while the pool closed
		if err == nil {
			if pl.closed {
				err, late = errProxyClosed, t
			} else {
				pl.conns[ep.key] = append(pl.conns[ep.key], t)
			}
		}
		d.err = err
		close(d.done)
		pl.mu.Unlock()
		if late != nil {
			late.close(errProxyClosed) // not under mu: its closed hook takes it
		}
		if err != nil {
			return nil, false, err
		}
		return t, false, nil
	}
}

// prune drops closed tunnels and closes idle ones. It closes them after
// letting go of mu: a tunnel's closed hook (forget) takes mu, so closing one
// under it deadlocked every later get.
func (pl *pool) prune(now time.Time) {
	var idle []*outTunnel
	pl.mu.Lock()
	for key, ts := range pl.conns {
		keep := ts[:0]
		for _, t := range ts {
			switch {
			case t.isClosed():
			case t.idleFor(now) >= poolIdleTimeout:
				idle = append(idle, t)
			default:
				keep = append(keep, t)
			}
		}
		if len(keep) == 0 {
			delete(pl.conns, key)
		} else {
			pl.conns[key] = keep
		}
	}
	pl.mu.Unlock()
	for _, t := range idle {
		t.close(nil)
	}
}

// dial makes a tunnel to ep: TCP, then mutual TLS 1.3 whose server must
// carry ep's identity, then the tunnel's preface. timeout (a chain's
// connect timeout) bounds it, else Config.DialTimeout; only the dial and
// the handshake use ctx, the tunnel outlives it.
func (pl *pool) dial(ctx context.Context, ep *endpoint, timeout time.Duration) (*outTunnel, error) {
	p := pl.p
	if timeout <= 0 {
		timeout = p.dialTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	d := net.Dialer{}
	raw, err := d.DialContext(ctx, "tcp", ep.inst.Addr)
	if err != nil {
		return nil, &dialError{addr: ep.inst.Addr, err: err}
	}
	bc := newBatchConn(raw)
	cfg := connect.ClientTLSConfig(p.cfg.Certs, connect.ExpectService(ep.inst.Service), connect.ALPNTunnel)
	cfg.DynamicRecordSizingDisabled = true
	tc := tls.Client(bc, cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		raw.Close()
		return nil, &dialError{addr: ep.inst.Addr, tls: true, err: err}
	}
	cs := tc.ConnectionState()
	if cs.NegotiatedProtocol != connect.ALPNTunnel {
		raw.Close()
		return nil, &dialError{addr: ep.inst.Addr, tls: true, err: fmt.Errorf("server did not negotiate ALPN %q", connect.ALPNTunnel)}
	}
	ot := &outTunnel{key: ep.key, chain: cs.PeerCertificates}
	t, err := newTunnel(false, tc, bc, ep.inst.Service, tunnelHooks{
		spawn:  p.goFunc,
		closed: func(*tunnel) { pl.forget(ot) },
	})
	if err != nil {
		raw.Close()
		return nil, &dialError{addr: ep.inst.Addr, tls: true, err: err}
	}
	ot.tunnel = t
	if !p.goFunc(t.run) {
		t.close(errProxyClosed)
		return nil, errProxyClosed
	}
	return ot, nil
}

// forget removes a closed tunnel from the pool.
func (pl *pool) forget(ot *outTunnel) {
	pl.mu.Lock()
	defer pl.mu.Unlock()
	ts := pl.conns[ot.key]
	for i, t := range ts {
		if t == ot {
			pl.conns[ot.key] = append(ts[:i:i], ts[i+1:]...)
			break
		}
	}
	if len(pl.conns[ot.key]) == 0 {
		delete(pl.conns, ot.key)
	}
}

func (pl *pool) all() []*outTunnel {
	pl.mu.Lock()
	defer pl.mu.Unlock()
	var out []*outTunnel
	for _, ts := range pl.conns {
		out = append(out, ts...)
	}
	return out
}

// reverify drains the tunnels whose server chain no longer verifies with
// b: no new streams go on them, established ones finish.
func (pl *pool) reverify(b *connect.Bundle, now time.Time) {
	for _, t := range pl.all() {
		err := connect.ErrNoRoots
		if b != nil {
			_, err = b.Verify(t.chain, now)
		}
		if err != nil {
			t.drain()
			pl.p.logger.Info("draining an outbound tunnel: the server certificate no longer verifies",
				"peer", t.peer, "streams", t.activeStreams(), "error", err)
		}
	}
}

// close closes every tunnel and stops the pool.
func (pl *pool) close() {
	pl.mu.Lock()
	pl.closed = true
	var ts []*outTunnel
	for _, list := range pl.conns {
		ts = append(ts, list...)
	}
	pl.conns = map[string][]*outTunnel{}
	pl.mu.Unlock()
	for _, t := range ts {
		t.close(errProxyClosed)
	}
}
