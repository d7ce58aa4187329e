package l7

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/trellismesh/trellis/internal/retry"
)

// countingApp is an HTTP/1.1 application that counts its connections.
func countingApp(t *testing.T, h http.HandlerFunc) (addr string, conns *atomic.Int64, app *testApp) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	conns = new(atomic.Int64)
	app = &testApp{idle: map[net.Conn]bool{}}
	app.srv = &http.Server{Handler: h, ConnState: func(c net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
		app.mu.Lock()
		defer app.mu.Unlock()
		if s == http.StateIdle {
			app.idle[c] = true
		} else {
			delete(app.idle, c)
		}
	}}
	go app.srv.Serve(ln)
	t.Cleanup(func() { app.srv.Close() })
	return ln.Addr().String(), conns, app
}

// testApp is countingApp's server, which knows its idle connections.
type testApp struct {
	srv  *http.Server
	mu   sync.Mutex
	idle map[net.Conn]bool // guarded by mu
}

// closeIdle waits until n connections are idle (the server is done with
// their last answer), then closes them, as a server's idle timeout does.
func (a *testApp) closeIdle(t *testing.T, n int) {
	t.Helper()
	retry.Run(t, func(r *retry.R) {
		a.mu.Lock()
		defer a.mu.Unlock()
		if len(a.idle) != n {
			r.Fatalf("%d idle connections, want %d", len(a.idle), n)
		}
	})
	a.srv.SetKeepAlivesEnabled(false) // closes idle connections
	a.srv.SetKeepAlivesEnabled(true)
}

// keepConns has p keep n connections to the application at addr: n
// requests at once, their answers read to the end.
func keepConns(t *testing.T, p *appConns, addr string, n int) {
	t.Helper()
	var held []*http.Response
	for range n {
		resp, err := p.roundTrip(context.Background(), appRequest(t, addr, "GET", "/", ""))
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, resp)
	}
	for _, resp := range held {
		io.ReadAll(resp.Body)
		resp.Body.Close()
	}
}

func appRequest(t *testing.T, addr, method, path, body string) *http.Request {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, "http://"+addr+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if body == "" {
		req.Body = nil
	}
	return req
}

func TestAppConns_reuseAndBodies(t *testing.T) {
	addr, conns, _ := countingApp(t, func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		w.Header().Set("X-Len", strings.Repeat("x", len(b)))
		w.Write([]byte(r.Method + " " + r.URL.RequestURI() + " " + string(b)))
	})
	p := newAppConns(addr, time.Second)
	defer p.close()
	for i := range 20 {
		body := ""
		if i%2 == 1 {
			body = "payload"
		}
		resp, err := p.roundTrip(context.Background(), appRequest(t, addr, "POST", "/a?b=c", body))
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || string(got) != "POST /a?b=c "+body {
			t.Fatalf("answer %q, %v", got, err)
		}
	}
	if n := conns.Load(); n != 1 {
		t.Fatalf("%d connections for 20 requests in a row, want 1", n)
	}
}

func TestAppConns_staleConnectionIsRetried(t *testing.T) {
	addr, conns, srv := countingApp(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
	p := newAppConns(addr, time.Second)
	defer p.close()
	get := func() {
		t.Helper()
		resp, err := p.roundTrip(context.Background(), appRequest(t, addr, "GET", "/", ""))
		if err != nil {
			t.Fatal(err)
		}
		if b, _ := io.ReadAll(resp.Body); string(b) != "ok" {
			t.Fatalf("answer %q", b)
		}
		resp.Body.Close()
	}
	get()
	// The application closes its idle connection (as a server with an idle
	// timeout does); the next request meets it closed and goes on a new one.
	srv.closeIdle(t, 1)
	get()
	if n := conns.Load(); n != 2 {
		t.Fatalf("%d connections, want 2", n)
	}

	// Several kept connections, all closed at once: the request still
	// goes through (it tries them, then a new one).
	keepConns(t, p, addr, 4)
	srv.closeIdle(t, 4)
	get()
}

func TestAppConns_unreadBodyClosesTheConnection(t *testing.T) {
	addr, conns, _ := countingApp(t, func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(strings.Repeat("z", 1<<20)))
	})
	p := newAppConns(addr, time.Second)
	defer p.close()
	for range 2 {
		resp, err := p.roundTrip(context.Background(), appRequest(t, addr, "GET", "/", ""))
		if err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 10)
		io.ReadFull(resp.Body, buf)
		resp.Body.Close()
	}
	if n := conns.Load(); n != 2 {
		t.Fatalf("%d connections, want 2 (a half-read answer spoils its connection)", n)
	}
}

func TestAppConns_contextEndsTheRequest(t *testing.T) {
	release := make(chan struct{})
	addr, _, _ := countingApp(t, func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	})
	defer close(release)
	p := newAppConns(addr, time.Second)
	defer p.close()
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, err := p.roundTrip(ctx, appRequest(t, addr, "GET", "/", ""))
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("a request past its deadline: %v", err)
	}
}

func TestAppConns_takes(t *testing.T) {
	p := newAppConns("127.0.0.1:1", time.Second)
	small := appRequest(t, "h", "POST", "/", "x")
	big := appRequest(t, "h", "POST", "/", strings.Repeat("x", MaxReplayBody+1))
	streamed := appRequest(t, "h", "POST", "/", "x")
	streamed.ContentLength = -1
	for _, c := range []struct {
		req  *http.Request
		want bool
	}{{appRequest(t, "h", "GET", "/", ""), true}, {small, true}, {big, false}, {streamed, false}} {
		if got := p.takes(c.req); got != c.want {
			t.Errorf("takes(%s, length %d) = %v", c.req.Method, c.req.ContentLength, got)
		}
	}
}
