package agent_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	consulapi "github.com/hashicorp/consul/api"

	"github.com/trellismesh/trellis/internal/retry"
	"github.com/trellismesh/trellis/internal/testcluster"
	"github.com/trellismesh/trellis/internal/testutil"
	"github.com/trellismesh/trellis/raftstore/structs"
)

// registerWithSidecar registers service name on a with a sidecar; up maps
// upstream destinations to local ports.
func registerWithSidecar(t *testing.T, a *testcluster.Agent, name string, port int, up map[string]int) {
	t.Helper()
	sc := &consulapi.AgentServiceRegistration{Proxy: &consulapi.AgentServiceConnectProxyConfig{}}
	for dest, p := range up {
		sc.Proxy.Upstreams = append(sc.Proxy.Upstreams, consulapi.Upstream{DestinationName: dest, LocalBindPort: p})
	}
	reg := &consulapi.AgentServiceRegistration{Name: name, Port: port, Connect: &consulapi.AgentServiceConnect{SidecarService: sc}}
	if err := a.Client.Agent().ServiceRegister(reg); err != nil {
		t.Fatalf("register %s on %s: %v", name, a.Config.NodeName, err)
	}
}

// startEchoApp serves TCP echo on a free loopback port.
func startEchoApp(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	conns := map[net.Conn]bool{}
	var mu sync.Mutex
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
				_, _ = io.Copy(c, c)
				c.Close()
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
	return ln.Addr().(*net.TCPAddr).Port
}

// TestMesh_FailoverAcrossAgents runs api on two client agents and web on a
// third; stopping one api agent without a leave loses no request: a failed
// dial is retried on the other instance.
func TestMesh_FailoverAcrossAgents(t *testing.T) {
	t.Parallel()
	c := testcluster.StartCluster(t, testcluster.ClusterOptions{Servers: 1, Clients: 3})
	up := testutil.FreePorts(t, 1)[0]
	registerWithSidecar(t, c.Clients[1], "api", startHTTPApp(t, "api-1"), nil)
	registerWithSidecar(t, c.Clients[2], "api", startHTTPApp(t, "api-2"), nil)
	registerWithSidecar(t, c.Clients[0], "web", startHTTPApp(t, "web"), map[string]int{"api": up})
	upstream := fmt.Sprintf("127.0.0.1:%d", up)

	seen := map[string]bool{}
	retry.RunWith(&retry.Timer{Timeout: 30 * time.Second, Wait: 10 * time.Millisecond}, t, func(r *retry.R) {
		body, err := get(upstream, "/")
		if err != nil {
			r.Fatal(err)
		}
		seen[strings.Fields(body)[0]] = true
		if !seen["api-1"] || !seen["api-2"] {
			r.Fatalf("instances seen so far: %v", seen)
		}
	})

	c.Clients[1].Stop() // no leave: to the others it fails
	start := time.Now()
	for i := range 40 {
		body, err := get(upstream, fmt.Sprintf("/after/%d", i))
		if err != nil || !strings.HasPrefix(body, "api-2 ") {
			t.Fatalf("request %d after api-1's agent stopped: %q, %v", i, body, err)
		}
	}
	t.Logf("40 requests after the failure, all served by api-2, in %s", time.Since(start))
}

// TestMesh_DenyClosesEstablishedConnections holds TCP connections from two
// sources to one destination; a deny intention for one source closes its
// connection, the other goes on.
func TestMesh_DenyClosesEstablishedConnections(t *testing.T) {
	t.Parallel()
	c := testcluster.StartCluster(t, testcluster.ClusterOptions{Servers: 1, Clients: 2})
	ports := testutil.FreePorts(t, 2)
	registerWithSidecar(t, c.Clients[1], "echo", startEchoApp(t), nil)
	registerWithSidecar(t, c.Clients[0], "web", startHTTPApp(t, "web"), map[string]int{"echo": ports[0]})
	registerWithSidecar(t, c.Clients[0], "admin", startHTTPApp(t, "admin"), map[string]int{"echo": ports[1]})

	dialEcho := func(port int) net.Conn {
		var conn net.Conn
		retry.RunWith(&retry.Timer{Timeout: 30 * time.Second, Wait: 20 * time.Millisecond}, t, func(r *retry.R) {
			cn, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), time.Second)
			if err != nil {
				r.Fatal(err)
			}
			if err := echoOnce(cn, "ping"); err != nil {
				cn.Close()
				r.Fatal(err)
			}
			conn = cn
		})
		t.Cleanup(func() { conn.Close() })
		return conn
	}
	web, admin := dialEcho(ports[0]), dialEcho(ports[1])

	start := time.Now()
	if _, err := c.Servers[0].Client.Connect().IntentionUpsert(&consulapi.Intention{SourceName: "web", DestinationName: "echo", Action: consulapi.IntentionActionDeny}, nil); err != nil {
		t.Fatal(err)
	}
	web.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.Copy(io.Discard, web); err != nil && !isClosed(err) {
		t.Fatalf("web's connection after the deny: %v (want it closed)", err)
	}
	took := time.Since(start)
	if took > 9*time.Second {
		t.Fatalf("web's connection was not closed by the deny")
	}
	t.Logf("web's established connection closed %s after the deny was written", took)
	if err := echoOnce(admin, "still here"); err != nil {
		t.Errorf("admin's connection broke too: %v", err)
	}
	// New connections from web are refused.
	cn, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", ports[0]), time.Second)
	if err == nil {
		defer cn.Close()
		if err := echoOnce(cn, "x"); err == nil {
			t.Error("a new connection from web passed after the deny")
		}
	}
}

func isClosed(err error) bool {
	s := err.Error()
	return strings.Contains(s, "reset") || strings.Contains(s, "closed") || strings.Contains(s, "EOF")
}

// echoOnce writes msg and reads it back.
func echoOnce(c net.Conn, msg string) error {
	c.SetDeadline(time.Now().Add(3 * time.Second))
	defer c.SetDeadline(time.Time{})
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

// TestMesh_RotationUnderTraffic rotates the CA root while requests flow
// through a proxy pair on two agents, on new connections and on one
// keep-alive connection, and sees none fail; the proxies end up with leaves
// of the new root and the old root is dropped.
func TestMesh_RotationUnderTraffic(t *testing.T) {
	t.Parallel()
	// This test is about the rotation, not failure detection: a false
	// alarm of -dev's quick detector (an agent of this test process paused
	// past its 100 ms probe timeout on a loaded machine) would make api
	// critical and fail requests for reasons of its own. The agents give
	// the detector more room, as gossip_lan lets users on busy machines do.
	calmGossip := func(_ int, o *testcluster.Options) {
		o.HCL = "gossip_lan {\n  probe_timeout = \"200ms\"\n  suspicion_mult = 6\n}\n"
	}
	c := testcluster.StartCluster(t, testcluster.ClusterOptions{Servers: 1, Clients: 2, Modify: calmGossip})
	up := testutil.FreePorts(t, 1)[0]
	registerWithSidecar(t, c.Clients[1], "api", startHTTPApp(t, "api"), nil)
	registerWithSidecar(t, c.Clients[0], "web", startHTTPApp(t, "web"), map[string]int{"api": up})
	upstream := fmt.Sprintf("127.0.0.1:%d", up)
	retry.RunWith(&retry.Timer{Timeout: 30 * time.Second, Wait: 20 * time.Millisecond}, t, func(r *retry.R) {
		if body, err := get(upstream, "/"); err != nil || body != "api /" {
			r.Fatalf("%q, %v", body, err)
		}
	})

	ctx, cancel := context.WithCancel(t.Context())
	var ok, failed atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	fail := func(err error) {
		failed.Add(1)
		firstErr.CompareAndSwap(nil, err)
	}
	for range 2 { // new connection per request
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				if body, err := get(upstream, "/new"); err != nil || body != "api /new" {
					fail(fmt.Errorf("new connection: %q, %v", body, err))
					continue
				}
				ok.Add(1)
			}
		}()
	}
	wg.Add(1)
	go func() { // one keep-alive connection
		defer wg.Done()
		cl := &http.Client{Transport: &http.Transport{MaxConnsPerHost: 1}}
		defer cl.CloseIdleConnections()
		for ctx.Err() == nil {
			resp, err := cl.Get("http://" + upstream + "/keep")
			if err != nil {
				fail(fmt.Errorf("keep-alive: %v", err))
				continue
			}
			b, _ := io.ReadAll(bufio.NewReader(resp.Body))
			resp.Body.Close()
			if string(b) != "api /keep" {
				fail(fmt.Errorf("keep-alive body %q", b))
				continue
			}
			ok.Add(1)
		}
	}()

	server := c.Servers[0]
	var before structs.IndexedCARoots
	if err := server.RPC(ctx, structs.MethodCARoots, &structs.DCSpecificRequest{}, &before); err != nil {
		t.Fatal(err)
	}
	if err := server.RPC(ctx, structs.MethodCAConfigurationSet, &structs.CARequest{Rotate: true}, &structs.WriteReply{}); err != nil {
		t.Fatal(err)
	}
	var after structs.IndexedCARoots
	retry.RunWith(&retry.Timer{Timeout: 60 * time.Second, Wait: 100 * time.Millisecond}, t, func(r *retry.R) {
		after = structs.IndexedCARoots{}
		if err := server.RPC(ctx, structs.MethodCARoots, &structs.DCSpecificRequest{}, &after); err != nil {
			r.Fatal(err)
		}
		if after.ActiveRootID == before.ActiveRootID || len(after.Roots) != 1 {
			r.Fatalf("%d roots, active %s (old %s): waiting for the old root to be dropped", len(after.Roots), after.ActiveRootID, before.ActiveRootID)
		}
	})
	for _, a := range []*testcluster.Agent{c.Clients[0], c.Clients[1]} {
		for _, svc := range []string{"web", "api"} {
			leaf, err := a.ConnectLeaf(ctx, svc, 0, 0)
			if svc == "api" && a == c.Clients[0] || svc == "web" && a == c.Clients[1] {
				continue
			}
			if err != nil || leaf.RootID != after.ActiveRootID {
				t.Errorf("%s's leaf of %s: root %v, %v (want the new %s)", a.Config.NodeName, svc, leaf, err, after.ActiveRootID)
			}
		}
	}
	// Some more traffic on the new root alone.
	n := ok.Load()
	retry.RunWith(&retry.Timer{Timeout: 10 * time.Second, Wait: 20 * time.Millisecond}, t, func(r *retry.R) {
		if ok.Load() < n+50 {
			r.Fatalf("%d requests since the old root went", ok.Load()-n)
		}
	})
	cancel()
	wg.Wait()
	t.Logf("%d requests during the rotation, %d failed", ok.Load(), failed.Load())
	if failed.Load() > 0 {
		t.Fatalf("%d requests failed during the rotation; first: %v", failed.Load(), firstErr.Load())
	}
}
