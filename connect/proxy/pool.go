package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"

	"golang.org/x/net/http2"

	"github.com/trellismesh/trellis/connect"
)

// poolIdleTimeout closes a pooled tunnel connection that has carried no
// stream for this long.
const poolIdleTimeout = 2 * time.Minute

// h2Transport builds the client side of every tunnel connection of every
// proxy (NewClientConn over our own TLS dial); it holds only configuration.
// Its receive windows come from the net/http Transport it is configured
// from, the only way x/net/http2 takes them.
var h2Transport = func() *http2.Transport {
	t1 := &http.Transport{HTTP2: &http.HTTP2Config{
		MaxReceiveBufferPerConnection: connWindow,
		MaxReceiveBufferPerStream:     streamWindow,
		MaxReadFrameSize:              maxFrameSize,
	}}
	t2, err := http2.ConfigureTransports(t1)
	if err != nil {
		panic(fmt.Sprintf("proxy: configure HTTP/2 transport: %v", err)) // a fresh http.Transport always takes it
	}
	t2.MaxReadFrameSize = maxFrameSize
	t2.IdleConnTimeout = poolIdleTimeout
	t2.ReadIdleTimeout = pingAfter
	t2.PingTimeout = pingTimeout
	return t2
}()

// tunnelConn is a pooled HTTP/2 connection to one instance's public
// listener.
type tunnelConn struct {
	key      string
	addr     string
	raw      net.Conn // the TCP connection
	cc       *http2.ClientConn
	state    tls.ConnectionState
	notAfter time.Time // of the earliest certificate of the server's chain
}

// close ends the connection and its streams at once.
func (t *tunnelConn) close() {
	t.raw.Close()
	t.cc.Close()
}

// broken reports whether the connection can carry no new stream.
func (t *tunnelConn) broken() bool {
	st := t.cc.State()
	return st.Closed || st.Closing
}

// dialError is a failure to establish a tunnel connection.
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

// errProxyClosed is returned by a pool whose proxy is closing.
var errProxyClosed = errors.New("proxy closed")

// pool holds the tunnel connections of a proxy, by instance.
type pool struct {
	p *Proxy

	mu        sync.Mutex
	closed    bool                     // guarded by mu
	conns     map[string][]*tunnelConn // guarded by mu; by endpoint key
	dials     map[string]*pendingDial  // guarded by mu; dials in progress, by endpoint key
	lastPrune time.Time                // guarded by mu
}

// pendingDial lets the connections that want the same instance while a
// tunnel connection to it is being made wait for that one.
type pendingDial struct {
	done chan struct{}
	err  error // set before done is closed
}

func newPool(p *Proxy) *pool {
	return &pool{p: p, conns: make(map[string][]*tunnelConn), dials: make(map[string]*pendingDial)}
}

// get returns a connection to ep with a stream reserved for the caller,
// who must call RoundTrip on it next. It reuses a pooled connection that
// can take a stream, else makes one (one dial at a time per instance; the
// others wait for it). reused reports whether the connection existed.
func (pl *pool) get(ctx context.Context, ep *endpoint) (tc *tunnelConn, reused bool, err error) {
	for {
		pl.mu.Lock()
		if pl.closed {
			pl.mu.Unlock()
			return nil, false, errProxyClosed
		}
		now := time.Now()
		if now.Sub(pl.lastPrune) >= poolIdleTimeout {
			pl.lastPrune = now
			for key := range pl.conns {
				pl.reserveLocked(key, now, false)
			}
		}
		if tc := pl.reserveLocked(ep.key, now, true); tc != nil {
			pl.mu.Unlock()
			return tc, true, nil
		}
		if d := pl.dials[ep.key]; d != nil {
			pl.mu.Unlock()
			select {
			case <-d.done:
			case <-ctx.Done():
				return nil, false, ctx.Err()
			}
			if d.err != nil {
				return nil, false, d.err
			}
			continue // take a stream of the new connection, or dial again if it is full already
		}
		d := &pendingDial{done: make(chan struct{})}
		pl.dials[ep.key] = d
		pl.mu.Unlock()

		tc, err := pl.dial(ctx, ep)

		pl.mu.Lock()
		delete(pl.dials, ep.key)
		switch {
		case err != nil:
		case pl.closed:
			tc.close()
			err = errProxyClosed
		case !tc.cc.ReserveNewRequest():
			tc.close()
			err = &dialError{addr: ep.inst.Addr, err: errors.New("new tunnel connection cannot take a stream")}
		default:
			pl.conns[ep.key] = append(pl.conns[ep.key], tc)
		}
		d.err = err
		close(d.done)
		pl.mu.Unlock()
		if err != nil {
			return nil, false, err
		}
		return tc, false, nil
	}
}

// reserveLocked drops the dead connections of key and, when reserve is
// set, reserves a stream on one that can take it.
func (pl *pool) reserveLocked(key string, now time.Time, reserve bool) *tunnelConn {
	list := pl.conns[key]
	keep := list[:0]
	var found *tunnelConn
	for _, tc := range list {
		st := tc.cc.State()
		if st.Closed {
			continue
		}
		if !now.Before(tc.notAfter) {
			// The server's leaf expired: no new streams here; the
			// connection goes once its streams are done.
			tc.cc.SetDoNotReuse()
			if st.StreamsActive == 0 && st.StreamsReserved == 0 {
				tc.close()
				continue
			}
		}
		if reserve && found == nil && !st.Closing && tc.cc.ReserveNewRequest() {
			found = tc
		}
		keep = append(keep, tc)
	}
	clear(list[len(keep):])
	if len(keep) == 0 {
		delete(pl.conns, key)
	} else {
		pl.conns[key] = keep
	}
	return found
}

// dial makes a tunnel connection to ep: TCP, TLS with the server's identity
// checked, HTTP/2; all within the dial timeout.
func (pl *pool) dial(ctx context.Context, ep *endpoint) (*tunnelConn, error) {
	p := pl.p
	ctx, cancel := context.WithTimeout(ctx, p.dialTimeout)
	defer cancel()
	var d net.Dialer
	raw, err := d.DialContext(ctx, "tcp", ep.inst.Addr)
	if err != nil {
		return nil, &dialError{addr: ep.inst.Addr, err: err}
	}
	cfg := connect.ClientTLSConfig(p.cfg.Certs, connect.ExpectService(ep.inst.Service), connect.ALPNTunnel)
	cfg.DynamicRecordSizingDisabled = true
	tlsConn := tls.Client(raw, cfg)
	if err := tlsConn.HandshakeContext(ctx); err != nil {
		raw.Close()
		return nil, &dialError{addr: ep.inst.Addr, tls: true, err: err}
	}
	state := tlsConn.ConnectionState()
	if state.NegotiatedProtocol != connect.ALPNTunnel {
		raw.Close()
		return nil, &dialError{addr: ep.inst.Addr, tls: true, err: fmt.Errorf("server did not negotiate ALPN %q (got %q)", connect.ALPNTunnel, state.NegotiatedProtocol)}
	}
	cc, err := h2Transport.NewClientConn(tlsConn)
	if err != nil {
		raw.Close()
		return nil, &dialError{addr: ep.inst.Addr, err: fmt.Errorf("start HTTP/2: %w", err)}
	}
	p.logger.Trace("tunnel connection established", "instance", ep.inst.Addr, "service", ep.inst.Service)
	return &tunnelConn{
		key:      ep.key,
		addr:     ep.inst.Addr,
		raw:      raw,
		cc:       cc,
		state:    state,
		notAfter: chainNotAfter(state.PeerCertificates),
	}, nil
}

// drop removes tc from the pool and closes it.
func (pl *pool) drop(tc *tunnelConn) {
	pl.mu.Lock()
	list := pl.conns[tc.key]
	for i, c := range list {
		if c == tc {
			copy(list[i:], list[i+1:])
			list[len(list)-1] = nil
			list = list[:len(list)-1]
			break
		}
	}
	if len(list) == 0 {
		delete(pl.conns, tc.key)
	} else {
		pl.conns[tc.key] = list
	}
	pl.mu.Unlock()
	tc.close()
}

// all returns the pooled connections.
func (pl *pool) all() []*tunnelConn {
	pl.mu.Lock()
	defer pl.mu.Unlock()
	var out []*tunnelConn
	for _, list := range pl.conns {
		out = append(out, list...)
	}
	return out
}

// reverify closes the connections whose server chain b no longer verifies
// (all of them when b is nil).
func (pl *pool) reverify(b *connect.Bundle, now time.Time) {
	for _, tc := range pl.all() {
		err := connect.ErrNoRoots
		if b != nil {
			_, err = b.Verify(tc.state.PeerCertificates, now)
		}
		if err != nil {
			pl.drop(tc)
			pl.p.logger.Info("closed outbound tunnel: the server certificate no longer verifies", "instance", tc.addr, "error", err)
		}
	}
}

// close closes every connection; get fails from now on.
func (pl *pool) close() {
	pl.mu.Lock()
	pl.closed = true
	conns := pl.conns
	pl.conns = make(map[string][]*tunnelConn)
	pl.mu.Unlock()
	for _, list := range conns {
		for _, tc := range list {
			tc.close()
		}
	}
}
