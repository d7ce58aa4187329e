package h2link

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// onlyStream waits for cc to have exactly one stream open and returns it.
func onlyStream(t *testing.T, c *conn) *stream {
	t.Helper()
	var s *stream
	waitFor(t, func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		for _, st := range c.streams {
			s = st
		}
		return len(c.streams) == 1
	})
	return s
}

func sendWindow(c *conn) int64 {
	c.fcMu.Lock()
	defer c.fcMu.Unlock()
	return c.sendWindow
}

// TestStream_writeOnAFailedStreamKeepsTheConnectionWindow: a body sender
// that takes credit for a frame and then finds its stream reset (the peer
// cancelled it meanwhile) gives the credit back. The connection's window
// is shared by every stream and only comes back as the peer receives DATA:
// credit taken for a frame that never went is lost for good, and enough
// cancelled uploads stall the whole connection.
func TestStream_writeOnAFailedStreamKeepsTheConnectionWindow(t *testing.T) {
	release := make(chan struct{})
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { <-release })
	addr, _ := ourServerWith(t, h, ServerConfig{})
	defer close(release)
	cc := ourClient(t, addr)
	// The server grants its connection window at once.
	waitFor(t, func() bool { return sendWindow(cc.c) == ConnWindow })

	pr, pw := io.Pipe()
	defer pw.Close()
	req := newRequest(t, "POST", addr, "/", pr)
	req.ContentLength = -1
	errc := make(chan error, 1)
	go func() {
		resp, err := cc.RoundTrip(req)
		if err == nil {
			resp.Body.Close()
		}
		errc <- err
	}()
	s := onlyStream(t, cc.c)
	s.reset(http2.ErrCodeCancel, errors.New("cancelled by the test"))
	if <-errc == nil {
		t.Fatal("a reset request answered")
	}

	before := sendWindow(cc.c)
	if err := s.writeData(make([]byte, 1000), false); err == nil {
		t.Fatal("a write on a reset stream succeeded")
	}
	if after := sendWindow(cc.c); after != before {
		t.Fatalf("the connection's send window went from %d to %d for a frame that was not sent", before, after)
	}
}

// TestClient_aFailedRoundTripUsesItsReservation: a RoundTrip that fails
// before it opens its stream (its context ended, the connection is going
// away) uses the reservation it was made with, as one that succeeds does.
// A reservation left behind counts against the server's stream limit for
// ever and keeps a drained connection open.
func TestClient_aFailedRoundTripUsesItsReservation(t *testing.T) {
	t.Run("context-ended", func(t *testing.T) {
		addr, _ := ourServer(t, ServerConfig{})
		cc := ourClient(t, addr)
		if err := cc.Reserve(); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if _, err := cc.RoundTrip(newRequest(t, "GET", addr, "/echo", nil).WithContext(ctx)); !errors.Is(err, context.Canceled) {
			t.Fatalf("a request with an ended context: %v", err)
		}
		cc.Drain()
		waitFor(t, func() bool { return cc.Err() != nil })
	})
	t.Run("going-away", func(t *testing.T) {
		addr, _ := ourServer(t, ServerConfig{})
		cc := ourClient(t, addr)
		if err := cc.Reserve(); err != nil {
			t.Fatal(err)
		}
		// The peer's GOAWAY, as the reader applies it (the server itself
		// would close the connection, which hides the reservation).
		cc.c.goAway(1<<31 - 1)
		if _, err := cc.RoundTrip(newRequest(t, "GET", addr, "/echo", nil)); !errors.Is(err, ErrRefused) {
			t.Fatalf("a request after GOAWAY: %v", err)
		}
		waitFor(t, func() bool { return cc.Err() != nil })
	})
	t.Run("one-reservation-each", func(t *testing.T) {
		addr, _ := ourServer(t, ServerConfig{})
		cc := ourClient(t, addr)
		for range 2 {
			if err := cc.Reserve(); err != nil {
				t.Fatal(err)
			}
		}
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		cc.RoundTrip(newRequest(t, "GET", addr, "/echo", nil).WithContext(ctx))
		resp, err := cc.RoundTrip(newRequest(t, "GET", addr, "/echo", nil))
		if err != nil {
			t.Fatal(err)
		}
		readAll(t, resp)
		cc.c.mu.Lock()
		left := cc.c.reserved
		cc.c.mu.Unlock()
		if left != 0 {
			t.Fatalf("%d reservations left after two requests made with two", left)
		}
	})
}

// TestServer_paddingIsCreditedToTheStream: padding counts against a
// stream's window (RFC 9113, 6.9.1) and must be given back to it as well as
// to the connection's; otherwise a client that pads its DATA sees the
// stream's window shrink by the padding of every frame until it can send
// nothing.
func TestServer_paddingIsCreditedToTheStream(t *testing.T) {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, err := io.Copy(io.Discard, r.Body)
		if err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		io.WriteString(w, strconv.FormatInt(n, 10))
	})
	addr, _ := ourServerWith(t, h, ServerConfig{})
	rc := dialRaw(t, addr)
	rc.nc.SetDeadline(time.Now().Add(20 * time.Second))
	rc.hbuf.Reset()
	for _, hf := range []hpack.HeaderField{{Name: ":method", Value: "POST"}, {Name: ":scheme", Value: "https"}, {Name: ":authority", Value: "x"}, {Name: ":path", Value: "/"}} {
		rc.enc.WriteField(hf)
	}
	if err := rc.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: rc.hbuf.Bytes(), EndHeaders: true}); err != nil {
		t.Fatal(err)
	}

	// The reader hands the windows' increments and the response over.
	type credit struct {
		stream uint32
		n      int64
	}
	credits := make(chan credit, 1024)
	body := make(chan string, 1)
	readErr := make(chan error, 1)
	go func() {
		var got []byte
		for {
			f, err := rc.fr.ReadFrame()
			if err != nil {
				readErr <- err
				return
			}
			switch f := f.(type) {
			case *http2.WindowUpdateFrame:
				credits <- credit{f.StreamID, int64(f.Increment)}
			case *http2.DataFrame:
				got = append(got, f.Data()...)
				if f.StreamEnded() {
					body <- string(got)
				}
			case *http2.RSTStreamFrame:
				readErr <- fmt.Errorf("stream reset: %v", f.ErrCode)
				return
			case *http2.GoAwayFrame:
				readErr <- fmt.Errorf("GOAWAY: %v", f.ErrCode)
				return
			}
		}
	}()

	// Twice the stream's window, in frames of 16 bytes of data and 240 of
	// padding, sent only as the windows allow.
	const frameLen, dataLen = 256, 16
	data := bytes.Repeat([]byte("d"), dataLen)
	streamWin, connWin := int64(StreamWindow), int64(65535)
	sent := 0
	for total := 0; total < 2*StreamWindow; total += frameLen {
		for streamWin < frameLen || connWin < frameLen {
			select {
			case c := <-credits:
				if c.stream == 0 {
					connWin += c.n
				} else {
					streamWin += c.n
				}
			case err := <-readErr:
				t.Fatalf("after %d bytes: %v", total, err)
			case <-time.After(10 * time.Second):
				t.Fatalf("stalled after %d bytes: windows of %d (stream) and %d (connection)", total, streamWin, connWin)
			}
		}
		if err := rc.fr.WriteDataPadded(1, false, data, make([]byte, frameLen-dataLen-1)); err != nil {
			t.Fatal(err)
		}
		streamWin -= frameLen
		connWin -= frameLen
		sent += dataLen
	}
	if err := rc.fr.WriteData(1, true, nil); err != nil {
		t.Fatal(err)
	}
	select {
	case got := <-body:
		if got != strconv.Itoa(sent) {
			t.Fatalf("the handler read %s bytes of %d", got, sent)
		}
	case err := <-readErr:
		t.Fatal(err)
	}
	rc.nc.Close()
}

// hookConn runs onWrite after each Write to the connection it wraps.
type hookConn struct {
	net.Conn
	onWrite func(n int)
	writes  int
}

func (h *hookConn) Write(p []byte) (int, error) {
	n, err := h.Conn.Write(p)
	h.writes++ // writes are serialised by wmu
	if h.onWrite != nil {
		h.onWrite(h.writes)
	}
	return n, err
}

// blockingBody is a request body whose Read waits until the test ends,
// whatever Close does: a goroutine reading it shows as a leak.
type blockingBody struct{ release chan struct{} }

func (b *blockingBody) Read([]byte) (int, error) { <-b.release; return 0, io.EOF }
func (b *blockingBody) Close() error             { return nil }

// TestClient_noBodySenderOutlivesClose: a connection that closes between
// the write of a request's headers and the start of the goroutine sending
// its body does not start that goroutine after Close has returned (Close
// waits for the connection's goroutines; one started after its wait is
// nobody's).
func TestClient_noBodySenderOutlivesClose(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		nc, err := ln.Accept()
		if err != nil {
			return
		}
		io.Copy(io.Discard, nc) // a server that says nothing
		nc.Close()
	}()
	nc, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	hc := &hookConn{Conn: nc}
	var cc *ClientConn
	closedInWrite := make(chan struct{})
	hc.onWrite = func(n int) {
		// Write 1 is the preface; write 2 the request's headers, after
		// which the connection closes and Close's wait ends.
		if n != 2 {
			return
		}
		cc.c.close(nil)
		select {
		case <-cc.done:
			close(closedInWrite)
		case <-time.After(10 * time.Second):
		}
	}
	cc, err = NewClientConn(hc, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()

	body := &blockingBody{release: make(chan struct{})}
	defer close(body.release)
	ignore := goleak.IgnoreCurrent()
	req := newRequest(t, "POST", "x", "/", nil)
	req.Body, req.ContentLength = body, -1
	if _, err := cc.RoundTrip(req); !errors.Is(err, ErrClosed) {
		t.Fatalf("a request on a connection that closed: %v", err)
	}
	select {
	case <-closedInWrite:
	default:
		t.Fatal("the connection did not close under the request's write")
	}
	if err := cc.Close(); err != nil {
		t.Fatal(err)
	}
	goleak.VerifyNone(t, ignore)
}

// bigHeaders is two fields that fit one by one, not together, under
// maxHeaderList: the framer decodes the first, then drops the second and
// marks the block Truncated.
func bigHeaders(h http.Header) {
	h.Set("X-A", strings.Repeat("a", 600<<10))
	h.Set("X-B", strings.Repeat("b", 600<<10))
}

// TestServer_aRequestPastTheHeaderLimitIsRefused: a request whose header
// list is past the limit is answered 431, as net/http's server does, and
// not served with the fields past the limit silently left out.
func TestServer_aRequestPastTheHeaderLimitIsRefused(t *testing.T) {
	var served sync.Mutex
	var sawB []bool
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		served.Lock()
		sawB = append(sawB, r.Header.Get("X-B") != "")
		served.Unlock()
	})
	addr, _ := ourServerWith(t, h, ServerConfig{})
	cc := ourClient(t, addr)
	req := newRequest(t, "GET", addr, "/", nil)
	bigHeaders(req.Header)
	resp, err := cc.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	readAll(t, resp)
	served.Lock()
	run := append([]bool(nil), sawB...)
	served.Unlock()
	if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge || len(run) != 0 {
		t.Fatalf("status %d; handlers run (and whether they saw X-B): %v", resp.StatusCode, run)
	}
	// The connection goes on.
	resp, err = cc.RoundTrip(newRequest(t, "GET", addr, "/", nil))
	if err != nil {
		t.Fatal(err)
	}
	readAll(t, resp)
}

// TestClient_aResponsePastTheHeaderLimitFails: a response whose header list
// is past the limit fails, rather than arriving without the fields past it.
func TestClient_aResponsePastTheHeaderLimitFails(t *testing.T) {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/big" {
			bigHeaders(w.Header())
		}
	})
	addr, _ := ourServerWith(t, h, ServerConfig{})
	cc := ourClient(t, addr)
	resp, err := cc.RoundTrip(newRequest(t, "GET", addr, "/big", nil))
	if err == nil {
		readAll(t, resp)
		t.Fatalf("a response past the header limit arrived (X-A %t, X-B %t)", resp.Header.Get("X-A") != "", resp.Header.Get("X-B") != "")
	}
	if !strings.Contains(err.Error(), "header") {
		t.Fatalf("the error does not say why: %v", err)
	}
	resp, err = cc.RoundTrip(newRequest(t, "GET", addr, "/", nil))
	if err != nil {
		t.Fatal(err)
	}
	readAll(t, resp)
}

// TestServer_thePeerMayNotSendPastTheConnectionWindow: DATA past the
// connection's window (here: on streams whose handlers do not read, each
// within its own stream's window) is a connection error (RFC 9113, 6.9.1),
// so that a peer holds at most ConnWindow of a server's memory, not
// StreamWindow times MaxStreams.
func TestServer_thePeerMayNotSendPastTheConnectionWindow(t *testing.T) {
	release := make(chan struct{})
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { <-release })
	addr, _ := ourServerWith(t, h, ServerConfig{})
	defer close(release)
	rc := dialRaw(t, addr)
	rc.nc.SetDeadline(time.Now().Add(20 * time.Second))
	goaway := make(chan *http2.GoAwayFrame, 1)
	go func() {
		for {
			f, err := rc.fr.ReadFrame()
			if err != nil {
				close(goaway)
				return
			}
			if ga, ok := f.(*http2.GoAwayFrame); ok {
				goaway <- ga
				return
			}
		}
	}()
	chunk := make([]byte, 16<<10)
	streams := ConnWindow/StreamWindow + 1
	func() {
		for i := range streams {
			id := uint32(2*i + 1)
			rc.hbuf.Reset()
			for _, hf := range []hpack.HeaderField{{Name: ":method", Value: "POST"}, {Name: ":scheme", Value: "https"}, {Name: ":authority", Value: "x"}, {Name: ":path", Value: "/"}} {
				rc.enc.WriteField(hf)
			}
			if err := rc.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: rc.hbuf.Bytes(), EndHeaders: true}); err != nil {
				return // cut off: see below
			}
			for range StreamWindow / len(chunk) {
				if err := rc.fr.WriteData(id, false, chunk); err != nil {
					return
				}
			}
		}
	}()
	ga, ok := <-goaway
	if !ok || ga.ErrCode != http2.ErrCodeFlowControl {
		t.Fatalf("%d MiB sent on a window of %d MiB: GOAWAY %v", streams*StreamWindow>>20, ConnWindow>>20, ga)
	}
}

// TestConn_aTableSizeAckedIsAppliedToTheHeadersAfterTheAck: once our
// SETTINGS ACK has gone, the peer's decoder takes no more than the header
// table size those SETTINGS gave, so a header block written after the ACK
// must start with the table size update. The reader applies the size and
// then queues the ACK; a write that applied the size before taking the
// queued frames sent the ACK with a block encoded for the old table.
func TestConn_aTableSizeAckedIsAppliedToTheHeadersAfterTheAck(t *testing.T) {
	nc, peer := net.Pipe()
	defer peer.Close()
	go io.Copy(io.Discard, peer)
	c := newConn(nc, false, nil)
	defer nc.Close()

	// The writer gets as far as the queued control frames and waits.
	c.ctlMu.Lock()
	var block []byte
	wrote := make(chan error, 1)
	go func() {
		wrote <- c.write(func() error {
			c.hbuf.Reset()
			if err := c.henc.WriteField(hpack.HeaderField{Name: "x-a", Value: "a"}); err != nil {
				return err
			}
			block = append([]byte(nil), c.hbuf.Bytes()...)
			return nil
		})
	}()
	waitFor(t, func() bool {
		buf := make([]byte, 1<<20)
		for _, g := range strings.Split(string(buf[:runtime.Stack(buf, true)]), "\n\n") {
			if strings.Contains(g, "(*conn).writeControlLocked") && strings.Contains(g, "sync.(*Mutex).Lock") {
				return true
			}
		}
		return false
	})
	// Meanwhile the reader applies SETTINGS_HEADER_TABLE_SIZE 0 and queues
	// the ACK, as handle does.
	c.tableSize.Store(0)
	if err := c.ctlFr.WriteSettingsAck(); err != nil {
		t.Fatal(err)
	}
	c.ctlMu.Unlock()
	if err := <-wrote; err != nil {
		t.Fatal(err)
	}
	// A dynamic table size update to 0 is the byte 001 00000.
	if len(block) == 0 || block[0] != 0x20 {
		t.Fatalf("the header block after the ACK starts % x, not with the table size update (20)", block[:min(len(block), 4)])
	}
}

// TestServer_aMalformedRequestEndsItsStreamOnly: a request the framer
// refuses (a header name in capitals) is reset, and the frames that
// follow it on its stream are ignored: the connection serves on.
func TestServer_aMalformedRequestEndsItsStreamOnly(t *testing.T) {
	addr, _ := ourServer(t, ServerConfig{})
	rc := dialRaw(t, addr)
	rc.hbuf.Reset()
	for _, hf := range []hpack.HeaderField{{Name: ":method", Value: "POST"}, {Name: ":scheme", Value: "https"},
		{Name: ":authority", Value: "x"}, {Name: ":path", Value: "/"}, {Name: "X-Capitals", Value: "no"}} {
		rc.enc.WriteField(hf)
	}
	if err := rc.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: rc.hbuf.Bytes(), EndHeaders: true}); err != nil {
		t.Fatal(err)
	}
	if err := rc.fr.WriteData(1, true, []byte("body")); err != nil {
		t.Fatal(err)
	}
	rc.get(t, 3)
	rc.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	reset1 := false
	for {
		f, err := rc.fr.ReadFrame()
		if err != nil {
			t.Fatalf("reset of stream 1: %v; then: %v", reset1, err)
		}
		switch f := f.(type) {
		case *http2.RSTStreamFrame:
			if f.StreamID == 1 {
				reset1 = true
			}
		case *http2.GoAwayFrame:
			t.Fatalf("GOAWAY %v after a malformed request", f.ErrCode)
		case *http2.HeadersFrame:
			if f.StreamID == 3 {
				if !reset1 {
					t.Fatal("stream 1 was not reset")
				}
				return
			}
		}
	}
}

// TestServer_aProtocolErrorSaysWhose: a connection the peer broke ends
// with an error that says so, not the framer's bare code.
func TestServer_aProtocolErrorSaysWhose(t *testing.T) {
	addr, conns := ourServer(t, ServerConfig{})
	rc := dialRaw(t, addr)
	if err := rc.fr.WriteRawFrame(http2.FrameData, 0, 0, []byte("x")); err != nil { // DATA on stream 0
		t.Fatal(err)
	}
	var got error
	waitFor(t, func() bool {
		all := conns()
		if len(all) != 1 {
			return false
		}
		got = all[0].c.err()
		return got != nil
	})
	if !strings.Contains(got.Error(), "h2link: the peer broke the protocol") || !strings.Contains(got.Error(), "PROTOCOL_ERROR") {
		t.Fatalf("the connection ended with %q", got)
	}
}

// TestServer_aFrameTooLargeIsAFrameSizeError: a frame past the size we
// allow ends the connection with GOAWAY FRAME_SIZE_ERROR, which tells the
// peer why.
func TestServer_aFrameTooLargeIsAFrameSizeError(t *testing.T) {
	addr, _ := ourServer(t, ServerConfig{})
	rc := dialRaw(t, addr)
	rc.get(t, 1)
	go rc.fr.WriteRawFrame(http2.FrameData, 0, 1, make([]byte, maxFrameSize+1)) // the server stops reading
	rc.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		f, err := rc.fr.ReadFrame()
		if err != nil {
			t.Fatalf("no GOAWAY: %v", err)
		}
		if ga, ok := f.(*http2.GoAwayFrame); ok {
			if ga.ErrCode != http2.ErrCodeFrameSize {
				t.Fatalf("GOAWAY %v, want FRAME_SIZE_ERROR", ga.ErrCode)
			}
			return
		}
	}
}

// TestServer_aBodyMustMatchItsContentLength: a request whose DATA adds up
// to more or less than its Content-Length is malformed (RFC 9113, 8.1.1):
// its stream is reset and its handler reads an error, not a body cut to
// the length or short of it.
func TestServer_aBodyMustMatchItsContentLength(t *testing.T) {
	for _, tc := range []struct {
		name, length, body string
		end                bool // END_STREAM on the HEADERS
		handled            bool // a handler runs (and must read an error)
	}{
		{"longer", "3", "abcdef", false, true},
		{"shorter", "10", "abc", false, true},
		{"none", "5", "", true, false},
		{"bad", "-1", "abc", false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			read := make(chan error, 1)
			h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				_, err := io.ReadAll(r.Body)
				read <- err
			})
			addr, _ := ourServerWith(t, h, ServerConfig{})
			rc := dialRaw(t, addr)
			rc.hbuf.Reset()
			for _, hf := range []hpack.HeaderField{{Name: ":method", Value: "POST"}, {Name: ":scheme", Value: "https"},
				{Name: ":authority", Value: "x"}, {Name: ":path", Value: "/"}, {Name: "content-length", Value: tc.length}} {
				rc.enc.WriteField(hf)
			}
			if err := rc.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: rc.hbuf.Bytes(), EndHeaders: true, EndStream: tc.end}); err != nil {
				t.Fatal(err)
			}
			if !tc.end {
				if err := rc.fr.WriteData(1, true, []byte(tc.body)); err != nil {
					t.Fatal(err)
				}
			}
			rc.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
			for {
				f, err := rc.fr.ReadFrame()
				if err != nil {
					t.Fatalf("no reset: %v", err)
				}
				if rst, ok := f.(*http2.RSTStreamFrame); ok && rst.StreamID == 1 {
					if rst.ErrCode != http2.ErrCodeProtocol {
						t.Fatalf("reset with %v, want PROTOCOL_ERROR", rst.ErrCode)
					}
					break
				}
			}
			if !tc.handled {
				return // refused before a handler ran
			}
			select {
			case err := <-read:
				if err == nil {
					t.Fatal("the handler read the body without an error")
				}
			case <-time.After(10 * time.Second):
				t.Fatal("the handler is still reading")
			}
		})
	}
}
