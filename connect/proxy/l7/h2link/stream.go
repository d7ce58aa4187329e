package h2link

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// stream is one request and its response on a connection, as seen from
// either end: what the peer sends arrives in a buffer read like a body;
// what we send goes out as frames written by the caller.
type stream struct {
	c  *conn
	id uint32

	// sendWindow is guarded by c.fcMu.
	sendWindow int64

	mu        sync.Mutex
	cond      sync.Cond   // waited on by a reader for data
	buf       []byte      // guarded by mu; received and unread: buf[off:]
	off       int         // guarded by mu
	recvEnded bool        // guarded by mu; END_STREAM received
	trailer   http.Header // guarded by mu; the peer's trailers, once received
	sentEnd   bool        // guarded by mu; we sent END_STREAM
	finished  bool        // guarded by mu; both ends done, or failed
	err       error       // guarded by mu; why the stream failed
	unacked   int64       // guarded by mu; read, not yet credited to the stream window
	discard   bool        // guarded by mu; the reader is gone: data is dropped
	done      chan struct{}

	// recvWindow is what the peer may still send on the stream: the
	// window our SETTINGS gave it, less what it sent (padding too), plus
	// what we credited back. Guarded by mu.
	recvWindow int64

	// onFail is told once when the stream fails; it must not write to
	// the connection (it may run under the write lock).
	onFail func(err error)
	// owner is the client's or the server's side of the stream.
	owner any
	// declared is the Content-Length of a request, which its DATA must
	// add up to (RFC 9113, 8.1.1), or -1; got is what its DATA carried.
	// Both are the reader goroutine's.
	declared, got int64
}

func newStream(c *conn, id uint32) *stream {
	s := &stream{c: c, id: id, done: make(chan struct{}), declared: -1, recvWindow: StreamWindow}
	s.cond.L = &s.mu
	return s
}

// receive adds the payload of a DATA frame, from the reader goroutine;
// pad is the frame's padding, already credited to the connection.
func (s *stream) receive(p []byte, pad int64, end bool) {
	n := int64(len(p))
	s.mu.Lock()
	if s.err != nil || s.recvEnded {
		closedRecv := s.recvEnded && s.err == nil
		s.mu.Unlock()
		s.c.creditConn(n)
		if closedRecv {
			s.reset(http2.ErrCodeStreamClosed, errors.New("h2link: DATA after END_STREAM"))
		}
		return
	}
	// The whole frame, padding too, counts against the window we gave
	// (RFC 9113, 6.9.1), whether the data is kept or dropped: what was
	// read and not yet credited back is not the peer's to send.
	s.recvWindow -= n + pad
	if s.recvWindow < 0 {
		over := -s.recvWindow
		s.mu.Unlock()
		s.c.creditConn(n)
		s.reset(http2.ErrCodeFlowControl, fmt.Errorf("h2link: the peer sent %d bytes past the window of stream %d", over, s.id))
		return
	}
	// Padding goes back to the stream's window with what is read, while
	// the peer may still send.
	var credit int64
	if pad > 0 && !end {
		credit = s.addUnackedLocked(pad)
	}
	s.got += n
	if s.declared >= 0 && (s.got > s.declared || end && s.got != s.declared) {
		s.mu.Unlock()
		s.c.creditConn(n)
		s.reset(http2.ErrCodeProtocol, s.lengthError())
		return
	}
	if s.discard {
		if end {
			s.recvEnded = true
		}
		s.mu.Unlock()
		s.c.creditConn(n)
		s.sendCredit(credit)
		if end {
			s.maybeFinish()
		}
		return
	}
	s.buf = append(s.buf, p...)
	if end {
		s.recvEnded = true
	}
	s.cond.Broadcast()
	s.mu.Unlock()
	s.sendCredit(credit)
	if end {
		s.maybeFinish()
	}
}

// lengthError says that the DATA of a request did not match its
// Content-Length.
func (s *stream) lengthError() error {
	return fmt.Errorf("h2link: the request's body does not match its Content-Length of %d (it sent at least %d bytes)", s.declared, s.got)
}

// receiveTrailers records the peer's trailers, which end its side.
func (s *stream) receiveTrailers(f *http2.MetaHeadersFrame) {
	if s.declared >= 0 && s.got != s.declared {
		s.reset(http2.ErrCodeProtocol, s.lengthError())
		return
	}
	s.mu.Lock()
	if s.err != nil || s.recvEnded {
		s.mu.Unlock()
		return
	}
	h := make(http.Header, len(f.RegularFields()))
	for _, hf := range f.RegularFields() {
		k := canonicalKey(hf.Name)
		h[k] = append(h[k], hf.Value)
	}
	s.trailer = h
	s.recvEnded = true
	s.cond.Broadcast()
	s.mu.Unlock()
	s.maybeFinish()
}

// read reads what the peer sent; io.EOF once it ended its side, and
// http.ErrBodyReadAfterClose once the body was closed (which also ends a
// read that waits).
func (s *stream) read(p []byte) (int, error) {
	s.mu.Lock()
	for s.off == len(s.buf) && !s.recvEnded && s.err == nil && !s.discard {
		s.cond.Wait()
	}
	if s.err != nil {
		err := s.err
		s.mu.Unlock()
		return 0, err
	}
	if s.discard {
		s.mu.Unlock()
		return 0, http.ErrBodyReadAfterClose
	}
	if s.off == len(s.buf) {
		s.mu.Unlock()
		return 0, io.EOF
	}
	n := copy(p, s.buf[s.off:])
	s.off += n
	if s.off == len(s.buf) {
		s.buf, s.off = s.buf[:0], 0
		if cap(s.buf) > 256<<10 {
			s.buf = nil
		}
	}
	var credit int64
	if !s.recvEnded {
		credit = s.addUnackedLocked(int64(n))
	}
	s.mu.Unlock()
	s.c.creditConn(int64(n))
	s.sendCredit(credit)
	return n, nil
}

// addUnackedLocked counts n bytes the peer may send again, and returns the
// credit to give it, which the stream's window takes now: all that
// gathered once it is a quarter of the window, else 0. The caller sends
// it (sendCredit). s.mu must be held.
func (s *stream) addUnackedLocked(n int64) int64 {
	s.unacked += n
	if s.unacked < StreamWindow/4 {
		return 0
	}
	credit := s.unacked
	s.unacked = 0
	s.recvWindow += credit
	return credit
}

// sendCredit queues a WINDOW_UPDATE giving the peer credit more bytes on
// the stream; none when credit is 0. s.mu must not be held.
func (s *stream) sendCredit(credit int64) {
	if credit > 0 {
		id := s.id
		s.c.control(func(fr *http2.Framer) error { return fr.WriteWindowUpdate(id, uint32(credit)) })
	}
}

// discard drops what was received and not read, crediting it back.
func (s *stream) discardLocked() int64 {
	n := int64(len(s.buf) - s.off)
	s.buf, s.off = nil, 0
	return n
}

// closeRead is the reader giving up: unless the peer has ended its side,
// the stream is reset (CANCEL), so that it stops sending.
func (s *stream) closeRead() {
	s.mu.Lock()
	ended := s.recvEnded
	n := s.discardLocked()
	s.mu.Unlock()
	s.c.creditConn(n)
	if !ended {
		s.reset(http2.ErrCodeCancel, errStreamClosed)
	}
}

// window waits for flow-control credit and takes up to want bytes of it
// (at most a frame).
func (s *stream) window(want int) (int, error) {
	c := s.c
	c.fcMu.Lock()
	defer c.fcMu.Unlock()
	for {
		if k := s.takeWindowLocked(want); k > 0 {
			return k, nil
		}
		if err := s.sendErr(); err != nil {
			return 0, err
		}
		if err := c.err(); err != nil {
			return 0, err
		}
		c.fcCond.Wait()
	}
}

// tryWindow takes up to want bytes of credit without waiting.
func (s *stream) tryWindow(want int) int {
	s.c.fcMu.Lock()
	defer s.c.fcMu.Unlock()
	return s.takeWindowLocked(want)
}

// unwindow gives back credit window took for a frame that did not go.
func (s *stream) unwindow(k int) {
	c := s.c
	c.fcMu.Lock()
	s.sendWindow += int64(k)
	c.sendWindow += int64(k)
	c.fcCond.Broadcast()
	c.fcMu.Unlock()
}

func (s *stream) takeWindowLocked(want int) int {
	c := s.c
	if s.sendWindow <= 0 || c.sendWindow <= 0 || want <= 0 {
		return 0
	}
	k := int64(min(want, c.peerFrame, dataChunk))
	k = min(k, s.sendWindow, c.sendWindow)
	s.sendWindow -= k
	c.sendWindow -= k
	return int(k)
}

// sendErr returns why nothing more may be sent on the stream.
func (s *stream) sendErr() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.err != nil:
		return s.err
	case s.sentEnd:
		return errStreamClosed
	}
	return nil
}

// writeHeadersLocked writes a header block (HEADERS, then CONTINUATIONs
// past the peer's frame size) that encode produces; wmu must be held.
func (s *stream) writeHeadersLocked(encode func(enc *hpack.Encoder) error, end bool) error {
	c := s.c
	c.hbuf.Reset()
	if err := encode(c.henc); err != nil {
		return err
	}
	c.fcMu.Lock()
	frame := c.peerFrame
	c.fcMu.Unlock()
	block := c.hbuf.Bytes()
	first := block[:min(len(block), frame)]
	block = block[len(first):]
	err := c.wfr.WriteHeaders(http2.HeadersFrameParam{StreamID: s.id, BlockFragment: first, EndStream: end, EndHeaders: len(block) == 0})
	for err == nil && len(block) > 0 {
		chunk := block[:min(len(block), frame)]
		block = block[len(chunk):]
		err = c.wfr.WriteContinuation(s.id, len(block) == 0, chunk)
	}
	if err == nil && end {
		s.endSent()
	}
	return err
}

// writeDataLocked writes p as one DATA frame (its credit taken); wmu must
// be held.
func (s *stream) writeDataLocked(p []byte, end bool) error {
	err := s.c.wfr.WriteData(s.id, end, p)
	if err == nil && end {
		s.endSent()
	}
	return err
}

// writeData sends p as DATA frames within the windows, waiting for credit,
// and ends the stream after it when end.
func (s *stream) writeData(p []byte, end bool) error {
	for len(p) > 0 {
		k, err := s.window(len(p))
		if err != nil {
			return err
		}
		chunk := p[:k]
		p = p[k:]
		last := end && len(p) == 0
		if err := s.c.write(func() error {
			if err := s.sendErr(); err != nil {
				s.unwindow(k) // the frame does not go: its credit is not spent
				return errSkip{err}
			}
			return s.writeDataLocked(chunk, last)
		}); err != nil {
			return unskip(err)
		}
	}
	if end && len(p) == 0 {
		return s.endIfOpen()
	}
	return nil
}

// endIfOpen sends an empty DATA frame with END_STREAM unless END_STREAM
// went already.
func (s *stream) endIfOpen() error {
	s.mu.Lock()
	sent := s.sentEnd
	s.mu.Unlock()
	if sent {
		return nil
	}
	return unskip(s.c.write(func() error {
		if err := s.sendErr(); err != nil {
			return errSkip{err}
		}
		return s.writeDataLocked(nil, true)
	}))
}

// errSkip carries, out of a write, an error of the stream rather than of
// the connection: the write wrote nothing and the connection is fine.
type errSkip struct{ err error }

func (e errSkip) Error() string { return e.err.Error() }

func unskip(err error) error {
	var sk errSkip
	if errors.As(err, &sk) {
		return sk.err
	}
	return err
}

func (s *stream) endSent() {
	s.mu.Lock()
	s.sentEnd = true
	s.mu.Unlock()
	s.maybeFinish()
}

// maybeFinish ends a stream both sides have ended: it leaves the
// connection, and what it received stays readable.
func (s *stream) maybeFinish() {
	s.mu.Lock()
	if s.finished || !s.sentEnd || !s.recvEnded {
		s.mu.Unlock()
		return
	}
	s.finished = true
	s.mu.Unlock()
	close(s.done)
	s.c.removeStream(s)
}

// reset fails the stream and tells the peer with RST_STREAM code.
func (s *stream) reset(code http2.ErrCode, why error) {
	if s.fail(why) {
		id := s.id
		s.c.control(func(fr *http2.Framer) error { return fr.WriteRSTStream(id, code) })
	}
}

// peerReset handles the peer's RST_STREAM. NO_ERROR after the peer's
// side ended is a server done with a request whose body it did not need
// (RFC 9113, 8.1): the response stands, and we stop sending.
func (s *stream) peerReset(code http2.ErrCode) {
	s.mu.Lock()
	if code == http2.ErrCodeNo && s.recvEnded && s.err == nil {
		s.sentEnd = true
		s.mu.Unlock()
		c := s.c
		c.fcMu.Lock()
		c.fcCond.Broadcast() // a writer waiting for credit
		c.fcMu.Unlock()
		s.maybeFinish()
		return
	}
	s.mu.Unlock()
	var err error = StreamError{Code: code}
	if code == http2.ErrCodeRefusedStream {
		err = ErrRefused
	}
	s.fail(err)
}

// fail ends the stream with err: reads and writes return it from now on.
// A stream both sides ended is left alone: what it received stays
// readable. It reports whether the stream was still going.
func (s *stream) fail(err error) bool {
	s.mu.Lock()
	if s.err != nil || s.finished {
		s.mu.Unlock()
		return false
	}
	s.err = err
	n := s.discardLocked()
	s.finished = true
	s.cond.Broadcast()
	s.mu.Unlock()
	s.c.creditConn(n)
	c := s.c
	c.fcMu.Lock()
	c.fcCond.Broadcast() // a writer waiting for credit
	c.fcMu.Unlock()
	if s.onFail != nil {
		s.onFail(err)
	}
	close(s.done)
	c.removeStream(s)
	return true
}
