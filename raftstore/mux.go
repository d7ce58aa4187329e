package raftstore

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"

	"github.com/trellismesh/trellis/raftstore/rpc"
)

// handshakeTimeout bounds how long a new connection may take to send its
// protocol byte (and finish its TLS handshake).
const handshakeTimeout = 5 * time.Second

// mux accepts connections on the server port and hands each to the protocol
// its first byte names: rpc.ProtoRaft, rpc.ProtoRPC, or rpc.ProtoTLS
// followed, inside TLS, by one of the other two.
type mux struct {
	ln     net.Listener
	logger hclog.Logger
	raft   *streamLayer
	// tls is the server side of TLS; nil when TLS is off.
	tls *tls.Config
	// requireTLS refuses plaintext connections (verify_incoming).
	requireTLS bool
	// serveRPC serves one internal RPC connection until it closes.
	serveRPC func(ctx context.Context, conn net.Conn)

	ctx       context.Context
	cancel    context.CancelFunc
	wg        sync.WaitGroup
	mu        sync.Mutex
	conns     map[net.Conn]struct{} // accepted connections until they end; guarded by mu
	closed    bool                  // guarded by mu
	closeOnce sync.Once
}

func newMux(ln net.Listener, advertise net.Addr, dialer rpc.Dialer, tlsCfg *tls.Config, requireTLS bool,
	serveRPC func(context.Context, net.Conn), logger hclog.Logger) *mux {
	ctx, cancel := context.WithCancel(context.Background())
	m := &mux{ln: ln, logger: logger, tls: tlsCfg, requireTLS: requireTLS, serveRPC: serveRPC,
		ctx: ctx, cancel: cancel, conns: map[net.Conn]struct{}{}}
	m.raft = &streamLayer{addr: advertise, dialer: dialer, conns: make(chan net.Conn), done: make(chan struct{})}
	m.wg.Add(1)
	go m.acceptLoop()
	return m
}

func (m *mux) acceptLoop() {
	defer m.wg.Done()
	for {
		conn, err := m.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			m.logger.Error("accept on server port", "error", err)
			select {
			case <-m.ctx.Done():
				return
			case <-time.After(100 * time.Millisecond): // back off a failing accept
			}
			continue
		}
		if !m.track(conn) {
			return // closing
		}
		m.wg.Add(1)
		go m.route(conn)
	}
}

// route reads the protocol byte of raw (tracked by the mux from its
// accept, so that Close ends it wherever it is) and hands the connection
// to its protocol.
func (m *mux) route(raw net.Conn) {
	defer m.wg.Done()
	conn := raw
	drop := func() {
		m.forget(raw)
		conn.Close()
	}
	_ = conn.SetDeadline(time.Now().Add(handshakeTimeout))
	proto, err := readByte(conn)
	if err != nil {
		m.logger.Debug("connection closed before its protocol byte", "remote", conn.RemoteAddr(), "error", err)
		drop()
		return
	}
	if proto == rpc.ProtoTLS {
		if m.tls == nil {
			m.logger.Warn("refused a TLS connection: TLS is not configured on this server", "remote", conn.RemoteAddr())
			drop()
			return
		}
		tc := tls.Server(conn, m.tls)
		if err := tc.HandshakeContext(m.ctx); err != nil {
			m.logger.Warn("refused a connection: TLS handshake failed", "remote", conn.RemoteAddr(), "error", err)
			drop()
			return
		}
		conn = tc
		if proto, err = readByte(conn); err != nil || proto == rpc.ProtoTLS {
			drop()
			return
		}
	} else if m.requireTLS {
		m.logger.Warn("refused a plaintext connection: verify_incoming requires TLS", "remote", conn.RemoteAddr())
		drop()
		return
	}
	_ = conn.SetDeadline(time.Time{})
	switch proto {
	case rpc.ProtoRaft:
		rc := &raftConn{Conn: conn, m: m, raw: raw}
		select {
		case m.raft.conns <- rc:
		case <-m.raft.done:
			rc.Close()
		}
	case rpc.ProtoRPC:
		m.serveRPC(m.ctx, conn)
		drop()
	default:
		m.logger.Warn("unknown protocol on server port; closing", "remote", conn.RemoteAddr(), "byte", proto)
		drop()
	}
}

func readByte(conn net.Conn) (byte, error) {
	var b [1]byte
	_, err := conn.Read(b[:])
	return b[0], err
}

// Close stops accepting, ends the RPC connections and waits for every
// goroutine of the mux.
func (m *mux) Close() {
	m.closeOnce.Do(func() {
		m.cancel()
		m.ln.Close()
		m.raft.Close()
		m.mu.Lock()
		m.closed = true
		conns := make([]net.Conn, 0, len(m.conns))
		for c := range m.conns {
			conns = append(conns, c)
		}
		m.mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	m.wg.Wait()
}

// track records a connection for Close to end; once Close has begun it
// closes c instead and reports false.
func (m *mux) track(c net.Conn) bool {
	m.mu.Lock()
	closed := m.closed
	if !closed {
		m.conns[c] = struct{}{}
	}
	m.mu.Unlock()
	if closed {
		c.Close()
	}
	return !closed
}

// forget drops a connection that has ended from Close's list.
func (m *mux) forget(c net.Conn) {
	m.mu.Lock()
	delete(m.conns, c)
	m.mu.Unlock()
}

// raftConn is an inbound Raft connection handed to the transport. The
// transport closes it only when its peer does, so the mux closes it at
// Close (else its handler goroutine would outlive the server, waiting on
// a peer that still runs), and forgets it when the transport closes it.
type raftConn struct {
	net.Conn
	m    *mux
	raw  net.Conn // the accepted connection, as the mux tracks it
	once sync.Once
}

// Close closes the connection and drops it from the mux's list.
func (c *raftConn) Close() error {
	c.once.Do(func() { c.m.forget(c.raw) })
	return c.Conn.Close()
}

// streamLayer is the raft.StreamLayer over the mux: it accepts the
// connections whose first byte was ProtoRaft and dials with that byte.
type streamLayer struct {
	addr      net.Addr
	dialer    rpc.Dialer
	conns     chan net.Conn
	done      chan struct{}
	closeOnce sync.Once
}

var _ raft.StreamLayer = (*streamLayer)(nil)

func (l *streamLayer) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *streamLayer) Close() error {
	l.closeOnce.Do(func() { close(l.done) })
	return nil
}

func (l *streamLayer) Addr() net.Addr { return l.addr }

func (l *streamLayer) Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	d := l.dialer
	d.Timeout = timeout
	return d.Dial(context.Background(), string(address), rpc.ProtoRaft)
}
