// Package proxy is the mesh's data plane: the sidecar proxy of one service.
//
// A proxy has a public listener and one local listener per upstream.
//
// The public listener speaks mutual TLS 1.3 (connect.ServerTLSConfig) and
// then HTTP/2 framing. Every application connection from another proxy
// arrives as one HTTP/2 CONNECT stream over a pooled tunnel connection (HBONE
// style), so a new application connection costs a stream, not a handshake
// (tunnel.go has the design). For each stream the proxy asks the Authorizer
// whether the source service (the SPIFFE identity of the tunnel's client
// certificate) may connect; a denied stream is answered 403, an allowed one
// is joined to a new TCP connection to the local application
// (Config.LocalAppAddr).
//
// A local listener (plain TCP, 127.0.0.1 by default) accepts the
// application's connections to an upstream service. For each one the proxy
// picks an instance of the destination (SetInstances) by the power of two
// choices on active connections, skipping instances that failed recently,
// and opens a CONNECT stream to the instance's public listener over a pooled
// tunnel whose server certificate must carry the destination's identity. A
// failed dial, handshake or stream open is retried on another instance (each
// instance once per application connection); a 403 from the destination is
// final.
//
// An upstream may instead follow the destination's discovery chain
// (SetChain, chain.go): each new connection goes to the chain's tcp target —
// its primary target, or when that has no instance left to try, its failover
// targets in order — with the target's identity, its connect timeout and the
// resolver's load-balancing policy; the instances of each target come from
// SetTargetInstances. A change of chain never cuts established connections;
// with the resolver's DrainTimeout, those that the chain no longer leads to
// are closed that long after the change.
//
// Bytes are copied both ways, and each direction ends on its own: when
// either application half-closes, the other sees EOF and may go on sending,
// as over plain TCP. A change of roots drains the tunnels whose peer no
// longer verifies (no new streams; established connections finish); a
// change of intentions closes the tunnels of sources now denied.
//
// # Metrics
//
// All keys start with "trellis", "proxy"; every metric carries the labels
// proxy (Config.ProxyID) and service (Config.Service), and upstream metrics
// also upstream (the destination name).
//
//	inbound.connections            counter  streams opened (label source)
//	inbound.active                 gauge    streams forwarding to the application
//	inbound.closed                 counter  streams ended
//	inbound.bytes_in               counter  bytes from the mesh to the application
//	inbound.bytes_out              counter  bytes from the application to the mesh
//	inbound.tls_handshake_failures counter  refused tunnel connections
//	inbound.denied                 counter  streams refused or closed by intentions (label source)
//	upstream.connections           counter  application connections accepted
//	upstream.active                gauge    application connections open
//	upstream.closed                counter  application connections ended
//	upstream.bytes_sent            counter  bytes from the application to the mesh
//	upstream.bytes_received        counter  bytes from the mesh to the application
//	upstream.dial_failures         counter  failed attempts to open a tunnel to an instance
//	upstream.tls_handshake_failures counter failed handshakes with an instance (also dial failures)
//	upstream.denied                counter  connections the destination refused (403)
//	upstream.target_connections    counter  connections established to a target of the chain (label target, the target ID)
//	upstream.drained               counter  connections closed after the resolver's DrainTimeout
//
// The proxy counts in memory (an atomic add on the connection's path) and
// emits what changed once a second, and when it closes.
package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-metrics"

	"github.com/trellismesh/trellis/connect"
	"github.com/trellismesh/trellis/connect/golden"
	"github.com/trellismesh/trellis/connect/intentions"
)

// DefaultDialTimeout bounds a dial when Config.DialTimeout is 0.
const DefaultDialTimeout = 5 * time.Second

// DefaultLocalBindAddress is where upstream listeners bind when
// UpstreamConfig.LocalBindAddress is empty.
const DefaultLocalBindAddress = "127.0.0.1"

// Config configures one proxy.
type Config struct {
	// ProxyID is the sidecar's service ID, for logs and metric labels.
	ProxyID string
	// Service is the name of the service the proxy fronts; its leaf
	// certificate carries this identity.
	Service string
	// PublicListener is the public listener, already bound (the agent binds
	// it to reserve the port). When nil, PublicAddr is bound. New takes
	// ownership of it: Close closes it, and so does New when it fails.
	PublicListener net.Listener
	// PublicAddr is the host:port the public listener binds when
	// PublicListener is nil.
	PublicAddr string
	// LocalAppAddr is the host:port of the application the public listener
	// forwards to.
	LocalAppAddr string
	// Upstreams are the services the application dials through local
	// listeners. Destination names must be unique.
	Upstreams []UpstreamConfig
	// Certs supplies the proxy's leaf and the trusted roots; both may change
	// at any time (every handshake asks again; call Reverify after a change
	// of roots).
	Certs connect.CertSource
	// Authorizer decides inbound connections.
	Authorizer Authorizer
	// DialTimeout bounds each dial (TCP + TLS) to another proxy that no
	// discovery chain's connect timeout bounds, each dial of the app, and
	// each inbound handshake; DefaultDialTimeout when 0.
	DialTimeout time.Duration
	// Golden receives the golden signals of every edge the proxy serves
	// (inbound per source, outbound per upstream), for the UI's topology;
	// nil records none.
	Golden *golden.Recorder
	// Logger is named "proxy"; nil means hclog.Default().
	Logger hclog.Logger
}

// UpstreamConfig is one upstream listener.
type UpstreamConfig struct {
	// DestinationName is the service the listener leads to.
	DestinationName string
	// LocalBindAddress is the IP the listener binds; DefaultLocalBindAddress
	// when empty.
	LocalBindAddress string
	// LocalBindPort is the port the listener binds; 0 picks a free port.
	LocalBindPort int
	// Listener, when set, is used instead of binding (already bound). New
	// takes ownership of it, as of Config.PublicListener.
	Listener net.Listener
}

// Instance is one healthy endpoint of an upstream: the public listener of a
// proxy of the destination service.
type Instance struct {
	// Node is the node the instance runs on, for logs.
	Node string
	// Addr is the host:port of the proxy's public listener.
	Addr string
	// Service is the identity its certificate must carry (the destination
	// service name); the upstream's destination name when empty.
	Service string
}

// Authorizer decides whether a source service may connect to the proxy's
// service. It must be fast and safe for concurrent use (it reads intentions
// held in memory): it is called for every inbound stream, and by Reauthorize
// for every source with a tunnel.
type Authorizer interface {
	Authorize(source connect.ServiceID) intentions.Decision
}

// AuthorizerFunc adapts a function to Authorizer.
type AuthorizerFunc func(source connect.ServiceID) intentions.Decision

// Authorize calls f(source).
func (f AuthorizerFunc) Authorize(source connect.ServiceID) intentions.Decision { return f(source) }

var _ Authorizer = AuthorizerFunc(nil)

// Validate checks a configuration without changing it. Zero values that have
// a default (DialTimeout, LocalBindAddress, Logger) are valid.
func (c *Config) Validate() error {
	if c.ProxyID == "" {
		return errors.New("proxy config: ProxyID is required")
	}
	if c.Service == "" {
		return fmt.Errorf("proxy %s: Service is required", c.ProxyID)
	}
	if c.PublicListener == nil && c.PublicAddr == "" {
		return fmt.Errorf("proxy %s: PublicListener or PublicAddr is required", c.ProxyID)
	}
	if c.PublicListener == nil {
		if _, _, err := net.SplitHostPort(c.PublicAddr); err != nil {
			return fmt.Errorf("proxy %s: PublicAddr %q: %w", c.ProxyID, c.PublicAddr, err)
		}
	}
	if c.LocalAppAddr == "" {
		return fmt.Errorf("proxy %s: LocalAppAddr is required", c.ProxyID)
	}
	if _, _, err := net.SplitHostPort(c.LocalAppAddr); err != nil {
		return fmt.Errorf("proxy %s: LocalAppAddr %q: %w", c.ProxyID, c.LocalAppAddr, err)
	}
	if c.Certs == nil {
		return fmt.Errorf("proxy %s: Certs is required", c.ProxyID)
	}
	if c.Authorizer == nil {
		return fmt.Errorf("proxy %s: Authorizer is required", c.ProxyID)
	}
	if c.DialTimeout < 0 {
		return fmt.Errorf("proxy %s: DialTimeout %s is negative", c.ProxyID, c.DialTimeout)
	}
	seen := make(map[string]bool, len(c.Upstreams))
	for i, u := range c.Upstreams {
		if u.DestinationName == "" {
			return fmt.Errorf("proxy %s: Upstreams[%d]: DestinationName is required", c.ProxyID, i)
		}
		if seen[u.DestinationName] {
			return fmt.Errorf("proxy %s: Upstreams[%d]: destination %q appears twice", c.ProxyID, i, u.DestinationName)
		}
		seen[u.DestinationName] = true
		if u.Listener == nil {
			if u.LocalBindPort < 0 || u.LocalBindPort > 65535 {
				return fmt.Errorf("proxy %s: upstream %s: LocalBindPort %d is not a port", c.ProxyID, u.DestinationName, u.LocalBindPort)
			}
			if u.LocalBindAddress != "" && net.ParseIP(u.LocalBindAddress) == nil {
				return fmt.Errorf("proxy %s: upstream %s: LocalBindAddress %q is not an IP address", c.ProxyID, u.DestinationName, u.LocalBindAddress)
			}
		}
	}
	return nil
}

// Proxy is a running proxy. Its methods are safe for concurrent use.
type Proxy struct {
	cfg         Config
	logger      hclog.Logger
	dialTimeout time.Duration
	labels      []metrics.Label // proxy, service; clipped, never appended to in place

	// ctx is cancelled by Close; every dial, handshake and stream derives from it.
	ctx    context.Context
	cancel context.CancelFunc

	public    net.Listener
	serverTLS *tls.Config
	h1        *http.Server // base configuration of the HTTP/2 server: its error log
	upstreams map[string]*upstream
	pool      *pool
	http      httpSide // the L7 inbound (http.go)

	// answerDelay, when above 0, replaces the answerDelay of inbound
	// tunnels (a test lengthens it to make the coalescing of answers
	// certain).
	answerDelay atomic.Int64

	reg          registry
	inActive     *gauge
	inClosed     *counter
	inBytesIn    *counter
	inBytesOut   *counter
	inHandshake  *counter
	logHandshake logLimiter
	logDenied    logLimiter
	logDial      logLimiter
	logApp       logLimiter
	closeOnce    sync.Once
	listenersErr error // set by Close, from closing the listeners
	goroutines   sync.WaitGroup
	workers      workers                   // goFunc's idle goroutines
	mu           sync.Mutex                // may be taken under upstream.mu, never the other way
	closed       bool                      // guarded by mu; once set, nothing adds to goroutines
	inbound      map[*inboundConn]struct{} // guarded by mu
	appConns     map[net.Conn]struct{}     // guarded by mu; application-side TCP connections
}

// New validates cfg, binds (or takes) the listeners and starts serving. On
// error nothing is left running and the listeners of cfg are closed.
func New(cfg Config) (p *Proxy, err error) {
	var owned []net.Listener
	if cfg.PublicListener != nil {
		owned = append(owned, cfg.PublicListener)
	}
	for _, u := range cfg.Upstreams {
		if u.Listener != nil {
			owned = append(owned, u.Listener)
		}
	}
	defer func() {
		if err != nil {
			for _, l := range owned {
				l.Close()
			}
		}
	}()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.Upstreams = append([]UpstreamConfig(nil), cfg.Upstreams...)

	logger := cfg.Logger
	if logger == nil {
		logger = hclog.Default()
	}
	logger = logger.Named("proxy").With("proxy", cfg.ProxyID)
	p = &Proxy{
		cfg:         cfg,
		logger:      logger,
		dialTimeout: cfg.DialTimeout,
		labels:      clipLabels([]metrics.Label{{Name: "proxy", Value: cfg.ProxyID}, {Name: "service", Value: cfg.Service}}),
		upstreams:   make(map[string]*upstream, len(cfg.Upstreams)),
		inbound:     make(map[*inboundConn]struct{}),
		appConns:    make(map[net.Conn]struct{}),
	}
	if p.dialTimeout == 0 {
		p.dialTimeout = DefaultDialTimeout
	}
	p.inActive = p.reg.gauge(keyInboundActive, p.labels)
	p.inClosed = p.reg.counter(keyInboundClosed, p.labels)
	p.inBytesIn = p.reg.counter(keyInboundBytesIn, p.labels)
	p.inBytesOut = p.reg.counter(keyInboundBytesOut, p.labels)
	p.inHandshake = p.reg.counter(keyInboundHandshakeFail, p.labels)
	p.h1 = &http.Server{ErrorLog: logger.Named("http2").StandardLogger(&hclog.StandardLoggerOptions{ForceLevel: hclog.Debug})}
	p.pool = newPool(p)

	p.public = cfg.PublicListener
	if p.public == nil {
		if p.public, err = Listen(cfg.PublicAddr); err != nil {
			return nil, fmt.Errorf("proxy %s: bind public listener on %s: %w", cfg.ProxyID, cfg.PublicAddr, err)
		}
		owned = append(owned, p.public)
	}
	for _, uc := range cfg.Upstreams {
		ln := uc.Listener
		if ln == nil {
			host := uc.LocalBindAddress
			if host == "" {
				host = DefaultLocalBindAddress
			}
			addr := net.JoinHostPort(host, strconv.Itoa(uc.LocalBindPort))
			if ln, err = Listen(addr); err != nil {
				return nil, fmt.Errorf("proxy %s: bind listener of upstream %s on %s: %w", cfg.ProxyID, uc.DestinationName, addr, err)
			}
			owned = append(owned, ln)
		}
		p.upstreams[uc.DestinationName] = newUpstream(p, uc, ln)
	}

	// Nothing can fail from here on.
	p.ctx, p.cancel = context.WithCancel(context.Background())
	p.workers.work = make(chan func())
	p.serverTLS = newServerTLS(cfg.Certs)
	p.goFunc(p.acceptPublic)
	p.goFunc(p.flushMetrics)
	for _, u := range p.upstreams {
		p.goFunc(u.accept)
	}
	p.logger.Debug("proxy started", "public_addr", p.public.Addr(), "service", cfg.Service, "upstreams", len(p.upstreams))
	return p, nil
}

// flushMetrics emits the proxy's metrics every metricsInterval until Close.
func (p *Proxy) flushMetrics() {
	t := time.NewTicker(metricsInterval)
	defer t.Stop()
	for {
		select {
		case <-p.ctx.Done():
			return
		case <-t.C:
			p.reg.flush()
		}
	}
}

// enter counts the calling goroutine as one Close waits for; the caller must
// call p.goroutines.Done when it ends. It returns false once Close has begun.
func (p *Proxy) enter() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return false
	}
	p.goroutines.Add(1)
	return true
}

// isClosing reports whether Close has begun.
func (p *Proxy) isClosing() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.closed
}

// trackApp registers an application-side connection so that Close closes
// it; false means the proxy is closing (and c has been closed).
func (p *Proxy) trackApp(c net.Conn) bool {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		c.Close()
		return false
	}
	p.appConns[c] = struct{}{}
	p.mu.Unlock()
	return true
}

func (p *Proxy) untrackApp(c net.Conn) {
	p.mu.Lock()
	delete(p.appConns, c)
	p.mu.Unlock()
}

// PublicAddr returns the address of the public listener.
func (p *Proxy) PublicAddr() net.Addr { return p.public.Addr() }

// UpstreamAddr returns the address of the listener of the upstream to
// destination, or nil if there is none.
func (p *Proxy) UpstreamAddr(destination string) net.Addr {
	u := p.upstreams[destination]
	if u == nil {
		return nil
	}
	return u.ln.Addr()
}

// Close stops the listeners, closes every connection (tunnels and
// application connections) and returns once every goroutine of the proxy has
// ended. It is idempotent; later calls wait for the first and return its
// result.
func (p *Proxy) Close() error {
	p.closeOnce.Do(func() {
		p.mu.Lock()
		p.closed = true
		inbound := make([]*inboundConn, 0, len(p.inbound))
		for ic := range p.inbound {
			inbound = append(inbound, ic)
		}
		apps := make([]net.Conn, 0, len(p.appConns))
		for c := range p.appConns {
			apps = append(apps, c)
		}
		p.mu.Unlock()

		// Stop accepting first, so nothing new arrives while the rest closes.
		p.cancel()
		var errs []error
		if err := p.public.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			errs = append(errs, fmt.Errorf("close public listener: %w", err))
		}
		for name, u := range p.upstreams {
			if err := u.ln.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
				errs = append(errs, fmt.Errorf("close listener of upstream %s: %w", name, err))
			}
		}
		for _, ic := range inbound {
			ic.close()
		}
		p.closeHTTP()
		p.closeHTTPUpstreams()
		p.pool.close()
		for _, c := range apps {
			c.Close()
		}
		p.goroutines.Wait()
		p.reg.flush() // what the last connections counted
		p.listenersErr = errors.Join(errs...)
		p.logger.Debug("proxy closed")
	})
	return p.listenersErr
}

// Listen binds a TCP listener on addr for a proxy (its public listener, an
// upstream's). On a loopback address the connections it accepts get no
// TCP keepalive: the kernel knows at once when a peer on the same host
// goes, and the keepalive options cost four system calls per connection.
func Listen(addr string) (net.Listener, error) {
	var lc net.ListenConfig
	if host, _, err := net.SplitHostPort(addr); err == nil {
		if ip := net.ParseIP(host); (ip != nil && ip.IsLoopback()) || host == "localhost" {
			lc.KeepAlive = -1
		}
	}
	return lc.Listen(context.Background(), "tcp", addr)
}
