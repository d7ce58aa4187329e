package raftstore

import (
	"errors"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
)

// Protocol bytes: the first byte of every connection to the server port.
// Byte 0x02 is reserved for the internal RPC of client agents.
const protoRaft byte = 0x01

// handshakeTimeout bounds how long a new connection may take to send its
// protocol byte.
const handshakeTimeout = 5 * time.Second

// mux accepts connections on the server port and hands each to the protocol
// its first byte names.
type mux struct {
	ln     net.Listener
	logger hclog.Logger
	raft   *streamLayer

	wg        sync.WaitGroup
	closeOnce sync.Once
}

func newMux(ln net.Listener, advertise net.Addr, logger hclog.Logger) *mux {
	m := &mux{ln: ln, logger: logger}
	m.raft = &streamLayer{addr: advertise, conns: make(chan net.Conn), done: make(chan struct{})}
	m.wg.Add(1)
	go m.acceptLoop()
	return m
}

func (m *mux) acceptLoop() {
	defer m.wg.Done()
	for {
		conn, err := m.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			m.logger.Error("accept on server port", "error", err)
			select {
			case <-m.raft.done:
				return
			case <-time.After(100 * time.Millisecond): // back off a failing accept
			}
			continue
		}
		m.wg.Add(1)
		go m.route(conn)
	}
}

func (m *mux) route(conn net.Conn) {
	defer m.wg.Done()
	_ = conn.SetReadDeadline(time.Now().Add(handshakeTimeout))
	var b [1]byte
	if _, err := conn.Read(b[:]); err != nil {
		m.logger.Debug("connection closed before its protocol byte", "remote", conn.RemoteAddr(), "error", err)
		conn.Close()
		return
	}
	_ = conn.SetReadDeadline(time.Time{})
	switch b[0] {
	case protoRaft:
		select {
		case m.raft.conns <- conn:
		case <-m.raft.done:
			conn.Close()
		}
	default:
		m.logger.Warn("unknown protocol on server port; closing", "remote", conn.RemoteAddr(), "byte", b[0])
		conn.Close()
	}
}

// Close stops accepting and waits for the routing goroutines.
func (m *mux) Close() {
	m.closeOnce.Do(func() {
		m.ln.Close()
		m.raft.Close()
	})
	m.wg.Wait()
}

// streamLayer is the raft.StreamLayer over the mux: it accepts the
// connections whose first byte was protoRaft and dials with that byte.
type streamLayer struct {
	addr      net.Addr
	conns     chan net.Conn
	done      chan struct{}
	closeOnce sync.Once
}

var _ raft.StreamLayer = (*streamLayer)(nil)

func (l *streamLayer) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *streamLayer) Close() error {
	l.closeOnce.Do(func() { close(l.done) })
	return nil
}

func (l *streamLayer) Addr() net.Addr { return l.addr }

func (l *streamLayer) Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	conn, err := net.DialTimeout("tcp", string(address), timeout)
	if err != nil {
		return nil, err
	}
	if _, err := conn.Write([]byte{protoRaft}); err != nil {
		conn.Close()
		return nil, err
	}
	return conn, nil
}
