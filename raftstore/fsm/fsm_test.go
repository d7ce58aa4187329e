package fsm

import (
	"testing"

	"github.com/hashicorp/go-memdb"
	"github.com/hashicorp/raft"

	"github.com/trellismesh/trellis/raftstore/state"
	"github.com/trellismesh/trellis/raftstore/structs"
)

// TestMessageTypesPinned fails when a persisted type number changes: entries
// already in Raft logs would be applied by the wrong handler.
func TestMessageTypesPinned(t *testing.T) {
	pinned := map[structs.MessageType]uint8{
		structs.RegisterRequestType:    0,
		structs.DeregisterRequestType:  1,
		structs.BatchRequestType:       2,
		structs.CARequestType:          3,
		structs.IntentionRequestType:   4,
		structs.LeafRequestType:        5,
		structs.ConfigEntryRequestType: 6,
		structs.IgnoreUnknownTypeFlag:  128,
	}
	for typ, want := range pinned {
		if uint8(typ) != want {
			t.Errorf("%s = %d, want %d (values are persisted: never renumber)", typ, uint8(typ), want)
		}
	}
	if len(handlers) != 7 {
		t.Errorf("%d handlers; add the new type to this test's pinned table", len(handlers))
	}
}

func entry(t testing.TB, idx uint64, typ structs.MessageType, msg any) *raft.Log {
	t.Helper()
	buf, err := structs.Encode(typ, msg)
	if err != nil {
		t.Fatal(err)
	}
	return &raft.Log{Index: idx, Type: raft.LogCommand, Data: buf}
}

func TestFSM_ApplyAndSnapshotRestore(t *testing.T) {
	t.Parallel()
	f := New(nil)
	res := f.Apply(entry(t, 5, structs.RegisterRequestType, &structs.RegisterRequest{
		Node: "n1", Address: "10.0.0.1",
		Service: &structs.NodeService{ID: "web", Service: "web", Port: 80},
		Check:   &structs.HealthCheck{CheckID: "c", ServiceID: "web", Status: structs.HealthPassing},
	}))
	if res != nil {
		t.Fatalf("apply register = %v", res)
	}
	res = f.Apply(entry(t, 6, structs.RegisterRequestType, &structs.RegisterRequest{
		Node: "n1", Address: "10.0.0.1", Check: &structs.HealthCheck{CheckID: "x", ServiceID: "ghost"},
	}))
	if res == nil {
		t.Error("apply of a check for an unknown service returned no error")
	}

	snaps := raft.NewInmemSnapshotStore()
	snap, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	// A write after the snapshot is taken is not in it.
	f.Apply(entry(t, 7, structs.DeregisterRequestType, &structs.DeregisterRequest{Node: "n1", ServiceID: "web"}))
	sink, err := snaps.Create(raft.SnapshotVersionMax, 7, 1, raft.Configuration{}, 1, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := snap.Persist(sink); err != nil {
		t.Fatal(err)
	}
	snap.Release()

	old := f.State()
	ws := memdb.NewWatchSet()
	ws.Add(old.AbandonCh())
	_, rc, err := snaps.Open(sink.ID())
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Restore(rc); err != nil {
		t.Fatal(err)
	}
	if ws.Watch(nil) {
		t.Error("restore did not abandon the old store")
	}
	_, rows, _ := f.State().CheckServiceNodes(nil, "web", nil)
	if len(rows) != 1 || rows[0].Service.CreateIndex != 5 || len(rows[0].Checks) != 1 {
		t.Errorf("restored web = %+v", rows)
	}
	if got := f.State().Index("service.web"); got != 5 {
		t.Errorf("restored service.web index = %d, want 5", got)
	}

	// Deregister node.
	if res := f.Apply(entry(t, 8, structs.DeregisterRequestType, &structs.DeregisterRequest{Node: "n1"})); res != nil {
		t.Fatal(res)
	}
	if _, nodes, _ := f.State().Nodes(nil); len(nodes) != 0 {
		t.Errorf("nodes after deregister = %v", nodes)
	}
}

func TestFSM_Batch(t *testing.T) {
	t.Parallel()
	f := New(nil)
	res := f.Apply(entry(t, 9, structs.BatchRequestType, []state.Op{
		{Register: &structs.RegisterRequest{Node: "n1", Address: "a", Service: &structs.NodeService{ID: "web", Service: "web"}}},
		{Register: &structs.RegisterRequest{Node: "n1", Address: "a", Check: &structs.HealthCheck{CheckID: "c", ServiceID: "ghost"}}},
		{Register: &structs.RegisterRequest{Node: "n2", Address: "b", Service: &structs.NodeService{ID: "db", Service: "db"}}},
		{Deregister: &structs.DeregisterRequest{Node: "n2", ServiceID: "db"}},
	}))
	br, ok := res.(BatchResult)
	if !ok || len(br.Errors) != 4 || br.Errors[0] != nil || br.Errors[1] == nil || br.Errors[2] != nil || br.Errors[3] != nil {
		t.Fatalf("batch result = %#v", res)
	}
	if _, svcs, _ := f.State().Services(nil); len(svcs) != 1 || svcs["web"] == nil {
		t.Errorf("services after batch = %v", svcs)
	}
	if idx := f.State().Index("service.db"); idx != 9 {
		t.Errorf("service.db index = %d, want 9", idx)
	}
}

func TestFSM_UnknownType(t *testing.T) {
	t.Parallel()
	f := New(nil)
	// With the ignore flag an unknown entry is skipped.
	if res := f.Apply(&raft.Log{Index: 1, Type: raft.LogCommand, Data: []byte{byte(structs.IgnoreUnknownTypeFlag | 77), '{', '}'}}); res != nil {
		t.Errorf("ignorable unknown entry: %v", res)
	}
	defer func() {
		if recover() == nil {
			t.Error("an unknown entry type without the ignore flag did not panic")
		}
	}()
	f.Apply(&raft.Log{Index: 2, Type: raft.LogCommand, Data: []byte{77, '{', '}'}})
}

func TestFSM_RestoreRejectsBadSnapshot(t *testing.T) {
	t.Parallel()
	f := New(nil)
	for name, data := range map[string]string{
		"empty":      "",
		"bad format": `{"Format":99}`,
		"bad record": `{"Format":1}` + "\n" + `{}`,
		"not json":   `{"Format":1}` + "\n" + `garbage`,
	} {
		if err := f.Restore(nopCloser(data)); err == nil {
			t.Errorf("%s: Restore succeeded", name)
		}
	}
}

// FuzzDecode feeds arbitrary bytes as log entries: decoding must never panic,
// and entries that decode must apply without panicking.
func FuzzDecode(f *testing.F) {
	reg, _ := structs.Encode(structs.RegisterRequestType, &structs.RegisterRequest{
		Node: "n1", Address: "a", Service: &structs.NodeService{ID: "s", Service: "s"},
		Checks: structs.HealthChecks{{CheckID: "c", ServiceID: "s", Status: "passing"}},
	})
	dereg, _ := structs.Encode(structs.DeregisterRequestType, &structs.DeregisterRequest{Node: "n1", ServiceID: "s"})
	f.Add(reg)
	f.Add(dereg)
	f.Add([]byte{0})
	f.Add([]byte{1, 'n', 'u', 'l', 'l'})
	f.Fuzz(func(t *testing.T, data []byte) {
		if _, _, err := Decode(data); err != nil {
			return
		}
		fsm := New(nil)
		fsm.Apply(&raft.Log{Index: 1, Type: raft.LogCommand, Data: data})
	})
}
