package state

import (
	"cmp"
	"fmt"
	"slices"
	"strings"

	"github.com/hashicorp/go-memdb"

	"github.com/trellismesh/trellis/connect/configentry"
	"github.com/trellismesh/trellis/raftstore/structs"
)

// indexConfigEntries moves whenever any config entry changes.
const indexConfigEntries = "config-entries"

// configEntryRow is a config entry as stored, with its key lifted out for
// the indexes.
type configEntryRow struct {
	Kind  string
	Name  string
	Entry configentry.Entry
}

func newConfigEntryRow(e configentry.Entry) *configEntryRow {
	return &configEntryRow{Kind: e.GetKind(), Name: e.GetName(), Entry: e}
}

// kindOrder places a kind in listings: configentry.Kinds' order.
func kindOrder(kind string) int {
	if i := slices.Index(configentry.Kinds, kind); i >= 0 {
		return i
	}
	return len(configentry.Kinds)
}

func compareEntries(a, b configentry.Entry) int {
	if c := cmp.Compare(kindOrder(a.GetKind()), kindOrder(b.GetKind())); c != 0 {
		return c
	}
	return strings.Compare(a.GetName(), b.GetName())
}

// ConfigEntry returns the entry of kind and name (nil when none), and the
// config entries' index.
func (s *Store) ConfigEntry(ws memdb.WatchSet, kind, name string) (uint64, configentry.Entry, error) {
	tx := s.db.Txn(false)
	idx, err := indexValue(tx, ws, indexConfigEntries)
	if err != nil {
		return 0, nil, err
	}
	e, err := configEntryGet(tx, kind, name)
	return idx, e, err
}

func configEntryGet(tx *memdb.Txn, kind, name string) (configentry.Entry, error) {
	raw, err := tx.First(tableConfigEntries, "id", kind, name)
	if err != nil {
		return nil, fmt.Errorf("read config entry %s/%s: %w", kind, name, err)
	}
	if raw == nil {
		return nil, nil
	}
	return raw.(*configEntryRow).Entry, nil
}

// ConfigEntries returns the entries of kind (every kind when kind is
// empty), by kind (in configentry.Kinds' order) then name, and the config
// entries' index.
func (s *Store) ConfigEntries(ws memdb.WatchSet, kind string) (uint64, []configentry.Entry, error) {
	tx := s.db.Txn(false)
	idx, err := indexValue(tx, ws, indexConfigEntries)
	if err != nil {
		return 0, nil, err
	}
	out, err := configEntryList(tx, kind)
	return idx, out, err
}

func configEntryList(tx *memdb.Txn, kind string) ([]configentry.Entry, error) {
	var (
		it  memdb.ResultIterator
		err error
	)
	if kind == "" {
		it, err = tx.Get(tableConfigEntries, "id")
	} else {
		it, err = tx.Get(tableConfigEntries, "kind", kind)
	}
	if err != nil {
		return nil, fmt.Errorf("list config entries %q: %w", kind, err)
	}
	var out []configentry.Entry
	for raw := it.Next(); raw != nil; raw = it.Next() {
		out = append(out, raw.(*configEntryRow).Entry)
	}
	slices.SortFunc(out, compareEntries)
	return out, nil
}

// ConfigEntrySet returns a read-only view of every config entry as they
// are now, for validation and chain compilation, and the config entries'
// index (watched in ws). The view is a snapshot: later writes do not show.
func (s *Store) ConfigEntrySet(ws memdb.WatchSet) (uint64, configentry.Set, error) {
	tx := s.db.Txn(false)
	idx, err := indexValue(tx, ws, indexConfigEntries)
	if err != nil {
		return 0, nil, err
	}
	return idx, txnSet{tx: tx}, nil
}

// txnSet is a configentry.Set over a read transaction. A read error (which
// memdb gives only for a bad index name) reads as no entry.
type txnSet struct{ tx *memdb.Txn }

func (t txnSet) Get(kind, name string) configentry.Entry {
	e, _ := configEntryGet(t.tx, kind, name)
	return e
}

func (t txnSet) List(kind string) []configentry.Entry {
	out, _ := configEntryList(t.tx, kind)
	return out
}

// ConfigEntryWrite applies a config entry write at idx and reports whether
// it happened: with CAS, only when the stored entry's ModifyIndex is
// req.Index (0: no entry may exist). An upsert sets the entry's
// CreateIndex (kept from the entry it replaces) and ModifyIndex; deleting
// an entry that does not exist is not an error. The entry must have been
// validated by the leader; the store checks only that it is there and has
// a kind and name.
func (s *Store) ConfigEntryWrite(idx uint64, req *structs.ConfigEntryRequest) (applied bool, err error) {
	err = s.write(idx, func(tx *writeTxn) error {
		e := req.Entry.Entry
		if e == nil {
			return structs.Invalid("Entry", "missing")
		}
		kind, name := e.GetKind(), e.GetName()
		if kind == "" || name == "" {
			return structs.Invalid("Entry", "a config entry needs a Kind and a Name")
		}
		raw, err := tx.First(tableConfigEntries, "id", kind, name)
		if err != nil {
			return fmt.Errorf("read config entry %s/%s: %w", kind, name, err)
		}
		var existing configentry.Entry
		if raw != nil {
			existing = raw.(*configEntryRow).Entry
		}
		if req.CAS {
			have := uint64(0)
			if existing != nil {
				have = existing.GetRaftIndex().ModifyIndex
			}
			if have != req.Index {
				return nil // not applied
			}
		}
		switch req.Op {
		case structs.ConfigEntryOpDelete:
			if existing == nil {
				applied = true
				return nil
			}
			if err := tx.Delete(tableConfigEntries, raw); err != nil {
				return fmt.Errorf("delete config entry %s/%s: %w", kind, name, err)
			}
		case structs.ConfigEntryOpUpsert:
			ri := e.GetRaftIndex()
			ri.CreateIndex, ri.ModifyIndex = tx.idx, tx.idx
			if existing != nil {
				ri.CreateIndex = existing.GetRaftIndex().CreateIndex
			}
			if err := tx.Insert(tableConfigEntries, newConfigEntryRow(e)); err != nil {
				return fmt.Errorf("store config entry %s/%s: %w", kind, name, err)
			}
		default:
			return structs.Invalid("Op", "%q is not %s or %s", req.Op, structs.ConfigEntryOpUpsert, structs.ConfigEntryOpDelete)
		}
		applied = true
		tx.touch(indexConfigEntries)
		return nil
	})
	if err != nil {
		return false, err
	}
	return applied, nil
}
