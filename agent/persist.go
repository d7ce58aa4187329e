package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/trellismesh/trellis/agent/local"
	"github.com/trellismesh/trellis/raftstore/structs"
)

// persister keeps the services and checks registered through the API (not
// those of config files, which are read again at start) in the data
// directory, so a restarted agent registers them again.
type persister struct {
	path   string
	logger hclog.Logger

	mu       sync.Mutex
	notSaved map[string]bool // service IDs from config files; guarded by mu
	last     []byte          // last content written; guarded by mu
}

func newPersister(path string, logger hclog.Logger) *persister {
	return &persister{path: path, logger: logger.Named("persist"), notSaved: map[string]bool{}}
}

// setPersisted says whether a service is kept across restarts.
func (p *persister) setPersisted(serviceID string, keep bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if keep {
		delete(p.notSaved, serviceID)
	} else {
		p.notSaved[serviceID] = true
	}
}

// persistedState is the file's content.
type persistedState struct {
	Services   []persistedService
	NodeChecks []persistedCheck
}

type persistedService struct {
	Service *structs.NodeService
	Checks  []persistedCheck
}

type persistedCheck struct {
	Check *structs.HealthCheck
	Def   *structs.CheckType
}

// snapshot builds the content to keep from the local state.
func (p *persister) snapshot(l *local.State) persistedState {
	p.mu.Lock()
	skip := maps.Clone(p.notSaved)
	p.mu.Unlock()
	var out persistedState
	services := l.Services()
	for _, id := range slices.Sorted(maps.Keys(services)) {
		if skip[id] {
			continue
		}
		ps := persistedService{Service: services[id]}
		checks := l.ChecksForService(id)
		for _, cid := range slices.Sorted(maps.Keys(checks)) {
			if cs := l.CheckState(cid); cs != nil {
				ps.Checks = append(ps.Checks, persistedCheck{Check: definitionOnly(cs.Check), Def: cs.Def})
			}
		}
		out.Services = append(out.Services, ps)
	}
	checks := l.Checks()
	for _, cid := range slices.Sorted(maps.Keys(checks)) {
		c := checks[cid]
		if c.ServiceID != "" || c.CheckID == "serfHealth" {
			continue
		}
		if cs := l.CheckState(cid); cs != nil {
			out.NodeChecks = append(out.NodeChecks, persistedCheck{Check: definitionOnly(cs.Check), Def: cs.Def})
		}
	}
	return out
}

// definitionOnly drops what changes at run time (output, indexes), so the
// file changes only when registrations do.
func definitionOnly(c *structs.HealthCheck) *structs.HealthCheck {
	c = c.Clone()
	c.Output = ""
	c.RaftIndex = structs.RaftIndex{}
	return c
}

// save writes the file when its content changed (atomically, mode 0600).
func (p *persister) save(l *local.State) error {
	b, err := json.MarshalIndent(p.snapshot(l), "", "  ")
	if err != nil {
		return fmt.Errorf("encode local state: %w", err)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if bytes.Equal(b, p.last) {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(p.path), 0o700); err != nil {
		return fmt.Errorf("persist local state: %w", err)
	}
	tmp := p.path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return fmt.Errorf("persist local state: %w", err)
	}
	if err := os.Rename(tmp, p.path); err != nil {
		return fmt.Errorf("persist local state: %w", err)
	}
	p.last = b
	return nil
}

// load reads the file; a missing file is an empty state.
func (p *persister) load() (persistedState, error) {
	var st persistedState
	b, err := os.ReadFile(p.path)
	if errors.Is(err, os.ErrNotExist) {
		return st, nil
	}
	if err != nil {
		return st, fmt.Errorf("read local state: %w", err)
	}
	if err := json.Unmarshal(b, &st); err != nil {
		return st, fmt.Errorf("local state %s is damaged (%v): move it away to start without it", p.path, err)
	}
	return st, nil
}

// restoreLocal registers again what the previous run kept.
func (a *Agent) restoreLocal(ctx context.Context) error {
	st, err := a.persist.load()
	if err != nil {
		return err
	}
	for _, ps := range st.Services {
		var defs []*structs.CheckType
		for _, c := range ps.Checks {
			if c.Def != nil {
				defs = append(defs, c.Def)
			}
		}
		if err := a.addService(ctx, ps.Service, defs, false, true); err != nil {
			a.logger.Warn("could not restore a service; skipping it", "service", ps.Service.ID, "error", err)
		}
	}
	for _, c := range st.NodeChecks {
		if err := a.AddCheck(ctx, c.Check, c.Def); err != nil {
			a.logger.Warn("could not restore a check; skipping it", "check", c.Check.CheckID, "error", err)
		}
	}
	if n := len(st.Services) + len(st.NodeChecks); n > 0 {
		a.logger.Info("restored services and checks registered before the restart", "services", len(st.Services), "node_checks", len(st.NodeChecks))
	}
	return nil
}

// persistLoop saves the local state after changes (coalesced) until ctx ends.
func (a *Agent) persistLoop(ctx context.Context) {
	for {
		ch := a.state.WatchCh()
		if err := a.persist.save(a.state); err != nil {
			a.logger.Error("persist local state", "error", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-ch:
		}
		select { // coalesce bursts of changes
		case <-ctx.Done():
			return
		case <-time.After(100 * time.Millisecond):
		}
	}
}
