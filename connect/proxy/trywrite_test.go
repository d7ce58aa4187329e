package proxy

import (
	"io"
	"net"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/trellismesh/trellis/connect/proxy/rawsock"
)

// A write that the socket takes allocates nothing: the tunnel's reader
// makes one per DATA frame.
func TestRawWriter_writeAllocatesNothing(t *testing.T) {
	c, peer := tcpPair(t)
	w := newRawWriter(c)
	p := make([]byte, 64)
	got := make([]byte, len(p))
	allocs := testing.AllocsPerRun(100, func() {
		if n, blocked, err := w.write(p); n != len(p) || blocked || err != nil {
			t.Fatalf("write = %d, %v, %v", n, blocked, err)
		}
		if _, err := peer.Read(got); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Errorf("a write allocates %v times, want 0", allocs)
	}
}

// A socket that is full is reported blocked, with what it took, and no
// wait.
func TestRawWriter_fullSocketIsBlocked(t *testing.T) {
	c, _ := tcpPair(t) // the peer never reads
	w := newRawWriter(c)
	p := make([]byte, 1<<20)
	total := 0
	for range 1000 {
		n, blocked, err := w.write(p)
		if err != nil {
			t.Fatal(err)
		}
		total += n
		if blocked {
			if n == len(p) {
				t.Fatalf("blocked after writing all of p")
			}
			return
		}
	}
	t.Fatalf("never blocked after %d bytes", total)
}

// A connection without a file descriptor is written normally.
func TestRawWriter_pipeIsWrittenNormally(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	w := newRawWriter(a)
	done := make(chan error, 1)
	go func() {
		buf := make([]byte, 3)
		_, err := b.Read(buf)
		done <- err
	}()
	if n, blocked, err := w.write([]byte("abc")); n != 3 || blocked || err != nil {
		t.Fatalf("write = %d, %v, %v", n, blocked, err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// A stream's last bytes and its end leave in one TCP segment (MSG_MORE,
// then the shutdown), so the application reads both after one wake-up;
// without writeLast's flag they are two.
func TestRawWriter_lastBytesLeaveWithTheEnd(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		last bool
		segs uint32
	}{{false, 2}, {true, 1}} {
		c, peer := tcpPair(t)
		app := rawsock.Wrap(c)
		w := newRawWriter(app)
		before := segmentsOut(t, c)
		if n, blocked, err := w.writeLast([]byte("pong"), tc.last); n != 4 || blocked || err != nil {
			t.Fatalf("writeLast = %d, %v, %v", n, blocked, err)
		}
		closeWrite(app)
		sent := segmentsOut(t, c) - before
		_ = peer.SetReadDeadline(time.Now().Add(10 * time.Second))
		got, err := io.ReadAll(peer)
		if err != nil || string(got) != "pong" {
			t.Fatalf("last %v: the peer read %q, %v; want pong and the end", tc.last, got, err)
		}
		if sent != tc.segs {
			t.Errorf("last %v: the bytes and the end took %d segments; want %d", tc.last, sent, tc.segs)
		}
	}
}

// segmentsOut returns how many TCP segments c's socket has sent.
func segmentsOut(t *testing.T, c net.Conn) uint32 {
	t.Helper()
	rc, err := c.(syscall.Conn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var info *unix.TCPInfo
	var ierr error
	if err := rc.Control(func(fd uintptr) { info, ierr = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO) }); err != nil {
		t.Fatal(err)
	}
	if ierr != nil {
		t.Fatalf("TCP_INFO: %v", ierr)
	}
	return info.Segs_out
}
