package proxy

import (
	"errors"
	"io"
	"net"
)

// pump reads the application connection and sends what it reads on s,
// until the application ends its direction (END_STREAM goes out; the other
// direction goes on) or the stream or the connection fails. An answer the
// stream owes goes with the first frame (send and endLocal write it).
func pump(s *stream, app net.Conn, m *counter) {
	bp := chunkBufs.Get().(*[]byte)
	defer chunkBufs.Put(bp)
	buf := *bp
	for {
		n, err := app.Read(buf[frameHeaderLen:])
		if n > 0 {
			m.add(n)
			if serr := s.send(buf[:frameHeaderLen+n]); serr != nil {
				s.abort(serr, true)
				return
			}
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				_ = s.endLocal()
				return
			}
			s.abort(err, true)
			return
		}
	}
}

// closeWrite half-closes c where it can (TCP), so the peer sees EOF while
// the other direction goes on.
func closeWrite(c net.Conn) {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
	}
}
