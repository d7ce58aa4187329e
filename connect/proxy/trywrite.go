package proxy

import (
	"errors"
	"net"
	"syscall"
)

// tryWrite writes p to c without waiting: as much as the socket takes now.
// blocked reports that the socket was full (the rest of p was not written).
// Connections without a file descriptor are written normally (waiting).
//
// The tunnel's reader writes to applications this way, so that an
// application that reads slowly holds up no other stream, without arming a
// write deadline (a timer that would wake the runtime) on every write.
func tryWrite(c net.Conn, p []byte) (n int, blocked bool, err error) {
	sc, ok := c.(syscall.Conn)
	if !ok {
		n, err = c.Write(p)
		return n, false, err
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return 0, false, err
	}
	var werr error
	err = rc.Write(func(fd uintptr) bool {
		for n < len(p) {
			m, e := syscall.Write(int(fd), p[n:])
			if m > 0 {
				n += m
			}
			switch {
			case e == nil && m > 0:
				continue
			case errors.Is(e, syscall.EINTR):
				continue
			case errors.Is(e, syscall.EAGAIN):
				blocked = true
			case e != nil:
				werr = e
			default: // a write of 0 bytes without an error: treat as full
				blocked = true
			}
			return true
		}
		return true
	})
	if err == nil {
		err = werr
	}
	return n, blocked, err
}
