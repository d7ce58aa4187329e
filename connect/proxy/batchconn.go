package proxy

import (
	"net"
	"sync"

	"github.com/trellismesh/trellis/connect/proxy/rawsock"
)

// batchConn is the TCP connection under a tunnel's tls.Conn. crypto/tls
// writes every record (at most 16 KiB of plaintext) with a call of its own;
// between gather and flush, batchConn keeps what it is given and sends it
// with one call, so a large frame, or the frames of several writers queued
// behind the tunnel's write lock, leave together. Outside a gather (the
// handshake, alerts) writes go straight through.
type batchConn struct {
	net.Conn

	mu      sync.Mutex
	holding bool   // guarded by mu
	buf     []byte // guarded by mu
	err     error  // guarded by mu; sticky write error
}

// newBatchConn wraps c, reading and writing its socket with raw system
// calls (rawsock).
func newBatchConn(c net.Conn) *batchConn { return &batchConn{Conn: rawsock.Wrap(c)} }

// gather starts keeping writes.
func (b *batchConn) gather() {
	b.mu.Lock()
	b.holding = true
	b.mu.Unlock()
}

// Write keeps p while gathering, else sends it.
func (b *batchConn) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.err != nil {
		return 0, b.err
	}
	if b.holding {
		b.buf = append(b.buf, p...)
		return len(p), nil
	}
	n, err := b.Conn.Write(p)
	if err != nil {
		b.err = err
	}
	return n, err
}

// flush sends what was kept and stops gathering. A large buffer is let go
// so that an idle tunnel holds little memory.
func (b *batchConn) flush() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.holding = false
	if b.err != nil {
		return b.err
	}
	if len(b.buf) == 0 {
		return nil
	}
	_, err := b.Conn.Write(b.buf)
	if cap(b.buf) > 256<<10 {
		b.buf = nil
	} else {
		b.buf = b.buf[:0]
	}
	if err != nil {
		b.err = err
	}
	return err
}
