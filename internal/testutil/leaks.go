package testutil

import (
	"fmt"
	"os"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// LeakWait is how long VerifyTestMain lets goroutines take to end after
// the tests passed. goleak alone waits about half a second; memberlist's
// Shutdown does not wait for a probe in flight, which ends on its own once
// its timer fires: one probe interval, scaled up to eight times while the
// member thinks itself unhealthy (1.6 s with the test timing), plus the
// probe timeout. LeakWait covers that with room for a loaded machine.
const LeakWait = 5 * time.Second

// VerifyTestMain runs the tests, then fails the package if goroutines
// other than those opts ignore are still running LeakWait later: like
// goleak.VerifyTestMain, but with a longer wait.
func VerifyTestMain(m *testing.M, opts ...goleak.Option) {
	code := m.Run()
	if code == 0 {
		deadline := time.Now().Add(LeakWait)
		var err error
		for {
			// goleak.Find itself retries for a while before it reports.
			if err = goleak.Find(opts...); err == nil || time.Now().After(deadline) {
				break
			}
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "goleak: goroutines still running %s after the tests passed: %v\n", LeakWait, err)
			code = 1
		}
	}
	os.Exit(code)
}
