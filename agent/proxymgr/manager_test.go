package proxymgr

import (
	"context"
	"net"
	"strconv"
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

func listening(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

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
	if !listening("127.0.0.1:" + strconv.Itoa(p1)) {
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
	if listening("127.0.0.1:" + strconv.Itoa(p1)) {
		t.Error("a released port is still bound")
	}
	// External sidecars: nothing stays bound.
	pe, err := m.ReservePort("e", "", 0, true)
	if err != nil {
		t.Fatal(err)
	}
	if listening("127.0.0.1:" + strconv.Itoa(pe)) {
		t.Error("an external sidecar's port is held by the agent")
	}
}

func TestManager_Sync(t *testing.T) {
	t.Parallel()
	m, _ := newManager(t, 4)
	p, err := m.ReservePort("web-sidecar-proxy", "", 0, false)
	if err != nil {
		t.Fatal(err)
	}
	up := testutil.FreePorts(t, 2)
	svc := sidecar("web-sidecar-proxy", p, structs.Upstream{DestinationName: "api", LocalBindPort: up[0]})
	m.Sync([]*structs.NodeService{svc, {ID: "web", Service: "web", Port: 1}})
	info, ok := m.Proxies()["web-sidecar-proxy"]
	if !ok || info.Service != "web" || info.PublicAddr.(*net.TCPAddr).Port != p || info.Upstreams["api"].(*net.TCPAddr).Port != up[0] {
		t.Fatalf("proxies after sync: %+v (failed: %v)", m.Proxies(), m.Failed())
	}
	if !listening("127.0.0.1:" + strconv.Itoa(up[0])) {
		t.Error("the upstream listener is not up")
	}

	// A changed registration restarts the proxy with the new upstreams.
	changed := sidecar("web-sidecar-proxy", p, structs.Upstream{DestinationName: "db", LocalBindPort: up[1]})
	m.Sync([]*structs.NodeService{changed})
	info = m.Proxies()["web-sidecar-proxy"]
	if info.Upstreams["db"] == nil || info.Upstreams["api"] != nil {
		t.Fatalf("after the change: %+v", info)
	}
	if listening("127.0.0.1:" + strconv.Itoa(up[0])) {
		t.Error("the old upstream listener is still up")
	}

	// An external sidecar is not run, and its reservation is released.
	pe, err := m.ReservePort("ext-sidecar-proxy", "", 0, false)
	if err != nil {
		t.Fatal(err)
	}
	ext := sidecar("ext-sidecar-proxy", pe)
	ext.Proxy.Config = map[string]string{ExternalKey: "true"}
	m.Sync([]*structs.NodeService{changed, ext})
	if _, ok := m.Proxies()["ext-sidecar-proxy"]; ok {
		t.Error("the agent runs an external sidecar")
	}
	if listening("127.0.0.1:" + strconv.Itoa(pe)) {
		t.Error("the external sidecar's port is still held")
	}
	if next, err := m.ReservePort("other", "", 0, false); err == nil && next == pe {
		t.Error("the external sidecar's port was handed to another sidecar")
	}

	// Gone from the services: stopped, listeners closed.
	m.Sync(nil)
	if len(m.Proxies()) != 0 || listening("127.0.0.1:"+strconv.Itoa(p)) || listening("127.0.0.1:"+strconv.Itoa(up[1])) {
		t.Errorf("after removal: %+v", m.Proxies())
	}
}

func TestManager_StartFailureIsRetried(t *testing.T) {
	t.Parallel()
	m, _ := newManager(t, 2)
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := busy.Addr().(*net.TCPAddr).Port
	svc := sidecar("web-sidecar-proxy", port)
	m.Sync([]*structs.NodeService{svc})
	if _, failed := m.Failed()["web-sidecar-proxy"]; !failed || len(m.Proxies()) != 0 {
		t.Fatalf("a proxy whose port is taken: running %v, failed %v", m.Proxies(), m.Failed())
	}
	busy.Close()
	m.Sync([]*structs.NodeService{svc})
	if _, ok := m.Proxies()["web-sidecar-proxy"]; !ok || len(m.Failed()) != 0 {
		t.Fatalf("after the port was freed: running %v, failed %v", m.Proxies(), m.Failed())
	}
}
