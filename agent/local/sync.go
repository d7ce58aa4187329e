package local

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"

	"github.com/hashicorp/go-metrics"

	"github.com/trellismesh/trellis/raftstore/structs"
)

// SyncFull reads this node's services and checks from the catalog, marks
// every difference with the local state out of sync (entries the catalog
// lacks or holds differently are pushed again; entries the agent does not
// own are removed), then pushes them with SyncChanges. Checks listed in
// Config.ServerOwnedCheckIDs are left alone.
func (l *State) SyncFull(ctx context.Context) error {
	l.syncMu.Lock()
	defer l.syncMu.Unlock()

	req := structs.NodeSpecificRequest{Datacenter: l.cfg.Datacenter, Node: l.cfg.NodeName}
	var services structs.IndexedNodeServices
	if err := l.rpc.RPC(ctx, structs.MethodCatalogNodeServices, &req, &services); err != nil {
		return fmt.Errorf("read services of node %q: %w", l.cfg.NodeName, err)
	}
	var checks structs.IndexedHealthChecks
	if err := l.rpc.RPC(ctx, structs.MethodHealthNodeChecks, &req, &checks); err != nil {
		return fmt.Errorf("read checks of node %q: %w", l.cfg.NodeName, err)
	}

	l.mu.Lock()
	l.diffLocked(services.NodeServices, checks.HealthChecks)
	l.mu.Unlock()

	return l.syncChangesLocked(ctx)
}

// diffLocked marks the differences between the catalog's view of this node
// and the local state. l.mu must be held.
func (l *State) diffLocked(remote *structs.NodeServices, remoteChecks structs.HealthChecks) {
	var remoteNode *structs.Node
	remoteSvcs := make(map[string]*structs.NodeService)
	if remote != nil {
		remoteNode = remote.Node
		for _, s := range remote.Services {
			if s != nil {
				remoteSvcs[s.ID] = s
			}
		}
	}
	l.nodeInSync = remoteNode != nil && l.nodeSame(remoteNode)

	for id, rs := range remoteSvcs {
		if _, ok := l.services[id]; !ok {
			// In the catalog but not ours: deregister it.
			l.services[id] = &ServiceState{Service: rs.Clone(), Deleted: true}
		}
	}
	for id, ss := range l.services {
		rs := remoteSvcs[id]
		switch {
		case rs == nil && ss.Deleted:
			delete(l.services, id) // already gone
		case rs == nil, ss.Deleted:
			ss.InSync = false
		default:
			ss.InSync = ss.Service.IsSame(rs)
		}
	}

	remoteChks := make(map[string]*structs.HealthCheck)
	for _, c := range remoteChecks {
		if c != nil && !l.serverOwned[c.CheckID] {
			remoteChks[c.CheckID] = c
		}
	}
	for id, rc := range remoteChks {
		if _, ok := l.checks[id]; !ok {
			l.checks[id] = &CheckState{Check: rc.Clone(), Deleted: true}
		}
	}
	for id, cs := range l.checks {
		rc := remoteChks[id]
		switch {
		case rc == nil && cs.Deleted:
			delete(l.checks, id)
		case rc == nil, cs.Deleted:
			cs.InSync = false
			l.stopDeferLocked(cs)
		case cs.Check.IsSame(rc):
			cs.InSync = true
			l.stopDeferLocked(cs)
		case l.deferInterval > 0 && sameButOutput(cs.Check, rc):
			// Output-only differences go out on the deferred timer.
			cs.InSync = true
			l.deferOutputLocked(id, cs)
		default:
			cs.InSync = false
			l.stopDeferLocked(cs)
		}
	}
}

// nodeSame reports whether the catalog's node matches this agent's identity.
func (l *State) nodeSame(n *structs.Node) bool {
	return n.ID == l.cfg.NodeID && n.Address == l.cfg.Address &&
		maps.Equal(n.TaggedAddresses, l.cfg.TaggedAddresses) && maps.Equal(n.Meta, l.cfg.NodeMeta)
}

// sameButOutput reports whether two checks differ at most in their output.
func sameButOutput(a, b *structs.HealthCheck) bool {
	bb := *b
	bb.Output = a.Output
	return a.IsSame(&bb)
}

// servicePush is a service registered with its checks.
type servicePush struct {
	service *structs.NodeService
	checks  structs.HealthChecks
}

// syncPlan is what one SyncChanges sends, copied out under the lock.
type syncPlan struct {
	registerNode  bool
	deregServices []string
	deregChecks   []string
	services      []servicePush
	checks        []*structs.HealthCheck
}

// SyncChanges pushes what is out of sync to the catalog: the node's
// registration, deregistrations, services with their checks, then single
// checks. It returns the first error that is not about one entry's content;
// an entry the servers reject as invalid is logged and stays out of sync.
// A deregistration of something the catalog no longer has counts as done.
func (l *State) SyncChanges(ctx context.Context) error {
	l.syncMu.Lock()
	defer l.syncMu.Unlock()
	return l.syncChangesLocked(ctx)
}

// syncChangesLocked is SyncChanges; l.syncMu must be held.
func (l *State) syncChangesLocked(ctx context.Context) error {
	l.mu.Lock()
	plan := l.planLocked()
	l.mu.Unlock()

	if plan.registerNode {
		req := l.registerRequest()
		if err := l.write(ctx, structs.MethodCatalogRegister, "register_node", &req); err != nil {
			return fmt.Errorf("register node %q: %w", l.cfg.NodeName, err)
		}
		l.mu.Lock()
		l.nodeInSync = true
		l.mu.Unlock()
		l.logger.Info("synced node info", "node", l.cfg.NodeName)
	}

	for _, id := range plan.deregServices {
		req := structs.DeregisterRequest{Datacenter: l.cfg.Datacenter, Node: l.cfg.NodeName, ServiceID: id}
		err := l.write(ctx, structs.MethodCatalogDeregister, "deregister_service", &req)
		if skip, err := l.entryError(err, true, "deregister service", "service", id); err != nil {
			return fmt.Errorf("deregister service %q: %w", id, err)
		} else if skip {
			continue
		}
		l.mu.Lock()
		if ss := l.services[id]; ss != nil && ss.Deleted {
			delete(l.services, id)
		}
		for cid, cs := range l.checks {
			if cs.Deleted && cs.Check.ServiceID == id {
				delete(l.checks, cid) // the catalog removed them with the service
			}
		}
		l.mu.Unlock()
		l.logger.Info("deregistered service", "service", id)
	}

	for _, id := range plan.deregChecks {
		req := structs.DeregisterRequest{Datacenter: l.cfg.Datacenter, Node: l.cfg.NodeName, CheckID: id}
		err := l.write(ctx, structs.MethodCatalogDeregister, "deregister_check", &req)
		if skip, err := l.entryError(err, true, "deregister check", "check", id); err != nil {
			return fmt.Errorf("deregister check %q: %w", id, err)
		} else if skip {
			continue
		}
		l.mu.Lock()
		if cs := l.checks[id]; cs != nil && cs.Deleted {
			delete(l.checks, id)
		}
		l.mu.Unlock()
		l.logger.Info("deregistered check", "check", id)
	}

	for _, p := range plan.services {
		req := l.registerRequest()
		req.SkipNodeUpdate = true
		req.Service = p.service
		req.Checks = p.checks
		err := l.write(ctx, structs.MethodCatalogRegister, "register_service", &req)
		if skip, err := l.entryError(err, false, "register service", "service", p.service.ID); err != nil {
			return fmt.Errorf("register service %q: %w", p.service.ID, err)
		} else if skip {
			continue
		}
		l.mu.Lock()
		if ss := l.services[p.service.ID]; ss != nil && !ss.Deleted && ss.Service.IsSame(p.service) {
			ss.InSync = true
		}
		for _, c := range p.checks {
			l.markCheckSyncedLocked(c)
		}
		l.mu.Unlock()
		l.logger.Info("synced service", "service", p.service.ID, "checks", len(p.checks))
	}

	for _, c := range plan.checks {
		req := l.registerRequest()
		req.SkipNodeUpdate = true
		req.Check = c
		err := l.write(ctx, structs.MethodCatalogRegister, "register_check", &req)
		if skip, err := l.entryError(err, false, "register check", "check", c.CheckID); err != nil {
			return fmt.Errorf("register check %q: %w", c.CheckID, err)
		} else if skip {
			continue
		}
		l.mu.Lock()
		l.markCheckSyncedLocked(c)
		l.mu.Unlock()
		l.logger.Debug("synced check", "check", c.CheckID, "status", c.Status)
	}
	return nil
}

// planLocked copies out what is out of sync. l.mu must be held.
func (l *State) planLocked() syncPlan {
	p := syncPlan{registerNode: !l.nodeInSync}
	deregistered := make(map[string]bool)
	pushed := make(map[string]bool)
	for _, id := range slices.Sorted(maps.Keys(l.services)) {
		ss := l.services[id]
		switch {
		case ss.Deleted:
			p.deregServices = append(p.deregServices, id)
			deregistered[id] = true
		case !ss.InSync:
			push := servicePush{service: ss.Service.Clone()}
			p.services = append(p.services, push)
			pushed[id] = true
		}
	}
	for i := range p.services {
		push := &p.services[i]
		for _, cid := range slices.Sorted(maps.Keys(l.checks)) {
			if cs := l.checks[cid]; !cs.Deleted && cs.Check.ServiceID == push.service.ID {
				push.checks = append(push.checks, cs.Check.Clone())
			}
		}
	}
	for _, id := range slices.Sorted(maps.Keys(l.checks)) {
		cs := l.checks[id]
		switch {
		case cs.Deleted && !deregistered[cs.Check.ServiceID]:
			p.deregChecks = append(p.deregChecks, id)
		case !cs.Deleted && !cs.InSync && !pushed[cs.Check.ServiceID]:
			p.checks = append(p.checks, cs.Check.Clone())
		}
	}
	return p
}

// markCheckSyncedLocked marks a check in sync if it is still as pushed.
// l.mu must be held.
func (l *State) markCheckSyncedLocked(pushed *structs.HealthCheck) {
	cs := l.checks[pushed.CheckID]
	if cs == nil || cs.Deleted || !cs.Check.IsSame(pushed) {
		return
	}
	cs.InSync = true
	l.stopDeferLocked(cs)
}

// registerRequest returns a Catalog.Register request for this node.
func (l *State) registerRequest() structs.RegisterRequest {
	return structs.RegisterRequest{
		Datacenter:      l.cfg.Datacenter,
		ID:              l.cfg.NodeID,
		Node:            l.cfg.NodeName,
		Address:         l.cfg.Address,
		TaggedAddresses: maps.Clone(l.cfg.TaggedAddresses),
		NodeMeta:        maps.Clone(l.cfg.NodeMeta),
	}
}

// write sends one catalog write and counts it.
func (l *State) write(ctx context.Context, method, op string, args any) error {
	var reply structs.WriteReply
	err := l.rpc.RPC(ctx, method, args, &reply)
	result := "ok"
	if err != nil {
		result = "error"
	}
	metrics.IncrCounterWithLabels([]string{"trellis", "local", "catalog_write"}, 1, []metrics.Label{
		{Name: "op", Value: op}, {Name: "result", Value: result},
	})
	return err
}

// entryError sorts the error of one entry's write: nil → done; not found on
// a deregistration → done; invalid content → logged and skipped, the entry
// stays out of sync; anything else (no leader, shutdown, context) is returned
// so that the whole sync is retried.
func (l *State) entryError(err error, deregister bool, what, kind, id string) (skip bool, _ error) {
	var ve *structs.ValidationError
	switch {
	case err == nil:
		return false, nil
	case deregister && errors.Is(err, structs.ErrNotFound):
		return false, nil
	case errors.As(err, &ve):
		l.logger.Warn("catalog refused entry; it stays out of sync", "op", what, kind, id, "error", err)
		return true, nil
	}
	return false, err
}
