package l7

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/trellismesh/trellis/connect"
	"github.com/trellismesh/trellis/connect/ca"
	"github.com/trellismesh/trellis/connect/chain"
	"github.com/trellismesh/trellis/connect/configentry"
	"github.com/trellismesh/trellis/connect/intentions"
	"github.com/trellismesh/trellis/internal/retry"
	"github.com/trellismesh/trellis/internal/testutil"
)

// sink collects every metric of the package's tests; tests tell theirs
// apart by the proxy label.
var sink *testutil.MetricsSink

func TestMain(m *testing.M) {
	sink = testutil.InstallMetricsSink()
	metricsInterval = 20 * time.Millisecond
	goleak.VerifyTestMain(m)
}

// metric sums the values of key (without its "trellis.proxy.http." prefix)
// over the label sets that include every name=value pair of match.
func metric(key string, match ...string) float64 {
	return sink.Get("trellis.proxy.http."+key, match...)
}

// waitMetric waits until key (with match) reaches at least want, flushing
// reg on each attempt.
func waitMetric(t *testing.T, reg *registry, key string, want float64, match ...string) {
	t.Helper()
	retry.Run(t, func(r *retry.R) {
		reg.flush()
		if got := metric(key, match...); got < want {
			r.Fatalf("%s %v is %v, want at least %v", key, match, got, want)
		}
	})
}

var idSeq atomic.Int64

// proxyID returns an ID unique in the test binary, so metrics tell
// proxies apart.
func proxyID(t testing.TB, name string) string {
	return fmt.Sprintf("%s#%d/%s", t.Name(), idSeq.Add(1), name)
}

const (
	testTrustDomain = "c0ffee11.trellis"
	testDC          = "dc1"
)

// mesh is a test cluster's CA: it signs leaves of any service.
type mesh struct {
	t      testing.TB
	root   *ca.Root
	bundle *connect.Bundle
}

func newMesh(t testing.TB) *mesh {
	t.Helper()
	root, err := ca.GenerateRoot(testTrustDomain, "root-1", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	b, err := connect.NewBundle(testTrustDomain, root.ID(), root.CertPEM)
	if err != nil {
		t.Fatal(err)
	}
	return &mesh{t: t, root: root, bundle: b}
}

// certs returns a CertSource with a fresh leaf of service.
func (m *mesh) certs(service string) *testCerts {
	t := m.t
	t.Helper()
	key, err := connect.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	csrPEM, err := connect.CreateCSR(connect.NewServiceID(testTrustDomain, testDC, service), key)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := connect.ParseCSR(csrPEM)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := m.root.SignLeaf(csr, ca.LeafRequest{TrustDomain: testTrustDomain, Datacenter: testDC, TTL: time.Hour, Now: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	keyPEM, err := connect.EncodeKey(key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := connect.TLSCertificate(leaf.CertPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return &testCerts{cert: cert, bundle: m.bundle}
}

type testCerts struct {
	cert   *tls.Certificate
	bundle *connect.Bundle
}

func (c *testCerts) Certificate() *tls.Certificate { return c.cert }
func (c *testCerts) Bundle() *connect.Bundle       { return c.bundle }

// allowAll authorizes every request.
var allowAll = AuthorizerFunc(func(connect.ServiceID, *http.Request) intentions.Decision {
	return intentions.Decision{Allowed: true, Reason: "test"}
})

// destProxy is a destination proxy: a public listener with mutual TLS that
// hands connections negotiating ALPN to an Inbound, in front of an app.
type destProxy struct {
	in       *Inbound
	ln       net.Listener
	accepted atomic.Int64
	wg       sync.WaitGroup
	service  string
	stop     func() // idempotent
}

func (d *destProxy) addr() string { return d.ln.Addr().String() }

func (d *destProxy) endpoint() Endpoint {
	return Endpoint{Addr: d.addr(), Service: d.service, Node: "node-" + d.service}
}

// startDest starts a destination proxy of service in front of appAddr.
func startDest(t testing.TB, m *mesh, cfg InboundConfig) *destProxy {
	t.Helper()
	if cfg.ProxyID == "" {
		cfg.ProxyID = proxyID(t, cfg.Service+"-sidecar")
	}
	if cfg.Authorizer == nil {
		cfg.Authorizer = allowAll
	}
	if cfg.Logger == nil {
		cfg.Logger = testutil.Logger(t)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return startDestOn(t, m, cfg, ln)
}

// startDestOn is startDest on a listener of the caller's.
func startDestOn(t testing.TB, m *mesh, cfg InboundConfig, ln net.Listener) *destProxy {
	t.Helper()
	if cfg.ProxyID == "" {
		cfg.ProxyID = proxyID(t, cfg.Service+"-sidecar")
	}
	if cfg.Authorizer == nil {
		cfg.Authorizer = allowAll
	}
	if cfg.Logger == nil {
		cfg.Logger = testutil.Logger(t)
	}
	in, err := NewInbound(cfg)
	if err != nil {
		ln.Close()
		t.Fatal(err)
	}
	d := &destProxy{in: in, ln: ln, service: cfg.Service}
	tlsConf := connect.ServerTLSConfig(m.certs(cfg.Service), ALPN)
	ctx, cancel := context.WithCancel(context.Background())
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			d.accepted.Add(1)
			d.wg.Add(1)
			go func() {
				defer d.wg.Done()
				in.ServeConn(ctx, tls.Server(c, tlsConf))
			}()
		}
	}()
	d.stop = func() {
		ln.Close()
		cancel()
		in.Close()
		d.wg.Wait()
	}
	t.Cleanup(d.stop)
	return d
}

// srcProxy is a source proxy's upstream listener with an Outbound.
type srcProxy struct {
	out *Outbound
	ln  net.Listener
	url string
}

// startSource starts an outbound for cfg.DestinationName, its chain
// compiled from entries.
func startSource(t testing.TB, m *mesh, cfg OutboundConfig, entries ...configentry.Entry) *srcProxy {
	t.Helper()
	if cfg.ProxyID == "" {
		cfg.ProxyID = proxyID(t, "web-sidecar")
	}
	if cfg.Service == "" {
		cfg.Service = "web"
	}
	if cfg.Chain == nil {
		cfg.Chain = compile(t, cfg.DestinationName, entries...)
	}
	if cfg.Certs == nil {
		cfg.Certs = m.certs(cfg.Service)
	}
	if cfg.Logger == nil {
		cfg.Logger = testutil.Logger(t)
	}
	out, err := NewOutbound(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- out.Serve(ln) }()
	t.Cleanup(func() {
		if err := out.Close(); err != nil {
			t.Errorf("close outbound: %v", err)
		}
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	return &srcProxy{out: out, ln: ln, url: "http://" + ln.Addr().String()}
}

// compile compiles the chain of service from entries, with protocol http
// unless a service-defaults entry says otherwise.
func compile(t testing.TB, service string, entries ...configentry.Entry) *chain.Chain {
	t.Helper()
	set := configentry.MapSet{}
	for _, e := range entries {
		e.Normalize()
		if err := e.Validate(); err != nil {
			t.Fatalf("entry %s: %v", configentry.KeyOf(e), err)
		}
		set[configentry.KeyOf(e)] = e
	}
	for _, e := range entries {
		if r, ok := e.(*configentry.ServiceRouterConfigEntry); ok {
			addDefaults(set, r.Name)
			for _, rt := range r.Routes {
				if rt.Destination != nil && rt.Destination.Service != "" {
					addDefaults(set, rt.Destination.Service)
				}
			}
		}
		if s, ok := e.(*configentry.ServiceSplitterConfigEntry); ok {
			addDefaults(set, s.Name)
		}
	}
	addDefaults(set, service)
	c, err := chain.Compile(chain.Request{ServiceName: service, Datacenter: testDC, Entries: set})
	if err != nil {
		t.Fatalf("compile chain of %s: %v", service, err)
	}
	return c
}

func addDefaults(set configentry.MapSet, service string) {
	k := configentry.Key{Kind: configentry.ServiceDefaults, Name: service}
	if set[k] == nil {
		set[k] = &configentry.ServiceConfigEntry{Kind: configentry.ServiceDefaults, Name: service, Protocol: "http"}
	}
}

// targetID is the chain target ID of service (and subset).
func targetID(service string, subset ...string) string {
	id := service + ".default.default." + testDC
	if len(subset) > 0 && subset[0] != "" {
		id = subset[0] + "." + id
	}
	return id
}

// app is an application server on 127.0.0.1 (HTTP/1.1, or h2c when h2c).
type app struct {
	srv  *http.Server
	addr string
	hits atomic.Int64
}

func startApp(t testing.TB, h2c bool, h http.HandlerFunc) *app {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a := &app{addr: ln.Addr().String()}
	p := new(http.Protocols)
	if h2c {
		p.SetUnencryptedHTTP2(true)
	} else {
		p.SetHTTP1(true)
	}
	a.srv = &http.Server{Protocols: p, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a.hits.Add(1)
		h(w, r)
	})}
	done := make(chan struct{})
	go func() {
		defer close(done)
		a.srv.Serve(ln)
	}()
	t.Cleanup(func() {
		a.srv.Close()
		<-done
	})
	return a
}

// client returns an HTTP/1.1 client whose connections Cleanup closes.
func client(t testing.TB) *http.Client {
	tr := &http.Transport{DisableCompression: true, MaxIdleConnsPerHost: 64}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 20 * time.Second}
}

// get sends a GET and returns status and body.
func get(t testing.TB, c *http.Client, url string, hdr ...string) (int, string, http.Header) {
	t.Helper()
	req, err := http.NewRequest("GET", url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: read body: %v", url, err)
	}
	return resp.StatusCode, string(b), resp.Header
}

func ptr[T any](v T) *T { return &v }
