package state

import (
	"slices"
	"strings"

	"github.com/hashicorp/go-memdb"

	"github.com/trellismesh/trellis/raftstore/structs"
)

// Nodes returns every node, sorted by name, and the nodes table's index.
func (s *Store) Nodes(ws memdb.WatchSet) (uint64, structs.Nodes, error) {
	tx := s.db.Txn(false)
	idx, err := indexValue(tx, ws, indexNodes)
	if err != nil {
		return 0, nil, err
	}
	it, err := tx.Get(tableNodes, "id")
	if err != nil {
		return 0, nil, err
	}
	var out structs.Nodes
	for raw := it.Next(); raw != nil; raw = it.Next() {
		out = append(out, raw.(*structs.Node))
	}
	return idx, out, nil
}

// Services returns every service name with the union of its instances' tags
// (sorted, without duplicates), and the services table's index.
func (s *Store) Services(ws memdb.WatchSet) (uint64, map[string][]string, error) {
	tx := s.db.Txn(false)
	idx, err := indexValue(tx, ws, indexServices)
	if err != nil {
		return 0, nil, err
	}
	it, err := tx.Get(tableServices, "id")
	if err != nil {
		return 0, nil, err
	}
	out := make(map[string][]string)
	for raw := it.Next(); raw != nil; raw = it.Next() {
		svc := raw.(*serviceRow).Service
		out[svc.Service] = append(out[svc.Service], svc.Tags...)
	}
	for name, tags := range out {
		slices.Sort(tags)
		out[name] = slices.Compact(tags)
		if out[name] == nil {
			out[name] = []string{}
		}
	}
	return idx, out, nil
}

// hasTags reports whether tags holds every one of want, compared
// case-insensitively as Consul does.
func hasTags(tags, want []string) bool {
	for _, w := range want {
		if !slices.ContainsFunc(tags, func(t string) bool { return strings.EqualFold(t, w) }) {
			return false
		}
	}
	return true
}

// serviceInstances returns the instances of a service carrying every tag in
// tags, ordered by node name then service ID: Catalog and Health answers for
// a service come back in the same order.
func serviceInstances(tx *memdb.Txn, name string, tags []string) ([]*serviceRow, error) {
	it, err := tx.Get(tableServices, "service", name)
	if err != nil {
		return nil, err
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
	return rows, nil
}

func getNode(tx *memdb.Txn, name string) (*structs.Node, error) {
	raw, err := tx.First(tableNodes, "id", name)
	if err != nil || raw == nil {
		return nil, err
	}
	return raw.(*structs.Node), nil
}

// ServiceNodes returns the instances of service name that carry every tag in
// tags, each with its node, and the service's own index.
func (s *Store) ServiceNodes(ws memdb.WatchSet, name string, tags []string) (uint64, []structs.ServiceNode, error) {
	tx := s.db.Txn(false)
	idx, err := indexValue(tx, ws, serviceIndexKey(name))
	if err != nil {
		return 0, nil, err
	}
	rows, err := serviceInstances(tx, name, tags)
	if err != nil {
		return 0, nil, err
	}
	out := make([]structs.ServiceNode, 0, len(rows))
	for _, row := range rows {
		n, err := getNode(tx, row.Node)
		if err != nil {
			return 0, nil, err
		}
		if n == nil {
			continue // cannot happen: a node's services go with it
		}
		out = append(out, structs.ServiceNode{Node: n, Service: row.Service})
	}
	return idx, out, nil
}

// nodeChecks returns a node's checks sorted by check ID.
func nodeChecks(tx *memdb.Txn, node string) (structs.HealthChecks, error) {
	it, err := tx.Get(tableChecks, "node", node)
	if err != nil {
		return nil, err
	}
	var out structs.HealthChecks
	for raw := it.Next(); raw != nil; raw = it.Next() {
		out = append(out, raw.(*structs.HealthCheck))
	}
	slices.SortFunc(out, func(a, b *structs.HealthCheck) int { return strings.Compare(a.CheckID, b.CheckID) })
	return out, nil
}

// CheckServiceNodes returns the instances of service name that carry every
// tag in tags, each with its node and the checks that apply to it (the node's
// own checks first, then the service's), in the same order as ServiceNodes,
// and the service's index.
func (s *Store) CheckServiceNodes(ws memdb.WatchSet, name string, tags []string) (uint64, []structs.CheckServiceNode, error) {
	tx := s.db.Txn(false)
	idx, err := indexValue(tx, ws, serviceIndexKey(name))
	if err != nil {
		return 0, nil, err
	}
	rows, err := serviceInstances(tx, name, tags)
	if err != nil {
		return 0, nil, err
	}
	out := make([]structs.CheckServiceNode, 0, len(rows))
	nodeLevel := make(map[string]structs.HealthChecks) // node checks, by node
	for _, row := range rows {
		n, err := getNode(tx, row.Node)
		if err != nil {
			return 0, nil, err
		}
		if n == nil {
			continue
		}
		key := strings.ToLower(row.Node)
		shared, ok := nodeLevel[key]
		if !ok {
			all, err := nodeChecks(tx, row.Node)
			if err != nil {
				return 0, nil, err
			}
			for _, c := range all {
				if c.ServiceID == "" {
					shared = append(shared, c)
				}
			}
			nodeLevel[key] = shared
		}
		own, err := serviceChecks(tx, row.Node, row.ID)
		if err != nil {
			return 0, nil, err
		}
		slices.SortFunc(own, func(a, b *structs.HealthCheck) int { return strings.Compare(a.CheckID, b.CheckID) })
		mine := append(slices.Clip(shared), own...)
		out = append(out, structs.CheckServiceNode{Node: n, Service: row.Service, Checks: mine})
	}
	return idx, out, nil
}

// NodeServices returns a node and its services (nil when the node is not
// known), and the node's index.
func (s *Store) NodeServices(ws memdb.WatchSet, node string) (uint64, *structs.NodeServices, error) {
	tx := s.db.Txn(false)
	idx, err := indexValue(tx, ws, nodeIndexKey(node))
	if err != nil {
		return 0, nil, err
	}
	n, err := getNode(tx, node)
	if err != nil || n == nil {
		return idx, nil, err
	}
	it, err := tx.Get(tableServices, "node", node)
	if err != nil {
		return 0, nil, err
	}
	ns := &structs.NodeServices{Node: n, Services: make(map[string]*structs.NodeService)}
	for raw := it.Next(); raw != nil; raw = it.Next() {
		row := raw.(*serviceRow)
		ns.Services[row.ID] = row.Service
	}
	return idx, ns, nil
}

// NodeChecks returns a node's checks sorted by check ID, and the node's index.
func (s *Store) NodeChecks(ws memdb.WatchSet, node string) (uint64, structs.HealthChecks, error) {
	tx := s.db.Txn(false)
	idx, err := indexValue(tx, ws, nodeIndexKey(node))
	if err != nil {
		return 0, nil, err
	}
	checks, err := nodeChecks(tx, node)
	return idx, checks, err
}

// ServiceChecks returns the checks of every instance of service name (not
// node checks), sorted by node then check ID, and the service's index.
func (s *Store) ServiceChecks(ws memdb.WatchSet, name string) (uint64, structs.HealthChecks, error) {
	tx := s.db.Txn(false)
	idx, err := indexValue(tx, ws, serviceIndexKey(name))
	if err != nil {
		return 0, nil, err
	}
	it, err := tx.Get(tableChecks, "service", name)
	if err != nil {
		return 0, nil, err
	}
	var out structs.HealthChecks
	for raw := it.Next(); raw != nil; raw = it.Next() {
		out = append(out, raw.(*structs.HealthCheck))
	}
	sortChecks(out)
	return idx, out, nil
}

// ChecksInState returns the checks in state (or every check for
// structs.HealthAny), sorted by node then check ID, and the checks table's index.
func (s *Store) ChecksInState(ws memdb.WatchSet, state string) (uint64, structs.HealthChecks, error) {
	tx := s.db.Txn(false)
	idx, err := indexValue(tx, ws, indexChecks)
	if err != nil {
		return 0, nil, err
	}
	var it memdb.ResultIterator
	if state == structs.HealthAny {
		it, err = tx.Get(tableChecks, "id")
	} else {
		it, err = tx.Get(tableChecks, "status", state)
	}
	if err != nil {
		return 0, nil, err
	}
	var out structs.HealthChecks
	for raw := it.Next(); raw != nil; raw = it.Next() {
		out = append(out, raw.(*structs.HealthCheck))
	}
	sortChecks(out)
	return idx, out, nil
}

// ServiceExists reports whether node has a service instance with this ID.
func (s *Store) ServiceExists(node, serviceID string) bool {
	raw, err := s.db.Txn(false).First(tableServices, "id", node, serviceID)
	return err == nil && raw != nil
}

func sortChecks(cs structs.HealthChecks) {
	slices.SortFunc(cs, func(a, b *structs.HealthCheck) int {
		if c := strings.Compare(strings.ToLower(a.Node), strings.ToLower(b.Node)); c != 0 {
			return c
		}
		return strings.Compare(a.CheckID, b.CheckID)
	})
}
