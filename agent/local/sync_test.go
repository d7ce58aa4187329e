package local

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"

	"github.com/trellismesh/trellis/raftstore/structs"
)

// catalogs are the catalogs the sync tests run against: the in-test fake,
// and the real raftstore server where available (catalog_server_test.go).
var catalogs = map[string]func(t *testing.T) rpcClient{
	"fake": func(*testing.T) rpcClient { return newFakeCatalog() },
}

// forEachCatalog runs f against every catalog.
func forEachCatalog(t *testing.T, f func(t *testing.T, catalog rpcClient)) {
	for name, newCatalog := range catalogs {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			f(t, newCatalog(t))
		})
	}
}

func mustSyncFull(t *testing.T, l *State) {
	t.Helper()
	if err := l.SyncFull(t.Context()); err != nil {
		t.Fatalf("SyncFull: %v", err)
	}
}

func mustSyncChanges(t *testing.T, l *State) {
	t.Helper()
	if err := l.SyncChanges(t.Context()); err != nil {
		t.Fatalf("SyncChanges: %v", err)
	}
}

func TestSync_nodeWithoutServices(t *testing.T) {
	t.Parallel()
	forEachCatalog(t, func(t *testing.T, catalog rpcClient) {
		l, _ := newTestState(t, catalog)
		mustSyncFull(t, l)
		ns, _ := catalogView(t, catalog, "node1")
		if ns == nil || ns.Node == nil {
			t.Fatal("node not registered by a full sync with no services")
		}
		n := ns.Node
		if n.Address != "127.0.0.1" || n.ID != "6a1c2e0e-5c3a-4f5e-9a0a-000000000001" ||
			n.Meta["rack"] != "r1" || n.TaggedAddresses["lan"] != "127.0.0.1" {
			t.Errorf("catalog node %+v", n)
		}
	})
}

func TestSync_serviceAppearsAndComesBack(t *testing.T) {
	t.Parallel()
	forEachCatalog(t, func(t *testing.T, catalog rpcClient) {
		rec := &recordingRPC{next: catalog}
		l, _ := newTestState(t, rec)
		if err := l.AddService(web()); err != nil {
			t.Fatal(err)
		}
		chk, def := webCheck()
		if err := l.AddCheck(chk, def); err != nil {
			t.Fatal(err)
		}
		if err := l.AddCheck(&structs.HealthCheck{CheckID: "mem", Name: "memory", Status: structs.HealthPassing}, nil); err != nil {
			t.Fatal(err)
		}
		mustSyncChanges(t, l)

		ns, chks := catalogView(t, catalog, "node1")
		if ns == nil || ns.Services["web1"] == nil || !ns.Services["web1"].IsSame(l.Service("web1")) {
			t.Fatalf("catalog services %+v, want web1 as registered", ns)
		}
		if c := chks["web1-http"]; c == nil || !c.IsSame(l.Check("web1-http")) {
			t.Errorf("catalog check web1-http %+v, want %+v", c, l.Check("web1-http"))
		}
		if c := chks["mem"]; c == nil || c.Status != structs.HealthPassing {
			t.Errorf("catalog check mem %+v", c)
		}
		if ss := l.ServiceState("web1"); !ss.InSync {
			t.Error("web1 not in sync after SyncChanges")
		}

		// Nothing to do: a second sync writes nothing.
		rec.takeCalls()
		mustSyncChanges(t, l)
		mustSyncFull(t, l)
		if calls := rec.takeCalls(); writes(calls) != 0 {
			t.Errorf("syncs of an unchanged state wrote: %v", calls)
		}

		// Someone removes the service and the node check behind the agent's back.
		dereg := func(req structs.DeregisterRequest) {
			t.Helper()
			req.Node = "node1"
			if err := catalog.RPC(t.Context(), structs.MethodCatalogDeregister, &req, &structs.WriteReply{}); err != nil {
				t.Fatalf("deregister %+v: %v", req, err)
			}
		}
		dereg(structs.DeregisterRequest{ServiceID: "web1"})
		dereg(structs.DeregisterRequest{CheckID: "mem"})
		mustSyncChanges(t, l) // a partial sync does not look at the catalog
		if ns, _ := catalogView(t, catalog, "node1"); ns.Services["web1"] != nil {
			t.Fatal("web1 back without a full sync")
		}
		mustSyncFull(t, l)
		ns, chks = catalogView(t, catalog, "node1")
		if ns.Services["web1"] == nil || chks["web1-http"] == nil || chks["mem"] == nil {
			t.Errorf("after a full sync the catalog has services %v and checks %v, want web1, web1-http and mem",
				ns.Services, chks)
		}

		// The whole node removed comes back too.
		dereg(structs.DeregisterRequest{})
		mustSyncFull(t, l)
		if ns, _ := catalogView(t, catalog, "node1"); ns == nil || ns.Services["web1"] == nil {
			t.Error("node and service not back after a full sync")
		}
	})
}

func TestSync_foreignEntriesRemoved(t *testing.T) {
	t.Parallel()
	forEachCatalog(t, func(t *testing.T, catalog rpcClient) {
		cfg := testConfig(t, &counter{})
		cfg.ServerOwnedCheckIDs = []string{"serfHealth"}
		l, err := New(cfg, catalog)
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		if err := l.AddService(web()); err != nil {
			t.Fatal(err)
		}
		mustSyncFull(t, l)

		// Entries this agent does not own, registered on its node through
		// the catalog API, and a check the servers own.
		req := structs.RegisterRequest{Node: "node1", Address: "127.0.0.1", SkipNodeUpdate: true,
			Service: &structs.NodeService{ID: "stray", Service: "stray"},
			Checks: structs.HealthChecks{
				{CheckID: "stray-check", Name: "stray", Status: structs.HealthPassing, ServiceID: "stray"},
				{CheckID: "node-stray", Name: "node stray", Status: structs.HealthPassing},
				{CheckID: "web1-stray", Name: "web stray", Status: structs.HealthPassing, ServiceID: "web1"},
				{CheckID: "serfHealth", Name: "gossip", Status: structs.HealthPassing},
			}}
		if err := catalog.RPC(t.Context(), structs.MethodCatalogRegister, &req, &structs.WriteReply{}); err != nil {
			t.Fatal(err)
		}
		// A changed copy of our own service.
		changed := web()
		changed.Port = 1
		req = structs.RegisterRequest{Node: "node1", Address: "127.0.0.1", SkipNodeUpdate: true, Service: changed}
		if err := catalog.RPC(t.Context(), structs.MethodCatalogRegister, &req, &structs.WriteReply{}); err != nil {
			t.Fatal(err)
		}

		mustSyncFull(t, l)
		ns, chks := catalogView(t, catalog, "node1")
		if ns.Services["stray"] != nil || chks["stray-check"] != nil || chks["node-stray"] != nil || chks["web1-stray"] != nil {
			t.Errorf("stray entries survived a full sync: services %v checks %v", ns.Services, chks)
		}
		if chks["serfHealth"] == nil {
			t.Error("the server-owned check was removed")
		}
		if got := ns.Services["web1"]; got == nil || got.Port != 8080 {
			t.Errorf("web1 in the catalog %+v, want port 8080 restored", got)
		}
		if len(l.Services()) != 1 || len(l.Checks()) != 0 {
			t.Errorf("a full sync leaked catalog entries into the local state: %v %v", l.Services(), l.Checks())
		}
	})
}

func TestSync_checkStatusPushed(t *testing.T) {
	t.Parallel()
	forEachCatalog(t, func(t *testing.T, catalog rpcClient) {
		rec := &recordingRPC{next: catalog}
		l, changes := newTestState(t, rec)
		if err := l.AddService(web()); err != nil {
			t.Fatal(err)
		}
		chk, def := webCheck()
		if err := l.AddCheck(chk, def); err != nil {
			t.Fatal(err)
		}
		mustSyncFull(t, l)
		rec.takeCalls()
		changes.take()

		l.UpdateCheck("web1-http", structs.HealthPassing, "HTTP GET ...: 200 OK")
		if n := changes.take(); n != 1 {
			t.Errorf("status change called OnChange %d times, want 1", n)
		}
		mustSyncChanges(t, l)
		if calls := rec.takeCalls(); writes(calls) != 1 {
			t.Errorf("status change sent %v, want one write", calls)
		}
		_, chks := catalogView(t, catalog, "node1")
		if c := chks["web1-http"]; c.Status != structs.HealthPassing || c.Output != "HTTP GET ...: 200 OK" {
			t.Errorf("catalog check %+v, want passing with the output", c)
		}

		// Output only: deferred.
		l.UpdateCheck("web1-http", structs.HealthPassing, "HTTP GET ...: 200 OK (again)")
		mustSyncChanges(t, l)
		if calls := rec.takeCalls(); writes(calls) != 0 {
			t.Errorf("an output-only change was sent at once: %v", calls)
		}
		if _, chks := catalogView(t, catalog, "node1"); chks["web1-http"].Output != "HTTP GET ...: 200 OK" {
			t.Errorf("catalog output %q changed before the deferral", chks["web1-http"].Output)
		}
	})
}

func TestSync_deregister(t *testing.T) {
	t.Parallel()
	forEachCatalog(t, func(t *testing.T, catalog rpcClient) {
		l, _ := newTestState(t, catalog)
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
		mustSyncFull(t, l)

		if err := l.RemoveService("web1"); err != nil {
			t.Fatal(err)
		}
		if err := l.RemoveCheck("mem"); err != nil {
			t.Fatal(err)
		}
		mustSyncChanges(t, l)
		ns, chks := catalogView(t, catalog, "node1")
		if len(ns.Services) != 0 || len(chks) != 0 {
			t.Errorf("after deregistering: services %v checks %v, want none", ns.Services, chks)
		}
		l.mu.Lock()
		left := len(l.services) + len(l.checks)
		l.mu.Unlock()
		if left != 0 {
			t.Errorf("%d deleted entries kept after they were deregistered", left)
		}

		// Removing something the catalog already lost is not an error.
		if err := l.AddService(web()); err != nil {
			t.Fatal(err)
		}
		mustSyncChanges(t, l)
		req := structs.DeregisterRequest{Node: "node1", ServiceID: "web1"}
		if err := catalog.RPC(t.Context(), structs.MethodCatalogDeregister, &req, &structs.WriteReply{}); err != nil {
			t.Fatal(err)
		}
		if err := l.RemoveService("web1"); err != nil {
			t.Fatal(err)
		}
		mustSyncChanges(t, l)
		if l.ServiceState("web1") != nil {
			t.Error("web1 still known after deregistering")
		}
	})
}

func TestSync_errorsKeepEntriesOutOfSync(t *testing.T) {
	t.Parallel()
	rec := &recordingRPC{next: newFakeCatalog()}
	l, _ := newTestState(t, rec)
	if err := l.AddService(web()); err != nil {
		t.Fatal(err)
	}

	rec.setBefore(func(string, any) (error, bool) { return structs.ErrNoLeader, true })
	err := l.SyncFull(t.Context())
	if !errors.Is(err, structs.ErrNoLeader) {
		t.Fatalf("SyncFull with no leader = %v, want ErrNoLeader", err)
	}
	// Reads pass, writes fail.
	rec.setBefore(func(method string, _ any) (error, bool) {
		if method == structs.MethodCatalogRegister {
			return fmt.Errorf("forward: %w", structs.ErrNoLeader), true
		}
		return nil, false
	})
	if err := l.SyncFull(t.Context()); !errors.Is(err, structs.ErrNoLeader) {
		t.Fatalf("SyncFull with failing writes = %v, want ErrNoLeader", err)
	}
	if l.ServiceState("web1").InSync {
		t.Error("web1 marked in sync although its write failed")
	}
	rec.setBefore(nil)
	mustSyncChanges(t, l)
	if !l.ServiceState("web1").InSync {
		t.Error("web1 not in sync after a successful retry")
	}
}

func TestSync_invalidEntrySkipped(t *testing.T) {
	t.Parallel()
	rec := &recordingRPC{next: newFakeCatalog()}
	l, _ := newTestState(t, rec)
	for _, name := range []string{"a", "b", "c"} {
		if err := l.AddService(&structs.NodeService{Service: name}); err != nil {
			t.Fatal(err)
		}
	}
	rec.setBefore(func(method string, args any) (error, bool) {
		if req, ok := args.(*structs.RegisterRequest); ok && req.Service != nil && req.Service.ID == "b" {
			return structs.Invalid("Service.Name", "rejected by the server"), true
		}
		return nil, false
	})
	mustSyncFull(t, l)
	for id, want := range map[string]bool{"a": true, "b": false, "c": true} {
		if got := l.ServiceState(id).InSync; got != want {
			t.Errorf("service %s InSync = %v, want %v", id, got, want)
		}
	}
}

// TestSync_changeDuringWrite shows that a change made while its entry is on
// the wire leaves the entry out of sync, so the newer value goes next time.
func TestSync_changeDuringWrite(t *testing.T) {
	t.Parallel()
	rec := &recordingRPC{next: newFakeCatalog()}
	l, _ := newTestState(t, rec)
	if err := l.AddService(web()); err != nil {
		t.Fatal(err)
	}
	changed := false
	rec.setAfter(func(method string, args any) {
		if req, ok := args.(*structs.RegisterRequest); ok && req.Service != nil && !changed {
			changed = true
			svc := web()
			svc.Port = 9090
			if err := l.AddService(svc); err != nil { // the API answering during a sync
				t.Error(err)
			}
		}
	})
	mustSyncFull(t, l)
	if l.ServiceState("web1").InSync {
		t.Fatal("web1 marked in sync although it changed during its write")
	}
	rec.setAfter(nil)
	mustSyncChanges(t, l)
	if ns, _ := catalogView(t, rec.next, "node1"); ns.Services["web1"].Port != 9090 {
		t.Errorf("catalog port %d, want 9090", ns.Services["web1"].Port)
	}
}

func TestSync_order(t *testing.T) {
	t.Parallel()
	rec := &recordingRPC{next: newFakeCatalog()}
	l, _ := newTestState(t, rec)
	for _, name := range []string{"b", "a"} {
		if err := l.AddService(&structs.NodeService{Service: name}); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.AddCheck(&structs.HealthCheck{CheckID: "a-check", ServiceID: "a"}, nil); err != nil {
		t.Fatal(err)
	}
	var sent []string
	rec.setBefore(func(method string, args any) (error, bool) {
		switch req := args.(type) {
		case *structs.RegisterRequest:
			switch {
			case req.Service != nil:
				sent = append(sent, fmt.Sprintf("service %s with %d checks", req.Service.ID, len(req.Checks)))
			case req.Check != nil:
				sent = append(sent, "check "+req.Check.CheckID)
			default:
				sent = append(sent, "node")
			}
		case *structs.DeregisterRequest:
			sent = append(sent, "deregister "+req.ServiceID+req.CheckID)
		}
		return nil, false
	})
	mustSyncFull(t, l)
	want := []string{"node", "service a with 1 checks", "service b with 0 checks"}
	if !slices.Equal(sent, want) {
		t.Errorf("first sync sent %q, want %q", sent, want)
	}
	sent = nil
	if err := l.RemoveService("b"); err != nil {
		t.Fatal(err)
	}
	l.UpdateCheck("a-check", structs.HealthPassing, "")
	mustSyncChanges(t, l)
	want = []string{"deregister b", "check a-check"}
	if !slices.Equal(sent, want) {
		t.Errorf("second sync sent %q, want %q", sent, want)
	}
}

func TestSync_contextCancelled(t *testing.T) {
	t.Parallel()
	l, _ := newTestState(t, nil)
	if err := l.AddService(web()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := l.SyncFull(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("SyncFull(cancelled) = %v, want context.Canceled", err)
	}
	if err := l.SyncChanges(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("SyncChanges(cancelled) = %v, want context.Canceled", err)
	}
}
