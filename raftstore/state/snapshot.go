package state

import (
	"fmt"

	"github.com/hashicorp/go-memdb"

	"github.com/trellismesh/trellis/connect"
	"github.com/trellismesh/trellis/connect/configentry"
	"github.com/trellismesh/trellis/raftstore/structs"
)

// Snapshot is a point-in-time, read-only view of the whole store, for Raft
// snapshots. Taking one is cheap (a memdb read transaction); it stays valid
// while writes go on.
type Snapshot struct {
	tx *memdb.Txn
}

// Snapshot returns a view of the store as it is now.
func (s *Store) Snapshot() *Snapshot { return &Snapshot{tx: s.db.Txn(false)} }

// Record is one row of a snapshot: exactly one field is set.
type Record struct {
	Node    *structs.Node        `json:",omitempty"`
	Service *ServiceRecord       `json:",omitempty"`
	Check   *structs.HealthCheck `json:",omitempty"`
	Index   *IndexRecord         `json:",omitempty"`

	CAConfig  *structs.CAConfiguration `json:",omitempty"`
	CARoot    *structs.CARoot          `json:",omitempty"`
	Intention *connect.Intention       `json:",omitempty"`
	Leaf      *structs.IssuedLeaf      `json:",omitempty"`

	ConfigEntry *configentry.Envelope `json:",omitempty"`
}

// ServiceRecord is a service instance with the node it is on.
type ServiceRecord struct {
	Node    string
	Service *structs.NodeService
}

// IndexRecord is one named Raft index.
type IndexRecord struct {
	Key   string
	Value uint64
}

// Walk calls fn for every row: nodes first, then services, checks and
// indexes, so Restore can apply them in order. It stops at fn's first error.
func (sn *Snapshot) Walk(fn func(Record) error) error {
	tables := []struct {
		name string
		rec  func(any) Record
	}{
		{tableNodes, func(v any) Record { return Record{Node: v.(*structs.Node)} }},
		{tableServices, func(v any) Record {
			r := v.(*serviceRow)
			return Record{Service: &ServiceRecord{Node: r.Node, Service: r.Service}}
		}},
		{tableChecks, func(v any) Record { return Record{Check: v.(*structs.HealthCheck)} }},
		{tableCAConfig, func(v any) Record { return Record{CAConfig: v.(*caConfigRow).Config} }},
		{tableCARoots, func(v any) Record { return Record{CARoot: v.(*structs.CARoot)} }},
		{tableIntentions, func(v any) Record { return Record{Intention: v.(*connect.Intention)} }},
		{tableLeaves, func(v any) Record { return Record{Leaf: v.(*structs.IssuedLeaf)} }},
		{tableConfigEntries, func(v any) Record {
			return Record{ConfigEntry: &configentry.Envelope{Entry: v.(*configEntryRow).Entry}}
		}},
		{tableIndex, func(v any) Record { r := v.(*indexRow); return Record{Index: &IndexRecord{Key: r.Key, Value: r.Value}} }},
	}
	for _, t := range tables {
		it, err := sn.tx.Get(t.name, "id")
		if err != nil {
			return fmt.Errorf("snapshot %s: %w", t.name, err)
		}
		for raw := it.Next(); raw != nil; raw = it.Next() {
			if err := fn(t.rec(raw)); err != nil {
				return err
			}
		}
	}
	return nil
}

// Restore fills a new, empty store from snapshot records in one transaction.
type Restore struct {
	store *Store
	tx    *memdb.Txn
}

// NewRestore returns a restore into a fresh store. Call Add for every record,
// then Commit (or Abort).
func NewRestore() *Restore {
	s := New()
	return &Restore{store: s, tx: s.db.Txn(true)}
}

// Add inserts one record as it was, Raft indexes included.
func (r *Restore) Add(rec Record) error {
	var err error
	switch {
	case rec.Node != nil:
		err = r.tx.Insert(tableNodes, rec.Node)
	case rec.Service != nil && rec.Service.Service != nil:
		svc := rec.Service.Service
		err = r.tx.Insert(tableServices, newServiceRow(rec.Service.Node, svc))
	case rec.Check != nil:
		err = r.tx.Insert(tableChecks, rec.Check)
	case rec.CAConfig != nil:
		err = r.tx.Insert(tableCAConfig, &caConfigRow{ID: caConfigID, Config: rec.CAConfig})
	case rec.CARoot != nil:
		err = r.tx.Insert(tableCARoots, rec.CARoot)
	case rec.Intention != nil:
		err = r.tx.Insert(tableIntentions, rec.Intention)
	case rec.Leaf != nil:
		err = r.tx.Insert(tableLeaves, rec.Leaf)
	case rec.ConfigEntry != nil && rec.ConfigEntry.Entry != nil:
		err = r.tx.Insert(tableConfigEntries, newConfigEntryRow(rec.ConfigEntry.Entry))
	case rec.Index != nil:
		err = r.tx.Insert(tableIndex, &indexRow{Key: rec.Index.Key, Value: rec.Index.Value})
	default:
		err = fmt.Errorf("empty snapshot record")
	}
	if err != nil {
		return fmt.Errorf("restore record: %w", err)
	}
	return nil
}

// Commit finishes the restore and returns the new store.
func (r *Restore) Commit() *Store {
	r.tx.Commit()
	return r.store
}

// Abort drops the restore.
func (r *Restore) Abort() { r.tx.Abort() }
