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
	"github.com/trellismesh/trellis/agent/proxymgr"
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
// The proxy of a sidecar (of the service's sidecar_service, or the service
// itself when it is a connect-proxy the agent runs) starts as part of the
// registration: when one of its listeners cannot be bound the registration
// is refused with a *proxymgr.ListenerError (409 when the address is in
// use, 400 when it is not one this host has) and nothing changes; a
// running proxy of the same sidecar keeps serving with its previous
// configuration.
func (a *Agent) AddService(_ context.Context, svc *structs.NodeService, defs []*structs.CheckType, replaceExistingChecks bool) error {
	return a.registerService(svc, defs, replaceExistingChecks, true, false)
}

// addService registers a service at start-up: persist is true for the
// services restored from the data directory and false for those of config
// files (which are not kept: the files are read again). A config file's
// sidecar whose listeners cannot be bound fails the start, as a config
// file's other mistakes do. A restored one is registered all the same,
// since nobody is there to refuse: its proxy does not run, the error is
// logged, and its proxy check (proxyCheckID) is critical until the sidecar
// is registered again.
func (a *Agent) addService(_ context.Context, svc *structs.NodeService, defs []*structs.CheckType, replaceExistingChecks, persist bool) error {
	return a.registerService(svc, defs, replaceExistingChecks, persist, persist)
}

// proxyCheckID is the ID of the check the agent adds to a sidecar whose
// proxy it could not start when it restored the sidecar's registration.
func proxyCheckID(sidecarID string) string { return "proxy:" + sidecarID }

// registerService registers a service, with its sidecar and checks, all or
// nothing: everything that can be refused (the services, the checks, the
// proxies' listeners) is checked or bound first. keepUnstarted registers a
// sidecar whose proxy cannot start, its proxy check critical, instead of
// refusing it.
func (a *Agent) registerService(svc *structs.NodeService, defs []*structs.CheckType, replaceExistingChecks, persist, keepUnstarted bool) error {
	a.runMu.Lock()
	defer a.runMu.Unlock()
	if svc == nil {
		return structs.Invalid("Service", "missing")
	}
	if svc.ID == "" {
		svc = svc.Clone()
		svc.ID = svc.Service
	}
	id := svc.ID
	svc, sidecar, err := a.expandSidecar(svc)
	if err != nil {
		var le *proxymgr.ListenerError
		if errors.As(err, &le) || errors.Is(err, structs.ErrConflict) {
			return fmt.Errorf("service %q: %w", id, err)
		}
		return err
	}
	regs := []*structs.NodeService{svc}
	if sidecar != nil {
		regs = append(regs, sidecar)
	}
	var changes []*proxymgr.Change
	fail := func(err error) error {
		for _, c := range changes {
			c.Abort()
		}
		if sidecar != nil {
			a.proxies.ReleasePort(sidecar.ID)
		}
		return err
	}

	// What can be refused, before anything changes.
	for _, s := range regs {
		if err := s.Validate(); err != nil {
			return fail(fmt.Errorf("add service %q: %w", s.ID, err))
		}
	}
	runners := make([]checks.Check, len(defs))
	for i, def := range defs {
		if runners[i], err = a.newRunner(checkFromDef(def, svc.ID), def); err != nil {
			return fail(fmt.Errorf("service %q: %w", svc.ID, err))
		}
	}
	unstarted := map[string]error{}
	if a.proxies != nil {
		// The sidecar's first: its change is the one that can fail at
		// Commit, before anything else is applied.
		for _, s := range slices.Backward(regs) {
			c, err := a.proxies.Prepare(s)
			if err != nil {
				if !keepUnstarted || !proxymgr.Managed(s) {
					return fail(fmt.Errorf("service %q: %w", svc.ID, err))
				}
				unstarted[s.ID] = err
				continue
			}
			changes = append(changes, c)
		}
		for _, c := range changes {
			if err := c.Commit(); err != nil {
				return fail(fmt.Errorf("service %q: %w", svc.ID, err)) // Abort skips those applied
			}
		}
	}

	for _, s := range regs {
		if a.persist != nil {
			a.persist.setPersisted(s.ID, persist)
		}
		if err := a.state.AddService(s); err != nil {
			// Validated above: not expected.
			if s != svc {
				err = fmt.Errorf("register the sidecar of %q: %w", svc.ID, err)
			}
			if a.proxies != nil {
				a.proxies.Stop(s.ID)
			}
			return err
		}
		a.setProxyCheckLocked(s, unstarted[s.ID])
	}
	keep := map[string]bool{}
	for i, def := range defs {
		keep[def.CheckID] = true
		if err := a.installCheckLocked(checkFromDef(def, svc.ID), def, runners[i]); err != nil {
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

// setProxyCheckLocked makes the proxy check of s critical with why its
// proxy did not start, or removes it when startErr is nil. runMu must be
// held.
func (a *Agent) setProxyCheckLocked(s *structs.NodeService, startErr error) {
	id := proxyCheckID(s.ID)
	if startErr == nil {
		if c := a.state.Check(id); c != nil && c.ServiceID == s.ID && c.Type == "" && s.Kind == structs.ServiceKindConnectProxy {
			_ = a.state.RemoveCheck(id)
		}
		return
	}
	a.logger.Error("the proxy of a restored sidecar cannot start; the sidecar is critical until it is registered again", "proxy", s.ID, "error", startErr)
	chk := &structs.HealthCheck{
		CheckID: id, Name: "Sidecar proxy", ServiceID: s.ID, Status: structs.HealthCritical,
		Notes:  "The agent runs this sidecar's proxy. Critical: the proxy could not start when the agent restored the registration; register the sidecar again once its ports are free.",
		Output: startErr.Error(),
	}
	if err := a.state.AddCheck(chk, nil); err != nil {
		a.logger.Error("mark the sidecar critical", "proxy", s.ID, "error", err)
	}
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
	if a.proxies != nil {
		a.proxies.Stop(id)
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
	runner, err := a.newRunner(chk, def)
	if err != nil {
		return err
	}
	return a.installCheckLocked(chk, def, runner)
}

// newRunner returns what runs check chk as def says, not started; nil for
// a check without a definition.
func (a *Agent) newRunner(chk *structs.HealthCheck, def *structs.CheckType) (checks.Check, error) {
	if def == nil {
		return nil, nil
	}
	runner, err := checks.New(checks.Config{CheckID: chk.CheckID, Def: def, Notifier: a.state, Logger: a.logger})
	if err != nil {
		return nil, fmt.Errorf("check %q: %w", chk.CheckID, err)
	}
	return runner, nil
}

// installCheckLocked registers a check and starts its runner (nil for
// none). runMu must be held.
func (a *Agent) installCheckLocked(chk *structs.HealthCheck, def *structs.CheckType, runner checks.Check) error {
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
