package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"

	"github.com/trellismesh/trellis/agent/checks"
	"github.com/trellismesh/trellis/agent/httpapi"
	"github.com/trellismesh/trellis/agent/telemetry"
	"github.com/trellismesh/trellis/raftstore/structs"
	"github.com/trellismesh/trellis/version"
)

var _ httpapi.Agent = (*Agent)(nil)

// Self describes this agent.
func (a *Agent) Self() httpapi.Self {
	stats := map[string]map[string]string{
		"agent": {"checks": fmt.Sprint(len(a.state.Checks())), "services": fmt.Sprint(len(a.state.Services()))},
	}
	if a.server != nil {
		stats["raft"] = a.server.Stats()
	}
	return httpapi.Self{
		Config: httpapi.SelfConfig{
			Datacenter: a.cfg.Datacenter, PrimaryDatacenter: a.cfg.Datacenter, NodeName: a.cfg.NodeName,
			NodeID: a.cfg.NodeID, Server: a.cfg.Server, Revision: version.GitCommit, Version: version.Short(),
		},
		Member: a.member(),
		Stats:  stats,
		Meta:   map[string]string{},
	}
}

// LocalServices returns the services registered here, sorted by ID.
func (a *Agent) LocalServices() []*structs.NodeService {
	svcs := a.state.Services()
	out := make([]*structs.NodeService, 0, len(svcs))
	for _, id := range slices.Sorted(maps.Keys(svcs)) {
		out = append(out, svcs[id])
	}
	return out
}

// LocalChecks returns the checks registered here, sorted by ID.
func (a *Agent) LocalChecks() []*structs.HealthCheck {
	cs := a.state.Checks()
	out := make([]*structs.HealthCheck, 0, len(cs))
	for _, id := range slices.Sorted(maps.Keys(cs)) {
		out = append(out, cs[id])
	}
	return out
}

// AddService registers a service and its checks and starts the checks. It
// is kept in the data directory, so it survives a restart of the agent.
func (a *Agent) AddService(ctx context.Context, svc *structs.NodeService, defs []*structs.CheckType, replaceExistingChecks bool) error {
	return a.addService(ctx, svc, defs, replaceExistingChecks, true)
}

// addService registers a service; persist says whether it is kept across
// restarts (services from config files are not: the files are read again).
func (a *Agent) addService(_ context.Context, svc *structs.NodeService, defs []*structs.CheckType, replaceExistingChecks, persist bool) error {
	a.runMu.Lock()
	defer a.runMu.Unlock()
	svc, sidecar, err := a.expandSidecar(svc)
	if err != nil {
		return err
	}
	if a.persist != nil {
		a.persist.setPersisted(svc.ID, persist)
	}
	if err := a.state.AddService(svc); err != nil {
		if sidecar != nil {
			a.proxies.ReleasePort(sidecar.ID)
		}
		return err
	}
	if sidecar != nil {
		if a.persist != nil {
			a.persist.setPersisted(sidecar.ID, persist)
		}
		if err := a.state.AddService(sidecar); err != nil {
			a.proxies.ReleasePort(sidecar.ID)
			return fmt.Errorf("register the sidecar of %q: %w", svc.ID, err)
		}
	}
	keep := map[string]bool{}
	for _, def := range defs {
		keep[def.CheckID] = true
		if err := a.addCheckLocked(checkFromDef(def, svc.ID), def); err != nil {
			return fmt.Errorf("service %q: %w", svc.ID, err)
		}
	}
	if replaceExistingChecks {
		for id := range a.state.ChecksForService(svc.ID) {
			if !keep[id] {
				a.stopRunnerLocked(id)
				if err := a.state.RemoveCheck(id); err != nil && !errors.Is(err, structs.ErrNotFound) {
					return err
				}
			}
		}
	}
	return nil
}

// checkFromDef is the catalog form of a new check.
func checkFromDef(def *structs.CheckType, serviceID string) *structs.HealthCheck {
	status := def.Status
	if status == "" {
		status = structs.HealthCritical
	}
	return &structs.HealthCheck{
		CheckID: def.CheckID, Name: def.Name, Status: status, Notes: def.Notes, ServiceID: serviceID,
		Type: def.Type(), Definition: def.Definition(),
	}
}

// RemoveService deregisters a service, stopping its checks.
func (a *Agent) RemoveService(_ context.Context, id string) error {
	a.runMu.Lock()
	defer a.runMu.Unlock()
	return a.removeServiceLocked(id)
}

func (a *Agent) removeServiceLocked(id string) error {
	if a.state.Service(id) == nil {
		return fmt.Errorf("service %q: %w", id, structs.ErrNotFound)
	}
	// A sidecar registered with the service goes with it.
	if sid := a.sidecarOf(id); sid != "" {
		if err := a.removeServiceLocked(sid); err != nil {
			return fmt.Errorf("deregister the sidecar of %q: %w", id, err)
		}
	}
	for cid := range a.state.ChecksForService(id) {
		a.stopRunnerLocked(cid)
	}
	if a.persist != nil {
		a.persist.setPersisted(id, false)
	}
	return a.state.RemoveService(id)
}

// reapService is the reaper's removal: the service and its runners.
func (a *Agent) reapService(id string) error {
	a.runMu.Lock()
	defer a.runMu.Unlock()
	a.logger.Info("deregistering a service critical for too long", "service", id)
	return a.removeServiceLocked(id)
}

// AddCheck registers a check and starts it.
func (a *Agent) AddCheck(_ context.Context, chk *structs.HealthCheck, def *structs.CheckType) error {
	a.runMu.Lock()
	defer a.runMu.Unlock()
	if chk.ServiceID != "" && a.state.Service(chk.ServiceID) == nil {
		return fmt.Errorf("check %q: service %q: %w", chk.CheckID, chk.ServiceID, structs.ErrNotFound)
	}
	return a.addCheckLocked(chk, def)
}

func (a *Agent) addCheckLocked(chk *structs.HealthCheck, def *structs.CheckType) error {
	var runner checks.Check
	if def != nil {
		var err error
		runner, err = checks.New(checks.Config{CheckID: chk.CheckID, Def: def, Notifier: a.state, Logger: a.logger})
		if err != nil {
			return fmt.Errorf("check %q: %w", chk.CheckID, err)
		}
	}
	if err := a.state.AddCheck(chk, def); err != nil {
		return err
	}
	a.stopRunnerLocked(chk.CheckID)
	if runner != nil {
		a.runners[chk.CheckID] = runner
		runner.Start()
	}
	return nil
}

func (a *Agent) stopRunnerLocked(id string) {
	if r, ok := a.runners[id]; ok {
		r.Stop()
		delete(a.runners, id)
	}
}

// RemoveCheck deregisters a check, stopping it.
func (a *Agent) RemoveCheck(_ context.Context, id string) error {
	a.runMu.Lock()
	defer a.runMu.Unlock()
	if err := a.state.RemoveCheck(id); err != nil {
		return err
	}
	a.stopRunnerLocked(id)
	return nil
}

// UpdateTTLCheck sets the status of a TTL check.
func (a *Agent) UpdateTTLCheck(_ context.Context, id, status, output string) error {
	a.runMu.Lock()
	r, ok := a.runners[id]
	a.runMu.Unlock()
	if !ok {
		if a.state.Check(id) == nil {
			return fmt.Errorf("check %q: %w", id, structs.ErrNotFound)
		}
		return structs.Invalid("CheckID", "%q is not a TTL check", id)
	}
	ttl, isTTL := r.(*checks.TTL)
	if !isTTL {
		return structs.Invalid("CheckID", "%q is not a TTL check", id)
	}
	return ttl.SetStatus(status, output)
}

// MetricsJSON returns the metrics summary.
func (a *Agent) MetricsJSON() (any, error) { return a.tel.Summary() }

// WritePrometheus writes the metrics in Prometheus text format.
func (a *Agent) WritePrometheus(w io.Writer) error {
	if err := a.tel.WritePrometheus(w); err != nil {
		return err
	}
	if a.goldenTotals == nil {
		return nil
	}
	return telemetry.WriteMeshEdges(w, a.goldenTotals.Snapshot())
}
