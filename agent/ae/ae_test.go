package ae

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"go.uber.org/goleak"

	"github.com/trellismesh/trellis/internal/testutil"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fakeState records syncs. fail, when set, decides each sync's error;
// block, when set, holds SyncChanges until it is closed or ctx ends.
type fakeState struct {
	mu    sync.Mutex
	calls []call
	fail  func(kind string, n int) error
	block chan struct{}
}

type call struct {
	kind string // "full" or "changes"
	at   time.Time
}

func (f *fakeState) record(ctx context.Context, kind string) error {
	f.mu.Lock()
	f.calls = append(f.calls, call{kind, time.Now()})
	n := len(f.calls)
	fail, block := f.fail, f.block
	f.mu.Unlock()
	if block != nil && kind == "changes" {
		select {
		case <-block:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if fail != nil {
		return fail(kind, n)
	}
	return nil
}

func (f *fakeState) SyncFull(ctx context.Context) error    { return f.record(ctx, "full") }
func (f *fakeState) SyncChanges(ctx context.Context) error { return f.record(ctx, "changes") }

func (f *fakeState) kinds() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var k []string
	for _, c := range f.calls {
		k = append(k, c.kind)
	}
	return k
}

func (f *fakeState) all() []call {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]call(nil), f.calls...)
}

func (f *fakeState) set(fn func()) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn()
}

// start runs a syncer in the bubble until the test ends.
func start(t *testing.T, cfg Config) *StateSyncer {
	t.Helper()
	cfg.Logger = testutil.Logger(t)
	s, err := NewStateSyncer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run returned %v", err)
		}
	})
	return s
}

func wantKinds(t *testing.T, f *fakeState, want ...string) {
	t.Helper()
	if got := f.kinds(); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("syncs %v, want %v", got, want)
	}
}

func TestStateSyncer_triggerCoalesces(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		f := &fakeState{}
		s := start(t, Config{State: f})
		synctest.Wait()
		wantKinds(t, f, "full")

		// Five triggers while idle: the first wakes the syncer, the rest
		// coalesce into at most one more sync.
		for range 5 {
			s.Trigger()
		}
		synctest.Wait()
		if n := len(f.kinds()); n < 2 || n > 3 {
			t.Fatalf("syncs %v after five triggers, want a full sync and one or two partial ones", f.kinds())
		}
		f.set(func() { f.calls = f.calls[:2] })

		// Triggers during a sync cause exactly one more.
		f.set(func() { f.block = make(chan struct{}) })
		s.Trigger()
		synctest.Wait() // SyncChanges is blocked
		for range 5 {
			s.Trigger()
		}
		f.mu.Lock()
		close(f.block)
		f.block = nil
		f.mu.Unlock()
		synctest.Wait()
		wantKinds(t, f, "full", "changes", "changes", "changes")
	})
}

func TestStateSyncer_sharedTrigger(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		f := &fakeState{}
		trig := NewTrigger()
		start(t, Config{State: f, Trigger: trig})
		synctest.Wait()
		trig.Fire()
		synctest.Wait()
		wantKinds(t, f, "full", "changes")
	})
}

func TestStateSyncer_periodicFullSync(t *testing.T) {
	t.Parallel()
	tests := []struct {
		nodes   int
		minWait time.Duration
	}{
		{1, time.Minute},
		{128, time.Minute},
		{129, 2 * time.Minute},
		{1024, 4 * time.Minute},
	}
	for _, test := range tests {
		t.Run(fmt.Sprint(test.nodes), func(t *testing.T) {
			t.Parallel()
			synctest.Test(t, func(t *testing.T) {
				f := &fakeState{}
				start(t, Config{State: f, Interval: time.Minute, ClusterSize: func() int { return test.nodes }})
				time.Sleep(30 * test.minWait)
				synctest.Wait()
				calls := f.all()
				if len(calls) < 20 || len(calls) > 31 {
					t.Fatalf("%d full syncs in %s, want 20 to 31", len(calls), 30*test.minWait)
				}
				for i := 1; i < len(calls); i++ {
					d := calls[i].at.Sub(calls[i-1].at)
					if calls[i].kind != "full" || d < test.minWait || d > test.minWait*3/2 {
						t.Errorf("sync %d (%s) came %s after the previous, want a full sync in [%s, %s]",
							i, calls[i].kind, d, test.minWait, test.minWait*3/2)
					}
				}
			})
		})
	}
}

func TestStateSyncer_retryBackoff(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		errNoLeader := errors.New("no cluster leader")
		f := &fakeState{fail: func(kind string, n int) error {
			if n <= 7 {
				return fmt.Errorf("read services: %w", errNoLeader)
			}
			return nil
		}}
		s := start(t, Config{State: f, RetryMin: time.Second, RetryMax: 10 * time.Second})
		time.Sleep(time.Minute)
		synctest.Wait()
		calls := f.all()
		if len(calls) != 8 {
			t.Fatalf("%d syncs, want 7 failed and 1 that passed: %v", len(calls), f.kinds())
		}
		// Waits double from 1 s to the 10 s cap, each drawn from its upper half.
		caps := []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 10 * time.Second, 10 * time.Second, 10 * time.Second}
		for i, c := range caps {
			d := calls[i+1].at.Sub(calls[i].at)
			if calls[i+1].kind != "full" || d < c/2 || d > c {
				t.Errorf("retry %d: %s after %s, want a full sync in [%s, %s]", i+1, calls[i+1].kind, d, c/2, c)
			}
		}

		// A failed partial sync retries with a full one; TriggerFull cuts
		// the backoff short.
		f.set(func() {
			f.calls = nil
			f.fail = func(kind string, n int) error {
				if kind == "changes" {
					return errNoLeader
				}
				return nil
			}
		})
		s.Trigger()
		synctest.Wait()
		wantKinds(t, f, "changes")
		s.TriggerFull()
		synctest.Wait()
		wantKinds(t, f, "changes", "full")
	})
}

func TestStateSyncer_pauseResume(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		f := &fakeState{}
		s, err := NewStateSyncer(Config{State: f, Logger: testutil.Logger(t)})
		if err != nil {
			t.Fatal(err)
		}
		s.Resume() // unbalanced: does nothing
		s.Pause()  // before Run: the first full sync waits
		s.Pause()
		if !s.Paused() {
			t.Fatal("not paused after Pause")
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- s.Run(ctx) }()

		s.Trigger()
		s.TriggerFull()
		time.Sleep(time.Hour)
		synctest.Wait()
		wantKinds(t, f)
		s.Resume()
		synctest.Wait()
		wantKinds(t, f) // still paused once
		s.Resume()
		synctest.Wait()
		wantKinds(t, f, "full") // the owed full sync, and the trigger served with it

		s.Pause()
		s.Trigger()
		synctest.Wait()
		wantKinds(t, f, "full")
		s.Resume()
		synctest.Wait()
		wantKinds(t, f, "full", "changes")

		// A periodic full sync that falls due while paused runs on Resume.
		s.Pause()
		time.Sleep(2 * time.Minute)
		synctest.Wait()
		wantKinds(t, f, "full", "changes")
		s.Resume()
		synctest.Wait()
		wantKinds(t, f, "full", "changes", "full")

		if err := s.Run(ctx); !errors.Is(err, ErrRunning) {
			t.Errorf("second Run = %v, want ErrRunning", err)
		}
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run = %v, want nil", err)
		}
	})
}

func TestStateSyncer_stopsWhileSyncing(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		f := &fakeState{block: make(chan struct{})}
		s, err := NewStateSyncer(Config{State: f, Logger: testutil.Logger(t)})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- s.Run(ctx) }()
		synctest.Wait()
		s.Trigger()
		synctest.Wait() // blocked in SyncChanges
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run = %v", err)
		}
		// It can run again afterwards.
		ctx2, cancel2 := context.WithCancel(context.Background())
		go func() { done <- s.Run(ctx2) }()
		synctest.Wait()
		cancel2()
		<-done
		wantKinds(t, f, "full", "changes", "full")
	})
}

func TestNewStateSyncer(t *testing.T) {
	t.Parallel()
	if _, err := NewStateSyncer(Config{}); err == nil {
		t.Error("NewStateSyncer without a state succeeded")
	}
	s, err := NewStateSyncer(Config{State: &fakeState{}, RetryMin: time.Minute, RetryMax: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if s.interval != DefaultInterval || s.retryMax != time.Minute {
		t.Errorf("interval %s retryMax %s, want %s and RetryMin", s.interval, s.retryMax, DefaultInterval)
	}
}

func TestScaleFactor(t *testing.T) {
	t.Parallel()
	tests := []struct{ n, want int }{
		{0, 1}, {1, 1}, {128, 1}, {129, 2}, {256, 2}, {257, 3}, {1024, 4}, {10000, 8},
	}
	for _, test := range tests {
		if got := scaleFactor(test.n); got != test.want {
			t.Errorf("scaleFactor(%d) got %d, want %d", test.n, got, test.want)
		}
	}
}
