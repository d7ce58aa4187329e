package rpc

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/trellismesh/trellis/raftstore/structs"
)

// Protocol bytes of the server port (see raftstore's mux).
const (
	ProtoRaft byte = 0x01
	ProtoRPC  byte = 0x02
	ProtoTLS  byte = 0x03
)

// ErrTLSRefused wraps a TLS handshake that failed on a certificate: the
// server's did not verify here, or ours did not there (the server's alert).
// That is configuration, not a passing fault: the same server will refuse
// again, so callers do not retry it in a loop.
var ErrTLSRefused = errors.New("TLS certificate refused")

// tlsRefused reports whether a TLS error is a certificate refusal: ours of
// the server's certificate, or the server's of ours, which comes as an
// alert ("remote error: tls: bad certificate", "unknown certificate
// authority", "certificate required"...; crypto/tls does not export the
// alert's type on TCP, so its text tells).
func tlsRefused(err error) bool {
	var cv *tls.CertificateVerificationError
	if errors.As(err, &cv) {
		return true
	}
	var alert tls.AlertError
	if errors.As(err, &alert) {
		return true
	}
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "remote error" && op.Err != nil && strings.Contains(op.Err.Error(), "certificate")
}

// unavailable is the error of a request that did not reach a server
// because its connection failed with err: ErrUnavailable, and also
// ErrTLSRefused when err is a certificate refusal (which under TLS 1.3 can
// come after the handshake, on the connection's first read or write).
func unavailable(what string, err error) error {
	if tlsRefused(err) {
		return fmt.Errorf("%w: %s: %w: %w", ErrUnavailable, what, ErrTLSRefused, err)
	}
	return fmt.Errorf("%w: %s: %v", ErrUnavailable, what, err)
}

// handshakeError is the error of a TLS handshake with addr that failed
// with err, marked ErrTLSRefused when a certificate was refused.
func handshakeError(addr string, err error) error {
	if tlsRefused(err) {
		return fmt.Errorf("TLS handshake with %s: %w: %w", addr, ErrTLSRefused, err)
	}
	return fmt.Errorf("TLS handshake with %s: %w", addr, err)
}

// Dialer opens connections to a server port for one inner protocol.
type Dialer struct {
	// TLS, when set, wraps connections: the ProtoTLS byte, a TLS handshake,
	// then the inner protocol byte inside TLS.
	TLS *tls.Config
	// Timeout bounds the dial and handshake (default 10s).
	Timeout time.Duration
	// LocalIP, when set, is the source address of connections (the bind
	// address of a multi-homed host).
	LocalIP net.IP
}

// Dial connects to addr and announces proto (ProtoRaft or ProtoRPC).
func (d Dialer) Dial(ctx context.Context, addr string, proto byte) (net.Conn, error) {
	timeout := d.Timeout
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	nd := &net.Dialer{}
	if d.LocalIP != nil {
		nd.LocalAddr = &net.TCPAddr{IP: d.LocalIP}
	}
	conn, err := nd.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	if d.TLS == nil {
		if _, err := conn.Write([]byte{proto}); err != nil {
			conn.Close()
			return nil, err
		}
		return conn, nil
	}
	if _, err := conn.Write([]byte{ProtoTLS}); err != nil {
		conn.Close()
		return nil, err
	}
	tc := tls.Client(conn, d.TLS)
	if err := tc.HandshakeContext(ctx); err != nil {
		conn.Close()
		return nil, handshakeError(addr, err)
	}
	if _, err := tc.Write([]byte{proto}); err != nil {
		tc.Close()
		if tlsRefused(err) {
			return nil, handshakeError(addr, err)
		}
		return nil, err
	}
	return tc, nil
}

// Client calls servers. It keeps one multiplexed connection per server and
// is safe for concurrent use.
type Client struct {
	dialer Dialer
	logger hclog.Logger

	mu     sync.Mutex
	conns  map[string]*clientConn // guarded by mu
	closed bool                   // guarded by mu
}

// NewClient returns a client that dials with d.
func NewClient(d Dialer, logger hclog.Logger) *Client {
	if logger == nil {
		logger = hclog.NewNullLogger()
	}
	return &Client{dialer: d, logger: logger, conns: map[string]*clientConn{}}
}

// Call runs method on the server at addr. args is encoded as JSON; the answer
// is decoded into reply. A failure to reach the server wraps ErrUnavailable,
// and structs.ErrReplyLost too when the request had been sent; an error the server
// returned is a *structs.RemoteError.
func (c *Client) Call(ctx context.Context, addr, method string, args, reply any) error {
	_, err := c.CallLeader(ctx, addr, method, args, reply)
	return err
}

// CallLeader is Call that also returns the leader's address as the server
// knew it ("" when it did not say).
func (c *Client) CallLeader(ctx context.Context, addr, method string, args, reply any) (string, error) {
	cc, err := c.conn(ctx, addr)
	if err != nil {
		return "", fmt.Errorf("%w: %s: %w", ErrUnavailable, addr, err)
	}
	return cc.call(ctx, method, args, reply)
}

func (c *Client) conn(ctx context.Context, addr string) (*clientConn, error) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil, errors.New("client closed")
	}
	if cc, ok := c.conns[addr]; ok && !cc.isBroken() {
		c.mu.Unlock()
		return cc, nil
	}
	c.mu.Unlock()
	conn, err := c.dialer.Dial(ctx, addr, ProtoRPC)
	if err != nil {
		return nil, err
	}
	cc := newClientConn(conn, c.logger)
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		cc.close()
		return nil, errors.New("client closed")
	}
	if old, ok := c.conns[addr]; ok && !old.isBroken() {
		// Another call dialed meanwhile; keep that one.
		c.mu.Unlock()
		cc.close()
		return old, nil
	}
	stale := c.conns[addr]
	c.conns[addr] = cc
	c.mu.Unlock()
	if stale != nil {
		stale.close()
	}
	return cc, nil
}

// Close closes every connection and waits for their readers. Calls in
// flight fail.
func (c *Client) Close() {
	c.mu.Lock()
	c.closed = true
	conns := c.conns
	c.conns = map[string]*clientConn{}
	c.mu.Unlock()
	for _, cc := range conns {
		cc.close()
	}
}

// clientConn is one multiplexed connection.
type clientConn struct {
	conn   net.Conn
	logger hclog.Logger

	writeMu sync.Mutex
	mu      sync.Mutex
	nextID  uint64                   // guarded by mu
	pending map[uint64]chan response // guarded by mu
	err     error                    // guarded by mu; set once broken
	done    chan struct{}            // closed when the reader exits
}

func newClientConn(conn net.Conn, logger hclog.Logger) *clientConn {
	cc := &clientConn{conn: conn, logger: logger, pending: map[uint64]chan response{}, done: make(chan struct{})}
	go cc.readLoop()
	return cc
}

func (cc *clientConn) isBroken() bool {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	return cc.err != nil
}

func (cc *clientConn) close() {
	cc.conn.Close()
	<-cc.done
}

func (cc *clientConn) readLoop() {
	defer close(cc.done)
	for {
		var resp response
		if err := readFrame(cc.conn, &resp); err != nil {
			cc.mu.Lock()
			cc.err = err
			for id, ch := range cc.pending {
				close(ch)
				delete(cc.pending, id)
			}
			cc.mu.Unlock()
			cc.conn.Close()
			return
		}
		cc.mu.Lock()
		ch := cc.pending[resp.ID]
		delete(cc.pending, resp.ID)
		cc.mu.Unlock()
		if ch != nil {
			ch <- resp
		}
	}
}

func (cc *clientConn) call(ctx context.Context, method string, args, reply any) (string, error) {
	body, err := json.Marshal(args)
	if err != nil {
		return "", fmt.Errorf("encode %s arguments: %w", method, err)
	}
	ch := make(chan response, 1)
	cc.mu.Lock()
	if cc.err != nil {
		err := cc.err
		cc.mu.Unlock()
		return "", unavailable(method, err)
	}
	cc.nextID++
	id := cc.nextID
	cc.pending[id] = ch
	cc.mu.Unlock()

	cc.writeMu.Lock()
	err = writeFrame(cc.conn, request{ID: id, Method: method, Body: body})
	cc.writeMu.Unlock()
	if err != nil {
		// A frame written in part is never read: the request did not run.
		cc.conn.Close()
		cc.forget(id)
		return "", unavailable("send "+method, err)
	}
	select {
	case resp, ok := <-ch:
		if !ok {
			cc.mu.Lock()
			cerr := cc.err
			cc.mu.Unlock()
			if tlsRefused(cerr) {
				// Under TLS 1.3 the server checks our certificate after
				// our handshake is done: its refusal comes on the first
				// read, and nothing of the request was served.
				return "", unavailable(method, cerr)
			}
			return "", fmt.Errorf("%w: %s: %w", ErrUnavailable, method, structs.ErrReplyLost)
		}
		if resp.Error != nil {
			return resp.Leader, resp.Error
		}
		if reply != nil {
			if err := json.Unmarshal(resp.Body, reply); err != nil {
				return resp.Leader, fmt.Errorf("decode %s reply: %w", method, err)
			}
		}
		return resp.Leader, nil
	case <-ctx.Done():
		cc.forget(id)
		cc.writeMu.Lock()
		_ = writeFrame(cc.conn, request{ID: id, Cancel: true})
		cc.writeMu.Unlock()
		return "", ctx.Err()
	}
}

func (cc *clientConn) forget(id uint64) {
	cc.mu.Lock()
	delete(cc.pending, id)
	cc.mu.Unlock()
}
