package state

import (
	"fmt"
	"maps"
	"slices"

	"github.com/hashicorp/go-memdb"

	"github.com/trellismesh/trellis/raftstore/structs"
)

// EnsureRegistration applies a catalog registration at Raft index idx: it
// creates or updates the node, then the service, then the checks. Rows whose
// content does not change are left alone, so a repeated registration moves
// no index. The request must have been validated; the store checks only
// references (a check naming a service that is not on the node).
func (s *Store) EnsureRegistration(idx uint64, req *structs.RegisterRequest) error {
	return s.write(idx, func(tx *writeTxn) error { return tx.ensureRegistration(req) })
}

// checkRegistration reports, without changing anything, why req would fail:
// a check naming a service that is neither in req nor on the node.
func (tx *writeTxn) checkRegistration(req *structs.RegisterRequest) error {
	checks := req.Checks
	if req.Check != nil {
		checks = append(slices.Clip(checks), req.Check)
	}
	for _, c := range checks {
		if c.ServiceID == "" || (req.Service != nil && req.Service.ID == c.ServiceID) {
			continue
		}
		raw, err := tx.First(tableServices, "id", req.Node, c.ServiceID)
		if err != nil {
			return err
		}
		if raw == nil {
			return structs.Invalid("Check.ServiceID", "check %q refers to service %q, which is not registered on node %q", c.CheckID, c.ServiceID, req.Node)
		}
	}
	return nil
}

func (tx *writeTxn) ensureRegistration(req *structs.RegisterRequest) error {
	if err := tx.checkRegistration(req); err != nil {
		return err
	}
	if err := tx.ensureNode(req); err != nil {
		return err
	}
	if req.Service != nil {
		if err := tx.ensureService(req.Node, req.Service); err != nil {
			return err
		}
	}
	checks := req.Checks
	if req.Check != nil {
		checks = append(slices.Clip(checks), req.Check)
	}
	for _, c := range checks {
		if err := tx.ensureCheck(req.Node, c); err != nil {
			return err
		}
	}
	return nil
}

// Op is one write of a batch: exactly one field is set.
type Op struct {
	Register   *structs.RegisterRequest   `json:",omitempty"`
	Deregister *structs.DeregisterRequest `json:",omitempty"`
}

// ApplyBatch applies several writes at one Raft index in one transaction,
// so a blocking query sees all of them or none. A write that would fail
// (a check of an unknown service) is skipped with its error, which is
// returned at its position; the others apply.
func (s *Store) ApplyBatch(idx uint64, ops []Op) []error {
	results := make([]error, len(ops))
	err := s.write(idx, func(tx *writeTxn) error {
		for i, op := range ops {
			switch {
			case op.Register != nil:
				if err := tx.checkRegistration(op.Register); err != nil {
					results[i] = err
					continue
				}
				if err := tx.ensureRegistration(op.Register); err != nil {
					return err
				}
			case op.Deregister != nil:
				if err := tx.deregister(op.Deregister); err != nil {
					return err
				}
			default:
				results[i] = structs.Invalid("", "empty batch operation")
			}
		}
		return nil
	})
	if err != nil {
		for i := range results {
			if results[i] == nil {
				results[i] = err
			}
		}
	}
	return results
}

// deregister applies a DeregisterRequest.
func (tx *writeTxn) deregister(req *structs.DeregisterRequest) error {
	switch {
	case req.ServiceID != "":
		return tx.deleteService(req.Node, req.ServiceID)
	case req.CheckID != "":
		return tx.deleteCheck(req.Node, req.CheckID)
	}
	return tx.deleteNode(req.Node)
}

func (tx *writeTxn) ensureNode(req *structs.RegisterRequest) error {
	raw, err := tx.First(tableNodes, "id", req.Node)
	if err != nil {
		return fmt.Errorf("look up node %q: %w", req.Node, err)
	}
	var existing *structs.Node
	if raw != nil {
		existing = raw.(*structs.Node)
		if req.SkipNodeUpdate {
			return nil
		}
	}
	n := &structs.Node{
		ID:              req.ID,
		Node:            req.Node,
		Address:         req.Address,
		Datacenter:      req.Datacenter,
		TaggedAddresses: req.TaggedAddresses,
		Meta:            req.NodeMeta,
	}
	if existing != nil {
		if n.ID == "" {
			n.ID = existing.ID // a catalog registration without ID keeps the agent's
		}
		if sameNode(existing, n) {
			return nil
		}
		n.CreateIndex = existing.CreateIndex
	} else {
		n.CreateIndex = tx.idx
	}
	n.ModifyIndex = tx.idx
	if err := tx.Insert(tableNodes, n.Clone()); err != nil {
		return fmt.Errorf("store node %q: %w", req.Node, err)
	}
	tx.touch(indexNodes, nodeIndexKey(req.Node))
	return tx.touchServicesOnNode(req.Node)
}

func sameNode(a, b *structs.Node) bool {
	return a.ID == b.ID && a.Node == b.Node && a.Address == b.Address && a.Datacenter == b.Datacenter &&
		maps.Equal(a.TaggedAddresses, b.TaggedAddresses) && maps.Equal(a.Meta, b.Meta)
}

func (tx *writeTxn) ensureService(node string, svc *structs.NodeService) error {
	raw, err := tx.First(tableServices, "id", node, svc.ID)
	if err != nil {
		return fmt.Errorf("look up service %q on node %q: %w", svc.ID, node, err)
	}
	s := svc.Clone()
	renamed := false
	if raw != nil {
		old := raw.(*serviceRow).Service
		if old.IsSame(s) {
			return nil
		}
		s.CreateIndex = old.CreateIndex
		if old.Service != s.Service {
			tx.touch(serviceIndexKey(old.Service))
		}
		renamed = old.Service != s.Service || !slices.Equal(old.Tags, s.Tags)
	} else {
		s.CreateIndex = tx.idx
	}
	s.ModifyIndex = tx.idx
	row := newServiceRow(node, s)
	if err := tx.Insert(tableServices, row); err != nil {
		return fmt.Errorf("store service %q on node %q: %w", s.ID, node, err)
	}
	tx.touch(indexServices, serviceIndexKey(s.Service), nodeIndexKey(node))
	if row.Connect != "" {
		tx.touch(connectIndexKey(row.Connect))
	}
	if raw != nil {
		if old := raw.(*serviceRow).Connect; old != "" && old != row.Connect {
			tx.touch(connectIndexKey(old))
		}
	}

	// The service's checks carry its name and tags; keep them in step. (A
	// new service has no checks yet.)
	if !renamed {
		return nil
	}
	stale, err := serviceChecks(tx.Txn, node, s.ID)
	if err != nil {
		return err
	}
	for _, c := range stale {
		nc := c.Clone()
		nc.ServiceName, nc.ServiceTags = s.Service, slices.Clone(s.Tags)
		nc.ModifyIndex = tx.idx
		if err := tx.Insert(tableChecks, nc); err != nil {
			return fmt.Errorf("store check %q on node %q: %w", nc.CheckID, node, err)
		}
		tx.touch(indexChecks)
	}
	return nil
}

func (tx *writeTxn) ensureCheck(node string, chk *structs.HealthCheck) error {
	c := chk.Clone()
	c.Node = node
	if c.ServiceID != "" {
		raw, err := tx.First(tableServices, "id", node, c.ServiceID)
		if err != nil {
			return fmt.Errorf("look up service %q on node %q: %w", c.ServiceID, node, err)
		}
		if raw == nil {
			// checkRegistration rules this out before anything changes.
			return fmt.Errorf("check %q refers to service %q, which is not registered on node %q", c.CheckID, c.ServiceID, node)
		}
		svc := raw.(*serviceRow).Service
		c.ServiceName, c.ServiceTags = svc.Service, slices.Clone(svc.Tags)
	} else {
		c.ServiceName, c.ServiceTags = "", nil
	}
	raw, err := tx.First(tableChecks, "id", node, c.CheckID)
	if err != nil {
		return fmt.Errorf("look up check %q on node %q: %w", c.CheckID, node, err)
	}
	if raw != nil {
		old := raw.(*structs.HealthCheck)
		if old.IsSame(c) {
			return nil
		}
		c.CreateIndex = old.CreateIndex
		if old.ServiceName != "" && old.ServiceName != c.ServiceName {
			tx.touch(serviceIndexKey(old.ServiceName))
		}
		if old.ServiceID == "" && c.ServiceID != "" {
			if err := tx.touchServicesOnNode(node); err != nil {
				return err
			}
		}
	} else {
		c.CreateIndex = tx.idx
	}
	c.ModifyIndex = tx.idx
	if err := tx.Insert(tableChecks, c); err != nil {
		return fmt.Errorf("store check %q on node %q: %w", c.CheckID, node, err)
	}
	return tx.touchForCheck(c)
}

// touchForCheck moves the indexes a change to check c moves: a service check
// touches its service, a node check every service on the node.
func (tx *writeTxn) touchForCheck(c *structs.HealthCheck) error {
	tx.touch(indexChecks, nodeIndexKey(c.Node))
	if c.ServiceID != "" {
		tx.touch(serviceIndexKey(c.ServiceName))
		return nil
	}
	return tx.touchServicesOnNode(c.Node)
}

// DeleteNode removes a node with its services and checks. An unknown node is
// not an error: deleting is idempotent.
func (s *Store) DeleteNode(idx uint64, node string) error {
	return s.write(idx, func(tx *writeTxn) error { return tx.deleteNode(node) })
}

func (tx *writeTxn) deleteNode(node string) error {
	raw, err := tx.First(tableNodes, "id", node)
	if err != nil || raw == nil {
		return err
	}
	if err := tx.touchServicesOnNode(node); err != nil {
		return err
	}
	nServices, err := tx.DeleteAll(tableServices, "node", node)
	if err != nil {
		return fmt.Errorf("delete services of node %q: %w", node, err)
	}
	nChecks, err := tx.DeleteAll(tableChecks, "node", node)
	if err != nil {
		return fmt.Errorf("delete checks of node %q: %w", node, err)
	}
	if err := tx.Delete(tableNodes, raw); err != nil {
		return fmt.Errorf("delete node %q: %w", node, err)
	}
	tx.touch(indexNodes, nodeIndexKey(node))
	if nServices > 0 {
		tx.touch(indexServices)
	}
	if nChecks > 0 {
		tx.touch(indexChecks)
	}
	return nil
}

// DeleteService removes a service instance and its checks from a node.
// Unknown ones are not an error.
func (s *Store) DeleteService(idx uint64, node, serviceID string) error {
	return s.write(idx, func(tx *writeTxn) error { return tx.deleteService(node, serviceID) })
}

func (tx *writeTxn) deleteService(node, serviceID string) error {
	raw, err := tx.First(tableServices, "id", node, serviceID)
	if err != nil || raw == nil {
		return err
	}
	row := raw.(*serviceRow)
	checks, err := serviceChecks(tx.Txn, node, serviceID)
	if err != nil {
		return err
	}
	for _, c := range checks {
		if err := tx.Delete(tableChecks, c); err != nil {
			return fmt.Errorf("delete check of service %q on node %q: %w", serviceID, node, err)
		}
		tx.touch(indexChecks)
	}
	if err := tx.Delete(tableServices, row); err != nil {
		return fmt.Errorf("delete service %q on node %q: %w", serviceID, node, err)
	}
	tx.touch(indexServices, serviceIndexKey(row.Name), nodeIndexKey(node))
	if row.Connect != "" {
		tx.touch(connectIndexKey(row.Connect))
	}
	return nil
}

// DeleteCheck removes one check from a node. An unknown one is not an error.
func (s *Store) DeleteCheck(idx uint64, node, checkID string) error {
	return s.write(idx, func(tx *writeTxn) error { return tx.deleteCheck(node, checkID) })
}

func (tx *writeTxn) deleteCheck(node, checkID string) error {
	raw, err := tx.First(tableChecks, "id", node, checkID)
	if err != nil || raw == nil {
		return err
	}
	if err := tx.Delete(tableChecks, raw); err != nil {
		return fmt.Errorf("delete check %q on node %q: %w", checkID, node, err)
	}
	return tx.touchForCheck(raw.(*structs.HealthCheck))
}

// serviceChecks returns the checks of one service instance on a node.
func serviceChecks(tx *memdb.Txn, node, serviceID string) ([]*structs.HealthCheck, error) {
	it, err := tx.Get(tableChecks, "node_service", node, serviceID)
	if err != nil {
		return nil, err
	}
	var out []*structs.HealthCheck
	for r := it.Next(); r != nil; r = it.Next() {
		c := r.(*structs.HealthCheck)
		if c.ServiceID == serviceID { // node checks (no ServiceID) share the node prefix
			out = append(out, c)
		}
	}
	return out, nil
}
