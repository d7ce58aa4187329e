package l7

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-metrics"

	"github.com/trellismesh/trellis/connect"
	"github.com/trellismesh/trellis/connect/configentry"
	"github.com/trellismesh/trellis/connect/golden"
	"github.com/trellismesh/trellis/connect/intentions"
	"github.com/trellismesh/trellis/connect/proxy/l7/h2link"
	"github.com/trellismesh/trellis/connect/proxy/rawsock"
)

// HeaderClientCert carries the verified identity of the calling service
// to the application: "URI=<SPIFFE ID>" (the form of Envoy's
// x-forwarded-client-cert). The destination proxy always replaces
// whatever the request had.
const HeaderClientCert = "X-Forwarded-Client-Cert"

// Authorizer decides each request that reaches a destination proxy. It
// must be fast and safe for concurrent use: it is called for every request.
type Authorizer interface {
	AuthorizeHTTP(source connect.ServiceID, r *http.Request) intentions.Decision
}

// AuthorizerFunc adapts a function to Authorizer.
type AuthorizerFunc func(source connect.ServiceID, r *http.Request) intentions.Decision

// AuthorizeHTTP calls f(source, r).
func (f AuthorizerFunc) AuthorizeHTTP(source connect.ServiceID, r *http.Request) intentions.Decision {
	return f(source, r)
}

// IntentionsAuthorizer decides by the intentions that Set returns (read
// for every request, so that it may be swapped at any time) for
// destination, with DefaultAllow when none matches.
type IntentionsAuthorizer struct {
	Destination  string
	DefaultAllow bool
	Set          func() *intentions.Set
}

// AuthorizeHTTP decides r with intentions.Set.DecideHTTP.
func (a *IntentionsAuthorizer) AuthorizeHTTP(source connect.ServiceID, r *http.Request) intentions.Decision {
	return a.Set().DecideHTTP(source.Service, a.Destination, r, a.DefaultAllow)
}

// DefaultLocalConnectTimeout bounds a dial of the application when
// InboundConfig.LocalConnectTimeout is 0.
const DefaultLocalConnectTimeout = 5 * time.Second

// InboundConfig configures the destination side of one service.
type InboundConfig struct {
	// ProxyID is the sidecar's ID, for logs and metric labels.
	ProxyID string
	// Service is the destination service (the proxy's own).
	Service string
	// Protocol is the application's: http (HTTP/1.1, the default), http2
	// or grpc (HTTP/2 with prior knowledge).
	Protocol string
	// LocalAppAddr is the application's host:port.
	LocalAppAddr string
	// Authorizer decides every request. Required.
	Authorizer Authorizer
	// LocalConnectTimeout bounds a dial of the application;
	// DefaultLocalConnectTimeout when 0.
	LocalConnectTimeout time.Duration
	// LocalRequestTimeout bounds a request to the application, its answer
	// included (504 when nothing was answered yet); 0 means none.
	LocalRequestTimeout time.Duration
	// MaxConcurrentRequests caps requests forwarded at once (the service's
	// MaxInboundConnections); beyond it the proxy answers 503. 0: no cap.
	MaxConcurrentRequests int
	// Golden receives each source's golden signals (one request each,
	// failed when answered 5xx), for the UI's topology; nil records none.
	Golden *golden.Recorder
	// Logger is named "l7-inbound"; nil means hclog.Default().
	Logger hclog.Logger
}

// Inbound is the destination proxy's HTTP data path: it serves HTTP/2 on
// mutual-TLS connections from source proxies, authorizes each request by
// the source's identity, and forwards the allowed ones to the application.
// Its methods are safe for concurrent use.
type Inbound struct {
	cfg    InboundConfig
	logger hclog.Logger
	ctx    context.Context
	cancel context.CancelFunc
	app    *http.Transport
	// h1 takes the requests to an HTTP/1.1 application that it can
	// (bodyless or small), app the others.
	h1     *appConns
	appURL url.URL

	active atomic.Int64

	reg       registry
	labels    []metrics.Label
	statsMu   sync.RWMutex
	bySource  map[string]*sourceStats // guarded by statsMu
	timeouts  *counter
	appFails  *counter
	overload  *counter
	stop      chan struct{}
	denyLog   logLimiter
	closeOnce sync.Once

	mu         sync.RWMutex
	closed     bool                   // guarded by mu
	draining   bool                   // guarded by mu; Shutdown: no new connections, requests go on
	conns      map[*meshConn]struct{} // guarded by mu
	goroutines sync.WaitGroup         // ServeConn calls and requests
	serving    sync.WaitGroup         // ServeConn calls past their handshake
	background sync.WaitGroup         // the flusher
}

// meshConn is a connection from a source proxy.
type meshConn struct {
	sc     *h2link.ServerConn
	source connect.ServiceID
	chain  []*x509.Certificate // the peer's, verified in the handshake
	xfcc   []string
	stats  *sourceStats
}

// Close closes the connection at once.
func (c *meshConn) Close() { c.sc.Close() }

type sourceStats struct {
	req    *reqStats
	denied *counter
	edge   *golden.Edge
}

// NewInbound validates cfg and starts the inbound side. Close stops it.
func NewInbound(cfg InboundConfig) (*Inbound, error) {
	switch {
	case cfg.ProxyID == "":
		return nil, errors.New("l7 inbound: ProxyID is required")
	case cfg.Service == "":
		return nil, fmt.Errorf("l7 inbound %s: Service is required", cfg.ProxyID)
	case cfg.Authorizer == nil:
		return nil, fmt.Errorf("l7 inbound %s: Authorizer is required", cfg.ProxyID)
	case cfg.LocalConnectTimeout < 0 || cfg.LocalRequestTimeout < 0:
		return nil, fmt.Errorf("l7 inbound %s: negative timeout", cfg.ProxyID)
	}
	if _, _, err := net.SplitHostPort(cfg.LocalAppAddr); err != nil {
		return nil, fmt.Errorf("l7 inbound %s: LocalAppAddr %q: %w", cfg.ProxyID, cfg.LocalAppAddr, err)
	}
	switch cfg.Protocol {
	case "":
		cfg.Protocol = configentry.ProtocolHTTP
	case configentry.ProtocolHTTP, configentry.ProtocolHTTP2, configentry.ProtocolGRPC:
	default:
		return nil, fmt.Errorf("l7 inbound %s: Protocol %q is not http, http2 or grpc", cfg.ProxyID, cfg.Protocol)
	}
	if cfg.LocalConnectTimeout == 0 {
		cfg.LocalConnectTimeout = DefaultLocalConnectTimeout
	}
	logger := cfg.Logger
	if logger == nil {
		logger = hclog.Default()
	}
	logger = logger.Named("l7-inbound").With("proxy", cfg.ProxyID)
	in := &Inbound{
		cfg:      cfg,
		logger:   logger,
		labels:   withLabels(nil, "proxy", cfg.ProxyID, "service", cfg.Service),
		bySource: make(map[string]*sourceStats),
		stop:     make(chan struct{}),
		appURL:   url.URL{Scheme: "http", Host: cfg.LocalAppAddr},
		conns:    make(map[*meshConn]struct{}),
	}
	in.ctx, in.cancel = context.WithCancel(context.Background())
	in.timeouts = in.reg.counter(keyInboundTimeouts, in.labels)
	in.appFails = in.reg.counter(keyInboundAppFail, in.labels)
	in.overload = in.reg.counter(keyInboundOverload, in.labels)
	dialer := &net.Dialer{Timeout: cfg.LocalConnectTimeout}
	in.app = &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := dialer.DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			return rawsock.Wrap(c), nil
		},
		MaxIdleConnsPerHost: 256,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
		Protocols:           new(http.Protocols),
	}
	if cfg.Protocol == configentry.ProtocolHTTP {
		in.app.Protocols.SetHTTP1(true)
		in.h1 = newAppConns(cfg.LocalAppAddr, cfg.LocalConnectTimeout)
	} else {
		in.app.Protocols.SetUnencryptedHTTP2(true)
	}
	in.background.Add(1)
	go func() {
		defer in.background.Done()
		in.reg.run(in.stop)
	}()
	return in, nil
}

// ServeConn serves HTTP/2 on conn, a connection to the public listener that
// negotiated ALPN (its handshake is run first if it has not been). It
// returns when conn closes, ctx ends or the Inbound closes, and closes conn.
func (in *Inbound) ServeConn(ctx context.Context, conn *tls.Conn) {
	if !in.enterConn() {
		conn.Close()
		return
	}
	defer in.goroutines.Done()
	// Close ends the handshake too: it waits for this call.
	hctx, cancel := context.WithCancel(ctx)
	stopHandshake := context.AfterFunc(in.ctx, cancel)
	err := conn.HandshakeContext(hctx)
	stopHandshake()
	cancel()
	if err != nil {
		conn.Close()
		in.logger.Debug("inbound handshake failed", "remote", conn.RemoteAddr(), "error", err)
		return
	}
	source, err := connect.PeerIdentity(conn.ConnectionState())
	if err != nil {
		conn.Close()
		in.logger.Debug("inbound connection without a service identity", "remote", conn.RemoteAddr(), "error", err)
		return
	}
	cs := conn.ConnectionState()
	mc := &meshConn{
		source: source, xfcc: []string{"URI=" + source.String()}, chain: cs.PeerCertificates,
		stats: in.statsFor(source.Service),
	}
	mc.sc = h2link.NewServerConn(conn, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { in.serveHTTP(w, r, mc) }), h2link.ServerConfig{
		MaxStreams:  h2link.DefaultMaxStreams,
		IdleTimeout: 10 * time.Minute,
		Logger:      in.logger,
	})
	in.mu.Lock()
	if in.closed || in.draining {
		in.mu.Unlock()
		conn.Close()
		return
	}
	in.conns[mc] = struct{}{}
	in.serving.Add(1)
	in.mu.Unlock()
	defer func() {
		in.mu.Lock()
		delete(in.conns, mc)
		in.mu.Unlock()
		in.serving.Done()
	}()
	stop := context.AfterFunc(ctx, mc.Close)
	defer stop()
	// A connection ends when the first certificate of the peer's chain
	// expires: its requests would no longer be authenticated.
	expire := time.AfterFunc(time.Until(chainNotAfter(cs.PeerCertificates)), func() {
		in.logger.Debug("closing a connection whose peer certificate expired", "source", source.Service)
		mc.Close()
	})
	defer expire.Stop()
	if err := mc.sc.Serve(in.ctx); err != nil {
		in.logger.Debug("inbound connection ended", "source", source.Service, "error", err)
	}
}

// chainNotAfter returns the earliest expiry of chain's certificates.
func chainNotAfter(chain []*x509.Certificate) time.Time {
	var t time.Time
	for _, c := range chain {
		if t.IsZero() || c.NotAfter.Before(t) {
			t = c.NotAfter
		}
	}
	return t
}

// Reverify closes the connections whose peer chain does not verify against
// b (after a change of roots) and returns how many it closed. Their
// requests in flight fail; the sources reconnect.
func (in *Inbound) Reverify(b *connect.Bundle) int {
	in.mu.RLock()
	conns := make([]*meshConn, 0, len(in.conns))
	for mc := range in.conns {
		conns = append(conns, mc)
	}
	in.mu.RUnlock()
	now := time.Now()
	closed := 0
	for _, mc := range conns {
		if b == nil {
			mc.Close()
			closed++
			continue
		}
		if _, err := b.Verify(mc.chain, now); err != nil {
			in.logger.Info("closing a connection whose peer no longer verifies", "source", mc.source.Service, "error", err)
			mc.Close()
			closed++
		}
	}
	return closed
}

// Shutdown stops the Inbound gracefully: it takes no new connections, tells
// the sources on its connections to open new ones for their next requests
// (HTTP/2 GOAWAY), lets the requests in flight finish until ctx ends, then
// closes as Close does.
func (in *Inbound) Shutdown(ctx context.Context) error {
	in.mu.Lock()
	in.draining = true // no new connections; the requests on the others go on
	conns := make([]*meshConn, 0, len(in.conns))
	for mc := range in.conns {
		conns = append(conns, mc)
	}
	in.mu.Unlock()
	for _, mc := range conns {
		mc.sc.Shutdown()
	}
	done := make(chan struct{})
	go func() {
		in.serving.Wait()
		close(done)
	}()
	var err error
	select {
	case <-done:
	case <-ctx.Done():
		err = ctx.Err()
	}
	in.Close()
	<-done
	return err
}

// Close closes every connection ServeConn serves and waits for their
// requests to end. It is idempotent.
func (in *Inbound) Close() error {
	in.closeOnce.Do(func() {
		in.mu.Lock()
		in.closed = true
		conns := make([]*meshConn, 0, len(in.conns))
		for mc := range in.conns {
			conns = append(conns, mc)
		}
		in.mu.Unlock()
		in.cancel() // ends every connection's Serve, and every request
		for _, mc := range conns {
			mc.Close()
		}
		in.goroutines.Wait()
		in.app.CloseIdleConnections()
		if in.h1 != nil {
			in.h1.close()
		}
		close(in.stop)
		in.background.Wait()
	})
	return nil
}

// enterConn is enter for a new connection, which a draining Inbound
// refuses.
func (in *Inbound) enterConn() bool {
	in.mu.RLock()
	draining := in.draining
	in.mu.RUnlock()
	return !draining && in.enter()
}

func (in *Inbound) enter() bool {
	in.mu.RLock()
	defer in.mu.RUnlock()
	if in.closed {
		return false
	}
	in.goroutines.Add(1)
	return true
}

func (in *Inbound) statsFor(source string) *sourceStats {
	in.statsMu.RLock()
	s := in.bySource[source]
	in.statsMu.RUnlock()
	if s != nil {
		return s
	}
	s = &sourceStats{
		req:    in.reg.reqStatsFor(keyInboundRequests, keyInboundLatency, in.labels, "source", source),
		denied: in.reg.counterFor(keyInboundDenied, in.labels, "source", source),
		edge:   in.cfg.Golden.Edge(golden.Key{Side: golden.Inbound, Source: source, Destination: in.cfg.Service, Protocol: in.cfg.Protocol}),
	}
	in.statsMu.Lock()
	if prev := in.bySource[source]; prev != nil {
		s = prev
	} else {
		in.bySource[source] = s
	}
	in.statsMu.Unlock()
	return s
}

// serveHTTP serves one request from a source proxy.
func (in *Inbound) serveHTTP(w http.ResponseWriter, r *http.Request, mc *meshConn) {
	if !in.enter() {
		meshError(w, http.StatusServiceUnavailable, "the proxy is shutting down")
		return
	}
	defer in.goroutines.Done()
	start := time.Now()
	h := inboundHandler{in: in, source: mc.source, xfcc: mc.xfcc, stats: mc.stats}
	status, abort := h.serve(w, r)
	took := time.Since(start)
	h.stats.req.observe(status, took)
	h.stats.edge.Observe(status >= 500 || abort, took)
	if abort {
		panic(http.ErrAbortHandler)
	}
}

// inboundHandler is what serving a request needs to know of its connection.
type inboundHandler struct {
	in     *Inbound
	source connect.ServiceID
	xfcc   []string
	stats  *sourceStats
}

func (h *inboundHandler) serve(w http.ResponseWriter, r *http.Request) (int, bool) {
	in := h.in
	dec := in.cfg.Authorizer.AuthorizeHTTP(h.source, r)
	if !dec.Allowed {
		h.stats.denied.inc()
		// An intention names the pair; the default policy needs it said.
		by := "the default intention policy"
		body := "request denied by "
		if dec.Matched != nil {
			by = fmt.Sprintf("intention %s => %s", dec.Matched.SourceName, dec.Matched.DestinationName)
			body += by
		} else {
			body += fmt.Sprintf("%s (source %s → destination %s)", by, h.source.Service, in.cfg.Service)
		}
		if in.denyLog.allow() {
			in.logger.Info("request denied by intention", "source", h.source.Service, "destination", in.cfg.Service,
				"method", r.Method, "path", r.URL.Path, "decided_by", by, "reason", dec.Reason)
		}
		meshError(w, http.StatusForbidden, body)
		return http.StatusForbidden, false
	}
	if n := in.active.Add(1); in.cfg.MaxConcurrentRequests > 0 && n > int64(in.cfg.MaxConcurrentRequests) {
		in.active.Add(-1)
		in.overload.inc()
		w.Header()[HeaderOverloaded] = []string{"true"}
		meshError(w, http.StatusServiceUnavailable, fmt.Sprintf("%s has too many requests in flight", in.cfg.Service))
		return http.StatusServiceUnavailable, false
	}
	defer in.active.Add(-1)

	ctx := r.Context()
	if d := in.cfg.LocalRequestTimeout; d > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, d)
		defer cancel()
	}
	// The request's header is this handler's (h2link decoded it for it),
	// and nothing reads it after: it is forwarded in place.
	hdr := r.Header
	if hdr == nil {
		hdr = make(http.Header)
	}
	stripHop(hdr)
	hdr[HeaderClientCert] = h.xfcc
	ensureTraceparent(hdr)
	u := in.appURL
	u.Path, u.RawPath, u.RawQuery = r.URL.Path, r.URL.RawPath, r.URL.RawQuery
	req := &http.Request{
		Method: r.Method, URL: &u, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1, Header: hdr,
		Body: r.Body, ContentLength: r.ContentLength, Host: r.Host, Trailer: r.Trailer,
	}
	if r.ContentLength == 0 {
		req.Body = nil
	}
	var resp *http.Response
	var err error
	if in.h1 != nil && in.h1.takes(req) {
		resp, err = in.h1.roundTrip(ctx, req)
	} else {
		if req.Body != nil && req.Body != http.NoBody {
			req.Body = &callerBody{rc: req.Body, declared: req.ContentLength}
		}
		resp, err = in.app.RoundTrip(req.WithContext(ctx))
	}
	if err != nil {
		var bodyErr *bodyReadError
		switch {
		case errors.Is(ctx.Err(), context.DeadlineExceeded):
			// The local request timeout, first: it may have reset the
			// stream (a body that came too slowly is closed), which ends
			// r's context too.
			in.timeouts.inc()
			meshError(w, http.StatusGatewayTimeout, fmt.Sprintf("%s did not answer within %s (local request timeout)", in.cfg.Service, in.cfg.LocalRequestTimeout))
			return http.StatusGatewayTimeout, false
		case r.Context().Err() != nil:
			return statusClientGone, false
		case errors.As(err, &bodyErr):
			return h.bodyFailed(w, bodyErr)
		}
		in.appFails.inc()
		in.logger.Debug("request to the application failed", "addr", in.cfg.LocalAppAddr, "error", err)
		meshError(w, http.StatusBadGateway, fmt.Sprintf("the application of %s could not be reached", in.cfg.Service))
		return http.StatusBadGateway, false
	}
	defer resp.Body.Close()
	if err := writeResponse(w, resp); err != nil {
		return resp.StatusCode, true
	}
	return resp.StatusCode, false
}

// bodyFailed ends a request whose body could not be read from the source
// proxy. The application is not to blame (nor counted in app_errors), and
// no connection to it is kept with part of the body: the application
// client reads a body whole before it takes a connection, and net/http's
// Transport closes the connection of a request whose body failed. A body
// whose stream the source reset, or whose connection closed, leaves
// nothing to answer: it is counted as a client gone (499). Another (a
// body shorter or longer than its Content-Length) is answered 400, with
// why. (h2link resets itself the stream of a body that does not match its
// Content-Length: then the 400 goes nowhere.)
func (h *inboundHandler) bodyFailed(w http.ResponseWriter, err *bodyReadError) (int, bool) {
	var reset h2link.StreamError
	if errors.As(err, &reset) || errors.Is(err, h2link.ErrClosed) {
		return statusClientGone, false
	}
	h.in.logger.Debug("the request body could not be read", "source", h.source.Service, "error", err)
	meshError(w, http.StatusBadRequest, "the request body could not be read: "+err.err.Error())
	return http.StatusBadRequest, false
}

// callerBody is a request body that net/http's Transport sends to the
// application: its read errors, and a length other than the declared one,
// are *bodyReadError, which tell the caller's failures from the
// application's.
type callerBody struct {
	rc       io.ReadCloser
	declared int64 // -1: not declared
	n        int64
}

func (b *callerBody) Read(p []byte) (int, error) {
	n, err := b.rc.Read(p)
	b.n += int64(n)
	switch {
	case b.declared >= 0 && b.n > b.declared:
		return n, bodyLengthError(b.n, b.declared)
	case err == io.EOF && b.declared >= 0 && b.n < b.declared:
		return n, bodyLengthError(b.n, b.declared)
	case err != nil && err != io.EOF:
		return n, &bodyReadError{err}
	}
	return n, err
}

func (b *callerBody) Close() error { return b.rc.Close() }

// logLimiter lets through at most 10 log lines a second.
type logLimiter struct {
	mu     sync.Mutex
	window time.Time // guarded by mu
	n      int       // guarded by mu
}

func (l *logLimiter) allow() bool {
	now := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if now.Sub(l.window) > time.Second {
		l.window, l.n = now, 0
	}
	l.n++
	return l.n <= 10
}
