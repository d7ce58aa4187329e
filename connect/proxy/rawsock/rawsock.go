// Package rawsock reads and writes the sockets of the proxies' data path
// with raw system calls.
//
// read(2) and write(2) on a non-blocking socket return at once, so they
// need none of the Go runtime's system-call bookkeeping (entersyscall and
// exitsyscall). That bookkeeping is not free for a proxy that idles between
// requests: the first system call after a pause wakes the runtime's monitor
// thread (sysmon), which then polls every 20 µs while the process is busy
// and goes back to sleep when it idles. At 1,000 requests a second that was
// more than half of the times the two proxies' threads slept and woke per
// request, and each wake-up is dear on a virtual machine (an interrupt to
// another CPU). Waiting, for data or for room, still goes through the
// runtime's poller, so deadlines and Close work as for any net.Conn.
package rawsock

import (
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"unsafe"
)

// Conn is a net.Conn whose Read and Write make raw system calls on its
// socket. Reads are serialized, and so are writes, as net.Conn's are; one
// read and one write may run at once.
type Conn struct {
	net.Conn
	rc syscall.RawConn

	rmu  sync.Mutex
	rfn  func(fd uintptr) bool // readFD, made once so that a read allocates nothing
	tfn  func(fd uintptr) bool // tryReadFD
	rnow bool                  // guarded by rmu; the current read found nothing and did not wait
	rbuf []byte                // guarded by rmu; the current read's
	rn   int                   // guarded by rmu
	rerr error                 // guarded by rmu

	wmu  sync.Mutex
	wfn  func(fd uintptr) bool // writeFD
	wbuf []byte                // guarded by wmu; the current write's
	wn   int                   // guarded by wmu
	werr error                 // guarded by wmu
}

// Wrap returns c as a *Conn when it is a socket (a syscall.Conn), and c
// itself otherwise (a pipe, a TLS connection, a Conn already).
func Wrap(c net.Conn) net.Conn {
	if _, ok := c.(*Conn); ok {
		return c
	}
	sc, ok := c.(syscall.Conn)
	if !ok {
		return c
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return c
	}
	w := &Conn{Conn: c, rc: rc}
	w.rfn, w.tfn, w.wfn = w.readFD, w.tryReadFD, w.writeFD
	return w
}

// Read reads into p, as net.Conn's Read does: it waits for data, returns
// io.EOF at the end, and errors of type *net.OpError otherwise.
func (c *Conn) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return c.Conn.Read(p)
	}
	return c.read(p, c.rfn)
}

// read makes one read of p with fn, readFD or tryReadFD.
func (c *Conn) read(p []byte, fn func(fd uintptr) bool) (int, error) {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	c.rbuf, c.rn, c.rerr, c.rnow = p, 0, nil, false
	err := c.rc.Read(fn)
	n := c.rn
	switch {
	case err != nil:
		err = renameOp(err, "read")
	case c.rnow:
		err = ErrWouldBlock
	default:
		err = c.rerr
	}
	c.rbuf = nil
	return n, err
}

// readFD reads once; false asks the poller to wait for data.
func (c *Conn) readFD(fd uintptr) bool {
	for {
		n, _, e := syscall.RawSyscall(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(&c.rbuf[0])), uintptr(len(c.rbuf)))
		switch e {
		case 0:
			if n == 0 {
				c.rerr = io.EOF
			}
			c.rn = int(n)
			return true
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			return false
		default:
			c.rerr = c.opError("read", e)
			return true
		}
	}
}

// ErrWouldBlock is TryRead's answer when nothing has arrived yet.
var ErrWouldBlock = errors.New("rawsock: no data yet")

// TryRead reads into p what has already arrived, without waiting: it
// returns ErrWouldBlock when nothing has, and otherwise what Read would.
// A proxy uses it to send an application's first bytes along with the
// frame that opens their stream, when they came with the connection.
func (c *Conn) TryRead(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	return c.read(p, c.tfn)
}

// tryReadFD reads once and never asks the poller to wait.
func (c *Conn) tryReadFD(fd uintptr) bool {
	if !c.readFD(fd) {
		c.rnow = true
	}
	return true
}

// Write writes all of p, as net.Conn's Write does, waiting for room in the
// socket as needed.
func (c *Conn) Write(p []byte) (int, error) {
	if len(p) == 0 {
		return c.Conn.Write(p)
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.wbuf, c.wn, c.werr = p, 0, nil
	err := c.rc.Write(c.wfn)
	n := c.wn
	if err != nil {
		err = renameOp(err, "write")
	} else {
		err = c.werr
	}
	c.wbuf = nil
	return n, err
}

// writeFD writes what the socket takes; false asks the poller to wait for
// room.
func (c *Conn) writeFD(fd uintptr) bool {
	for c.wn < len(c.wbuf) {
		n, e := WriteFD(fd, c.wbuf[c.wn:])
		c.wn += n
		switch e {
		case 0:
			if n == 0 {
				return false
			}
		case syscall.EAGAIN:
			return false
		default:
			c.werr = c.opError("write", e)
			return true
		}
	}
	return true
}

// WriteFD makes one write(2) of p (not empty) to the non-blocking socket
// fd, retrying when interrupted: the bytes written and the error number (0,
// EAGAIN when the socket is full, or the failure).
func WriteFD(fd uintptr, p []byte) (int, syscall.Errno) {
	for {
		n, _, e := syscall.RawSyscall(syscall.SYS_WRITE, fd, uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
		if e == syscall.EINTR {
			continue
		}
		if e != 0 {
			return 0, e
		}
		return int(n), 0
	}
}

// SendMoreFD is WriteFD with MSG_MORE: the kernel may hold the bytes back
// for what follows. The caller shuts the socket's write side down right
// after, so that the bytes and the end leave in one segment and the peer
// reads both after one wake-up.
// (WriteFD stays a write(2) rather than this sendto with no flags: the
// kernel counts write(2)s in /proc/PID/io, which the mesh benchmark's
// writes-per-request figure reads.)
func SendMoreFD(fd uintptr, p []byte) (int, syscall.Errno) {
	for {
		n, _, e := syscall.RawSyscall6(syscall.SYS_SENDTO, fd, uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)), syscall.MSG_MORE, 0, 0)
		if e == syscall.EINTR {
			continue
		}
		if e != 0 {
			return 0, e
		}
		return int(n), 0
	}
}

// CloseWrite shuts down the writing side of the connection where the
// connection can (TCP), so that the peer reads EOF. It is a raw
// shutdown(2), as net's would be but without the runtime's system-call
// bookkeeping.
func (c *Conn) CloseWrite() error {
	if _, ok := c.Conn.(interface{ CloseWrite() error }); !ok {
		return nil
	}
	var e syscall.Errno
	if err := c.rc.Control(func(fd uintptr) {
		_, _, e = syscall.RawSyscall(syscall.SYS_SHUTDOWN, fd, syscall.SHUT_WR, 0)
	}); err != nil {
		return renameOp(err, "shutdown")
	}
	if e != 0 {
		return c.opError("shutdown", e)
	}
	return nil
}

// SyscallConn returns the socket's syscall.RawConn.
func (c *Conn) SyscallConn() (syscall.RawConn, error) { return c.rc, nil }

// Unwrap returns the connection c wraps.
func (c *Conn) Unwrap() net.Conn { return c.Conn }

func (c *Conn) opError(op string, e syscall.Errno) error {
	return &net.OpError{Op: op, Net: c.LocalAddr().Network(), Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: os.NewSyscallError(op, e)}
}

// renameOp makes the errors of a RawConn's Read and Write ("raw-read")
// read as net.Conn's ("read").
func renameOp(err error, op string) error {
	if oe, ok := err.(*net.OpError); ok && (oe.Op == "raw-read" || oe.Op == "raw-write" || oe.Op == "raw-control") {
		cp := *oe
		cp.Op = op
		return &cp
	}
	return err
}

// Listener wraps the connections a listener accepts.
type Listener struct{ net.Listener }

// Accept waits for the next connection and returns it wrapped.
func (l Listener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return Wrap(c), nil
}
