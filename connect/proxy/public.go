package proxy

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-metrics"
	"golang.org/x/net/http2"

	"github.com/trellismesh/trellis/connect"
	"github.com/trellismesh/trellis/connect/intentions"
)

// HTTP/2 tuning, the same on both ends of a tunnel. Large windows keep a
// bulk transfer from stalling on WINDOW_UPDATE round trips; frames stay
// moderate because each end of a connection keeps a read and a write buffer
// as large as the largest frame it has seen, which matters with a hundred
// proxies in one agent.
const (
	streamWindow = 4 << 20
	connWindow   = 16 << 20
	maxFrameSize = 256 << 10
	// maxStreams is how many streams a client may open on one tunnel
	// connection; a pool opens another connection past it.
	maxStreams = 1000
	// pingAfter sends a health-check PING on a tunnel silent for this long;
	// pingTimeout closes it when the PING is not answered.
	pingAfter   = 30 * time.Second
	pingTimeout = 15 * time.Second
	// serverIdleTimeout closes an inbound tunnel without streams; it is
	// longer than the pool's idle timeout so that the client, which knows
	// when it wants a connection, usually closes first.
	serverIdleTimeout = 5 * time.Minute
)

// h2Server serves every inbound tunnel connection of every proxy; it holds
// only configuration.
var h2Server = &http2.Server{
	MaxConcurrentStreams:         maxStreams,
	MaxReadFrameSize:             maxFrameSize,
	MaxUploadBufferPerConnection: connWindow,
	MaxUploadBufferPerStream:     streamWindow,
	IdleTimeout:                  serverIdleTimeout,
	ReadIdleTimeout:              pingAfter,
	PingTimeout:                  pingTimeout,
}

func newServerTLS(certs connect.CertSource) *tls.Config {
	c := connect.ServerTLSConfig(certs, connect.ALPNTunnel)
	// Tunnels are long-lived and carry bulk data: full-size records from
	// the first byte.
	c.DynamicRecordSizingDisabled = true
	return c
}

// inboundConn is an established tunnel connection on the public listener.
type inboundConn struct {
	raw      net.Conn // the TCP connection; closing it ends the tunnel at once
	tls      *tls.Conn
	source   connect.ServiceID
	chain    []*x509.Certificate
	notAfter time.Time // of the earliest certificate of chain
	streams  atomic.Int64
}

// close ends the tunnel and its streams. Closing the TCP connection rather
// than the TLS one skips the close_notify alert, which could block on a peer
// that does not read.
func (ic *inboundConn) close() { ic.raw.Close() }

type inboundConnKey struct{}

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
// listener, then serves HTTP/2 on it until it closes.
func (p *Proxy) handleInbound(raw net.Conn) {
	tc := tls.Server(raw, p.serverTLS)
	ctx, cancel := context.WithTimeout(p.ctx, p.dialTimeout)
	err := tc.HandshakeContext(ctx)
	cancel()
	var cs tls.ConnectionState
	if err == nil {
		cs = tc.ConnectionState()
		if cs.NegotiatedProtocol != connect.ALPNTunnel {
			err = fmt.Errorf("client did not negotiate ALPN %q (got %q)", connect.ALPNTunnel, cs.NegotiatedProtocol)
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

	ic := &inboundConn{raw: raw, tls: tc, source: source, chain: cs.PeerCertificates, notAfter: chainNotAfter(cs.PeerCertificates)}
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
	h2Server.ServeConn(tc, &http2.ServeConnOpts{
		Context:    context.WithValue(p.ctx, inboundConnKey{}, ic),
		BaseConfig: p.h1,
		Handler:    http.HandlerFunc(p.serveStream),
	})
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
	incrCounter(keyInboundHandshakeFail, p.labels)
	if ok, suppressed := p.logHandshake.allow(); ok {
		p.logger.Warn("refused inbound connection: TLS handshake failed",
			logArgs(suppressed, "remote_addr", remote, "reason", handshakeReason(err), "error", err)...)
	}
}

// serveStream serves one HTTP/2 stream of an inbound tunnel: a CONNECT
// from another proxy on behalf of one application connection.
func (p *Proxy) serveStream(w http.ResponseWriter, r *http.Request) {
	if !p.enter() {
		http.Error(w, "trellis proxy: shutting down", http.StatusServiceUnavailable)
		return
	}
	defer p.goroutines.Done()
	ic, _ := r.Context().Value(inboundConnKey{}).(*inboundConn)
	if ic == nil {
		panic("proxy: stream without its tunnel connection in the context") // ServeConn is always given one
	}
	if r.Method != http.MethodConnect {
		http.Error(w, "trellis proxy: only CONNECT tunnels are served here", http.StatusMethodNotAllowed)
		return
	}
	if !strings.EqualFold(r.Host, p.cfg.Service) {
		http.Error(w, fmt.Sprintf("trellis proxy: this is service %q, not %q", p.cfg.Service, r.Host), http.StatusMisdirectedRequest)
		return
	}
	if time.Now().After(ic.notAfter) {
		// The client's leaf expired while the tunnel lived: end it, so the
		// client dials again with its renewed leaf.
		p.logger.Debug("closing inbound tunnel: the client certificate expired", "source", ic.source.Service, "not_after", ic.notAfter)
		http.Error(w, "trellis proxy: client certificate expired", http.StatusServiceUnavailable)
		ic.close()
		return
	}

	// Counted before the decision so that Reauthorize, which may run at
	// any moment, sees this stream's tunnel.
	ic.streams.Add(1)
	defer ic.streams.Add(-1)
	srcLabels := withLabel(p.labels, "source", ic.source.Service)
	incrCounter(keyInboundConnections, srcLabels)
	defer incrCounter(keyInboundClosed, p.labels)

	dec := p.cfg.Authorizer.Authorize(ic.source)
	if !dec.Allowed {
		incrCounter(keyInboundDenied, srcLabels)
		if ok, suppressed := p.logDenied.allow(); ok {
			p.logger.Info("denied inbound connection",
				logArgs(suppressed, "source", ic.source.String(), "destination", p.cfg.Service, "intention", decidedBy(dec), "reason", dec.Reason)...)
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.WriteHeader(http.StatusForbidden)
		fmt.Fprintf(w, "trellis: the mesh denied %s -> %s (%s)\n", ic.source.Service, p.cfg.Service, decidedBy(dec))
		return
	}

	d := net.Dialer{Timeout: p.dialTimeout}
	app, err := d.DialContext(r.Context(), "tcp", p.cfg.LocalAppAddr)
	if err != nil {
		if ok, suppressed := p.logApp.allow(); ok {
			p.logger.Warn("dial local application failed", logArgs(suppressed, "addr", p.cfg.LocalAppAddr, "source", ic.source.Service, "error", err)...)
		}
		http.Error(w, "trellis proxy: the application is unreachable", http.StatusBadGateway)
		return
	}
	if !p.trackApp(app) {
		http.Error(w, "trellis proxy: shutting down", http.StatusServiceUnavailable)
		return
	}
	defer func() {
		p.untrackApp(app)
		app.Close()
	}()

	flusher, ok := w.(interface{ FlushError() error })
	if !ok {
		panic(fmt.Sprintf("proxy: HTTP/2 ResponseWriter %T cannot flush", w)) // x/net/http2's always can
	}
	w.WriteHeader(http.StatusOK)
	if err := flusher.FlushError(); err != nil {
		return
	}
	p.inActive.add(1, keyInboundActive, p.labels)
	defer p.inActive.add(-1, keyInboundActive, p.labels)
	p.pipeInbound(w, flusher.FlushError, r, app)
}

// pipeInbound copies a stream and its application connection both ways.
// It returns once both directions have ended.
func (p *Proxy) pipeInbound(w io.Writer, flush func() error, r *http.Request, app net.Conn) {
	// The stream ends abruptly (reset by the client, tunnel closed, proxy
	// closing): stop both directions.
	abortDone := make(chan struct{})
	stopAbort := context.AfterFunc(r.Context(), func() {
		defer close(abortDone)
		app.Close()
	})
	defer func() {
		if !stopAbort() {
			<-abortDone
		}
	}()

	in := newMeter(keyInboundBytesIn, p.labels)
	out := newMeter(keyInboundBytesOut, p.labels)
	defer in.flush()
	defer out.flush()

	// Mesh to application, in a goroutine of our own.
	upDone := make(chan struct{})
	if !p.goFunc(func() {
		defer close(upDone)
		if err := copyStream(app, r.Body, nil, in); err != nil {
			app.Close() // the client went away: end the other direction too
			return
		}
		closeWrite(app) // the client half-closed; the application may still answer
	}) {
		return
	}

	// Application to mesh, here. When the application ends its direction,
	// the stream ends; closing the request body unblocks the other copy.
	copyStream(w, app, flush, out)
	r.Body.Close()
	<-upDone
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
		streams := ic.streams.Load()
		ic.close()
		if streams > 0 {
			metrics.IncrCounterWithLabels(keyInboundDenied, float32(streams), withLabel(p.labels, "source", ic.source.Service))
			p.logger.Info("closed inbound tunnel: intentions now deny its source",
				"source", ic.source.String(), "destination", p.cfg.Service, "streams", streams, "intention", decidedBy(dec), "reason", dec.Reason)
		}
	}
}

// Reverify checks the certificate chain of every inbound and pooled
// outbound tunnel against the current trust bundle (Certs.Bundle()) and
// closes those that no longer verify. Call it when the roots change.
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
			ic.close()
			p.logger.Info("closed inbound tunnel: the client certificate no longer verifies",
				"source", ic.source.String(), "remote_addr", ic.raw.RemoteAddr(), "streams", ic.streams.Load(), "error", err)
		}
	}
	p.pool.reverify(b, now)
}
