package rawsock

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/trellismesh/trellis/internal/retry"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// pair returns a wrapped client connection and the server's end of it, a
// plain *net.TCPConn, over 127.0.0.1.
func pair(t *testing.T) (*Conn, net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	type res struct {
		c   net.Conn
		err error
	}
	ch := make(chan res, 1)
	go func() {
		c, err := ln.Accept()
		ch <- res{c, err}
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	r := <-ch
	if r.err != nil {
		c.Close()
		t.Fatal(r.err)
	}
	t.Cleanup(func() { c.Close(); r.c.Close() })
	w, ok := Wrap(c).(*Conn)
	if !ok {
		t.Fatalf("Wrap(%T) is not a *Conn", c)
	}
	return w, r.c
}

func TestReadWriteBothWays(t *testing.T) {
	t.Parallel()
	c, peer := pair(t)
	if _, err := c.Write([]byte("hello")); err != nil {
		t.Fatalf("write: %v", err)
	}
	buf := make([]byte, 16)
	n, err := io.ReadAtLeast(peer, buf, 5)
	if err != nil || string(buf[:n]) != "hello" {
		t.Fatalf("peer read %q, %v; want hello", buf[:n], err)
	}
	if _, err := peer.Write([]byte("world")); err != nil {
		t.Fatal(err)
	}
	n, err = io.ReadAtLeast(c, buf, 5)
	if err != nil || string(buf[:n]) != "world" {
		t.Fatalf("read %q, %v; want world", buf[:n], err)
	}
}

func TestReadEOFAfterPeerCloses(t *testing.T) {
	t.Parallel()
	c, peer := pair(t)
	peer.Write([]byte("last"))
	peer.Close()
	got, err := io.ReadAll(c)
	if err != nil || string(got) != "last" {
		t.Fatalf("ReadAll = %q, %v; want last, nil (io.EOF ends it)", got, err)
	}
	if n, err := c.Read(make([]byte, 4)); n != 0 || err != io.EOF {
		t.Fatalf("read after EOF = %d, %v; want 0, io.EOF", n, err)
	}
}

// A write larger than the socket buffers waits for the reader, in the
// poller, and every byte arrives in order.
func TestLargeWriteToSlowReader(t *testing.T) {
	t.Parallel()
	c, peer := pair(t)
	want := make([]byte, 16<<20)
	for i := range want {
		want[i] = byte(i * 7)
	}
	done := make(chan error, 1)
	go func() {
		n, err := c.Write(want)
		if err == nil && n != len(want) {
			err = errors.New("short write")
		}
		c.CloseWrite()
		done <- err
	}()
	var got bytes.Buffer
	buf := make([]byte, 1500) // small reads: the writer fills the socket often
	for {
		n, err := peer.Read(buf)
		got.Write(buf[:n])
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("peer read: %v", err)
		}
	}
	if err := <-done; err != nil {
		t.Fatalf("write: %v", err)
	}
	if !bytes.Equal(got.Bytes(), want) {
		t.Fatalf("peer got %d bytes, not the %d written in order", got.Len(), len(want))
	}
}

func TestReadDeadline(t *testing.T) {
	t.Parallel()
	c, _ := pair(t)
	c.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	_, err := c.Read(make([]byte, 8))
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read past the deadline: %v; want os.ErrDeadlineExceeded", err)
	}
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("read past the deadline: %v is not a timeout net.Error", err)
	}
	var oe *net.OpError
	if !errors.As(err, &oe) || oe.Op != "read" {
		t.Fatalf("read past the deadline: %#v; want a *net.OpError with Op read", err)
	}
}

func TestWriteDeadlineWhenPeerDoesNotRead(t *testing.T) {
	t.Parallel()
	c, _ := pair(t)
	c.SetWriteDeadline(time.Now().Add(50 * time.Millisecond))
	_, err := c.Write(make([]byte, 64<<20))
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("write past the deadline: %v; want os.ErrDeadlineExceeded", err)
	}
	if !strings.HasPrefix(err.Error(), "write ") {
		t.Fatalf("write error %q does not read as a write's", err)
	}
}

// Close from another goroutine ends a Read that is waiting.
func TestCloseEndsWaitingRead(t *testing.T) {
	t.Parallel()
	c, _ := pair(t)
	var wg sync.WaitGroup
	wg.Add(1)
	var err error
	go func() {
		defer wg.Done()
		_, err = c.Read(make([]byte, 8))
	}()
	// Wait until the reader is parked in the poller, or close first: either
	// way the read must end with net.ErrClosed.
	time.AfterFunc(10*time.Millisecond, func() { c.Close() })
	wg.Wait()
	if !errors.Is(err, net.ErrClosed) {
		t.Fatalf("read on a closed conn: %v; want net.ErrClosed", err)
	}
}

// A write to a peer that reset the connection fails with the system's
// error, as a *net.OpError.
func TestWriteAfterPeerResetFails(t *testing.T) {
	t.Parallel()
	c, peer := pair(t)
	peer.(*net.TCPConn).SetLinger(0)
	peer.Close()
	deadline := time.Now().Add(10 * time.Second)
	var err error
	for err == nil && time.Now().Before(deadline) {
		_, err = c.Write([]byte("x"))
	}
	var oe *net.OpError
	if !errors.As(err, &oe) || oe.Op != "write" {
		t.Fatalf("write to a reset peer: %v; want a *net.OpError with Op write", err)
	}
	if oe.Addr == nil || oe.Source == nil {
		t.Fatalf("write error %q names no addresses", err)
	}
}

func TestZeroLengthReadAndWrite(t *testing.T) {
	t.Parallel()
	c, _ := pair(t)
	if n, err := c.Write(nil); n != 0 || err != nil {
		t.Fatalf("Write(nil) = %d, %v", n, err)
	}
	if n, err := c.Read(nil); n != 0 || err != nil {
		t.Fatalf("Read(nil) = %d, %v", n, err)
	}
}

func TestWrapPassesThroughWhatIsNotASocket(t *testing.T) {
	t.Parallel()
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	if got := Wrap(a); got != a {
		t.Fatalf("Wrap(pipe) = %T; want the pipe itself", got)
	}
	c, _ := pair(t)
	if got := Wrap(c); got != net.Conn(c) {
		t.Fatal("Wrap of a *Conn wrapped it again")
	}
	if _, ok := c.Unwrap().(*net.TCPConn); !ok {
		t.Fatalf("Unwrap = %T; want the *net.TCPConn", c.Unwrap())
	}
	if rc, err := c.SyscallConn(); err != nil || rc == nil {
		t.Fatalf("SyscallConn = %v, %v", rc, err)
	}
}

func TestCloseWriteSendsEOF(t *testing.T) {
	t.Parallel()
	c, peer := pair(t)
	if err := c.CloseWrite(); err != nil {
		t.Fatalf("CloseWrite: %v", err)
	}
	if n, err := peer.Read(make([]byte, 4)); n != 0 || err != io.EOF {
		t.Fatalf("peer read after CloseWrite = %d, %v; want io.EOF", n, err)
	}
	// The reading side still works.
	peer.Write([]byte("ok"))
	buf := make([]byte, 2)
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "ok" {
		t.Fatalf("read after CloseWrite = %q, %v", buf, err)
	}
}

func TestListenerWrapsAccepted(t *testing.T) {
	t.Parallel()
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := Listener{inner}
	defer ln.Close()
	go func() {
		c, err := net.Dial("tcp", inner.Addr().String())
		if err == nil {
			c.Close()
		}
	}()
	c, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, ok := c.(*Conn); !ok {
		t.Fatalf("Accept = %T; want a *Conn", c)
	}
}

// The point of the package is a cheap data path: a read and a write
// allocate nothing.
func TestReadWriteAllocateNothing(t *testing.T) {
	c, peer := pair(t)
	msg := []byte("ping")
	buf := make([]byte, 4)
	pbuf := make([]byte, 4)
	allocs := testing.AllocsPerRun(200, func() {
		if _, err := c.Write(msg); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(peer, pbuf); err != nil {
			t.Fatal(err)
		}
		if _, err := peer.Write(pbuf); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(c, buf); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Fatalf("a round trip allocated %.1f times; want 0", allocs)
	}
}

func BenchmarkRoundTrip(b *testing.B) {
	for _, wrapped := range []bool{false, true} {
		name := "net"
		if wrapped {
			name = "rawsock"
		}
		b.Run(name, func(b *testing.B) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				b.Fatal(err)
			}
			defer ln.Close()
			go func() {
				s, err := ln.Accept()
				if err != nil {
					return
				}
				defer s.Close()
				io.Copy(s, s)
			}()
			c, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			if wrapped {
				c = Wrap(c)
			}
			buf := make([]byte, 64)
			b.ReportAllocs()
			for b.Loop() {
				if _, err := c.Write(buf); err != nil {
					b.Fatal(err)
				}
				if _, err := io.ReadFull(c, buf); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// TryRead returns at once: ErrWouldBlock before anything arrived, the
// bytes once they have, io.EOF after the peer closed, and never waits.
func TestTryReadDoesNotWait(t *testing.T) {
	t.Parallel()
	c, peer := pair(t)
	buf := make([]byte, 16)
	if n, err := c.TryRead(buf); n != 0 || !errors.Is(err, ErrWouldBlock) {
		t.Fatalf("TryRead before any data = %d, %v; want 0, ErrWouldBlock", n, err)
	}
	if _, err := peer.Write([]byte("early")); err != nil {
		t.Fatal(err)
	}
	var got []byte
	retry.RunWith(&retry.Timer{Timeout: 5 * time.Second, Wait: time.Millisecond}, t, func(r *retry.R) {
		n, err := c.TryRead(buf)
		got = append(got, buf[:n]...)
		if err != nil && !errors.Is(err, ErrWouldBlock) {
			t.Fatalf("TryRead after a write: %v", err)
		}
		if len(got) < len("early") {
			r.Fatalf("read %q so far", got)
		}
	})
	if string(got) != "early" {
		t.Fatalf("TryRead read %q; want early", got)
	}
	if n, err := c.TryRead(buf); n != 0 || !errors.Is(err, ErrWouldBlock) {
		t.Fatalf("TryRead once drained = %d, %v; want 0, ErrWouldBlock", n, err)
	}
	// What TryRead did not take is still there for Read.
	peer.Write([]byte("rest"))
	peer.Close()
	rest, err := io.ReadAll(c)
	if err != nil || string(rest) != "rest" {
		t.Fatalf("ReadAll after TryRead = %q, %v; want rest", rest, err)
	}
	if n, err := c.TryRead(buf); n != 0 || err != io.EOF {
		t.Fatalf("TryRead at the end = %d, %v; want 0, io.EOF", n, err)
	}
	c.Close()
	if _, err := c.TryRead(buf); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("TryRead after Close = %v; want net.ErrClosed", err)
	}
}
