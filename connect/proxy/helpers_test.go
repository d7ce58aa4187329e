package proxy

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/trellismesh/trellis/connect"
	"github.com/trellismesh/trellis/connect/ca"
	"github.com/trellismesh/trellis/connect/intentions"
	"github.com/trellismesh/trellis/internal/retry"
	"github.com/trellismesh/trellis/internal/testutil"
)

// sink collects every metric of the package's tests; tests tell theirs
// apart by the proxy label.
var sink *testutil.MetricsSink

func TestMain(m *testing.M) {
	sink = testutil.InstallMetricsSink()
	metricsInterval = 20 * time.Millisecond // tests wait for the flush
	goleak.VerifyTestMain(m)
}

// metric sums the values of key (without its "trellis.proxy." prefix)
// over the label sets that include every name=value pair of match.
func metric(key string, match ...string) float64 { return sink.Get("trellis.proxy."+key, match...) }

// running maps the IDs of the proxies startProxy started to them.
var running sync.Map

// metricOf returns the value of key for the proxy with ID proxyID, after
// having it emit what it counted.
func metricOf(proxyID, key string, match ...string) float64 {
	if p, ok := running.Load(proxyID); ok {
		p.(*Proxy).reg.flush()
	}
	return metric(key, append([]string{"proxy=" + proxyID}, match...)...)
}

// waitMetric waits until key of proxyID reaches at least want.
func waitMetric(t *testing.T, proxyID, key string, want float64, match ...string) {
	t.Helper()
	retry.Run(t, func(r *retry.R) {
		if got := metricOf(proxyID, key, match...); got < want {
			r.Fatalf("%s of %s is %v, want at least %v", key, proxyID, got, want)
		}
	})
}

var idSeq atomic.Int64

// proxyID returns a proxy ID unique in the test binary (tests run again
// under -count reuse their names), so that metrics tell proxies apart.
func proxyID(t testing.TB, name string) string {
	return fmt.Sprintf("%s#%d/%s", t.Name(), idSeq.Add(1), name)
}

const testTrustDomain = "c0ffee11.trellis"
const testDC = "dc1"

// testCA is a root of the test cluster.
type testCA struct {
	t    testing.TB
	root *ca.Root
}

func newTestCA(t testing.TB, name string) *testCA {
	t.Helper()
	root, err := ca.GenerateRoot(testTrustDomain, name, time.Now())
	if err != nil {
		t.Fatalf("generate root %s: %v", name, err)
	}
	return &testCA{t: t, root: root}
}

// leafOpts varies a leaf from the normal one.
type leafOpts struct {
	trustDomain string        // another trust domain than the test's
	signedAt    time.Time     // zero: now
	ttl         time.Duration // zero: an hour
}

// leaf signs a leaf of service.
func (c *testCA) leaf(service string, o leafOpts) *tls.Certificate {
	c.t.Helper()
	td := testTrustDomain
	if o.trustDomain != "" {
		td = o.trustDomain
	}
	if o.signedAt.IsZero() {
		o.signedAt = time.Now()
	}
	if o.ttl == 0 {
		o.ttl = time.Hour
	}
	key, err := connect.GenerateKey()
	if err != nil {
		c.t.Fatal(err)
	}
	csrPEM, err := connect.CreateCSR(connect.NewServiceID(td, testDC, service), key)
	if err != nil {
		c.t.Fatal(err)
	}
	csr, err := connect.ParseCSR(csrPEM)
	if err != nil {
		c.t.Fatal(err)
	}
	leaf, err := c.root.SignLeaf(csr, ca.LeafRequest{TrustDomain: td, Datacenter: testDC, TTL: o.ttl, Now: o.signedAt})
	if err != nil {
		c.t.Fatalf("sign leaf of %s: %v", service, err)
	}
	keyPEM, err := connect.EncodeKey(key)
	if err != nil {
		c.t.Fatal(err)
	}
	cert, err := connect.TLSCertificate(leaf.CertPEM, keyPEM)
	if err != nil {
		c.t.Fatal(err)
	}
	return cert
}

// bundle returns a trust bundle of the test trust domain with these roots.
func bundle(t testing.TB, cas ...*testCA) *connect.Bundle {
	t.Helper()
	var pems []string
	for _, c := range cas {
		pems = append(pems, c.root.CertPEM)
	}
	b, err := connect.NewBundle(testTrustDomain, cas[0].root.ID(), pems...)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// testCerts is a CertSource whose leaf and bundle tests swap at will.
type testCerts struct {
	cert   atomic.Pointer[tls.Certificate]
	bundle atomic.Pointer[connect.Bundle]
}

func newTestCerts(cert *tls.Certificate, b *connect.Bundle) *testCerts {
	c := &testCerts{}
	c.cert.Store(cert)
	c.bundle.Store(b)
	return c
}

func (c *testCerts) Certificate() *tls.Certificate { return c.cert.Load() }
func (c *testCerts) Bundle() *connect.Bundle       { return c.bundle.Load() }

var _ connect.CertSource = (*testCerts)(nil)

// testAuthz decides with a swappable intentions set for one destination.
type testAuthz struct {
	destination  string
	defaultAllow bool
	set          atomic.Pointer[intentions.Set]
}

func newTestAuthz(destination string, defaultAllow bool, ixns ...*connect.Intention) *testAuthz {
	a := &testAuthz{destination: destination, defaultAllow: defaultAllow}
	a.setIntentions(ixns...)
	return a
}

func (a *testAuthz) setIntentions(ixns ...*connect.Intention) {
	for _, i := range ixns {
		i.Precedence = connect.ComputePrecedence(i.SourceName, i.DestinationName)
	}
	a.set.Store(intentions.NewSet(ixns))
}

func (a *testAuthz) Authorize(source connect.ServiceID) intentions.Decision {
	return a.set.Load().Decide(source.Service, a.destination, a.defaultAllow)
}

func intention(src, dst, action string) *connect.Intention {
	return &connect.Intention{ID: src + "-" + dst, SourceName: src, DestinationName: dst, Action: action}
}

// appServer is a TCP application on 127.0.0.1: it runs handle for each
// connection, then closes it. Cleanup stops it and waits for its goroutines.
type appServer struct {
	ln    net.Listener
	wg    sync.WaitGroup
	mu    sync.Mutex
	conns map[net.Conn]struct{}
	count atomic.Int64
}

func newAppServer(t testing.TB, handle func(net.Conn)) *appServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &appServer{ln: ln, conns: make(map[net.Conn]struct{})}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.count.Add(1)
			s.mu.Lock()
			s.conns[c] = struct{}{}
			s.mu.Unlock()
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				defer func() {
					s.mu.Lock()
					delete(s.conns, c)
					s.mu.Unlock()
					c.Close()
				}()
				handle(c)
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		s.mu.Lock()
		for c := range s.conns {
			c.Close()
		}
		s.mu.Unlock()
		s.wg.Wait()
	})
	return s
}

func (s *appServer) addr() string { return s.ln.Addr().String() }

// echo copies what it reads back, and half-closes when the client does.
func echo(c net.Conn) {
	io.Copy(c, c)
	c.(*net.TCPConn).CloseWrite()
	io.Copy(io.Discard, c)
}

func newEchoServer(t testing.TB) *appServer { return newAppServer(t, echo) }

// deadAddr returns an address where nothing listens.
func deadAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// startProxy starts a proxy with cfg's blanks filled in for tests, closed
// at cleanup.
func startProxy(t testing.TB, cfg Config) *Proxy {
	t.Helper()
	if cfg.PublicAddr == "" && cfg.PublicListener == nil {
		cfg.PublicAddr = "127.0.0.1:0"
	}
	if cfg.LocalAppAddr == "" {
		cfg.LocalAppAddr = deadAddr(t)
	}
	if cfg.Authorizer == nil {
		cfg.Authorizer = newTestAuthz(cfg.Service, true)
	}
	if cfg.DialTimeout == 0 {
		// Generous: tests share the machine with other packages' tests,
		// and a handshake under the race detector on a loaded machine is slow.
		cfg.DialTimeout = 10 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = testutil.Logger(t)
	}
	p, err := New(cfg)
	if err != nil {
		t.Fatalf("start proxy %s: %v", cfg.ProxyID, err)
	}
	running.Store(cfg.ProxyID, p)
	t.Cleanup(func() {
		if err := p.Close(); err != nil {
			t.Errorf("close proxy %s: %v", cfg.ProxyID, err)
		}
		running.Delete(cfg.ProxyID)
	})
	return p
}

// pair is a client proxy (service web, upstream db) and a server proxy
// (service db) in front of an application.
type pair struct {
	ca             *testCA
	client, server *Proxy
	clientID       string
	serverID       string
	clientCerts    *testCerts
	serverCerts    *testCerts
	authz          *testAuthz
	app            *appServer
}

// newPair starts a pair in front of app (an echo server when nil), with
// the client's instances set to the server.
func newPair(t testing.TB, app *appServer) *pair {
	t.Helper()
	if app == nil {
		app = newEchoServer(t)
	}
	c := newTestCA(t, "root-1")
	b := bundle(t, c)
	pr := &pair{
		ca:          c,
		clientID:    proxyID(t, "web-sidecar"),
		serverID:    proxyID(t, "db-sidecar"),
		clientCerts: newTestCerts(c.leaf("web", leafOpts{}), b),
		serverCerts: newTestCerts(c.leaf("db", leafOpts{}), b),
		authz:       newTestAuthz("db", true),
		app:         app,
	}
	pr.server = startProxy(t, Config{ProxyID: pr.serverID, Service: "db", LocalAppAddr: app.addr(), Certs: pr.serverCerts, Authorizer: pr.authz})
	pr.client = startProxy(t, Config{ProxyID: pr.clientID, Service: "web", Certs: pr.clientCerts,
		Upstreams: []UpstreamConfig{{DestinationName: "db"}}})
	pr.client.SetInstances("db", []Instance{{Node: "node-db", Addr: pr.server.PublicAddr().String(), Service: "db"}})
	return pr
}

// dialUpstream connects to the upstream listener of destination.
func dialUpstream(t testing.TB, p *Proxy, destination string) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", p.UpstreamAddr(destination).String(), 5*time.Second)
	if err != nil {
		t.Fatalf("dial upstream %s: %v", destination, err)
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	t.Cleanup(func() { c.Close() })
	return c
}

// roundTrip writes msg on c and reads as many bytes back.
func roundTrip(c net.Conn, msg []byte) error {
	if _, err := c.Write(msg); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil {
		return fmt.Errorf("read echo: %w", err)
	}
	if string(got) != string(msg) {
		return fmt.Errorf("echo is %q, want %q", got, msg)
	}
	return nil
}

// checkEcho opens a connection through p's upstream to destination and
// checks that an echo comes back.
func checkEcho(t testing.TB, p *Proxy, destination string) {
	t.Helper()
	c := dialUpstream(t, p, destination)
	defer c.Close()
	if err := roundTrip(c, []byte("hello through the mesh")); err != nil {
		t.Fatalf("echo through upstream %s: %v", destination, err)
	}
}

// expectClosed checks that the peer of c closes it without sending data.
func expectClosed(c net.Conn) error {
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	var b [1]byte
	n, err := c.Read(b[:])
	if err == nil || n > 0 {
		return fmt.Errorf("read %d bytes, want the connection closed", n)
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return errors.New("connection still open after 5s")
	}
	return nil
}
