package proxymgr

import (
	"strings"
	"sync"
	"time"

	"github.com/trellismesh/trellis/agent/mesh"
	"github.com/trellismesh/trellis/connect/chain"
	"github.com/trellismesh/trellis/connect/configentry"
	"github.com/trellismesh/trellis/connect/proxy"
)

// serviceConfig keeps a proxy on its own service's config entries: the
// protocol (from the service's compiled chain, which resolves
// service-defaults and proxy-defaults) and the service-defaults entry's
// local timeouts, inbound cap and per-upstream settings.
type serviceConfig struct {
	p         *proxy.Proxy
	upstreams []string

	mu       sync.Mutex
	protocol string                          // guarded by mu
	entry    *configentry.ServiceConfigEntry // guarded by mu
}

// watchServiceConfig starts the watches; the returned functions stop them.
func watchServiceConfig(c *mesh.Cache, p *proxy.Proxy, service string, upstreams []string) ([]func(), error) {
	sc := &serviceConfig{p: p, upstreams: upstreams}
	stopChain, err := c.SubscribeChain(service, sc.onChain)
	if err != nil {
		return nil, err
	}
	stopEntry, err := c.SubscribeConfigEntry(configentry.ServiceDefaults, service, sc.onEntry)
	if err != nil {
		stopChain()
		return nil, err
	}
	return []func(){stopChain, stopEntry}, nil
}

func (sc *serviceConfig) onChain(c *chain.Chain) {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	sc.protocol = c.Protocol
	sc.applyLocked()
}

func (sc *serviceConfig) onEntry(e configentry.Entry) {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	sc.entry, _ = e.(*configentry.ServiceConfigEntry)
	sc.applyLocked()
}

func (sc *serviceConfig) applyLocked() {
	cfg := proxy.ServiceConfig{Protocol: sc.protocol}
	var ups *configentry.UpstreamConfiguration
	if e := sc.entry; e != nil {
		cfg.LocalConnectTimeout = time.Duration(e.LocalConnectTimeoutMs) * time.Millisecond
		cfg.LocalRequestTimeout = time.Duration(e.LocalRequestTimeoutMs) * time.Millisecond
		cfg.MaxInboundConnections = e.MaxInboundConnections
		ups = e.UpstreamConfig
	}
	sc.p.SetServiceConfig(cfg)
	for _, name := range sc.upstreams {
		sc.p.SetUpstreamConfig(name, upstreamConfigFor(ups, name))
	}
}

// upstreamConfigFor returns the override for name, else the defaults (nil
// when there are none).
func upstreamConfigFor(ups *configentry.UpstreamConfiguration, name string) *configentry.UpstreamConfig {
	if ups == nil {
		return nil
	}
	for _, o := range ups.Overrides {
		if o != nil && strings.EqualFold(o.Name, name) {
			return o
		}
	}
	return ups.Defaults
}
