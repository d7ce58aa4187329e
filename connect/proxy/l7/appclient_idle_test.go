package l7

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// The unasked answer of a server whose idle timeout fired on a kept
// connection (nginx, Node.js and others send it, then close).
const timeout408 = "HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"

// idleTimeoutApp is an HTTP/1.1 application written by hand: it answers
// every request "conn N" (N counts its connections from 1), and on its
// first connection, once it has answered one request, it waits for expire
// and then does what a server whose idle timeout fires does: it writes
// unasked, and closes the connection when closes is set. It closes
// expired when it has.
type idleTimeoutApp struct {
	addr    string
	expire  chan struct{}
	expired chan struct{}
	conns   atomic.Int64
	// onFirst counts the requests that came on the first connection.
	onFirst atomic.Int64
}

func startIdleTimeoutApp(t *testing.T, unasked string, closes bool) *idleTimeoutApp {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a := &idleTimeoutApp{addr: ln.Addr().String(), expire: make(chan struct{}), expired: make(chan struct{})}
	stop := make(chan struct{})
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		conns []net.Conn
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			id := a.conns.Add(1)
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				br := bufio.NewReader(c)
				for n := 0; ; n++ {
					req, err := http.ReadRequest(br)
					if err != nil {
						return
					}
					if id == 1 {
						a.onFirst.Add(1)
					}
					io.Copy(io.Discard, req.Body)
					body := fmt.Sprintf("conn %d", id)
					if _, err := fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(body), body); err != nil {
						return
					}
					if id != 1 || n != 0 {
						continue
					}
					select {
					case <-a.expire:
					case <-stop:
						return
					}
					_, err = io.WriteString(c, unasked)
					if closes {
						c.Close()
					}
					close(a.expired)
					if err != nil || closes {
						return
					}
				}
			}()
		}
	}()
	t.Cleanup(func() {
		close(stop)
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return a
}

// timeOut has the app time its first connection out and waits until it has.
func (a *idleTimeoutApp) timeOut(t *testing.T) {
	t.Helper()
	close(a.expire)
	select {
	case <-a.expired:
	case <-time.After(10 * time.Second):
		t.Fatal("the application has not timed its kept connection out after 10s")
	}
}

// getBody sends a GET through p and returns the status and body.
func getBody(t *testing.T, p *appConns, addr string) (int, string) {
	t.Helper()
	resp, err := p.roundTrip(context.Background(), appRequest(t, addr, "GET", "/", ""))
	if err != nil {
		t.Fatalf("GET to the application at %s: %v", addr, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET to the application at %s: read the answer: %v", addr, err)
	}
	return resp.StatusCode, string(b)
}

// A server that times a kept connection out writes a 408 on it and closes
// it; the next request gets the application's answer on a new connection,
// not that 408: the check of a connection idle past checkAfter finds the
// 408 waiting, and when the connection is reused unchecked, the 408 it
// reads is taken for what it is.
func TestAppConns_408OfAnIdleTimeoutIsNotTheNextAnswer(t *testing.T) {
	for _, c := range []struct {
		name       string
		checkAfter time.Duration
	}{
		{"checked before reuse", 0},
		{"reused unchecked", time.Hour},
	} {
		t.Run(c.name, func(t *testing.T) {
			a := startIdleTimeoutApp(t, timeout408, true)
			p := newAppConns(a.addr, time.Second)
			p.checkAfter = c.checkAfter
			defer p.close()
			if status, body := getBody(t, p, a.addr); status != 200 || body != "conn 1" {
				t.Fatalf("first request: %d %q, want 200 \"conn 1\"", status, body)
			}
			a.timeOut(t)
			if status, body := getBody(t, p, a.addr); status != 200 || body != "conn 2" {
				t.Fatalf("request after the application timed its kept connection out: %d %q, want 200 \"conn 2\"", status, body)
			}
			if n := a.conns.Load(); n != 2 {
				t.Errorf("the application saw %d connections, want 2", n)
			}
		})
	}
}

// Bytes an application sent unasked on a kept connection (here a whole
// answer, the connection left open) spoil it: a connection idle past
// checkAfter is checked before it is reused, and not given the request.
func TestAppConns_unaskedBytesOnAnIdleConnectionSpoilIt(t *testing.T) {
	a := startIdleTimeoutApp(t, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nstale", false)
	p := newAppConns(a.addr, time.Second)
	p.checkAfter = 0
	defer p.close()
	if status, body := getBody(t, p, a.addr); status != 200 || body != "conn 1" {
		t.Fatalf("first request: %d %q, want 200 \"conn 1\"", status, body)
	}
	a.timeOut(t)
	if status, body := getBody(t, p, a.addr); status != 200 || body != "conn 2" {
		t.Fatalf("request after the application wrote on its kept connection: %d %q, want 200 \"conn 2\"", status, body)
	}
	if n := a.onFirst.Load(); n != 1 {
		t.Errorf("the spoiled connection carried %d requests, want 1", n)
	}
}

// A connection checked and found as it was left is reused.
func TestAppConns_checkedIdleConnectionIsReused(t *testing.T) {
	addr, conns, _ := countingApp(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
	p := newAppConns(addr, time.Second)
	p.checkAfter = 0
	defer p.close()
	for range 3 {
		if status, body := getBody(t, p, addr); status != 200 || body != "ok" {
			t.Fatalf("answer %d %q, want 200 \"ok\"", status, body)
		}
	}
	if n := conns.Load(); n != 1 {
		t.Fatalf("%d connections for 3 requests in a row, each checked, want 1", n)
	}
}

// A 408 is the application's answer when it comes on a new connection,
// and when it answers a request that is not sent twice (a POST, which the
// application may have served); a GET that got one on a kept connection
// goes again on a new one.
func TestAppConns_408OnAKeptConnection(t *testing.T) {
	const (
		ok      = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
		timeout = "HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\n\r\n"
	)
	t.Run("new connection", func(t *testing.T) {
		addr := rawApp(t, func(int, *http.Request) string { return timeout })
		p := newAppConns(addr, time.Second)
		defer p.close()
		if status, _ := getBody(t, p, addr); status != http.StatusRequestTimeout {
			t.Fatalf("a 408 on a new connection: status %d, want it passed on", status)
		}
	})
	t.Run("GET", func(t *testing.T) {
		addr := rawApp(t, func(n int, _ *http.Request) string {
			if n == 1 {
				return timeout
			}
			return ok
		})
		p := newAppConns(addr, time.Second)
		p.checkAfter = time.Hour
		defer p.close()
		for i := range 2 {
			if status, body := getBody(t, p, addr); status != 200 || body != "ok" {
				t.Fatalf("GET %d: %d %q, want 200 \"ok\"", i, status, body)
			}
		}
	})
	t.Run("POST", func(t *testing.T) {
		var posts atomic.Int64
		addr := rawApp(t, func(n int, req *http.Request) string {
			if req.Method != "POST" {
				return ok
			}
			posts.Add(1)
			return timeout
		})
		p := newAppConns(addr, time.Second)
		p.checkAfter = time.Hour
		defer p.close()
		if status, _ := getBody(t, p, addr); status != 200 {
			t.Fatalf("GET: %d", status)
		}
		resp, err := p.roundTrip(context.Background(), appRequest(t, addr, "POST", "/pay", "x"))
		if err != nil {
			t.Fatalf("POST: %v", err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusRequestTimeout {
			t.Errorf("POST answered 408 on a kept connection: status %d, want the 408 passed on", resp.StatusCode)
		}
		if n := posts.Load(); n != 1 {
			t.Errorf("the application got the POST %d times, want 1", n)
		}
	})
}

// Through the mesh: a request after the application timed out the
// destination proxy's kept connection with a 408 gets the application's
// answer, on a new connection.
func TestInbound_408OfAnIdleTimeoutIsNotTheNextAnswer(t *testing.T) {
	m := newMesh(t)
	a := startIdleTimeoutApp(t, timeout408, true)
	d := startDest(t, m, InboundConfig{Service: "api", LocalAppAddr: a.addr})
	s := startSource(t, m, OutboundConfig{DestinationName: "api"})
	s.out.SetTargetEndpoints(targetID("api"), []Endpoint{d.endpoint()})
	c := client(t)
	if status, body, _ := get(t, c, s.url+"/"); status != 200 || body != "conn 1" {
		t.Fatalf("first request: %d %q, want 200 \"conn 1\"", status, body)
	}
	a.timeOut(t)
	if status, body, _ := get(t, c, s.url+"/"); status != 200 || body != "conn 2" {
		t.Fatalf("request after the application timed its kept connection out: %d %q, want 200 \"conn 2\"", status, body)
	}
}
