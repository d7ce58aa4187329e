// Package testutil holds helpers for tests: a logger that writes to the test
// (shown only when it fails, or under -v), and free loopback ports.
//
// It is imported only by _test.go files and other test-only helpers.
package testutil

import (
	"io"
	"net"
	"os"
	"strings"
	"sync"
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
func FreePorts(t testing.TB, n int) []int {
	t.Helper()
	var ports []int
	var keep []io.Closer
	defer func() {
		for _, c := range keep {
			c.Close()
		}
	}()
	for len(ports) < n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("free port: %v", err)
		}
		port := l.Addr().(*net.TCPAddr).Port
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
