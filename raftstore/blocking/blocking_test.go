package blocking

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-memdb"
	"go.uber.org/goleak"

	"github.com/trellismesh/trellis/raftstore/state"
	"github.com/trellismesh/trellis/raftstore/structs"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func register(t *testing.T, s *state.Store, idx uint64, name, status string) {
	t.Helper()
	err := s.EnsureRegistration(idx, &structs.RegisterRequest{
		Node: "n-" + name, Address: "10.0.0.1",
		Service: &structs.NodeService{ID: name, Service: name},
		Checks:  structs.HealthChecks{{CheckID: name + "-c", ServiceID: name, Status: status}},
	})
	if err != nil {
		t.Fatal(err)
	}
}

func healthQuery(name string, out *[]structs.CheckServiceNode) QueryFn {
	return func(ws memdb.WatchSet, s *state.Store) (uint64, error) {
		idx, rows, err := s.CheckServiceNodes(ws, name, nil)
		*out = rows
		return idx, err
	}
}

func TestQuery_NonBlocking(t *testing.T) {
	t.Parallel()
	s := state.New()
	var meta structs.QueryMeta
	var rows []structs.CheckServiceNode
	if err := Query(t.Context(), func() *state.Store { return s }, &structs.QueryOptions{}, &meta, healthQuery("web", &rows)); err != nil {
		t.Fatal(err)
	}
	if meta.Index != 1 {
		t.Errorf("index of an empty result = %d, want 1 (never 0)", meta.Index)
	}
}

func TestQuery_WakesWithin50ms(t *testing.T) {
	t.Parallel()
	s := state.New()
	register(t, s, 10, "web", structs.HealthPassing)
	get := func() *state.Store { return s }

	type result struct {
		meta structs.QueryMeta
		rows []structs.CheckServiceNode
		at   time.Time
		err  error
	}
	done := make(chan result, 1)
	go func() {
		var r result
		r.err = Query(context.Background(), get, &structs.QueryOptions{MinQueryIndex: 10, MaxQueryTime: time.Minute}, &r.meta, healthQuery("web", &r.rows))
		r.at = time.Now()
		done <- r
	}()
	// Changes elsewhere do not wake it.
	register(t, s, 11, "db", structs.HealthPassing)
	register(t, s, 12, "db", structs.HealthCritical)
	select {
	case r := <-done:
		t.Fatalf("query returned after changes to another service: index %d", r.meta.Index)
	case <-time.After(100 * time.Millisecond):
	}
	changed := time.Now()
	register(t, s, 13, "web", structs.HealthCritical)
	r := <-done
	if r.err != nil {
		t.Fatal(r.err)
	}
	if r.meta.Index != 13 || r.rows[0].Checks[0].Status != structs.HealthCritical {
		t.Errorf("woke with index %d, rows %+v", r.meta.Index, r.rows)
	}
	if d := r.at.Sub(changed); d > 50*time.Millisecond {
		t.Errorf("woke %s after the change, want within 50ms", d)
	}
}

func TestQuery_TimesOut(t *testing.T) {
	t.Parallel()
	s := state.New()
	register(t, s, 10, "web", structs.HealthPassing)
	var meta structs.QueryMeta
	var rows []structs.CheckServiceNode
	start := time.Now()
	err := Query(t.Context(), func() *state.Store { return s }, &structs.QueryOptions{MinQueryIndex: 10, MaxQueryTime: 50 * time.Millisecond}, &meta, healthQuery("web", &rows))
	if err != nil {
		t.Fatal(err)
	}
	if meta.Index != 10 || len(rows) != 1 {
		t.Errorf("after timeout: index %d, %d rows; want 10, 1", meta.Index, len(rows))
	}
	if d := time.Since(start); d < 50*time.Millisecond || d > 50*time.Millisecond+time.Second {
		t.Errorf("waited %s for a 50ms wait", d)
	}
}

func TestQuery_ContextCancel(t *testing.T) {
	t.Parallel()
	s := state.New()
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		var meta structs.QueryMeta
		var rows []structs.CheckServiceNode
		done <- Query(ctx, func() *state.Store { return s }, &structs.QueryOptions{MinQueryIndex: 5}, &meta, healthQuery("web", &rows))
	}()
	cancel()
	if err := <-done; err != context.Canceled {
		t.Errorf("Query after cancel = %v, want context.Canceled", err)
	}
}

func TestQuery_AbandonReruns(t *testing.T) {
	t.Parallel()
	old := state.New()
	register(t, old, 10, "web", structs.HealthPassing)
	// The replacement store already holds a newer web.
	repl := state.New()
	register(t, repl, 20, "web", structs.HealthCritical)
	var cur atomic.Pointer[state.Store]
	cur.Store(old)
	get := cur.Load
	done := make(chan uint64, 1)
	go func() {
		var meta structs.QueryMeta
		var rows []structs.CheckServiceNode
		_ = Query(context.Background(), get, &structs.QueryOptions{MinQueryIndex: 10, MaxQueryTime: time.Minute}, &meta, healthQuery("web", &rows))
		done <- meta.Index
	}()
	cur.Store(repl)
	old.Abandon()
	select {
	case idx := <-done:
		if idx != 20 {
			t.Errorf("index after restore = %d, want 20", idx)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("abandoning the store did not wake the query")
	}
}

func TestWait_Caps(t *testing.T) {
	t.Parallel()
	if w := Wait(&structs.QueryOptions{MaxQueryTime: time.Hour}); w > MaxWait+MaxWait/JitterFraction {
		t.Errorf("Wait(1h) = %s, want at most %s plus jitter", w, MaxWait)
	}
	if w := Wait(&structs.QueryOptions{}); w < DefaultWait {
		t.Errorf("Wait(0) = %s, want at least %s", w, DefaultWait)
	}
}
