package raftstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/hashicorp/go-memdb"

	"github.com/trellismesh/trellis/connect"
	"github.com/trellismesh/trellis/connect/chain"
	"github.com/trellismesh/trellis/connect/configentry"
	"github.com/trellismesh/trellis/connect/intentions"
	"github.com/trellismesh/trellis/raftstore/state"
	"github.com/trellismesh/trellis/raftstore/structs"
)

// sourceIntentionIDPrefix starts the ID of an intention that comes from a
// service-intentions entry: "ce:<destination>:<source>".
const sourceIntentionIDPrefix = "ce:"

// entryFieldError turns a validation error of configentry into the
// *structs.ValidationError the HTTP API answers with 400.
func entryFieldError(err error) error {
	var fe *configentry.FieldError
	if errors.As(err, &fe) {
		return structs.Invalid(fe.Field, "%s", fe.Msg)
	}
	var ve *structs.ValidationError
	if errors.As(err, &ve) {
		return err
	}
	return structs.Invalid("", "%v", err)
}

// copyEntry returns a private copy of e through its JSON form: exactly what
// the FSM will decode from the log.
func copyEntry(e configentry.Entry) (configentry.Entry, error) {
	b, err := json.Marshal(e)
	if err != nil {
		return nil, fmt.Errorf("encode config entry %s/%s: %w", e.GetKind(), e.GetName(), err)
	}
	c, err := configentry.DecodeJSON(b)
	if err != nil {
		return nil, entryFieldError(err)
	}
	return c, nil
}

// overlaySet is a Set with one entry replaced (or removed, when entry is
// nil): the state a write would leave.
type overlaySet struct {
	base  configentry.Set
	key   configentry.Key
	entry configentry.Entry
}

func (o overlaySet) is(kind, name string) bool {
	return kind == o.key.Kind && strings.EqualFold(name, o.key.Name)
}

func (o overlaySet) Get(kind, name string) configentry.Entry {
	if o.is(kind, name) {
		return o.entry
	}
	return o.base.Get(kind, name)
}

func (o overlaySet) List(kind string) []configentry.Entry {
	list := o.base.List(kind)
	if kind != o.key.Kind {
		return list
	}
	out := make([]configentry.Entry, 0, len(list)+1)
	for _, e := range list {
		if !o.is(e.GetKind(), e.GetName()) {
			out = append(out, e)
		}
	}
	if o.entry != nil {
		out = append(out, o.entry)
	}
	return out
}

func (s *Server) configEntryApply(_ context.Context, req *structs.ConfigEntryRequest, reply *structs.ConfigEntryApplyReply) error {
	if err := s.checkWrite(req.Datacenter); err != nil {
		return err
	}
	if req.Entry.Entry == nil {
		return structs.Invalid("Entry", "missing")
	}
	op := req.Op
	if op == "" {
		op = structs.ConfigEntryOpUpsert
	}
	if op != structs.ConfigEntryOpUpsert {
		return structs.Invalid("Op", "%q: ConfigEntry.Apply writes (%s); delete with ConfigEntry.Delete", req.Op, structs.ConfigEntryOpUpsert)
	}
	e, err := copyEntry(req.Entry.Entry)
	if err != nil {
		return err
	}
	e.Normalize()
	if err := e.Validate(); err != nil {
		return entryFieldError(err)
	}
	*e.GetRaftIndex() = configentry.RaftIndex{}
	key := configentry.KeyOf(e)

	s.meshWriteMu.Lock()
	defer s.meshWriteMu.Unlock()
	st := s.fsm.State()
	_, base, err := st.ConfigEntrySet(nil)
	if err != nil {
		return err
	}
	if err := configentry.Consistent(overlaySet{base: base, key: key, entry: e}, key); err != nil {
		return entryFieldError(err)
	}
	if key.Kind == configentry.ServiceIntentions {
		if err := s.refuseLegacyManaged(st, key.Name); err != nil {
			return err
		}
	}
	w := &structs.ConfigEntryRequest{Op: structs.ConfigEntryOpUpsert, Entry: configentry.Envelope{Entry: e}, CAS: req.CAS, Index: req.Index}
	idx, resp, err := s.applyEntry(structs.ConfigEntryRequestType, w)
	if err != nil {
		return err
	}
	applied, _ := resp.(bool)
	if applied {
		s.logger.Info("config entry written", "kind", key.Kind, "name", key.Name, "index", idx)
	}
	*reply = structs.ConfigEntryApplyReply{Applied: applied, Index: idx}
	return nil
}

// refuseLegacyManaged refuses (a validation error: the HTTP API's 400) a
// service-intentions entry for a destination that has intentions written
// through /v1/connect/intentions.
func (s *Server) refuseLegacyManaged(st *state.Store, dest string) error {
	_, legacy, err := st.Intentions(nil)
	if err != nil {
		return err
	}
	var pairs []string
	for _, ixn := range legacy {
		if strings.EqualFold(ixn.DestinationName, dest) {
			pairs = append(pairs, ixn.SourceName+" => "+ixn.DestinationName)
		}
	}
	if len(pairs) == 0 {
		return nil
	}
	return structs.Invalid("Name", "destination %s has intentions written through /v1/connect/intentions (%s); "+
		"a destination is managed either by a service-intentions config entry (trellis config write) or by "+
		"/v1/connect/intentions (trellis intention), never both: delete those intentions first, or keep using trellis intention",
		dest, strings.Join(pairs, ", "))
}

// managedByEntry refuses (a validation error) a legacy intention write for
// a destination that a service-intentions entry manages.
func managedByEntry(st *state.Store, dest string) error {
	_, e, err := st.ConfigEntry(nil, configentry.ServiceIntentions, dest)
	if err != nil {
		return err
	}
	if e != nil {
		return structs.Invalid("DestinationName", "destination %s is managed by the service-intentions config entry; change it with trellis config write",
			e.GetName())
	}
	return nil
}

func (s *Server) configEntryDelete(_ context.Context, req *structs.ConfigEntryRequest, reply *structs.ConfigEntryApplyReply) error {
	if err := s.checkWrite(req.Datacenter); err != nil {
		return err
	}
	e := req.Entry.Entry
	if e == nil {
		return structs.Invalid("Entry", "missing: give the Kind and Name of the entry to delete")
	}
	key := configentry.KeyOf(e)
	if !configentry.ValidKind(key.Kind) {
		return structs.Invalid("Kind", "unknown kind %q (want one of %s)", key.Kind, strings.Join(configentry.Kinds, ", "))
	}
	if key.Name == "" {
		return structs.Invalid("Name", "required")
	}
	stub, err := configentry.New(key.Kind)
	if err != nil {
		return entryFieldError(err)
	}
	raw, err := json.Marshal(struct{ Kind, Name string }{key.Kind, key.Name}) // JSON escaping: %q is Go's
	if err != nil {
		return fmt.Errorf("build the delete of %s: %w", key, err)
	}
	if err := json.Unmarshal(raw, stub); err != nil {
		return fmt.Errorf("build the delete of %s: %w", key, err)
	}

	s.meshWriteMu.Lock()
	defer s.meshWriteMu.Unlock()
	_, base, err := s.fsm.State().ConfigEntrySet(nil)
	if err != nil {
		return err
	}
	if base.Get(key.Kind, key.Name) != nil {
		if err := configentry.Consistent(overlaySet{base: base, key: key}, key); err != nil {
			return entryFieldError(err)
		}
	}
	w := &structs.ConfigEntryRequest{Op: structs.ConfigEntryOpDelete, Entry: configentry.Envelope{Entry: stub}, CAS: req.CAS, Index: req.Index}
	idx, resp, err := s.applyEntry(structs.ConfigEntryRequestType, w)
	if err != nil {
		return err
	}
	applied, _ := resp.(bool)
	if applied {
		s.logger.Info("config entry deleted", "kind", key.Kind, "name", key.Name, "index", idx)
	}
	*reply = structs.ConfigEntryApplyReply{Applied: applied, Index: idx}
	return nil
}

func checkKind(kind string, allowEmpty bool) error {
	if (kind == "" && allowEmpty) || configentry.ValidKind(kind) {
		return nil
	}
	return structs.Invalid("Kind", "unknown kind %q (want one of %s)", kind, strings.Join(configentry.Kinds, ", "))
}

func (s *Server) configEntryGet(ctx context.Context, req *structs.ConfigEntryQuery, reply *structs.ConfigEntryResponse) error {
	if err := checkKind(req.Kind, false); err != nil {
		return err
	}
	if req.Name == "" {
		return structs.Invalid("Name", "required")
	}
	return s.read(ctx, req.Datacenter, &req.QueryOptions, &reply.QueryMeta, func(ws memdb.WatchSet, st *state.Store) (uint64, error) {
		idx, e, err := st.ConfigEntry(ws, req.Kind, req.Name)
		reply.Entry = nil
		if e != nil {
			reply.Entry = &configentry.Envelope{Entry: e}
		}
		return idx, err
	})
}

func (s *Server) configEntryList(ctx context.Context, req *structs.ConfigEntryQuery, reply *structs.IndexedConfigEntries) error {
	if err := checkKind(req.Kind, true); err != nil {
		return err
	}
	return s.read(ctx, req.Datacenter, &req.QueryOptions, &reply.QueryMeta, func(ws memdb.WatchSet, st *state.Store) (uint64, error) {
		idx, list, err := st.ConfigEntries(ws, req.Kind)
		reply.Entries = make([]configentry.Envelope, 0, len(list))
		for _, e := range list {
			reply.Entries = append(reply.Entries, configentry.Envelope{Entry: e})
		}
		return idx, err
	})
}

func (s *Server) discoveryChainGet(ctx context.Context, req *structs.DiscoveryChainRequest, reply *structs.DiscoveryChainResponse) error {
	if req.Name == "" {
		return structs.Invalid("Name", "required: the service whose chain to compile")
	}
	if err := connect.ValidateServiceName("Name", req.Name); err != nil || req.Name == connect.Wildcard {
		return structs.Invalid("Name", "%q is not a service name", req.Name)
	}
	return s.read(ctx, req.Datacenter, &req.QueryOptions, &reply.QueryMeta, func(ws memdb.WatchSet, st *state.Store) (uint64, error) {
		idx, set, err := st.ConfigEntrySet(ws)
		if err != nil {
			return 0, err
		}
		c, err := chain.Compile(chain.Request{ServiceName: req.Name, Datacenter: s.cfg.Datacenter, Entries: set})
		if err != nil {
			return 0, fmt.Errorf("compile the discovery chain of %s: %w", req.Name, err)
		}
		reply.Chain = c
		return idx, nil
	})
}

// --- Intentions of service-intentions entries ---

// entryIntentions returns the sources of service-intentions entries as
// intentions, so that every reader of intentions sees them.
func entryIntentions(entries []configentry.Entry) []*connect.Intention {
	var out []*connect.Intention
	for _, e := range entries {
		si, ok := e.(*configentry.ServiceIntentionsConfigEntry)
		if !ok {
			continue
		}
		for _, src := range si.Sources {
			if src != nil {
				out = append(out, sourceIntention(si, src))
			}
		}
	}
	return out
}

func sourceIntention(e *configentry.ServiceIntentionsConfigEntry, src *configentry.SourceIntention) *connect.Intention {
	return &connect.Intention{
		ID:         sourceIntentionIDPrefix + e.Name + ":" + src.Name,
		SourceName: src.Name, DestinationName: e.Name,
		Action: src.Action, Permissions: src.Permissions,
		Description: src.Description, Meta: src.LegacyMeta,
		Precedence:  connect.ComputePrecedence(src.Name, e.Name),
		CreateIndex: e.CreateIndex, ModifyIndex: e.ModifyIndex,
	}
}

// allIntentions returns the legacy intentions and those of
// service-intentions entries, in precedence order, with the higher of the
// two indexes (both watched in ws).
func allIntentions(ws memdb.WatchSet, st *state.Store) (uint64, []*connect.Intention, error) {
	idx, list, err := st.Intentions(ws)
	if err != nil {
		return 0, nil, err
	}
	cidx, entries, err := st.ConfigEntries(ws, configentry.ServiceIntentions)
	if err != nil {
		return 0, nil, err
	}
	if extra := entryIntentions(entries); len(extra) > 0 {
		list = append(append(make([]*connect.Intention, 0, len(list)+len(extra)), list...), extra...)
		intentions.Sort(list)
	}
	return max(idx, cidx), list, nil
}

// intentionApplyChecked is Intention.Apply with the rule that a
// destination managed by a service-intentions entry takes no legacy
// intention writes.
func (s *Server) intentionApplyChecked(ctx context.Context, req *structs.IntentionRequest, reply *structs.IntentionApplyReply) error {
	if err := s.checkWrite(req.Datacenter); err != nil {
		return err
	}
	if req.Intention == nil {
		return s.intentionApply(ctx, req, reply)
	}
	in := req.Intention
	if strings.HasPrefix(in.ID, sourceIntentionIDPrefix) {
		dest, _, _ := strings.Cut(strings.TrimPrefix(in.ID, sourceIntentionIDPrefix), ":")
		return structs.Invalid("ID", "intention %s comes from the service-intentions config entry %s; change it with trellis config write",
			in.ID, dest)
	}
	s.meshWriteMu.Lock()
	defer s.meshWriteMu.Unlock()
	st := s.fsm.State()
	dest := in.DestinationName
	if dest == "" && in.ID != "" {
		if _, existing, err := st.IntentionByID(nil, in.ID); err != nil {
			return err
		} else if existing != nil {
			dest = existing.DestinationName
		}
	}
	if dest != "" {
		if err := managedByEntry(st, dest); err != nil {
			return err
		}
	}
	return s.intentionApply(ctx, req, reply)
}

// intentionListAll is Intention.List over legacy intentions and
// service-intentions entries.
func (s *Server) intentionListAll(ctx context.Context, req *structs.DCSpecificRequest, reply *structs.IndexedIntentions) error {
	return s.read(ctx, req.Datacenter, &req.QueryOptions, &reply.QueryMeta, func(ws memdb.WatchSet, st *state.Store) (uint64, error) {
		idx, list, err := allIntentions(ws, st)
		reply.Intentions = list
		return idx, err
	})
}

// intentionGetAll is Intention.Get that also finds the intentions of
// service-intentions entries (by their "ce:" ID, or by source and
// destination).
func (s *Server) intentionGetAll(ctx context.Context, req *structs.IntentionQueryRequest, reply *structs.IndexedIntentions) error {
	if req.IntentionID != "" && !strings.HasPrefix(req.IntentionID, sourceIntentionIDPrefix) {
		return s.intentionGet(ctx, req, reply)
	}
	if req.IntentionID == "" {
		for _, f := range []struct{ name, v string }{{"SourceName", req.SourceName}, {"DestinationName", req.DestinationName}} {
			if err := connect.ValidateServiceName(f.name, f.v); err != nil {
				return fieldError("", err)
			}
		}
	}
	return s.read(ctx, req.Datacenter, &req.QueryOptions, &reply.QueryMeta, func(ws memdb.WatchSet, st *state.Store) (uint64, error) {
		idx, list, err := allIntentions(ws, st)
		if err != nil {
			return 0, err
		}
		reply.Intentions = nil
		for _, ixn := range list {
			if (req.IntentionID != "" && ixn.ID == req.IntentionID) ||
				(req.IntentionID == "" && strings.EqualFold(ixn.SourceName, req.SourceName) && strings.EqualFold(ixn.DestinationName, req.DestinationName)) {
				reply.Intentions = []*connect.Intention{ixn}
				break
			}
		}
		return idx, nil
	})
}

// intentionMatchAll is Intention.Match over legacy intentions and
// service-intentions entries; its index moves with either.
func (s *Server) intentionMatchAll(ctx context.Context, req *structs.IntentionMatchRequest, reply *structs.IndexedIntentionMatches) error {
	if req.By != "source" && req.By != "destination" {
		return structs.Invalid("By", "%q is not source or destination", req.By)
	}
	if len(req.Names) == 0 {
		return structs.Invalid("Names", "at least one name is required")
	}
	for i, n := range req.Names {
		if err := connect.ValidateServiceName(fmt.Sprintf("Names[%d]", i), n); err != nil {
			return fieldError("", err)
		}
	}
	return s.read(ctx, req.Datacenter, &req.QueryOptions, &reply.QueryMeta, func(ws memdb.WatchSet, st *state.Store) (uint64, error) {
		idx, list, err := allIntentions(ws, st)
		if err != nil {
			return 0, err
		}
		set := intentions.NewSet(list)
		reply.Matches = make([][]*connect.Intention, len(req.Names))
		for i, n := range req.Names {
			if reply.Matches[i], err = set.Match(req.By, n); err != nil {
				return 0, err
			}
		}
		return idx, nil
	})
}
