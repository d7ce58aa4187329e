package l7

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/trellismesh/trellis/connect"
	"github.com/trellismesh/trellis/connect/proxy/l7/h2link"
	"github.com/trellismesh/trellis/internal/retry"
)

// rawApp is an HTTP/1.1 application written by hand, to misbehave: answer
// returns the bytes written (in one write) for the n-th request it reads
// (0 first, counted over every connection).
func rawApp(t *testing.T, answer func(n int, req *http.Request) string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		conns []net.Conn
		seq   atomic.Int64
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				br := bufio.NewReader(c)
				for {
					req, err := http.ReadRequest(br)
					if err != nil {
						return
					}
					io.Copy(io.Discard, req.Body)
					if _, err := io.WriteString(c, answer(int(seq.Add(1)-1), req)); err != nil {
						return
					}
				}
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().String()
}

// An answer followed by more bytes than it declares (a second answer, a
// body to a HEAD or a 204, more than the Content-Length) must not leave its
// connection kept: the next request would read those bytes as its answer.
func TestAppConns_extraBytesAfterAnAnswerSpoilTheConnection(t *testing.T) {
	const fresh = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfresh"
	for _, c := range []struct {
		name, method, first, firstBody string
	}{
		{"two answers to one request", "GET", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfirst" + "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nstale", "first"},
		{"more than the Content-Length", "GET", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhiEXTRA", "hi"},
		{"a body to a HEAD", "HEAD", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", ""},
		{"a body to a 204", "GET", "HTTP/1.1 204 No Content\r\n\r\noops", ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			addr := rawApp(t, func(n int, _ *http.Request) string {
				if n == 0 {
					return c.first
				}
				return fresh
			})
			p := newAppConns(addr, time.Second)
			defer p.close()
			for i, want := range []string{c.firstBody, "fresh"} {
				method := c.method
				if i > 0 {
					method = "GET"
				}
				resp, err := p.roundTrip(context.Background(), appRequest(t, addr, method, "/", ""))
				if err != nil {
					t.Fatalf("request %d: %v", i, err)
				}
				got, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				if err != nil || string(got) != want {
					t.Fatalf("request %d: answer %q, %v; want %q", i, got, err, want)
				}
			}
		})
	}
}

// A request body that does not have the length it declares is not sent,
// neither cut to the declared length nor short of it.
func TestAppConns_requestBodyOfAnotherLength(t *testing.T) {
	addr, _, _ := countingApp(t, func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		w.Write(b)
	})
	p := newAppConns(addr, time.Second)
	defer p.close()
	for _, c := range []struct {
		declared int64
		body     string
	}{{3, "abcdef"}, {6, "abc"}} {
		req := appRequest(t, addr, "POST", "/", c.body)
		req.ContentLength = c.declared
		resp, err := p.roundTrip(context.Background(), req)
		if err == nil {
			got, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			t.Fatalf("a body of %d bytes declared %d was sent: the application got %q", len(c.body), c.declared, got)
		}
		if !strings.Contains(err.Error(), "request body") {
			t.Errorf("body of %d bytes declared %d: error %q does not name the request body", len(c.body), c.declared, err)
		}
	}
}

// A POST the application read on a kept connection, then closed the
// connection without answering, may have been served: it is not sent again
// (only idempotent methods are, as net/http and the outbound side do).
func TestAppConns_postIsNotSentTwiceOnAStaleConnection(t *testing.T) {
	var posts atomic.Int64
	addr, _, _ := countingApp(t, func(w http.ResponseWriter, r *http.Request) {
		if r.Method != "POST" {
			io.WriteString(w, "ok")
			return
		}
		io.ReadAll(r.Body)
		posts.Add(1)
		c, _, err := w.(http.Hijacker).Hijack()
		if err == nil {
			c.Close()
		}
	})
	p := newAppConns(addr, time.Second)
	defer p.close()
	resp, err := p.roundTrip(context.Background(), appRequest(t, addr, "GET", "/", ""))
	if err != nil {
		t.Fatal(err)
	}
	io.ReadAll(resp.Body)
	resp.Body.Close()
	if _, err := p.roundTrip(context.Background(), appRequest(t, addr, "POST", "/pay", "x")); err == nil {
		t.Fatal("a POST the application dropped without answering succeeded")
	}
	if n := posts.Load(); n != 1 {
		t.Fatalf("the application got the POST %d times, want 1", n)
	}
}

// A failure names the application and what failed.
func TestAppConns_errorsSayWhatFailed(t *testing.T) {
	addr := rawApp(t, func(n int, _ *http.Request) string { return "garbage\r\n\r\n" })
	p := newAppConns(addr, time.Second)
	defer p.close()
	_, err := p.roundTrip(context.Background(), appRequest(t, addr, "GET", "/", ""))
	if err == nil || !strings.Contains(err.Error(), "application at "+addr) || !strings.Contains(err.Error(), "answer") {
		t.Fatalf("a malformed answer: error %v, want it to name the answer of the application at %s", err, addr)
	}
}

// Idle connections are closed after appIdleTimeout, even those at the
// bottom of the idle stack that get never pops while requests are few.
func TestAppConns_idleConnectionsExpire(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var closed atomic.Int64
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }),
		ConnState: func(_ net.Conn, s http.ConnState) {
			if s == http.StateClosed {
				closed.Add(1)
			}
		},
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.Serve(ln)
	}()
	defer func() {
		srv.Close()
		<-done
	}()
	addr := ln.Addr().String()
	p := newAppConns(addr, time.Second)
	defer p.close()
	keepConns(t, p, addr, 3)
	p.mu.Lock()
	if len(p.idle) != 3 {
		p.mu.Unlock()
		t.Fatalf("%d idle connections, want 3", len(p.idle))
	}
	// The two at the bottom have been idle for longer than appIdleTimeout.
	for _, ac := range p.idle[:2] {
		ac.idleAt = ac.idleAt.Add(-appIdleTimeout - time.Second)
	}
	p.mu.Unlock()
	for range 3 {
		resp, err := p.roundTrip(context.Background(), appRequest(t, addr, "GET", "/", ""))
		if err != nil {
			t.Fatal(err)
		}
		io.ReadAll(resp.Body)
		resp.Body.Close()
	}
	retry.Run(t, func(r *retry.R) {
		if n := closed.Load(); n != 2 {
			r.Fatalf("the application saw %d connections closed, want the 2 idle too long", n)
		}
	})
}

// holdFirst is a listener that keeps its first connection from its
// server: a TLS handshake on it is never answered.
type holdFirst struct {
	net.Listener
	mu   sync.Mutex
	n    int
	held net.Conn
}

func (l *holdFirst) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		l.mu.Lock()
		l.n++
		first := l.n == 1
		if first {
			l.held = c
		}
		l.mu.Unlock()
		if !first {
			return c, nil
		}
	}
}

func (l *holdFirst) Close() error {
	l.mu.Lock()
	if l.held != nil {
		l.held.Close()
	}
	l.mu.Unlock()
	return l.Listener.Close()
}

// A dial ended by its own request's context does not fail the requests
// waiting for it: they dial themselves.
func TestPool_canceledDialDoesNotFailItsWaiters(t *testing.T) {
	m := newMesh(t)
	a := startApp(t, false, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := &holdFirst{Listener: inner}
	d := startDestOn(t, m, InboundConfig{Service: "api", LocalAppAddr: a.addr}, ln)
	s := startSource(t, m, OutboundConfig{DestinationName: "api"})
	h := s.out.pool.host(d.addr(), "api")

	ctxA, cancelA := context.WithCancel(context.Background())
	defer cancelA()
	errA := make(chan error, 1)
	go func() {
		cc, _, err := h.get(ctxA, 0, 0, 10*time.Second)
		if cc != nil {
			cc.Release()
		}
		errA <- err
	}()
	retry.Run(t, func(r *retry.R) {
		h.mu.Lock()
		dialling := h.dial != nil
		h.mu.Unlock()
		if !dialling {
			r.Fatal("the first request is not dialling yet")
		}
	})
	type result struct {
		release func()
		err     error
	}
	resB := make(chan result, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		cc, _, err := h.get(ctx, 0, 0, 10*time.Second)
		if err != nil {
			resB <- result{err: err}
			return
		}
		resB <- result{release: cc.Release}
	}()
	retry.Run(t, func(r *retry.R) {
		if n := s.out.pool.pending.Load(); n != 1 {
			r.Fatalf("%d requests wait for the dial, want 1", n)
		}
	})
	cancelA()
	if err := <-errA; !errors.Is(err, context.Canceled) {
		t.Errorf("the canceled request: %v", err)
	}
	b := <-resB
	if b.err != nil {
		t.Fatalf("the request waiting for a dial its maker canceled: %v", b.err)
	}
	b.release()
	if n := s.out.pool.pending.Load(); n != 0 {
		t.Errorf("pending is %d after the requests, want 0", n)
	}
}

// A connection that closed before it was drained is not kept among the
// draining ones (its close, which forgets it, has happened already).
func TestPool_drainOfAClosedConnectionIsForgotten(t *testing.T) {
	s, d, _ := pairOf(t, func(w http.ResponseWriter, r *http.Request) {})
	p := s.out.pool
	h := p.host(d.addr(), "api")
	cc, _, err := h.get(context.Background(), 0, 0, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	cc.Release()
	// A probe: cc is among the draining ones until its close forgets it,
	// which tells when that has happened.
	p.mu.Lock()
	p.draining = map[*h2link.ClientConn]struct{}{cc: {}}
	p.mu.Unlock()
	d.stop() // the instance goes: cc closes
	retry.Run(t, func(r *retry.R) {
		p.mu.Lock()
		_, there := p.draining[cc]
		p.mu.Unlock()
		if there || cc.Err() == nil {
			r.Fatal("the connection has not closed yet")
		}
	})
	p.drainAll() // cc, dead, is still among h's connections
	p.mu.Lock()
	n := len(p.draining)
	p.mu.Unlock()
	if n != 0 {
		t.Fatalf("%d closed connections kept as draining, want 0", n)
	}
	if c := p.conns.Load(); c != 0 {
		t.Errorf("conns is %d, want 0", c)
	}
}

// readSignal is a connection that tells when it is first read.
type readSignal struct {
	net.Conn
	once    sync.Once
	reading chan struct{}
}

func (c *readSignal) Read(b []byte) (int, error) {
	c.once.Do(func() { close(c.reading) })
	return c.Conn.Read(b)
}

// Close ends a ServeConn still in its handshake, whatever its context.
func TestInbound_closeEndsAHandshake(t *testing.T) {
	m := newMesh(t)
	d := startDest(t, m, InboundConfig{Service: "api", LocalAppAddr: "127.0.0.1:1"})
	server, peer := net.Pipe()
	defer peer.Close() // the peer never says a word
	rc := &readSignal{Conn: server, reading: make(chan struct{})}
	served := make(chan struct{})
	go func() {
		defer close(served)
		d.in.ServeConn(context.Background(), tls.Server(rc, connect.ServerTLSConfig(m.certs("api"), ALPN)))
	}()
	<-rc.reading // in the handshake
	closed := make(chan struct{})
	go func() {
		defer close(closed)
		d.in.Close()
	}()
	retry.Run(t, func(r *retry.R) {
		select {
		case <-closed:
		default:
			r.Fatal("Close has not returned: it waits for a handshake that never ends")
		}
	})
	<-served
}
