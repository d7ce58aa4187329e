package procs

import (
	"os"
	"runtime"
	"testing"

	"github.com/hashicorp/go-hclog"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// step raises at once when one processor is mostly used, and lowers only
// after quietTicks light intervals in a row.
func TestStepRaisesAtOnceAndLowersAfterQuiet(t *testing.T) {
	tu := &Tuner{max: 4, procs: 1}
	tick := func(load float64) int {
		p := tu.step(load)
		tu.procs = p
		return p
	}
	if p := tick(0.35); p != 1 {
		t.Fatalf("0.35 of a core on one processor: %d processors; want 1", p)
	}
	if p := tick(0.7); p != 4 {
		t.Fatalf("0.7 of a core on one processor: %d processors; want all 4", p)
	}
	for i := range quietTicks - 1 {
		if p := tick(0.1); p != 4 {
			t.Fatalf("light interval %d: %d processors; want 4 kept", i+1, p)
		}
	}
	if p := tick(0.5); p != 4 {
		t.Fatalf("a busier interval: %d processors; want 4", p)
	}
	for i := range quietTicks - 1 {
		if p := tick(0.1); p != 4 {
			t.Fatalf("light interval %d after a busy one: %d processors; want 4 kept", i+1, p)
		}
	}
	if p := tick(0.1); p != 1 {
		t.Fatalf("after %d light intervals: %d processors; want 1", quietTicks, p)
	}
}

func TestStartUsesOneAndStopRestoresTheDefault(t *testing.T) {
	if v, set := os.LookupEnv("GOMAXPROCS"); set {
		os.Unsetenv("GOMAXPROCS")
		defer os.Setenv("GOMAXPROCS", v)
	}
	before := runtime.GOMAXPROCS(0)
	if before < 2 {
		t.Skipf("GOMAXPROCS is %d: nothing to tune", before)
	}
	tu := Start(hclog.NewNullLogger())
	if tu == nil {
		t.Fatal("Start returned nil with GOMAXPROCS unset")
	}
	if got := runtime.GOMAXPROCS(0); got != 1 {
		t.Errorf("GOMAXPROCS after Start = %d; want 1", got)
	}
	tu.Stop()
	tu.Stop() // idempotent
	if got := runtime.GOMAXPROCS(0); got != before {
		t.Errorf("GOMAXPROCS after Stop = %d; want the default, %d", got, before)
	}
}

func TestStartLeavesAnExplicitGOMAXPROCS(t *testing.T) {
	t.Setenv("GOMAXPROCS", "2")
	if tu := Start(hclog.NewNullLogger()); tu != nil {
		tu.Stop()
		t.Fatal("Start tuned although GOMAXPROCS is set")
	}
	var none *Tuner
	none.Stop()
}

func TestCPUTimeAdvances(t *testing.T) {
	start := cpuTime()
	for x := 0; cpuTime() == start; x++ {
		_ = x * x // spin until the clock moves: a few ms
	}
}
