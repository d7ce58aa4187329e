package heapfloor

import (
	"os"
	"runtime"
	"runtime/debug"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"go.uber.org/goleak"

	"github.com/trellismesh/trellis/internal/retry"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestPercent(t *testing.T) {
	const mb = 1 << 20
	for _, tc := range []struct {
		live, floor uint64
		base, want  int
	}{
		{live: 2 * mb, floor: 16 * mb, base: 100, want: 450},   // goal 18 MB: the minimum goal binds
		{live: 8 * mb, floor: 16 * mb, base: 100, want: 200},   // goal 24 MB: growth binds
		{live: 16 * mb, floor: 16 * mb, base: 100, want: 100},  // past the floor: the default
		{live: 64 * mb, floor: 16 * mb, base: 100, want: 100},  // never below base
		{live: 64 * mb, floor: 16 * mb, base: 150, want: 150},  // an operator's base stays
		{live: 0, floor: 16 * mb, base: 100, want: 400},        // before the first collection
		{live: 1, floor: 1 << 40, base: 100, want: maxPercent}, // bounded
	} {
		if got := Percent(tc.live, tc.floor, tc.base); got != tc.want {
			t.Errorf("Percent(live %d, floor %d, base %d) = %d; want %d", tc.live, tc.floor, tc.base, got, tc.want)
		}
	}
}

// step raises the percentage once collections come often, keeps it while
// they come at all, and lowers it after quietTicks ticks without one.
func TestStepFollowsCollections(t *testing.T) {
	const mb = 1 << 20
	tu := &Tuner{floor: 16 * mb, base: 100, percent: 100}
	var cycles uint64
	tick := func(collections uint64, live uint64) int {
		cycles += collections
		p := tu.step(live, cycles)
		tu.percent = p
		return p
	}
	if p := tick(1, 2*mb); p != 100 {
		t.Fatalf("one collection in a tick: percentage %d; want the base, 100", p)
	}
	if p := tick(3, 2*mb); p != 450 {
		t.Fatalf("three collections in a tick: percentage %d; want 450", p)
	}
	if p := tick(0, 2*mb+mb/10); p != 450 {
		t.Fatalf("a small change of the live heap moved the percentage to %d", p)
	}
	if p := tick(1, 8*mb); p != 200 {
		t.Fatalf("live heap 8 MB while busy: percentage %d; want 200", p)
	}
	for i := range quietTicks - 1 {
		if p := tick(0, 8*mb); p != 200 {
			t.Fatalf("quiet tick %d: percentage %d; want it kept at 200", i+1, p)
		}
	}
	if p := tick(0, 8*mb); p != 100 {
		t.Fatalf("after %d quiet ticks: percentage %d; want the base, 100", quietTicks, p)
	}
}

// gcPercent reads the current percentage.
func gcPercent() int {
	p := debug.SetGCPercent(100)
	debug.SetGCPercent(p)
	return p
}

// Collections several times a second raise the percentage (the test
// binary's live heap is far below 64 MB); Stop puts back the one it found.
func TestFrequentCollectionsRaiseAndStopRestores(t *testing.T) {
	if v, set := os.LookupEnv("GOGC"); set {
		os.Unsetenv("GOGC")
		defer os.Setenv("GOGC", v)
	}
	before := gcPercent()
	tu := Start(64<<20, hclog.NewNullLogger())
	if tu == nil {
		t.Fatal("Start returned nil with GOGC unset")
	}
	if got := gcPercent(); got != before {
		t.Errorf("percentage at Start = %d; want %d until collections are frequent", got, before)
	}
	retry.RunWith(&retry.Timer{Timeout: 15 * time.Second, Wait: 50 * time.Millisecond}, t, func(r *retry.R) {
		runtime.GC()
		runtime.GC()
		if got := gcPercent(); got <= before {
			r.Fatalf("percentage under frequent collections = %d; want above %d", got, before)
		}
	})
	tu.Stop()
	tu.Stop() // idempotent
	if got := gcPercent(); got != before {
		t.Errorf("percentage after Stop = %d; want %d", got, before)
	}
}

func TestStartLeavesAnExplicitGOGC(t *testing.T) {
	t.Setenv("GOGC", "100")
	if tu := Start(DefaultFloor, hclog.NewNullLogger()); tu != nil {
		tu.Stop()
		t.Fatal("Start tuned although GOGC is set")
	}
	var none *Tuner
	none.Stop() // a nil Tuner stops quietly
}
