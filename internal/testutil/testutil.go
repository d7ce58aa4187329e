// Package testutil holds helpers for tests: a logger that writes to the test
// (shown only when it fails, or under -v), free loopback ports, a buffer
// safe to read while it is written (LockedBuffer), one accepted connection
// (AcceptOne), a go-metrics sink that keeps what it is sent
// (MetricsSink), and a goroutine-leak check for TestMain that waits out
// memberlist's in-flight probes (VerifyTestMain).
//
// It is imported only by _test.go files and other test-only helpers.
package testutil

import (
	"bytes"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/hashicorp/go-hclog"
)

// Logger returns an hclog logger that writes through t.Log, so output shows
// only for failing tests or under -v. TEST_LOG_LEVEL sets the level (default
// debug). Lines logged after the test ended are dropped.
//
// For a fuzz target (*testing.F) it returns a logger that drops everything:
// the fuzzing engine forbids logging through f from inside the target.
func Logger(t testing.TB) hclog.Logger {
	if _, isFuzz := t.(*testing.F); isFuzz {
		return hclog.NewNullLogger()
	}
	level := hclog.LevelFromString(os.Getenv("TEST_LOG_LEVEL"))
	if level == hclog.NoLevel {
		level = hclog.Debug
	}
	w := &testWriter{t: t}
	t.Cleanup(w.stop)
	return hclog.New(&hclog.LoggerOptions{
		Name:   t.Name(),
		Level:  level,
		Output: w,
	})
}

type testWriter struct {
	t    testing.TB
	mu   sync.Mutex
	done bool // guarded by mu
}

func (w *testWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Helper()
		w.t.Log(strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}

func (w *testWriter) stop() {
	w.mu.Lock()
	w.done = true
	w.mu.Unlock()
}

var _ io.Writer = (*testWriter)(nil)

// FreePorts returns n distinct ports that were free on 127.0.0.1 for both TCP
// and UDP when asked. Prefer binding port 0 and reading the address back;
// use this only where a component needs its port before it binds.
//
// The ports come from below the kernel's ephemeral range, so that the port-0
// listeners a test opens afterwards (its backends, say) cannot be given a
// port it handed out before the component that needs it has bound it. Each
// process starts at a random point of that range and moves on, so parallel
// test binaries rarely meet.
func FreePorts(t testing.TB, n int) []int {
	t.Helper()
	var ports []int
	var keep []io.Closer
	defer func() {
		for _, c := range keep {
			c.Close()
		}
	}()
	low, high := portRange()
	for tries := 0; len(ports) < n; tries++ {
		if tries > 20*(high-low) {
			t.Fatalf("free port: none free in %d-%d", low, high)
		}
		port := low + int(portCursor.Add(1))%(high-low)
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err != nil {
			continue
		}
		u, err := net.ListenPacket("udp", l.Addr().String())
		if err != nil {
			l.Close()
			continue // the UDP side is taken; try another
		}
		keep = append(keep, l, u)
		ports = append(ports, port)
	}
	return ports
}

// portCursor is where FreePorts looks next, from a random start.
var portCursor = func() *atomic.Int64 {
	var c atomic.Int64
	c.Store(rand.Int64N(1 << 20))
	return &c
}()

// portRange is the range FreePorts picks from: 22000 (above the default
// sidecar ports, 21000-21255, which agents in tests pick themselves) up to
// the start of the kernel's ephemeral range (32768 when it cannot be read).
func portRange() (low, high int) {
	low, high = 22000, 32768
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if v, err := strconv.Atoi(f[0]); err == nil && v > low+1000 {
				high = v
			}
		}
	}
	return low, high
}

// LockedBuffer is a bytes.Buffer that one goroutine (a logger, a child
// process's output) writes while the test reads it. The zero value is
// ready to use.
type LockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer // guarded by mu
}

// Write appends p.
func (b *LockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// String returns what was written so far.
func (b *LockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// AcceptOne accepts one connection on ln in a goroutine: the channel
// yields it, or is closed when Accept fails (close ln to end the
// goroutine).
func AcceptOne(ln net.Listener) <-chan net.Conn {
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			close(accepted)
			return
		}
		accepted <- c
	}()
	return accepted
}
