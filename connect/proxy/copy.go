package proxy

import (
	"errors"
	"io"
	"net"

	"github.com/trellismesh/trellis/connect/proxy/rawsock"
)

// pump reads the application connection and sends what it reads on s,
// until the application ends its direction (END_STREAM goes out; the other
// direction goes on) or the stream or the connection fails. An answer the
// stream owes goes with the first frame (send and endLocal write it).
func pump(s *stream, app net.Conn, m *counter) {
	bp := chunkBufs.Get().(*[]byte)
	defer chunkBufs.Put(bp)
	buf := *bp
	first := true
	for {
		n, err := app.Read(buf[frameHeaderLen:])
		if first && n > 0 && err == nil {
			n, err = readAhead(app, buf[frameHeaderLen:], n)
		}
		first = false
		end := errors.Is(err, io.EOF)
		if n > 0 {
			m.add(n)
			if serr := s.send(buf[:frameHeaderLen+n], end); serr != nil {
				s.abort(serr, true)
				return
			}
			if end {
				return
			}
		}
		if err != nil {
			if end {
				_ = s.endLocal()
				return
			}
			s.abort(err, true)
			return
		}
	}
}

// readAhead adds to buf[:n] what has already arrived after it, without
// waiting, when app's socket can be read so (a rawsock.Conn): io.EOF
// reports that the application ended its direction right after, so that
// its bytes and END_STREAM go in one frame. A server that answers one
// request and closes (HTTP/1.0, "Connection: close", a TCP request and
// reply) is the case it is for: the peer proxy then delivers the response
// and the end in one wake-up, and its client reads both at once. The
// pump calls it after its first read only, so a stream that goes on
// pays one extra system call in all.
func readAhead(app net.Conn, buf []byte, n int) (int, error) {
	rc, ok := app.(*rawsock.Conn)
	if !ok || n == len(buf) {
		return n, nil
	}
	k, err := rc.TryRead(buf[n:])
	if errors.Is(err, rawsock.ErrWouldBlock) {
		err = nil
	}
	return n + k, err
}

// closeWrite half-closes c where it can (TCP), so the peer sees EOF while
// the other direction goes on.
func closeWrite(c net.Conn) {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
	}
}
