package local

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"go.uber.org/goleak"

	"github.com/trellismesh/trellis/internal/testutil"
	"github.com/trellismesh/trellis/raftstore/structs"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// counter counts OnChange calls.
type counter struct{ n atomic.Int64 }

func (c *counter) inc()        { c.n.Add(1) }
func (c *counter) take() int64 { return c.n.Swap(0) }

func testConfig(t testing.TB, changes *counter) Config {
	return Config{
		NodeName:        "node1",
		NodeID:          "6a1c2e0e-5c3a-4f5e-9a0a-000000000001",
		Datacenter:      "dc1",
		Address:         "127.0.0.1",
		TaggedAddresses: map[string]string{"lan": "127.0.0.1"},
		NodeMeta:        map[string]string{"rack": "r1"},
		OnChange:        changes.inc,
		Logger:          testutil.Logger(t),
	}
}

func newTestState(t testing.TB, rpc rpcClient) (*State, *counter) {
	t.Helper()
	changes := &counter{}
	if rpc == nil {
		rpc = newFakeCatalog()
	}
	l, err := New(testConfig(t, changes), rpc)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(l.Close)
	return l, changes
}

func web() *structs.NodeService {
	return &structs.NodeService{ID: "web1", Service: "web", Tags: []string{"v1"}, Port: 8080,
		Meta: map[string]string{"team": "a"}}
}

func webCheck() (*structs.HealthCheck, *structs.CheckType) {
	def := &structs.CheckType{HTTP: "http://127.0.0.1:8080/health", Interval: 10 * time.Second,
		Header: map[string][]string{"X": {"y"}}}
	return &structs.HealthCheck{CheckID: "web1-http", Name: "web http", ServiceID: "web1"}, def
}

func TestNew_badConfig(t *testing.T) {
	t.Parallel()
	if _, err := New(Config{}, newFakeCatalog()); err == nil || !strings.Contains(err.Error(), "NodeName") {
		t.Errorf("New without a node name: %v, want an error naming NodeName", err)
	}
	if _, err := New(Config{NodeName: "n"}, nil); err == nil {
		t.Error("New without an RPC client succeeded")
	}
	if _, err := New(Config{NodeName: "n", NodeMeta: map[string]string{"bad key": "v"}}, newFakeCatalog()); err == nil ||
		!strings.Contains(err.Error(), "NodeMeta") {
		t.Errorf("New with bad meta: %v, want an error naming NodeMeta", err)
	}
}

func TestState_AddService(t *testing.T) {
	t.Parallel()
	l, changes := newTestState(t, nil)
	watch := l.WatchCh()

	svc := web()
	if err := l.AddService(svc); err != nil {
		t.Fatal(err)
	}
	if n := changes.take(); n != 1 {
		t.Errorf("OnChange called %d times, want 1", n)
	}
	select {
	case <-watch:
	default:
		t.Error("WatchCh not closed by AddService")
	}

	// The state holds a copy: the caller's value and what getters return
	// are the caller's to change.
	svc.Tags[0] = "changed"
	got := l.Service("web1")
	if got == nil || got.Tags[0] != "v1" {
		t.Fatalf("Service(web1) = %+v, want tag v1", got)
	}
	got.Meta["team"] = "b"
	l.Services()["web1"].Tags[0] = "x"
	if again := l.Service("web1"); again.Meta["team"] != "a" || again.Tags[0] != "v1" {
		t.Errorf("a returned copy changed the state: %+v", again)
	}
	if ss := l.ServiceState("web1"); ss == nil || ss.InSync || ss.Deleted {
		t.Errorf("ServiceState(web1) = %+v, want out of sync, not deleted", ss)
	}

	// The ID defaults to the name.
	if err := l.AddService(&structs.NodeService{Service: "db"}); err != nil {
		t.Fatal(err)
	}
	if l.Service("db") == nil {
		t.Error("service without ID not stored under its name")
	}
	changes.take()

	// Bad input changes nothing.
	for _, bad := range []*structs.NodeService{nil, {ID: "x"}, {Service: "s", Port: 70000}, {Service: "a/b"}} {
		err := l.AddService(bad)
		var ve *structs.ValidationError
		if !errors.As(err, &ve) {
			t.Errorf("AddService(%+v) = %v, want a validation error", bad, err)
		}
	}
	if n := changes.take(); n != 0 {
		t.Errorf("OnChange called %d times for bad input", n)
	}
	if n := len(l.Services()); n != 2 {
		t.Errorf("%d services after bad input, want 2", n)
	}
}

func TestState_RemoveService(t *testing.T) {
	t.Parallel()
	l, changes := newTestState(t, nil)
	if err := l.RemoveService("nope"); !errors.Is(err, structs.ErrNotFound) {
		t.Errorf("RemoveService(unknown) = %v, want ErrNotFound", err)
	}
	if err := l.AddService(web()); err != nil {
		t.Fatal(err)
	}
	chk, def := webCheck()
	if err := l.AddCheck(chk, def); err != nil {
		t.Fatal(err)
	}
	if err := l.AddCheck(&structs.HealthCheck{CheckID: "mem"}, nil); err != nil {
		t.Fatal(err)
	}
	changes.take()
	if err := l.RemoveService("web1"); err != nil {
		t.Fatal(err)
	}
	if n := changes.take(); n != 1 {
		t.Errorf("OnChange called %d times, want 1", n)
	}
	if l.Service("web1") != nil || l.Check("web1-http") != nil {
		t.Error("service or its check still visible after RemoveService")
	}
	if l.Check("mem") == nil {
		t.Error("node check removed with the service")
	}
	if err := l.RemoveService("web1"); !errors.Is(err, structs.ErrNotFound) {
		t.Errorf("second RemoveService = %v, want ErrNotFound", err)
	}
	if err := l.RemoveCheck("web1-http"); !errors.Is(err, structs.ErrNotFound) {
		t.Errorf("RemoveCheck of a removed service's check = %v, want ErrNotFound", err)
	}
}

func TestState_AddCheck(t *testing.T) {
	t.Parallel()
	l, changes := newTestState(t, nil)

	chk, def := webCheck()
	if err := l.AddCheck(chk, def); !errors.Is(err, structs.ErrNotFound) {
		t.Errorf("AddCheck for an unknown service = %v, want ErrNotFound", err)
	}
	if err := l.AddService(web()); err != nil {
		t.Fatal(err)
	}
	before := time.Now()
	if err := l.AddCheck(chk, def); err != nil {
		t.Fatal(err)
	}
	got := l.Check("web1-http")
	if got.Node != "node1" || got.Status != structs.HealthCritical || got.ServiceName != "web" ||
		len(got.ServiceTags) != 1 || got.ServiceTags[0] != "v1" || got.Type != structs.CheckTypeHTTP ||
		got.Definition.HTTP != def.HTTP || got.Definition.Interval != def.Interval {
		t.Errorf("Check(web1-http) = %+v", got)
	}
	cs := l.CheckState("web1-http")
	if cs.CriticalTime.Before(before) || cs.Def == nil || cs.Def.HTTP != def.HTTP {
		t.Errorf("CheckState = %+v, want critical since AddCheck and the definition", cs)
	}
	cs.Def.Header["X"][0] = "changed"
	if l.CheckState("web1-http").Def.Header["X"][0] != "y" {
		t.Error("CheckState's definition shares the state's header map")
	}
	def.Header["X"][0] = "changed too"
	if l.CheckState("web1-http").Def.Header["X"][0] != "y" {
		t.Error("the state shares the caller's definition")
	}

	// Tags follow the service.
	svc := web()
	svc.Tags = []string{"v2"}
	if err := l.AddService(svc); err != nil {
		t.Fatal(err)
	}
	if tags := l.Check("web1-http").ServiceTags; len(tags) != 1 || tags[0] != "v2" {
		t.Errorf("check's service tags %v after the service changed, want [v2]", tags)
	}

	if got := l.ChecksForService("web1"); len(got) != 1 || got["web1-http"] == nil {
		t.Errorf("ChecksForService(web1) = %v", got)
	}
	changes.take()
	for _, bad := range []struct {
		chk *structs.HealthCheck
		def *structs.CheckType
	}{
		{nil, nil},
		{&structs.HealthCheck{}, nil},
		{&structs.HealthCheck{CheckID: "x", Status: "sideways"}, nil},
		{&structs.HealthCheck{CheckID: "x"}, &structs.CheckType{}},
	} {
		if err := l.AddCheck(bad.chk, bad.def); err == nil {
			t.Errorf("AddCheck(%+v, %+v) succeeded", bad.chk, bad.def)
		}
	}
	if n := changes.take(); n != 0 {
		t.Errorf("OnChange called %d times for bad input", n)
	}
	if err := l.RemoveCheck("x"); !errors.Is(err, structs.ErrNotFound) {
		t.Errorf("RemoveCheck(unknown) = %v, want ErrNotFound", err)
	}
}

func TestState_serverOwnedCheck(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t, &counter{})
	cfg.ServerOwnedCheckIDs = []string{"serfHealth"}
	l, err := New(cfg, newFakeCatalog())
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if err := l.AddCheck(&structs.HealthCheck{CheckID: "serfHealth"}, nil); err == nil {
		t.Error("AddCheck of a server-owned check ID succeeded")
	}
}

func TestState_UpdateCheck(t *testing.T) {
	t.Parallel()
	l, changes := newTestState(t, nil)
	if err := l.AddCheck(&structs.HealthCheck{CheckID: "c", Status: structs.HealthPassing}, nil); err != nil {
		t.Fatal(err)
	}
	changes.take()
	if !l.CheckState("c").CriticalTime.IsZero() {
		t.Error("a passing check has a CriticalTime")
	}

	l.UpdateCheck("c", structs.HealthPassing, "") // no change
	if n := changes.take(); n != 0 {
		t.Errorf("an update that changes nothing called OnChange %d times", n)
	}
	l.UpdateCheck("unknown", structs.HealthPassing, "x") // ignored
	l.UpdateCheck("c", "bogus", "x")                     // ignored
	if got := l.Check("c"); got.Status != structs.HealthPassing || got.Output != "" {
		t.Errorf("ignored updates changed the check: %+v", got)
	}

	watch := l.WatchCh()
	l.UpdateCheck("c", structs.HealthCritical, "down")
	if n := changes.take(); n != 1 {
		t.Errorf("status change called OnChange %d times, want 1", n)
	}
	select {
	case <-watch:
	default:
		t.Error("WatchCh not closed by a status change")
	}
	crit := l.CriticalCheckStates()
	if len(crit) != 1 || crit["c"].CriticalTime.IsZero() || crit["c"].Check.Output != "down" {
		t.Errorf("CriticalCheckStates() = %+v", crit)
	}
	since := crit["c"].CriticalTime
	l.UpdateCheck("c", structs.HealthCritical, "still down")
	if got := l.CheckState("c").CriticalTime; !got.Equal(since) {
		t.Errorf("CriticalTime moved from %v to %v while critical", since, got)
	}
	l.UpdateCheck("c", structs.HealthWarning, "")
	if got := l.CheckState("c"); !got.CriticalTime.IsZero() || got.CriticalFor(time.Now()) != 0 {
		t.Errorf("CriticalTime %v after leaving critical, want zero", got.CriticalTime)
	}
	if len(l.CriticalCheckStates()) != 0 {
		t.Error("CriticalCheckStates lists a warning check")
	}
}

// TestState_outputDeferred shows that output-only changes of a check in
// sync wait for CheckUpdateInterval, while status changes go at once.
func TestState_outputDeferred(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		rec := &recordingRPC{next: newFakeCatalog()}
		l, changes := newTestState(t, rec)
		if err := l.AddCheck(&structs.HealthCheck{CheckID: "c", Status: structs.HealthPassing, Output: "t=0"}, nil); err != nil {
			t.Fatal(err)
		}
		if err := l.SyncFull(context.Background()); err != nil {
			t.Fatal(err)
		}
		rec.takeCalls()
		changes.take()

		l.UpdateCheck("c", structs.HealthPassing, "t=1")
		if n := changes.take(); n != 0 {
			t.Errorf("output-only change called OnChange %d times, want 0", n)
		}
		if !l.CheckState("c").InSync {
			t.Error("output-only change marked the check out of sync at once")
		}
		if err := l.SyncChanges(context.Background()); err != nil {
			t.Fatal(err)
		}
		if n := writes(rec.takeCalls()); n != 0 {
			t.Errorf("SyncChanges wrote %d times for a deferred output change", n)
		}
		// A full sync sees the output differ, and leaves it to the timer too.
		if err := l.SyncFull(context.Background()); err != nil {
			t.Fatal(err)
		}
		if n := writes(rec.takeCalls()); n != 0 {
			t.Errorf("SyncFull wrote %d times for a deferred output change", n)
		}

		// Within half the interval nothing happens; by one and a half it is due.
		time.Sleep(DefaultCheckUpdateInterval/2 - time.Second)
		synctest.Wait()
		if n := changes.take(); n != 0 || !l.CheckState("c").InSync {
			t.Fatalf("deferred output went out early")
		}
		l.UpdateCheck("c", structs.HealthPassing, "t=2") // the timer is already armed
		time.Sleep(DefaultCheckUpdateInterval + time.Second)
		synctest.Wait()
		if n := changes.take(); n != 1 {
			t.Errorf("deferred output called OnChange %d times, want 1", n)
		}
		if l.CheckState("c").InSync {
			t.Error("deferred output due but the check is in sync")
		}
		if err := l.SyncChanges(context.Background()); err != nil {
			t.Fatal(err)
		}
		if _, chks := catalogView(t, rec.next, "node1"); chks["c"].Output != "t=2" {
			t.Errorf("catalog output %q, want t=2", chks["c"].Output)
		}

		// A status change goes at once and takes the output with it.
		rec.takeCalls()
		l.UpdateCheck("c", structs.HealthPassing, "t=3")
		l.UpdateCheck("c", structs.HealthWarning, "t=4")
		if n := changes.take(); n != 1 {
			t.Errorf("status change called OnChange %d times, want 1", n)
		}
		if err := l.SyncChanges(context.Background()); err != nil {
			t.Fatal(err)
		}
		if n := writes(rec.takeCalls()); n != 1 {
			t.Errorf("status change took %d writes, want 1", n)
		}
		if _, chks := catalogView(t, rec.next, "node1"); chks["c"].Status != structs.HealthWarning || chks["c"].Output != "t=4" {
			t.Errorf("catalog has %+v, want warning t=4", chks["c"])
		}
		// The status change cancelled the deferral armed for t=3.
		time.Sleep(2 * DefaultCheckUpdateInterval)
		synctest.Wait()
		if n := changes.take(); n != 0 {
			t.Errorf("a cancelled deferral called OnChange %d times", n)
		}
	})
}

func TestState_noDeferral(t *testing.T) {
	t.Parallel()
	changes := &counter{}
	cfg := testConfig(t, changes)
	cfg.CheckUpdateInterval = -1
	l, err := New(cfg, newFakeCatalog())
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if err := l.AddCheck(&structs.HealthCheck{CheckID: "c"}, nil); err != nil {
		t.Fatal(err)
	}
	if err := l.SyncFull(context.Background()); err != nil {
		t.Fatal(err)
	}
	changes.take()
	l.UpdateCheck("c", structs.HealthCritical, "new output")
	if n := changes.take(); n != 1 || l.CheckState("c").InSync {
		t.Errorf("without deferral an output change called OnChange %d times and left InSync %v",
			n, l.CheckState("c").InSync)
	}
}

func TestState_closeStopsTimers(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		changes := &counter{}
		l, err := New(testConfig(t, changes), newFakeCatalog())
		if err != nil {
			t.Fatal(err)
		}
		if err := l.AddCheck(&structs.HealthCheck{CheckID: "c"}, nil); err != nil {
			t.Fatal(err)
		}
		if err := l.SyncFull(context.Background()); err != nil {
			t.Fatal(err)
		}
		l.UpdateCheck("c", structs.HealthCritical, "deferred")
		changes.take()
		l.Close()
		l.Close()
		time.Sleep(time.Hour)
		synctest.Wait()
		if n := changes.take(); n != 0 {
			t.Errorf("a deferral fired after Close (%d changes)", n)
		}
	})
}
