// Package proxymgr runs the sidecar proxies of the services registered on
// this agent, inside the agent process: for every local service of kind
// connect-proxy (unless its proxy config says external = "true", for
// trellis connect proxy) it starts a connect/proxy.Proxy fed by the agent's
// mesh cache — the leaf of the destination service, the trusted roots, the
// intentions, and for each upstream its discovery chain and the healthy
// endpoints of the chain's targets (chain.go) — and stops it when the
// service is deregistered. Both happen as part of the registration and the
// deregistration: a sidecar whose listeners cannot all be bound is not
// registered (the registration fails with a *ListenerError), and a
// registration that changes a running proxy binds what it needs before the
// running one is replaced, so a refused change leaves it serving.
package proxymgr

import (
	"errors"
	"fmt"
	"maps"
	"net"
	"reflect"
	"slices"
	"strconv"
	"sync"
	"syscall"

	"github.com/hashicorp/go-hclog"

	"github.com/trellismesh/trellis/agent/mesh"
	"github.com/trellismesh/trellis/connect"
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

// Manager starts and stops the proxies of the local sidecars. The agent
// drives it as it registers services (Prepare, then Commit or Abort) and
// deregisters them (Stop), synchronously: a proxy runs exactly when the
// last registration of its sidecar was accepted, and nothing is started
// later in the background. A registration whose listeners cannot be bound
// is refused and leaves the running proxy, if any, as it was.
type Manager struct {
	cfg    Config
	logger hclog.Logger

	mu       sync.Mutex
	reserved map[string]*socket  // public sockets bound for sidecars not started yet, by service ID; guarded by mu
	proxies  map[string]*managed // by service ID; guarded by mu
	external map[string]int      // public ports of local sidecars run by another process, by service ID; guarded by mu
	closed   bool                // guarded by mu
}

type managed struct {
	svc       *structs.NodeService
	certs     connect.CertSource
	p         *proxy.Proxy
	public    *socket
	upstreams []*socket // in the order of svc.Proxy.Upstreams
	releases  []func()
}

// sockets returns the public socket and those of the upstreams.
func (mp *managed) sockets() []*socket { return append([]*socket{mp.public}, mp.upstreams...) }

// New returns a manager with no proxies.
func New(cfg Config) *Manager {
	logger := cfg.Logger
	if logger == nil {
		logger = hclog.Default()
	}
	return &Manager{cfg: cfg, logger: logger.Named("proxies"), reserved: map[string]*socket{}, proxies: map[string]*managed{}, external: map[string]int{}}
}

// Managed reports whether a service is a proxy this agent runs itself.
func Managed(svc *structs.NodeService) bool {
	return svc.Kind == structs.ServiceKindConnectProxy && svc.Proxy != nil && svc.Proxy.Config[ExternalKey] != "true"
}

// ReservePort binds the public listener of sidecar id before it is
// registered: on port, or when port is 0 on the first free port of the
// range (not used by another sidecar of this agent). It returns the port;
// the listener waits for the proxy Prepare readies. A sidecar already
// running on that port keeps its listener. For an external sidecar (run by
// another process) nothing stays bound: a port of the range is picked when
// port is 0, and a given port is taken as it is. A port that cannot be
// bound is a *ListenerError; a range with no free port matches
// structs.ErrConflict.
func (m *Manager) ReservePort(id, addr string, port int, external bool) (int, error) {
	if addr == "" {
		addr = m.cfg.BindAddr
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return 0, errClosed
	}
	if external {
		m.releaseLocked(id)
		if port != 0 {
			return port, nil
		}
		s, err := m.pickLocked(id, addr)
		if err != nil {
			return 0, err
		}
		s.close() // the external proxy binds it
		return s.port(), nil
	}
	if mp := m.proxies[id]; mp != nil && (port == 0 || port == mp.svc.Port) {
		return mp.svc.Port, nil
	}
	if s := m.reserved[id]; s != nil {
		if port == 0 || port == s.port() {
			return s.port(), nil
		}
		m.releaseLocked(id)
	}
	var s *socket
	var err error
	if port != 0 {
		s, err = m.bindLocked(id, "public", net.JoinHostPort(addr, strconv.Itoa(port)))
	} else {
		s, err = m.pickLocked(id, addr)
	}
	if err != nil {
		return 0, err
	}
	m.reserved[id] = s
	return s.port(), nil
}

// pickLocked binds the first port of the range that no sidecar of this
// agent uses and nothing else holds.
func (m *Manager) pickLocked(id, addr string) (*socket, error) {
	used := map[int]bool{}
	for _, mp := range m.proxies {
		used[mp.svc.Port] = true
	}
	for _, s := range m.reserved {
		used[s.port()] = true
	}
	for _, p := range m.external {
		used[p] = true
	}
	for p := m.cfg.MinPort; p <= m.cfg.MaxPort; p++ {
		if used[p] {
			continue
		}
		if s, err := listen(net.JoinHostPort(addr, strconv.Itoa(p))); err == nil {
			return s, nil
		}
		// In use by something else.
	}
	return nil, &conflictError{fmt.Sprintf("sidecar %q: no free port for its public listener in %d-%d (ports.sidecar_min_port, ports.sidecar_max_port): every port of the range is in use; free one, widen the range or give the sidecar a port", id, m.cfg.MinPort, m.cfg.MaxPort)}
}

// bindLocked binds addr for listener what of sidecar id.
func (m *Manager) bindLocked(id, what, addr string) (*socket, error) {
	s, err := listen(addr)
	if err != nil {
		le := &ListenerError{Sidecar: id, Listener: what, Addr: addr, Err: err}
		if errors.Is(err, syscall.EADDRINUSE) {
			le.holder = m.holderLocked(addr)
		}
		return nil, le
	}
	return s, nil
}

// holderLocked names the sidecar of this agent that holds the port of
// addr, or returns "".
func (m *Manager) holderLocked(addr string) string {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return ""
	}
	for _, id := range slices.Sorted(maps.Keys(m.proxies)) {
		for _, s := range m.proxies[id].sockets() {
			if strconv.Itoa(s.port()) == port {
				return fmt.Sprintf("sidecar %q of this agent", id)
			}
		}
	}
	for _, id := range slices.Sorted(maps.Keys(m.reserved)) {
		if strconv.Itoa(m.reserved[id].port()) == port {
			return fmt.Sprintf("sidecar %q of this agent", id)
		}
	}
	return ""
}

// ReleasePort closes a reserved listener whose sidecar was not registered.
func (m *Manager) ReleasePort(id string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.releaseLocked(id)
}

func (m *Manager) releaseLocked(id string) {
	if s := m.reserved[id]; s != nil {
		s.close()
		delete(m.reserved, id)
	}
}

// Change is what registering one service changes in the proxies, ready to
// apply: the listeners a new proxy needs are bound (or, when they are the
// running proxy's, kept). Commit applies it and Abort drops it; one of them
// must be called, and no other change of the same service may be prepared
// in between (the agent registers one service at a time).
type Change struct {
	m        *Manager
	id       string
	old      *managed             // the proxy running at Prepare, or nil
	keep     bool                 // old is already what the registration asks for
	run      *structs.NodeService // the proxy to run; nil runs none
	external int                  // the public port of a sidecar run by another process
	certs    connect.CertSource
	public   *slot
	ups      []*slot   // in the order of run.Proxy.Upstreams
	reopen   []*socket // sockets of old closed by Commit for a late slot
	done     bool      // guarded by m.mu
}

// slot is one listener of the new proxy.
type slot struct {
	what  string  // "public", or "upstream NAME"
	want  string  // host:port asked for
	s     *socket // nil while late
	fresh bool    // bound for this change: dropping it closes s
	late  bool    // bound by Commit, once the old proxy has let go of its sockets on the port
}

func (c *Change) slots() []*slot { return append([]*slot{c.public}, c.ups...) }

func (c *Change) uses(s *socket) bool {
	for _, sl := range c.slots() {
		if sl.s == s {
			return true
		}
	}
	return false
}

// Prepare readies the change that registering svc makes. For a proxy this
// agent runs, it binds the public listener (taking the one ReservePort
// bound) and every upstream listener, keeping those of the running proxy of
// the same sidecar that are bound as asked; when one cannot be bound it
// returns a *ListenerError and nothing has changed. A registration equal to
// the running proxy's keeps it as it is. For any other service the change
// stops the proxy that ran under its ID, if one did.
func (m *Manager) Prepare(svc *structs.NodeService) (_ *Change, err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil, errClosed
	}
	c := &Change{m: m, id: svc.ID, old: m.proxies[svc.ID]}
	if !Managed(svc) {
		if svc.Kind == structs.ServiceKindConnectProxy {
			c.external = svc.Port
		}
		return c, nil
	}
	if c.old != nil && sameProxy(c.old.svc, svc) {
		c.keep = true
		return c, nil
	}
	if c.certs, err = m.cfg.Mesh.CertSource(svc.Proxy.DestinationServiceName); err != nil {
		return nil, err
	}
	cfg := m.proxyConfig(svc, c.certs)
	if err := cfg.Validate(); err != nil {
		return nil, structs.Invalid("Proxy", "%v", err)
	}
	c.run = svc.Clone()
	defer func() {
		if err != nil {
			c.dropLocked()
		}
	}()

	taken := map[*socket]bool{}
	// reuse returns the socket of the old proxy bound as asked: for a
	// port of 0, the one of the upstream of the same destination.
	reuse := func(want, dest string) *socket {
		if c.old == nil {
			return nil
		}
		if _, port, _ := net.SplitHostPort(want); port != "0" {
			for _, s := range c.old.sockets() {
				if s.want == want && !taken[s] {
					return s
				}
			}
			return nil
		}
		for i, u := range c.old.svc.Proxy.Upstreams {
			if s := c.old.upstreams[i]; u.DestinationName == dest && s.want == want && !taken[s] {
				return s
			}
		}
		return nil
	}
	// onPort reports whether the old proxy has a socket on want's port
	// that the new one does not keep: a bind that overlaps it (0.0.0.0
	// after 127.0.0.1) waits for Commit to close it.
	onPort := func(want string) bool {
		if c.old == nil {
			return false
		}
		_, port, _ := net.SplitHostPort(want)
		for _, s := range c.old.sockets() {
			if strconv.Itoa(s.port()) == port && !taken[s] {
				return true
			}
		}
		return false
	}
	place := func(what, want, dest string) (*slot, error) {
		if s := reuse(want, dest); s != nil {
			taken[s] = true
			return &slot{what: what, want: want, s: s}, nil
		}
		s, err := m.bindLocked(c.id, what, want)
		switch {
		case err == nil:
			return &slot{what: what, want: want, s: s, fresh: true}, nil
		case errors.Is(err, syscall.EADDRINUSE) && onPort(want):
			return &slot{what: what, want: want, late: true}, nil
		}
		return nil, err
	}

	pub := cfg.PublicAddr
	if r := m.reserved[c.id]; r != nil {
		delete(m.reserved, c.id)
		if r.want == pub {
			c.public = &slot{what: "public", want: pub, s: r, fresh: true}
		} else {
			r.close()
		}
	}
	if c.public == nil {
		if c.public, err = place("public", pub, ""); err != nil {
			return nil, err
		}
	}
	for _, u := range cfg.Upstreams {
		host := u.LocalBindAddress
		if host == "" {
			host = proxy.DefaultLocalBindAddress
		}
		sl, err := place("upstream "+u.DestinationName, net.JoinHostPort(host, strconv.Itoa(u.LocalBindPort)), u.DestinationName)
		if err != nil {
			return nil, err
		}
		c.ups = append(c.ups, sl)
	}
	return c, nil
}

// Commit applies the change. A proxy being replaced is stopped first and
// its sockets are handed to the new one where they match; should the new
// one fail to start after all (a late listener taken meanwhile), the old
// one is started again on its sockets and the error returned.
func (c *Change) Commit() error {
	m := c.m
	m.mu.Lock()
	defer m.mu.Unlock()
	if c.done {
		return fmt.Errorf("the change of sidecar %q was applied already", c.id)
	}
	c.done = true
	if m.closed {
		c.dropLocked()
		return errClosed
	}
	if m.proxies[c.id] != c.old {
		c.dropLocked()
		return fmt.Errorf("the proxy of %q changed while its registration was prepared", c.id)
	}
	if c.keep {
		return nil
	}
	if c.external != 0 {
		m.external[c.id] = c.external
	} else {
		delete(m.external, c.id)
	}
	if c.run == nil {
		if c.old != nil {
			m.stopLocked(c.id, c.old)
			m.logger.Info("stopped the proxy of a sidecar registered again as a service the agent does not run", "proxy", c.id)
		}
		return nil
	}
	if c.old != nil {
		m.haltLocked(c.id, c.old)
	}
	mp, err := c.startLocked()
	if err != nil {
		c.dropLocked()
		if c.old != nil {
			m.resumeLocked(c)
		} else {
			delete(m.proxies, c.id)
		}
		return err
	}
	if c.old != nil {
		for _, s := range c.old.sockets() {
			if !c.uses(s) {
				s.close()
			}
		}
	}
	m.proxies[c.id] = mp
	up := make([]string, 0, len(c.ups))
	for i, u := range c.run.Proxy.Upstreams {
		up = append(up, u.DestinationName+"="+c.ups[i].s.ln.Addr().String())
	}
	m.logger.Info("proxy started", "proxy", c.id, "service", c.run.Proxy.DestinationServiceName, "public", mp.p.PublicAddr(), "app", m.proxyConfig(c.run, c.certs).LocalAppAddr, "upstreams", up)
	return nil
}

// startLocked binds the late slots, the old proxy's sockets on their ports
// closed first, and starts the new proxy.
func (c *Change) startLocked() (*managed, error) {
	for _, sl := range c.slots() {
		if !sl.late {
			continue
		}
		_, port, _ := net.SplitHostPort(sl.want)
		for _, s := range c.old.sockets() {
			if strconv.Itoa(s.port()) == port && !c.uses(s) && !slices.Contains(c.reopen, s) {
				s.close()
				c.reopen = append(c.reopen, s)
			}
		}
		s, err := c.m.bindLocked(c.id, sl.what, sl.want)
		if err != nil {
			return nil, err
		}
		sl.s, sl.fresh, sl.late = s, true, false
	}
	ups := make([]*socket, len(c.ups))
	for i, sl := range c.ups {
		ups[i] = sl.s
	}
	return c.m.runLocked(c.run, c.certs, c.public.s, ups)
}

// resumeLocked starts the old proxy of a change that failed again, on its
// sockets (those closed for late slots bound again).
func (m *Manager) resumeLocked(c *Change) {
	old := c.old
	for _, closed := range c.reopen {
		s, err := listen(closed.bound())
		if err != nil {
			m.logger.Error("the previous proxy cannot get its listener back; it stays stopped until the sidecar is registered again", "proxy", c.id, "addr", closed.bound(), "error", err)
			for _, s := range old.sockets() {
				s.close()
			}
			delete(m.proxies, c.id)
			return
		}
		s.want = closed.want
		if old.public == closed {
			old.public = s
		}
		for i := range old.upstreams {
			if old.upstreams[i] == closed {
				old.upstreams[i] = s
			}
		}
	}
	mp, err := m.runLocked(old.svc, old.certs, old.public, old.upstreams)
	if err != nil {
		m.logger.Error("the previous proxy cannot start again; it stays stopped until the sidecar is registered again", "proxy", c.id, "error", err)
		for _, s := range old.sockets() {
			s.close()
		}
		delete(m.proxies, c.id)
		return
	}
	m.proxies[c.id] = mp
}

// Abort drops a change that is not applied: the listeners bound for it are
// closed. It does nothing after Commit.
func (c *Change) Abort() {
	c.m.mu.Lock()
	defer c.m.mu.Unlock()
	if c.done {
		return
	}
	c.done = true
	c.dropLocked()
}

func (c *Change) dropLocked() {
	for _, sl := range c.slots() {
		if sl != nil && sl.fresh && sl.s != nil {
			sl.s.close()
			sl.s, sl.fresh = nil, false
		}
	}
}

// Stop stops the proxy of service id, if one runs, and closes its
// listeners; it is how a deregistration ends a sidecar.
func (m *Manager) Stop(id string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if mp := m.proxies[id]; mp != nil {
		m.stopLocked(id, mp)
		m.logger.Info("stopped the proxy of a deregistered sidecar", "proxy", id)
	}
	m.releaseLocked(id)
	delete(m.external, id)
}

// sameProxy reports whether two registrations of a sidecar run the same proxy.
func sameProxy(a, b *structs.NodeService) bool {
	return a.Port == b.Port && a.Address == b.Address && reflect.DeepEqual(a.Proxy, b.Proxy)
}

// proxyConfig is the configuration of the proxy of svc, with its public
// address and no listeners.
func (m *Manager) proxyConfig(s *structs.NodeService, certs connect.CertSource) proxy.Config {
	dest := s.Proxy.DestinationServiceName
	addr := s.Address
	if addr == "" {
		addr = m.cfg.BindAddr
	}
	localAddr := s.Proxy.LocalServiceAddress
	if localAddr == "" {
		localAddr = "127.0.0.1"
	}
	cfg := proxy.Config{
		ProxyID: s.ID, Service: dest, PublicAddr: net.JoinHostPort(addr, strconv.Itoa(s.Port)),
		LocalAppAddr: net.JoinHostPort(localAddr, strconv.Itoa(s.Proxy.LocalServicePort)),
		Certs:        certs, Authorizer: m.cfg.Mesh.Authorizer(dest), Golden: m.cfg.Golden, Logger: m.logger,
	}
	for _, u := range s.Proxy.Upstreams {
		cfg.Upstreams = append(cfg.Upstreams, proxy.UpstreamConfig{DestinationName: u.DestinationName, LocalBindAddress: u.LocalBindAddress, LocalBindPort: u.LocalBindPort})
	}
	return cfg
}

// runLocked starts the proxy of s on bound sockets and its watches. On
// error nothing of it runs; the sockets stay bound.
func (m *Manager) runLocked(s *structs.NodeService, certs connect.CertSource, public *socket, ups []*socket) (*managed, error) {
	cfg := m.proxyConfig(s, certs)
	cfg.PublicAddr, cfg.PublicListener = "", public.lease()
	for i := range cfg.Upstreams {
		cfg.Upstreams[i].Listener = ups[i].lease()
	}
	p, err := proxy.New(cfg)
	if err != nil {
		return nil, err
	}
	dest := s.Proxy.DestinationServiceName
	mp := &managed{svc: s, certs: certs, p: p, public: public, upstreams: ups}
	mp.releases = append(mp.releases, m.cfg.Mesh.OnRootsChange(p.Reverify), m.cfg.Mesh.OnIntentionsChange(p.Reauthorize))
	var upNames []string
	for _, u := range s.Proxy.Upstreams {
		upNames = append(upNames, u.DestinationName)
	}
	stops, err := watchServiceConfig(m.cfg.Mesh, p, dest, upNames)
	if err != nil {
		m.haltLocked(s.ID, mp)
		return nil, err
	}
	mp.releases = append(mp.releases, stops...)
	for _, u := range s.Proxy.Upstreams {
		f, err := follow(m.cfg.Mesh, p, u.DestinationName, m.logger.With("proxy", s.ID))
		if err != nil {
			m.haltLocked(s.ID, mp)
			return nil, err
		}
		mp.releases = append(mp.releases, f.close)
	}
	return mp, nil
}

// haltLocked stops the proxy of mp and its watches; its sockets stay bound.
func (m *Manager) haltLocked(id string, mp *managed) {
	for _, r := range mp.releases {
		r()
	}
	mp.releases = nil
	if err := mp.p.Close(); err != nil {
		m.logger.Warn("stop proxy", "proxy", id, "error", err)
	}
}

// stopLocked stops the proxy of mp and closes its sockets.
func (m *Manager) stopLocked(id string, mp *managed) {
	m.haltLocked(id, mp)
	for _, s := range mp.sockets() {
		s.close()
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
	for id := range m.reserved {
		m.releaseLocked(id)
	}
}
