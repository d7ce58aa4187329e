package l7

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-metrics"

	"github.com/trellismesh/trellis/connect"
	"github.com/trellismesh/trellis/connect/chain"
	"github.com/trellismesh/trellis/connect/configentry"
	"github.com/trellismesh/trellis/connect/golden"
	"github.com/trellismesh/trellis/connect/proxy/l7/h2link"
	"github.com/trellismesh/trellis/connect/proxy/rawsock"
)

// ALPN is the protocol a source proxy negotiates on a destination proxy's
// public listener for the L7 data path: HTTP/2 whose streams are the
// applications' requests (where connect.ALPNTunnel's streams are TCP
// connections). The public listener hands such connections to
// (*Inbound).ServeConn.
const ALPN = "trellis-http"

// Defaults of the outbound side.
const (
	// DefaultConnectTimeout bounds a dial (TCP and TLS) to an instance when
	// neither the target nor the configuration sets one.
	DefaultConnectTimeout = 5 * time.Second
	// MaxReplayBody is the largest request body kept to be sent again by a
	// retry; a request with a larger body (or one of unknown length, such
	// as a gRPC stream) is retried only when its connection failed.
	MaxReplayBody = 64 << 10
	// defaultConnectRetries is how many other instances a request whose
	// connection failed (nothing was sent) is tried on, whatever the route
	// says.
	defaultConnectRetries = 2
	// Retry backoff (Envoy's): full jitter below base × 2^n, capped.
	retryBackoffBase = 25 * time.Millisecond
	retryBackoffMax  = 250 * time.Millisecond
	// Retry budget defaults.
	defaultBudgetPercent = 20
	defaultBudgetMin     = 3
)

// HeaderOverloaded is set to "true" on the 503 a circuit breaker answers.
const HeaderOverloaded = "X-Trellis-Overloaded"

// OutboundConfig configures the outbound side of one upstream.
type OutboundConfig struct {
	// ProxyID is the sidecar's ID, for logs and metric labels.
	ProxyID string
	// Service is the calling service (the proxy's own).
	Service string
	// DestinationName is the upstream's service: the chain's, and the
	// identity of its instances when neither the endpoint nor the chain
	// says otherwise.
	DestinationName string
	// Chain is the compiled discovery chain of DestinationName; SetChain
	// replaces it. Required.
	Chain *chain.Chain
	// Certs supplies the leaf presented to instances and the roots their
	// certificates must chain to.
	Certs connect.CertSource
	// Upstream sets limits, passive health checks and the retry budget;
	// nil takes the defaults. SetUpstreamConfig replaces it.
	Upstream *configentry.UpstreamConfig
	// ConnectTimeout bounds a dial (TCP and TLS) when neither a
	// service-resolver entry, Upstream.ConnectTimeoutMs nor the chain's
	// default sets one; DefaultConnectTimeout when 0. A resolver entry's
	// timeout beats the upstream's, as in Consul.
	ConnectTimeout time.Duration
	// RequestTimeout bounds a request (all its attempts) when neither its
	// route nor its resolver sets a timeout; 0 means none (streams may be
	// long-lived).
	RequestTimeout time.Duration
	// Golden receives the edge's golden signals (one request each, failed
	// when answered 5xx), for the UI's topology; nil records none.
	Golden *golden.Recorder
	// Logger is named "l7-outbound"; nil means hclog.Default().
	Logger hclog.Logger
}

// Outbound is the source proxy's HTTP data path for one upstream: it serves
// the application's HTTP/1.1 and h2c requests, routes each by the chain,
// and forwards it over pooled mutual-TLS HTTP/2 connections to the chosen
// instance's proxy. Its methods are safe for concurrent use.
type Outbound struct {
	cfg    OutboundConfig
	logger hclog.Logger
	ctx    context.Context
	cancel context.CancelFunc

	route  atomic.Pointer[routeState]
	upcfg  atomic.Pointer[upstreamState]
	tmu    sync.Mutex                         // serialises SetTargetEndpoints
	tgts   atomic.Pointer[map[string]*target] // copy on write under tmu
	pool   *pool
	srv    *http.Server
	connLn *connListener

	// active counts requests in flight, retrying the retries among them.
	active   atomic.Int64
	retrying atomic.Int64

	reg        registry
	labels     []metrics.Label
	stats      sync.Map // route name → *reqStats; read without a lock on every request
	retries    *counter
	exhausted  *counter
	overloaded *counter
	ejections  *counter
	timeouts   *counter
	connFails  *counter
	dials      *counter
	stop       chan struct{}

	closeOnce  sync.Once
	closeErr   error
	mu         sync.RWMutex
	closed     bool // guarded by mu
	goroutines sync.WaitGroup
}

// routeState is a chain with what the proxy derives from it.
type routeState struct {
	chain *chain.Chain
	// prefixes maps a route's destination to the path its match names
	// (PathExact or PathPrefix), which PrefixRewrite replaces.
	prefixes map[*configentry.ServiceRouteDestination]string
	// edge counts the golden signals under the chain's protocol.
	edge *golden.Edge
}

// upstreamState is an UpstreamConfig with its defaults filled in.
type upstreamState struct {
	maxConns, maxPending, maxRequests int64 // 0: no limit
	outlier                           outlierParams
	budgetPercent                     float64
	budgetMin                         int64
	connectTimeout                    time.Duration
	connectTimeoutSet                 bool // by UpstreamConfig.ConnectTimeoutMs
}

// NewOutbound validates cfg and starts the outbound side (its metrics and
// the server of ServeConn). Close stops it.
func NewOutbound(cfg OutboundConfig) (*Outbound, error) {
	switch {
	case cfg.ProxyID == "":
		return nil, errors.New("l7 outbound: ProxyID is required")
	case cfg.DestinationName == "":
		return nil, fmt.Errorf("l7 outbound %s: DestinationName is required", cfg.ProxyID)
	case cfg.Chain == nil:
		return nil, fmt.Errorf("l7 outbound %s: Chain is required", cfg.ProxyID)
	case cfg.Certs == nil:
		return nil, fmt.Errorf("l7 outbound %s: Certs is required", cfg.ProxyID)
	case cfg.ConnectTimeout < 0 || cfg.RequestTimeout < 0:
		return nil, fmt.Errorf("l7 outbound %s: negative timeout", cfg.ProxyID)
	}
	if cfg.ConnectTimeout == 0 {
		cfg.ConnectTimeout = DefaultConnectTimeout
	}
	logger := cfg.Logger
	if logger == nil {
		logger = hclog.Default()
	}
	logger = logger.Named("l7-outbound").With("proxy", cfg.ProxyID, "upstream", cfg.DestinationName)
	o := &Outbound{
		cfg:    cfg,
		logger: logger,
		labels: withLabels(nil, "proxy", cfg.ProxyID, "service", cfg.Service, "upstream", cfg.DestinationName),
		stop:   make(chan struct{}),
	}
	o.ctx, o.cancel = context.WithCancel(context.Background())
	if err := o.SetChain(cfg.Chain); err != nil {
		o.cancel()
		return nil, err
	}
	o.SetUpstreamConfig(cfg.Upstream)
	o.tgts.Store(&map[string]*target{})
	o.retries = o.reg.counter(keyUpstreamRetries, o.labels)
	o.exhausted = o.reg.counter(keyUpstreamBudgetExhausted, o.labels)
	o.overloaded = o.reg.counter(keyUpstreamOverloaded, o.labels)
	o.ejections = o.reg.counter(keyUpstreamEjections, o.labels)
	o.timeouts = o.reg.counter(keyUpstreamTimeouts, o.labels)
	o.connFails = o.reg.counter(keyUpstreamConnectFailures, o.labels)
	o.dials = o.reg.counter(keyUpstreamConnections, o.labels)
	o.pool = newPool(o)

	protocols := new(http.Protocols)
	protocols.SetHTTP1(true)
	protocols.SetUnencryptedHTTP2(true)
	o.srv = &http.Server{
		Handler:           o,
		Protocols:         protocols,
		HTTP2:             &http.HTTP2Config{MaxConcurrentStreams: 1000},
		ReadHeaderTimeout: time.Minute,
		IdleTimeout:       5 * time.Minute,
		ErrorLog:          logger.StandardLogger(&hclog.StandardLoggerOptions{ForceLevel: hclog.Debug}),
		BaseContext:       func(net.Listener) context.Context { return o.ctx },
	}
	o.connLn = newConnListener()
	o.goFunc(func() { o.srv.Serve(o.connLn) })
	o.goFunc(func() { o.reg.run(o.stop) })
	return o, nil
}

// goFunc runs f in a goroutine Close waits for; false (f not run) once
// closing.
func (o *Outbound) goFunc(f func()) bool {
	o.mu.RLock()
	defer o.mu.RUnlock()
	if o.closed {
		return false
	}
	o.goroutines.Add(1)
	go func() {
		defer o.goroutines.Done()
		f()
	}()
	return true
}

// SetChain replaces the discovery chain; requests already routed keep the
// decision they had. It fails (keeping the old chain) when the chain has a
// bad regular expression.
func (o *Outbound) SetChain(c *chain.Chain) error {
	if c == nil {
		return fmt.Errorf("l7 outbound %s: nil chain", o.cfg.ProxyID)
	}
	if err := c.Prepare(); err != nil {
		return fmt.Errorf("l7 outbound %s: chain of %s: %w", o.cfg.ProxyID, c.ServiceName, err)
	}
	rs := &routeState{chain: c, prefixes: map[*configentry.ServiceRouteDestination]string{},
		edge: o.cfg.Golden.Edge(golden.Key{Side: golden.Outbound, Source: o.cfg.Service, Destination: o.cfg.DestinationName, Protocol: c.Protocol})}
	for _, n := range c.Nodes {
		for _, r := range n.Routes {
			if r.Definition == nil || r.Definition.Destination == nil || r.Definition.Match == nil || r.Definition.Match.HTTP == nil {
				continue
			}
			m := r.Definition.Match.HTTP
			if p := m.PathPrefix; p != "" {
				rs.prefixes[r.Definition.Destination] = p
			} else if p := m.PathExact; p != "" {
				rs.prefixes[r.Definition.Destination] = p
			}
		}
	}
	o.route.Store(rs)
	return nil
}

// SetUpstreamConfig replaces the limits, passive health checks and retry
// budget (nil: the defaults). Ejections in force stay.
func (o *Outbound) SetUpstreamConfig(u *configentry.UpstreamConfig) {
	s := &upstreamState{budgetPercent: defaultBudgetPercent, budgetMin: defaultBudgetMin, connectTimeout: o.cfg.ConnectTimeout}
	if u != nil {
		if l := u.Limits; l != nil {
			if l.MaxConnections != nil {
				s.maxConns = int64(max(0, *l.MaxConnections))
			}
			if l.MaxPendingRequests != nil {
				s.maxPending = int64(max(0, *l.MaxPendingRequests))
			}
			if l.MaxConcurrentRequests != nil {
				s.maxRequests = int64(max(0, *l.MaxConcurrentRequests))
			}
		}
		if b := u.RetryBudget; b != nil {
			if b.Percent > 0 {
				s.budgetPercent = b.Percent
			}
			if b.MinRetryConcurrency > 0 {
				s.budgetMin = int64(b.MinRetryConcurrency)
			}
		}
		if u.ConnectTimeoutMs > 0 {
			s.connectTimeout = time.Duration(u.ConnectTimeoutMs) * time.Millisecond
			s.connectTimeoutSet = true
		}
		s.outlier = outlierOf(u.PassiveHealthCheck)
	} else {
		s.outlier = outlierOf(nil)
	}
	o.upcfg.Store(s)
}

// SetTargetEndpoints replaces the healthy endpoints of the chain target
// targetID (an ID of chain.Target); none forgets the target (call it so for
// targets a new chain no longer has). Endpoints that stay keep their
// balancing and ejection state; connections to endpoints no target has any
// more are closed once their requests are done.
func (o *Outbound) SetTargetEndpoints(targetID string, eps []Endpoint) {
	o.tmu.Lock()
	defer o.tmu.Unlock()
	old := *o.tgts.Load()
	t := old[targetID]
	if t == nil {
		t = &target{id: targetID}
		m := make(map[string]*target, len(old)+1)
		for k, v := range old {
			m[k] = v
		}
		m[targetID] = t
		o.tgts.Store(&m)
	}
	identity := o.cfg.DestinationName
	if ct := o.route.Load().chain.Targets[targetID]; ct != nil {
		if ct.Name != "" {
			identity = ct.Name
		} else if ct.Service != "" {
			identity = ct.Service
		}
	}
	prev := map[string]*instance{}
	if s := t.set.Load(); s != nil {
		for _, i := range s.list {
			prev[i.ep.Addr+"|"+i.ep.Service] = i
		}
	}
	set := &instanceSet{list: make([]*instance, 0, len(eps))}
	seen := map[string]bool{}
	for _, ep := range eps {
		if ep.Service == "" {
			ep.Service = identity
		}
		k := ep.Addr + "|" + ep.Service
		if seen[k] {
			continue
		}
		seen[k] = true
		i := prev[k]
		if i == nil {
			i = &instance{ep: ep, hosts: o.pool.host(ep.Addr, ep.Service)}
		} else {
			i.ep.Node = ep.Node
		}
		set.list = append(set.list, i)
	}
	t.set.Store(set)
	if len(set.list) == 0 {
		m := make(map[string]*target, len(old))
		for k, v := range *o.tgts.Load() {
			if k != targetID {
				m[k] = v
			}
		}
		o.tgts.Store(&m)
	}
	keep := map[string]bool{}
	for _, tg := range *o.tgts.Load() {
		if s := tg.set.Load(); s != nil {
			for _, i := range s.list {
				keep[i.ep.Addr+"|"+i.ep.Service] = true
			}
		}
	}
	o.pool.retain(keep)
}

// DrainConnections stops sending new requests on the connections open to
// instances; they close once their requests are done, and new requests
// dial new ones. Call it after a change of the leaf certificate or of the
// roots, so that connections use the new ones.
func (o *Outbound) DrainConnections() { o.pool.drainAll() }

// Handshakes returns how many TLS handshakes with instances the outbound
// side has done (each is a new pooled connection).
func (o *Outbound) Handshakes() int64 { return o.pool.handshakes.Load() }

// Serve serves the application's connections accepted on ln (HTTP/1.1, and
// HTTP/2 with prior knowledge for gRPC) until Close, which closes ln. It
// returns nil after Close, else the error of ln.Accept. Like ServeConn's,
// the connections are read and written with raw system calls (rawsock).
func (o *Outbound) Serve(ln net.Listener) error {
	err := o.srv.Serve(rawsock.Listener{Listener: ln})
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// ServeConn serves one application connection, accepted elsewhere, in the
// background; Close closes it.
func (o *Outbound) ServeConn(c net.Conn) {
	c = rawsock.Wrap(c)
	if !o.connLn.push(c) {
		c.Close()
	}
}

// Close stops serving, closes every connection (the application's and the
// instances') and waits for the outbound side's goroutines. It is
// idempotent.
func (o *Outbound) Close() error {
	o.closeOnce.Do(func() {
		o.cancel()
		o.closeErr = o.srv.Close()
		o.connLn.Close()
		o.mu.Lock()
		o.closed = true
		o.mu.Unlock()
		o.pool.closeAll()
		close(o.stop)
		o.goroutines.Wait()
	})
	return o.closeErr
}

// enter counts a request Close must wait for; false once closed.
func (o *Outbound) enter() bool {
	o.mu.RLock()
	defer o.mu.RUnlock()
	if o.closed {
		return false
	}
	o.goroutines.Add(1)
	return true
}

func (o *Outbound) statsFor(route string) *reqStats {
	if s, ok := o.stats.Load(route); ok {
		return s.(*reqStats)
	}
	s := o.reg.reqStatsFor(keyUpstreamRequests, keyUpstreamLatency, o.labels, "route", route)
	o.stats.Store(route, s) // reqStatsFor returns the same stats to every caller
	return s
}

// ServeHTTP forwards one request of the application.
func (o *Outbound) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !o.enter() {
		meshError(w, http.StatusServiceUnavailable, "the proxy is shutting down")
		return
	}
	defer o.goroutines.Done()
	start := time.Now()
	rs := o.route.Load()
	d, err := rs.chain.Route(r, rand.Float64()*100)
	if err != nil {
		took := time.Since(start)
		o.statsFor(chain.DefaultRouteName).observe(http.StatusServiceUnavailable, took)
		rs.edge.Observe(true, took)
		meshError(w, http.StatusServiceUnavailable, fmt.Sprintf("no route to %s: %v", o.cfg.DestinationName, err))
		return
	}
	status, abort := o.serve(w, r, rs, d)
	took := time.Since(start)
	o.statsFor(d.RouteName).observe(status, took)
	rs.edge.Observe(status >= 500 || abort, took)
	if abort {
		// The answer was cut short after its headers: reset the stream
		// (or close the HTTP/1.1 connection) so the client sees it.
		panic(http.ErrAbortHandler)
	}
}

// errIdle is the cause of a request's end by its idle timeout.
var errIdle = errors.New("idle timeout")

// serve runs the attempts of one request and writes the answer. It returns
// the status sent (499 when the client went away) and whether the response
// must be aborted.
func (o *Outbound) serve(w http.ResponseWriter, r *http.Request, rs *routeState, d *chain.RouteDecision) (int, bool) {
	up := o.upcfg.Load()
	if n := o.active.Add(1); up.maxRequests > 0 && n > up.maxRequests {
		o.active.Add(-1)
		return o.overload(w, "too many requests in flight")
	}
	defer o.active.Add(-1)

	dest := d.Destination
	var splitReq, splitResp, destReq, destResp *configentry.HTTPHeaderModifiers
	if d.Split != nil {
		splitReq, splitResp = d.Split.RequestHeaders, d.Split.ResponseHeaders
	}
	timeout := o.cfg.RequestTimeout
	if d.Resolver != nil && d.Resolver.RequestTimeout > 0 {
		timeout = d.Resolver.RequestTimeout.D()
	}
	var idle time.Duration
	if dest != nil {
		destReq, destResp = dest.RequestHeaders, dest.ResponseHeaders
		if dest.RequestTimeout > 0 {
			timeout = dest.RequestTimeout.D()
		}
		idle = dest.IdleTimeout.D()
	}
	ctx := r.Context()
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	var watch *idleWatch
	if idle > 0 {
		var cancel context.CancelCauseFunc
		ctx, cancel = context.WithCancelCause(ctx)
		defer cancel(nil)
		watch = &idleWatch{d: idle, t: time.AfterFunc(idle, func() { cancel(errIdle) })}
		defer watch.t.Stop()
	}

	hdr := cloneForward(r.Header)
	ensureTraceparent(hdr)
	applyHeaders(hdr, destReq)
	applyHeaders(hdr, splitReq)
	u := &url.URL{Scheme: "https", Host: r.Host, Path: r.URL.Path, RawPath: r.URL.RawPath, RawQuery: r.URL.RawQuery}
	if u.Host == "" {
		u.Host = o.cfg.DestinationName
	}
	if dest != nil && dest.PrefixRewrite != "" {
		if m, ok := rs.prefixes[dest]; ok && strings.HasPrefix(u.Path, m) {
			u.Path = dest.PrefixRewrite + u.Path[len(m):]
			u.RawPath = ""
		}
	}

	// The body: none, small enough to keep for retries, or streamed.
	var replay []byte
	var body io.ReadCloser
	replayable := true
	switch {
	case r.Body == nil || r.Body == http.NoBody || r.ContentLength == 0:
	case r.ContentLength > 0 && r.ContentLength <= MaxReplayBody:
		replay = make([]byte, r.ContentLength)
		if _, err := io.ReadFull(r.Body, replay); err != nil {
			if r.Context().Err() != nil {
				return statusClientGone, false
			}
			return o.fail(w, http.StatusBadRequest, fmt.Sprintf("reading the request body: %v", err))
		}
	default:
		replayable = false
		body = r.Body
		if watch != nil {
			body = &touchReader{ReadCloser: body, w: watch}
		}
	}

	policy := retryPolicyOf(dest)
	var tried [4]*instance
	ntried := 0
	retries, connectRetries := 0, 0
	var lastResp *http.Response
	var lastErr error
	var lastTarget string
	fresh := false // a connect failure is retried on other instances only
	staleRetried := false
	for attempt := 0; ; attempt++ {
		tgt, inst := o.choose(d, r, tried[:ntried], fresh)
		if inst == nil {
			if attempt > 0 {
				o.retrying.Add(-1)
			}
			if lastResp != nil || lastErr != nil {
				break
			}
			return o.fail(w, http.StatusServiceUnavailable, fmt.Sprintf("no healthy instance of %s", d.Target))
		}
		if ntried < len(tried) {
			tried[ntried] = inst
			ntried++
		}
		if lastResp != nil {
			// The answer of the attempt being retried is dropped.
			lastResp.Body.Close()
			lastResp = nil
		}
		if attempt > 0 {
			// The retry holds a slot of the budget (acquireRetry) until
			// its attempt is done.
			o.retries.inc()
		}
		req := &http.Request{
			Method: r.Method, URL: u, Proto: "HTTP/2.0", ProtoMajor: 2, Header: hdr,
			ContentLength: r.ContentLength, Host: u.Host, Trailer: r.Trailer,
		}
		switch {
		case replay != nil:
			req.Body = io.NopCloser(bytes.NewReader(replay))
		case body != nil:
			req.Body = body
		default:
			req.ContentLength = 0
		}
		resp, reused, err := o.attempt(ctx, req, tgt, inst, up, d.Resolver == nil || d.Resolver.Default)
		if attempt > 0 {
			o.retrying.Add(-1)
		}
		lastResp, lastErr, lastTarget = resp, err, tgt.id
		if errors.Is(err, errOverloaded) {
			return o.overload(w, "no connection to an instance is free")
		}
		if ctx.Err() != nil {
			break
		}
		var ce *connectError
		isConnect := errors.As(err, &ce)
		fresh = isConnect
		retry := false
		switch {
		case isConnect:
			limit := defaultConnectRetries
			if policy.connect {
				limit = max(limit, policy.num)
			}
			retry = connectRetries < limit
			connectRetries++
		case err != nil && !staleRetried && replayable && (errors.Is(err, h2link.ErrRefused) || reused && idempotent(r.Method)):
			// The instance refused the stream before it processed it
			// (it is going away), or the connection may have been
			// closed by the peer just as the request left: send it
			// once more, as net/http does.
			retry, staleRetried = true, true
		case err != nil:
			retry = policy.reset && replayable && retries < policy.num
			retries++
		default:
			retry = policy.onStatus(resp.StatusCode) && replayable && retries < policy.num
			retries++
		}
		if !retry {
			break
		}
		if !o.acquireRetry(up) {
			o.exhausted.inc()
			break
		}
		if !isConnect && retries > 0 && !backoff(ctx, retries) {
			o.retrying.Add(-1)
			break
		}
	}

	if ctx.Err() != nil {
		if lastResp != nil {
			lastResp.Body.Close()
		}
		switch {
		case r.Context().Err() != nil:
			return statusClientGone, false
		case errors.Is(context.Cause(ctx), errIdle):
			o.timeouts.inc()
			return o.fail(w, http.StatusGatewayTimeout, fmt.Sprintf("%s sent nothing for %s (idle timeout)", o.cfg.DestinationName, idle))
		default:
			o.timeouts.inc()
			return o.fail(w, http.StatusGatewayTimeout, fmt.Sprintf("%s did not answer within %s (request timeout)", o.cfg.DestinationName, timeout))
		}
	}
	if lastResp == nil {
		var ce *connectError
		if errors.As(lastErr, &ce) {
			return o.fail(w, http.StatusBadGateway, fmt.Sprintf("no instance of %s could be reached (%v)", lastTarget, lastErr))
		}
		return o.fail(w, http.StatusBadGateway, fmt.Sprintf("the request to %s failed (%v)", lastTarget, lastErr))
	}
	resp := lastResp
	defer resp.Body.Close()
	if watch != nil {
		resp.Body = &touchReader{ReadCloser: resp.Body, w: watch}
	}
	if err := writeResponse(w, resp, destResp, splitResp); err != nil {
		if err != errDownstream && ctx.Err() != nil && r.Context().Err() == nil {
			o.timeouts.inc()
		}
		return resp.StatusCode, true
	}
	return resp.StatusCode, false
}

// attempt sends req to inst and records the outcome for passive health
// checking.
func (o *Outbound) attempt(ctx context.Context, req *http.Request, t *target, inst *instance, up *upstreamState, resolverDefault bool) (resp *http.Response, reused bool, err error) {
	inst.inflight.Add(1)
	defer inst.inflight.Add(-1)
	// The resolver entry's ConnectTimeout, else the upstream's, else the
	// chain's default, else the configuration's.
	connectTimeout := up.connectTimeout
	if ct := o.route.Load().chain.Targets[t.id]; ct != nil && ct.ConnectTimeout > 0 && (!up.connectTimeoutSet || !resolverDefault) {
		connectTimeout = ct.ConnectTimeout.D()
	}
	cc, reused, err := inst.hosts.get(ctx, up.maxConns, up.maxPending, connectTimeout)
	now := time.Now().UnixNano()
	if err != nil {
		if ctx.Err() == nil && !errors.Is(err, errOverloaded) {
			o.connFails.inc()
			o.logger.Debug("connect to instance failed", "target", t.id, "addr", inst.ep.Addr, "node", inst.ep.Node, "error", err)
			if t.failed(inst, &up.outlier, now) {
				o.ejected(t, inst)
			}
		}
		return nil, false, err
	}
	resp, err = cc.RoundTrip(req.WithContext(ctx))
	now = time.Now().UnixNano()
	switch {
	case err != nil:
		if ctx.Err() == nil && t.failed(inst, &up.outlier, now) {
			o.ejected(t, inst)
		}
	case resp.StatusCode >= 500:
		if t.failed(inst, &up.outlier, now) {
			o.ejected(t, inst)
		}
	default:
		t.succeeded(inst, &up.outlier, now)
	}
	return resp, reused, err
}

func (o *Outbound) ejected(t *target, inst *instance) {
	o.ejections.inc()
	o.logger.Info("instance ejected after consecutive failures", "target", t.id, "addr", inst.ep.Addr, "node", inst.ep.Node,
		"until", time.Unix(0, inst.ejectedUntil.Load()).Format(time.RFC3339Nano), "times", inst.ejections.Load())
}

// choose picks the target and instance of an attempt: the first target of
// the decision's target and failover that has a usable instance; when none
// has, the same with ejected instances allowed (Envoy's panic routing).
// Instances tried already are avoided, and refused when fresh.
func (o *Outbound) choose(d *chain.RouteDecision, r *http.Request, tried []*instance, fresh bool) (*target, *instance) {
	tgts := *o.tgts.Load()
	opts := pickOpts{lb: d.LoadBalancer, req: r, tried: tried, fresh: fresh, now: time.Now().UnixNano()}
	for pass := 0; pass < 2; pass++ {
		opts.panic = pass == 1
		for k := -1; k < len(d.Failover); k++ {
			id := d.Target
			if k >= 0 {
				id = d.Failover[k]
			}
			t := tgts[id]
			if t == nil {
				continue
			}
			if i := t.pick(&opts); i != nil {
				return t, i
			}
		}
	}
	return nil, nil
}

// acquireRetry takes a slot of the retry budget for one retry, if the
// retries in flight are fewer than max(MinRetryConcurrency, Percent% of
// the requests in flight); the caller gives it back (retrying.Add(-1))
// once the retry's attempt is done.
func (o *Outbound) acquireRetry(up *upstreamState) bool {
	allowed := max(up.budgetMin, int64(up.budgetPercent*float64(o.active.Load())/100))
	for {
		n := o.retrying.Load()
		if n >= allowed {
			return false
		}
		if o.retrying.CompareAndSwap(n, n+1) {
			return true
		}
	}
}

func (o *Outbound) overload(w http.ResponseWriter, why string) (int, bool) {
	o.overloaded.inc()
	w.Header()[HeaderOverloaded] = []string{"true"}
	meshError(w, http.StatusServiceUnavailable, fmt.Sprintf("%s is overloaded: %s (circuit breaker)", o.cfg.DestinationName, why))
	return http.StatusServiceUnavailable, false
}

func (o *Outbound) fail(w http.ResponseWriter, status int, msg string) (int, bool) {
	meshError(w, status, msg)
	return status, false
}

// backoff waits before retry n (from 1): a random time below 25ms × 2^(n-1),
// at most 250ms. It returns false when ctx ended first.
func backoff(ctx context.Context, n int) bool {
	ceil := retryBackoffBase << min(n-1, 4)
	if ceil > retryBackoffMax {
		ceil = retryBackoffMax
	}
	t := time.NewTimer(rand.N(ceil) + time.Millisecond)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// idempotent reports whether a request of method may be sent twice
// without harm when it is not known whether the first one arrived.
func idempotent(method string) bool {
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace:
		return true
	}
	return false
}

// retryPolicy is a route's retry conditions.
type retryPolicy struct {
	num     int
	connect bool // connect failures (beyond the default ones)
	reset   bool // a request whose stream was reset
	any5xx  bool
	gateway bool // 502, 503, 504
	codes   []uint32
}

func retryPolicyOf(d *configentry.ServiceRouteDestination) retryPolicy {
	if d == nil || d.NumRetries == 0 {
		return retryPolicy{}
	}
	p := retryPolicy{num: int(d.NumRetries), connect: d.RetryOnConnectFailure, codes: d.RetryOnStatusCodes}
	for _, c := range d.RetryOn {
		switch c {
		case "5xx":
			p.any5xx, p.connect, p.reset = true, true, true
		case "gateway-error":
			p.gateway, p.connect, p.reset = true, true, true
		case "reset":
			p.reset = true
		case "connect-failure":
			p.connect = true
		}
	}
	return p
}

func (p *retryPolicy) onStatus(code int) bool {
	switch {
	case p.any5xx && code >= 500:
		return true
	case p.gateway && (code == 502 || code == 503 || code == 504):
		return true
	}
	for _, c := range p.codes {
		if int(c) == code {
			return true
		}
	}
	return false
}

// idleWatch ends a request that moved no data for d.
type idleWatch struct {
	d time.Duration
	t *time.Timer
}

// touchReader restarts an idle watch on every read.
type touchReader struct {
	io.ReadCloser
	w *idleWatch
}

func (r *touchReader) Read(p []byte) (int, error) {
	n, err := r.ReadCloser.Read(p)
	r.w.t.Reset(r.w.d)
	return n, err
}

// connListener is a net.Listener fed by ServeConn.
type connListener struct {
	ch     chan net.Conn
	done   chan struct{}
	closed sync.Once
}

func newConnListener() *connListener {
	return &connListener{ch: make(chan net.Conn), done: make(chan struct{})}
}

func (l *connListener) push(c net.Conn) bool {
	select {
	case l.ch <- c:
		return true
	case <-l.done:
		return false
	}
}

func (l *connListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *connListener) Close() error {
	l.closed.Do(func() { close(l.done) })
	return nil
}

func (l *connListener) Addr() net.Addr { return connAddr{} }

type connAddr struct{}

func (connAddr) Network() string { return "l7" }
func (connAddr) String() string  { return "l7-outbound" }
