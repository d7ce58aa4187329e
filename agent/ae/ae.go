// Package ae is anti-entropy: a StateSyncer that keeps a SyncState (the
// agent's local state) in step with the catalog. It knows nothing of
// services or checks; it decides when to sync and what to do when syncing
// fails.
//
// # States
//
// The syncer is a small state machine, run by Run until its context ends:
//
//   - full sync: SyncFull (read the catalog, diff, push). On success the
//     next full sync is scheduled and the syncer waits in partial sync; on
//     failure it goes to retry.
//   - partial sync: wait for a Trigger (then SyncChanges, pushing only what
//     changed locally), the periodic full-sync timer or TriggerFull. A failed
//     SyncChanges goes to retry, since the catalog's state is then unknown.
//   - retry: wait a backoff that doubles with each consecutive failure
//     (RetryMin up to RetryMax, the actual wait drawn at random from its
//     upper half), then full sync. TriggerFull cuts the wait short (the agent
//     calls it when a server or leader appears).
//   - paused: between Pause and Resume nothing is synced; triggers and due
//     full syncs are remembered and run on Resume. A sync in progress when
//     Pause is called finishes.
//
// Every wait also ends when the context does.
//
// # Periodic full sync
//
// A full sync runs every Interval (one minute by default) plus up to half
// of it at random, so that agents started together do not sync together.
// Above 128 nodes the interval is multiplied by 1+ceil(log2(n/128)) (n from
// Config.ClusterSize): 2 at 256 nodes, 4 at 1,024, 8 at 10,000, so that the
// servers see roughly the same full-sync load whatever the cluster's size.
package ae

import (
	"context"
	"errors"
	"math"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-metrics"
)

// Defaults applied to zero Config fields.
const (
	// DefaultInterval is the base interval between full syncs.
	DefaultInterval = time.Minute
	// DefaultRetryMin is the wait after the first failed sync.
	DefaultRetryMin = time.Second
	// DefaultRetryMax caps the wait between failed syncs.
	DefaultRetryMax = 30 * time.Second
)

// scaleThreshold is the cluster size above which full syncs slow down.
const scaleThreshold = 128

// ErrRunning is returned by Run when the syncer is already running.
var ErrRunning = errors.New("anti-entropy: already running")

// SyncState is what a StateSyncer keeps in step. The syncer calls its
// methods from one goroutine, one at a time; both must return when ctx ends.
type SyncState interface {
	// SyncFull compares the whole local state with the catalog and pushes
	// every difference.
	SyncFull(ctx context.Context) error
	// SyncChanges pushes what changed locally since the last sync.
	SyncChanges(ctx context.Context) error
}

// Trigger asks for a partial sync. Fire never blocks, and any number of
// Fire calls between two syncs cause one sync. It is created apart from the
// StateSyncer so that the state it syncs can be given it at construction:
//
//	trig := ae.NewTrigger()
//	state, _ := local.New(local.Config{OnChange: trig.Fire, ...}, rpc)
//	syncer, _ := ae.NewStateSyncer(ae.Config{State: state, Trigger: trig})
type Trigger struct {
	ch chan struct{} // buffered 1: a pending request
}

// NewTrigger returns a Trigger.
func NewTrigger() *Trigger { return &Trigger{ch: make(chan struct{}, 1)} }

// Fire asks for a partial sync.
func (t *Trigger) Fire() {
	select {
	case t.ch <- struct{}{}:
	default: // one is pending already
	}
}

// Config configures a StateSyncer.
type Config struct {
	// State is what is synced. Required.
	State SyncState
	// Trigger carries partial-sync requests; nil makes a new one (reached
	// through StateSyncer.Trigger).
	Trigger *Trigger
	// Interval is the base interval between full syncs; zero means
	// DefaultInterval.
	Interval time.Duration
	// ClusterSize returns the number of nodes in the cluster, read before
	// each full sync is scheduled; nil means a small cluster.
	ClusterSize func() int
	// RetryMin and RetryMax bound the backoff after failed syncs; zero
	// means DefaultRetryMin and DefaultRetryMax.
	RetryMin, RetryMax time.Duration
	// Logger is named "anti_entropy"; nil means hclog.Default().
	Logger hclog.Logger
}

// StateSyncer runs anti-entropy for one SyncState; see the package doc.
// Its methods are safe for concurrent use.
type StateSyncer struct {
	state       SyncState
	trigger     *Trigger
	fullCh      chan struct{} // buffered 1: TriggerFull
	resumeCh    chan struct{} // buffered 1: the last Resume
	interval    time.Duration
	retryMin    time.Duration
	retryMax    time.Duration
	clusterSize func() int
	logger      hclog.Logger

	mu      sync.Mutex
	pauses  int  // guarded by mu
	running bool // guarded by mu
}

// NewStateSyncer returns a StateSyncer; Run starts it.
func NewStateSyncer(cfg Config) (*StateSyncer, error) {
	if cfg.State == nil {
		return nil, errors.New("anti-entropy: no state to sync")
	}
	s := &StateSyncer{
		state:       cfg.State,
		trigger:     cfg.Trigger,
		fullCh:      make(chan struct{}, 1),
		resumeCh:    make(chan struct{}, 1),
		interval:    cfg.Interval,
		retryMin:    cfg.RetryMin,
		retryMax:    cfg.RetryMax,
		clusterSize: cfg.ClusterSize,
		logger:      cfg.Logger,
	}
	if s.trigger == nil {
		s.trigger = NewTrigger()
	}
	if s.interval <= 0 {
		s.interval = DefaultInterval
	}
	if s.retryMin <= 0 {
		s.retryMin = DefaultRetryMin
	}
	if s.retryMax <= 0 {
		s.retryMax = DefaultRetryMax
	}
	s.retryMax = max(s.retryMax, s.retryMin)
	if s.clusterSize == nil {
		s.clusterSize = func() int { return 1 }
	}
	if s.logger == nil {
		s.logger = hclog.Default()
	}
	s.logger = s.logger.Named("anti_entropy")
	return s, nil
}

// Trigger asks for a partial sync; it never blocks, and requests made
// before the sync starts are served by that one sync.
func (s *StateSyncer) Trigger() { s.trigger.Fire() }

// TriggerFull asks for a full sync now, cutting short a retry backoff. It
// never blocks.
func (s *StateSyncer) TriggerFull() {
	select {
	case s.fullCh <- struct{}{}:
	default:
	}
}

// Pause stops syncing until the matching Resume; pauses nest. A sync in
// progress finishes. It may be called before Run.
func (s *StateSyncer) Pause() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pauses++
}

// Resume undoes one Pause; after the last one, syncs requested or due
// meanwhile run. A Resume without a Pause does nothing.
func (s *StateSyncer) Resume() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.pauses == 0 {
		return
	}
	s.pauses--
	if s.pauses == 0 {
		select {
		case s.resumeCh <- struct{}{}:
		default:
		}
	}
}

// Paused reports whether syncing is paused.
func (s *StateSyncer) Paused() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.pauses > 0
}

// Run syncs until ctx ends, starting with a full sync, and then returns nil.
// It returns ErrRunning at once if the syncer is already running.
func (s *StateSyncer) Run(ctx context.Context) error {
	s.mu.Lock()
	if s.running {
		s.mu.Unlock()
		return ErrRunning
	}
	s.running = true
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.running = false
		s.mu.Unlock()
	}()

	l := &loop{s: s, full: time.NewTimer(0)}
	l.full.Stop()
	defer l.full.Stop()
	st := stateFullSync
	for st != stateDone {
		next := l.step(ctx, st)
		if next != st {
			s.logger.Trace("state change", "from", st, "to", next)
		}
		st = next
	}
	return nil
}

// state is a state of the syncer's machine.
type state int

const (
	stateFullSync state = iota
	statePartialSync
	stateRetry
	statePaused
	stateDone
)

func (st state) String() string {
	switch st {
	case stateFullSync:
		return "full_sync"
	case statePartialSync:
		return "partial_sync"
	case stateRetry:
		return "retry"
	case statePaused:
		return "paused"
	case stateDone:
		return "done"
	}
	return "unknown"
}

// loop holds what one Run carries between states. Only Run's goroutine
// touches it.
type loop struct {
	s          *StateSyncer
	failures   int         // consecutive failed syncs
	full       *time.Timer // the next periodic full sync
	fullDue    bool        // a full sync was asked for or fell due while paused
	changesDue bool        // a partial sync was asked for while paused
}

func (l *loop) step(ctx context.Context, st state) state {
	switch st {
	case stateFullSync:
		return l.fullSync(ctx)
	case statePartialSync:
		return l.waitPartial(ctx)
	case stateRetry:
		return l.retry(ctx)
	case statePaused:
		return l.paused(ctx)
	}
	return stateDone
}

func (l *loop) fullSync(ctx context.Context) state {
	s := l.s
	if s.Paused() {
		l.fullDue = true
		return statePaused
	}
	l.fullDue, l.changesDue = false, false
	start := time.Now()
	err := s.state.SyncFull(ctx)
	metrics.MeasureSince([]string{"trellis", "anti_entropy", "sync_full"}, start)
	if ctx.Err() != nil {
		return stateDone
	}
	if err != nil {
		return l.failed("full", err)
	}
	l.failures = 0
	l.full.Reset(s.fullSyncWait())
	s.logger.Debug("full sync done", "took", time.Since(start))
	return statePartialSync
}

func (l *loop) waitPartial(ctx context.Context) state {
	s := l.s
	select {
	case <-ctx.Done():
		return stateDone
	case <-l.full.C:
		return stateFullSync
	case <-s.fullCh:
		return stateFullSync
	case <-s.trigger.ch:
		if s.Paused() {
			l.changesDue = true
			return statePaused
		}
		return l.partialSync(ctx)
	}
}

func (l *loop) partialSync(ctx context.Context) state {
	s := l.s
	l.changesDue = false
	start := time.Now()
	err := s.state.SyncChanges(ctx)
	metrics.MeasureSince([]string{"trellis", "anti_entropy", "sync_changes"}, start)
	if ctx.Err() != nil {
		return stateDone
	}
	if err != nil {
		return l.failed("partial", err)
	}
	l.failures = 0
	return statePartialSync
}

// failed counts and logs a failed sync and moves to retry.
func (l *loop) failed(kind string, err error) state {
	l.failures++
	metrics.IncrCounterWithLabels([]string{"trellis", "anti_entropy", "sync_failure"}, 1,
		[]metrics.Label{{Name: "kind", Value: kind}})
	log := l.s.logger.Warn
	if l.failures > 3 {
		log = l.s.logger.Error
	}
	log("sync failed; retrying with a full sync", "sync", kind, "failures", l.failures, "error", err)
	return stateRetry
}

func (l *loop) retry(ctx context.Context) state {
	s := l.s
	t := time.NewTimer(s.retryWait(l.failures))
	defer t.Stop()
	select {
	case <-ctx.Done():
		return stateDone
	case <-t.C:
	case <-s.fullCh:
	}
	return stateFullSync
}

func (l *loop) paused(ctx context.Context) state {
	s := l.s
	for s.Paused() {
		select {
		case <-ctx.Done():
			return stateDone
		case <-s.resumeCh:
		case <-l.full.C:
			l.fullDue = true
		case <-s.fullCh:
			l.fullDue = true
		case <-s.trigger.ch:
			l.changesDue = true
		}
	}
	switch {
	case l.fullDue:
		return stateFullSync
	case l.changesDue:
		return l.partialSync(ctx)
	}
	return statePartialSync
}

// fullSyncWait is the time until the next periodic full sync: the interval
// scaled to the cluster, plus up to half of it at random.
func (s *StateSyncer) fullSyncWait() time.Duration {
	d := s.interval * time.Duration(scaleFactor(s.clusterSize()))
	return d + rand.N(d/2+1)
}

// retryWait is the backoff after the given number of consecutive failures:
// RetryMin doubled per failure up to RetryMax, then a random point in its
// upper half.
func (s *StateSyncer) retryWait(failures int) time.Duration {
	d := s.retryMin
	for i := 1; i < failures && d < s.retryMax; i++ {
		d *= 2
	}
	d = min(d, s.retryMax)
	return d/2 + rand.N(d/2+1)
}

// scaleFactor is how much slower full syncs run in a cluster of n nodes:
// 1 up to 128 nodes, then 1+ceil(log2(n/128)).
func scaleFactor(n int) int {
	if n <= scaleThreshold {
		return 1
	}
	return 1 + int(math.Ceil(math.Log2(float64(n)/scaleThreshold)))
}
