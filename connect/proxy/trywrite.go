package proxy

import (
	"net"
	"syscall"

	"github.com/trellismesh/trellis/connect/proxy/rawsock"
)

// rawWriter writes to one connection without waiting: as much as the
// socket takes now. The tunnel's reader writes to applications this way, so
// that an application that reads slowly holds up no other stream, without
// arming a write deadline (a timer that would wake the runtime) on every
// write. It holds the connection's syscall.RawConn and its callback, made
// once, so that a write allocates nothing. Connections without a file
// descriptor are written normally (waiting). Not for concurrent use.
type rawWriter struct {
	c     net.Conn
	rc    syscall.RawConn // nil: c has no file descriptor (or setup is set)
	setup error           // SyscallConn's error, returned by every write
	fn    func(fd uintptr) bool

	// The current write's buffer, whether it is the last before an end
	// (MSG_MORE), and its outcome, for fn.
	p       []byte
	more    bool
	n       int
	blocked bool
	err     error
}

func newRawWriter(c net.Conn) *rawWriter {
	w := &rawWriter{c: c}
	if sc, ok := c.(syscall.Conn); ok {
		w.rc, w.setup = sc.SyscallConn()
	}
	w.fn = w.writeFD
	return w
}

// write writes p; blocked reports that the socket was full (the rest of p
// was not written).
func (w *rawWriter) write(p []byte) (n int, blocked bool, err error) {
	return w.writeLast(p, false)
}

// writeLast is write; with last, p is the last of the stream's bytes and
// the caller shuts the write side down right after (closeAppWrite), so the
// kernel is told to hold p for the end (MSG_MORE): they leave in one
// segment, and the application reads both after one wake-up.
func (w *rawWriter) writeLast(p []byte, last bool) (n int, blocked bool, err error) {
	if w.setup != nil {
		return 0, false, w.setup
	}
	if w.rc == nil {
		n, err = w.c.Write(p)
		return n, false, err
	}
	w.p, w.more, w.n, w.blocked, w.err = p, last, 0, false, nil
	err = w.rc.Write(w.fn)
	n, blocked = w.n, w.blocked
	if err == nil {
		err = w.err
	}
	w.p = nil
	return n, blocked, err
}

// writeFD is the RawConn callback: it writes until p is done or the socket
// is full, and never asks to wait.
func (w *rawWriter) writeFD(fd uintptr) bool {
	for w.n < len(w.p) {
		var m int
		var e syscall.Errno
		if w.more {
			m, e = rawsock.SendMoreFD(fd, w.p[w.n:])
		} else {
			m, e = rawsock.WriteFD(fd, w.p[w.n:])
		}
		w.n += m
		switch {
		case e == 0 && m > 0:
			continue
		case e == syscall.EAGAIN:
			w.blocked = true
		case e != 0:
			w.err = e
		default: // a write of 0 bytes without an error: treat as full
			w.blocked = true
		}
		return true
	}
	return true
}
