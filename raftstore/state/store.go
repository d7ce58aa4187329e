package state

import (
	"strings"
	"sync"

	"github.com/hashicorp/go-memdb"
)

// Index keys of the tables; per-resource keys are made by serviceIndexKey and
// nodeIndexKey.
const (
	indexNodes    = "nodes"
	indexServices = "services"
	indexChecks   = "checks"

	indexCAConfig   = "connect-ca-config"
	indexCARoots    = "connect-ca-roots"
	indexIntentions = "intentions"
	indexLeaves     = "connect-ca-leaves"
)

func serviceIndexKey(name string) string { return "service." + strings.ToLower(name) }

// connectIndexKey moves when the mesh endpoints of a service come or go.
func connectIndexKey(name string) string { return "connect." + strings.ToLower(name) }
func nodeIndexKey(name string) string    { return "node." + strings.ToLower(name) }

// Store is the state store. Its methods are safe for concurrent use: reads
// see a consistent snapshot; writes are serialised by memdb.
//
// Values returned by reads are shared with the store and must not be modified.
type Store struct {
	db *memdb.MemDB

	abandonOnce sync.Once
	abandonCh   chan struct{}
}

// New returns an empty store.
func New() *Store {
	return &Store{db: newDB(), abandonCh: make(chan struct{})}
}

// AbandonCh is closed when the store has been replaced (after a snapshot
// restore); blocking queries watch it so they re-run against the new store.
func (s *Store) AbandonCh() <-chan struct{} { return s.abandonCh }

// Abandon closes AbandonCh. Calling it more than once is harmless.
func (s *Store) Abandon() { s.abandonOnce.Do(func() { close(s.abandonCh) }) }

// writeTxn is a write transaction at one Raft index. It records which indexes
// the changes move; commit writes them.
type writeTxn struct {
	*memdb.Txn
	idx     uint64
	touched map[string]struct{}
}

func (s *Store) write(idx uint64, fn func(tx *writeTxn) error) error {
	tx := &writeTxn{Txn: s.db.Txn(true), idx: idx, touched: make(map[string]struct{})}
	defer tx.Abort() // no-op after Commit
	if err := fn(tx); err != nil {
		return err
	}
	for key := range tx.touched {
		existing, err := tx.First(tableIndex, "id", key)
		if err != nil {
			return err
		}
		if existing != nil && existing.(*indexRow).Value >= tx.idx {
			continue
		}
		if err := tx.Insert(tableIndex, &indexRow{Key: key, Value: tx.idx}); err != nil {
			return err
		}
	}
	tx.Commit()
	return nil
}

func (tx *writeTxn) touch(keys ...string) {
	for _, k := range keys {
		tx.touched[k] = struct{}{}
	}
}

// touchServicesOnNode moves the index of every service with an instance on node.
func (tx *writeTxn) touchServicesOnNode(node string) error {
	it, err := tx.Get(tableServices, "node", node)
	if err != nil {
		return err
	}
	for raw := it.Next(); raw != nil; raw = it.Next() {
		row := raw.(*serviceRow)
		tx.touch(serviceIndexKey(row.Name))
		if row.Connect != "" {
			tx.touch(connectIndexKey(row.Connect))
		}
	}
	return nil
}

// indexValue returns the named index, watching it in ws. Missing indexes
// are 1: a stable, non-zero answer for a resource never seen.
func indexValue(tx *memdb.Txn, ws memdb.WatchSet, key string) (uint64, error) {
	ch, raw, err := tx.FirstWatch(tableIndex, "id", key)
	if err != nil {
		return 0, err
	}
	ws.Add(ch)
	if raw == nil {
		return 1, nil
	}
	return raw.(*indexRow).Value, nil
}

// Index returns the named index (as "services" or "service.web") without
// watching; 0 when it was never set. For tests and stats.
func (s *Store) Index(key string) uint64 {
	tx := s.db.Txn(false)
	raw, err := tx.First(tableIndex, "id", key)
	if err != nil || raw == nil {
		return 0
	}
	return raw.(*indexRow).Value
}

// MaxIndex returns the highest index in the store: the Raft index of the last
// write that changed something.
func (s *Store) MaxIndex() uint64 {
	tx := s.db.Txn(false)
	var max uint64
	for _, k := range []string{indexNodes, indexServices, indexChecks, indexCAConfig, indexCARoots, indexIntentions, indexLeaves, indexConfigEntries} {
		raw, err := tx.First(tableIndex, "id", k)
		if err == nil && raw != nil && raw.(*indexRow).Value > max {
			max = raw.(*indexRow).Value
		}
	}
	return max
}
