package proxymgr

import (
	"context"
	"errors"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/trellismesh/trellis/agent/mesh"
	"github.com/trellismesh/trellis/internal/testutil"
	"github.com/trellismesh/trellis/raftstore"
	"github.com/trellismesh/trellis/raftstore/structs"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// newManager runs a manager over a real server's mesh cache, with a
// sidecar port range of n free ports.
func newManager(t *testing.T, n int) (*Manager, []int) {
	t.Helper()
	m, ports, _ := newManagerOf(t, n, false)
	return m, ports
}

// newManagerOf is newManager that also returns the server, with the
// cache's default intention policy.
func newManagerOf(t *testing.T, n int, defaultAllow bool) (*Manager, []int, *raftstore.Server) {
	t.Helper()
	cfg := raftstore.TestConfig("s1", "")
	cfg.Logger = testutil.Logger(t)
	s, err := raftstore.NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Shutdown() })
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if err := s.WaitForLeader(ctx); err != nil {
		t.Fatal(err)
	}
	c := mesh.New(mesh.Config{RPC: s, NodeName: "n1", Datacenter: "dc1", DefaultAllow: defaultAllow, Logger: testutil.Logger(t)})
	t.Cleanup(c.Close)
	// The range spans n free ports; ports between them that something
	// else holds are skipped, as in production.
	ports := testutil.FreePorts(t, n)
	lo, hi := ports[0], ports[0]
	for _, p := range ports {
		lo, hi = min(lo, p), max(hi, p)
	}
	m := New(Config{Mesh: c, BindAddr: "127.0.0.1", MinPort: lo, MaxPort: hi, Logger: testutil.Logger(t)})
	t.Cleanup(m.Close)
	return m, ports, s
}

func sidecar(id string, port int, upstreams ...structs.Upstream) *structs.NodeService {
	return &structs.NodeService{
		Kind: structs.ServiceKindConnectProxy, ID: id, Service: id, Port: port,
		Proxy: &structs.ConnectProxyConfig{DestinationServiceName: "web", DestinationServiceID: "web",
			LocalServiceAddress: "127.0.0.1", LocalServicePort: 1, Upstreams: upstreams},
	}
}

// apply registers svc with m: Prepare, then Commit.
func apply(m *Manager, svc *structs.NodeService) error {
	c, err := m.Prepare(svc)
	if err != nil {
		return err
	}
	return c.Commit()
}

// busyPort holds a free loopback port until the test ends (or the returned
// function is called).
func busyPort(t *testing.T) (int, func()) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln.Addr().(*net.TCPAddr).Port, func() { ln.Close() }
}

func addr(port int) string { return "127.0.0.1:" + strconv.Itoa(port) }

func listening(t *testing.T, addr string) bool { return testutil.ListensHere(t, addr) }

func TestManager_ReservePort(t *testing.T) {
	t.Parallel()
	m, _ := newManager(t, 3)
	p1, err := m.ReservePort("a", "", 0, false)
	if err != nil {
		t.Fatal(err)
	}
	if p1 < m.cfg.MinPort || p1 > m.cfg.MaxPort {
		t.Fatalf("picked %d outside %d-%d", p1, m.cfg.MinPort, m.cfg.MaxPort)
	}
	if !listening(t, "127.0.0.1:"+strconv.Itoa(p1)) {
		t.Error("the reserved port is not bound")
	}
	if again, err := m.ReservePort("a", "", 0, false); err != nil || again != p1 {
		t.Errorf("reserving again: %d, %v (want %d)", again, err, p1)
	}
	p2, err := m.ReservePort("b", "", 0, false)
	if err != nil || p2 == p1 {
		t.Errorf("second sidecar: %d, %v (must differ from %d)", p2, err, p1)
	}
	if _, err := m.ReservePort("c", "", p1, false); err == nil {
		t.Error("a port held by another sidecar was reserved twice")
	}
	m.ReleasePort("a")
	if listening(t, "127.0.0.1:"+strconv.Itoa(p1)) {
		t.Error("a released port is still bound")
	}
	// External sidecars: nothing stays bound.
	pe, err := m.ReservePort("e", "", 0, true)
	if err != nil {
		t.Fatal(err)
	}
	if listening(t, "127.0.0.1:"+strconv.Itoa(pe)) {
		t.Error("an external sidecar's port is held by the agent")
	}
}

func TestManager_Apply(t *testing.T) {
	t.Parallel()
	m, _ := newManager(t, 4)
	p, err := m.ReservePort("web-sidecar-proxy", "", 0, false)
	if err != nil {
		t.Fatal(err)
	}
	up := testutil.FreePorts(t, 2)
	svc := sidecar("web-sidecar-proxy", p, structs.Upstream{DestinationName: "api", LocalBindPort: up[0]})
	if err := apply(m, svc); err != nil {
		t.Fatal(err)
	}
	info, ok := m.Proxies()["web-sidecar-proxy"]
	if !ok || info.Service != "web" || info.PublicAddr.(*net.TCPAddr).Port != p || info.Upstreams["api"].(*net.TCPAddr).Port != up[0] {
		t.Fatalf("proxies after the registration: %+v", m.Proxies())
	}
	if !listening(t, addr(up[0])) {
		t.Error("the upstream listener is not up")
	}
	// The same registration again keeps the proxy as it is.
	if err := apply(m, svc.Clone()); err != nil {
		t.Fatal(err)
	}

	// A changed registration restarts the proxy with the new upstreams.
	changed := sidecar("web-sidecar-proxy", p, structs.Upstream{DestinationName: "db", LocalBindPort: up[1]})
	if err := apply(m, changed); err != nil {
		t.Fatal(err)
	}
	info = m.Proxies()["web-sidecar-proxy"]
	if info.Upstreams["db"] == nil || info.Upstreams["api"] != nil || !listening(t, addr(p)) || !listening(t, addr(up[1])) {
		t.Fatalf("after the change: %+v", info)
	}
	if listening(t, addr(up[0])) {
		t.Error("the old upstream listener is still up")
	}

	// An external sidecar is not run, and its reservation is released.
	pe, err := m.ReservePort("ext-sidecar-proxy", "", 0, false)
	if err != nil {
		t.Fatal(err)
	}
	ext := sidecar("ext-sidecar-proxy", pe)
	ext.Proxy.Config = map[string]string{ExternalKey: "true"}
	if _, err := m.ReservePort(ext.ID, "", pe, true); err != nil {
		t.Fatal(err)
	}
	if err := apply(m, ext); err != nil {
		t.Fatal(err)
	}
	if _, ok := m.Proxies()["ext-sidecar-proxy"]; ok {
		t.Error("the agent runs an external sidecar")
	}
	if listening(t, addr(pe)) {
		t.Error("the external sidecar's port is still held")
	}
	if next, err := m.ReservePort("other", "", 0, false); err == nil && next == pe {
		t.Error("the external sidecar's port was handed to another sidecar")
	}

	// Deregistered: stopped, listeners closed.
	m.Stop("web-sidecar-proxy")
	if len(m.Proxies()) != 0 || listening(t, addr(p)) || listening(t, addr(up[1])) {
		t.Errorf("after removal: %+v", m.Proxies())
	}
}

// A sidecar whose upstream port is taken is refused, with an error that
// names the listener and the address; its reserved public port is let go,
// and nothing binds the upstream's port once it is free.
func TestManager_BusyUpstreamIsRefused(t *testing.T) {
	t.Parallel()
	m, _ := newManager(t, 2)
	busy, free := busyPort(t)
	p, err := m.ReservePort("inuse-sidecar-proxy", "", 0, false)
	if err != nil {
		t.Fatal(err)
	}
	_, err = m.Prepare(sidecar("inuse-sidecar-proxy", p, structs.Upstream{DestinationName: "api", LocalBindPort: busy}))
	var le *ListenerError
	if !errors.As(err, &le) || le.Listener != "upstream api" || le.Addr != addr(busy) || !errors.Is(err, structs.ErrConflict) {
		t.Fatalf("Prepare with a busy upstream port: %v", err)
	}
	if msg := err.Error(); !strings.Contains(msg, `"inuse-sidecar-proxy"`) || !strings.Contains(msg, `upstream "api"`) || !strings.Contains(msg, addr(busy)) {
		t.Errorf("the error does not name the sidecar, the listener and the address: %s", msg)
	}
	if len(m.Proxies()) != 0 || listening(t, addr(p)) {
		t.Fatalf("after the refusal: proxies %v, public port bound %v", m.Proxies(), listening(t, addr(p)))
	}
	free()
	// Nothing retries: the port stays free for whoever wants it.
	ln, err := net.Listen("tcp", addr(busy))
	if err != nil {
		t.Fatalf("the freed port: %v", err)
	}
	ln.Close()
}

// Two sidecars on one explicit port: the second is refused as a conflict
// naming the first.
func TestManager_PortOfAnotherSidecar(t *testing.T) {
	t.Parallel()
	m, ports := newManager(t, 1)
	if _, err := m.ReservePort("dupa-sidecar-proxy", "", ports[0], false); err != nil {
		t.Fatal(err)
	}
	if err := apply(m, sidecar("dupa-sidecar-proxy", ports[0])); err != nil {
		t.Fatal(err)
	}
	_, err := m.ReservePort("dupb-sidecar-proxy", "", ports[0], false)
	var le *ListenerError
	if !errors.As(err, &le) || le.Listener != "public" || !errors.Is(err, structs.ErrConflict) || !strings.Contains(err.Error(), `sidecar "dupa-sidecar-proxy" of this agent`) {
		t.Fatalf("the second sidecar on the port: %v", err)
	}
	// The range (one port) is full.
	_, err = m.ReservePort("dupc-sidecar-proxy", "", 0, false)
	if !errors.Is(err, structs.ErrConflict) || !strings.Contains(err.Error(), "no free port") {
		t.Fatalf("no port left in the range: %v", err)
	}
}

// A change that cannot bind leaves the running proxy serving as it was; a
// change onto the same ports hands them over.
func TestManager_RefusedChangeKeepsTheProxy(t *testing.T) {
	t.Parallel()
	m, _ := newManager(t, 2)
	p, err := m.ReservePort("web-sidecar-proxy", "", 0, false)
	if err != nil {
		t.Fatal(err)
	}
	up := testutil.FreePorts(t, 2)
	svc := sidecar("web-sidecar-proxy", p, structs.Upstream{DestinationName: "api", LocalBindPort: up[0]})
	if err := apply(m, svc); err != nil {
		t.Fatal(err)
	}
	busy, _ := busyPort(t)
	for name, change := range map[string]func(*structs.NodeService){
		"unassigned address": func(s *structs.NodeService) { s.Address = "192.0.2.1" },
		"busy upstream port": func(s *structs.NodeService) {
			s.Proxy.Upstreams = append(s.Proxy.Upstreams, structs.Upstream{DestinationName: "db", LocalBindPort: busy})
		},
	} {
		next := svc.Clone()
		change(next)
		if _, err := m.Prepare(next); err == nil {
			t.Fatalf("%s: the change was accepted", name)
		}
		info := m.Proxies()["web-sidecar-proxy"]
		if info.PublicAddr == nil || info.Upstreams["db"] != nil || !listening(t, addr(p)) || !listening(t, addr(up[0])) {
			t.Fatalf("%s: the running proxy after the refused change: %+v", name, info)
		}
	}
	if _, err := m.Prepare(func() *structs.NodeService { s := svc.Clone(); s.Address = "192.0.2.1"; return s }()); !errors.As(err, new(*structs.ValidationError)) {
		t.Errorf("an address this host does not have: %v (want a validation error)", err)
	}

	// Same public port, same upstream port, one more upstream and the
	// upstream on the wildcard address (overlapping the old one): the
	// sockets are handed over or bound once the old proxy let go.
	next := svc.Clone()
	next.Proxy.Upstreams = []structs.Upstream{
		{DestinationName: "api", LocalBindAddress: "0.0.0.0", LocalBindPort: up[0]},
		{DestinationName: "db", LocalBindPort: up[1]},
	}
	if err := apply(m, next); err != nil {
		t.Fatal(err)
	}
	info := m.Proxies()["web-sidecar-proxy"]
	if info.PublicAddr.(*net.TCPAddr).Port != p || info.Upstreams["api"].(*net.TCPAddr).Port != up[0] || info.Upstreams["db"] == nil {
		t.Fatalf("after the change: %+v", info)
	}
	for _, port := range []int{p, up[0], up[1]} {
		if !listening(t, addr(port)) {
			t.Errorf("port %d is not served after the change", port)
		}
	}
}

// A socket outlives its leases: closing one ends its Accept without
// unbinding, and a connection made meanwhile waits for the next lease.
func TestSocket_LeasesHandOver(t *testing.T) {
	t.Parallel()
	s, err := listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer s.close()
	first := s.lease()
	accepted := make(chan error, 1)
	go func() {
		_, err := first.Accept()
		accepted <- err
	}()
	first.Close()
	if err := <-accepted; !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Accept of a closed lease: %v", err)
	}
	conn, err := net.DialTimeout("tcp", s.bound(), time.Second)
	if err != nil {
		t.Fatalf("between two leases: %v", err)
	}
	defer conn.Close()
	second := s.lease()
	defer second.Close()
	in, err := second.Accept()
	if err != nil {
		t.Fatal(err)
	}
	in.Close()
	if in.RemoteAddr().String() != conn.LocalAddr().String() {
		t.Errorf("the next lease accepted %s, want %s", in.RemoteAddr(), conn.LocalAddr())
	}
}
