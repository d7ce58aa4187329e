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
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/trellismesh/trellis/internal/testutil"
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

// idleFrames are the frames a peer may not send on a stream that is idle
// (RFC 9113, 5.1), and may on one that is closed, by how a raw end sends
// them.
var idleFrames = map[string]func(fr *http2.Framer, id uint32) error{
	"RST_STREAM":    func(fr *http2.Framer, id uint32) error { return fr.WriteRSTStream(id, http2.ErrCodeCancel) },
	"WINDOW_UPDATE": func(fr *http2.Framer, id uint32) error { return fr.WriteWindowUpdate(id, 1) },
	"DATA":          func(fr *http2.Framer, id uint32) error { return fr.WriteData(id, false, []byte("x")) },
	// A zero increment is one the framer itself refuses, as a stream error.
	"WINDOW_UPDATE-0": func(fr *http2.Framer, id uint32) error {
		fr.AllowIllegalWrites = true
		defer func() { fr.AllowIllegalWrites = false }()
		return fr.WriteWindowUpdate(id, 0)
	},
}

// pingThrough sends a PING on fr and reads up to its ACK, failing on a
// GOAWAY first: the peer took what was sent before the PING.
func pingThrough(t *testing.T, fr *http2.Framer, what string) {
	t.Helper()
	data := [8]byte{'p', 'i', 'n', 'g'}
	if err := fr.WritePing(false, data); err != nil {
		t.Fatal(err)
	}
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatalf("after %s: no PING ACK: %v", what, err)
		}
		switch f := f.(type) {
		case *http2.PingFrame:
			if f.IsAck() && f.Data == data {
				return
			}
		case *http2.GoAwayFrame:
			t.Fatalf("GOAWAY %v after %s", f.ErrCode, what)
		}
	}
}

// readGoAway reads frames from fr up to a GOAWAY.
func readGoAway(t *testing.T, fr *http2.Framer, what string) *http2.GoAwayFrame {
	t.Helper()
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatalf("after %s: no GOAWAY: %v", what, err)
		}
		if ga, ok := f.(*http2.GoAwayFrame); ok {
			return ga
		}
	}
}

// TestServer_aFrameOnAnIdleStreamIsAProtocolError: RST_STREAM,
// WINDOW_UPDATE or DATA on a stream the client has not opened (past the
// highest it opened, or even: the client's are odd) ends the connection
// with GOAWAY PROTOCOL_ERROR (RFC 9113, 5.1), while on a stream that is
// closed they are a race with its end, and tolerated.
func TestServer_aFrameOnAnIdleStreamIsAProtocolError(t *testing.T) {
	for name, send := range idleFrames {
		for _, idle := range []uint32{5, 2} {
			t.Run(fmt.Sprintf("%s-%d", name, idle), func(t *testing.T) {
				addr, conns := ourServer(t, ServerConfig{})
				rc := dialRaw(t, addr)
				rc.nc.SetDeadline(time.Now().Add(10 * time.Second))
				rc.get(t, 1)
				rc.get(t, 3)
				// Both responses end: streams 1 and 3 are closed.
				for ended := 0; ended < 2; {
					f, err := rc.fr.ReadFrame()
					if err != nil {
						t.Fatalf("the responses: %v", err)
					}
					if (f.Header().Type == http2.FrameData || f.Header().Type == http2.FrameHeaders) && f.Header().Flags.Has(http2.FlagDataEndStream) {
						ended++
					}
				}
				if err := send(rc.fr, 1); err != nil {
					t.Fatal(err)
				}
				pingThrough(t, rc.fr, name+" on closed stream 1")

				if err := send(rc.fr, idle); err != nil {
					t.Fatal(err)
				}
				what := fmt.Sprintf("%s on idle stream %d", name, idle)
				if ga := readGoAway(t, rc.fr, what); ga.ErrCode != http2.ErrCodeProtocol || ga.LastStreamID != 3 {
					t.Fatalf("%s: GOAWAY %v, last stream %d; want PROTOCOL_ERROR, 3", what, ga.ErrCode, ga.LastStreamID)
				}
				var err error
				waitFor(t, func() bool {
					err = conns()[0].c.err()
					return err != nil
				})
				if !strings.Contains(err.Error(), "the peer broke the protocol") || !strings.Contains(err.Error(), "idle") {
					t.Fatalf("%s: the connection ended with %q", what, err)
				}
			})
		}
	}
}

// rawServer is a server that writes frames as a test says, to the one
// client that dials it.
type rawServer struct {
	nc   net.Conn
	fr   *http2.Framer
	hbuf bytes.Buffer
	enc  *hpack.Encoder
}

// ourClientOfRaw connects a ClientConn to a raw server, which has read the
// client's preface and sent its SETTINGS.
func ourClientOfRaw(t *testing.T) (*ClientConn, *rawServer) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := testutil.AcceptOne(ln)
	cc := ourClient(t, ln.Addr().String())
	nc, ok := <-accepted
	if !ok {
		t.Fatal("the raw server accepted no connection")
	}
	t.Cleanup(func() { nc.Close() })
	nc.SetDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, len(http2.ClientPreface))
	if _, err := io.ReadFull(nc, buf); err != nil || string(buf) != http2.ClientPreface {
		t.Fatalf("the client's preface: %q, %v", buf, err)
	}
	rs := &rawServer{nc: nc, fr: http2.NewFramer(nc, nc)}
	rs.enc = hpack.NewEncoder(&rs.hbuf)
	if err := rs.fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	return cc, rs
}

// TestClient_aFrameOnAnIdleStreamIsAProtocolError: RST_STREAM,
// WINDOW_UPDATE or DATA on a stream the client has not opened ends the
// connection with GOAWAY PROTOCOL_ERROR (RFC 9113, 5.1), on a connection
// that has had requests or none; on a stream that is closed they are
// tolerated.
func TestClient_aFrameOnAnIdleStreamIsAProtocolError(t *testing.T) {
	for name, send := range idleFrames {
		for _, requests := range []int{0, 1} {
			t.Run(fmt.Sprintf("%s-after-%d", name, requests), func(t *testing.T) {
				cc, rs := ourClientOfRaw(t)
				idle := uint32(1)
				if requests == 1 {
					idle = 3
					got := make(chan error, 1)
					go func() {
						resp, err := cc.RoundTrip(newRequest(t, "GET", "x", "/", nil))
						if err == nil {
							resp.Body.Close()
						}
						got <- err
					}()
					for {
						f, err := rs.fr.ReadFrame()
						if err != nil {
							t.Fatalf("the request: %v", err)
						}
						if f.Header().Type == http2.FrameHeaders && f.Header().StreamID == 1 {
							break
						}
					}
					rs.hbuf.Reset()
					rs.enc.WriteField(hpack.HeaderField{Name: ":status", Value: "204"})
					if err := rs.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: rs.hbuf.Bytes(), EndStream: true, EndHeaders: true}); err != nil {
						t.Fatal(err)
					}
					if err := <-got; err != nil {
						t.Fatalf("the request: %v", err)
					}
					// Stream 1 is closed.
					if err := send(rs.fr, 1); err != nil {
						t.Fatal(err)
					}
					pingThrough(t, rs.fr, name+" on closed stream 1")
				}

				if err := send(rs.fr, idle); err != nil {
					t.Fatal(err)
				}
				what := fmt.Sprintf("%s on idle stream %d", name, idle)
				if ga := readGoAway(t, rs.fr, what); ga.ErrCode != http2.ErrCodeProtocol {
					t.Fatalf("%s: GOAWAY %v, want PROTOCOL_ERROR", what, ga.ErrCode)
				}
				waitFor(t, func() bool { return cc.Err() != nil })
				if err := cc.Err(); !strings.Contains(err.Error(), "the peer broke the protocol") || !strings.Contains(err.Error(), "idle") {
					t.Fatalf("%s: the connection ended with %q", what, err)
				}
			})
		}
	}
}

// TestServer_thePeerMayNotSendPastTheStreamWindow: the stream's window is
// what we advertised, less what the peer sent, plus what we credited
// back: data the handler read but whose credit has not gone back yet
// (it goes a quarter window at a time) is not the peer's to send, and
// neither is padding. A byte past it is a stream error FLOW_CONTROL_ERROR
// (RFC 9113, 6.9.1); the connection serves on.
func TestServer_thePeerMayNotSendPastTheStreamWindow(t *testing.T) {
	const read = 100 << 10 // under a quarter window: no credit goes back
	for _, tc := range []struct {
		name string
		// past sends what goes past the window, after StreamWindow-before
		// bytes of data.
		before int
		past   func(fr *http2.Framer) error
	}{
		{"unacked", 0, func(fr *http2.Framer) error { return fr.WriteData(1, false, []byte("x")) }},
		// 5 bytes of data, with the padding and its length 16.
		{"padding", 10, func(fr *http2.Framer) error { return fr.WriteDataPadded(1, false, []byte("12345"), make([]byte, 10)) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			release := make(chan struct{})
			readErr := make(chan error, 1)
			h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path != "/upload" {
					return
				}
				_, err := io.ReadFull(r.Body, make([]byte, read))
				readErr <- err
				<-release
			})
			addr, _ := ourServerWith(t, h, ServerConfig{})
			defer close(release)
			rc := dialRaw(t, addr)
			rc.nc.SetDeadline(time.Now().Add(20 * time.Second))
			rc.hbuf.Reset()
			for _, hf := range []hpack.HeaderField{{Name: ":method", Value: "POST"}, {Name: ":scheme", Value: "https"}, {Name: ":authority", Value: "x"}, {Name: ":path", Value: "/upload"}} {
				rc.enc.WriteField(hf)
			}
			if err := rc.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: rc.hbuf.Bytes(), EndHeaders: true}); err != nil {
				t.Fatal(err)
			}
			// The frames the server sends, read as they come: the
			// server's writes must not wait on a test that is writing.
			frames := make(chan http2.Frame, 64)
			go func() {
				defer close(frames)
				fr := http2.NewFramer(nil, rc.nc)
				for {
					f, err := fr.ReadFrame()
					if err != nil {
						return
					}
					frames <- f
				}
			}()
			// The stream's whole window (the connection's is larger: its
			// WINDOW_UPDATE comes with the server's SETTINGS), less before.
			chunk := make([]byte, 16<<10)
			for left := StreamWindow - tc.before; left > 0; left -= len(chunk) {
				if err := rc.fr.WriteData(1, false, chunk[:min(left, len(chunk))]); err != nil {
					t.Fatal(err)
				}
			}
			if err := <-readErr; err != nil {
				t.Fatalf("the handler read: %v", err)
			}
			if err := tc.past(rc.fr); err != nil {
				t.Fatal(err)
			}
			// The server answers frames in order: the reset comes before
			// the ACK of a PING sent after.
			ping := [8]byte{'p', 'a', 's', 't'}
			if err := rc.fr.WritePing(false, ping); err != nil {
				t.Fatal(err)
			}
			var rst *http2.RSTStreamFrame
			for f := range frames {
				switch f := f.(type) {
				case *http2.WindowUpdateFrame:
					if f.StreamID == 1 {
						t.Fatalf("a WINDOW_UPDATE of %d for stream 1 after %d bytes read", f.Increment, read)
					}
				case *http2.RSTStreamFrame:
					if f.StreamID == 1 {
						rst = f
					}
				case *http2.GoAwayFrame:
					t.Fatalf("GOAWAY %v for a stream sent past its window", f.ErrCode)
				case *http2.PingFrame:
					if !f.IsAck() || f.Data != ping {
						continue
					}
					if rst == nil || rst.ErrCode != http2.ErrCodeFlowControl {
						t.Fatalf("past the stream window (%d bytes read, none credited): reset %v, want FLOW_CONTROL_ERROR", read, rst)
					}
					// The connection serves on.
					rc.get(t, 3)
					for f := range frames {
						if f.Header().StreamID == 3 && f.Header().Type == http2.FrameHeaders {
							return
						}
					}
					t.Fatal("no response on stream 3 after the reset of stream 1")
				}
			}
			t.Fatal("the connection ended before the PING ACK")
		})
	}
}

// TestServer_theSettingsComeBeforeAGoAwayOfAnEarlyShutdown: a server shut
// down after its connection was made and before it served (as a proxy
// draining its listeners does to a connection it just accepted) still
// sends its SETTINGS first, as the preface (RFC 9113, 3.4), then GOAWAY.
func TestServer_theSettingsComeBeforeAGoAwayOfAnEarlyShutdown(t *testing.T) {
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
		sc := NewServerConn(nc, http.HandlerFunc(echo), ServerConfig{})
		sc.Shutdown()
		served <- sc.Serve(context.Background())
	}()
	// The client only reads: the server closes at once, and data of the
	// client's it did not read would make its close a reset, which can
	// lose what it sent.
	nc, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	fr := http2.NewFramer(nil, nc)
	f, err := fr.ReadFrame()
	if err != nil {
		t.Fatalf("the server's first frame: %v", err)
	}
	if sf, ok := f.(*http2.SettingsFrame); !ok || sf.IsAck() {
		t.Fatalf("the server's first frame is %v, not its SETTINGS", f.Header())
	}
	if ga := readGoAway(t, fr, "an early Shutdown"); ga.ErrCode != http2.ErrCodeNo {
		t.Fatalf("GOAWAY %v after Shutdown, want NO_ERROR", ga.ErrCode)
	}
	select {
	case err := <-served:
		if err != nil {
			t.Fatalf("Serve after Shutdown: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve after Shutdown did not return")
	}
}

// stuckConn is a connection whose writes wait, once armed, until the test
// releases them: a peer that stopped reading, with the socket full.
type stuckConn struct {
	net.Conn
	armed   atomic.Bool
	stuck   chan struct{} // closed when a write waits
	release chan struct{}
	once    sync.Once
}

func (s *stuckConn) Write(p []byte) (int, error) {
	if s.armed.Load() {
		s.once.Do(func() { close(s.stuck) })
		<-s.release
	}
	return s.Conn.Write(p)
}

// TestServer_shutdownDoesNotWaitForAStuckWriter: Shutdown returns at once
// even when a response's write is stuck on a peer that does not read (it
// holds the write lock the GOAWAY needs); closing the connection ends the
// GOAWAY's write.
func TestServer_shutdownDoesNotWaitForAStuckWriter(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	sconn := make(chan *stuckConn, 1)
	go func() {
		nc, err := ln.Accept()
		if err != nil {
			close(sconn)
			return
		}
		sconn <- &stuckConn{Conn: nc, stuck: make(chan struct{}), release: make(chan struct{})}
	}()
	rc := dialRaw(t, ln.Addr().String())
	sc := <-sconn
	if sc == nil {
		t.Fatal("no connection accepted")
	}
	defer sc.Close()
	writing := make(chan struct{})
	srv := NewServerConn(sc, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sc.armed.Store(true)
		close(writing)
		w.Write([]byte("stuck"))
		w.(http.Flusher).Flush()
	}), ServerConfig{})
	served := make(chan error, 1)
	go func() { served <- srv.Serve(context.Background()) }()
	go io.Copy(io.Discard, rc.nc) // the frames that leave before the writes stick
	rc.get(t, 1)
	<-writing
	select {
	case <-sc.stuck:
	case <-time.After(10 * time.Second):
		t.Fatal("the handler's write did not reach the connection within 10s")
	}

	shut := make(chan struct{})
	go func() {
		srv.Shutdown()
		close(shut)
	}()
	select {
	case <-shut:
	case <-time.After(5 * time.Second):
		t.Error("Shutdown waits for a write stuck on a peer that does not read")
	}
	srv.Close()
	close(sc.release) // the stuck write fails on the closed connection
	<-shut
	select {
	case <-served:
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return within 10s of Close")
	}
}

// TestServer_aMethodThatIsNotATokenIsRefused: a :method with a space (which
// an HTTP/1.1 hop after the proxy would write into its request line) resets
// its stream with PROTOCOL_ERROR, and the handler never sees it.
func TestServer_aMethodThatIsNotATokenIsRefused(t *testing.T) {
	var served atomic.Int32
	addr, _ := ourServerWith(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { served.Add(1) }), ServerConfig{})
	rc := dialRaw(t, addr)
	rc.hbuf.Reset()
	for _, hf := range []hpack.HeaderField{{Name: ":method", Value: "GET /admin"}, {Name: ":scheme", Value: "https"},
		{Name: ":authority", Value: "x"}, {Name: ":path", Value: "/"}} {
		rc.enc.WriteField(hf)
	}
	if err := rc.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: rc.hbuf.Bytes(), EndStream: true, EndHeaders: true}); err != nil {
		t.Fatal(err)
	}
	rc.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		f, err := rc.fr.ReadFrame()
		if err != nil {
			t.Fatalf("no reset of the stream: %v", err)
		}
		switch f := f.(type) {
		case *http2.RSTStreamFrame:
			if f.ErrCode != http2.ErrCodeProtocol {
				t.Fatalf("reset %v, want PROTOCOL_ERROR", f.ErrCode)
			}
			if n := served.Load(); n != 0 {
				t.Fatalf("the handler served the request %d times", n)
			}
			return
		case *http2.HeadersFrame:
			t.Fatal("the request was answered")
		}
	}
}
