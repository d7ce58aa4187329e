package raftstore

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/trellismesh/trellis/connect"
	"github.com/trellismesh/trellis/connect/configentry"
	"github.com/trellismesh/trellis/raftstore/fsm"
	"github.com/trellismesh/trellis/raftstore/state"
	"github.com/trellismesh/trellis/raftstore/structs"
)

func applyEntry(t *testing.T, s *Server, e configentry.Entry, cas bool, index uint64) structs.ConfigEntryApplyReply {
	t.Helper()
	var reply structs.ConfigEntryApplyReply
	err := s.RPC(t.Context(), structs.MethodConfigEntryApply, &structs.ConfigEntryRequest{
		Op: structs.ConfigEntryOpUpsert, Entry: configentry.Envelope{Entry: e}, CAS: cas, Index: index,
	}, &reply)
	if err != nil {
		t.Fatalf("apply %s/%s: %v", e.GetKind(), e.GetName(), err)
	}
	return reply
}

func deleteEntry(t *testing.T, s *Server, kind, name string, cas bool, index uint64) structs.ConfigEntryApplyReply {
	t.Helper()
	stub, err := configentry.New(kind)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal([]byte(`{"Name":"`+name+`"}`), stub); err != nil {
		t.Fatal(err)
	}
	var reply structs.ConfigEntryApplyReply
	if err := s.RPC(t.Context(), structs.MethodConfigEntryDelete, &structs.ConfigEntryRequest{
		Op: structs.ConfigEntryOpDelete, Entry: configentry.Envelope{Entry: stub}, CAS: cas, Index: index,
	}, &reply); err != nil {
		t.Fatalf("delete %s/%s: %v", kind, name, err)
	}
	return reply
}

func getEntry(t *testing.T, s *Server, kind, name string) configentry.Entry {
	t.Helper()
	var reply structs.ConfigEntryResponse
	if err := s.RPC(t.Context(), structs.MethodConfigEntryGet, &structs.ConfigEntryQuery{Kind: kind, Name: name}, &reply); err != nil {
		t.Fatalf("get %s/%s: %v", kind, name, err)
	}
	if reply.Index == 0 {
		t.Errorf("get %s/%s: index 0", kind, name)
	}
	if reply.Entry == nil {
		return nil
	}
	return reply.Entry.Entry
}

func listEntries(t *testing.T, s *Server, kind string) []string {
	t.Helper()
	var reply structs.IndexedConfigEntries
	if err := s.RPC(t.Context(), structs.MethodConfigEntryList, &structs.ConfigEntryQuery{Kind: kind}, &reply); err != nil {
		t.Fatalf("list %q: %v", kind, err)
	}
	var out []string
	for _, e := range reply.Entries {
		out = append(out, e.Entry.GetKind()+"/"+e.Entry.GetName())
	}
	return out
}

func TestConfigEntry_ApplyGetListDelete(t *testing.T) {
	t.Parallel()
	s := startServer(t, "")
	r := applyEntry(t, s, &configentry.ServiceConfigEntry{Kind: configentry.ServiceDefaults, Name: "web", Protocol: "http"}, false, 0)
	if !r.Applied || r.Index == 0 {
		t.Fatalf("apply = %+v", r)
	}
	applyEntry(t, s, &configentry.ServiceConfigEntry{Kind: configentry.ServiceDefaults, Name: "api", Protocol: "http"}, false, 0)
	applyEntry(t, s, &configentry.ProxyConfigEntry{Kind: configentry.ProxyDefaults, Name: configentry.ProxyDefaultsName, Config: map[string]any{"protocol": "tcp"}}, false, 0)
	applyEntry(t, s, &configentry.ServiceResolverConfigEntry{Kind: configentry.ServiceResolver, Name: "web", ConnectTimeout: configentry.Duration(3 * time.Second)}, false, 0)

	got, ok := getEntry(t, s, configentry.ServiceDefaults, "web").(*configentry.ServiceConfigEntry)
	if !ok || got.Protocol != "http" || got.CreateIndex != r.Index || got.ModifyIndex != r.Index {
		t.Fatalf("get web = %+v (want protocol http at index %d)", got, r.Index)
	}
	if e := getEntry(t, s, configentry.ServiceDefaults, "nope"); e != nil {
		t.Errorf("get of a missing entry = %+v", e)
	}
	if l := listEntries(t, s, configentry.ServiceDefaults); !reflect.DeepEqual(l, []string{"service-defaults/api", "service-defaults/web"}) {
		t.Errorf("list service-defaults = %v", l)
	}
	want := []string{"proxy-defaults/global", "service-defaults/api", "service-defaults/web", "service-resolver/web"}
	if l := listEntries(t, s, ""); !reflect.DeepEqual(l, want) {
		t.Errorf("list all = %v, want %v", l, want)
	}

	// CAS: 0 means "must not exist"; otherwise the ModifyIndex must match.
	if r2 := applyEntry(t, s, &configentry.ServiceConfigEntry{Kind: configentry.ServiceDefaults, Name: "web", Protocol: "grpc"}, true, 0); r2.Applied {
		t.Error("CAS 0 over an existing entry applied")
	}
	if r2 := applyEntry(t, s, &configentry.ServiceConfigEntry{Kind: configentry.ServiceDefaults, Name: "web", Protocol: "grpc"}, true, r.Index+100); r2.Applied {
		t.Error("CAS with a wrong index applied")
	}
	r3 := applyEntry(t, s, &configentry.ServiceConfigEntry{Kind: configentry.ServiceDefaults, Name: "web", Protocol: "http2"}, true, r.Index)
	if !r3.Applied {
		t.Fatal("CAS with the right index did not apply")
	}
	got = getEntry(t, s, configentry.ServiceDefaults, "web").(*configentry.ServiceConfigEntry)
	if got.Protocol != "http2" || got.CreateIndex != r.Index || got.ModifyIndex != r3.Index {
		t.Errorf("after CAS: %+v (want create %d, modify %d)", got, r.Index, r3.Index)
	}
	if d := deleteEntry(t, s, configentry.ServiceDefaults, "web", true, r.Index); d.Applied {
		t.Error("delete CAS with a stale index applied")
	}
	if d := deleteEntry(t, s, configentry.ServiceDefaults, "web", true, r3.Index); !d.Applied {
		t.Error("delete CAS with the right index did not apply")
	}
	if e := getEntry(t, s, configentry.ServiceDefaults, "web"); e != nil {
		t.Errorf("deleted entry still there: %+v", e)
	}
	if d := deleteEntry(t, s, configentry.ServiceDefaults, "web", false, 0); !d.Applied {
		t.Error("deleting a missing entry reported not applied")
	}
}

func TestConfigEntry_Refused(t *testing.T) {
	t.Parallel()
	s := startServer(t, "")
	var ve *structs.ValidationError
	err := s.RPC(t.Context(), structs.MethodConfigEntryGet, &structs.ConfigEntryQuery{Kind: "service-nope", Name: "x"}, &structs.ConfigEntryResponse{})
	if !errors.As(err, &ve) || ve.Field != "Kind" || !strings.Contains(err.Error(), "service-nope") {
		t.Errorf("get of an unknown kind = %v, want a validation error naming it", err)
	}
	err = s.RPC(t.Context(), structs.MethodConfigEntryList, &structs.ConfigEntryQuery{Kind: "bogus"}, &structs.IndexedConfigEntries{})
	if !errors.As(err, &ve) || !strings.Contains(err.Error(), "bogus") {
		t.Errorf("list of an unknown kind = %v", err)
	}
	err = s.RPC(t.Context(), structs.MethodConfigEntryApply, &structs.ConfigEntryRequest{}, &structs.ConfigEntryApplyReply{})
	if !errors.As(err, &ve) {
		t.Errorf("apply of no entry = %v, want a validation error", err)
	}
	err = s.RPC(t.Context(), structs.MethodDiscoveryChainGet, &structs.DiscoveryChainRequest{}, &structs.DiscoveryChainResponse{})
	if !errors.As(err, &ve) {
		t.Errorf("chain of no service = %v, want a validation error", err)
	}

	apply := func(e configentry.Entry) error {
		return s.RPC(t.Context(), structs.MethodConfigEntryApply, &structs.ConfigEntryRequest{Entry: configentry.Envelope{Entry: e}}, &structs.ConfigEntryApplyReply{})
	}
	// Alone: a field error names the field.
	err = apply(&configentry.ServiceConfigEntry{Kind: configentry.ServiceDefaults, Name: "web", Protocol: "carrier-pigeon"})
	if !errors.As(err, &ve) || ve.Field != "Protocol" {
		t.Errorf("bad protocol = %v, want a validation error on Protocol", err)
	}
	// Against the others: a router to a tcp service from an http one.
	applyEntry(t, s, &configentry.ServiceConfigEntry{Kind: configentry.ServiceDefaults, Name: "web", Protocol: "http"}, false, 0)
	applyEntry(t, s, &configentry.ServiceConfigEntry{Kind: configentry.ServiceDefaults, Name: "admin", Protocol: "http"}, false, 0)
	router := &configentry.ServiceRouterConfigEntry{Kind: configentry.ServiceRouter, Name: "web", Routes: []configentry.ServiceRoute{{
		Match:       &configentry.ServiceRouteMatch{HTTP: &configentry.ServiceRouteHTTPMatch{PathPrefix: "/admin"}},
		Destination: &configentry.ServiceRouteDestination{Service: "db"},
	}}}
	if err := apply(router); !errors.As(err, &ve) || !strings.HasPrefix(ve.Field, "Routes[0]") {
		t.Errorf("router to a tcp service = %v, want a validation error on Routes[0]", err)
	}
	router.Routes[0].Destination.Service = "admin"
	applyEntry(t, s, router, false, 0)
	// A delete that would leave the router inconsistent is refused too.
	stub := &configentry.ServiceConfigEntry{Kind: configentry.ServiceDefaults, Name: "admin"}
	err = s.RPC(t.Context(), structs.MethodConfigEntryDelete, &structs.ConfigEntryRequest{Op: structs.ConfigEntryOpDelete, Entry: configentry.Envelope{Entry: stub}}, &structs.ConfigEntryApplyReply{})
	if !errors.As(err, &ve) {
		t.Errorf("delete of admin's protocol under a router = %v, want a validation error", err)
	}
	if getEntry(t, s, configentry.ServiceDefaults, "admin") == nil {
		t.Error("a refused delete deleted")
	}
}

func TestConfigEntry_BlockingList(t *testing.T) {
	t.Parallel()
	s := startServer(t, "")
	r := applyEntry(t, s, &configentry.ServiceConfigEntry{Kind: configentry.ServiceDefaults, Name: "web"}, false, 0)
	type res struct {
		reply structs.IndexedConfigEntries
		err   error
	}
	done := make(chan res, 1)
	go func() {
		var reply structs.IndexedConfigEntries
		err := s.RPC(t.Context(), structs.MethodConfigEntryList, &structs.ConfigEntryQuery{
			Kind: configentry.ServiceDefaults, QueryOptions: structs.QueryOptions{MinQueryIndex: r.Index, MaxQueryTime: 10 * time.Second},
		}, &reply)
		done <- res{reply, err}
	}()
	r2 := applyEntry(t, s, &configentry.ServiceConfigEntry{Kind: configentry.ServiceDefaults, Name: "db"}, false, 0)
	select {
	case got := <-done:
		if got.err != nil || got.reply.Index < r2.Index || len(got.reply.Entries) != 2 {
			t.Errorf("blocking list = %+v, %v (want 2 entries at index %d)", got.reply, got.err, r2.Index)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the blocking list did not wake on a write")
	}
}

func TestConfigEntry_SnapshotRestore(t *testing.T) {
	t.Parallel()
	s := startServer(t, "")
	applyEntry(t, s, &configentry.ServiceConfigEntry{Kind: configentry.ServiceDefaults, Name: "web", Protocol: "http"}, false, 0)
	applyEntry(t, s, &configentry.ServiceConfigEntry{Kind: configentry.ServiceDefaults, Name: "admin", Protocol: "http"}, false, 0)
	applyEntry(t, s, &configentry.ServiceRouterConfigEntry{Kind: configentry.ServiceRouter, Name: "web", Routes: []configentry.ServiceRoute{{
		Match:       &configentry.ServiceRouteMatch{HTTP: &configentry.ServiceRouteHTTPMatch{PathPrefix: "/admin"}},
		Destination: &configentry.ServiceRouteDestination{Service: "admin"},
	}}}, false, 0)
	applyEntry(t, s, &configentry.ServiceIntentionsConfigEntry{Kind: configentry.ServiceIntentions, Name: "web", Sources: []*configentry.SourceIntention{
		{Name: "api", Action: connect.IntentionAllow},
	}}, false, 0)

	orig := s.fsm.State()
	r := state.NewRestore()
	if err := orig.Snapshot().Walk(r.Add); err != nil {
		t.Fatal(err)
	}
	restored := r.Commit()
	_, a, err := orig.ConfigEntries(nil, "")
	if err != nil {
		t.Fatal(err)
	}
	_, b, err := restored.ConfigEntries(nil, "")
	if err != nil {
		t.Fatal(err)
	}
	if len(a) != 4 || !reflect.DeepEqual(a, b) {
		t.Errorf("restored entries differ:\n original %#v\n restored %#v", a, b)
	}
	if x, y := orig.Index("config-entries"), restored.Index("config-entries"); x != y || x == 0 {
		t.Errorf("config entries index: original %d, restored %d", x, y)
	}

	// The same through the FSM's own snapshot stream.
	snap, err := s.fsm.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	sink := &memSink{}
	if err := snap.Persist(sink); err != nil {
		t.Fatal(err)
	}
	f := fsm.New(nil)
	if err := f.Restore(sink); err != nil {
		t.Fatal(err)
	}
	if _, c, _ := f.State().ConfigEntries(nil, ""); !reflect.DeepEqual(a, c) {
		t.Errorf("FSM restore differs: %#v", c)
	}
}

// memSink is a raft.SnapshotSink in memory that reads back as what was
// written.
type memSink struct {
	strings.Builder
	r *strings.Reader
}

func (m *memSink) ID() string    { return "mem" }
func (m *memSink) Cancel() error { return nil }
func (m *memSink) Close() error  { return nil }
func (m *memSink) Read(p []byte) (int, error) {
	if m.r == nil {
		m.r = strings.NewReader(m.String())
	}
	return m.r.Read(p)
}

func TestConfigEntry_FSMNeverPanicsOnABadEntry(t *testing.T) {
	t.Parallel()
	f := fsm.New(nil)
	for i, body := range []string{`{`, `{"Op":"upsert","Entry":null}`, `{"Op":"upsert","Entry":{"Kind":"nope","Name":"x"}}`,
		`{"Op":"upsert","Entry":{"Kind":"service-defaults"}}`, `{"Op":"frob","Entry":{"Kind":"service-defaults","Name":"x"}}`,
		`{"Op":"upsert","Entry":{"Kind":"service-defaults","Name":"x","Unknown":1}}`} {
		data := append([]byte{byte(structs.ConfigEntryRequestType)}, body...)
		res := f.Apply(&raft.Log{Index: uint64(i + 1), Type: raft.LogCommand, Data: data})
		if _, ok := res.(error); !ok {
			t.Errorf("apply %s = %v, want an error", body, res)
		}
	}
	if _, list, _ := f.State().ConfigEntries(nil, ""); len(list) != 0 {
		t.Errorf("bad entries stored: %v", list)
	}
}

func TestConfigEntry_ServiceIntentionsAndLegacyIntentions(t *testing.T) {
	t.Parallel()
	s := startServer(t, "")
	// A legacy intention for db: db cannot get a service-intentions entry.
	var ir structs.IntentionApplyReply
	if err := s.RPC(t.Context(), structs.MethodIntentionApply, &structs.IntentionRequest{Op: structs.IntentionOpCreate,
		Intention: &connect.Intention{SourceName: "web", DestinationName: "db", Action: connect.IntentionAllow}}, &ir); err != nil {
		t.Fatal(err)
	}
	err := s.RPC(t.Context(), structs.MethodConfigEntryApply, &structs.ConfigEntryRequest{Entry: configentry.Envelope{Entry: &configentry.ServiceIntentionsConfigEntry{
		Kind: configentry.ServiceIntentions, Name: "db", Sources: []*configentry.SourceIntention{{Name: "api", Action: connect.IntentionDeny}},
	}}}, &structs.ConfigEntryApplyReply{})
	var ve *structs.ValidationError
	if !errors.As(err, &ve) || !strings.Contains(err.Error(), "/v1/connect/intentions") || !strings.Contains(err.Error(), "config write") {
		t.Errorf("service-intentions over legacy intentions = %v, want a validation error naming both ways", err)
	}

	// A service-intentions entry for api: no legacy intention for api.
	r := applyEntry(t, s, &configentry.ServiceIntentionsConfigEntry{Kind: configentry.ServiceIntentions, Name: "api", Sources: []*configentry.SourceIntention{
		{Name: "web", Action: connect.IntentionAllow, Description: "web calls api"},
		{Name: "*", Action: connect.IntentionDeny},
	}}, false, 0)
	err = s.RPC(t.Context(), structs.MethodIntentionApply, &structs.IntentionRequest{Op: structs.IntentionOpUpsert,
		Intention: &connect.Intention{SourceName: "batch", DestinationName: "api", Action: connect.IntentionAllow}}, &ir)
	if !errors.As(err, &ve) || !strings.Contains(err.Error(), "destination api is managed by the service-intentions config entry; change it with trellis config write") {
		t.Errorf("legacy intention over a service-intentions entry = %v", err)
	}
	err = s.RPC(t.Context(), structs.MethodIntentionApply, &structs.IntentionRequest{Op: structs.IntentionOpDelete,
		Intention: &connect.Intention{ID: "ce:api:web"}}, &ir)
	if !errors.As(err, &ve) || !strings.Contains(err.Error(), "trellis config write") {
		t.Errorf("legacy delete of an entry's intention = %v, want a validation error", err)
	}

	// List, Get and Match see the entry's sources as intentions.
	var list structs.IndexedIntentions
	if err := s.RPC(t.Context(), structs.MethodIntentionList, &structs.DCSpecificRequest{}, &list); err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, i := range list.Intentions {
		ids = append(ids, i.ID)
	}
	if len(list.Intentions) != 3 || list.Intentions[0].ID != "ce:api:web" || list.Intentions[0].Precedence != connect.PrecedenceExactExact ||
		list.Intentions[0].Description != "web calls api" || list.Index < r.Index {
		t.Errorf("list = %v at %d, want the entry's sources first", ids, list.Index)
	}
	var got structs.IndexedIntentions
	if err := s.RPC(t.Context(), structs.MethodIntentionGet, &structs.IntentionQueryRequest{SourceName: "*", DestinationName: "api"}, &got); err != nil ||
		len(got.Intentions) != 1 || got.Intentions[0].Action != connect.IntentionDeny || got.Intentions[0].Precedence != connect.PrecedenceWildcardSrcExact {
		t.Errorf("get * => api = %+v, %v", got.Intentions, err)
	}
	if err := s.RPC(t.Context(), structs.MethodIntentionGet, &structs.IntentionQueryRequest{IntentionID: "ce:api:web"}, &got); err != nil || len(got.Intentions) != 1 {
		t.Errorf("get by ce: ID = %+v, %v", got.Intentions, err)
	}
	var m structs.IndexedIntentionMatches
	if err := s.RPC(t.Context(), structs.MethodIntentionMatch, &structs.IntentionMatchRequest{By: "destination", Names: []string{"api"}}, &m); err != nil ||
		len(m.Matches) != 1 || len(m.Matches[0]) != 2 {
		t.Fatalf("match api = %+v, %v", m.Matches, err)
	}

	// A blocking match wakes when the entry changes.
	done := make(chan structs.IndexedIntentionMatches, 1)
	go func() {
		var reply structs.IndexedIntentionMatches
		_ = s.RPC(t.Context(), structs.MethodIntentionMatch, &structs.IntentionMatchRequest{By: "destination", Names: []string{"api"},
			QueryOptions: structs.QueryOptions{MinQueryIndex: m.Index, MaxQueryTime: 10 * time.Second}}, &reply)
		done <- reply
	}()
	r2 := applyEntry(t, s, &configentry.ServiceIntentionsConfigEntry{Kind: configentry.ServiceIntentions, Name: "api", Sources: []*configentry.SourceIntention{
		{Name: "web", Action: connect.IntentionDeny},
	}}, false, 0)
	select {
	case got := <-done:
		if got.Index < r2.Index || len(got.Matches) != 1 || len(got.Matches[0]) != 1 || got.Matches[0][0].Action != connect.IntentionDeny {
			t.Errorf("blocking match = %+v at %d", got.Matches, got.Index)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the blocking match did not wake on a config entry write")
	}

	// Once the entry is gone, legacy intentions for api are welcome again.
	deleteEntry(t, s, configentry.ServiceIntentions, "api", false, 0)
	if err := s.RPC(t.Context(), structs.MethodIntentionApply, &structs.IntentionRequest{Op: structs.IntentionOpUpsert,
		Intention: &connect.Intention{SourceName: "batch", DestinationName: "api", Action: connect.IntentionAllow}}, &ir); err != nil {
		t.Errorf("legacy intention after the entry was deleted: %v", err)
	}
}

func TestDiscoveryChain_GetBlocks(t *testing.T) {
	t.Parallel()
	s := startServer(t, "")
	var reply structs.DiscoveryChainResponse
	if err := s.RPC(t.Context(), structs.MethodDiscoveryChainGet, &structs.DiscoveryChainRequest{Name: "web"}, &reply); err != nil {
		t.Fatal(err)
	}
	if reply.Chain == nil || reply.Chain.ServiceName != "web" || !reply.Chain.Default || reply.Chain.Datacenter != "dc1" {
		t.Fatalf("default chain = %+v", reply.Chain)
	}
	done := make(chan structs.DiscoveryChainResponse, 1)
	go func() {
		var r structs.DiscoveryChainResponse
		_ = s.RPC(t.Context(), structs.MethodDiscoveryChainGet, &structs.DiscoveryChainRequest{Name: "web",
			QueryOptions: structs.QueryOptions{MinQueryIndex: reply.Index, MaxQueryTime: 10 * time.Second}}, &r)
		done <- r
	}()
	w := applyEntry(t, s, &configentry.ServiceResolverConfigEntry{Kind: configentry.ServiceResolver, Name: "web",
		Redirect: &configentry.ServiceResolverRedirect{Service: "web2"}}, false, 0)
	select {
	case got := <-done:
		if got.Chain == nil || got.Index < w.Index || got.Chain.Default {
			t.Errorf("chain after a resolver = %+v at %d", got.Chain, got.Index)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the blocking chain query did not wake on a config entry write")
	}
}
