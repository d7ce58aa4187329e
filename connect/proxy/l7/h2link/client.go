package h2link

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/net/http/httpguts"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// maxInlineBody is the largest request body (of a known length) read on
// the caller's goroutine and sent with the request's headers; a larger or
// unknown one is streamed by a goroutine of its own.
const maxInlineBody = 64 << 10

var inlineBufs = sync.Pool{New: func() any {
	b := make([]byte, maxInlineBody)
	return &b
}}

// errNoStream means the connection is at the server's stream limit.
var errNoStream = errors.New("h2link: no stream available: the connection is at the server's limit")

// ClientConn sends requests to a server over one connection, as HTTP/2
// streams. Its methods are safe for concurrent use.
type ClientConn struct {
	c       *conn
	onClose func()
	done    chan struct{} // closed once the connection and its goroutines are done
}

// NewClientConn speaks HTTP/2 over nc, an established connection (a TLS
// one between proxies, its handshake done). onClose, when not nil, is
// called once the connection has closed and its goroutines have ended,
// from the last of them.
func NewClientConn(nc net.Conn, onClose func()) (*ClientConn, error) {
	cc := &ClientConn{onClose: onClose, done: make(chan struct{})}
	cc.c = newConn(nc, false, cc)
	if err := cc.c.start(); err != nil {
		nc.Close()
		return nil, err
	}
	go cc.run()
	return cc, nil
}

func (cc *ClientConn) run() {
	cc.c.readLoop()
	cc.c.goroutines.Wait()
	close(cc.done)
	if cc.onClose != nil {
		cc.onClose()
	}
}

// Reserve promises a stream to the next RoundTrip, or fails when the
// connection takes no more (closed, going away, or at the server's limit
// of streams).
func (cc *ClientConn) Reserve() error {
	c := cc.c
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case c.closed:
		return ErrClosed
	case c.goingAway:
		return ErrRefused
	case len(c.streams)+c.reserved >= c.peerMax:
		return errNoStream
	}
	c.reserved++
	return nil
}

// Release gives back a reservation RoundTrip will not use.
func (cc *ClientConn) Release() {
	c := cc.c
	c.mu.Lock()
	if c.reserved > 0 {
		c.reserved--
	}
	c.mu.Unlock()
	c.closeIfIdle()
}

// InFlight returns how many requests are open on the connection.
func (cc *ClientConn) InFlight() int { return cc.c.activeStreams() }

// Err returns why the connection closed, or nil while it is open (a
// connection going away is open until its requests are done).
func (cc *ClientConn) Err() error { return cc.c.err() }

// Drain takes no new requests and closes the connection once the open
// ones are done. It does not wait.
func (cc *ClientConn) Drain() { cc.c.drain() }

// Close closes the connection at once, failing its open requests, and
// waits for its goroutines.
func (cc *ClientConn) Close() error {
	cc.c.close(nil)
	<-cc.done
	return nil
}

// clientStream is a stream's client side.
type clientStream struct {
	*stream
	answer chan answer // buffered: the response's headers, or the failure
	// gotResponse is set by the reader goroutine (the only one to use it).
	gotResponse bool
}

type answer struct {
	f   *http2.MetaHeadersFrame
	err error
}

func (cc *ClientConn) headers(f *http2.MetaHeadersFrame) error {
	c := cc.c
	c.mu.Lock()
	s := c.streams[f.StreamID]
	c.mu.Unlock()
	if s == nil {
		if c.idle(f.StreamID) {
			return idleStreamError(f) // the server opens no streams
		}
		return nil // a stream we already ended
	}
	cs := s.owner.(*clientStream)
	if f.Truncated {
		// The framer left out the fields past the limit.
		what := "response headers"
		if cs.gotResponse {
			what = "response trailers"
		}
		s.reset(http2.ErrCodeProtocol, errHeaderList(what))
		return nil
	}
	if cs.gotResponse {
		if !f.StreamEnded() {
			s.reset(http2.ErrCodeProtocol, errors.New("h2link: trailers without END_STREAM"))
			return nil
		}
		s.receiveTrailers(f)
		return nil
	}
	status, err := strconv.Atoi(f.PseudoValue("status"))
	if err != nil || status < 100 || status > 999 {
		s.reset(http2.ErrCodeProtocol, fmt.Errorf("h2link: bad :status %q in the response", f.PseudoValue("status")))
		return nil
	}
	if status < 200 {
		if f.StreamEnded() {
			s.reset(http2.ErrCodeProtocol, errors.New("h2link: an informational response ended the stream"))
		}
		return nil // 1xx: the final response follows
	}
	cs.gotResponse = true
	select {
	case cs.answer <- answer{f: f}:
	default:
	}
	if f.StreamEnded() {
		s.receive(nil, 0, true)
	}
	return nil
}

func (cc *ClientConn) streamDone(*stream) {}

// RoundTrip sends req on a new stream and returns the response once its
// headers arrive; the body streams after. req's context ends the request
// (and the reading of its body). A request refused before the server
// processed it fails with an error that matches ErrRefused: it may be sent
// again.
func (cc *ClientConn) RoundTrip(req *http.Request) (*http.Response, error) {
	var opening bool // the request got as far as opening its stream
	resp, err := cc.roundTrip(req, &opening)
	if !opening {
		// It uses its reservation all the same: one left behind would
		// count against the server's limit, and keep a draining
		// connection open, for ever.
		cc.Release()
	}
	if err != nil && req.Body != nil {
		req.Body.Close()
	}
	return resp, err
}

func (cc *ClientConn) roundTrip(req *http.Request, opening *bool) (*http.Response, error) {
	if req.URL == nil {
		return nil, errors.New("h2link: request without a URL")
	}
	method := req.Method
	if method == "" {
		method = http.MethodGet
	}
	if method == http.MethodConnect || !httpguts.ValidHeaderFieldName(method) {
		return nil, fmt.Errorf("h2link: unsupported method %q", method)
	}
	authority := req.Host
	if authority == "" {
		authority = req.URL.Host
	}
	scheme := req.URL.Scheme
	if scheme == "" {
		scheme = "https"
	}
	path := req.URL.RequestURI()
	ctx := req.Context()
	if err := ctx.Err(); err != nil {
		return nil, err
	}

	// The body: none, small enough to go with the headers, or streamed.
	body := req.Body
	var inline []byte
	var inlineBuf *[]byte
	switch {
	case body == nil || body == http.NoBody:
		body = nil
	case req.ContentLength > 0 && req.ContentLength <= maxInlineBody:
		inlineBuf = inlineBufs.Get().(*[]byte)
		defer inlineBufs.Put(inlineBuf)
		inline = (*inlineBuf)[:req.ContentLength]
		if _, err := io.ReadFull(body, inline); err != nil {
			return nil, fmt.Errorf("h2link: read the request body: %w", err)
		}
		body.Close()
		body = nil
	}
	if err := validHeader(req.Header); err != nil {
		return nil, fmt.Errorf("h2link: request: %w", err)
	}
	if err := validHeader(req.Trailer); err != nil {
		return nil, fmt.Errorf("h2link: request trailers: %w", err)
	}
	hasTrailers := len(req.Trailer) > 0
	endWithHeaders := body == nil && len(inline) == 0 && !hasTrailers

	var cs *clientStream
	err := cc.c.write(func() error {
		var err error
		*opening = true
		cs, err = cc.openLocked()
		if err != nil {
			return errSkip{err}
		}
		err = cs.writeHeadersLocked(func(enc *hpack.Encoder) error {
			for _, hf := range [...]hpack.HeaderField{
				{Name: ":method", Value: method}, {Name: ":scheme", Value: scheme},
				{Name: ":authority", Value: authority}, {Name: ":path", Value: path},
			} {
				if err := enc.WriteField(hf); err != nil {
					return err
				}
			}
			if req.ContentLength > 0 {
				if err := enc.WriteField(hpack.HeaderField{Name: "content-length", Value: strconv.FormatInt(req.ContentLength, 10)}); err != nil {
					return err
				}
			}
			if hasTrailers {
				if err := enc.WriteField(hpack.HeaderField{Name: "trailer", Value: trailerList(req.Trailer)}); err != nil {
					return err
				}
			}
			return encodeHeader(enc, req.Header)
		}, endWithHeaders)
		if err != nil {
			return err
		}
		// As much of a small body as the windows take goes now.
		for len(inline) > 0 {
			k := cs.tryWindow(len(inline))
			if k == 0 {
				break
			}
			chunk := inline[:k]
			inline = inline[k:]
			if err := cs.writeDataLocked(chunk, len(inline) == 0 && !hasTrailers); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		if cs != nil {
			cs.fail(err)
		} else {
			cc.c.closeIfIdle() // its reservation went
		}
		return nil, unskip(err)
	}
	s := cs.stream
	stop := context.AfterFunc(ctx, func() { s.reset(http2.ErrCodeCancel, context.Cause(ctx)) })

	// What is left of the body is sent while the response is awaited.
	switch {
	case len(inline) > 0:
		rest := append([]byte(nil), inline...)
		cc.goSend(cs, func() error { return cs.sendBody(nil, rest, req.Trailer) })
	case body != nil:
		cc.goSend(cs, func() error { return cs.sendBody(body, nil, req.Trailer) })
	case hasTrailers && !endWithHeaders:
		cc.goSend(cs, func() error { return cs.sendBody(nil, nil, req.Trailer) })
	}

	var a answer
	select {
	case a = <-cs.answer:
	case <-s.done:
		select {
		case a = <-cs.answer:
		default:
			a.err = s.sendErr()
		}
	}
	if a.err != nil {
		stop()
		return nil, a.err
	}
	return cc.response(req, cs, a.f, stop), nil
}

// openLocked starts a stream; wmu must be held so that stream IDs reach
// the wire in order.
func (cc *ClientConn) openLocked() (*clientStream, error) {
	c := cc.c
	c.mu.Lock()
	cs, err := cc.newStreamLocked()
	c.mu.Unlock()
	if err != nil {
		return nil, err
	}
	// The window is set once the stream is in c.streams (fcMu comes
	// before mu): a SETTINGS frame read meanwhile changed peerInit too.
	// The peer cannot credit the stream before its HEADERS, which wait
	// for wmu.
	c.fcMu.Lock()
	cs.sendWindow = c.peerInit
	c.fcMu.Unlock()
	return cs, nil
}

// newStreamLocked registers a new stream; c.mu must be held.
func (cc *ClientConn) newStreamLocked() (*clientStream, error) {
	c := cc.c
	reserved := c.reserved > 0 // used, whether the stream opens or not
	if reserved {
		c.reserved--
	}
	switch {
	case c.closed:
		return nil, ErrClosed
	case c.goingAway || c.nextID >= 1<<31-1:
		c.goingAway = true
		return nil, ErrRefused
	case !reserved && len(c.streams) >= c.peerMax:
		return nil, errNoStream
	}
	s := newStream(c, c.nextID)
	c.nextID += 2
	cs := &clientStream{stream: s, answer: make(chan answer, 1)}
	s.owner = cs
	s.onFail = func(err error) {
		select {
		case cs.answer <- answer{err: err}:
		default:
		}
	}
	c.streams[s.id] = s
	return cs, nil
}

// goSend runs f, which sends the rest of a request, on a goroutine the
// connection owns; a failure resets the stream.
func (cc *ClientConn) goSend(cs *clientStream, f func() error) {
	c := cc.c
	// Not once the connection closed: Close may have waited for its
	// goroutines already. (close sets closed under mu before the reader
	// ends, so an Add under mu with closed unset comes before the Wait.)
	// The stream failed with the connection.
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	c.goroutines.Add(1)
	c.mu.Unlock()
	go func() {
		defer cc.c.goroutines.Done()
		if err := f(); err != nil {
			cs.reset(http2.ErrCodeCancel, err)
		}
	}()
}

// sendBody sends data, then body (if any) to its end, then trailers, and
// ends the stream.
func (s *stream) sendBody(body io.ReadCloser, data []byte, trailer http.Header) error {
	if body != nil {
		// A stream that fails closes the body, so that a Read blocked on
		// it returns.
		stop := context.AfterFunc(doneContext(s.done), func() { body.Close() })
		defer stop()
		defer body.Close()
	}
	if err := s.writeData(data, false); err != nil {
		return err
	}
	if body != nil {
		bp := inlineBufs.Get().(*[]byte)
		defer inlineBufs.Put(bp)
		buf := *bp
		for {
			n, err := body.Read(buf)
			if n > 0 {
				if werr := s.writeData(buf[:n], false); werr != nil {
					return werr
				}
			}
			if err == io.EOF {
				break
			}
			if err != nil {
				return fmt.Errorf("h2link: read the request body: %w", err)
			}
		}
	}
	if len(trailer) > 0 {
		return unskip(s.c.write(func() error {
			if err := s.sendErr(); err != nil {
				return errSkip{err}
			}
			return s.writeHeadersLocked(func(enc *hpack.Encoder) error { return encodeHeader(enc, trailer) }, true)
		}))
	}
	return s.endIfOpen()
}

// response builds the response the headers f begin.
func (cc *ClientConn) response(req *http.Request, cs *clientStream, f *http2.MetaHeadersFrame, stop func() bool) *http.Response {
	status, _ := strconv.Atoi(f.PseudoValue("status"))
	resp := &http.Response{
		Status:     strconv.Itoa(status) + " " + http.StatusText(status),
		StatusCode: status,
		Proto:      "HTTP/2.0",
		ProtoMajor: 2,
		Header:     decodeHeader(f.RegularFields()),
		Request:    req,
	}
	if f.StreamEnded() {
		resp.ContentLength = 0
		resp.Body = http.NoBody
		stop()
		return resp
	}
	resp.ContentLength = -1
	if v := resp.Header["Content-Length"]; len(v) == 1 {
		if n, err := strconv.ParseInt(v[0], 10, 64); err == nil && n >= 0 {
			resp.ContentLength = n
		}
	}
	resp.Body = &responseBody{s: cs.stream, resp: resp, stop: stop}
	return resp
}

// responseBody reads a response's DATA; at its end, the trailers are in
// resp.Trailer.
type responseBody struct {
	s    *stream
	resp *http.Response
	stop func() bool
	done bool
}

func (b *responseBody) Read(p []byte) (int, error) {
	n, err := b.s.read(p)
	if err == io.EOF && !b.done {
		b.done = true
		b.stop()
		b.s.mu.Lock()
		trailer := b.s.trailer
		b.s.mu.Unlock()
		if trailer != nil {
			b.resp.Trailer = trailer
		}
	}
	return n, err
}

func (b *responseBody) Close() error {
	b.s.closeRead()
	b.stop()
	return nil
}

// doneContext is a context that ends when done closes.
func doneContext(done <-chan struct{}) context.Context { return doneCtx(done) }

type doneCtx <-chan struct{}

func (d doneCtx) Deadline() (deadline time.Time, ok bool) { return }
func (d doneCtx) Done() <-chan struct{}                   { return d }
func (d doneCtx) Err() error {
	select {
	case <-d:
		return context.Canceled
	default:
		return nil
	}
}
func (d doneCtx) Value(any) any { return nil }

// trailerList names the keys of trailer, for a "trailer" header.
func trailerList(trailer http.Header) string {
	keys := make([]string, 0, len(trailer))
	for k := range trailer {
		keys = append(keys, lowerKey(k))
	}
	sort.Strings(keys)
	return strings.Join(keys, ",")
}
