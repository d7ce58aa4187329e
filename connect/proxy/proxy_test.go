package proxy

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/trellismesh/trellis/connect"
	"github.com/trellismesh/trellis/internal/retry"
	"github.com/trellismesh/trellis/internal/testutil"
)

func TestProxy_Traffic_concurrentLargePayloads(t *testing.T) {
	t.Parallel()
	pr := newPair(t, nil)

	const conns = 8
	const size = 3 << 20
	var wg sync.WaitGroup
	errs := make(chan error, conns)
	for i := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- func() error {
				c, err := net.DialTimeout("tcp", pr.client.UpstreamAddr("db").String(), 5*time.Second)
				if err != nil {
					return err
				}
				defer c.Close()
				c.SetDeadline(time.Now().Add(20 * time.Second))
				payload := make([]byte, size+i)
				rand.Read(payload)
				writeErr := make(chan error, 1)
				go func() {
					_, err := c.Write(payload)
					if err == nil {
						err = c.(*net.TCPConn).CloseWrite()
					}
					writeErr <- err
				}()
				got, err := io.ReadAll(c) // until the echo half-closes after our half-close
				if err != nil {
					return fmt.Errorf("connection %d: read: %w", i, err)
				}
				if err := <-writeErr; err != nil {
					return fmt.Errorf("connection %d: write: %w", i, err)
				}
				if !bytes.Equal(got, payload) {
					return fmt.Errorf("connection %d: echo of %d bytes differs from the %d sent", i, len(got), len(payload))
				}
				return nil
			}()
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	if t.Failed() {
		return
	}

	// Every connection rode one pooled tunnel connection.
	if n := len(pr.client.pool.all()); n != 1 {
		t.Errorf("client pool holds %d tunnel connections, want 1", n)
	}
	total := float64(conns*size + conns*(conns-1)/2)
	waitMetric(t, pr.serverID, "inbound.bytes_in", total)
	waitMetric(t, pr.serverID, "inbound.bytes_out", total)
	waitMetric(t, pr.clientID, "upstream.bytes_sent", total)
	waitMetric(t, pr.clientID, "upstream.bytes_received", total)
	waitMetric(t, pr.clientID, "upstream.connections", conns, "upstream=db")
	waitMetric(t, pr.clientID, "upstream.closed", conns, "upstream=db")
	waitMetric(t, pr.serverID, "inbound.connections", conns, "source=web")
	waitMetric(t, pr.serverID, "inbound.closed", conns)
	retry.Run(t, func(r *retry.R) {
		if got := metricOf(pr.serverID, "inbound.active"); got != 0 {
			r.Fatalf("inbound.active is %v after every connection closed, want 0", got)
		}
		if got := metricOf(pr.clientID, "upstream.active"); got != 0 {
			r.Fatalf("upstream.active is %v after every connection closed, want 0", got)
		}
	})
}

func TestProxy_Traffic_newConnectionsReuseTheTunnel(t *testing.T) {
	t.Parallel()
	pr := newPair(t, nil)
	for range 20 {
		checkEcho(t, pr.client, "db")
	}
	if n := len(pr.client.pool.all()); n != 1 {
		t.Errorf("client pool holds %d tunnel connections after 20 sequential connections, want 1", n)
	}
	pr.server.mu.Lock()
	inbound := len(pr.server.inbound)
	pr.server.mu.Unlock()
	if inbound != 1 {
		t.Errorf("server has %d inbound tunnel connections, want 1", inbound)
	}
}

// The client half-closes; the application answers after reading to EOF.
func TestProxy_HalfClose_clientFirst(t *testing.T) {
	t.Parallel()
	app := newAppServer(t, func(c net.Conn) {
		h := sha256.New()
		if _, err := io.Copy(h, c); err != nil {
			return
		}
		fmt.Fprintf(c, "%x", h.Sum(nil))
	})
	pr := newPair(t, app)
	c := dialUpstream(t, pr.client, "db")
	payload := make([]byte, 1<<20)
	rand.Read(payload)
	if _, err := c.Write(payload); err != nil {
		t.Fatal(err)
	}
	if err := c.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("read answer: %v", err)
	}
	if want := fmt.Sprintf("%x", sha256.Sum256(payload)); string(got) != want {
		t.Errorf("answer %q, want %q", got, want)
	}
}

// The application writes and closes first; the client sees all of it, then
// EOF, without closing its own side.
func TestProxy_HalfClose_applicationFirst(t *testing.T) {
	t.Parallel()
	banner := strings.Repeat("banner line\n", 10000)
	app := newAppServer(t, func(c net.Conn) {
		io.WriteString(c, banner)
	})
	pr := newPair(t, app)
	c := dialUpstream(t, pr.client, "db")
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("read banner: %v", err)
	}
	if string(got) != banner {
		t.Errorf("read %d bytes, want the %d of the banner", len(got), len(banner))
	}
}

func TestProxy_TLS_version13AndHybridKeyExchange(t *testing.T) {
	t.Parallel()
	pr := newPair(t, nil)
	checkEcho(t, pr.client, "db")

	conns := pr.client.pool.all()
	if len(conns) != 1 {
		t.Fatalf("client pool holds %d tunnel connections, want 1", len(conns))
	}
	check := func(side string, cs tls.ConnectionState) {
		if cs.Version != tls.VersionTLS13 {
			t.Errorf("%s: TLS version %s, want TLS 1.3", side, tls.VersionName(cs.Version))
		}
		if cs.CurveID != tls.X25519MLKEM768 {
			t.Errorf("%s: key exchange %s, want X25519MLKEM768", side, cs.CurveID)
		}
		if cs.NegotiatedProtocol != "h2" {
			t.Errorf("%s: ALPN %q, want h2", side, cs.NegotiatedProtocol)
		}
	}
	check("client", conns[0].tls.ConnectionState())
	pr.server.mu.Lock()
	for ic := range pr.server.inbound {
		check("server", ic.t.tls.ConnectionState())
		if ic.source.Service != "web" || ic.source.TrustDomain != testTrustDomain {
			t.Errorf("server: peer identity %s, want service web of %s", ic.source, testTrustDomain)
		}
	}
	pr.server.mu.Unlock()
}

// An instance whose certificate is another service's is refused, and the
// connection goes to the next instance.
func TestProxy_Upstream_wrongIdentityTriesNext(t *testing.T) {
	t.Parallel()
	pr := newPair(t, nil)
	impostor := startProxy(t, Config{
		ProxyID: proxyID(t, "impostor"), Service: "cache", LocalAppAddr: pr.app.addr(),
		Certs: newTestCerts(pr.ca.leaf("cache", leafOpts{}), bundle(t, pr.ca)),
	})
	pr.client.SetInstances("db", []Instance{
		{Node: "n1", Addr: impostor.PublicAddr().String(), Service: "db"},
		{Node: "n2", Addr: pr.server.PublicAddr().String(), Service: "db"},
	})
	// The balancer picks at random: connect until the impostor was tried
	// (each connection must work all the same).
	for i := 0; metricOf(pr.clientID, "upstream.tls_handshake_failures") == 0; i++ {
		if i == 50 {
			t.Fatal("the impostor was never tried in 50 connections")
		}
		checkEcho(t, pr.client, "db")
	}
	if got := impostor.pool.all(); len(got) != 0 {
		t.Errorf("impostor has pooled connections: %d", len(got))
	}
	impostor.mu.Lock()
	n := len(impostor.inbound)
	impostor.mu.Unlock()
	if n != 0 {
		t.Errorf("impostor kept %d inbound tunnels, want 0 (the client refuses its identity)", n)
	}
	if got := metricOf(pr.clientID, "upstream.dial_failures"); got < 1 {
		t.Errorf("upstream.dial_failures is %v, want at least 1", got)
	}
}

func TestProxy_Upstream_dialFailureTriesNext(t *testing.T) {
	t.Parallel()
	pr := newPair(t, nil)
	pr.client.SetInstances("db", []Instance{
		{Node: "gone", Addr: deadAddr(t), Service: "db"},
		{Node: "n2", Addr: pr.server.PublicAddr().String(), Service: "db"},
	})
	for i := 0; metricOf(pr.clientID, "upstream.dial_failures") == 0; i++ {
		if i == 50 {
			t.Fatal("the dead instance was never tried in 50 connections")
		}
		checkEcho(t, pr.client, "db")
	}
	if got := metricOf(pr.clientID, "upstream.tls_handshake_failures"); got != 0 {
		t.Errorf("upstream.tls_handshake_failures is %v, want 0 (a refused TCP dial is no handshake)", got)
	}
}

func TestProxy_Upstream_noInstanceClosesTheConnection(t *testing.T) {
	t.Parallel()
	pr := newPair(t, nil)
	pr.client.SetInstances("db", nil)
	if err := expectClosed(dialUpstream(t, pr.client, "db")); err != nil {
		t.Error(err)
	}
	pr.client.SetInstances("db", []Instance{{Addr: deadAddr(t)}, {Addr: deadAddr(t)}})
	if err := expectClosed(dialUpstream(t, pr.client, "db")); err != nil {
		t.Error(err)
	}
	if got := metricOf(pr.clientID, "upstream.dial_failures"); got != 2 {
		t.Errorf("upstream.dial_failures is %v, want 2 (each instance once)", got)
	}
	// The instances come back: the connections work again.
	pr.client.SetInstances("db", []Instance{{Addr: pr.server.PublicAddr().String()}})
	checkEcho(t, pr.client, "db")
}

// A 403 is final: the client's connection closes, the other instance is not
// tried, and both sides count it.
func TestProxy_Deny_closesTheApplicationConnection(t *testing.T) {
	t.Parallel()
	pr := newPair(t, nil)
	secondID := proxyID(t, "db-2")
	second := startProxy(t, Config{
		ProxyID: secondID, Service: "db", LocalAppAddr: pr.app.addr(),
		Certs: newTestCerts(pr.ca.leaf("db", leafOpts{}), bundle(t, pr.ca)), Authorizer: pr.authz,
	})
	pr.client.SetInstances("db", []Instance{
		{Addr: pr.server.PublicAddr().String()},
		{Addr: second.PublicAddr().String()},
	})
	pr.authz.setIntentions(intention("web", "db", connect.IntentionDeny))

	c := dialUpstream(t, pr.client, "db")
	c.Write([]byte("let me in"))
	if err := expectClosed(c); err != nil {
		t.Error(err)
	}
	waitMetric(t, pr.clientID, "upstream.denied", 1)
	denied := metricOf(pr.serverID, "inbound.denied", "source=web") + metricOf(secondID, "inbound.denied", "source=web")
	if denied != 1 {
		t.Errorf("the servers denied %v streams, want 1 (a 403 is not retried)", denied)
	}
	if got := metricOf(pr.clientID, "upstream.dial_failures"); got != 0 {
		t.Errorf("upstream.dial_failures is %v, want 0", got)
	}
	if n := pr.app.count.Load(); n != 0 {
		t.Errorf("the application got %d connections, want 0", n)
	}

	// Allowed again: connections work.
	pr.authz.setIntentions(intention("web", "db", connect.IntentionAllow))
	checkEcho(t, pr.client, "db")
}

func TestProxy_Reauthorize_closesOnlyDeniedSources(t *testing.T) {
	t.Parallel()
	pr := newPair(t, nil)
	api := startProxy(t, Config{
		ProxyID: proxyID(t, "api-sidecar"), Service: "api", Certs: newTestCerts(pr.ca.leaf("api", leafOpts{}), bundle(t, pr.ca)),
		Upstreams: []UpstreamConfig{{DestinationName: "db"}},
	})
	api.SetInstances("db", []Instance{{Addr: pr.server.PublicAddr().String()}})

	webConn := dialUpstream(t, pr.client, "db")
	apiConn := dialUpstream(t, api, "db")
	for _, c := range []net.Conn{webConn, apiConn} {
		if err := roundTrip(c, []byte("before")); err != nil {
			t.Fatal(err)
		}
	}

	pr.authz.setIntentions(intention("web", "db", connect.IntentionDeny))
	start := time.Now()
	pr.server.Reauthorize()
	if d := time.Since(start); d > 100*time.Millisecond {
		t.Errorf("Reauthorize took %s", d)
	}
	if err := expectClosed(webConn); err != nil {
		t.Errorf("web's connection: %v", err)
	}
	if err := roundTrip(apiConn, []byte("after")); err != nil {
		t.Errorf("api's connection after Reauthorize: %v", err)
	}
	waitMetric(t, pr.serverID, "inbound.denied", 1, "source=web")
	if got := metricOf(pr.serverID, "inbound.denied", "source=api"); got != 0 {
		t.Errorf("denied for api is %v, want 0", got)
	}
	// New connections of web are denied, api's still work.
	if err := expectClosed(dialUpstream(t, pr.client, "db")); err != nil {
		t.Errorf("new web connection: %v", err)
	}
	checkEcho(t, api, "db")
}

func TestProxy_Reverify(t *testing.T) {
	t.Parallel()
	// The server's leaf is of root A, the client's of root B; both trust both.
	setup := func(t *testing.T) (*pair, *testCA, *testCA, net.Conn) {
		a, b := newTestCA(t, "root-a"), newTestCA(t, "root-b")
		app := newEchoServer(t)
		both := bundle(t, a, b)
		pr := &pair{
			clientID:    proxyID(t, "web"),
			serverID:    proxyID(t, "db"),
			clientCerts: newTestCerts(b.leaf("web", leafOpts{}), both),
			serverCerts: newTestCerts(a.leaf("db", leafOpts{}), both),
			authz:       newTestAuthz("db", true),
			app:         app,
		}
		pr.server = startProxy(t, Config{ProxyID: pr.serverID, Service: "db", LocalAppAddr: app.addr(), Certs: pr.serverCerts, Authorizer: pr.authz})
		pr.client = startProxy(t, Config{ProxyID: pr.clientID, Service: "web", Certs: pr.clientCerts, Upstreams: []UpstreamConfig{{DestinationName: "db"}}})
		pr.client.SetInstances("db", []Instance{{Addr: pr.server.PublicAddr().String()}})
		c := dialUpstream(t, pr.client, "db")
		if err := roundTrip(c, []byte("before")); err != nil {
			t.Fatal(err)
		}
		return pr, a, b, c
	}

	// A tunnel whose peer no longer verifies is drained: the connections on
	// it go on (a rotation drops none), new ones need a new tunnel, whose
	// handshake the current roots decide.
	t.Run("inbound", func(t *testing.T) {
		t.Parallel()
		pr, a, b, c := setup(t)
		pr.server.Reverify() // nothing changed: nothing drains
		if err := roundTrip(c, []byte("still")); err != nil {
			t.Fatalf("after a Reverify with the same roots: %v", err)
		}
		pr.serverCerts.bundle.Store(bundle(t, a)) // root B removed
		pr.server.Reverify()
		if err := roundTrip(c, []byte("established")); err != nil {
			t.Errorf("an established connection broke when its tunnel drained: %v", err)
		}
		// The client's new connections need a new tunnel, whose handshake fails now.
		retry.Run(t, func(r *retry.R) {
			if err := expectClosed(dialUpstream(t, pr.client, "db")); err != nil {
				r.Fatal(err)
			}
		})
		// Root B trusted again, the client re-dials.
		pr.serverCerts.bundle.Store(bundle(t, a, b))
		checkEcho(t, pr.client, "db")
		c.Close()
	})
	t.Run("outbound", func(t *testing.T) {
		t.Parallel()
		pr, _, b, c := setup(t)
		before := pr.client.pool.all()
		pr.clientCerts.bundle.Store(bundle(t, b)) // root A removed
		pr.client.Reverify()
		if err := roundTrip(c, []byte("established")); err != nil {
			t.Errorf("an established connection broke when its tunnel drained: %v", err)
		}
		if len(before) != 1 || before[0].canOpen() {
			t.Fatalf("the tunnel still takes new streams after Reverify")
		}
		c.Close()
		retry.Run(t, func(r *retry.R) {
			if n := len(pr.client.pool.all()); n != 0 {
				r.Fatalf("client pool holds %d tunnels once the drained one's streams ended, want 0", n)
			}
		})
	})
}

// Connections that are not mesh TLS with a valid client leaf fail the
// handshake, are counted, and the proxy serves the others all the same.
func TestProxy_Public_refusesBadClients(t *testing.T) {
	t.Parallel()
	pr := newPair(t, nil)
	other := newTestCA(t, "another-ca")
	tlsWith := func(cert *tls.Certificate) func(string) error {
		return func(addr string) error {
			cfg := &tls.Config{MinVersion: tls.VersionTLS13, NextProtos: []string{"h2"}, InsecureSkipVerify: true}
			if cert != nil {
				cfg.Certificates = []tls.Certificate{*cert}
			}
			c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, cfg)
			if err != nil {
				return nil // refused in the handshake already
			}
			defer c.Close()
			// In TLS 1.3 the client finishes before the server has checked
			// its certificate: the refusal comes as an alert on read.
			return expectClosed(c)
		}
	}
	cases := []struct {
		name string
		try  func(addr string) error
	}{
		{"plain TCP", func(addr string) error {
			c, err := net.DialTimeout("tcp", addr, 5*time.Second)
			if err != nil {
				return err
			}
			defer c.Close()
			io.WriteString(c, "CONNECT db HTTP/1.1\r\nHost: db\r\n\r\n")
			return expectClosed(c)
		}},
		{"TLS without client certificate", tlsWith(nil)},
		{"client certificate of another CA", tlsWith(other.leaf("web", leafOpts{}))},
		{"expired client certificate", tlsWith(pr.ca.leaf("web", leafOpts{signedAt: time.Now().Add(-3 * time.Hour), ttl: time.Hour}))},
		{"client certificate of another trust domain", tlsWith(pr.ca.leaf("web", leafOpts{trustDomain: "elsewhere.trellis"}))},
	}
	for _, tc := range cases {
		before := metricOf(pr.serverID, "inbound.tls_handshake_failures")
		if err := tc.try(pr.server.PublicAddr().String()); err != nil {
			t.Errorf("%s: %v", tc.name, err)
		}
		waitMetric(t, pr.serverID, "inbound.tls_handshake_failures", before+1)
		checkEcho(t, pr.client, "db")
	}
	pr.server.mu.Lock()
	n := len(pr.server.inbound)
	pr.server.mu.Unlock()
	if n != 1 {
		t.Errorf("server holds %d inbound tunnels, want only the client proxy's", n)
	}
}

// A proxy whose own leaf is expired cannot reach anyone.
func TestProxy_Upstream_expiredOwnLeafIsRefused(t *testing.T) {
	t.Parallel()
	pr := newPair(t, nil)
	pr.clientCerts.cert.Store(pr.ca.leaf("web", leafOpts{signedAt: time.Now().Add(-3 * time.Hour), ttl: time.Hour}))
	if err := expectClosed(dialUpstream(t, pr.client, "db")); err != nil {
		t.Error(err)
	}
	waitMetric(t, pr.serverID, "inbound.tls_handshake_failures", 1)
	pr.clientCerts.cert.Store(pr.ca.leaf("web", leafOpts{}))
	checkEcho(t, pr.client, "db")
}

func TestProxy_Public_applicationDown(t *testing.T) {
	t.Parallel()
	pr := newPair(t, nil)
	second := startProxy(t, Config{
		ProxyID: proxyID(t, "db-2"), Service: "db", LocalAppAddr: deadAddr(t),
		Certs: newTestCerts(pr.ca.leaf("db", leafOpts{}), bundle(t, pr.ca)),
	})
	pr.client.SetInstances("db", []Instance{
		{Addr: second.PublicAddr().String()},
		{Addr: pr.server.PublicAddr().String()},
	})
	// A 502 from the instance whose application is down is retried on the
	// other; connect until it was tried.
	for i := 0; metricOf(pr.clientID, "upstream.dial_failures") == 0; i++ {
		if i == 50 {
			t.Fatal("the instance without application was never tried in 50 connections")
		}
		checkEcho(t, pr.client, "db")
	}
}

// Close stops everything: listeners, tunnels, application connections and
// goroutines. Not parallel: it checks the goroutines of the whole process.
func TestProxy_Close(t *testing.T) {
	// Registered first, so it runs after every other cleanup.
	ignore := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, ignore) })
	pr := newPair(t, nil)
	c := dialUpstream(t, pr.client, "db")
	if err := roundTrip(c, []byte("open")); err != nil {
		t.Fatal(err)
	}
	publicAddr := pr.server.PublicAddr().String()
	upstreamAddr := pr.client.UpstreamAddr("db").String()

	done := make(chan error, 1)
	go func() { done <- pr.client.Close() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Close: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not return within 5s")
	}
	if err := expectClosed(c); err != nil {
		t.Errorf("application connection after Close: %v", err)
	}
	if err := pr.client.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if err := pr.server.Close(); err != nil {
		t.Errorf("Close of the server: %v", err)
	}
	for _, addr := range []string{publicAddr, upstreamAddr} {
		if testutil.ListensHere(t, addr) {
			t.Errorf("%s is still open after Close", addr)
		}
	}
	if got := pr.client.UpstreamAddr("nope"); got != nil {
		t.Errorf("UpstreamAddr of an unknown destination is %v, want nil", got)
	}
}

func TestNew_invalidConfig(t *testing.T) {
	t.Parallel()
	c := newTestCA(t, "root")
	certs := newTestCerts(c.leaf("web", leafOpts{}), bundle(t, c))
	good := func() Config {
		return Config{ProxyID: "web-sidecar", Service: "web", PublicAddr: "127.0.0.1:0", LocalAppAddr: "127.0.0.1:8080",
			Certs: certs, Authorizer: newTestAuthz("web", true)}
	}
	cases := []struct {
		name   string
		mutate func(*Config)
		want   string
	}{
		{"no proxy ID", func(c *Config) { c.ProxyID = "" }, "ProxyID is required"},
		{"no service", func(c *Config) { c.Service = "" }, "Service is required"},
		{"no public address", func(c *Config) { c.PublicAddr = "" }, "PublicListener or PublicAddr"},
		{"bad public address", func(c *Config) { c.PublicAddr = "nope" }, "PublicAddr"},
		{"no application", func(c *Config) { c.LocalAppAddr = "" }, "LocalAppAddr is required"},
		{"no certs", func(c *Config) { c.Certs = nil }, "Certs is required"},
		{"no authorizer", func(c *Config) { c.Authorizer = nil }, "Authorizer is required"},
		{"negative timeout", func(c *Config) { c.DialTimeout = -time.Second }, "negative"},
		{"unnamed upstream", func(c *Config) { c.Upstreams = []UpstreamConfig{{}} }, "DestinationName is required"},
		{"duplicate upstream", func(c *Config) {
			c.Upstreams = []UpstreamConfig{{DestinationName: "db"}, {DestinationName: "db"}}
		}, "appears twice"},
		{"bad port", func(c *Config) { c.Upstreams = []UpstreamConfig{{DestinationName: "db", LocalBindPort: 70000}} }, "not a port"},
		{"bad bind address", func(c *Config) {
			c.Upstreams = []UpstreamConfig{{DestinationName: "db", LocalBindAddress: "localhost"}}
		}, "not an IP address"},
	}
	for _, tc := range cases {
		cfg := good()
		tc.mutate(&cfg)
		if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: Validate() = %v, want an error with %q", tc.name, err, tc.want)
		}
	}
	if err := (&Config{}).Validate(); err == nil {
		t.Error("Validate of the zero Config passed")
	}

	// New fails when a port is taken, and closes the listeners it was given.
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	given, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg := good()
	cfg.PublicAddr = ""
	cfg.PublicListener = given
	port := taken.Addr().(*net.TCPAddr).Port
	cfg.Upstreams = []UpstreamConfig{{DestinationName: "db", LocalBindPort: port}}
	if _, err := New(cfg); err == nil || !strings.Contains(err.Error(), "bind listener of upstream db") {
		t.Errorf("New with a taken port: %v, want a bind error", err)
	}
	if _, err := given.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Accept on the given listener after New failed: %v, want it closed", err)
	}
}

func TestUpstream_pick(t *testing.T) {
	t.Parallel()
	u := &upstream{name: "db", p: &Proxy{}}
	u.endpoints = []*endpoint{{key: "a", inst: Instance{Addr: "a"}}, {key: "b", inst: Instance{Addr: "b"}}, {key: "c", inst: Instance{Addr: "c"}}}
	a, b, c := u.endpoints[0], u.endpoints[1], u.endpoints[2]

	counts := map[*endpoint]int{}
	for range 300 {
		counts[u.pick(nil)]++
	}
	for _, ep := range u.endpoints {
		if counts[ep] < 50 {
			t.Errorf("idle instance %s picked %d times in 300, want about 100", ep.key, counts[ep])
		}
	}

	// The power of two choices never picks the busiest of three.
	a.active.Store(10)
	b.active.Store(5)
	for range 100 {
		if got := u.pick(nil); got == a {
			t.Fatal("picked the instance with the most active connections")
		}
	}
	a.active.Store(0)
	b.active.Store(0)

	// A failed instance is avoided while backed off, unless it is the only
	// one left untried.
	u.failed(a)
	for range 100 {
		if got := u.pick(nil); got == a {
			t.Fatal("picked a backed-off instance while others were available")
		}
	}
	if got := u.pick([]*endpoint{b, c}); got != a {
		t.Errorf("with b and c tried, picked %v, want the backed-off a", got)
	}
	if got := u.pick([]*endpoint{a, b, c}); got != nil {
		t.Errorf("with every instance tried, picked %v, want nil", got)
	}
	first := a.backoffUntil
	u.failed(a)
	if !a.backoffUntil.After(first) {
		t.Error("a second failure did not extend the backoff")
	}
	u.succeeded(a)
	if !a.backoffUntil.IsZero() || a.failures != 0 {
		t.Error("a success did not clear the backoff")
	}
}

func TestSetInstances_keepsStateOfRemainingInstances(t *testing.T) {
	t.Parallel()
	pr := newPair(t, nil)
	u := pr.client.upstreams["db"]
	pr.client.SetInstances("db", []Instance{{Addr: "10.0.0.1:21000"}, {Addr: "10.0.0.2:21000", Service: "db"}, {Addr: "10.0.0.1:21000"}, {Addr: ""}})
	u.mu.Lock()
	eps := append([]*endpoint(nil), u.endpoints...)
	u.mu.Unlock()
	if len(eps) != 2 {
		t.Fatalf("%d endpoints, want 2 (duplicates and address-less ones dropped)", len(eps))
	}
	if eps[0].inst.Service != "db" {
		t.Errorf("instance without Service expects %q, want the destination db", eps[0].inst.Service)
	}
	u.failed(eps[1])
	instances := []Instance{{Addr: "10.0.0.2:21000", Node: "n2"}, {Addr: "10.0.0.3:21000"}}
	pr.client.SetInstances("db", instances)
	instances[0].Addr = "changed by the caller"
	u.mu.Lock()
	defer u.mu.Unlock()
	if len(u.endpoints) != 2 || u.endpoints[0] != eps[1] || u.endpoints[0].failures != 1 || u.endpoints[0].nodeName() != "n2" {
		t.Errorf("instance 10.0.0.2 lost its state or its update across SetInstances")
	}
	if u.endpoints[0].inst.Addr != "10.0.0.2:21000" {
		t.Errorf("SetInstances kept the caller's slice")
	}
	pr.client.SetInstances("nope", instances) // unknown: ignored
}

// A tunnel opened with a client leaf that then expires takes no new
// streams: the client opens a new connection with its renewed leaf, and the
// streams of the old one go on.
func TestProxy_Public_clientLeafExpiresOnAnOpenTunnel(t *testing.T) {
	t.Parallel()
	pr := newPair(t, nil)
	short := pr.ca.leaf("web", leafOpts{ttl: 2 * time.Second})
	pr.clientCerts.cert.Store(short)
	old := dialUpstream(t, pr.client, "db")
	if err := roundTrip(old, []byte("on the first tunnel")); err != nil {
		t.Fatal(err)
	}
	pr.clientCerts.cert.Store(pr.ca.leaf("web", leafOpts{})) // renewed
	retry.Run(t, func(r *retry.R) {
		if !time.Now().After(short.Leaf.NotAfter) {
			r.Fatal("the short leaf has not expired yet")
		}
	})
	checkEcho(t, pr.client, "db")
	if err := roundTrip(old, []byte("still on the first tunnel")); err != nil {
		t.Errorf("stream of the tunnel with the expired leaf: %v", err)
	}
	if n := len(pr.client.pool.all()); n != 2 {
		t.Errorf("client pool holds %d connections, want 2 (the old one and the renewed one)", n)
	}
	if got := metricOf(pr.clientID, "upstream.dial_failures"); got != 0 {
		t.Errorf("upstream.dial_failures is %v, want 0 (a 421 is retried on a new connection)", got)
	}
}

// A tunnel idle for poolIdleTimeout is closed by the next prune, and the
// pool goes on serving: closing it used to happen under the pool's lock,
// which its closed hook takes too, and every later connection hung.
func TestProxy_Pool_idleTunnelClosedWithoutDeadlock(t *testing.T) {
	t.Parallel()
	pr := newPair(t, nil)
	checkEcho(t, pr.client, "db")
	retry.Run(t, func(r *retry.R) {
		if ts := pr.client.pool.all(); len(ts) != 1 || ts[0].idleFor(time.Now()) == 0 {
			r.Fatalf("want one idle pooled tunnel, have %d", len(ts))
		}
	})
	done := make(chan struct{})
	go func() {
		defer close(done)
		pr.client.pool.prune(time.Now().Add(poolIdleTimeout + time.Second))
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("prune of an idle tunnel did not return: the pool deadlocked")
	}
	if n := len(pr.client.pool.all()); n != 0 {
		t.Errorf("pool holds %d tunnels after the idle one was pruned, want 0", n)
	}
	checkEcho(t, pr.client, "db") // a new tunnel
}

// The goroutine that served one connection serves the next: it starts with
// the stack the first one grew. Close still waits for it, idle or not.
//
// Not parallel: the idle goroutines are bounded across the process's
// proxies (maxIdleWorkers), and other tests' proxies could hold them all.
func TestGoFunc_reusesAnIdleGoroutine(t *testing.T) {
	pr := newPair(t, nil)
	p := pr.client
	run := func(r *retry.R) {
		before := p.workers.started.Load()
		done := make(chan struct{})
		if !p.goFunc(func() { close(done) }) {
			t.Fatal("goFunc refused before Close")
		}
		<-done
		if n := p.workers.started.Load() - before; n != 0 {
			r.Fatalf("goFunc started a goroutine (%d) while the last one's was idle", n)
		}
	}
	// Once a function has returned, its goroutine waits for the next.
	for range 3 {
		retry.RunWith(&retry.Timer{Timeout: 10 * time.Second, Wait: time.Millisecond}, t, run)
	}
	p.Close()
	if p.goFunc(func() { t.Error("ran after Close") }) {
		t.Error("goFunc accepted work after Close")
	}
}
