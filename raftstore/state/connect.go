package state

import (
	"fmt"
	"slices"
	"strings"

	"github.com/hashicorp/go-memdb"

	"github.com/trellismesh/trellis/connect"
	"github.com/trellismesh/trellis/connect/intentions"
	"github.com/trellismesh/trellis/raftstore/structs"
)

// --- Certificate authority ---

// CAConfig returns the CA configuration (nil before the first leader made
// one) and its index.
func (s *Store) CAConfig(ws memdb.WatchSet) (uint64, *structs.CAConfiguration, error) {
	tx := s.db.Txn(false)
	idx, err := indexValue(tx, ws, indexCAConfig)
	if err != nil {
		return 0, nil, err
	}
	raw, err := tx.First(tableCAConfig, "id", caConfigID)
	if err != nil || raw == nil {
		return idx, nil, err
	}
	return idx, raw.(*caConfigRow).Config, nil
}

// CARoots returns the roots, the active one first then newest first, and
// their index.
func (s *Store) CARoots(ws memdb.WatchSet) (uint64, structs.CARoots, error) {
	tx := s.db.Txn(false)
	idx, err := indexValue(tx, ws, indexCARoots)
	if err != nil {
		return 0, nil, err
	}
	it, err := tx.Get(tableCARoots, "id")
	if err != nil {
		return 0, nil, err
	}
	var out structs.CARoots
	for raw := it.Next(); raw != nil; raw = it.Next() {
		out = append(out, raw.(*structs.CARoot))
	}
	slices.SortFunc(out, func(a, b *structs.CARoot) int {
		switch {
		case a.Active != b.Active:
			if a.Active {
				return -1
			}
			return 1
		case !a.NotBefore.Equal(b.NotBefore):
			return b.NotBefore.Compare(a.NotBefore)
		}
		return strings.Compare(a.ID, b.ID)
	})
	return idx, out, nil
}

// CASet applies a CAWrite at idx: the configuration, and the roots (which
// replace the stored set: roots not in w are removed). The write must have
// been validated; the store checks only ExpectConfigIndex and that exactly
// one root is active.
func (s *Store) CASet(idx uint64, w *structs.CAWrite) error {
	return s.write(idx, func(tx *writeTxn) error { return tx.caSet(w) })
}

func (tx *writeTxn) caSet(w *structs.CAWrite) error {
	raw, err := tx.First(tableCAConfig, "id", caConfigID)
	if err != nil {
		return err
	}
	var old *structs.CAConfiguration
	if raw != nil {
		old = raw.(*caConfigRow).Config
	}
	if w.ExpectConfigIndex > 0 && (old == nil || old.ModifyIndex != w.ExpectConfigIndex) {
		return structs.Invalid("Config", "the CA configuration changed while this change was prepared; try again")
	}
	if w.Config == nil {
		return structs.Invalid("Config", "missing")
	}
	active := 0
	for _, r := range w.Roots {
		if r.Active {
			active++
		}
	}
	if active != 1 {
		return structs.Invalid("Roots", "%d active roots, want exactly one", active)
	}
	cfg := *w.Config
	cfg.Config.PrivateKey = "" // the key lives in its root's SigningKey only
	if old != nil {
		if old.ClusterID != "" && cfg.ClusterID != old.ClusterID {
			return structs.Invalid("ClusterID", "the cluster ID %q cannot change", old.ClusterID)
		}
		cfg.CreateIndex = old.CreateIndex
	} else {
		cfg.CreateIndex = tx.idx
	}
	if old == nil || old.Provider != cfg.Provider || old.Config != cfg.Config || old.ClusterID != cfg.ClusterID {
		cfg.ModifyIndex = tx.idx
		if err := tx.Insert(tableCAConfig, &caConfigRow{ID: caConfigID, Config: &cfg}); err != nil {
			return fmt.Errorf("store CA configuration: %w", err)
		}
		tx.touch(indexCAConfig)
	}

	keep := map[string]bool{}
	for _, r := range w.Roots {
		keep[r.ID] = true
		raw, err := tx.First(tableCARoots, "id", r.ID)
		if err != nil {
			return err
		}
		nr := r.Clone()
		if raw != nil {
			prev := raw.(*structs.CARoot)
			nr.CreateIndex = prev.CreateIndex
			nr.ModifyIndex = prev.ModifyIndex
			if sameRoot(prev, nr) {
				continue
			}
		} else {
			nr.CreateIndex = tx.idx
		}
		nr.ModifyIndex = tx.idx
		if err := tx.Insert(tableCARoots, nr); err != nil {
			return fmt.Errorf("store CA root %s: %w", nr.ID, err)
		}
		tx.touch(indexCARoots)
	}
	it, err := tx.Get(tableCARoots, "id")
	if err != nil {
		return err
	}
	var drop []*structs.CARoot
	for raw := it.Next(); raw != nil; raw = it.Next() {
		if r := raw.(*structs.CARoot); !keep[r.ID] {
			drop = append(drop, r)
		}
	}
	for _, r := range drop {
		if err := tx.Delete(tableCARoots, r); err != nil {
			return fmt.Errorf("delete CA root %s: %w", r.ID, err)
		}
		tx.touch(indexCARoots)
	}
	return nil
}

func sameRoot(a, b *structs.CARoot) bool {
	return a.ID == b.ID && a.Name == b.Name && a.Active == b.Active && a.RotatedOutAt.Equal(b.RotatedOutAt) &&
		a.RootCert == b.RootCert && a.SigningKey == b.SigningKey && slices.Equal(a.IntermediateCerts, b.IntermediateCerts) &&
		a.CreateIndex == b.CreateIndex
}

// IssuedLeaves returns the records of issued leaves and their index.
func (s *Store) IssuedLeaves(ws memdb.WatchSet) (uint64, []*structs.IssuedLeaf, error) {
	tx := s.db.Txn(false)
	idx, err := indexValue(tx, ws, indexLeaves)
	if err != nil {
		return 0, nil, err
	}
	it, err := tx.Get(tableLeaves, "id")
	if err != nil {
		return 0, nil, err
	}
	var out []*structs.IssuedLeaf
	for raw := it.Next(); raw != nil; raw = it.Next() {
		out = append(out, raw.(*structs.IssuedLeaf))
	}
	return idx, out, nil
}

// LeafWrite applies a LeafWrite at idx.
func (s *Store) LeafWrite(idx uint64, w *structs.LeafWrite) error {
	return s.write(idx, func(tx *writeTxn) error {
		for _, l := range w.Issued {
			if l == nil || l.Node == "" || l.Service == "" {
				return structs.Invalid("Issued", "a leaf record needs a node and a service")
			}
			nl := *l
			nl.CreateIndex, nl.ModifyIndex = tx.idx, tx.idx
			if raw, err := tx.First(tableLeaves, "id", l.Node, l.Service); err != nil {
				return err
			} else if raw != nil {
				nl.CreateIndex = raw.(*structs.IssuedLeaf).CreateIndex
			}
			if err := tx.Insert(tableLeaves, &nl); err != nil {
				return fmt.Errorf("record leaf of %q on %q: %w", l.Service, l.Node, err)
			}
			tx.touch(indexLeaves)
		}
		for _, k := range w.Delete {
			raw, err := tx.First(tableLeaves, "id", k.Node, k.Service)
			if err != nil {
				return err
			}
			if raw == nil {
				continue
			}
			if err := tx.Delete(tableLeaves, raw); err != nil {
				return fmt.Errorf("delete leaf record of %q on %q: %w", k.Service, k.Node, err)
			}
			tx.touch(indexLeaves)
		}
		return nil
	})
}

// --- Intentions ---

// Intentions returns every intention in precedence order, and their index.
func (s *Store) Intentions(ws memdb.WatchSet) (uint64, []*connect.Intention, error) {
	tx := s.db.Txn(false)
	idx, err := indexValue(tx, ws, indexIntentions)
	if err != nil {
		return 0, nil, err
	}
	it, err := tx.Get(tableIntentions, "id")
	if err != nil {
		return 0, nil, err
	}
	var out []*connect.Intention
	for raw := it.Next(); raw != nil; raw = it.Next() {
		out = append(out, raw.(*connect.Intention))
	}
	intentions.Sort(out)
	return idx, out, nil
}

// IntentionByID returns the intention with an ID (nil when none), and the
// intentions' index.
func (s *Store) IntentionByID(ws memdb.WatchSet, id string) (uint64, *connect.Intention, error) {
	return s.intentionBy(ws, "id", id)
}

// IntentionExact returns the intention of a source and destination (nil
// when none), and the intentions' index.
func (s *Store) IntentionExact(ws memdb.WatchSet, source, destination string) (uint64, *connect.Intention, error) {
	return s.intentionBy(ws, "exact", source, destination)
}

func (s *Store) intentionBy(ws memdb.WatchSet, index string, args ...any) (uint64, *connect.Intention, error) {
	tx := s.db.Txn(false)
	idx, err := indexValue(tx, ws, indexIntentions)
	if err != nil {
		return 0, nil, err
	}
	raw, err := tx.First(tableIntentions, index, args...)
	if err != nil || raw == nil {
		return idx, nil, err
	}
	return idx, raw.(*connect.Intention), nil
}

// IntentionWrite applies an IntentionWrite at idx: an upsert by ID (which
// fails if another intention has the same source and destination) or a
// delete by ID (an unknown ID is not an error).
func (s *Store) IntentionWrite(idx uint64, w *structs.IntentionWrite) error {
	return s.write(idx, func(tx *writeTxn) error {
		if w.Intention == nil || w.Intention.ID == "" {
			return structs.Invalid("Intention.ID", "required")
		}
		raw, err := tx.First(tableIntentions, "id", w.Intention.ID)
		if err != nil {
			return err
		}
		switch w.Op {
		case structs.IntentionOpDelete:
			if raw == nil {
				return nil
			}
			if err := tx.Delete(tableIntentions, raw); err != nil {
				return fmt.Errorf("delete intention %s: %w", w.Intention.ID, err)
			}
		case structs.IntentionOpUpsert:
			ixn := w.Intention.Clone()
			other, err := tx.First(tableIntentions, "exact", ixn.SourceName, ixn.DestinationName)
			if err != nil {
				return err
			}
			if other != nil && other.(*connect.Intention).ID != ixn.ID {
				return fmt.Errorf("%w: an intention %s => %s exists already (ID %s)", structs.ErrConflict,
					ixn.SourceName, ixn.DestinationName, other.(*connect.Intention).ID)
			}
			ixn.CreateIndex = tx.idx
			if raw != nil {
				ixn.CreateIndex = raw.(*connect.Intention).CreateIndex
			}
			ixn.ModifyIndex = tx.idx
			if err := tx.Insert(tableIntentions, ixn); err != nil {
				return fmt.Errorf("store intention %s: %w", ixn.ID, err)
			}
		default:
			return structs.Invalid("Op", "%q is not upsert or delete", w.Op)
		}
		tx.touch(indexIntentions)
		return nil
	})
}

// --- Mesh endpoints of services ---

// ConnectServiceNodes returns the mesh endpoints of service name: the
// sidecar proxies whose destination it is, and its mesh-native instances,
// each with its node and checks. A proxy's checks are the node's, its own,
// and those of the instance it proxies (its DestinationServiceID on the same
// node), so a proxy is only as healthy as its application. Order and index
// rules are CheckServiceNodes'.
func (s *Store) ConnectServiceNodes(ws memdb.WatchSet, name string, tags []string) (uint64, []structs.CheckServiceNode, error) {
	tx := s.db.Txn(false)
	idx, err := indexValue(tx, ws, connectIndexKey(name))
	if err != nil {
		return 0, nil, err
	}
	if i, err := indexValue(tx, ws, serviceIndexKey(name)); err != nil {
		return 0, nil, err
	} else if i > idx {
		idx = i
	}
	it, err := tx.Get(tableServices, "connect", name)
	if err != nil {
		return 0, nil, err
	}
	var rows []*serviceRow
	for raw := it.Next(); raw != nil; raw = it.Next() {
		row := raw.(*serviceRow)
		if hasTags(row.Service.Tags, tags) {
			rows = append(rows, row)
		}
	}
	slices.SortFunc(rows, func(a, b *serviceRow) int {
		if c := strings.Compare(strings.ToLower(a.Node), strings.ToLower(b.Node)); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
	out := make([]structs.CheckServiceNode, 0, len(rows))
	for _, row := range rows {
		if !strings.EqualFold(row.Name, name) {
			i, err := indexValue(tx, ws, serviceIndexKey(row.Name))
			if err != nil {
				return 0, nil, err
			}
			idx = max(idx, i)
		}
		n, err := getNode(tx, row.Node)
		if err != nil {
			return 0, nil, err
		}
		if n == nil {
			continue
		}
		all, err := nodeChecks(tx, row.Node)
		if err != nil {
			return 0, nil, err
		}
		var checks structs.HealthChecks
		for _, c := range all {
			if c.ServiceID == "" {
				checks = append(checks, c)
			}
		}
		own, err := serviceChecks(tx, row.Node, row.ID)
		if err != nil {
			return 0, nil, err
		}
		if p := row.Service.Proxy; row.Service.Kind == structs.ServiceKindConnectProxy && p != nil && p.DestinationServiceID != "" {
			dest, err := serviceChecks(tx, row.Node, p.DestinationServiceID)
			if err != nil {
				return 0, nil, err
			}
			own = append(own, dest...)
		}
		slices.SortFunc(own, func(a, b *structs.HealthCheck) int { return strings.Compare(a.CheckID, b.CheckID) })
		checks = append(checks, own...)
		out = append(out, structs.CheckServiceNode{Node: n, Service: row.Service, Checks: checks})
	}
	return idx, out, nil
}
