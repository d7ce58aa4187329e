package local

import (
	"context"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/trellismesh/trellis/raftstore/structs"
)

// DefaultCheckUpdateInterval is how long an output-only change of a check is
// held back before it is synced (Consul's check_update_interval).
const DefaultCheckUpdateInterval = 5 * time.Minute

// rpcClient reads and writes the catalog: in process on a server agent,
// over the internal RPC on a client agent. method is one of the
// structs.Method* constants; args and reply are pointers to the request and
// reply types named beside it.
type rpcClient interface {
	RPC(ctx context.Context, method string, args any, reply any) error
}

// Config is the node identity and behaviour of a State.
type Config struct {
	// NodeName is this node's name in the catalog. Required.
	NodeName string
	// NodeID is the node's UUID; may be empty.
	NodeID string
	// Datacenter is put on every request; empty means the server's own.
	Datacenter string
	// Address is the node's address in the catalog.
	Address         string
	TaggedAddresses map[string]string
	NodeMeta        map[string]string

	// CheckUpdateInterval holds back output-only check changes; see the
	// package doc. Zero means DefaultCheckUpdateInterval; negative syncs
	// every output change at once (the agent maps a configured
	// check_update_interval of 0s to -1).
	CheckUpdateInterval time.Duration

	// ServerOwnedCheckIDs are checks the servers write on this node (the
	// gossip health check, in the cluster issue). Anti-entropy neither
	// removes nor changes them.
	ServerOwnedCheckIDs []string

	// OnChange is called after every change that the catalog must hear
	// about: the agent points it at the anti-entropy trigger. It is called
	// without any lock held, possibly from several goroutines at once, and
	// must not block. May be nil.
	OnChange func()

	// Logger is named "local"; nil means hclog.Default().
	Logger hclog.Logger
}

// ServiceState is a service registered on this agent.
type ServiceState struct {
	Service *structs.NodeService
	// InSync reports whether the catalog holds this service as it is here.
	InSync bool
	// Deleted marks a service removed here but not yet from the catalog.
	Deleted bool
}

// Clone returns a deep copy of s.
func (s *ServiceState) Clone() *ServiceState {
	c := *s
	c.Service = s.Service.Clone()
	return &c
}

// CheckState is a check registered on this agent.
type CheckState struct {
	// Check is the check as the catalog shows it (status, output, …).
	Check *structs.HealthCheck
	// Def is what the agent runs; nil for a check with no runner.
	Def *structs.CheckType
	// InSync reports whether the catalog holds this check as it is here
	// (output may lag by up to CheckUpdateInterval).
	InSync bool
	// Deleted marks a check removed here but not yet from the catalog.
	Deleted bool
	// CriticalTime is when the check last became critical; zero when it is
	// not critical.
	CriticalTime time.Time

	// deferTimer, when set, marks the check out of sync once the deferred
	// output is due. Owned by the State; guarded by State.mu.
	deferTimer *time.Timer
}

// Clone returns a deep copy of c.
func (c *CheckState) Clone() *CheckState {
	cc := *c
	cc.Check = c.Check.Clone()
	cc.Def = cloneCheckType(c.Def)
	cc.deferTimer = nil
	return &cc
}

// Critical reports whether the check is critical.
func (c *CheckState) Critical() bool { return c.Check.Status == structs.HealthCritical }

// CriticalFor returns how long the check has been critical at now; 0 when
// it is not critical.
func (c *CheckState) CriticalFor(now time.Time) time.Duration {
	if !c.Critical() || c.CriticalTime.IsZero() {
		return 0
	}
	return now.Sub(c.CriticalTime)
}

func cloneCheckType(d *structs.CheckType) *structs.CheckType {
	if d == nil {
		return nil
	}
	c := *d
	c.Header = maps.Clone(d.Header)
	for k, v := range c.Header {
		c.Header[k] = slices.Clone(v)
	}
	return &c
}

// State is the local state of an agent. All methods are safe for concurrent
// use; getters return copies the caller owns.
type State struct {
	cfg            Config
	rpc            rpcClient
	logger         hclog.Logger
	deferInterval  time.Duration // <= 0: no deferral
	serverOwned    map[string]bool
	onChange       func()
	deferredFlight sync.WaitGroup // deferred-output timers whose callback may run

	// syncMu serialises SyncFull and SyncChanges; it is taken before mu.
	syncMu sync.Mutex

	mu         sync.Mutex
	closed     bool                     // guarded by mu
	nodeInSync bool                     // guarded by mu
	services   map[string]*ServiceState // guarded by mu
	checks     map[string]*CheckState   // guarded by mu
	watchCh    chan struct{}            // guarded by mu; closed and replaced on change
}

// New returns an empty State for the node cfg describes, reading and writing
// the catalog through rpc.
func New(cfg Config, rpc rpcClient) (*State, error) {
	if cfg.NodeName == "" {
		return nil, structs.Invalid("NodeName", "empty")
	}
	if rpc == nil {
		return nil, fmt.Errorf("local state for node %q: no RPC client", cfg.NodeName)
	}
	if err := structs.ValidateMeta("NodeMeta", cfg.NodeMeta); err != nil {
		return nil, err
	}
	cfg.TaggedAddresses = maps.Clone(cfg.TaggedAddresses)
	cfg.NodeMeta = maps.Clone(cfg.NodeMeta)
	cfg.ServerOwnedCheckIDs = slices.Clone(cfg.ServerOwnedCheckIDs)
	logger := cfg.Logger
	if logger == nil {
		logger = hclog.Default()
	}
	deferInterval := cfg.CheckUpdateInterval
	if deferInterval == 0 {
		deferInterval = DefaultCheckUpdateInterval
	}
	onChange := cfg.OnChange
	if onChange == nil {
		onChange = func() {}
	}
	owned := make(map[string]bool, len(cfg.ServerOwnedCheckIDs))
	for _, id := range cfg.ServerOwnedCheckIDs {
		owned[id] = true
	}
	return &State{
		cfg:           cfg,
		rpc:           rpc,
		logger:        logger.Named("local"),
		deferInterval: deferInterval,
		serverOwned:   owned,
		onChange:      onChange,
		services:      make(map[string]*ServiceState),
		checks:        make(map[string]*CheckState),
		watchCh:       make(chan struct{}),
	}, nil
}

// Close stops the deferred-output timers and waits for any that is firing.
// Output changes after Close are synced only with the next status change.
// The state stays readable and writable. Close may be called more than once.
func (l *State) Close() {
	l.mu.Lock()
	l.closed = true
	for _, cs := range l.checks {
		l.stopDeferLocked(cs)
	}
	l.mu.Unlock()
	l.deferredFlight.Wait()
}

// NodeName returns the node's name.
func (l *State) NodeName() string { return l.cfg.NodeName }

// Node returns the node as this agent registers it.
func (l *State) Node() *structs.Node {
	return &structs.Node{
		ID:              l.cfg.NodeID,
		Node:            l.cfg.NodeName,
		Address:         l.cfg.Address,
		Datacenter:      l.cfg.Datacenter,
		TaggedAddresses: maps.Clone(l.cfg.TaggedAddresses),
		Meta:            maps.Clone(l.cfg.NodeMeta),
	}
}

// WatchCh returns a channel that is closed at the next change of the local
// state, output-only check updates included.
func (l *State) WatchCh() <-chan struct{} {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.watchCh
}

// changedLocked wakes the watchers. l.mu must be held.
func (l *State) changedLocked() {
	close(l.watchCh)
	l.watchCh = make(chan struct{})
}

// AddService adds or replaces a service. Its ID defaults to its name. The
// service is copied; it is validated first and nothing changes when it is
// invalid. Checks already registered for the service follow its name and
// tags.
func (l *State) AddService(svc *structs.NodeService) error {
	if svc == nil {
		return structs.Invalid("Service", "missing")
	}
	s := svc.Clone()
	s.RaftIndex = structs.RaftIndex{}
	if s.ID == "" {
		s.ID = s.Service
	}
	if err := s.Validate(); err != nil {
		return fmt.Errorf("add service %q: %w", s.ID, err)
	}

	l.mu.Lock()
	old := l.services[s.ID]
	if old != nil && !old.Deleted && old.InSync && old.Service.IsSame(s) {
		l.mu.Unlock()
		return nil // nothing to do
	}
	l.services[s.ID] = &ServiceState{Service: s}
	for _, cs := range l.checks {
		if cs.Deleted || cs.Check.ServiceID != s.ID {
			continue
		}
		if cs.Check.ServiceName != s.Service || !slices.Equal(cs.Check.ServiceTags, s.Tags) {
			cs.Check.ServiceName = s.Service
			cs.Check.ServiceTags = slices.Clone(s.Tags)
			cs.InSync = false
		}
	}
	l.changedLocked()
	l.mu.Unlock()
	l.onChange()
	return nil
}

// RemoveService removes a service and its checks. The error wraps
// structs.ErrNotFound when no such service is registered.
func (l *State) RemoveService(id string) error {
	l.mu.Lock()
	ss := l.services[id]
	if ss == nil || ss.Deleted {
		l.mu.Unlock()
		return fmt.Errorf("remove service %q: %w", id, structs.ErrNotFound)
	}
	ss.Deleted = true
	ss.InSync = false
	for _, cs := range l.checks {
		if !cs.Deleted && cs.Check.ServiceID == id {
			l.deleteCheckLocked(cs)
		}
	}
	l.changedLocked()
	l.mu.Unlock()
	l.onChange()
	return nil
}

// deleteCheckLocked marks a check removed. l.mu must be held.
func (l *State) deleteCheckLocked(cs *CheckState) {
	cs.Deleted = true
	cs.InSync = false
	l.stopDeferLocked(cs)
}

// AddCheck adds or replaces a check; def is what runs it (nil for none).
// The check's Node is set to this node; a service check (ServiceID set)
// needs that service registered here and takes its name and tags. Status
// defaults to critical. Both are copied; nothing changes on error.
func (l *State) AddCheck(check *structs.HealthCheck, def *structs.CheckType) error {
	if check == nil {
		return structs.Invalid("Check", "missing")
	}
	c := check.Clone()
	c.RaftIndex = structs.RaftIndex{}
	if c.CheckID == "" {
		return structs.Invalid("CheckID", "empty")
	}
	if c.Status == "" {
		c.Status = structs.HealthCritical
	}
	if !structs.ValidHealthState(c.Status) {
		return fmt.Errorf("add check %q: %w", c.CheckID, structs.Invalid("Status", "%q is not one of passing, warning, critical", c.Status))
	}
	if def != nil {
		if err := def.Validate("Check"); err != nil {
			return fmt.Errorf("add check %q: %w", c.CheckID, err)
		}
		c.Type = def.Type()
		c.Definition = def.Definition()
	}
	c.Node = l.cfg.NodeName

	l.mu.Lock()
	if l.serverOwned[c.CheckID] {
		l.mu.Unlock()
		return fmt.Errorf("add check %q: %w", c.CheckID, structs.Invalid("CheckID", "%q is reserved for the servers", c.CheckID))
	}
	if c.ServiceID != "" {
		ss := l.services[c.ServiceID]
		if ss == nil || ss.Deleted {
			l.mu.Unlock()
			return fmt.Errorf("add check %q: service %q: %w", c.CheckID, c.ServiceID, structs.ErrNotFound)
		}
		c.ServiceName = ss.Service.Service
		c.ServiceTags = slices.Clone(ss.Service.Tags)
	} else {
		c.ServiceName, c.ServiceTags = "", nil
	}
	cs := &CheckState{Check: c, Def: cloneCheckType(def)}
	if old := l.checks[c.CheckID]; old != nil {
		l.stopDeferLocked(old)
		if !old.Deleted && old.Critical() && cs.Critical() {
			cs.CriticalTime = old.CriticalTime
		}
	}
	if cs.Critical() && cs.CriticalTime.IsZero() {
		cs.CriticalTime = time.Now()
	}
	l.checks[c.CheckID] = cs
	l.changedLocked()
	l.mu.Unlock()
	l.onChange()
	return nil
}

// RemoveCheck removes a check. The error wraps structs.ErrNotFound when no
// such check is registered.
func (l *State) RemoveCheck(id string) error {
	l.mu.Lock()
	cs := l.checks[id]
	if cs == nil || cs.Deleted {
		l.mu.Unlock()
		return fmt.Errorf("remove check %q: %w", id, structs.ErrNotFound)
	}
	l.deleteCheckLocked(cs)
	l.changedLocked()
	l.mu.Unlock()
	l.onChange()
	return nil
}

// UpdateCheck sets a check's status and output; it is how check runners
// report (it satisfies checks.Notifier). Unknown checks are ignored: a
// runner may report once more after its check was removed. A status change
// syncs at once; an output-only change is deferred (see the package doc).
// An update that changes nothing does nothing.
func (l *State) UpdateCheck(id string, status, output string) {
	if !structs.ValidHealthState(status) {
		l.logger.Warn("ignoring check update with an invalid status", "check", id, "status", status)
		return
	}
	l.mu.Lock()
	cs := l.checks[id]
	if cs == nil || cs.Deleted {
		l.mu.Unlock()
		l.logger.Debug("ignoring update of unknown check", "check", id)
		return
	}
	c := cs.Check
	if c.Status == status && c.Output == output {
		l.mu.Unlock()
		return
	}
	statusChanged := c.Status != status
	if statusChanged {
		switch {
		case status == structs.HealthCritical:
			cs.CriticalTime = time.Now()
		case c.Status == structs.HealthCritical:
			cs.CriticalTime = time.Time{}
		}
	}
	c.Status, c.Output = status, output
	notify := false
	switch {
	case statusChanged || l.deferInterval <= 0:
		l.stopDeferLocked(cs)
		cs.InSync = false
		notify = true
	case cs.InSync:
		l.deferOutputLocked(id, cs)
	}
	l.changedLocked()
	l.mu.Unlock()
	if notify {
		l.onChange()
	}
}

// deferOutputLocked arms the check's deferred-output timer unless it is
// armed already. l.mu must be held.
func (l *State) deferOutputLocked(id string, cs *CheckState) {
	if cs.deferTimer != nil || l.closed {
		return
	}
	d := l.deferInterval/2 + rand.N(l.deferInterval)
	l.deferredFlight.Add(1)
	cs.deferTimer = time.AfterFunc(d, func() {
		defer l.deferredFlight.Done()
		l.mu.Lock()
		if l.checks[id] != cs || cs.deferTimer == nil || cs.Deleted {
			l.mu.Unlock()
			return
		}
		cs.deferTimer = nil
		cs.InSync = false
		l.changedLocked()
		l.mu.Unlock()
		l.onChange()
	})
}

// stopDeferLocked disarms the check's deferred-output timer. l.mu must be held.
func (l *State) stopDeferLocked(cs *CheckState) {
	if cs.deferTimer == nil {
		return
	}
	if cs.deferTimer.Stop() {
		l.deferredFlight.Done() // the callback will not run
	}
	cs.deferTimer = nil
}

// Service returns a copy of a service, or nil when it is not registered.
func (l *State) Service(id string) *structs.NodeService {
	l.mu.Lock()
	defer l.mu.Unlock()
	ss := l.services[id]
	if ss == nil || ss.Deleted {
		return nil
	}
	return ss.Service.Clone()
}

// Services returns copies of the registered services by ID.
func (l *State) Services() map[string]*structs.NodeService {
	l.mu.Lock()
	defer l.mu.Unlock()
	m := make(map[string]*structs.NodeService, len(l.services))
	for id, ss := range l.services {
		if !ss.Deleted {
			m[id] = ss.Service.Clone()
		}
	}
	return m
}

// ServiceState returns a copy of a service's state, or nil when it is not
// registered.
func (l *State) ServiceState(id string) *ServiceState {
	l.mu.Lock()
	defer l.mu.Unlock()
	ss := l.services[id]
	if ss == nil || ss.Deleted {
		return nil
	}
	return ss.Clone()
}

// Check returns a copy of a check, or nil when it is not registered.
func (l *State) Check(id string) *structs.HealthCheck {
	l.mu.Lock()
	defer l.mu.Unlock()
	cs := l.checks[id]
	if cs == nil || cs.Deleted {
		return nil
	}
	return cs.Check.Clone()
}

// Checks returns copies of the registered checks by ID.
func (l *State) Checks() map[string]*structs.HealthCheck {
	return l.checksWhere(func(*CheckState) bool { return true })
}

// ChecksForService returns copies of the checks of one service by ID (its
// own checks, not the node's).
func (l *State) ChecksForService(serviceID string) map[string]*structs.HealthCheck {
	return l.checksWhere(func(cs *CheckState) bool { return cs.Check.ServiceID == serviceID })
}

func (l *State) checksWhere(keep func(*CheckState) bool) map[string]*structs.HealthCheck {
	l.mu.Lock()
	defer l.mu.Unlock()
	m := make(map[string]*structs.HealthCheck)
	for id, cs := range l.checks {
		if !cs.Deleted && keep(cs) {
			m[id] = cs.Check.Clone()
		}
	}
	return m
}

// CheckState returns a copy of a check's state, definition included, or nil
// when it is not registered.
func (l *State) CheckState(id string) *CheckState {
	l.mu.Lock()
	defer l.mu.Unlock()
	cs := l.checks[id]
	if cs == nil || cs.Deleted {
		return nil
	}
	return cs.Clone()
}

// CriticalCheckStates returns copies of the states of the critical checks by
// ID.
func (l *State) CriticalCheckStates() map[string]*CheckState {
	l.mu.Lock()
	defer l.mu.Unlock()
	m := make(map[string]*CheckState)
	for id, cs := range l.checks {
		if !cs.Deleted && cs.Critical() {
			m[id] = cs.Clone()
		}
	}
	return m
}
