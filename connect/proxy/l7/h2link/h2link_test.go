package h2link

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/trellismesh/trellis/internal/retry"
	"go.uber.org/goleak"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// echo is the handler of the tests: it answers with what it was sent and
// how, as the path asks.
func echo(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case "/echo":
		w.Header().Set("X-Method", r.Method)
		w.Header().Set("X-Query", r.URL.RawQuery)
		w.Header().Set("X-Host", r.Host)
		w.Header().Set("X-In", r.Header.Get("X-In"))
		body, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		if tr := r.Trailer.Get("X-Req-Trailer"); tr != "" {
			w.Header().Set("X-Got-Trailer", tr)
		}
		w.Write(body)
	case "/trailers":
		w.Header().Set("Trailer", "Grpc-Status")
		w.Header().Set("Content-Type", "application/grpc")
		w.WriteHeader(200)
		w.Write([]byte("message"))
		w.(http.Flusher).Flush()
		w.Header().Set("Grpc-Status", "0")
		w.Header().Set(http.TrailerPrefix+"Grpc-Message", "fine")
	case "/stream":
		// Lines until the client goes away.
		for i := 0; ; i++ {
			if _, err := fmt.Fprintf(w, "line %d\n", i); err != nil {
				return
			}
			w.(http.Flusher).Flush()
			select {
			case <-r.Context().Done():
				return
			case <-time.After(time.Millisecond):
			}
		}
	case "/big":
		w.Write(bytes.Repeat([]byte("0123456789abcdef"), 5<<20/16)) // 5 MiB: past every window
	case "/status":
		w.WriteHeader(http.StatusNoContent)
	case "/panic":
		panic("on purpose")
	case "/abort":
		w.Write([]byte("partial"))
		w.(http.Flusher).Flush()
		panic(http.ErrAbortHandler)
	case "/ignore-body":
		w.Write([]byte("did not read"))
	default:
		http.NotFound(w, r)
	}
}

// ourServer serves echo with ServerConn on a loopback listener.
func ourServer(t *testing.T, cfg ServerConfig) (addr string, conns func() []*ServerConn) {
	t.Helper()
	return ourServerWith(t, http.HandlerFunc(echo), cfg)
}

// ourServerWith serves h with ServerConn on a loopback listener.
func ourServerWith(t *testing.T, h http.Handler, cfg ServerConfig) (addr string, conns func() []*ServerConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var mu sync.Mutex
	var all []*ServerConn
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			sc := NewServerConn(nc, h, cfg)
			mu.Lock()
			all = append(all, sc)
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				sc.Serve(ctx)
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		cancel()
		wg.Wait()
	})
	return ln.Addr().String(), func() []*ServerConn {
		mu.Lock()
		defer mu.Unlock()
		return append([]*ServerConn(nil), all...)
	}
}

// stdServer serves echo with net/http's HTTP/2 (prior knowledge).
func stdServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := new(http.Protocols)
	p.SetUnencryptedHTTP2(true)
	srv := &http.Server{Handler: http.HandlerFunc(echo), Protocols: p}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

func ourClient(t *testing.T, addr string) *ClientConn {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	cc, err := NewClientConn(nc, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

// roundTripper is what the tests send requests with.
type roundTripper interface {
	RoundTrip(*http.Request) (*http.Response, error)
}

func stdClient(t *testing.T) roundTripper {
	p := new(http.Protocols)
	p.SetUnencryptedHTTP2(true)
	tr := &http.Transport{Protocols: p}
	t.Cleanup(tr.CloseIdleConnections)
	return tr
}

// pairs are the ends tested against each other: ours with ours, and each
// of ours with net/http's.
func pairs(t *testing.T) map[string]func(t *testing.T) (roundTripper, string) {
	return map[string]func(t *testing.T) (roundTripper, string){
		"ours-ours": func(t *testing.T) (roundTripper, string) {
			addr, _ := ourServer(t, ServerConfig{})
			return ourClient(t, addr), addr
		},
		"ours-std": func(t *testing.T) (roundTripper, string) {
			addr := stdServer(t)
			return ourClient(t, addr), addr
		},
		"std-ours": func(t *testing.T) (roundTripper, string) {
			addr, _ := ourServer(t, ServerConfig{})
			return stdClient(t), addr
		},
	}
}

func newRequest(t *testing.T, method, addr, path string, body io.Reader) *http.Request {
	t.Helper()
	req, err := http.NewRequest(method, "http://"+addr+path, body)
	if err != nil {
		t.Fatal(err)
	}
	return req
}

func readAll(t *testing.T, resp *http.Response) string {
	t.Helper()
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read the body: %v", err)
	}
	return string(b)
}

func TestRoundTrip(t *testing.T) {
	for name, setup := range pairs(t) {
		t.Run(name, func(t *testing.T) {
			rt, addr := setup(t)

			t.Run("get", func(t *testing.T) {
				req := newRequest(t, "GET", addr, "/echo?a=1&b=2", nil)
				req.Header.Set("X-In", "hello")
				resp, err := rt.RoundTrip(req)
				if err != nil {
					t.Fatal(err)
				}
				if got := readAll(t, resp); resp.StatusCode != 200 || got != "" {
					t.Fatalf("status %d body %q", resp.StatusCode, got)
				}
				for k, want := range map[string]string{"X-Method": "GET", "X-Query": "a=1&b=2", "X-Host": addr, "X-In": "hello"} {
					if got := resp.Header.Get(k); got != want {
						t.Errorf("%s: %q, want %q", k, got, want)
					}
				}
			})

			for _, size := range []int{1, 1000, 64 << 10, 3 << 20} {
				t.Run(fmt.Sprintf("post-%d", size), func(t *testing.T) {
					body := make([]byte, size)
					rand.Read(body)
					resp, err := rt.RoundTrip(newRequest(t, "POST", addr, "/echo", bytes.NewReader(body)))
					if err != nil {
						t.Fatal(err)
					}
					if got := readAll(t, resp); got != string(body) {
						t.Fatalf("echoed %d bytes, sent %d", len(got), size)
					}
					if resp.ContentLength != -1 && resp.ContentLength != int64(size) {
						t.Fatalf("content length %d", resp.ContentLength)
					}
				})
			}

			t.Run("streamed-request-body", func(t *testing.T) {
				pr, pw := io.Pipe()
				go func() {
					for i := 0; i < 100; i++ {
						fmt.Fprintf(pw, "chunk %d;", i)
					}
					pw.Close()
				}()
				req := newRequest(t, "PUT", addr, "/echo", pr)
				req.ContentLength = -1
				resp, err := rt.RoundTrip(req)
				if err != nil {
					t.Fatal(err)
				}
				if got := readAll(t, resp); !strings.HasPrefix(got, "chunk 0;") || !strings.HasSuffix(got, "chunk 99;") {
					t.Fatalf("echoed %q", got)
				}
			})

			t.Run("request-trailers", func(t *testing.T) {
				req := newRequest(t, "POST", addr, "/echo", io.MultiReader(strings.NewReader("x")))
				req.ContentLength = -1
				req.Trailer = http.Header{"X-Req-Trailer": {"t1"}}
				resp, err := rt.RoundTrip(req)
				if err != nil {
					t.Fatal(err)
				}
				readAll(t, resp)
				if got := resp.Header.Get("X-Got-Trailer"); got != "t1" {
					t.Fatalf("the server saw trailer %q", got)
				}
			})

			t.Run("response-trailers", func(t *testing.T) {
				resp, err := rt.RoundTrip(newRequest(t, "POST", addr, "/trailers", strings.NewReader("m")))
				if err != nil {
					t.Fatal(err)
				}
				if got := readAll(t, resp); got != "message" {
					t.Fatalf("body %q", got)
				}
				if resp.Trailer.Get("Grpc-Status") != "0" || resp.Trailer.Get("Grpc-Message") != "fine" {
					t.Fatalf("trailers %v", resp.Trailer)
				}
				if resp.Header.Get("Grpc-Status") != "" {
					t.Fatalf("a trailer went with the headers: %v", resp.Header)
				}
			})

			t.Run("big-response", func(t *testing.T) {
				resp, err := rt.RoundTrip(newRequest(t, "GET", addr, "/big", nil))
				if err != nil {
					t.Fatal(err)
				}
				if got := readAll(t, resp); len(got) != 5<<20 {
					t.Fatalf("got %d bytes", len(got))
				}
			})

			t.Run("no-content", func(t *testing.T) {
				resp, err := rt.RoundTrip(newRequest(t, "GET", addr, "/status", nil))
				if err != nil {
					t.Fatal(err)
				}
				if got := readAll(t, resp); resp.StatusCode != 204 || got != "" {
					t.Fatalf("status %d body %q", resp.StatusCode, got)
				}
			})

			t.Run("handler-ignores-body", func(t *testing.T) {
				body := bytes.Repeat([]byte("z"), 4<<20)
				resp, err := rt.RoundTrip(newRequest(t, "POST", addr, "/ignore-body", bytes.NewReader(body)))
				if err != nil {
					t.Fatal(err)
				}
				if got := readAll(t, resp); got != "did not read" {
					t.Fatalf("body %q", got)
				}
			})

			t.Run("abort", func(t *testing.T) {
				resp, err := rt.RoundTrip(newRequest(t, "GET", addr, "/abort", nil))
				if err == nil {
					_, err = io.ReadAll(resp.Body)
					resp.Body.Close()
				}
				if err == nil {
					t.Fatal("an aborted response read as complete")
				}
			})

			t.Run("cancel-mid-body", func(t *testing.T) {
				ctx, cancel := context.WithCancel(context.Background())
				req := newRequest(t, "GET", addr, "/stream", nil).WithContext(ctx)
				resp, err := rt.RoundTrip(req)
				if err != nil {
					t.Fatal(err)
				}
				buf := make([]byte, 10)
				if _, err := io.ReadFull(resp.Body, buf); err != nil {
					t.Fatal(err)
				}
				cancel()
				_, err = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if !errors.Is(err, context.Canceled) {
					t.Fatalf("after cancel: %v", err)
				}
			})

			t.Run("concurrent", func(t *testing.T) {
				var wg sync.WaitGroup
				errs := make(chan error, 200)
				for i := range 200 {
					wg.Add(1)
					go func() {
						defer wg.Done()
						want := fmt.Sprintf("request %d", i)
						resp, err := rt.RoundTrip(newRequest(t, "POST", addr, "/echo", strings.NewReader(want)))
						if err != nil {
							errs <- err
							return
						}
						b, err := io.ReadAll(resp.Body)
						resp.Body.Close()
						if err != nil || string(b) != want {
							errs <- fmt.Errorf("got %q, %v", b, err)
						}
					}()
				}
				wg.Wait()
				close(errs)
				for err := range errs {
					t.Error(err)
				}
			})
		})
	}
}

func TestServer_handlerPanicResetsTheStream(t *testing.T) {
	addr, _ := ourServer(t, ServerConfig{Logger: nullLogger()})
	cc := ourClient(t, addr)
	if _, err := cc.RoundTrip(newRequest(t, "GET", addr, "/panic", nil)); err == nil {
		t.Fatal("a panicking handler answered")
	}
	// The connection goes on.
	resp, err := cc.RoundTrip(newRequest(t, "GET", addr, "/echo", nil))
	if err != nil {
		t.Fatal(err)
	}
	readAll(t, resp)
}

func TestServer_shutdownFinishesOpenRequests(t *testing.T) {
	addr, conns := ourServer(t, ServerConfig{})
	cc := ourClient(t, addr)
	req := newRequest(t, "GET", addr, "/stream", nil)
	ctx, cancel := context.WithCancel(context.Background())
	resp, err := cc.RoundTrip(req.WithContext(ctx))
	if err != nil {
		t.Fatal(err)
	}
	sc := conns()[0]
	sc.Shutdown()
	// New requests are refused, with an error that says they may go again.
	waitFor(t, func() bool { return cc.Reserve() != nil })
	if _, err := cc.RoundTrip(newRequest(t, "GET", addr, "/echo", nil)); !errors.Is(err, ErrRefused) {
		t.Fatalf("a request after GOAWAY: %v", err)
	}
	// The open one still streams.
	buf := make([]byte, 100)
	if _, err := io.ReadFull(resp.Body, buf); err != nil {
		t.Fatalf("the open request after GOAWAY: %v", err)
	}
	cancel()
	resp.Body.Close()
	waitFor(t, func() bool { return cc.Err() != nil })
}

func TestServer_idleTimeout(t *testing.T) {
	addr, _ := ourServer(t, ServerConfig{IdleTimeout: 100 * time.Millisecond})
	cc := ourClient(t, addr)
	resp, err := cc.RoundTrip(newRequest(t, "GET", addr, "/echo", nil))
	if err != nil {
		t.Fatal(err)
	}
	readAll(t, resp)
	waitFor(t, func() bool { return cc.Err() != nil })
}

func TestClient_drainClosesWhenIdle(t *testing.T) {
	addr, _ := ourServer(t, ServerConfig{})
	closed := make(chan struct{})
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	cc, err := NewClientConn(nc, func() { close(closed) })
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	if err := cc.Reserve(); err != nil {
		t.Fatal(err)
	}
	resp, err := cc.RoundTrip(newRequest(t, "GET", addr, "/stream", nil))
	if err != nil {
		t.Fatal(err)
	}
	cc.Drain()
	if cc.Reserve() == nil {
		t.Fatal("a draining connection took a request")
	}
	select {
	case <-closed:
		t.Fatal("closed with a request open")
	default:
	}
	resp.Body.Close()
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("a drained connection did not close")
	}
}

func TestClient_refusesInvalidHeaders(t *testing.T) {
	addr, _ := ourServer(t, ServerConfig{})
	cc := ourClient(t, addr)
	req := newRequest(t, "GET", addr, "/echo", nil)
	req.Header["Bad\nName"] = []string{"x"}
	if _, err := cc.RoundTrip(req); err == nil || !strings.Contains(err.Error(), "invalid header field name") {
		t.Fatalf("invalid header: %v", err)
	}
	req = newRequest(t, "GET", addr, "/echo", nil)
	req.Header.Set("X-In", "ok")
	resp, err := cc.RoundTrip(req)
	if err != nil {
		t.Fatalf("the connection after a refused request: %v", err)
	}
	readAll(t, resp)
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	retry.Run(t, func(r *retry.R) {
		if !cond() {
			r.Fatal("not yet")
		}
	})
}

func nullLogger() hclog.Logger { return hclog.NewNullLogger() }

// rawClient is a client that writes frames as a test says, misbehaving.
type rawClient struct {
	nc   net.Conn
	fr   *http2.Framer
	hbuf bytes.Buffer
	enc  *hpack.Encoder
}

func dialRaw(t *testing.T, addr string) *rawClient {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	rc := &rawClient{nc: nc, fr: http2.NewFramer(nc, nc)}
	rc.enc = hpack.NewEncoder(&rc.hbuf)
	if _, err := io.WriteString(nc, http2.ClientPreface); err != nil {
		t.Fatal(err)
	}
	if err := rc.fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	return rc
}

func (rc *rawClient) get(t *testing.T, id uint32) {
	t.Helper()
	rc.hbuf.Reset()
	for _, hf := range []hpack.HeaderField{{Name: ":method", Value: "GET"}, {Name: ":scheme", Value: "https"}, {Name: ":authority", Value: "x"}, {Name: ":path", Value: "/"}} {
		rc.enc.WriteField(hf)
	}
	if err := rc.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: rc.hbuf.Bytes(), EndStream: true, EndHeaders: true}); err != nil {
		t.Fatal(err)
	}
}

func TestServer_rapidResetIsBounded(t *testing.T) {
	release := make(chan struct{})
	var entered atomic.Int32
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		entered.Add(1)
		<-release // a handler slow to notice its request is gone
	})
	addr, _ := ourServerWith(t, h, ServerConfig{MaxStreams: 8})
	defer close(release)
	rc := dialRaw(t, addr)
	// Each stream is opened and reset at once: the streams never add up,
	// their handlers would.
	for i := range 200 {
		id := uint32(2*i + 1)
		rc.get(t, id)
		if err := rc.fr.WriteRSTStream(id, http2.ErrCodeCancel); err != nil {
			t.Fatal(err)
		}
	}
	refused := 0
	rc.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	for refused < 200-8 {
		f, err := rc.fr.ReadFrame()
		if err != nil {
			t.Fatalf("after %d refusals: %v", refused, err)
		}
		if rst, ok := f.(*http2.RSTStreamFrame); ok && rst.ErrCode == http2.ErrCodeRefusedStream {
			refused++
		}
	}
	if n := entered.Load(); n > 8 {
		t.Fatalf("%d handlers running for a limit of 8 streams", n)
	}
}

func TestServer_controlFloodClosesTheConnection(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	served := make(chan error, 1)
	go func() {
		nc, err := ln.Accept()
		if err != nil {
			served <- err
			return
		}
		served <- NewServerConn(nc, http.HandlerFunc(echo), ServerConfig{}).Serve(context.Background())
	}()
	rc := dialRaw(t, ln.Addr().String())
	// Pings whose answers are never read, many to a write: once the
	// sockets are full, the answers queue in the server, which gives up
	// past its bound. (The sockets keep their usual buffers: shrunk ones
	// can stall TCP itself, loopback packets being far larger than them.)
	var batch bytes.Buffer
	fr := http2.NewFramer(&batch, nil)
	for range 4096 {
		fr.WritePing(false, [8]byte{})
	}
	go func() {
		for {
			if _, err := rc.nc.Write(batch.Bytes()); err != nil {
				return
			}
		}
	}()
	select {
	case err := <-served:
		if err == nil || !strings.Contains(err.Error(), "control frames") {
			t.Fatalf("the flooded connection ended with %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("a peer flooding pings was not cut off")
	}
	rc.nc.Close()
}

func TestServer_unreadBodiesGiveBackTheConnectionWindow(t *testing.T) {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/echo" {
			echo(w, r)
			return
		}
		// Wait until the whole body is in, then answer without reading it.
		ss := r.Body.(*requestBody).ss
		retry.Run(t, func(rr *retry.R) {
			ss.mu.Lock()
			defer ss.mu.Unlock()
			if !ss.recvEnded {
				rr.Fatal("body not in yet")
			}
		})
		io.WriteString(w, "ignored")
	})
	addr, _ := ourServerWith(t, h, ServerConfig{})
	cc := ourClient(t, addr)
	body := bytes.Repeat([]byte("b"), 1<<20)
	// More than the connection's window in bodies nobody reads.
	for range 2 * ConnWindow / len(body) {
		resp, err := cc.RoundTrip(newRequest(t, "POST", addr, "/ignore", bytes.NewReader(body)))
		if err != nil {
			t.Fatal(err)
		}
		readAll(t, resp)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := cc.RoundTrip(newRequest(t, "POST", addr, "/echo", bytes.NewReader(body)).WithContext(ctx))
	if err != nil {
		t.Fatalf("a body after the unread ones: %v", err)
	}
	if got := readAll(t, resp); len(got) != len(body) {
		t.Fatalf("echoed %d bytes", len(got))
	}
}

// TestServer_handlerGoroutinesServeRequestAfterRequest: requests that come
// one after another are served by goroutines that served earlier ones,
// whose stacks have grown already, rather than each by a new one.
func TestServer_handlerGoroutinesServeRequestAfterRequest(t *testing.T) {
	var mu sync.Mutex
	seen := map[string]int{}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		buf := make([]byte, 64)
		id, _, _ := strings.Cut(string(buf[:runtime.Stack(buf, false)]), " [") // "goroutine N"
		mu.Lock()
		seen[id]++
		mu.Unlock()
		io.WriteString(w, "ok")
	})
	addr, _ := ourServerWith(t, h, ServerConfig{})
	cc := ourClient(t, addr)
	for range 20 {
		resp, err := cc.RoundTrip(newRequest(t, "GET", addr, "/", nil))
		if err != nil {
			t.Fatal(err)
		}
		readAll(t, resp)
	}
	mu.Lock()
	defer mu.Unlock()
	// Mostly one; a request that arrives before the goroutine that served
	// the last is back waiting gets a new one.
	if len(seen) == 20 {
		t.Fatalf("20 requests in turn ran on %d goroutines: %v", len(seen), seen)
	}
}
