package proxy

import (
	"context"
	"crypto/tls"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/trellismesh/trellis/connect"
	"github.com/trellismesh/trellis/connect/chain"
	"github.com/trellismesh/trellis/connect/configentry"
	"github.com/trellismesh/trellis/connect/intentions"
	"github.com/trellismesh/trellis/connect/proxy/l7"
)

// ServiceConfig is what the proxy's own service's config entries say about
// its inbound side (service-defaults, proxy-defaults).
type ServiceConfig struct {
	// Protocol is the service's: tcp (the default), http, http2 or grpc.
	// Sources whose chain says http, http2 or grpc send requests over the
	// L7 path, which forwards them to the application as HTTP/1.1 (http)
	// or HTTP/2 with prior knowledge (http2, grpc).
	Protocol string
	// LocalConnectTimeout bounds a dial of the application by the L7 path;
	// LocalRequestTimeout a request to it (0: none).
	LocalConnectTimeout time.Duration
	LocalRequestTimeout time.Duration
	// MaxInboundConnections caps requests forwarded at once by the L7 path
	// (503 beyond it); 0: no cap.
	MaxInboundConnections int
}

// HTTPAuthorizer decides single HTTP requests on the L7 path. When the
// proxy's Authorizer implements it, requests are decided with L7
// intentions; otherwise by Authorize (the L4 decision) alone.
type HTTPAuthorizer = l7.Authorizer

// httpSide is the proxy's L7 inbound: created when the first L7 connection
// arrives, replaced when the service's configuration changes.
type httpSide struct {
	mu     sync.Mutex
	sc     ServiceConfig // guarded by mu
	in     *l7.Inbound   // guarded by mu; nil until needed
	closed bool          // guarded by mu
}

// l7Authorizer adapts the proxy's Authorizer to single requests.
type l7Authorizer struct{ a Authorizer }

func (x l7Authorizer) AuthorizeHTTP(source connect.ServiceID, r *http.Request) intentions.Decision {
	if h, ok := x.a.(HTTPAuthorizer); ok {
		return h.AuthorizeHTTP(source, r)
	}
	return x.a.Authorize(source)
}

// SetServiceConfig changes how the L7 path reaches the application. A
// change of protocol or limits replaces the L7 inbound: the old one tells
// its sources to open new connections for their next requests (GOAWAY) and
// closes once its requests in flight are done, or after
// serviceConfigDrain.
func (p *Proxy) SetServiceConfig(sc ServiceConfig) {
	h := &p.http
	h.mu.Lock()
	if h.sc == sc {
		h.mu.Unlock()
		return
	}
	h.sc = sc
	old := h.in
	h.in = nil
	h.mu.Unlock()
	if old == nil {
		return
	}
	drain := func() {
		ctx, cancel := context.WithTimeout(p.ctx, serviceConfigDrain)
		defer cancel()
		old.Shutdown(ctx)
	}
	if !p.goFunc(drain) {
		old.Close() // the proxy is closing
	}
}

// serviceConfigDrain bounds how long an L7 inbound replaced by a change of
// the service's configuration serves its requests in flight.
var serviceConfigDrain = 30 * time.Second

// inboundHTTP returns the L7 inbound, creating it on first use; nil once
// the proxy closes.
func (p *Proxy) inboundHTTP() *l7.Inbound {
	h := &p.http
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return nil
	}
	if h.in != nil {
		return h.in
	}
	proto := h.sc.Protocol
	if !configentry.IsHTTP(proto) {
		// A source that speaks HTTP to a service we think is tcp: its view of
		// the config is newer or older than ours; HTTP/1.1 is the safe guess.
		proto = configentry.ProtocolHTTP
	}
	in, err := l7.NewInbound(l7.InboundConfig{
		ProxyID: p.cfg.ProxyID, Service: p.cfg.Service, Protocol: proto, LocalAppAddr: p.cfg.LocalAppAddr,
		Authorizer:          l7Authorizer{p.cfg.Authorizer},
		LocalConnectTimeout: h.sc.LocalConnectTimeout, LocalRequestTimeout: h.sc.LocalRequestTimeout,
		MaxConcurrentRequests: h.sc.MaxInboundConnections,
		Golden:                p.cfg.Golden,
		Logger:                p.logger,
	})
	if err != nil {
		p.logger.Error("cannot start the L7 inbound", "error", err)
		return nil
	}
	h.in = in
	return in
}

// serveInboundHTTP serves one L7 connection (ALPN l7.ALPN) until it ends.
func (p *Proxy) serveInboundHTTP(tc *tls.Conn) {
	in := p.inboundHTTP()
	if in == nil {
		tc.NetConn().Close()
		return
	}
	in.ServeConn(p.ctx, tc)
}

// reverifyHTTP drops L7 connections whose peer no longer verifies.
func (p *Proxy) reverifyHTTP(b *connect.Bundle) {
	p.http.mu.Lock()
	in := p.http.in
	p.http.mu.Unlock()
	if in != nil {
		in.Reverify(b)
	}
}

// closeHTTP closes the L7 inbound for good.
func (p *Proxy) closeHTTP() {
	h := &p.http
	h.mu.Lock()
	h.closed = true
	in := h.in
	h.in = nil
	h.mu.Unlock()
	if in != nil {
		in.Close()
	}
}

// upstreamHTTP is an upstream's L7 side: in use while the destination's
// chain says http, http2 or grpc.
type upstreamHTTP struct {
	// out is the L7 side, nil while the chain is tcp: read without a lock
	// on every new application connection, changed under upstream.mu.
	out   atomic.Pointer[l7.Outbound]
	chain *chain.Chain                // guarded by upstream.mu; the chain out follows
	insts map[string][]Instance       // guarded by upstream.mu; the last instances of each target, by ID
	upcfg *configentry.UpstreamConfig // guarded by upstream.mu
	// retired is a side stopped by a change of chain while the proxy was
	// closing (no goroutine could take it): Close closes it with out.
	retired *l7.Outbound // guarded by upstream.mu
}

// httpOutbound returns the upstream's L7 side when its chain is http.
func (u *upstream) httpOutbound() *l7.Outbound { return u.http.out.Load() }

// endpointsOf converts instances to the L7 side's endpoints, with the
// target's identity.
func endpointsOf(insts []Instance, identity string) []l7.Endpoint {
	eps := make([]l7.Endpoint, 0, len(insts))
	for _, in := range insts {
		if in.Addr == "" {
			continue
		}
		eps = append(eps, l7.Endpoint{Addr: in.Addr, Service: identity, Node: in.Node})
	}
	return eps
}

// setChainHTTPLocked starts, updates or stops the L7 side for chain c
// (nil: no chain). u.mu is held. The stopped side is returned, to be closed
// outside the lock.
func (u *upstream) setChainHTTPLocked(c *chain.Chain) (stopped *l7.Outbound) {
	h := &u.http
	prev := h.chain
	h.chain = c
	if c == nil || !configentry.IsHTTP(c.Protocol) {
		stopped = h.out.Swap(nil)
		if stopped != nil {
			u.p.logger.Info("upstream leaves the L7 path: its protocol is tcp now", "upstream", u.name)
		}
		return stopped
	}
	cur := h.out.Load()
	if cur != nil {
		if err := cur.SetChain(c); err != nil {
			h.chain = prev // what the L7 side still follows
			u.p.logger.Warn("discovery chain not taken by the L7 path; it keeps the previous one", "upstream", u.name, "error", err)
			return nil
		}
	}
	// Targets the chain left: forgotten here, and by the L7 side (their
	// balancing state and connections with them).
	for id := range h.insts {
		if c.Targets[id] == nil {
			delete(h.insts, id)
			if cur != nil {
				cur.SetTargetEndpoints(id, nil)
			}
		}
	}
	if cur != nil {
		for id, t := range c.Targets {
			cur.SetTargetEndpoints(id, endpointsOf(h.insts[id], t.Name))
		}
		return nil
	}
	if u.p.isClosing() {
		// Close may have taken the L7 sides already (closeHTTPUpstreams):
		// one started now would have no owner. Checked under u.mu, which
		// closeHTTPUpstreams takes after Close has set closed, so a side
		// stored below is always one that Close still finds.
		u.p.logger.Debug("upstream does not take the L7 path: the proxy is closing", "upstream", u.name)
		return nil
	}
	out, err := l7.NewOutbound(l7.OutboundConfig{
		ProxyID: u.p.cfg.ProxyID, Service: u.p.cfg.Service, DestinationName: u.name, Chain: c,
		Certs: u.p.cfg.Certs, Upstream: h.upcfg, ConnectTimeout: u.p.dialTimeout, Golden: u.p.cfg.Golden, Logger: u.p.logger,
	})
	if err != nil {
		u.p.logger.Error("cannot start the L7 path of the upstream; it stays on L4", "upstream", u.name, "error", err)
		return nil
	}
	for id, t := range c.Targets {
		out.SetTargetEndpoints(id, endpointsOf(h.insts[id], t.Name))
	}
	h.out.Store(out)
	u.p.logger.Info("upstream takes the L7 path", "upstream", u.name, "protocol", c.Protocol)
	return nil
}

// setTargetHTTPLocked records a target's instances and hands them to the
// L7 side. u.mu is held.
func (u *upstream) setTargetHTTPLocked(targetID string, insts []Instance) {
	h := &u.http
	if h.insts == nil {
		h.insts = map[string][]Instance{}
	}
	h.insts[targetID] = slices.Clone(insts)
	out := h.out.Load()
	if out == nil || h.chain == nil {
		return
	}
	if t := h.chain.Targets[targetID]; t != nil {
		out.SetTargetEndpoints(targetID, endpointsOf(insts, t.Name))
	}
}

// SetUpstreamConfig sets the limits, passive health checks and retry budget
// of the upstream to destination (the calling service's service-defaults:
// UpstreamConfig's override for it, else its defaults); nil takes the
// defaults. They apply to the L7 path.
func (p *Proxy) SetUpstreamConfig(destination string, uc *configentry.UpstreamConfig) {
	u := p.upstreams[destination]
	if u == nil {
		return
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	u.http.upcfg = uc
	if out := u.http.out.Load(); out != nil {
		out.SetUpstreamConfig(uc)
	}
}

// closeHTTPUpstreams closes the L7 sides of every upstream. Close calls it
// once closed is set: no new side starts after (setChainHTTPLocked).
func (p *Proxy) closeHTTPUpstreams() {
	for _, u := range p.upstreams {
		u.mu.Lock()
		out := u.http.out.Swap(nil)
		retired := u.http.retired
		u.http.retired = nil
		u.mu.Unlock()
		for _, o := range []*l7.Outbound{out, retired} {
			if o != nil {
				o.Close()
			}
		}
	}
}
