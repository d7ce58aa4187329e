package proxy

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"time"

	"github.com/trellismesh/trellis/connect"
	"github.com/trellismesh/trellis/connect/golden"
	"github.com/trellismesh/trellis/connect/intentions"
	"github.com/trellismesh/trellis/connect/proxy/l7"
	"github.com/trellismesh/trellis/connect/proxy/rawsock"
)

func newServerTLS(certs connect.CertSource) *tls.Config {
	c := connect.ServerTLSConfig(certs, connect.ALPNTunnel, l7.ALPN)
	// Tunnels are long-lived and carry bulk data: full-size records from
	// the first byte.
	c.DynamicRecordSizingDisabled = true
	return c
}

// inboundConn is an established tunnel on the public listener.
type inboundConn struct {
	raw      net.Conn // the TCP connection; closing it ends the tunnel at once
	t        *tunnel
	source   connect.ServiceID
	chain    []*x509.Certificate
	notAfter time.Time // of the earliest certificate of chain
	edge     *golden.Edge
}

// close ends the tunnel and its streams. Closing the TCP connection rather
// than the TLS one skips the close_notify alert, which could block on a peer
// that does not read.
func (ic *inboundConn) close() {
	ic.raw.Close()
	ic.t.close(nil)
}

// acceptPublic is the public listener's accept loop.
func (p *Proxy) acceptPublic() {
	acceptLoop(p, p.public, "public", p.handleInbound)
}

// acceptLoop accepts connections on ln until it is closed, handing each to
// handle in a goroutine of p.
func acceptLoop(p *Proxy, ln net.Listener, what string, handle func(net.Conn)) {
	var delay time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			if p.ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of file descriptors and the like: back off and retry.
			if delay == 0 {
				delay = 5 * time.Millisecond
			} else if delay *= 2; delay > time.Second {
				delay = time.Second
			}
			p.logger.Warn("accept failed; retrying", "listener", what, "addr", ln.Addr(), "delay", delay, "error", err)
			t := time.NewTimer(delay)
			select {
			case <-p.ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
			continue
		}
		delay = 0
		if !p.goFunc(func() { handle(c) }) {
			c.Close()
			return
		}
	}
}

// handleInbound runs the handshake of one connection to the public
// listener, then serves the tunnel on it until it closes.
func (p *Proxy) handleInbound(raw net.Conn) {
	bc := newBatchConn(raw)
	tc := tls.Server(bc, p.serverTLS)
	ctx, cancel := context.WithTimeout(p.ctx, p.dialTimeout)
	err := tc.HandshakeContext(ctx)
	cancel()
	var cs tls.ConnectionState
	if err == nil {
		cs = tc.ConnectionState()
		switch cs.NegotiatedProtocol {
		case connect.ALPNTunnel:
		case l7.ALPN:
			// The L7 path: HTTP/2 whose streams are requests; it reads the
			// peer's identity and authorizes each request itself.
			p.serveInboundHTTP(tc)
			return
		default:
			err = fmt.Errorf("client did not negotiate ALPN %q or %q (got %q)", connect.ALPNTunnel, l7.ALPN, cs.NegotiatedProtocol)
		}
	}
	var source connect.ServiceID
	if err == nil {
		// The chain was verified in the handshake (VerifyConnection).
		source, err = connect.PeerIdentity(cs)
	}
	if err != nil {
		raw.Close()
		p.inboundHandshakeFailed(raw.RemoteAddr(), err)
		return
	}

	ic := &inboundConn{raw: raw, source: source, chain: cs.PeerCertificates, notAfter: chainNotAfter(cs.PeerCertificates),
		edge: p.cfg.Golden.Edge(golden.Key{Side: golden.Inbound, Source: source.Service, Destination: p.cfg.Service, Protocol: "tcp"})}
	srcConns := p.reg.withExtra(keyInboundConnections, p.labels, "source", source.Service)
	srcDenied := p.reg.withExtra(keyInboundDenied, p.labels, "source", source.Service)
	ic.t, err = newTunnel(true, tc, bc, source.String(), tunnelHooks{
		spawn: p.goFunc,
		accept: func(s *stream, authority string) (int, string) {
			return p.acceptStream(ic, srcConns, srcDenied, authority)
		},
		serve: func(s *stream) { p.serveStream(ic, s) },
	})
	if err != nil {
		raw.Close()
		p.logger.Debug("inbound tunnel failed at its start", "source", source.Service, "error", err)
		return
	}
	if d := p.answerDelay.Load(); d > 0 {
		ic.t.answerDelay = time.Duration(d)
	}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		raw.Close()
		return
	}
	p.inbound[ic] = struct{}{}
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		delete(p.inbound, ic)
		p.mu.Unlock()
		raw.Close()
	}()
	p.logger.Trace("inbound tunnel established", "source", source.Service, "remote_addr", raw.RemoteAddr())
	ic.t.run()
}

// chainNotAfter returns when the first certificate of chain expires.
func chainNotAfter(chain []*x509.Certificate) time.Time {
	var t time.Time
	for _, c := range chain {
		if t.IsZero() || c.NotAfter.Before(t) {
			t = c.NotAfter
		}
	}
	return t
}

// handshakeReason says in a few words why a handshake failed.
func handshakeReason(err error) string {
	var rh tls.RecordHeaderError
	switch {
	case errors.Is(err, connect.ErrNoPeerCertificate):
		return "no client certificate"
	case errors.Is(err, connect.ErrWrongTrustDomain):
		return "certificate of another trust domain"
	case errors.Is(err, connect.ErrUntrusted):
		return "certificate not trusted (another CA, expired or malformed)"
	case errors.Is(err, connect.ErrNoCertificate):
		return "this proxy has no leaf certificate yet"
	case errors.Is(err, connect.ErrNoRoots):
		return "this proxy has no trusted roots yet"
	case errors.As(err, &rh):
		return "not TLS"
	case errors.Is(err, context.DeadlineExceeded):
		return "handshake timed out"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "connection closed during the handshake"
	}
	var ae tls.AlertError
	if errors.As(err, &ae) {
		return "the client sent alert: " + ae.Error()
	}
	return "handshake failed"
}

func (p *Proxy) inboundHandshakeFailed(remote net.Addr, err error) {
	if p.ctx.Err() != nil {
		return // closing: not the client's fault
	}
	p.inHandshake.inc()
	if ok, suppressed := p.logHandshake.allow(); ok {
		p.logger.Warn("refused inbound connection: TLS handshake failed",
			logArgs(suppressed, "remote_addr", remote, "reason", handshakeReason(err), "error", err)...)
	}
}

// acceptStream decides a new stream of an inbound tunnel, from the
// tunnel's reader goroutine: the authority must be this proxy's service,
// the client certificate still valid, and the intentions must allow the
// source. It returns 0, or the status and message to refuse with.
func (p *Proxy) acceptStream(ic *inboundConn, conns, denied *counter, authority string) (int, string) {
	if !strings.EqualFold(authority, p.cfg.Service) {
		return 400, fmt.Sprintf("trellis proxy: this is service %q, not %q", p.cfg.Service, authority)
	}
	if time.Now().After(ic.notAfter) {
		// The client certificate expired while the tunnel lived: no new
		// streams on it (the established ones go on). 421 makes the client
		// open a new tunnel, with its renewed leaf.
		p.logger.Debug("refusing a new stream on an inbound tunnel: the client certificate expired", "source", ic.source.Service, "not_after", ic.notAfter)
		return 421, "trellis proxy: the client certificate of this connection has expired"
	}
	conns.inc()
	dec := p.cfg.Authorizer.Authorize(ic.source)
	if !dec.Allowed {
		denied.inc()
		ic.edge.Observe(true, 0)
		p.inClosed.inc()
		if ok, suppressed := p.logDenied.allow(); ok {
			p.logger.Info("denied inbound connection",
				logArgs(suppressed, "source", ic.source.String(), "destination", p.cfg.Service, "intention", decidedBy(dec), "reason", dec.Reason)...)
		}
		return 403, fmt.Sprintf("trellis: the mesh denied %s -> %s (%s)\n", ic.source.Service, p.cfg.Service, decidedBy(dec))
	}
	return 0, ""
}

// serveStream connects an accepted stream to the local application and
// copies the application's bytes into it; the tunnel's reader delivers the
// other direction.
func (p *Proxy) serveStream(ic *inboundConn, s *stream) {
	defer p.inClosed.inc()
	start := time.Now()
	d := net.Dialer{Timeout: p.dialTimeout, KeepAlive: -1}
	app, err := d.DialContext(p.ctx, "tcp", p.cfg.LocalAppAddr)
	if err == nil {
		app = rawsock.Wrap(app)
	}
	ic.edge.Observe(err != nil, time.Since(start))
	if err != nil {
		if ok, suppressed := p.logApp.allow(); ok {
			p.logger.Warn("dial local application failed", logArgs(suppressed, "addr", p.cfg.LocalAppAddr, "source", ic.source.Service, "error", err)...)
		}
		s.failed(502, "trellis proxy: the application is unreachable")
		return
	}
	if !p.trackApp(app) {
		s.abort(errProxyClosed, true)
		return
	}
	defer p.untrackApp(app)
	s.onDeliver = p.inBytesIn.add
	s.accepted(app)
	p.inActive.add(1)
	defer p.inActive.add(-1)
	pump(s, app, p.inBytesOut)
	<-s.done
}

// decidedBy names what decided: the matched intention, or the default.
func decidedBy(d intentions.Decision) string {
	if d.Matched == nil {
		return "default policy"
	}
	m := d.Matched
	s := fmt.Sprintf("%s => %s (%s)", m.SourceName, m.DestinationName, m.Action)
	if m.ID != "" {
		s += " id=" + m.ID
	}
	return s
}

// Reauthorize asks the Authorizer again for the source of every inbound
// tunnel and closes the tunnels, with their streams, of sources now denied.
// Call it when intentions change. It returns quickly: Authorize is called
// once per source, and closing a tunnel does not wait.
func (p *Proxy) Reauthorize() {
	p.mu.Lock()
	conns := make([]*inboundConn, 0, len(p.inbound))
	for ic := range p.inbound {
		conns = append(conns, ic)
	}
	p.mu.Unlock()

	decided := make(map[connect.ServiceID]intentions.Decision)
	for _, ic := range conns {
		dec, ok := decided[ic.source]
		if !ok {
			dec = p.cfg.Authorizer.Authorize(ic.source)
			decided[ic.source] = dec
		}
		if dec.Allowed {
			continue
		}
		streams := ic.t.activeStreams()
		ic.close()
		if streams > 0 {
			p.reg.withExtra(keyInboundDenied, p.labels, "source", ic.source.Service).add(streams)
			p.logger.Info("closed inbound tunnel: intentions now deny its source",
				"source", ic.source.String(), "destination", p.cfg.Service, "streams", streams, "intention", decidedBy(dec), "reason", dec.Reason)
		}
	}
}

// Reverify checks the certificate chain of every inbound and pooled
// outbound tunnel against the current trust bundle (Certs.Bundle()) and
// drains those that no longer verify: they take no new streams and close
// once their streams end, so a rotation drops no connection. Call it when
// the roots change.
func (p *Proxy) Reverify() {
	b := p.cfg.Certs.Bundle()
	now := time.Now()

	p.mu.Lock()
	conns := make([]*inboundConn, 0, len(p.inbound))
	for ic := range p.inbound {
		conns = append(conns, ic)
	}
	p.mu.Unlock()
	for _, ic := range conns {
		err := connect.ErrNoRoots
		if b != nil {
			_, err = b.Verify(ic.chain, now)
		}
		if err != nil {
			// No new streams on it; established connections finish, as
			// they would over a plain TCP connection made before.
			ic.t.drain()
			p.logger.Info("draining inbound tunnel: the client certificate no longer verifies",
				"source", ic.source.String(), "remote_addr", ic.raw.RemoteAddr(), "streams", ic.t.activeStreams(), "error", err)
		}
	}
	p.pool.reverify(b, now)
	p.reverifyHTTP(b)
}
