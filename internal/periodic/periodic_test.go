package periodic

import (
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/trellismesh/trellis/internal/retry"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestLoopCallsUntilStopped(t *testing.T) {
	var calls atomic.Int64
	l := Start(time.Millisecond, func(time.Time) { calls.Add(1) })
	retry.Run(t, func(r *retry.R) {
		if n := calls.Load(); n < 3 {
			r.Fatalf("%d calls so far; want 3", n)
		}
	})
	if !l.Stop() {
		t.Fatal("the first Stop reported the loop already stopped")
	}
	after := calls.Load()
	if l.Stop() {
		t.Fatal("a second Stop reported stopping the loop")
	}
	// Stop returned once the goroutine was gone: no call can follow.
	if n := calls.Load(); n != after {
		t.Fatalf("%d calls after Stop returned", n-after)
	}
}
