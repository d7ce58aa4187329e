package l7

import (
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/trellismesh/trellis/internal/retry"
)

func TestInbound_LocalRequestTimeoutAndLimit(t *testing.T) {
	m := newMesh(t)
	release := make(chan struct{})
	var held atomic.Int64
	a := startApp(t, false, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/hang":
			<-r.Context().Done()
		case "/hold":
			held.Add(1)
			select {
			case <-release:
			case <-r.Context().Done():
			}
			io.WriteString(w, "held")
		default:
			io.WriteString(w, "ok")
		}
	})
	d := startDest(t, m, InboundConfig{Service: "api", LocalAppAddr: a.addr, LocalRequestTimeout: 200 * time.Millisecond})
	s := startSource(t, m, OutboundConfig{DestinationName: "api"})
	s.out.SetTargetEndpoints(targetID("api"), []Endpoint{d.endpoint()})
	c := client(t)
	status, body, _ := get(t, c, s.url+"/hang")
	if status != 504 || !strings.Contains(body, "trellis mesh: api did not answer within 200ms (local request timeout)") {
		t.Errorf("hang: %d %q", status, body)
	}
	waitMetric(t, &d.in.reg, "inbound.timeouts", 1, "proxy="+d.in.cfg.ProxyID)

	d = startDest(t, m, InboundConfig{Service: "api", LocalAppAddr: a.addr, MaxConcurrentRequests: 1})
	s.out.SetTargetEndpoints(targetID("api"), []Endpoint{d.endpoint()})
	done := make(chan int, 1)
	go func() {
		resp, err := c.Get(s.url + "/hold")
		if err != nil {
			done <- 0
			return
		}
		resp.Body.Close()
		done <- resp.StatusCode
	}()
	retry.Run(t, func(r *retry.R) {
		if held.Load() != 1 {
			r.Fatal("not held yet")
		}
	})
	status, body, hdr := get(t, c, s.url+"/")
	close(release)
	if status != 503 || hdr.Get(HeaderOverloaded) != "true" || !strings.HasPrefix(body, "trellis mesh: ") {
		t.Errorf("over the inbound limit: %d %q", status, body)
	}
	if st := <-done; st != 200 {
		t.Errorf("held request: %d", st)
	}
	waitMetric(t, &d.in.reg, "inbound.overloaded", 1, "proxy="+d.in.cfg.ProxyID)
}

func TestInbound_AppDown(t *testing.T) {
	m := newMesh(t)
	a := startApp(t, false, func(w http.ResponseWriter, r *http.Request) {})
	addr := a.addr
	a.srv.Close()
	d := startDest(t, m, InboundConfig{Service: "api", LocalAppAddr: addr})
	s := startSource(t, m, OutboundConfig{DestinationName: "api"})
	s.out.SetTargetEndpoints(targetID("api"), []Endpoint{d.endpoint()})
	status, body, _ := get(t, client(t), s.url+"/")
	if status != 502 || body != "trellis mesh: the application of api could not be reached\n" {
		t.Errorf("app down: %d %q", status, body)
	}
	waitMetric(t, &d.in.reg, "inbound.app_errors", 1, "proxy="+d.in.cfg.ProxyID)
}

func TestOutbound_InstanceRestartAndReverify(t *testing.T) {
	m := newMesh(t)
	a := startApp(t, false, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
	d := startDest(t, m, InboundConfig{Service: "api", LocalAppAddr: a.addr})
	s := startSource(t, m, OutboundConfig{DestinationName: "api"})
	s.out.SetTargetEndpoints(targetID("api"), []Endpoint{d.endpoint()})
	c := client(t)
	if status, _, _ := get(t, c, s.url+"/"); status != 200 {
		t.Fatalf("before: %d", status)
	}

	// Reverify against roots that do not include the source's closes its
	// connection; the next request opens a new one.
	other := newMesh(t)
	if n := d.in.Reverify(other.bundle); n != 1 {
		t.Fatalf("Reverify closed %d connections, want 1", n)
	}
	if n := d.in.Reverify(m.bundle); n != 0 {
		t.Fatalf("Reverify with the right roots closed %d connections", n)
	}
	if status, body, _ := get(t, c, s.url+"/"); status != 200 {
		t.Fatalf("after Reverify: %d %q", status, body)
	}

	// The instance restarts on the same address: the pooled connection is
	// dead, and a GET goes through on a new one.
	addr := d.addr()
	d.stop()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Skipf("cannot listen on %s again: %v", addr, err)
	}
	startDestOn(t, m, InboundConfig{Service: "api", LocalAppAddr: a.addr}, ln)
	for i := range 5 {
		if status, body, _ := get(t, c, s.url+"/"); status != 200 {
			t.Fatalf("after restart, request %d: %d %q", i, status, body)
		}
	}
	if n := s.out.Handshakes(); n != 3 {
		t.Errorf("%d handshakes, want 3 (first, after Reverify, after the restart)", n)
	}
}
