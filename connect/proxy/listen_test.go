package proxy

import (
	"net"
	"syscall"
	"testing"

	"github.com/trellismesh/trellis/internal/testutil"
)

// keepAliveOf reports whether SO_KEEPALIVE is set on c.
func keepAliveOf(t *testing.T, c net.Conn) bool {
	t.Helper()
	rc, err := c.(syscall.Conn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var v int
	var serr error
	if err := rc.Control(func(fd uintptr) { v, serr = syscall.GetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_KEEPALIVE) }); err != nil {
		t.Fatal(err)
	}
	if serr != nil {
		t.Fatal(serr)
	}
	return v != 0
}

// A proxy's listener on a loopback address accepts connections without TCP
// keepalive (four system calls per connection saved); on any other address
// they keep Go's default.
func TestListen_keepAliveOnlyOffLoopback(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		addr      string
		keepAlive bool
	}{
		{"127.0.0.1:0", false},
		{"localhost:0", false},
		{"0.0.0.0:0", true},
	} {
		ln, err := Listen(tc.addr)
		if err != nil {
			t.Fatalf("Listen(%s): %v", tc.addr, err)
		}
		accepted := testutil.AcceptOne(ln)
		_, port, _ := net.SplitHostPort(ln.Addr().String())
		c, err := net.Dial("tcp", net.JoinHostPort("127.0.0.1", port))
		if err != nil {
			ln.Close()
			t.Fatal(err)
		}
		sc, ok := <-accepted
		if !ok {
			t.Fatalf("%s: accept failed", tc.addr)
		}
		if got := keepAliveOf(t, sc); got != tc.keepAlive {
			t.Errorf("Listen(%s): accepted connection has keepalive %v; want %v", tc.addr, got, tc.keepAlive)
		}
		sc.Close()
		c.Close()
		ln.Close()
	}
}
