package mesh

import (
	"context"
	"errors"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
)

// fetchFn runs one (blocking) query: it returns the result newer than
// minIndex (or the current one when minIndex is 0) and its index.
type fetchFn[T any] func(ctx context.Context, minIndex uint64) (T, uint64, error)

// watch keeps the result of one blocking query current: a goroutine runs the
// query in a loop and publishes each new result. On errors it keeps the last
// result and retries with a growing, jittered backoff, so a proxy keeps
// working while the servers are briefly unreachable.
type watch[T any] struct {
	name   string
	logger hclog.Logger

	mu      sync.Mutex
	val     T
	index   uint64
	has     bool
	changed chan struct{} // closed at the next new result; guarded by mu
	subs    map[int]func(T)
	nextSub int

	// notifyMu orders the calls to subscribers: a subscriber never sees
	// an older result after a newer one.
	notifyMu sync.Mutex

	ready  chan struct{} // closed at the first result
	cancel context.CancelFunc
	done   chan struct{}
}

// backoff bounds of a failing watch.
const (
	minBackoff = 100 * time.Millisecond
	maxBackoff = 15 * time.Second
	// quietFailures is how long a watch may fail before it warns.
	quietFailures = 5 * time.Second
)

// startWatch starts a watch; first, when not nil, is subscribed before the
// first query runs, so it sees every result.
func startWatch[T any](name string, logger hclog.Logger, fetch fetchFn[T], first func(T)) *watch[T] {
	ctx, cancel := context.WithCancel(context.Background())
	w := &watch[T]{
		name: name, logger: logger, changed: make(chan struct{}), subs: map[int]func(T){},
		ready: make(chan struct{}), cancel: cancel, done: make(chan struct{}),
	}
	if first != nil {
		w.subscribe(first)
	}
	go w.run(ctx, fetch)
	return w
}

func (w *watch[T]) run(ctx context.Context, fetch fetchFn[T]) {
	defer close(w.done)
	var (
		idx          uint64
		failures     int
		failingSince time.Time
		warned       bool
	)
	for ctx.Err() == nil {
		v, next, err := fetch(ctx, idx)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			failures++
			if failures == 1 {
				failingSince = time.Now()
			}
			wait := min(maxBackoff, minBackoff<<min(failures-1, 8))
			wait += rand.N(wait/2 + 1)
			// A watch fails for a moment at start (no leader, no CA yet)
			// and during elections: say so only when it lasts.
			if !warned && time.Since(failingSince) > quietFailures {
				w.logger.Warn("watch failing; keeping the last answer and retrying", "watch", w.name, "error", err, "since", failingSince.Format(time.RFC3339))
				warned = true
			} else {
				w.logger.Debug("watch failed; retrying", "watch", w.name, "error", err, "retry_in", wait)
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(wait):
			}
			continue
		}
		if warned {
			w.logger.Info("watch recovered", "watch", w.name)
		}
		failures, warned = 0, false
		if next < idx {
			// The index went back (a snapshot restore, a new cluster):
			// take the answer and start over from it.
			w.logger.Debug("watch index went backwards", "watch", w.name, "from", idx, "to", next)
		} else if next == idx && w.hasValue() {
			continue // the wait ended without a change
		}
		idx = next
		w.publish(v, next)
	}
}

func (w *watch[T]) hasValue() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.has
}

func (w *watch[T]) publish(v T, idx uint64) {
	w.notifyMu.Lock()
	defer w.notifyMu.Unlock()
	w.mu.Lock()
	first := !w.has
	w.val, w.index, w.has = v, idx, true
	subs := make([]func(T), 0, len(w.subs))
	for _, s := range w.subs {
		subs = append(subs, s)
	}
	w.mu.Unlock()
	// Subscribers first (they derive state, like the trust bundle), then
	// the waiters, who may read that state.
	for _, s := range subs {
		s(v)
	}
	w.mu.Lock()
	close(w.changed)
	w.changed = make(chan struct{})
	w.mu.Unlock()
	if first {
		close(w.ready)
	}
}

// get returns the latest result, its index, and whether there is one.
func (w *watch[T]) get() (T, uint64, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.val, w.index, w.has
}

// subscribe calls fn (from the watch's goroutine) after every new result;
// fn must return quickly. The returned function unsubscribes.
func (w *watch[T]) subscribe(fn func(T)) func() {
	w.mu.Lock()
	defer w.mu.Unlock()
	id := w.nextSub
	w.nextSub++
	w.subs[id] = fn
	return func() {
		w.mu.Lock()
		delete(w.subs, id)
		w.mu.Unlock()
	}
}

// subscribeNow is subscribe that also calls fn with the current result,
// if there is one, before any newer one.
func (w *watch[T]) subscribeNow(fn func(T)) func() {
	w.notifyMu.Lock()
	defer w.notifyMu.Unlock()
	unsub := w.subscribe(fn)
	if v, _, ok := w.get(); ok {
		fn(v)
	}
	return unsub
}

// errWatchStopped is returned by wait once the watch is stopped.
var errWatchStopped = errors.New("watch stopped")

// wait returns the result once its index is above minIndex (at once for 0,
// once there is a result), or the latest when maxWait passes.
func (w *watch[T]) wait(ctx context.Context, minIndex uint64, maxWait time.Duration) (T, uint64, error) {
	var zero T
	timer := time.NewTimer(maxWait)
	defer timer.Stop()
	select {
	case <-w.ready:
	case <-ctx.Done():
		return zero, 0, ctx.Err()
	case <-w.done:
		return zero, 0, errWatchStopped
	}
	for {
		w.mu.Lock()
		v, idx, ch := w.val, w.index, w.changed
		w.mu.Unlock()
		if minIndex == 0 || idx > minIndex {
			return v, idx, nil
		}
		select {
		case <-ch:
		case <-timer.C:
			return v, idx, nil
		case <-ctx.Done():
			return zero, 0, ctx.Err()
		case <-w.done:
			return zero, 0, errWatchStopped
		}
	}
}

// stop ends the watch and waits for its goroutine.
func (w *watch[T]) stop() {
	w.cancel()
	<-w.done
}
