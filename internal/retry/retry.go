// Package retry polls a condition until it holds or a deadline passes. Tests
// use it instead of sleeping: retry.Run(t, func(r *retry.R) { ... r.Fatalf(...) }).
//
// Inside the function use r, never t: r.Fatal ends only the current attempt.
package retry

import (
	"fmt"
	"runtime"
	"strings"
	"time"
)

// TB is the part of testing.TB that Run needs, so that this package does not
// import testing.
type TB interface {
	Helper()
	Fatalf(format string, args ...any)
}

// R is handed to each attempt. Its failure methods end the attempt, not the test.
type R struct {
	failed bool
	output []string
}

// failNow is the panic value that ends an attempt.
type failNow struct{}

// Errorf records a failure of this attempt and continues it.
func (r *R) Errorf(format string, args ...any) {
	r.failed = true
	r.log(fmt.Sprintf(format, args...))
}

// Fatalf records a failure of this attempt and ends it.
func (r *R) Fatalf(format string, args ...any) {
	r.Errorf(format, args...)
	panic(failNow{})
}

// Fatal records a failure of this attempt and ends it.
func (r *R) Fatal(args ...any) {
	r.failed = true
	r.log(fmt.Sprint(args...))
	panic(failNow{})
}

// Check ends the attempt when err is not nil.
func (r *R) Check(err error) {
	if err != nil {
		r.Fatal(err)
	}
}

// Helper exists so R can be passed where a helper-marking TB is expected.
func (r *R) Helper() {}

func (r *R) log(s string) {
	_, file, line, ok := runtime.Caller(3)
	if ok {
		if i := strings.LastIndexByte(file, '/'); i >= 0 {
			file = file[i+1:]
		}
		s = fmt.Sprintf("%s:%d: %s", file, line, s)
	}
	r.output = append(r.output, s)
}

// Timer is a retry policy: attempts every Wait until Timeout has passed.
type Timer struct {
	Timeout time.Duration
	Wait    time.Duration
}

// DefaultTimer is the policy of Run: 10 s in all, every 10 ms.
func DefaultTimer() *Timer { return &Timer{Timeout: 10 * time.Second, Wait: 10 * time.Millisecond} }

// Run calls f until an attempt passes, or fails t with the last attempt's
// messages after DefaultTimer's timeout.
func Run(t TB, f func(r *R)) {
	t.Helper()
	RunWith(DefaultTimer(), t, f)
}

// RunWith is Run with a given policy.
func RunWith(timer *Timer, t TB, f func(r *R)) {
	t.Helper()
	deadline := time.Now().Add(timer.Timeout)
	attempts := 0
	for {
		attempts++
		r := &R{}
		if runAttempt(r, f) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("retry: gave up after %d attempts over %s:\n%s", attempts, timer.Timeout, strings.Join(dedup(r.output), "\n"))
			return
		}
		time.Sleep(timer.Wait) // the poll interval between attempts, not a wait for a condition
	}
}

func runAttempt(r *R, f func(r *R)) (ok bool) {
	defer func() {
		if p := recover(); p != nil {
			if _, isFail := p.(failNow); !isFail {
				panic(p)
			}
			ok = false
		}
	}()
	f(r)
	return !r.failed
}

func dedup(lines []string) []string {
	seen := make(map[string]bool, len(lines))
	var out []string
	for _, l := range lines {
		if !seen[l] {
			seen[l] = true
			out = append(out, l)
		}
	}
	return out
}
