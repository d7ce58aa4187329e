package h2link

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"golang.org/x/net/http/httpguts"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// ServerConfig tunes a ServerConn. The zero value is usable.
type ServerConfig struct {
	// MaxStreams is how many requests a client may have open at once
	// (DefaultMaxStreams when 0).
	MaxStreams uint32
	// IdleTimeout closes a connection that has had no request for this
	// long (never when 0).
	IdleTimeout time.Duration
	// Logger takes the panics of handlers (other than
	// http.ErrAbortHandler); hclog's default when nil.
	Logger hclog.Logger
}

// ServerConn serves the requests of one client connection, each with a
// handler running on a goroutine of its own.
type ServerConn struct {
	c        *conn
	h        http.Handler
	cfg      ServerConfig
	logger   hclog.Logger
	tlsState *tls.ConnectionState // shared by the requests: read only
	remote   string
	ctx      context.Context // set by Serve, before the reader starts
	// running counts the handlers that have not returned, which bounds
	// them even when the client resets its streams as fast as it opens
	// them (a reset stream leaves the count of streams at once, its
	// handler only when it returns).
	running atomic.Int32
	// idle hands requests to handler goroutines that have served one and
	// wait a while for another (unbuffered: a send succeeds only when one
	// waits). A goroutine whose stack has grown to what the handler needs
	// serves request after request, rather than each new one growing its
	// stack from the smallest again.
	idle chan handlerWork
}

// handlerWork is a request for a handler goroutine.
type handlerWork struct {
	ss *serverStream
	f  *http2.MetaHeadersFrame
}

// handlerIdle is how long a handler goroutine waits for another request.
const handlerIdle = 5 * time.Second

// NewServerConn prepares to serve h on nc, an established connection (a
// TLS one between proxies, its handshake done); Serve serves it.
func NewServerConn(nc net.Conn, h http.Handler, cfg ServerConfig) *ServerConn {
	if cfg.MaxStreams == 0 {
		cfg.MaxStreams = DefaultMaxStreams
	}
	sc := &ServerConn{h: h, cfg: cfg, logger: cfg.Logger, remote: nc.RemoteAddr().String()}
	if sc.logger == nil {
		sc.logger = hclog.Default()
	}
	if tc, ok := nc.(*tls.Conn); ok {
		cs := tc.ConnectionState()
		sc.tlsState = &cs
	}
	sc.idle = make(chan handlerWork)
	sc.c = newConn(nc, true, sc)
	sc.c.idleTimeout = cfg.IdleTimeout
	sc.c.maxStreams = cfg.MaxStreams
	return sc
}

// Serve serves the connection until it closes, ctx ends, or Close or
// Shutdown closes it. It returns once every handler has returned. Each
// request's context derives from ctx.
func (sc *ServerConn) Serve(ctx context.Context) error {
	sc.ctx = ctx
	if err := sc.c.start(); err != nil {
		sc.c.close(err)
		return err
	}
	stop := context.AfterFunc(ctx, func() { sc.c.close(context.Cause(ctx)) })
	sc.c.readLoop()
	stop()
	sc.c.goroutines.Wait()
	if err := sc.c.err(); err != nil && !errors.Is(err, ErrClosed) {
		return err
	}
	return nil
}

// Shutdown tells the client to open no more streams (GOAWAY) and closes
// the connection once the open ones are done. It does not wait, not even
// for the GOAWAY's write (a peer that does not read cannot hold it up;
// Close ends that write): Serve returns once the connection is closed.
func (sc *ServerConn) Shutdown() { sc.c.drain() }

// Close closes the connection at once; its handlers' contexts end.
func (sc *ServerConn) Close() error {
	sc.c.close(nil)
	return nil
}

// InFlight returns how many requests are open.
func (sc *ServerConn) InFlight() int { return sc.c.activeStreams() }

// serverStream is a stream's server side.
type serverStream struct {
	*stream
	ctx    context.Context
	cancel context.CancelFunc
}

func (sc *ServerConn) streamDone(*stream) {}

// headers opens a stream for a request, or takes a request's trailers.
func (sc *ServerConn) headers(f *http2.MetaHeadersFrame) error {
	c := sc.c
	id := f.StreamID
	if id%2 == 0 {
		return http2.ConnectionError(http2.ErrCodeProtocol)
	}
	c.mu.Lock()
	if s := c.streams[id]; s != nil {
		c.mu.Unlock()
		if !f.StreamEnded() {
			s.reset(http2.ErrCodeProtocol, errors.New("h2link: request trailers without END_STREAM"))
			return nil
		}
		if f.Truncated {
			s.reset(http2.ErrCodeProtocol, errHeaderList("request trailers"))
			return nil
		}
		s.receiveTrailers(f)
		return nil
	}
	if id <= c.lastPeer {
		c.mu.Unlock()
		c.control(func(fr *http2.Framer) error { return fr.WriteRSTStream(id, http2.ErrCodeStreamClosed) })
		return nil
	}
	c.lastPeer = id
	if c.goingAway || c.closed || len(c.streams) >= int(sc.cfg.MaxStreams) || sc.running.Load() >= int32(sc.cfg.MaxStreams) {
		c.mu.Unlock()
		c.control(func(fr *http2.Framer) error { return fr.WriteRSTStream(id, http2.ErrCodeRefusedStream) })
		return nil
	}
	s := newStream(c, id)
	ss := &serverStream{stream: s}
	ss.ctx, ss.cancel = context.WithCancel(sc.ctx)
	s.owner = ss
	s.onFail = func(error) { ss.cancel() }
	c.streams[id] = s
	c.mu.Unlock()
	c.fcMu.Lock()
	s.sendWindow = c.peerInit
	c.fcMu.Unlock()

	method, path := f.PseudoValue("method"), f.PseudoValue("path")
	switch {
	case method == "" || path == "" || f.PseudoValue("scheme") == "":
		s.reset(http2.ErrCodeProtocol, errors.New("h2link: request without :method, :path or :scheme"))
		return nil
	case method == http.MethodConnect:
		s.reset(http2.ErrCodeRefusedStream, errors.New("h2link: CONNECT is not served"))
		return nil
	case !httpguts.ValidHeaderFieldName(method):
		// A method is a token (RFC 9110, 9.1), as a field name is: one
		// with a space or a delimiter would make another request line of
		// an HTTP/1.1 hop.
		s.reset(http2.ErrCodeProtocol, fmt.Errorf("h2link: the :method %q is not a token", method))
		return nil
	}
	if name := invalidWireField(f.RegularFields()); name != "" {
		s.reset(http2.ErrCodeProtocol, fmt.Errorf("h2link: connection-specific header %q in a request", name))
		return nil
	}
	declared, err := declaredLength(f)
	if err == nil && f.StreamEnded() && declared > 0 {
		err = fmt.Errorf("h2link: a request without a body declares a Content-Length of %d", declared)
	}
	if err != nil {
		s.reset(http2.ErrCodeProtocol, err)
		return nil
	}
	s.declared = declared
	if f.StreamEnded() {
		s.receive(nil, 0, true)
	}
	sc.running.Add(1)
	select {
	case sc.idle <- handlerWork{ss, f}:
	default:
		c.goroutines.Add(1)
		go sc.handle(ss, f)
	}
	return nil
}

// declaredLength returns the Content-Length a request's headers declare,
// or -1 when they declare none.
func declaredLength(f *http2.MetaHeadersFrame) (int64, error) {
	declared := int64(-1)
	for _, hf := range f.RegularFields() {
		if hf.Name != "content-length" {
			continue
		}
		n, err := strconv.ParseInt(hf.Value, 10, 64)
		if err != nil || n < 0 || declared >= 0 && n != declared {
			return 0, fmt.Errorf("h2link: a request with a bad Content-Length %q", hf.Value)
		}
		declared = n
	}
	return declared, nil
}

// handle serves requests, the first being ss's, until none comes for
// handlerIdle or the connection closes.
func (sc *ServerConn) handle(ss *serverStream, f *http2.MetaHeadersFrame) {
	defer sc.c.goroutines.Done()
	var t *time.Timer
	for {
		sc.serve(ss, f)
		if t == nil {
			t = time.NewTimer(handlerIdle)
			defer t.Stop()
		} else {
			t.Reset(handlerIdle)
		}
		select {
		case w := <-sc.idle:
			ss, f = w.ss, w.f
		case <-t.C:
			return
		case <-sc.c.closing:
			return
		}
	}
}

// serve runs the handler of one request.
func (sc *ServerConn) serve(ss *serverStream, f *http2.MetaHeadersFrame) {
	defer sc.running.Add(-1)
	defer ss.cancel()
	req, err := sc.request(ss, f)
	if err != nil {
		ss.reset(http2.ErrCodeProtocol, err)
		return
	}
	h := sc.h
	if f.Truncated {
		// The framer left out the fields past the limit: the request is
		// answered as net/http's server does, not served without them.
		h = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(http.StatusRequestHeaderFieldsTooLarge)
		})
	}
	rw := &responseWriter{s: ss, req: req, header: make(http.Header)}
	defer func() {
		if p := recover(); p != nil {
			if p != http.ErrAbortHandler {
				sc.logger.Error("handler panicked", "remote", sc.remote, "method", req.Method, "path", req.URL.Path, "panic", fmt.Sprint(p))
			}
			ss.reset(http2.ErrCodeInternal, errors.New("h2link: handler aborted"))
			return
		}
		if err := rw.finish(); err != nil {
			ss.reset(http2.ErrCodeInternal, err)
			return
		}
		// A request whose body the handler did not read to its end is
		// told to stop sending (RFC 9113, 8.1).
		// What it did not read of a body that ended goes back to the
		// connection's window.
		ss.mu.Lock()
		ended := ss.recvEnded
		unread := ss.discardLocked()
		ss.discard = true
		ss.mu.Unlock()
		ss.c.creditConn(unread)
		if !ended {
			ss.reset(http2.ErrCodeNo, errStreamClosed)
		}
	}()
	h.ServeHTTP(rw, req)
}

// request builds the request the headers f begin.
func (sc *ServerConn) request(ss *serverStream, f *http2.MetaHeadersFrame) (*http.Request, error) {
	method, path, authority := f.PseudoValue("method"), f.PseudoValue("path"), f.PseudoValue("authority")
	var u *url.URL
	if path == "*" && method == http.MethodOptions {
		u = &url.URL{Path: "*"}
	} else {
		var err error
		if u, err = url.ParseRequestURI(path); err != nil {
			return nil, fmt.Errorf("h2link: bad :path %q: %w", path, err)
		}
	}
	header := decodeHeader(f.RegularFields())
	if authority == "" {
		authority = header.Get("Host")
	}
	delete(header, "Host")
	if cookies := header["Cookie"]; len(cookies) > 1 {
		header["Cookie"] = []string{strings.Join(cookies, "; ")}
	}
	req := &http.Request{
		Method: method, URL: u, Proto: "HTTP/2.0", ProtoMajor: 2,
		Header: header, Host: authority, RemoteAddr: sc.remote, RequestURI: path, TLS: sc.tlsState,
	}
	if keys := trailerKeys(header); len(keys) > 0 {
		req.Trailer = make(http.Header, len(keys))
		for _, k := range keys {
			req.Trailer[k] = nil
		}
	}
	if f.StreamEnded() {
		req.Body, req.ContentLength = http.NoBody, 0
	} else {
		req.ContentLength = ss.declared // checked by the reader, as it took the headers
	}
	req = req.WithContext(ss.ctx)
	if req.Body == nil {
		req.Body = &requestBody{ss: ss, req: req}
	}
	return req, nil
}

// requestBody reads a request's DATA; at its end, the trailers are in the
// request's Trailer.
type requestBody struct {
	ss   *serverStream
	req  *http.Request
	done bool
}

func (b *requestBody) Read(p []byte) (int, error) {
	n, err := b.ss.read(p)
	if err == io.EOF && !b.done {
		b.done = true
		b.ss.mu.Lock()
		trailer := b.ss.trailer
		b.ss.mu.Unlock()
		if trailer != nil {
			if b.req.Trailer == nil {
				b.req.Trailer = make(http.Header, len(trailer))
			}
			for k, vv := range trailer {
				b.req.Trailer[k] = vv
			}
		}
	}
	return n, err
}

// Close drops the rest of the body; the response goes on. A Read waiting
// on another goroutine returns http.ErrBodyReadAfterClose.
func (b *requestBody) Close() error {
	ss := b.ss
	ss.mu.Lock()
	ss.discard = true
	n := ss.discardLocked()
	ss.cond.Broadcast()
	ss.mu.Unlock()
	ss.c.creditConn(n)
	return nil
}

// respBufs hold the start of response bodies, which leave with their
// headers.
var respBufs = sync.Pool{New: func() any {
	b := make([]byte, 0, 16<<10)
	return &b
}}

// responseWriter is the http.ResponseWriter of a request: the headers and
// the start of the body wait until the handler writes more than a buffer,
// flushes, or returns, so that a small response leaves in one write.
type responseWriter struct {
	s      *serverStream
	req    *http.Request
	header http.Header

	status      int
	wroteHeader bool     // the handler gave the final status
	sentHeader  bool     // the HEADERS frame went
	declared    []string // trailers declared with "Trailer" at WriteHeader
	buf         *[]byte  // body not yet sent
	err         error    // a failed write: the stream is gone
}

// Header returns the response's header map.
func (w *responseWriter) Header() http.Header { return w.header }

// WriteHeader sends an informational status at once, or records the final
// one.
func (w *responseWriter) WriteHeader(code int) {
	if w.wroteHeader {
		return
	}
	if code < 100 || code > 999 {
		panic(fmt.Sprintf("invalid WriteHeader code %v", code))
	}
	if code < 200 && code != http.StatusSwitchingProtocols {
		w.sendInformational(code)
		return
	}
	w.status, w.wroteHeader = code, true
	w.declared = trailerKeys(w.header)
}

func (w *responseWriter) sendInformational(code int) {
	s := w.s.stream
	err := s.c.write(func() error {
		if err := s.sendErr(); err != nil {
			return errSkip{err}
		}
		return s.writeHeadersLocked(func(enc *hpack.Encoder) error { return w.encodeHeaders(enc, code) }, false)
	})
	if err != nil && w.err == nil {
		w.err = unskip(err)
	}
}

// bodyAllowed reports whether the response may carry a body.
func (w *responseWriter) bodyAllowed() bool {
	return w.status != http.StatusNoContent && w.status != http.StatusNotModified && w.req.Method != http.MethodHead
}

// Write adds p to the body.
func (w *responseWriter) Write(p []byte) (int, error) {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if w.err != nil {
		return 0, w.err
	}
	if !w.bodyAllowed() {
		if w.req.Method == http.MethodHead {
			return len(p), nil
		}
		return 0, http.ErrBodyNotAllowed
	}
	if w.buf == nil {
		w.buf = respBufs.Get().(*[]byte)
	}
	b := *w.buf
	if len(b)+len(p) <= cap(b) {
		*w.buf = append(b, p...)
		return len(p), nil
	}
	if err := w.send(p, false); err != nil {
		return 0, err
	}
	return len(p), nil
}

// Flush sends the headers and what the body holds.
func (w *responseWriter) Flush() { _ = w.FlushError() }

// FlushError is Flush, with the error (for http.ResponseController).
func (w *responseWriter) FlushError() error {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if w.err != nil {
		return w.err
	}
	return w.send(nil, false)
}

// finish ends the response after the handler returned: what is left of the
// headers, the body and the trailers.
func (w *responseWriter) finish() error {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	defer w.release()
	if w.err != nil {
		return w.err
	}
	return w.send(nil, true)
}

func (w *responseWriter) release() {
	if w.buf != nil {
		*w.buf = (*w.buf)[:0]
		respBufs.Put(w.buf)
		w.buf = nil
	}
}

// send writes the headers (if not sent), the buffered body, then p; with
// end, the trailers and END_STREAM follow.
func (w *responseWriter) send(p []byte, end bool) error {
	s := w.s.stream
	var data []byte
	if w.buf != nil {
		data = *w.buf
	}
	var trailer http.Header
	if end {
		trailer = w.trailers()
		if !w.sentHeader && len(p) == 0 && trailer == nil && w.bodyAllowed() && w.header["Content-Length"] == nil {
			w.header["Content-Length"] = []string{strconv.Itoa(len(data))}
		}
	}
	sendHeader := !w.sentHeader
	w.sentHeader = true
	// In one write: the headers, as much of the body as the windows take
	// now, and (when all of it went) the trailers.
	var rest, rest2 []byte
	err := s.c.write(func() error {
		if err := s.sendErr(); err != nil {
			return errSkip{err}
		}
		bodyless := len(data) == 0 && len(p) == 0
		if sendHeader {
			if err := s.writeHeadersLocked(func(enc *hpack.Encoder) error { return w.encodeHeaders(enc, w.status) }, end && bodyless && trailer == nil); err != nil {
				return err
			}
		}
		var err error
		if rest, err = w.writeSome(data, end && len(p) == 0 && trailer == nil); err != nil || len(rest) > 0 {
			rest2 = p
			return err
		}
		if rest2, err = w.writeSome(p, end && trailer == nil); err != nil || len(rest2) > 0 {
			return err
		}
		if end && trailer != nil {
			return s.writeHeadersLocked(func(enc *hpack.Encoder) error { return encodeHeader(enc, trailer) }, true)
		}
		if end && bodyless && !sendHeader {
			return s.writeDataLocked(nil, true)
		}
		return nil
	})
	if w.buf != nil {
		*w.buf = (*w.buf)[:0]
	}
	if err == nil && (len(rest) > 0 || len(rest2) > 0) {
		// The windows were short: the rest waits for credit.
		if err = s.writeData(rest, end && len(rest2) == 0 && trailer == nil); err == nil {
			err = s.writeData(rest2, end && trailer == nil)
		}
		if err == nil && end && trailer != nil {
			err = unskip(s.c.write(func() error {
				if err := s.sendErr(); err != nil {
					return errSkip{err} // reset meanwhile: no HEADERS after RST_STREAM
				}
				return s.writeHeadersLocked(func(enc *hpack.Encoder) error { return encodeHeader(enc, trailer) }, true)
			}))
		}
	}
	if err != nil {
		w.err = unskip(err)
		return w.err
	}
	return nil
}

// writeSome writes as much of p as the windows take now, ending the
// stream after it when end and all of it went; it returns what is left.
// wmu must be held.
func (w *responseWriter) writeSome(p []byte, end bool) ([]byte, error) {
	s := w.s.stream
	for len(p) > 0 {
		k := s.tryWindow(len(p))
		if k == 0 {
			return p, nil
		}
		chunk := p[:k]
		p = p[k:]
		if err := s.writeDataLocked(chunk, end && len(p) == 0); err != nil {
			return nil, err
		}
	}
	return nil, nil
}

// encodeHeaders encodes the status and the header, without the trailers
// (declared, or with http.TrailerPrefix).
func (w *responseWriter) encodeHeaders(enc *hpack.Encoder, status int) error {
	if err := enc.WriteField(hpack.HeaderField{Name: ":status", Value: statusText(status)}); err != nil {
		return err
	}
	h := w.header
	if len(w.declared) > 0 || hasTrailerPrefix(h) {
		h = h.Clone()
		for _, k := range w.declared {
			delete(h, k)
		}
		for k := range h {
			if strings.HasPrefix(k, http.TrailerPrefix) {
				delete(h, k)
			}
		}
	}
	return encodeHeader(enc, h)
}

func hasTrailerPrefix(h http.Header) bool {
	for k := range h {
		if strings.HasPrefix(k, http.TrailerPrefix) {
			return true
		}
	}
	return false
}

// trailers returns the trailers to send: the declared ones the handler
// set, and those with http.TrailerPrefix; nil when there are none.
func (w *responseWriter) trailers() http.Header {
	var t http.Header
	for _, k := range w.declared {
		if vv := w.header[k]; len(vv) > 0 {
			if t == nil {
				t = make(http.Header)
			}
			t[k] = vv
		}
	}
	for k, vv := range w.header {
		if name, ok := strings.CutPrefix(k, http.TrailerPrefix); ok && len(vv) > 0 {
			if t == nil {
				t = make(http.Header)
			}
			t[http.CanonicalHeaderKey(name)] = vv
		}
	}
	if t != nil && validHeader(t) != nil {
		for k, vv := range t {
			if validHeader(http.Header{k: vv}) != nil {
				delete(t, k)
			}
		}
	}
	return t
}

var statusTexts [600]string

func init() {
	for i := range statusTexts {
		statusTexts[i] = strconv.Itoa(i)
	}
}

func statusText(code int) string {
	if code >= 0 && code < len(statusTexts) {
		return statusTexts[code]
	}
	return strconv.Itoa(code)
}
