package proxy

import (
	"errors"
	"io"
	"net"
	"sync"
	"time"
)

// copyBufSize is the size of the buffers bytes are copied through: large
// enough that a bulk transfer costs few system calls and HTTP/2 frames per
// MiB.
const copyBufSize = 64 << 10

var copyBufs = sync.Pool{New: func() any {
	b := make([]byte, copyBufSize)
	return &b
}}

// copyStream copies src to dst until src ends, through a pooled buffer,
// counting the bytes in m; flush, when not nil, is called after each write
// (an HTTP/2 response must be flushed for the bytes to leave). A nil error
// means src reached EOF.
func copyStream(dst io.Writer, src io.Reader, flush func() error, m *meter) error {
	bp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bp)
	buf := *bp
	for {
		n, rerr := src.Read(buf)
		if n > 0 {
			if _, err := dst.Write(buf[:n]); err != nil {
				return err
			}
			if flush != nil {
				if err := flush(); err != nil {
					return err
				}
			}
			m.add(n)
		}
		if rerr == io.EOF {
			return nil
		}
		if rerr != nil {
			return rerr
		}
	}
}

// closeWrite half-closes c where it can (TCP), so the peer sees EOF while
// the other direction goes on.
func closeWrite(c net.Conn) {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
	}
}

// errTunnelClosed is what appBody.Read returns once the tunnel is over.
var errTunnelClosed = errors.New("tunnel closed")

// aLongTimeAgo is a deadline in the past, to interrupt a blocked Read.
var aLongTimeAgo = time.Unix(1, 0)

// appBody is the request body of an outbound CONNECT stream: the HTTP/2
// transport reads the application's bytes through it, in the transport's own
// goroutine, straight into its frame buffer. It passes nothing until open is
// called (the destination accepted the tunnel), so an attempt that fails
// consumes nothing from the application and the connection can be retried on
// another instance.
type appBody struct {
	conn   net.Conn
	m      *meter
	opened chan struct{} // closed by open
	done   chan struct{} // closed by Close: the transport is done with the body
	ended  chan struct{} // closed when a Read of conn failed (EOF included)

	openOnce, doneOnce, endOnce sync.Once

	mu      sync.Mutex
	closed  bool // guarded by mu
	reading bool // guarded by mu; a Read of conn is in progress
}

func newAppBody(conn net.Conn, m *meter) *appBody {
	return &appBody{
		conn:   conn,
		m:      m,
		opened: make(chan struct{}),
		done:   make(chan struct{}),
		ended:  make(chan struct{}),
	}
}

// open lets the transport read the application's bytes.
func (b *appBody) open() { b.openOnce.Do(func() { close(b.opened) }) }

// Read reads from the application once the tunnel is open.
func (b *appBody) Read(p []byte) (int, error) {
	select {
	case <-b.opened:
	case <-b.done:
		return 0, errTunnelClosed
	}
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return 0, errTunnelClosed
	}
	b.reading = true
	b.mu.Unlock()

	n, err := b.conn.Read(p)

	b.mu.Lock()
	b.reading = false
	closed := b.closed
	b.mu.Unlock()
	if n > 0 {
		b.m.add(n)
	}
	if err != nil {
		b.endOnce.Do(func() { close(b.ended) })
		if closed && err != io.EOF {
			err = errTunnelClosed
		}
	}
	return n, err
}

// Close ends the body: a Read in progress is interrupted (by a read
// deadline; the connection itself stays open, its other direction may still
// be in use) and later ones fail. The transport calls it, from any
// goroutine, when the stream ends; it never blocks.
func (b *appBody) Close() error {
	b.mu.Lock()
	if !b.closed {
		b.closed = true
		if b.reading {
			b.conn.SetReadDeadline(aLongTimeAgo)
		}
	}
	b.mu.Unlock()
	b.doneOnce.Do(func() { close(b.done) })
	return nil
}
