// Package proxymgr runs the sidecar proxies of the services registered on
// this agent, inside the agent process: for every local service of kind
// connect-proxy (unless its proxy config says external = "true", for
// trellis connect proxy) it starts a connect/proxy.Proxy fed by the agent's
// mesh cache — the leaf of the destination service, the trusted roots, the
// intentions, and for each upstream its discovery chain and the healthy
// endpoints of the chain's targets (chain.go) — and stops it when the
// service is deregistered.
package proxymgr

import (
	"errors"
	"fmt"
	"net"
	"reflect"
	"strconv"
	"sync"

	"github.com/hashicorp/go-hclog"

	"github.com/trellismesh/trellis/agent/mesh"
	"github.com/trellismesh/trellis/connect/golden"
	"github.com/trellismesh/trellis/connect/proxy"
	"github.com/trellismesh/trellis/raftstore/structs"
)

// ExternalKey in a proxy's Config, set to "true", leaves the proxy to a
// separate process (trellis connect proxy -sidecar-for ID).
const ExternalKey = "external"

// Config configures a Manager.
type Config struct {
	// Mesh supplies certificates, roots, intentions and endpoints.
	Mesh *mesh.Cache
	// BindAddr is the IP public listeners bind when a sidecar names no
	// address of its own.
	BindAddr string
	// MinPort and MaxPort bound the public ports picked for sidecars that
	// name none.
	MinPort, MaxPort int
	// Golden receives the golden signals of every proxy's edges; nil
	// records none.
	Golden *golden.Recorder
	// Logger is named "proxies"; nil means hclog.Default().
	Logger hclog.Logger
}

// Manager starts and stops the proxies of the local sidecars.
type Manager struct {
	cfg    Config
	logger hclog.Logger

	mu       sync.Mutex
	reserved map[string]net.Listener // public listeners bound for sidecars not started yet, by service ID
	proxies  map[string]*managed     // by service ID
	failed   map[string]error        // sidecars that could not start, by service ID
	external map[int]bool            // public ports of local sidecars run by another process
	closed   bool
}

type managed struct {
	svc      *structs.NodeService
	p        *proxy.Proxy
	releases []func()
}

// New returns a manager with no proxies.
func New(cfg Config) *Manager {
	logger := cfg.Logger
	if logger == nil {
		logger = hclog.Default()
	}
	return &Manager{cfg: cfg, logger: logger.Named("proxies"), reserved: map[string]net.Listener{}, proxies: map[string]*managed{}, failed: map[string]error{}, external: map[int]bool{}}
}

// Managed reports whether a service is a proxy this agent runs itself.
func Managed(svc *structs.NodeService) bool {
	return svc.Kind == structs.ServiceKindConnectProxy && svc.Proxy != nil && svc.Proxy.Config[ExternalKey] != "true"
}

// ReservePort binds the public listener of sidecar id before it is
// registered: on port, or when port is 0 on the first free port of the
// range (not used by another sidecar of this agent). It returns the port;
// the listener waits for the proxy Sync starts. A sidecar already running
// on that port keeps its listener. For an external sidecar (run by another
// process) nothing stays bound: a port of the range is picked when port is
// 0, and a given port is taken as it is.
func (m *Manager) ReservePort(id, addr string, port int, external bool) (int, error) {
	if addr == "" {
		addr = m.cfg.BindAddr
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return 0, errors.New("the proxy manager is shut down")
	}
	if external {
		if ln := m.reserved[id]; ln != nil {
			ln.Close()
			delete(m.reserved, id)
		}
		if port != 0 {
			return port, nil
		}
		p, ln, err := m.pickLocked(id, addr)
		if err != nil {
			return 0, err
		}
		ln.Close() // the external proxy binds it
		return p, nil
	}
	if mp := m.proxies[id]; mp != nil && (port == 0 || port == mp.svc.Port) {
		return mp.svc.Port, nil
	}
	if ln := m.reserved[id]; ln != nil {
		if p := ln.Addr().(*net.TCPAddr).Port; port == 0 || port == p {
			return p, nil
		}
		ln.Close()
		delete(m.reserved, id)
	}
	if port != 0 {
		ln, err := net.Listen("tcp", net.JoinHostPort(addr, strconv.Itoa(port)))
		if err != nil {
			return 0, fmt.Errorf("bind the public listener of sidecar %q: %w", id, err)
		}
		m.reserved[id] = ln
		return port, nil
	}
	p, ln, err := m.pickLocked(id, addr)
	if err != nil {
		return 0, err
	}
	m.reserved[id] = ln
	return p, nil
}

// pickLocked binds the first port of the range that no sidecar of this
// agent uses and nothing else holds.
func (m *Manager) pickLocked(id, addr string) (int, net.Listener, error) {
	used := map[int]bool{}
	for _, mp := range m.proxies {
		used[mp.svc.Port] = true
	}
	for _, ln := range m.reserved {
		used[ln.Addr().(*net.TCPAddr).Port] = true
	}
	for p := range m.external {
		used[p] = true
	}
	for p := m.cfg.MinPort; p <= m.cfg.MaxPort; p++ {
		if used[p] {
			continue
		}
		ln, err := net.Listen("tcp", net.JoinHostPort(addr, strconv.Itoa(p)))
		if err != nil {
			continue // in use by something else
		}
		return p, ln, nil
	}
	return 0, nil, fmt.Errorf("sidecar %q: no free port in %d-%d (ports.sidecar_min_port, ports.sidecar_max_port)", id, m.cfg.MinPort, m.cfg.MaxPort)
}

// ReleasePort closes a reserved listener whose sidecar was not registered.
func (m *Manager) ReleasePort(id string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if ln := m.reserved[id]; ln != nil {
		ln.Close()
		delete(m.reserved, id)
	}
}

// Sync makes the running proxies match services: it starts a proxy for every
// managed connect-proxy service that has none, restarts those whose
// configuration changed, and stops those whose service is gone. A proxy that
// fails to start is logged and tried again at the next Sync.
func (m *Manager) Sync(services []*structs.NodeService) {
	want := map[string]*structs.NodeService{}
	external := map[string]int{}
	for _, s := range services {
		switch {
		case Managed(s):
			want[s.ID] = s
		case s.Kind == structs.ServiceKindConnectProxy:
			external[s.ID] = s.Port
		}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return
	}
	m.external = map[int]bool{}
	for id, port := range external {
		m.external[port] = true
		if ln := m.reserved[id]; ln != nil {
			ln.Close() // its own process binds it
			delete(m.reserved, id)
		}
	}
	for id, mp := range m.proxies {
		if s, ok := want[id]; !ok || !sameProxy(mp.svc, s) {
			m.stopLocked(id, mp)
			if !ok {
				m.logger.Info("stopped the proxy of a deregistered sidecar", "proxy", id)
			}
		}
	}
	for id := range m.failed {
		if _, ok := want[id]; !ok {
			delete(m.failed, id)
		}
	}
	for id, s := range want {
		if m.proxies[id] != nil {
			continue
		}
		if err := m.startLocked(s); err != nil {
			if prev := m.failed[id]; prev == nil || prev.Error() != err.Error() {
				m.logger.Error("start proxy", "proxy", id, "error", err)
			}
			m.failed[id] = err
			continue
		}
		delete(m.failed, id)
	}
}

// sameProxy reports whether two registrations of a sidecar run the same proxy.
func sameProxy(a, b *structs.NodeService) bool {
	return a.Port == b.Port && a.Address == b.Address && reflect.DeepEqual(a.Proxy, b.Proxy)
}

func (m *Manager) startLocked(s *structs.NodeService) (err error) {
	dest := s.Proxy.DestinationServiceName
	ln := m.reserved[s.ID]
	delete(m.reserved, s.ID)
	if ln != nil && ln.Addr().(*net.TCPAddr).Port != s.Port {
		ln.Close()
		ln = nil
	}
	if ln == nil {
		addr := s.Address
		if addr == "" {
			addr = m.cfg.BindAddr
		}
		if ln, err = net.Listen("tcp", net.JoinHostPort(addr, strconv.Itoa(s.Port))); err != nil {
			return fmt.Errorf("bind the public listener: %w", err)
		}
	}
	certs, err := m.cfg.Mesh.CertSource(dest)
	if err != nil {
		ln.Close()
		return err
	}
	localAddr := s.Proxy.LocalServiceAddress
	if localAddr == "" {
		localAddr = "127.0.0.1"
	}
	cfg := proxy.Config{
		ProxyID: s.ID, Service: dest, PublicListener: ln,
		LocalAppAddr: net.JoinHostPort(localAddr, strconv.Itoa(s.Proxy.LocalServicePort)),
		Certs:        certs, Authorizer: m.cfg.Mesh.Authorizer(dest), Golden: m.cfg.Golden, Logger: m.logger,
	}
	for _, u := range s.Proxy.Upstreams {
		cfg.Upstreams = append(cfg.Upstreams, proxy.UpstreamConfig{DestinationName: u.DestinationName, LocalBindAddress: u.LocalBindAddress, LocalBindPort: u.LocalBindPort})
	}
	p, err := proxy.New(cfg)
	if err != nil {
		return err
	}
	mp := &managed{svc: s.Clone(), p: p}
	mp.releases = append(mp.releases, m.cfg.Mesh.OnRootsChange(p.Reverify), m.cfg.Mesh.OnIntentionsChange(p.Reauthorize))
	var upNames []string
	for _, u := range s.Proxy.Upstreams {
		upNames = append(upNames, u.DestinationName)
	}
	stops, err := watchServiceConfig(m.cfg.Mesh, p, dest, upNames)
	if err != nil {
		m.stopLocked(s.ID, mp)
		return err
	}
	mp.releases = append(mp.releases, stops...)
	for _, u := range s.Proxy.Upstreams {
		f, err := follow(m.cfg.Mesh, p, u.DestinationName, m.logger.With("proxy", s.ID))
		if err != nil {
			m.stopLocked(s.ID, mp)
			return err
		}
		mp.releases = append(mp.releases, f.close)
	}
	m.proxies[s.ID] = mp
	up := make([]string, 0, len(cfg.Upstreams))
	for _, u := range s.Proxy.Upstreams {
		if a := p.UpstreamAddr(u.DestinationName); a != nil {
			up = append(up, u.DestinationName+"="+a.String())
		}
	}
	m.logger.Info("proxy started", "proxy", s.ID, "service", dest, "public", p.PublicAddr(), "app", cfg.LocalAppAddr, "upstreams", up)
	return nil
}

func (m *Manager) stopLocked(id string, mp *managed) {
	for _, r := range mp.releases {
		r()
	}
	if err := mp.p.Close(); err != nil {
		m.logger.Warn("stop proxy", "proxy", id, "error", err)
	}
	delete(m.proxies, id)
}

// Info describes a running proxy.
type Info struct {
	Service    string
	PublicAddr net.Addr
	// Upstreams maps each destination to its local listener.
	Upstreams map[string]net.Addr
}

// Proxies describes the running proxies by sidecar ID.
func (m *Manager) Proxies() map[string]Info {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := map[string]Info{}
	for id, mp := range m.proxies {
		in := Info{Service: mp.svc.Proxy.DestinationServiceName, PublicAddr: mp.p.PublicAddr(), Upstreams: map[string]net.Addr{}}
		for _, u := range mp.svc.Proxy.Upstreams {
			in.Upstreams[u.DestinationName] = mp.p.UpstreamAddr(u.DestinationName)
		}
		out[id] = in
	}
	return out
}

// Failed returns the sidecars whose proxy could not start, with why.
func (m *Manager) Failed() map[string]error {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := map[string]error{}
	for id, err := range m.failed {
		out[id] = err
	}
	return out
}

// Close stops every proxy and closes reserved listeners; it returns once
// the proxies' goroutines are gone.
func (m *Manager) Close() {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return
	}
	m.closed = true
	for id, mp := range m.proxies {
		m.stopLocked(id, mp)
	}
	for id, ln := range m.reserved {
		ln.Close()
		delete(m.reserved, id)
	}
}
