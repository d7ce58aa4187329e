package proxy

import (
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/trellismesh/trellis/connect/chain"
	"github.com/trellismesh/trellis/connect/configentry"
	"github.com/trellismesh/trellis/internal/retry"
)

// httpChain is testChain with protocol http: the upstream takes the L7 path.
func httpChain(targets ...string) *chain.Chain {
	c := testChain(chain.Resolver{}, nil, targets...)
	c.Protocol = configentry.ProtocolHTTP
	return c
}

// A chain that says http, set once Close has begun, starts no L7 outbound:
// nothing would ever close it. Not parallel: it checks the goroutines of
// the whole process.
func TestProxy_HTTP_noOutboundAfterClose(t *testing.T) {
	ignore := goleak.IgnoreCurrent()
	c := newTestCA(t, "root-1")
	certs := newTestCerts(c.leaf("web", leafOpts{}), bundle(t, c))
	start := func() *Proxy {
		return startProxy(t, Config{ProxyID: proxyID(t, "web-sidecar"), Service: "web", Certs: certs,
			Upstreams: []UpstreamConfig{{DestinationName: "db"}}})
	}

	p := start()
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	p.SetChain("db", httpChain("db"))
	if out := p.upstreams["db"].httpOutbound(); out != nil {
		out.Close()
		t.Fatal("SetChain after Close started an L7 outbound")
	}

	// The same, racing: whichever runs first, Close leaves no outbound.
	for range 20 {
		p := start()
		var wg sync.WaitGroup
		wg.Go(func() { p.SetChain("db", httpChain("db")) })
		if err := p.Close(); err != nil {
			t.Fatal(err)
		}
		wg.Wait()
		if out := p.upstreams["db"].httpOutbound(); out != nil {
			out.Close()
			t.Fatal("an L7 outbound started while the proxy closed was left open")
		}
	}
	goleak.VerifyNone(t, ignore)
}

// gatedCerts is a CertSource whose Certificate blocks while the gate is
// shut, after saying so on entered.
type gatedCerts struct {
	*testCerts
	mu      sync.Mutex
	gate    chan struct{} // guarded by mu; nil: open
	entered chan struct{}
}

func (g *gatedCerts) shut() {
	g.mu.Lock()
	g.gate = make(chan struct{})
	g.mu.Unlock()
}

func (g *gatedCerts) open() {
	g.mu.Lock()
	if g.gate != nil {
		close(g.gate)
		g.gate = nil
	}
	g.mu.Unlock()
}

func (g *gatedCerts) Certificate() *tls.Certificate {
	g.mu.Lock()
	gate := g.gate
	g.mu.Unlock()
	if gate != nil {
		select {
		case g.entered <- struct{}{}:
		default:
		}
		<-gate
	}
	return g.testCerts.Certificate()
}

// When a change of chain stops the L7 side while the proxy is closing, the
// stopped side is closed (which waits for its requests) without holding the
// upstream's lock: the upstream's other users go on meanwhile.
func TestProxy_HTTP_stoppedOutboundClosedOutsideTheLock(t *testing.T) {
	t.Parallel()
	ca := newTestCA(t, "root-1")
	b := bundle(t, ca)
	certs := &gatedCerts{testCerts: newTestCerts(ca.leaf("web", leafOpts{}), b), entered: make(chan struct{}, 1)}
	client := startProxy(t, Config{ProxyID: proxyID(t, "web-sidecar"), Service: "web", Certs: certs,
		Upstreams: []UpstreamConfig{{DestinationName: "db"}}})

	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "db") })}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	backend := startProxy(t, Config{ProxyID: proxyID(t, "db-sidecar"), Service: "db", LocalAppAddr: ln.Addr().String(),
		Certs: newTestCerts(ca.leaf("db", leafOpts{}), b)})
	backend.SetServiceConfig(ServiceConfig{Protocol: configentry.ProtocolHTTP})
	client.SetChain("db", httpChain("db"))
	client.SetTargetInstances("db", targetID("", "db"), []Instance{{Node: "n1", Addr: backend.PublicAddr().String(), Service: "db"}})
	u := client.upstreams["db"]
	if u.httpOutbound() == nil {
		t.Fatal("the http chain did not start the L7 side")
	}

	// A request whose dial of the backend waits in the client's
	// certificate source: the L7 side's Close waits for it.
	certs.shut()
	t.Cleanup(certs.open)
	hc := &http.Client{Timeout: 20 * time.Second}
	t.Cleanup(hc.CloseIdleConnections)
	reqDone := make(chan struct{})
	go func() {
		defer close(reqDone)
		if resp, err := hc.Get("http://" + client.UpstreamAddr("db").String() + "/"); err == nil {
			resp.Body.Close()
		}
	}()
	select {
	case <-certs.entered:
	case <-time.After(10 * time.Second):
		t.Fatal("the request did not reach the handshake with the backend")
	}

	// Close has begun (it has not reached the L7 sides yet): the stopped
	// side cannot be closed by one of the proxy's goroutines.
	client.mu.Lock()
	client.closed = true
	client.mu.Unlock()
	chainDone := make(chan struct{})
	go func() {
		defer close(chainDone)
		client.SetChain("db", testChain(chain.Resolver{}, nil, "db"))
	}()
	retry.Run(t, func(r *retry.R) {
		if u.httpOutbound() != nil {
			r.Fatal("the tcp chain has not stopped the L7 side yet")
		}
	})
	instancesDone := make(chan struct{})
	go func() {
		defer close(instancesDone)
		client.SetInstances("db", nil)
	}()
	select {
	case <-instancesDone:
	case <-time.After(5 * time.Second):
		t.Error("SetInstances waited for the stopped L7 side to close: SetChain closes it under the upstream's lock")
	}
	certs.open()
	for name, done := range map[string]chan struct{}{"SetChain": chainDone, "SetInstances": instancesDone, "the request": reqDone} {
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			t.Fatalf("%s did not return once the certificate source answered", name)
		}
	}
}
