package proxy

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/trellismesh/trellis/connect/chain"
	"github.com/trellismesh/trellis/connect/configentry"
	"github.com/trellismesh/trellis/internal/retry"
)

// meshOf is a client proxy (service web, upstream db) and the CA its
// backends are signed by.
type meshOf struct {
	ca       *testCA
	client   *Proxy
	clientID string
}

func newMesh(t *testing.T) *meshOf {
	t.Helper()
	c := newTestCA(t, "root-1")
	m := &meshOf{ca: c, clientID: proxyID(t, "web-sidecar")}
	m.client = startProxy(t, Config{ProxyID: m.clientID, Service: "web", Certs: newTestCerts(c.leaf("web", leafOpts{}), bundle(t, c)),
		Upstreams: []UpstreamConfig{{DestinationName: "db"}}})
	return m
}

// backend starts a proxy of service whose application says its name on
// every connection, then echoes; it returns the proxy's public address.
func (m *meshOf) backend(t *testing.T, service string) string {
	t.Helper()
	app := newAppServer(t, func(c net.Conn) {
		fmt.Fprintf(c, "%s\n", service)
		echo(c)
	})
	p := startProxy(t, Config{ProxyID: proxyID(t, service+"-sidecar"), Service: service, LocalAppAddr: app.addr(),
		Certs: newTestCerts(m.ca.leaf(service, leafOpts{}), bundle(t, m.ca))})
	return p.PublicAddr().String()
}

// conn connects through the client's upstream to db and returns the
// connection with the name of the backend that answered.
func (m *meshOf) conn(t *testing.T) (net.Conn, string, error) {
	t.Helper()
	c := dialUpstream(t, m.client, "db")
	line, err := bufio.NewReader(c).ReadString('\n') // the app writes nothing more until asked
	if err != nil {
		return c, "", fmt.Errorf("read the backend's name: %w", err)
	}
	return c, strings.TrimSpace(line), nil
}

func (m *meshOf) landsOn(t *testing.T, want string) net.Conn {
	t.Helper()
	c, got, err := m.conn(t)
	if err != nil {
		t.Fatal(err)
	}
	if got != want {
		t.Fatalf("the connection landed on %q, want %q", got, want)
	}
	if err := roundTrip(c, []byte("ping "+want)); err != nil {
		t.Fatalf("echo on %s: %v", want, err)
	}
	return c
}

// targetID is the ID Consul writes for a target of dc1.
func targetID(subset, service string) string {
	id := service + ".default.default." + testDC
	if subset != "" {
		id = subset + "." + id
	}
	return id
}

// testChain is the chain of db whose resolver leads to targets[0] with
// failover to the rest; a target is "service" or "subset.service".
func testChain(res chain.Resolver, lb *configentry.LoadBalancer, targets ...string) *chain.Chain {
	c := &chain.Chain{ServiceName: "db", Datacenter: testDC, Protocol: configentry.ProtocolTCP, Nodes: map[string]*chain.Node{}, Targets: map[string]*chain.Target{}}
	var ids []string
	for _, t := range targets {
		subset, service, ok := strings.Cut(t, ".")
		if !ok {
			subset, service = "", t
		}
		id := targetID(subset, service)
		ids = append(ids, id)
		c.Targets[id] = &chain.Target{ID: id, Service: service, ServiceSubset: subset, Datacenter: testDC, Name: service}
	}
	res.Target = ids[0]
	if len(ids) > 1 {
		res.Failover = &chain.Failover{Targets: ids[1:]}
	}
	c.StartNode = "resolver:" + ids[0]
	c.Nodes[c.StartNode] = &chain.Node{Type: chain.NodeResolver, Name: ids[0], Resolver: &res, LoadBalancer: lb}
	return c
}

// A redirect sends new connections to the other service; the established
// one goes on.
func TestProxy_Chain_redirect(t *testing.T) {
	t.Parallel()
	m := newMesh(t)
	db, v2 := m.backend(t, "db"), m.backend(t, "db-v2")
	m.client.SetChain("db", testChain(chain.Resolver{}, nil, "db"))
	m.client.SetTargetInstances("db", targetID("", "db"), []Instance{{Node: "n1", Addr: db}})
	old := m.landsOn(t, "db")

	m.client.SetChain("db", testChain(chain.Resolver{}, nil, "db-v2"))
	m.client.SetTargetInstances("db", targetID("", "db-v2"), []Instance{{Node: "n2", Addr: v2}})
	m.landsOn(t, "db-v2")
	m.landsOn(t, "db-v2")
	if err := roundTrip(old, []byte("still on db")); err != nil {
		t.Errorf("the connection established before the redirect: %v", err)
	}
	// Counted once the tunnel answered, which may be just after the bytes.
	retry.Run(t, func(r *retry.R) {
		if got := metricOf(m.clientID, "upstream.target_connections", "target="+targetID("", "db-v2")); got != 2 {
			r.Errorf("upstream.target_connections of db-v2 is %v, want 2", got)
		}
		if got := metricOf(m.clientID, "upstream.connections"); got != 3 {
			r.Errorf("upstream.connections is %v, want 3 (the key without target keeps counting)", got)
		}
	})

	// Back to no chain: the instances of SetInstances.
	m.client.SetChain("db", nil)
	m.client.SetInstances("db", []Instance{{Addr: db}})
	m.landsOn(t, "db")
}

// With no instance of the primary target, or none that can be reached,
// connections go to the failover target.
func TestProxy_Chain_failover(t *testing.T) {
	t.Parallel()
	m := newMesh(t)
	db, v2 := m.backend(t, "db"), m.backend(t, "db-v2")
	m.client.SetChain("db", testChain(chain.Resolver{}, nil, "db", "db-v2"))
	m.client.SetTargetInstances("db", targetID("", "db-v2"), []Instance{{Addr: v2}})
	m.landsOn(t, "db-v2") // the primary has no instance yet

	m.client.SetTargetInstances("db", targetID("", "db"), []Instance{{Addr: deadAddr(t)}})
	m.landsOn(t, "db-v2") // its instance is down: tried, then the failover
	if got := metricOf(m.clientID, "upstream.dial_failures"); got != 1 {
		t.Errorf("upstream.dial_failures is %v, want 1", got)
	}

	m.client.SetTargetInstances("db", targetID("", "db"), []Instance{{Addr: db}})
	m.landsOn(t, "db")
	// Instances of a target the chain does not name are ignored.
	m.client.SetTargetInstances("db", targetID("", "cache"), []Instance{{Addr: v2}})
	m.landsOn(t, "db")
}

// A target whose instance does not answer within the connect timeout is
// given up on, for the failover.
func TestProxy_Chain_connectTimeout(t *testing.T) {
	t.Parallel()
	m := newMesh(t)
	v2 := m.backend(t, "db-v2")
	// A listener that never accepts: the TCP connection is made (by the
	// kernel), the TLS handshake never answered.
	silent, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	c := testChain(chain.Resolver{ConnectTimeout: configentry.Duration(200 * time.Millisecond)}, nil, "db", "db-v2")
	// The failover target's own bound is generous: a real handshake under
	// -race on a loaded machine can take longer than 200ms.
	c.Targets[targetID("", "db-v2")].ConnectTimeout = configentry.Duration(10 * time.Second)
	m.client.SetChain("db", c)
	m.client.SetTargetInstances("db", targetID("", "db"), []Instance{{Addr: silent.Addr().String()}})
	m.client.SetTargetInstances("db", targetID("", "db-v2"), []Instance{{Addr: v2}})
	start := time.Now()
	m.landsOn(t, "db-v2")
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("took %s: the 200ms connect timeout did not bound the dial (DialTimeout is 10s)", d)
	}
	if got := metricOf(m.clientID, "upstream.tls_handshake_failures"); got != 1 {
		t.Errorf("upstream.tls_handshake_failures is %v, want 1", got)
	}
}

// With a DrainTimeout, a connection the chain no longer leads to is closed
// after it; a connection that stays current is not.
func TestProxy_Chain_drainTimeout(t *testing.T) {
	t.Parallel()
	m := newMesh(t)
	db, v2 := m.backend(t, "db"), m.backend(t, "db-v2")
	drain := chain.Resolver{DrainTimeout: configentry.Duration(300 * time.Millisecond)}
	m.client.SetChain("db", testChain(drain, nil, "db"))
	m.client.SetTargetInstances("db", targetID("", "db"), []Instance{{Addr: db}})
	old := m.landsOn(t, "db")

	// A change that keeps the target does not drain.
	m.client.SetChain("db", testChain(chain.Resolver{DrainTimeout: drain.DrainTimeout, ConnectTimeout: configentry.Duration(time.Second)}, nil, "db"))

	m.client.SetChain("db", testChain(drain, nil, "db-v2"))
	m.client.SetTargetInstances("db", targetID("", "db-v2"), []Instance{{Addr: v2}})
	kept := m.landsOn(t, "db-v2")
	if err := expectClosed(old); err != nil {
		t.Fatalf("the connection to db after the redirect: %v", err)
	}
	waitMetric(t, m.clientID, "upstream.drained", 1)
	if err := roundTrip(kept, []byte("db-v2 is current")); err != nil {
		t.Errorf("a current connection: %v", err)
	}

	// An instance that leaves its target drains too.
	m.client.SetTargetInstances("db", targetID("", "db-v2"), nil)
	if err := expectClosed(kept); err != nil {
		t.Fatalf("the connection to an instance that left: %v", err)
	}
	if got := metricOf(m.clientID, "upstream.drained"); got != 2 {
		t.Errorf("upstream.drained is %v, want 2", got)
	}
}

// A drain stops when the connection becomes current again before its
// timeout.
func TestProxy_Chain_drainStopsWhenCurrentAgain(t *testing.T) {
	t.Parallel()
	m := newMesh(t)
	db := m.backend(t, "db")
	drain := chain.Resolver{DrainTimeout: configentry.Duration(time.Hour)}
	m.client.SetChain("db", testChain(drain, nil, "db"))
	m.client.SetTargetInstances("db", targetID("", "db"), []Instance{{Addr: db}})
	c := m.landsOn(t, "db")
	u := m.client.upstreams["db"]
	draining := func() int {
		u.mu.Lock()
		defer u.mu.Unlock()
		n := 0
		for uc := range u.conns {
			if uc.timer != nil {
				n++
			}
		}
		return n
	}
	m.client.SetTargetInstances("db", targetID("", "db"), nil)
	if n := draining(); n != 1 {
		t.Fatalf("%d connections draining after the instance left, want 1", n)
	}
	m.client.SetTargetInstances("db", targetID("", "db"), []Instance{{Addr: db}})
	if n := draining(); n != 0 {
		t.Fatalf("%d connections draining after the instance came back, want 0", n)
	}
	if err := roundTrip(c, []byte("kept")); err != nil {
		t.Error(err)
	}
}

// The instances of a target must carry the target's identity: an instance
// of db-v2 that presents db's certificate is refused.
func TestProxy_Chain_targetIdentityEnforced(t *testing.T) {
	t.Parallel()
	m := newMesh(t)
	db := m.backend(t, "db")
	m.client.SetChain("db", testChain(chain.Resolver{}, nil, "db-v2"))
	// The Service given is overridden by the target's Name.
	m.client.SetTargetInstances("db", targetID("", "db-v2"), []Instance{{Addr: db, Service: "db"}})
	c := dialUpstream(t, m.client, "db")
	if err := expectClosed(c); err != nil {
		t.Fatal(err)
	}
	if got := metricOf(m.clientID, "upstream.tls_handshake_failures"); got != 1 {
		t.Errorf("upstream.tls_handshake_failures is %v, want 1", got)
	}
}

// A chain with a subset target and a router in front still leads tcp to
// the default route's resolver.
func TestTCPTargets(t *testing.T) {
	t.Parallel()
	c := testChain(chain.Resolver{}, nil, "v1.db", "db-v2")
	res := c.StartNode
	c.Nodes["router:db"] = &chain.Node{Type: chain.NodeRouter, Name: "db", Routes: []*chain.Route{{NextNode: "nowhere"}, {NextNode: "splitter:db"}}}
	c.Nodes["splitter:db"] = &chain.Node{Type: chain.NodeSplitter, Name: "db", Splits: []*chain.Split{{Weight: 10, NextNode: "nowhere"}, {Weight: 90, NextNode: res}}}
	c.StartNode = "router:db"
	_, primary, failover, err := tcpTargets(c)
	if err != nil || primary != "v1."+targetID("", "db") || len(failover) != 1 || failover[0] != targetID("", "db-v2") {
		t.Fatalf("tcpTargets: %q %q %v", primary, failover, err)
	}
	c.Nodes["splitter:db"].Splits[1].NextNode = "router:db"
	if _, _, _, err := tcpTargets(c); err == nil {
		t.Error("a loop was followed")
	}
	delete(c.Nodes, "router:db")
	if _, _, _, err := tcpTargets(c); err == nil {
		t.Error("a missing start node was accepted")
	}
}

func TestBalancer(t *testing.T) {
	t.Parallel()
	eps := []*endpoint{{key: "a"}, {key: "b"}, {key: "c"}, {key: "d"}}
	set := func() *targetSet {
		ts := &targetSet{endpoints: eps, byKey: map[string]*endpoint{}}
		for _, ep := range eps {
			ts.byKey[ep.key] = ep
		}
		return ts
	}

	t.Run("round_robin", func(t *testing.T) {
		b := newBalancer(&configentry.LoadBalancer{Policy: configentry.LBRoundRobin})
		ts := set()
		var got []string
		for range 8 {
			got = append(got, b.choose(ts, eps, nil).key)
		}
		if strings.Join(got, "") != "abcdabcd" {
			t.Errorf("round robin went %v", got)
		}
	})

	t.Run("least_request choice count", func(t *testing.T) {
		b := newBalancer(&configentry.LoadBalancer{Policy: configentry.LBLeastRequest, LeastRequestConfig: &configentry.LeastRequestConfig{ChoiceCount: 4}})
		for i, ep := range eps {
			ep.active.Store(int64(10 - i))
		}
		defer func() {
			for _, ep := range eps {
				ep.active.Store(0)
			}
		}()
		for range 50 {
			if got := b.choose(set(), eps, nil); got != eps[3] {
				t.Fatalf("comparing all four picked %s, want the least busy d", got.key)
			}
		}
	})

	t.Run("ring_hash by source IP", func(t *testing.T) {
		b := newBalancer(&configentry.LoadBalancer{Policy: configentry.LBRingHash, HashPolicies: []configentry.HashPolicy{{Field: "header", FieldValue: "x"}, {SourceIP: true}}})
		if !b.sourceIP || b.ringSize != defaultRingSize {
			t.Fatalf("balancer %+v", b)
		}
		ts := set()
		clients := map[string]*endpoint{}
		spread := map[*endpoint]int{}
		for i := range 200 {
			ip := fmt.Sprintf("10.0.%d.%d", i/250, i%250+1)
			a := &net.TCPAddr{IP: net.ParseIP(ip), Port: 40000 + i}
			ep := b.choose(ts, eps, a)
			clients[ip] = ep
			spread[ep]++
			a.Port++
			if again := b.choose(ts, eps, a); again != ep {
				t.Fatalf("client %s moved from %s to %s", ip, ep.key, again.key)
			}
		}
		for _, ep := range eps {
			if spread[ep] < 20 {
				t.Errorf("instance %s got %d of 200 clients", ep.key, spread[ep])
			}
		}
		// Without c, only c's clients move.
		without := []*endpoint{eps[0], eps[1], eps[3]}
		for ip, was := range clients {
			now := b.choose(ts, without, &net.TCPAddr{IP: net.ParseIP(ip)})
			if was != eps[2] && now != was {
				t.Errorf("client %s moved from %s to %s though its instance stayed", ip, was.key, now.key)
			}
		}
	})

	t.Run("ring size", func(t *testing.T) {
		b := newBalancer(&configentry.LoadBalancer{Policy: configentry.LBMaglev, RingHashConfig: &configentry.RingHashConfig{MinimumRingSize: 1 << 30}})
		if b.policy != configentry.LBRingHash || b.ringSize != maxRingSize || b.sourceIP {
			t.Errorf("balancer %+v", b)
		}
		b = newBalancer(&configentry.LoadBalancer{Policy: configentry.LBRingHash, RingHashConfig: &configentry.RingHashConfig{MinimumRingSize: 64, MaximumRingSize: 16}})
		if b.ringSize != 16 {
			t.Errorf("ring size %d, want the maximum 16", b.ringSize)
		}
	})
}

// Close stops the drains that are running.
func TestProxy_Chain_closeStopsDrains(t *testing.T) {
	t.Parallel()
	m := newMesh(t)
	db := m.backend(t, "db")
	m.client.SetChain("db", testChain(chain.Resolver{DrainTimeout: configentry.Duration(time.Hour)}, nil, "db"))
	m.client.SetTargetInstances("db", targetID("", "db"), []Instance{{Addr: db}})
	c := m.landsOn(t, "db")
	m.client.SetChain("db", testChain(chain.Resolver{DrainTimeout: configentry.Duration(time.Hour)}, nil, "db-v2"))
	if err := m.client.Close(); err != nil {
		t.Fatal(err)
	}
	_, _ = io.ReadAll(c) // ends: Close closed the application connections
	u := m.client.upstreams["db"]
	retry.Run(t, func(r *retry.R) {
		u.mu.Lock()
		defer u.mu.Unlock()
		if len(u.conns) != 0 {
			r.Fatalf("%d connections still tracked after Close", len(u.conns))
		}
	})
}

// A connection made before the upstream had a chain stays when the chain
// leads to its instance, and drains when it does not.
func TestProxy_Chain_connectionsFromBeforeTheChain(t *testing.T) {
	t.Parallel()
	m := newMesh(t)
	db, v2 := m.backend(t, "db"), m.backend(t, "db-v2")
	m.client.SetInstances("db", []Instance{{Addr: db}})
	old := m.landsOn(t, "db")

	drain := chain.Resolver{DrainTimeout: configentry.Duration(100 * time.Millisecond)}
	m.client.SetChain("db", testChain(drain, nil, "db"))
	m.client.SetTargetInstances("db", targetID("", "db"), []Instance{{Addr: db}})
	m.landsOn(t, "db")
	u := m.client.upstreams["db"]
	u.mu.Lock()
	for c := range u.conns {
		if c.timer != nil {
			t.Errorf("a connection to %s drains under a chain that leads to it", c.key)
		}
	}
	u.mu.Unlock()
	if err := roundTrip(old, []byte("kept")); err != nil {
		t.Fatal(err)
	}

	m.client.SetChain("db", testChain(drain, nil, "db-v2"))
	m.client.SetTargetInstances("db", targetID("", "db-v2"), []Instance{{Addr: v2}})
	if err := expectClosed(old); err != nil {
		t.Fatalf("the connection from before the chain, after a redirect: %v", err)
	}
}

// A resolver's connect timeout longer than the proxy's DialTimeout is the
// bound of the dial, and of the wait for the destination's answer: an
// instance slower than DialTimeout (and than twice it) is reached.
func TestProxy_Chain_connectTimeoutAboveDialTimeout(t *testing.T) {
	t.Parallel()
	c := newTestCA(t, "root-1")
	client := startProxy(t, Config{ProxyID: proxyID(t, "web-sidecar"), Service: "web", Certs: newTestCerts(c.leaf("web", leafOpts{}), bundle(t, c)),
		Upstreams: []UpstreamConfig{{DestinationName: "db"}}, DialTimeout: 150 * time.Millisecond})
	m := &meshOf{ca: c, client: client}
	db := m.backend(t, "db")
	// A relay that holds what the destination sends 400ms, each chunk: a
	// slow network, as the client proxy sees it. The handshake takes more
	// than DialTimeout, and the answer to the CONNECT more than twice it.
	relay, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var open []net.Conn
	var done bool
	track := func(c net.Conn) {
		mu.Lock()
		defer mu.Unlock()
		if done {
			c.Close()
			return
		}
		open = append(open, c)
	}
	// Before the proxies close (cleanups run last first): the client's
	// pooled tunnel still holds a relayed connection.
	t.Cleanup(func() {
		relay.Close()
		mu.Lock()
		done = true
		for _, c := range open {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	wg.Go(func() {
		for {
			in, err := relay.Accept()
			if err != nil {
				return
			}
			track(in)
			wg.Go(func() {
				defer in.Close()
				out, err := net.Dial("tcp", db)
				if err != nil {
					return
				}
				track(out)
				defer out.Close()
				wg.Go(func() { io.Copy(out, in); out.(*net.TCPConn).CloseWrite() })
				delayedCopy(t.Context(), &wg, in, out, 400*time.Millisecond)
				in.(*net.TCPConn).CloseWrite()
			})
		}
	})
	ch := testChain(chain.Resolver{ConnectTimeout: configentry.Duration(10 * time.Second)}, nil, "db")
	client.SetChain("db", ch)
	client.SetTargetInstances("db", targetID("", "db"), []Instance{{Addr: relay.Addr().String()}})
	m.landsOn(t, "db").Close()
}

// delayedCopy copies src to dst, each chunk delay after it was read (a
// one-way latency), until src ends or ctx does. Its reader is one of wg's.
func delayedCopy(ctx context.Context, wg *sync.WaitGroup, dst io.Writer, src io.Reader, delay time.Duration) {
	type chunk struct {
		at   time.Time
		data []byte
	}
	chunks := make(chan chunk, 256)
	wg.Go(func() {
		defer close(chunks)
		for {
			buf := make([]byte, 32<<10)
			n, err := src.Read(buf)
			if n > 0 {
				select {
				case chunks <- chunk{time.Now(), buf[:n]}:
				case <-ctx.Done():
					return
				}
			}
			if err != nil {
				return
			}
		}
	})
	for c := range chunks {
		t := time.NewTimer(time.Until(c.at.Add(delay)))
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return
		}
		if _, err := dst.Write(c.data); err != nil {
			return
		}
	}
}
