package local

import (
	"errors"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/trellismesh/trellis/internal/testutil"
	"github.com/trellismesh/trellis/raftstore/structs"
)

func TestReaper_Reap(t *testing.T) {
	t.Parallel()
	l, _ := newTestState(t, nil)
	for _, id := range []string{"a", "b", "c", "d"} {
		if err := l.AddService(&structs.NodeService{Service: id}); err != nil {
			t.Fatal(err)
		}
	}
	add := func(id, svc string, after time.Duration) {
		t.Helper()
		def := &structs.CheckType{TTL: time.Minute, DeregisterCriticalServiceAfter: after}
		if err := l.AddCheck(&structs.HealthCheck{CheckID: id, ServiceID: svc}, def); err != nil {
			t.Fatal(err)
		}
	}
	add("a1", "a", time.Minute)  // critical, due after a minute
	add("a2", "a", time.Minute)  // a second condemned check: a goes once
	add("b1", "b", time.Hour)    // critical, not yet due
	add("c1", "c", time.Minute)  // passing
	add("d1", "d", 0)            // critical, no deregistration
	add("node", "", time.Second) // node check: never removes anything
	l.UpdateCheck("c1", structs.HealthPassing, "")

	var mu sync.Mutex
	var calls []string
	r, err := NewReaper(ReaperConfig{State: l, Logger: testutil.Logger(t), Remove: func(id string) error {
		mu.Lock()
		calls = append(calls, id)
		mu.Unlock()
		return l.RemoveService(id)
	}})
	if err != nil {
		t.Fatal(err)
	}
	if got := r.Reap(time.Now()); len(got) != 0 {
		t.Errorf("Reap(now) removed %v, want nothing yet", got)
	}
	got := r.Reap(time.Now().Add(2 * time.Minute))
	if !slices.Equal(got, []string{"a"}) || !slices.Equal(calls, []string{"a"}) {
		t.Errorf("Reap(+2m) removed %v (calls %v), want [a]", got, calls)
	}
	if l.Service("a") != nil || l.Check("a1") != nil {
		t.Error("a or its check still registered")
	}
	if got := r.Reap(time.Now().Add(2 * time.Hour)); !slices.Equal(got, []string{"b"}) {
		t.Errorf("Reap(+2h) removed %v, want [b]", got)
	}
	if l.Service("c") == nil || l.Service("d") == nil {
		t.Error("c or d removed")
	}
}

func TestReaper_removeFails(t *testing.T) {
	t.Parallel()
	l, _ := newTestState(t, nil)
	if err := l.AddService(&structs.NodeService{Service: "a"}); err != nil {
		t.Fatal(err)
	}
	def := &structs.CheckType{TTL: time.Minute, DeregisterCriticalServiceAfter: time.Second}
	if err := l.AddCheck(&structs.HealthCheck{CheckID: "a1", ServiceID: "a"}, def); err != nil {
		t.Fatal(err)
	}
	fail := true
	r, err := NewReaper(ReaperConfig{State: l, Logger: testutil.Logger(t), Remove: func(id string) error {
		if fail {
			return errors.New("boom")
		}
		return l.RemoveService(id)
	}})
	if err != nil {
		t.Fatal(err)
	}
	later := time.Now().Add(time.Minute)
	if got := r.Reap(later); len(got) != 0 {
		t.Errorf("failed removal reported as removed: %v", got)
	}
	fail = false
	if got := r.Reap(later); !slices.Equal(got, []string{"a"}) {
		t.Errorf("retry removed %v, want [a]", got)
	}
	if _, err := NewReaper(ReaperConfig{}); err == nil {
		t.Error("NewReaper without a state succeeded")
	}
}

// TestReaper_Run shows the reaper at work on a fake clock, with the default
// removal (State.RemoveService).
func TestReaper_Run(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		l, _ := newTestState(t, nil)
		if err := l.AddService(&structs.NodeService{Service: "a"}); err != nil {
			t.Fatal(err)
		}
		def := &structs.CheckType{TTL: time.Minute, DeregisterCriticalServiceAfter: time.Minute}
		if err := l.AddCheck(&structs.HealthCheck{CheckID: "a1", ServiceID: "a", Status: structs.HealthPassing}, def); err != nil {
			t.Fatal(err)
		}
		r, err := NewReaper(ReaperConfig{State: l, Logger: testutil.Logger(t), Interval: time.Second})
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan struct{})
		go func() {
			defer close(done)
			r.Run(t.Context())
		}()

		time.Sleep(2 * time.Minute)
		synctest.Wait()
		if l.Service("a") == nil {
			t.Fatal("a passing service was removed")
		}
		l.UpdateCheck("a1", structs.HealthCritical, "down")
		time.Sleep(time.Minute)
		synctest.Wait()
		if l.Service("a") == nil {
			t.Fatal("removed at the deadline, not after it")
		}
		time.Sleep(2 * time.Second)
		synctest.Wait()
		if l.Service("a") != nil {
			t.Fatal("not removed within an interval after its deadline")
		}
		// t.Context is cancelled just before Cleanup; Run returns then.
		t.Cleanup(func() { <-done })
	})
}
