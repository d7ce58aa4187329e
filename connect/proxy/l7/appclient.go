package l7

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"syscall"
	"time"

	"golang.org/x/net/http/httpguts"

	"github.com/trellismesh/trellis/connect/proxy/rawsock"
)

// appConns are the destination proxy's HTTP/1.1 connections to its
// application, used on the goroutine of the request: it writes the request
// and reads the answer itself, where net/http's Transport hands each
// request to a writer goroutine and each answer back from a reader one
// (two wake-ups per request, which cost more than the request on an idle
// machine). It takes requests whose body is small and of a known length;
// the others go through the Transport, which writes a body while it reads
// the answer.
type appConns struct {
	addr        string
	dialTimeout time.Duration
	// checkAfter is how long a kept connection may have been idle and
	// still be reused unchecked: appCheckAfter (tests set their own).
	checkAfter time.Duration

	mu     sync.Mutex
	idle   []*appConn // guarded by mu; the most recently used last
	closed bool       // guarded by mu
}

// appConn is one connection to the application.
type appConn struct {
	nc     net.Conn
	br     *bufio.Reader
	bw     *bufio.Writer
	idleAt time.Time
}

const (
	// appIdleTimeout closes connections the application has not used for
	// this long (net/http's Transport waits 90 s too).
	appIdleTimeout = 90 * time.Second
	// appMaxIdle bounds the idle connections kept.
	appMaxIdle = 256
	// appCheckAfter is how long a kept connection may have been idle
	// before it is checked for what the application did with it
	// meanwhile (closed it, or sent an unasked answer such as the 408 of
	// a server whose idle timeout fired), with a non-blocking peek. A
	// busy connection, reused within microseconds, pays no system call
	// (they are most of the proxy's CPU); one idle for half a second pays
	// one, nothing beside the request it is about to carry. Servers time
	// kept connections out after seconds (5 s for Node.js and Apache,
	// 75 s for nginx), so every connection they may have timed out has
	// been idle for longer than this; what comes in the instant of the
	// reuse is left to the retries of roundTrip.
	appCheckAfter = 500 * time.Millisecond
)

// errAppClosed is the error of a request after close.
var errAppClosed = errors.New("the proxy is closing")

// bodyReadError is a failure to read the body of a request from its
// caller: the request could not be sent whole, and the application is not
// to blame.
type bodyReadError struct {
	err error
}

func (e *bodyReadError) Error() string { return "read the request body: " + e.err.Error() }

func (e *bodyReadError) Unwrap() error { return e.err }

// readWhole reads body, which must end at len(p) bytes, into p, and closes
// it. ctx's end closes it too, which ends a read waiting for a caller that
// sends slowly; the error is then ctx's. Other failures are
// *bodyReadError.
func readWhole(ctx context.Context, body io.ReadCloser, p []byte) error {
	stop := context.AfterFunc(ctx, func() { body.Close() })
	defer stop()
	defer body.Close()
	n, err := io.ReadFull(body, p)
	if err == nil {
		// The body must end there: what is past its length would be cut.
		var extra [1]byte
		var k int
		if k, err = io.ReadFull(body, extra[:]); k > 0 {
			return bodyLengthError(int64(len(p))+1, int64(len(p)))
		} else if err == io.EOF {
			return nil
		}
	} else if err == io.EOF || err == io.ErrUnexpectedEOF {
		if ctx.Err() == nil {
			return bodyLengthError(int64(n), int64(len(p)))
		}
	}
	if ctx.Err() != nil {
		return fmt.Errorf("read the request body: %w", context.Cause(ctx))
	}
	return &bodyReadError{err}
}

// bodyLengthError says that a body ended, or went on, at n bytes against
// the declared length.
func bodyLengthError(n, declared int64) *bodyReadError {
	if n < declared {
		return &bodyReadError{fmt.Errorf("it ended after %d of the %d bytes its Content-Length declares", n, declared)}
	}
	return &bodyReadError{fmt.Errorf("it is longer than the %d bytes its Content-Length declares", declared)}
}

func newAppConns(addr string, dialTimeout time.Duration) *appConns {
	return &appConns{addr: addr, dialTimeout: dialTimeout, checkAfter: appCheckAfter}
}

// takes reports whether req goes through roundTrip: no body, or a small one
// of known length (read first, so that it can be sent again).
func (p *appConns) takes(req *http.Request) bool {
	return len(req.Trailer) == 0 &&
		(req.Body == nil || req.Body == http.NoBody || (req.ContentLength > 0 && req.ContentLength <= MaxReplayBody))
}

// requestSkips are the header keys writeRequest does not copy from a
// request's Header: it writes Host and Content-Length itself, and the body
// is never chunked (nor has trailers).
var requestSkips = map[string]bool{"Host": true, "Content-Length": true, "Transfer-Encoding": true, "Trailer": true}

// writeRequest writes req as HTTP/1.1 with body (nil: none) to bw, as
// net/http's Request.Write would for a request of known length, save that
// it adds no User-Agent of its own (a proxy passes the caller's, or none)
// and does not sort the fields. The header's values are valid (h2link
// refuses invalid ones, and the proxy's own are), so nothing is escaped;
// a method or host that could break the request line is an error, before
// anything is written. bw's errors are sticky: the caller's Flush returns
// them.
func writeRequest(bw *bufio.Writer, req *http.Request, body []byte) error {
	host := req.Host
	if host == "" {
		host = req.URL.Host
	}
	if !httpguts.ValidHeaderFieldName(req.Method) { // a token, as a field name is
		return fmt.Errorf("invalid method %q", req.Method)
	}
	if !httpguts.ValidHostHeader(host) {
		return fmt.Errorf("invalid Host %q", host)
	}
	bw.WriteString(req.Method)
	bw.WriteByte(' ')
	bw.WriteString(req.URL.RequestURI())
	bw.WriteString(" HTTP/1.1\r\nHost: ")
	bw.WriteString(host)
	bw.WriteString("\r\n")
	for k, vv := range req.Header {
		if requestSkips[k] {
			continue
		}
		for _, v := range vv {
			bw.WriteString(k)
			bw.WriteString(": ")
			bw.WriteString(v)
			bw.WriteString("\r\n")
		}
	}
	switch {
	case body != nil:
		bw.WriteString("Content-Length: ")
		var num [20]byte
		bw.Write(strconv.AppendInt(num[:0], int64(len(body)), 10))
		bw.WriteString("\r\n")
	case req.Method == http.MethodPost || req.Method == http.MethodPut || req.Method == http.MethodPatch:
		// As net/http does: a body-bearing method says its body is empty.
		bw.WriteString("Content-Length: 0\r\n")
	}
	if req.Close {
		bw.WriteString("Connection: close\r\n")
	}
	bw.WriteString("\r\n")
	bw.Write(body)
	return nil
}

// roundTrip sends req (which takes accepts) and returns the answer; its
// body must be closed. ctx ends the request, and the reading of the body.
// A failure to read the request's body is a *bodyReadError; the body is
// read whole before a connection is taken, so that no connection to the
// application ever gets part of one.
func (p *appConns) roundTrip(ctx context.Context, req *http.Request) (*http.Response, error) {
	var body []byte
	if req.Body != nil && req.Body != http.NoBody {
		bp := copyBufs.Get().(*[]byte)
		defer copyBufs.Put(bp)
		buf := *bp
		if int64(cap(buf)) < req.ContentLength {
			buf = make([]byte, req.ContentLength)
		}
		body = buf[:req.ContentLength]
		if err := readWhole(ctx, req.Body, body); err != nil {
			return nil, err
		}
	}
	for {
		ac, reused, err := p.get(ctx)
		if err != nil {
			return nil, err
		}
		resp, stale, err := p.send(ctx, ac, req, body)
		if err == nil && resp.StatusCode == http.StatusRequestTimeout && reused && idempotent(req.Method) {
			// A server whose idle timeout fired answers 408 on the kept
			// connection, unasked, and closes it (RFC 9110, 15.5.9: "if
			// the client has an outstanding request in transit, it MAY
			// repeat that request"); the request read it as its answer.
			// As net/http's Transport does, the request goes again, on
			// another connection (the older ones timed out too, likely).
			// A 408 on a new connection is the application's answer.
			resp.Body.Close() // closes ac: its answer was not read
			p.dropIdleSince(ac.idleAt)
			continue
		}
		if err == nil {
			return resp, nil
		}
		ac.nc.Close()
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		// A kept connection the application had closed answers nothing:
		// the request was not served, and goes again. The connections
		// idle longer than this one were likely closed with it (an
		// application closing its idle connections closes them all), so
		// they go too; the loop ends at the latest with a new connection.
		if !stale || !reused {
			return nil, err
		}
		p.dropIdleSince(ac.idleAt)
	}
}

// dropIdleSince closes the idle connections that have been idle since t or
// longer.
func (p *appConns) dropIdleSince(t time.Time) {
	p.mu.Lock()
	keep := p.idle[:0]
	var drop []*appConn
	for _, ac := range p.idle {
		if ac.idleAt.After(t) {
			keep = append(keep, ac)
		} else {
			drop = append(drop, ac)
		}
	}
	clear(p.idle[len(keep):])
	p.idle = keep
	p.mu.Unlock()
	for _, ac := range drop {
		ac.nc.Close()
	}
}

// get returns an idle connection (reused) or dials one. An idle
// connection kept for longer than checkAfter is checked first (idleUsable),
// and closed if the application closed it or sent on it meanwhile.
func (p *appConns) get(ctx context.Context) (ac *appConn, reused bool, err error) {
	now := time.Now()
	for {
		ac, err = p.popIdle(now)
		if err != nil {
			return nil, false, err
		}
		if ac == nil {
			break
		}
		if now.Sub(ac.idleAt) < p.checkAfter || idleUsable(ac.nc) {
			return ac, true, nil
		}
		ac.nc.Close()
	}
	d := net.Dialer{Timeout: p.dialTimeout}
	nc, err := d.DialContext(ctx, "tcp", p.addr)
	if err != nil {
		return nil, false, err
	}
	nc = rawsock.Wrap(nc)
	return &appConn{nc: nc, br: bufio.NewReaderSize(nc, 16<<10), bw: bufio.NewWriterSize(nc, 16<<10)}, false, nil
}

// popIdle takes the most recently used idle connection, nil when there is
// none, closing those idle for appIdleTimeout at now.
func (p *appConns) popIdle(now time.Time) (*appConn, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil, errAppClosed
	}
	// The oldest are first: those idle too long close even while the
	// newer ones take every request.
	for len(p.idle) > 0 && now.Sub(p.idle[0].idleAt) >= appIdleTimeout {
		p.idle[0].nc.Close()
		p.idle[0] = nil
		p.idle = p.idle[1:]
	}
	for len(p.idle) > 0 {
		ac := p.idle[len(p.idle)-1]
		p.idle[len(p.idle)-1] = nil
		p.idle = p.idle[:len(p.idle)-1]
		if now.Sub(ac.idleAt) < appIdleTimeout {
			return ac, nil
		}
		ac.nc.Close()
	}
	return nil, nil
}

// idleUsable reports whether nc, a kept connection with no exchange on it,
// can carry a request: the application has neither closed it nor sent
// anything on it since its last answer (what it sent would be read as the
// next request's answer). It looks without waiting and without taking
// anything: one recvfrom with MSG_PEEK|MSG_DONTWAIT. A connection with no
// file descriptor is taken as usable.
func idleUsable(nc net.Conn) bool {
	sc, ok := nc.(syscall.Conn)
	if !ok {
		return true
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	var b [1]byte
	usable := false
	err = rc.Read(func(fd uintptr) bool {
		for {
			n, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
			switch {
			case errors.Is(err, syscall.EINTR):
				continue
			case errors.Is(err, syscall.EAGAIN):
				// Open, and nothing to read: the state of a kept
				// connection.
				usable = true
			case err == nil && n == 0:
				// The application closed it.
			case err == nil:
				// Bytes nobody asked for: an answer of the application's
				// own (a 408 as its idle timeout fires), or the rest of
				// one.
			default:
				// Reset, or broken.
			}
			// true even when nothing is there: the runtime must not wait
			// for the connection to become readable.
			return true
		}
	})
	return err == nil && usable
}

// put keeps a connection whose exchange is complete.
func (p *appConns) put(ac *appConn) {
	ac.idleAt = time.Now()
	p.mu.Lock()
	if p.closed || len(p.idle) >= appMaxIdle {
		p.mu.Unlock()
		ac.nc.Close()
		return
	}
	p.idle = append(p.idle, ac)
	p.mu.Unlock()
}

// close closes the idle connections; those in use close when their
// exchange ends.
func (p *appConns) close() {
	p.mu.Lock()
	idle := p.idle
	p.idle = nil
	p.closed = true
	p.mu.Unlock()
	for _, ac := range idle {
		ac.nc.Close()
	}
}

// longAgo is a deadline that has passed: setting it wakes a blocked read.
var longAgo = time.Unix(1, 0)

// send writes req on ac and reads the answer's head. stale reports a
// failure before any byte of an answer arrived, of a request that may be
// sent again: one not written whole, or of an idempotent method (one read
// whole may have been served).
func (p *appConns) send(ctx context.Context, ac *appConn, req *http.Request, body []byte) (resp *http.Response, stale bool, err error) {
	stop := context.AfterFunc(ctx, func() { ac.nc.SetDeadline(longAgo) })
	defer func() {
		if err != nil {
			stop()
		}
	}()
	if err := writeRequest(ac.bw, req, body); err != nil {
		return nil, false, fmt.Errorf("send the request to the application at %s: %w", p.addr, err)
	}
	if err := ac.bw.Flush(); err != nil {
		return nil, true, fmt.Errorf("send the request to the application at %s: %w", p.addr, err)
	}
	if _, err := ac.br.Peek(1); err != nil {
		return nil, idempotent(req.Method), fmt.Errorf("read the answer of the application at %s: %w", p.addr, err)
	}
	for {
		resp, err = http.ReadResponse(ac.br, req)
		if err != nil {
			return nil, false, fmt.Errorf("read the answer of the application at %s: %w", p.addr, err)
		}
		if resp.StatusCode >= 200 || resp.StatusCode == http.StatusSwitchingProtocols {
			break
		}
		// 1xx: the answer follows.
	}
	if resp.StatusCode == http.StatusSwitchingProtocols {
		return nil, false, fmt.Errorf("the application at %s switched protocols, which the mesh does not carry", p.addr)
	}
	resp.Body = &appBody{rc: resp.Body, ac: ac, p: p, stop: stop, keep: !resp.Close && !req.Close}
	return resp, false, nil
}

// appBody is an answer's body: at its end, the connection is kept for the
// next request; closed before, it is closed.
type appBody struct {
	rc   io.ReadCloser
	ac   *appConn
	p    *appConns
	stop func() bool
	keep bool
	done bool
}

func (b *appBody) Read(p []byte) (int, error) {
	if b.done {
		return 0, io.EOF
	}
	n, err := b.rc.Read(p)
	if err != nil {
		b.finish(err == io.EOF)
	}
	return n, err
}

// Close ends the exchange; a body not read to its end takes its connection
// with it (reading the rest could take forever).
func (b *appBody) Close() error {
	b.finish(false)
	return nil
}

func (b *appBody) finish(complete bool) {
	if b.done {
		return
	}
	b.done = true
	// stop is false when ctx ended and the deadline was set: the
	// connection is spoiled. So is one that has bytes past the answer (a
	// second answer, a body to a HEAD): the next request would read them
	// as its answer.
	if b.stop() && complete && b.keep && b.ac.br.Buffered() == 0 {
		b.p.put(b.ac)
		return
	}
	b.ac.nc.Close()
}
