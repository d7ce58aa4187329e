package proxy

import (
	"net"
	"testing"
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
