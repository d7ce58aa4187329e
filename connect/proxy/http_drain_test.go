package proxy

import (
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/trellismesh/trellis/connect/chain"
	"github.com/trellismesh/trellis/connect/configentry"
)

// A change of the service's configuration replaces its L7 inbound without
// failing the requests in flight: they finish on the old one while new
// requests reach the new one.
func TestProxy_HTTP_serviceConfigChangeDrains(t *testing.T) {
	t.Parallel()
	m := newMesh(t)
	entered := make(chan struct{}, 1)
	release := make(chan struct{})
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			entered <- struct{}{}
			<-release
		}
		io.WriteString(w, "db "+r.URL.Path)
	})}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	app := ln.Addr().String()
	backend := startProxy(t, Config{ProxyID: proxyID(t, "db-sidecar"), Service: "db", LocalAppAddr: app,
		Certs: newTestCerts(m.ca.leaf("db", leafOpts{}), bundle(t, m.ca))})
	backend.SetServiceConfig(ServiceConfig{Protocol: configentry.ProtocolHTTP})
	c := testChain(chain.Resolver{}, nil, "db")
	c.Protocol = configentry.ProtocolHTTP
	m.client.SetChain("db", c)
	m.client.SetTargetInstances("db", targetID("", "db"), []Instance{{Node: "n1", Addr: backend.PublicAddr().String(), Service: "db"}})
	base := "http://" + m.client.UpstreamAddr("db").String()
	hc := &http.Client{Timeout: 20 * time.Second}
	t.Cleanup(hc.CloseIdleConnections)
	get := func(path string) (string, error) {
		resp, err := hc.Get(base + path)
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return resp.Status + " " + string(b), err
	}
	if got, err := get("/first"); err != nil || got != "200 OK db /first" {
		t.Fatalf("first request: %q, %v", got, err)
	}

	slow := make(chan string, 1)
	go func() {
		got, err := get("/slow")
		if err != nil {
			got = err.Error()
		}
		slow <- got
	}()
	select {
	case <-entered:
	case <-time.After(10 * time.Second):
		t.Fatal("the slow request did not reach the application")
	}
	backend.SetServiceConfig(ServiceConfig{Protocol: configentry.ProtocolHTTP, MaxInboundConnections: 50})
	if got, err := get("/after"); err != nil || got != "200 OK db /after" {
		t.Errorf("a request after the change: %q, %v", got, err)
	}
	close(release)
	if got := <-slow; got != "200 OK db /slow" {
		t.Errorf("the request in flight during the change: %q", got)
	}
}
