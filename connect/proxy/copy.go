package proxy

import (
	"errors"
	"io"
	"net"
	"os"
	"time"
)

// pump reads the application connection and sends what it reads on s,
// until the application ends its direction (END_STREAM goes out; the other
// direction goes on) or the stream or the connection fails. An answer the
// stream owes goes with the first frame, or alone once the application has
// been silent for the tunnel's answerDelay.
func pump(s *stream, app net.Conn, m *counter) {
	bp := chunkBufs.Get().(*[]byte)
	defer chunkBufs.Put(bp)
	buf := *bp
	waiting := s.answerDue.Load() && app.SetReadDeadline(time.Now().Add(s.t.answerDelay)) == nil
	for {
		n, err := app.Read(buf[frameHeaderLen:])
		if waiting {
			waiting = false
			_ = app.SetReadDeadline(time.Time{})
			if n == 0 && errors.Is(err, os.ErrDeadlineExceeded) {
				if aerr := s.answer200(); aerr != nil {
					s.abort(aerr, true)
					return
				}
				continue
			}
		}
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
