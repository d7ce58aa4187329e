package proxymgr

import (
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/trellismesh/trellis/connect/proxy"
)

// socket is a TCP listener the manager binds and owns. A proxy serves it
// through a lease, a net.Listener whose Close ends the proxy's use of the
// socket but leaves it bound. A proxy replaced by one that listens on the
// same address so takes over the socket without unbinding it: nothing else
// can take the port in between, and connections that arrive meanwhile wait
// in the backlog.
//
// At most one lease is open at a time: the manager closes the old proxy
// (which closes its leases and waits for its accept loops) before it leases
// the socket to the next.
type socket struct {
	ln *net.TCPListener
	// want is the host:port asked for (the port is 0 when any would do).
	want string

	mu   sync.Mutex
	held []net.Conn // accepted for a lease closed meanwhile, for the next one; guarded by mu
}

// listen binds addr (as the proxies bind theirs: see proxy.Listen).
func listen(addr string) (*socket, error) {
	ln, err := proxy.Listen(addr)
	if err != nil {
		return nil, err
	}
	return &socket{ln: ln.(*net.TCPListener), want: addr}, nil
}

// port returns the port the socket is bound to.
func (s *socket) port() int { return s.ln.Addr().(*net.TCPAddr).Port }

// bound returns the host:port the socket is bound to (want, with the port
// picked when want's was 0).
func (s *socket) bound() string {
	host, _, _ := net.SplitHostPort(s.want)
	return net.JoinHostPort(host, strconv.Itoa(s.port()))
}

// lease returns a listener over the socket for one proxy. The previous
// lease must be closed and its Accept returned.
func (s *socket) lease() net.Listener {
	_ = s.ln.SetDeadline(time.Time{}) // undo the wake-up of the previous lease's Close
	return &lease{s: s}
}

// close unbinds the socket and closes the connections held for a next
// lease.
func (s *socket) close() {
	s.ln.Close()
	s.mu.Lock()
	held := s.held
	s.held = nil
	s.mu.Unlock()
	for _, c := range held {
		c.Close()
	}
}

func (s *socket) hold(c net.Conn) {
	s.mu.Lock()
	s.held = append(s.held, c)
	s.mu.Unlock()
}

func (s *socket) takeHeld() net.Conn {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.held) == 0 {
		return nil
	}
	c := s.held[0]
	s.held = s.held[1:]
	return c
}

// lease is one proxy's use of a socket.
type lease struct {
	s      *socket
	closed atomic.Bool
}

// Accept returns the connections held by the previous lease first, then
// those of the socket; net.ErrClosed once the lease is closed.
func (l *lease) Accept() (net.Conn, error) {
	if l.closed.Load() {
		return nil, net.ErrClosed
	}
	if c := l.s.takeHeld(); c != nil {
		return c, nil
	}
	c, err := l.s.ln.Accept()
	if l.closed.Load() {
		if err == nil {
			l.s.hold(c) // arrived as the lease closed: the next lease serves it
		}
		return nil, net.ErrClosed
	}
	return c, err
}

// Close ends the lease and wakes an Accept in progress (with a deadline in
// the past: closing the socket would unbind it). It always returns nil.
func (l *lease) Close() error {
	if !l.closed.Swap(true) {
		_ = l.s.ln.SetDeadline(time.Now())
	}
	return nil
}

// Addr returns the socket's address.
func (l *lease) Addr() net.Addr { return l.s.ln.Addr() }
