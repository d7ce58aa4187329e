package proxymgr

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/trellismesh/trellis/agent/mesh"
	"github.com/trellismesh/trellis/connect/configentry"
	"github.com/trellismesh/trellis/connect/proxy"
	"github.com/trellismesh/trellis/internal/retry"
	"github.com/trellismesh/trellis/internal/testutil"
	"github.com/trellismesh/trellis/raftstore"
	"github.com/trellismesh/trellis/raftstore/structs"
)

// namedApp is a TCP application that says its name on every connection,
// then echoes.
func namedApp(t *testing.T, name string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	conns := map[net.Conn]bool{}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns[c] = true
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				fmt.Fprintf(c, "%s\n", name)
				io.Copy(c, c)
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().String()
}

// backend runs a proxy of service in front of a named application and
// registers it in the catalog as a sidecar on its own node.
func backend(t *testing.T, s *raftstore.Server, c *mesh.Cache, service string) {
	t.Helper()
	certs, err := c.CertSource(service)
	if err != nil {
		t.Fatal(err)
	}
	p, err := proxy.New(proxy.Config{ProxyID: service + "-sidecar-proxy", Service: service, PublicAddr: "127.0.0.1:0",
		LocalAppAddr: namedApp(t, service), Certs: certs, Authorizer: c.Authorizer(service), Logger: testutil.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	port := p.PublicAddr().(*net.TCPAddr).Port
	if err := s.RPC(t.Context(), structs.MethodCatalogRegister, &structs.RegisterRequest{Node: "node-" + service, Address: "127.0.0.1",
		Service: &structs.NodeService{ID: service + "-sidecar-proxy", Service: service + "-sidecar-proxy", Kind: structs.ServiceKindConnectProxy, Port: port,
			Proxy: &structs.ConnectProxyConfig{DestinationServiceName: service, DestinationServiceID: service}},
	}, &structs.WriteReply{}); err != nil {
		t.Fatal(err)
	}
}

// reach connects to addr and reads the name of the application that
// answered.
func reach(addr string) (net.Conn, string, error) {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return nil, "", err
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		c.Close()
		return nil, "", err
	}
	return c, strings.TrimSpace(line), nil
}

func echoes(c net.Conn, msg string) error {
	if _, err := io.WriteString(c, msg); err != nil {
		return err
	}
	buf := make([]byte, len(msg))
	if _, err := io.ReadFull(c, buf); err != nil {
		return err
	}
	if string(buf) != msg {
		return fmt.Errorf("echo %q, want %q", buf, msg)
	}
	return nil
}

func writeEntry(t *testing.T, s *raftstore.Server, e configentry.Entry) {
	t.Helper()
	var reply structs.ConfigEntryApplyReply
	if err := s.RPC(t.Context(), structs.MethodConfigEntryApply, &structs.ConfigEntryRequest{Op: "upsert", Entry: configentry.Envelope{Entry: e}}, &reply); err != nil {
		t.Fatalf("write %s/%s: %v", e.GetKind(), e.GetName(), err)
	}
}

// The user story: the application reaches db through its upstream; a
// service-resolver redirect sends every new connection to db-v2 without
// touching the application; the established connection goes on until a
// drain timeout closes it.
func TestManager_UpstreamFollowsTheDiscoveryChain(t *testing.T) {
	t.Parallel()
	m, _, s := newManagerOf(t, 2, true)
	c := m.cfg.Mesh
	backend(t, s, c, "db")
	backend(t, s, c, "db-v2")

	port, err := m.ReservePort("web-sidecar-proxy", "", 0, false)
	if err != nil {
		t.Fatal(err)
	}
	up := testutil.FreePorts(t, 1)[0]
	if err := apply(m, sidecar("web-sidecar-proxy", port, structs.Upstream{DestinationName: "db", LocalBindPort: up})); err != nil {
		t.Fatalf("the sidecar did not start: %v", err)
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(up))

	landsOn := func(r *retry.R, want string) net.Conn {
		conn, got, err := reach(addr)
		if err != nil {
			r.Fatalf("through the upstream: %v", err)
		}
		if got != want {
			conn.Close()
			r.Fatalf("landed on %s, want %s", got, want)
		}
		return conn
	}
	var old net.Conn
	retry.Run(t, func(r *retry.R) { old = landsOn(r, "db") })
	defer old.Close()
	if err := echoes(old, "to db"); err != nil {
		t.Fatal(err)
	}

	writeEntry(t, s, &configentry.ServiceResolverConfigEntry{Kind: configentry.ServiceResolver, Name: "db",
		Redirect: &configentry.ServiceResolverRedirect{Service: "db-v2"}})
	// Until the proxy has the new chain connections go to db; never
	// nowhere (the chain waits for the first endpoints of db-v2).
	var broken error
	retry.Run(t, func(r *retry.R) {
		conn, got, err := reach(addr)
		if err != nil {
			broken = err // final: ends the retries
			return
		}
		conn.Close()
		if got != "db-v2" {
			r.Fatalf("landed on %s, want db-v2", got)
		}
	})
	if broken != nil {
		t.Fatalf("a connection during the switch to db-v2 failed: %v", broken)
	}
	for range 3 {
		conn, got, err := reach(addr)
		if err != nil || got != "db-v2" {
			t.Fatalf("after the redirect: %q, %v", got, err)
		}
		conn.Close()
	}
	if err := echoes(old, "still to db"); err != nil {
		t.Fatalf("the connection established before the redirect: %v", err)
	}

	// A drain timeout on the resolver the chain now ends at closes the
	// connection to the old backend.
	writeEntry(t, s, &configentry.ServiceResolverConfigEntry{Kind: configentry.ServiceResolver, Name: "db-v2",
		DrainTimeout: configentry.Duration(200 * time.Millisecond)})
	old.SetReadDeadline(time.Now().Add(10 * time.Second))
	start := time.Now()
	if n, err := old.Read(make([]byte, 1)); err == nil {
		t.Fatalf("read %d bytes on the drained connection, want it closed", n)
	} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatal("the connection to the old backend was not drained within 10s")
	}
	t.Logf("drained %s after the entry was written", time.Since(start))

	// The sidecar goes: every watch is released with it (goleak checks
	// the goroutines at the end).
	m.Stop("web-sidecar-proxy")
	if len(m.Proxies()) != 0 {
		t.Fatalf("proxies after removal: %v", m.Proxies())
	}
}

// A follower watches the endpoints of the chain's tcp targets, and only
// those: a failover target is watched while the resolver names it.
func TestFollower_watchesTheTargetsOfTheChain(t *testing.T) {
	t.Parallel()
	_, _, s := newManagerOf(t, 1, true)
	c := mesh.New(mesh.Config{RPC: s, NodeName: "n1", Datacenter: "dc1", DefaultAllow: true, Logger: testutil.Logger(t)})
	t.Cleanup(c.Close)
	backend(t, s, c, "db-v2")
	certs, err := c.CertSource("web")
	if err != nil {
		t.Fatal(err)
	}
	p, err := proxy.New(proxy.Config{ProxyID: "web-sidecar-proxy", Service: "web", PublicAddr: "127.0.0.1:0", LocalAppAddr: "127.0.0.1:1",
		Certs: certs, Authorizer: c.Authorizer("web"), Upstreams: []proxy.UpstreamConfig{{DestinationName: "db"}}, Logger: testutil.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	writeEntry(t, s, &configentry.ServiceResolverConfigEntry{Kind: configentry.ServiceResolver, Name: "db",
		Failover: map[string]configentry.ServiceResolverFailover{"*": {Service: "db-v2"}}})
	f, err := follow(c, p, "db", testutil.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	watching := func() []string {
		f.mu.Lock()
		defer f.mu.Unlock()
		var ids []string
		for id := range f.targets {
			ids = append(ids, id)
		}
		slices.Sort(ids)
		return ids
	}
	// db has no instance: connections fail over to db-v2.
	retry.Run(t, func(r *retry.R) {
		conn, got, err := reach(p.UpstreamAddr("db").String())
		if err != nil {
			r.Fatal(err)
		}
		conn.Close()
		if got != "db-v2" {
			r.Fatalf("landed on %s, want db-v2", got)
		}
	})
	if got := watching(); !slices.Equal(got, []string{"db-v2.default.default.dc1", "db.default.default.dc1"}) {
		t.Errorf("watching %v", got)
	}

	writeEntry(t, s, &configentry.ServiceResolverConfigEntry{Kind: configentry.ServiceResolver, Name: "db"})
	retry.Run(t, func(r *retry.R) {
		if got := watching(); !slices.Equal(got, []string{"db.default.default.dc1"}) {
			r.Fatalf("watching %v after the failover was removed", got)
		}
	})
	retry.Run(t, func(r *retry.R) {
		if conn, got, err := reach(p.UpstreamAddr("db").String()); err == nil {
			conn.Close()
			r.Fatalf("landed on %s without a failover and with no instance of db", got)
		}
	})

	f.close()
	f.close() // idempotent
	if got := watching(); len(got) != 0 {
		t.Errorf("watching %v after close", got)
	}
}
