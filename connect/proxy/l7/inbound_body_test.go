package l7

import (
	"bytes"
	"crypto/tls"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/trellismesh/trellis/connect"
	"github.com/trellismesh/trellis/internal/testutil"
)

// rawSource is a source proxy written by hand, to misbehave: it speaks
// HTTP/2 frame by frame on a mutual-TLS connection to a destination proxy
// (as the service web). What the destination sends is read and dropped.
type rawSource struct {
	t    *testing.T
	tc   *tls.Conn
	wmu  sync.Mutex // guards fr's writes, and hbuf and enc
	fr   *http2.Framer
	hbuf bytes.Buffer
	enc  *hpack.Encoder
	done chan struct{} // the reader ended
}

func dialRawSource(t *testing.T, m *mesh, d *destProxy) *rawSource {
	t.Helper()
	tc, err := tls.Dial("tcp", d.addr(), connect.ClientTLSConfig(m.certs("web"), connect.ExpectService(d.service), ALPN))
	if err != nil {
		t.Fatalf("dial the destination proxy at %s: %v", d.addr(), err)
	}
	s := &rawSource{t: t, tc: tc, fr: http2.NewFramer(tc, tc), done: make(chan struct{})}
	s.enc = hpack.NewEncoder(&s.hbuf)
	if _, err := io.WriteString(tc, http2.ClientPreface); err != nil {
		t.Fatalf("write the preface to %s: %v", d.addr(), err)
	}
	s.write(func(fr *http2.Framer) error { return fr.WriteSettings() })
	go func() {
		defer close(s.done)
		for {
			f, err := s.fr.ReadFrame()
			if err != nil {
				return
			}
			if sf, ok := f.(*http2.SettingsFrame); ok && !sf.IsAck() {
				s.wmu.Lock()
				s.fr.WriteSettingsAck()
				s.wmu.Unlock()
			}
		}
	}()
	t.Cleanup(func() {
		tc.Close()
		<-s.done
	})
	return s
}

func (s *rawSource) write(f func(fr *http2.Framer) error) {
	s.t.Helper()
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if err := f(s.fr); err != nil {
		s.t.Fatalf("write a frame to the destination proxy: %v", err)
	}
}

// post opens stream id with the headers of a POST to path that declares
// a body of length bytes.
func (s *rawSource) post(id uint32, path string, length int) {
	s.t.Helper()
	s.write(func(fr *http2.Framer) error {
		s.hbuf.Reset()
		for _, hf := range []hpack.HeaderField{
			{Name: ":method", Value: "POST"}, {Name: ":scheme", Value: "https"},
			{Name: ":authority", Value: "api"}, {Name: ":path", Value: path},
			{Name: "content-length", Value: strconv.Itoa(length)},
		} {
			s.enc.WriteField(hf)
		}
		return fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: s.hbuf.Bytes(), EndHeaders: true})
	})
}

// data sends n bytes on stream id, in frames of at most 16 KiB.
func (s *rawSource) data(id uint32, n int) {
	s.t.Helper()
	chunk := bytes.Repeat([]byte("b"), 16<<10)
	for n > 0 {
		k := min(n, len(chunk))
		s.write(func(fr *http2.Framer) error { return fr.WriteData(id, false, chunk[:k]) })
		n -= k
	}
}

// When the source resets a request's stream while its body comes, nothing
// can be answered: the request is counted as a client gone (499, class
// other), not as the application's failure, and no 400 is
// tried. A small body (the application client's path) is read whole
// before the application is asked, so it never sees the request; a large
// one (net/http's Transport) reaches it in part, and the connection that
// carried it is closed, not reused.
func TestInbound_resetRequestBodyIsNotTheApplicationsFailure(t *testing.T) {
	m := newMesh(t)
	started := make(chan struct{}, 1)
	bodyErr := make(chan error, 1)
	addr, conns, _ := countingApp(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/large" && r.Header.Get("X-Whole") == "" {
			var b [1]byte
			if _, err := io.ReadFull(r.Body, b[:]); err != nil {
				bodyErr <- err
				return
			}
			started <- struct{}{}
			_, err := io.Copy(io.Discard, r.Body)
			bodyErr <- err
			return
		}
		n, _ := io.Copy(io.Discard, r.Body)
		io.WriteString(w, r.URL.Path+" "+strconv.FormatInt(n, 10))
	})
	logs := &testutil.LockedBuffer{}
	d := startDest(t, m, InboundConfig{Service: "api", LocalAppAddr: addr,
		Logger: hclog.New(&hclog.LoggerOptions{Output: logs, Level: hclog.Debug})})
	src := dialRawSource(t, m, d)
	id := d.in.cfg.ProxyID

	// A small body: the source sends 5 of its 10 bytes, then resets.
	src.post(1, "/small", 10)
	src.data(1, 5)
	src.write(func(fr *http2.Framer) error { return fr.WriteRSTStream(1, http2.ErrCodeCancel) })
	waitMetric(t, &d.in.reg, "inbound.requests", 1, "proxy="+id, "class=other")

	// A large one: reset once the application is reading it.
	src.post(3, "/large", 200<<10)
	src.data(3, 40<<10)
	select {
	case <-started:
	case <-time.After(10 * time.Second):
		t.Fatal("the application has not got the large body after 10s")
	}
	src.write(func(fr *http2.Framer) error { return fr.WriteRSTStream(3, http2.ErrCodeCancel) })
	select {
	case err := <-bodyErr:
		if err == nil {
			t.Fatal("the application read the cut body to its end: its connection was not closed")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the application still reads the cut body after 10s: its connection was not closed")
	}
	waitMetric(t, &d.in.reg, "inbound.requests", 2, "proxy="+id, "class=other")
	d.in.reg.flush()
	if n := metric("inbound.app_errors", "proxy="+id); n != 0 {
		t.Errorf("inbound.app_errors is %v, want 0: the bodies failed on the source's side", n)
	}
	for _, class := range []string{"class=4xx", "class=5xx"} {
		if n := metric("inbound.requests", "proxy="+id, class); n != 0 {
			t.Errorf("%v requests counted %s, want 0: the client went away", n, class)
		}
	}
	if l := logs.String(); strings.Contains(l, "could not be read") || strings.Contains(l, "application failed") {
		t.Errorf("a reset body was answered as a bad body or as the application's failure:\n%s", l)
	}

	// A whole large body after it goes on a new connection to the
	// application: the one that had part of a body is not reused.
	s := startSource(t, m, OutboundConfig{DestinationName: "api"})
	s.out.SetTargetEndpoints(targetID("api"), []Endpoint{d.endpoint()})
	req, err := http.NewRequest("POST", s.url+"/large", strings.NewReader(strings.Repeat("w", 100<<10)))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("X-Whole", "1")
	resp, err := client(t).Do(req)
	if err != nil {
		t.Fatalf("POST %s: %v", req.URL, err)
	}
	got, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if want := "/large " + strconv.Itoa(100<<10); resp.StatusCode != 200 || string(got) != want {
		t.Fatalf("a whole large body after a cut one: %d %q, want 200 %q", resp.StatusCode, got, want)
	}
	if n := conns.Load(); n != 2 {
		t.Errorf("the application saw %d connections, want 2 (the cut body's, then a new one)", n)
	}
}

// A request whose body does not have the length it declares is answered
// 400, saying so, and is not the application's failure: nothing of it
// reaches the application on the application client's path, and on
// net/http Transport's path the connection that got part of it is closed.
// (Through the public listener h2link checks a body's length itself and
// resets the stream; Inbound checks again whatever the body's origin.)
func TestInbound_badRequestBodyIs400(t *testing.T) {
	m := newMesh(t)
	bodyErr := make(chan error, 1)
	addr, _, _ := countingApp(t, func(w http.ResponseWriter, r *http.Request) {
		n, err := io.Copy(io.Discard, r.Body)
		if err != nil {
			bodyErr <- err
			return
		}
		io.WriteString(w, r.URL.Path+" "+strconv.FormatInt(n, 10))
	})
	d := startDest(t, m, InboundConfig{Service: "api", LocalAppAddr: addr})
	web := connect.NewServiceID(testTrustDomain, testDC, "web")
	mc := &meshConn{source: web, xfcc: []string{"URI=" + web.String()}, stats: d.in.statsFor("web")}
	large := strings.Repeat("l", MaxReplayBody+10)
	for _, c := range []struct {
		name, path, body string
		declared         int64
		want             string
	}{
		{"short", "/short", "abc", 6, "it ended after 3 of the 6 bytes its Content-Length declares"},
		{"long", "/long", "abcdef", 3, "it is longer than the 3 bytes its Content-Length declares"},
		{"large and short", "/large", large, int64(len(large)) + 100,
			"it ended after " + strconv.Itoa(len(large)) + " of the " + strconv.Itoa(len(large)+100) + " bytes its Content-Length declares"},
	} {
		r := httptest.NewRequest("POST", c.path, strings.NewReader(c.body))
		r.ContentLength = c.declared
		w := httptest.NewRecorder()
		d.in.serveHTTP(w, r, mc)
		if want := "trellis mesh: the request body could not be read: " + c.want + "\n"; w.Code != 400 || w.Body.String() != want {
			t.Errorf("%s body: %d %q, want 400 %q", c.name, w.Code, w.Body.String(), want)
		}
	}
	// Only the large body (net/http's Transport) reached the application,
	// in part, and its connection was closed: the application's read of
	// it failed.
	select {
	case err := <-bodyErr:
		if err == nil {
			t.Fatal("the application read the cut body to its end")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the application still reads the cut body after 10s: its connection was not closed")
	}
	d.in.reg.flush()
	if n := metric("inbound.app_errors", "proxy="+d.in.cfg.ProxyID); n != 0 {
		t.Errorf("inbound.app_errors is %v, want 0: the bodies were bad, not the application", n)
	}
	if n := metric("inbound.requests", "proxy="+d.in.cfg.ProxyID, "class=4xx"); n != 3 {
		t.Errorf("%v requests counted 4xx, want 3", n)
	}

	// Good bodies go through, on both paths.
	for _, body := range []string{"abc", large} {
		r := httptest.NewRequest("POST", "/good", strings.NewReader(body))
		w := httptest.NewRecorder()
		d.in.serveHTTP(w, r, mc)
		if want := "/good " + strconv.Itoa(len(body)); w.Code != 200 || w.Body.String() != want {
			t.Errorf("a good body of %d bytes: %d %q, want 200 %q", len(body), w.Code, w.Body.String(), want)
		}
	}
}

// A caller that sends part of a small body and then nothing is cut off by
// the local request timeout: the request ends, counted as a timeout, and
// the application is never asked.
func TestInbound_slowRequestBodyEndsAtTheLocalRequestTimeout(t *testing.T) {
	m := newMesh(t)
	addr, conns, _ := countingApp(t, func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "asked")
	})
	d := startDest(t, m, InboundConfig{Service: "api", LocalAppAddr: addr, LocalRequestTimeout: 200 * time.Millisecond})
	src := dialRawSource(t, m, d)
	id := d.in.cfg.ProxyID
	src.post(1, "/slow", 10)
	src.data(1, 5) // and the other 5 never
	waitMetric(t, &d.in.reg, "inbound.timeouts", 1, "proxy="+id)
	waitMetric(t, &d.in.reg, "inbound.requests", 1, "proxy="+id, "class=5xx")
	if n := conns.Load(); n != 0 {
		t.Errorf("the application got %d connections for a request whose body never came", n)
	}
}
