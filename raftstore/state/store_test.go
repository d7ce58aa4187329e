package state

import (
	"testing"
	"time"

	"github.com/hashicorp/go-memdb"

	"github.com/trellismesh/trellis/raftstore/structs"
)

func reg(node, addr string, svc *structs.NodeService, checks ...*structs.HealthCheck) *structs.RegisterRequest {
	return &structs.RegisterRequest{Node: node, Address: addr, Service: svc, Checks: checks}
}

func svc(id, name string, tags ...string) *structs.NodeService {
	return &structs.NodeService{ID: id, Service: name, Tags: tags, Port: 80}
}

func chk(id, serviceID, status string) *structs.HealthCheck {
	return &structs.HealthCheck{CheckID: id, Name: id, ServiceID: serviceID, Status: status}
}

func mustRegister(t *testing.T, s *Store, idx uint64, req *structs.RegisterRequest) {
	t.Helper()
	if err := s.EnsureRegistration(idx, req); err != nil {
		t.Fatalf("EnsureRegistration(%d): %v", idx, err)
	}
}

// fired reports whether ws fires within a short time (a change already
// committed closes the channel at once).
func fired(ws memdb.WatchSet) bool {
	return !ws.Watch(time.After(50 * time.Millisecond))
}

func TestStore_RegisterAndRead(t *testing.T) {
	t.Parallel()
	s := New()
	mustRegister(t, s, 10, reg("n2", "10.0.0.2", svc("web-b", "web", "v1"), chk("web-b-check", "web-b", structs.HealthPassing)))
	mustRegister(t, s, 11, reg("n1", "10.0.0.1", svc("web-a", "web", "v2")))
	mustRegister(t, s, 12, reg("n1", "10.0.0.1", svc("db", "db", "primary"), chk("node-ok", "", structs.HealthWarning)))

	idx, nodes, err := s.Nodes(memdb.NewWatchSet())
	if err != nil || len(nodes) != 2 || nodes[0].Node != "n1" || idx != 11 {
		t.Fatalf("Nodes() = %d, %v, %v; want n1,n2 at 11", idx, nodes, err)
	}
	if nodes[0].CreateIndex != 11 || nodes[0].ModifyIndex != 11 {
		t.Errorf("node n1 indexes = %+v, want 11/11", nodes[0].RaftIndex)
	}

	idx, services, err := s.Services(memdb.NewWatchSet())
	if err != nil || idx != 12 || len(services) != 2 {
		t.Fatalf("Services() = %d, %v, %v", idx, services, err)
	}
	if got := services["web"]; len(got) != 2 || got[0] != "v1" || got[1] != "v2" {
		t.Errorf("web tags = %v, want [v1 v2]", got)
	}

	idx, sn, err := s.ServiceNodes(memdb.NewWatchSet(), "WEB", nil)
	// The node check registered at 12 applies to web-a on n1, so web moved at 12.
	if err != nil || idx != 12 || len(sn) != 2 {
		t.Fatalf("ServiceNodes(web) = %d, %d rows, %v; want 2 rows at 12", idx, len(sn), err)
	}
	idx2, csn, err := s.CheckServiceNodes(memdb.NewWatchSet(), "web", nil)
	if err != nil || len(csn) != 2 {
		t.Fatalf("CheckServiceNodes(web) = %d rows, %v", len(csn), err)
	}
	if idx2 != idx {
		t.Errorf("CheckServiceNodes index = %d, want %d as ServiceNodes", idx2, idx)
	}
	for i := range sn {
		if sn[i].Node.Node != csn[i].Node.Node || sn[i].Service.ID != csn[i].Service.ID {
			t.Errorf("row %d: catalog %s/%s, health %s/%s: order differs", i, sn[i].Node.Node, sn[i].Service.ID, csn[i].Node.Node, csn[i].Service.ID)
		}
	}
	if sn[0].Node.Node != "n1" || sn[1].Node.Node != "n2" {
		t.Errorf("order = %s, %s; want n1, n2", sn[0].Node.Node, sn[1].Node.Node)
	}
	if len(csn[0].Checks) != 1 || csn[0].Checks[0].CheckID != "node-ok" {
		t.Errorf("web-a checks = %v, want the node check", csn[0].Checks)
	}
	if len(csn[1].Checks) != 1 || csn[1].Checks[0].ServiceName != "web" || csn[1].Checks[0].ServiceTags[0] != "v1" {
		t.Errorf("web-b checks = %+v, want its service check with name and tags", csn[1].Checks)
	}

	_, tagged, _ := s.ServiceNodes(memdb.NewWatchSet(), "web", []string{"V2"})
	if len(tagged) != 1 || tagged[0].Service.ID != "web-a" {
		t.Errorf("ServiceNodes(web, tag V2) = %v, want web-a (tags match case-insensitively)", tagged)
	}

	_, ns, _ := s.NodeServices(memdb.NewWatchSet(), "n1")
	if ns == nil || len(ns.Services) != 2 {
		t.Fatalf("NodeServices(n1) = %+v", ns)
	}
	idx, missing, err := s.NodeServices(memdb.NewWatchSet(), "nope")
	if err != nil || missing != nil || idx != 1 {
		t.Errorf("NodeServices(nope) = %d, %v, %v; want 1, nil, nil", idx, missing, err)
	}

	_, inState, _ := s.ChecksInState(memdb.NewWatchSet(), structs.HealthWarning)
	if len(inState) != 1 || inState[0].CheckID != "node-ok" {
		t.Errorf("ChecksInState(warning) = %v", inState)
	}
	_, all, _ := s.ChecksInState(memdb.NewWatchSet(), structs.HealthAny)
	if len(all) != 2 {
		t.Errorf("ChecksInState(any) = %d checks, want 2", len(all))
	}
	_, sc, _ := s.ServiceChecks(memdb.NewWatchSet(), "web")
	if len(sc) != 1 || sc[0].CheckID != "web-b-check" {
		t.Errorf("ServiceChecks(web) = %v", sc)
	}
}

func TestStore_CheckForUnknownService(t *testing.T) {
	t.Parallel()
	s := New()
	err := s.EnsureRegistration(5, reg("n1", "10.0.0.1", nil, chk("c", "ghost", structs.HealthPassing)))
	if err == nil {
		t.Fatal("registering a check of an unknown service succeeded")
	}
	// Nothing of the failed transaction is visible.
	if _, nodes, _ := s.Nodes(nil); len(nodes) != 0 {
		t.Errorf("failed registration left nodes behind: %v", nodes)
	}
}

func TestStore_PerServiceIndexIsolation(t *testing.T) {
	t.Parallel()
	s := New()
	mustRegister(t, s, 10, reg("n1", "10.0.0.1", svc("web", "web"), chk("web-check", "web", structs.HealthPassing)))
	mustRegister(t, s, 11, reg("n2", "10.0.0.2", svc("db", "db"), chk("db-check", "db", structs.HealthPassing)))

	ws := memdb.NewWatchSet()
	idx, _, _ := s.CheckServiceNodes(ws, "web", nil)
	if idx != 10 {
		t.Fatalf("web index = %d, want 10", idx)
	}
	// A change to db on another node: web's watch stays asleep, its index put.
	mustRegister(t, s, 12, reg("n2", "10.0.0.2", nil, chk("db-check", "db", structs.HealthCritical)))
	mustRegister(t, s, 13, reg("n3", "10.0.0.3", svc("db2", "db")))
	if fired(ws) {
		t.Error("watch on web fired for changes to db")
	}
	if idx, _, _ := s.CheckServiceNodes(memdb.NewWatchSet(), "web", nil); idx != 10 {
		t.Errorf("web index after db changes = %d, want 10", idx)
	}
	// A change to web wakes it.
	mustRegister(t, s, 14, reg("n1", "10.0.0.1", nil, chk("web-check", "web", structs.HealthCritical)))
	if !fired(ws) {
		t.Error("watch on web did not fire for its own check change")
	}
	if idx, _, _ := s.CheckServiceNodes(memdb.NewWatchSet(), "web", nil); idx != 14 {
		t.Errorf("web index = %d, want 14", idx)
	}
}

func TestStore_NodeCheckAndNodeChangeMoveServices(t *testing.T) {
	t.Parallel()
	s := New()
	mustRegister(t, s, 10, reg("n1", "10.0.0.1", svc("web", "web")))
	mustRegister(t, s, 11, reg("n1", "10.0.0.1", svc("api", "api")))

	ws := memdb.NewWatchSet()
	s.CheckServiceNodes(ws, "web", nil)
	mustRegister(t, s, 12, reg("n1", "10.0.0.1", nil, chk("maint", "", structs.HealthCritical)))
	if !fired(ws) {
		t.Error("node check did not wake a watch on a service of the node")
	}
	if idx, _, _ := s.ServiceNodes(nil, "api", nil); idx != 12 {
		t.Errorf("api index = %d, want 12 after a node check", idx)
	}
	ws = memdb.NewWatchSet()
	s.ServiceNodes(ws, "web", nil)
	mustRegister(t, s, 13, reg("n1", "10.0.0.9", nil))
	if !fired(ws) {
		t.Error("node address change did not wake a watch on its service")
	}
}

func TestStore_NoOpWriteMovesNothing(t *testing.T) {
	t.Parallel()
	s := New()
	r := reg("n1", "10.0.0.1", svc("web", "web", "a"), chk("c1", "web", structs.HealthPassing))
	mustRegister(t, s, 10, r)
	ws := memdb.NewWatchSet()
	s.CheckServiceNodes(ws, "web", nil)
	s.Services(ws)
	s.Nodes(ws)
	s.ChecksInState(ws, structs.HealthAny)
	mustRegister(t, s, 11, reg("n1", "10.0.0.1", svc("web", "web", "a"), chk("c1", "web", structs.HealthPassing)))
	if fired(ws) {
		t.Error("an identical registration woke a watch")
	}
	if got := s.MaxIndex(); got != 10 {
		t.Errorf("MaxIndex = %d after a no-op write, want 10", got)
	}
}

func TestStore_StatusChangeDoesNotMoveServiceList(t *testing.T) {
	t.Parallel()
	s := New()
	mustRegister(t, s, 10, reg("n1", "10.0.0.1", svc("web", "web"), chk("c1", "web", structs.HealthPassing)))
	ws := memdb.NewWatchSet()
	s.Services(ws)
	mustRegister(t, s, 11, reg("n1", "10.0.0.1", nil, chk("c1", "web", structs.HealthCritical)))
	if fired(ws) {
		t.Error("a check status change woke catalog/services")
	}
}

func TestStore_Deletes(t *testing.T) {
	t.Parallel()
	s := New()
	mustRegister(t, s, 10, reg("n1", "10.0.0.1", svc("web", "web"), chk("c1", "web", structs.HealthPassing), chk("node", "", structs.HealthPassing)))
	mustRegister(t, s, 11, reg("n1", "10.0.0.1", svc("db", "db"), chk("c2", "db", structs.HealthPassing)))

	ws := memdb.NewWatchSet()
	s.ServiceNodes(ws, "web", nil)
	if err := s.DeleteService(12, "n1", "web"); err != nil {
		t.Fatal(err)
	}
	if !fired(ws) {
		t.Error("deleting web did not wake its watch")
	}
	idx, rows, _ := s.ServiceNodes(nil, "web", nil)
	if len(rows) != 0 || idx != 12 {
		t.Errorf("after delete: %d rows at %d; want none at 12 (index kept)", len(rows), idx)
	}
	if _, checks, _ := s.NodeChecks(nil, "n1"); len(checks) != 2 {
		t.Errorf("node checks after deleting web = %v, want node and c2", checks)
	}
	if err := s.DeleteCheck(13, "n1", "c2"); err != nil {
		t.Fatal(err)
	}
	if idx, _, _ := s.ServiceNodes(nil, "db", nil); idx != 13 {
		t.Errorf("db index after deleting its check = %d, want 13", idx)
	}
	// Idempotent deletes move nothing.
	if err := s.DeleteCheck(14, "n1", "c2"); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteService(14, "n1", "nope"); err != nil {
		t.Fatal(err)
	}
	if s.MaxIndex() != 13 {
		t.Errorf("MaxIndex = %d after no-op deletes, want 13", s.MaxIndex())
	}
	if err := s.DeleteNode(15, "N1"); err != nil {
		t.Fatal(err)
	}
	if _, nodes, _ := s.Nodes(nil); len(nodes) != 0 {
		t.Errorf("nodes after DeleteNode = %v", nodes)
	}
	if _, all, _ := s.ChecksInState(nil, structs.HealthAny); len(all) != 0 {
		t.Errorf("checks after DeleteNode = %v", all)
	}
	if idx, _, _ := s.ServiceNodes(nil, "db", nil); idx != 15 {
		t.Errorf("db index after DeleteNode = %d, want 15", idx)
	}
}

func TestStore_ServiceRenameUpdatesChecks(t *testing.T) {
	t.Parallel()
	s := New()
	mustRegister(t, s, 10, reg("n1", "10.0.0.1", svc("s1", "old", "t1"), chk("c1", "s1", structs.HealthPassing)))
	ws := memdb.NewWatchSet()
	s.ServiceNodes(ws, "old", nil)
	mustRegister(t, s, 11, reg("n1", "10.0.0.1", svc("s1", "new", "t2")))
	if !fired(ws) {
		t.Error("renaming did not wake the watch on the old name")
	}
	_, checks, _ := s.ServiceChecks(nil, "new")
	if len(checks) != 1 || checks[0].ServiceTags[0] != "t2" {
		t.Errorf("checks of renamed service = %+v", checks)
	}
	if _, checks, _ := s.ServiceChecks(nil, "old"); len(checks) != 0 {
		t.Errorf("old name still has checks: %v", checks)
	}
}

func TestStore_SnapshotRestore(t *testing.T) {
	t.Parallel()
	s := New()
	mustRegister(t, s, 10, reg("n1", "10.0.0.1", svc("web", "web", "a"), chk("c1", "web", structs.HealthPassing)))
	mustRegister(t, s, 11, reg("n2", "10.0.0.2", svc("db", "db"), chk("node", "", structs.HealthWarning)))
	if err := s.DeleteService(12, "n2", "db"); err != nil {
		t.Fatal(err)
	}

	r := NewRestore()
	if err := s.Snapshot().Walk(r.Add); err != nil {
		t.Fatal(err)
	}
	s2 := r.Commit()
	for _, key := range []string{"nodes", "services", "checks", "service.web", "service.db", "node.n2"} {
		if a, b := s.Index(key), s2.Index(key); a != b || a == 0 {
			t.Errorf("index %q: original %d, restored %d", key, a, b)
		}
	}
	_, a, _ := s.CheckServiceNodes(nil, "web", nil)
	_, b, _ := s2.CheckServiceNodes(nil, "web", nil)
	if len(a) != 1 || len(b) != 1 || a[0].Service.ModifyIndex != b[0].Service.ModifyIndex || len(b[0].Checks) != 1 {
		t.Errorf("restored web = %+v, original %+v", b, a)
	}
}

func TestStore_Abandon(t *testing.T) {
	t.Parallel()
	s := New()
	s.Abandon()
	s.Abandon() // a second call is harmless
	select {
	case <-s.AbandonCh():
	default:
		t.Fatal("AbandonCh not closed")
	}
}
