package local

import (
	"context"
	"errors"
	"maps"
	"slices"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-metrics"

	"github.com/trellismesh/trellis/raftstore/structs"
)

// DefaultReapInterval is how often a Reaper looks for services to remove.
const DefaultReapInterval = 5 * time.Second

// ReaperConfig configures a Reaper.
type ReaperConfig struct {
	// State is read for critical checks. Required.
	State *State
	// Remove removes a service and everything the agent runs for it (its
	// check runners, its proxy). Nil means State.RemoveService, which leaves
	// the runners of the removed checks running; an agent passes its own.
	// An error wrapping structs.ErrNotFound counts as removed.
	Remove func(serviceID string) error
	// Interval is how often to look; zero means DefaultReapInterval. A
	// service goes at most this long after its deadline.
	Interval time.Duration
	// Logger is named "reaper"; nil means hclog.Default().
	Logger hclog.Logger
}

// Reaper removes services whose checks have been critical for longer than
// their definition's DeregisterCriticalServiceAfter (Consul's
// deregister_critical_service_after). Node checks never remove anything.
type Reaper struct {
	state    *State
	remove   func(string) error
	interval time.Duration
	logger   hclog.Logger
}

// NewReaper returns a Reaper; Run starts it.
func NewReaper(cfg ReaperConfig) (*Reaper, error) {
	if cfg.State == nil {
		return nil, errors.New("reaper: no local state")
	}
	r := &Reaper{state: cfg.State, remove: cfg.Remove, interval: cfg.Interval, logger: cfg.Logger}
	if r.remove == nil {
		r.remove = cfg.State.RemoveService
	}
	if r.interval <= 0 {
		r.interval = DefaultReapInterval
	}
	if r.logger == nil {
		r.logger = hclog.Default()
	}
	r.logger = r.logger.Named("reaper")
	return r, nil
}

// Run reaps every Interval until ctx ends.
func (r *Reaper) Run(ctx context.Context) {
	ticker := time.NewTicker(r.interval)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-ticker.C:
			r.Reap(now)
		}
	}
}

// Reap removes, once each, the services that are due at now, and returns
// their IDs in order. Failures are logged and retried at the next pass.
func (r *Reaper) Reap(now time.Time) []string {
	due := make(map[string]string) // service ID → the check that condemned it
	for id, cs := range r.state.CriticalCheckStates() {
		if cs.Def == nil || cs.Def.DeregisterCriticalServiceAfter <= 0 || cs.Check.ServiceID == "" {
			continue
		}
		if cs.CriticalFor(now) > cs.Def.DeregisterCriticalServiceAfter {
			due[cs.Check.ServiceID] = id
		}
	}
	var removed []string
	for _, svc := range slices.Sorted(maps.Keys(due)) {
		err := r.remove(svc)
		if err != nil && !errors.Is(err, structs.ErrNotFound) {
			r.logger.Error("remove critical service", "service", svc, "check", due[svc], "error", err)
			continue
		}
		metrics.IncrCounter([]string{"trellis", "local", "reaped_services"}, 1)
		r.logger.Info("removed service whose check stayed critical", "service", svc, "check", due[svc])
		removed = append(removed, svc)
	}
	return removed
}
