// Package periodic runs a function at an interval on a goroutine of its
// own until stopped.
package periodic

import (
	"sync"
	"time"
)

// Loop calls its function once per interval.
type Loop struct {
	stop chan struct{}
	done chan struct{}
	once sync.Once
}

// Start calls f(now) every interval, from one goroutine, until Stop; calls
// never overlap (a call that overruns delays the next tick).
func Start(interval time.Duration, f func(now time.Time)) *Loop {
	l := &Loop{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(l.done)
		tick := time.NewTicker(interval)
		defer tick.Stop()
		for {
			select {
			case <-l.stop:
				return
			case now := <-tick.C:
				f(now)
			}
		}
	}()
	return l
}

// Stop ends the loop and returns once its goroutine is gone, and with it
// any call in progress. It reports whether this call stopped the loop
// (false for later calls). Idempotent.
func (l *Loop) Stop() bool {
	stopped := false
	l.once.Do(func() {
		close(l.stop)
		<-l.done
		stopped = true
	})
	return stopped
}
