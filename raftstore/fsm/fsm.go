// Package fsm applies the Raft log to the state store: it is Trellis's
// raft.FSM. Each log entry is one structs.MessageType byte followed by its
// JSON body; a dispatch table picks the handler.
//
// Apply is deterministic: it reads nothing but the entry and the store (no
// clocks, no randomness, no map order). Snapshot takes a read transaction and
// returns at once; Persist streams it. Restore builds a new store, swaps it in
// and abandons the old one, which wakes every blocking query.
package fsm

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-metrics"
	"github.com/hashicorp/raft"

	"github.com/trellismesh/trellis/raftstore/state"
	"github.com/trellismesh/trellis/raftstore/structs"
)

// handler applies one decoded entry body at index.
type handler func(f *FSM, body []byte, index uint64) any

// handlers is the dispatch table. Entries are only ever added.
var handlers = map[structs.MessageType]handler{
	structs.RegisterRequestType:    (*FSM).applyRegister,
	structs.DeregisterRequestType:  (*FSM).applyDeregister,
	structs.BatchRequestType:       (*FSM).applyBatch,
	structs.CARequestType:          (*FSM).applyCA,
	structs.IntentionRequestType:   (*FSM).applyIntention,
	structs.LeafRequestType:        (*FSM).applyLeaf,
	structs.ConfigEntryRequestType: (*FSM).applyConfigEntry,
}

// BatchResult is the result of a batch entry: one error (or nil) per write.
type BatchResult struct {
	Errors []error
}

// FSM is the Raft state machine of a server.
type FSM struct {
	logger hclog.Logger
	state  atomic.Pointer[state.Store]
}

var _ raft.FSM = (*FSM)(nil)

// New returns an FSM over an empty store. logger may be nil.
func New(logger hclog.Logger) *FSM {
	if logger == nil {
		logger = hclog.NewNullLogger()
	}
	f := &FSM{logger: logger.Named("fsm")}
	f.state.Store(state.New())
	return f
}

// State returns the current store. It changes on Restore, so do not keep it.
func (f *FSM) State() *state.Store { return f.state.Load() }

// ErrUnknownType is returned by Decode for an entry type with no handler.
var ErrUnknownType = errors.New("unknown log entry type")

// Decode splits an entry into its type and body, and reports whether this
// FSM can apply it. It never panics; the fuzz target drives it.
func Decode(data []byte) (structs.MessageType, []byte, error) {
	if len(data) == 0 {
		return 0, nil, errors.New("empty log entry")
	}
	t := structs.MessageType(data[0])
	if _, ok := handlers[t&^structs.IgnoreUnknownTypeFlag]; !ok {
		return t, data[1:], fmt.Errorf("%w: %d", ErrUnknownType, uint8(t))
	}
	return t &^ structs.IgnoreUnknownTypeFlag, data[1:], nil
}

// Apply applies one committed log entry. The return value is the entry's
// result: nil, or an error for the caller of raft.Apply.
func (f *FSM) Apply(l *raft.Log) any {
	if l.Type != raft.LogCommand {
		return nil
	}
	t, body, err := Decode(l.Data)
	if err != nil {
		if errors.Is(err, ErrUnknownType) && len(l.Data) > 0 && structs.MessageType(l.Data[0])&structs.IgnoreUnknownTypeFlag != 0 {
			f.logger.Warn("skipping log entry of unknown type", "type", l.Data[0]&^byte(structs.IgnoreUnknownTypeFlag), "index", l.Index)
			return nil
		}
		// Skipping an entry the other servers applied would make this
		// server's state diverge from theirs silently: stop instead.
		panic(fmt.Sprintf("fsm: cannot apply log entry %d: %v", l.Index, err))
	}
	defer metrics.MeasureSince([]string{"trellis", "fsm", t.String()}, time.Now())
	return handlers[t](f, body, l.Index)
}

func (f *FSM) applyRegister(body []byte, index uint64) any {
	var req structs.RegisterRequest
	if err := structs.Decode(body, &req); err != nil {
		return fmt.Errorf("decode register entry %d: %w", index, err)
	}
	if err := f.State().EnsureRegistration(index, &req); err != nil {
		return fmt.Errorf("register node %q: %w", req.Node, err)
	}
	return nil
}

func (f *FSM) applyDeregister(body []byte, index uint64) any {
	var req structs.DeregisterRequest
	if err := structs.Decode(body, &req); err != nil {
		return fmt.Errorf("decode deregister entry %d: %w", index, err)
	}
	s := f.State()
	var err error
	switch {
	case req.ServiceID != "":
		err = s.DeleteService(index, req.Node, req.ServiceID)
	case req.CheckID != "":
		err = s.DeleteCheck(index, req.Node, req.CheckID)
	default:
		err = s.DeleteNode(index, req.Node)
	}
	if err != nil {
		return fmt.Errorf("deregister on node %q: %w", req.Node, err)
	}
	return nil
}

func (f *FSM) applyBatch(body []byte, index uint64) any {
	var ops []state.Op
	if err := structs.Decode(body, &ops); err != nil {
		return fmt.Errorf("decode batch entry %d: %w", index, err)
	}
	return BatchResult{Errors: f.State().ApplyBatch(index, ops)}
}

func (f *FSM) applyCA(body []byte, index uint64) any {
	var w structs.CAWrite
	if err := structs.Decode(body, &w); err != nil {
		return fmt.Errorf("decode CA entry %d: %w", index, err)
	}
	if err := f.State().CASet(index, &w); err != nil {
		return fmt.Errorf("set CA configuration: %w", err)
	}
	return nil
}

func (f *FSM) applyIntention(body []byte, index uint64) any {
	var w structs.IntentionWrite
	if err := structs.Decode(body, &w); err != nil {
		return fmt.Errorf("decode intention entry %d: %w", index, err)
	}
	if err := f.State().IntentionWrite(index, &w); err != nil {
		return fmt.Errorf("%s intention: %w", w.Op, err)
	}
	return nil
}

func (f *FSM) applyLeaf(body []byte, index uint64) any {
	var w structs.LeafWrite
	if err := structs.Decode(body, &w); err != nil {
		return fmt.Errorf("decode leaf entry %d: %w", index, err)
	}
	if err := f.State().LeafWrite(index, &w); err != nil {
		return fmt.Errorf("record leaves: %w", err)
	}
	return nil
}

// applyConfigEntry applies a config entry write. Its result is a bool,
// whether the write happened (false when a CAS did not match), or an error.
// An entry that does not decode is an error, never a panic.
func (f *FSM) applyConfigEntry(body []byte, index uint64) any {
	var req structs.ConfigEntryRequest
	if err := structs.Decode(body, &req); err != nil {
		return fmt.Errorf("decode config entry %d: %w", index, err)
	}
	applied, err := f.State().ConfigEntryWrite(index, &req)
	if err != nil {
		return fmt.Errorf("%s config entry: %w", req.Op, err)
	}
	return applied
}

// snapshotHeader starts every snapshot stream.
type snapshotHeader struct {
	// Format is the snapshot format version; 1 is JSON lines of state.Record.
	Format int
	// LastIndex is the store's highest index when the snapshot was taken.
	LastIndex uint64
}

const snapshotFormat = 1

// Snapshot returns a point-in-time snapshot at once; Persist does the I/O.
func (f *FSM) Snapshot() (raft.FSMSnapshot, error) {
	s := f.State()
	return &snapshot{snap: s.Snapshot(), last: s.MaxIndex()}, nil
}

type snapshot struct {
	snap *state.Snapshot
	last uint64
}

// Persist writes the snapshot as a header line and one JSON record per line.
func (s *snapshot) Persist(sink raft.SnapshotSink) error {
	defer metrics.MeasureSince([]string{"trellis", "fsm", "persist"}, time.Now())
	w := bufio.NewWriter(sink)
	enc := json.NewEncoder(w)
	err := enc.Encode(snapshotHeader{Format: snapshotFormat, LastIndex: s.last})
	if err == nil {
		err = s.snap.Walk(func(r state.Record) error { return enc.Encode(r) })
	}
	if err == nil {
		err = w.Flush()
	}
	if err != nil {
		_ = sink.Cancel()
		return fmt.Errorf("persist snapshot: %w", err)
	}
	return sink.Close()
}

// Release is a no-op: the read transaction needs no cleanup.
func (s *snapshot) Release() {}

// Restore replaces the store with the snapshot read from rc.
func (f *FSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	dec := json.NewDecoder(bufio.NewReader(rc))
	var hdr snapshotHeader
	if err := dec.Decode(&hdr); err != nil {
		return fmt.Errorf("read snapshot header: %w", err)
	}
	if hdr.Format != snapshotFormat {
		return fmt.Errorf("snapshot format %d is not supported (want %d)", hdr.Format, snapshotFormat)
	}
	r := state.NewRestore()
	for {
		var rec state.Record
		err := dec.Decode(&rec)
		if err == io.EOF {
			break
		}
		if err == nil {
			err = r.Add(rec)
		}
		if err != nil {
			r.Abort()
			return fmt.Errorf("restore snapshot: %w", err)
		}
	}
	old := f.state.Swap(r.Commit())
	old.Abandon()
	return nil
}
