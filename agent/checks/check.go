package checks

import (
	"context"
	"fmt"
	"maps"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-metrics"

	"github.com/trellismesh/trellis/raftstore/structs"
)

// Defaults applied when a definition leaves a field zero.
const (
	// DefaultTimeout bounds an HTTP or TCP probe when the definition sets no
	// Timeout. It is capped at the check's interval.
	DefaultTimeout = 10 * time.Second
	// DefaultOutputMaxSize caps a check's output, in bytes.
	DefaultOutputMaxSize = 4096
	// MaxFirstDelay caps the random delay before a check's first probe.
	MaxFirstDelay = time.Second
	// UserAgent is sent by HTTP checks that set no User-Agent header.
	UserAgent = "Trellis Health Check"
	// MaxRedirects is how many redirects an HTTP check follows; the answer
	// after that many is taken as the result (a 3xx, so critical).
	MaxRedirects = 3
)

// Notifier receives the results of checks.
//
// UpdateCheck is called from the checks' goroutines, possibly concurrently
// for different checks, but never concurrently for the same check. It must
// not block for long and must not call back into the check (Stop would wait
// on the very goroutine that calls it). status is one of structs.HealthPassing,
// HealthWarning or HealthCritical; output is already cut to size.
type Notifier interface {
	UpdateCheck(checkID string, status, output string)
}

// Check is a running health check.
type Check interface {
	// Start begins running the check. It returns at once; later calls, and
	// calls after Stop, do nothing.
	Start()
	// Stop ends the check and returns once its goroutine has exited. It may
	// be called more than once, and before Start.
	Stop()
}

// Config describes one check to run.
type Config struct {
	// CheckID is the ID results are reported under. When empty, Def.CheckID
	// is used; one of them must be set.
	CheckID string
	// Def is what to run; its type (TTL, HTTP, TCP) picks the Check. It is
	// copied, so the caller may change it afterwards.
	Def *structs.CheckType
	// Notifier receives the results. Required.
	Notifier Notifier
	// Logger is named "check" and carries the check ID; nil means hclog.Default().
	Logger hclog.Logger
}

// New validates cfg and returns the Check its definition describes: a *TTL,
// *HTTP or *TCP. The check does nothing until Start.
func New(cfg Config) (Check, error) {
	if cfg.Def == nil {
		return nil, structs.Invalid("Check", "missing definition")
	}
	id := cfg.CheckID
	if id == "" {
		id = cfg.Def.CheckID
	}
	if id == "" {
		return nil, structs.Invalid("CheckID", "empty")
	}
	if err := cfg.Def.Validate("Check"); err != nil {
		return nil, fmt.Errorf("check %q: %w", id, err)
	}
	if cfg.Notifier == nil {
		return nil, fmt.Errorf("check %q: no notifier", id)
	}
	def := *cfg.Def
	def.Header = maps.Clone(cfg.Def.Header)
	logger := cfg.Logger
	if logger == nil {
		logger = hclog.Default()
	}
	b := base{
		id:       id,
		def:      def,
		notifier: cfg.Notifier,
		logger:   logger.Named("check").With("check", id),
	}
	switch def.Type() {
	case structs.CheckTypeTTL:
		return newTTL(b), nil
	case structs.CheckTypeHTTP:
		return newHTTP(b)
	case structs.CheckTypeTCP:
		return newTCP(b), nil
	}
	// Validate accepts only the three types above.
	return nil, structs.Invalid("Check", "unknown check type")
}

// base holds what every kind of check has.
type base struct {
	id       string
	def      structs.CheckType
	notifier Notifier
	logger   hclog.Logger
}

// outputMax returns the output cap in bytes.
func (b *base) outputMax() int {
	if b.def.OutputMaxSize > 0 {
		return b.def.OutputMaxSize
	}
	return DefaultOutputMaxSize
}

// report sends a result to the notifier, cut to size, and counts it.
func (b *base) report(status, output string) {
	metrics.IncrCounterWithLabels([]string{"trellis", "checks", "result"}, 1, []metrics.Label{
		{Name: "type", Value: b.def.Type()}, {Name: "status", Value: status},
	})
	b.notifier.UpdateCheck(b.id, status, truncate(output, b.outputMax()))
}

// truncate cuts s to at most n bytes without splitting a UTF-8 sequence.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	cut := n
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut]
}

// lifecycle runs one goroutine between Start and Stop.
type lifecycle struct {
	mu      sync.Mutex
	started bool          // guarded by mu
	stopped bool          // guarded by mu
	cancel  func()        // guarded by mu; set once started
	done    chan struct{} // guarded by mu; closed when the goroutine exits
}

// start runs fn in a goroutine unless already started or stopped.
func (l *lifecycle) start(fn func(ctx context.Context)) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.started || l.stopped {
		return
	}
	l.started = true
	ctx, cancel := context.WithCancel(context.Background())
	l.cancel = cancel
	l.done = make(chan struct{})
	go func() {
		defer close(l.done)
		fn(ctx)
	}()
}

// stop cancels the goroutine and waits for it. It reports whether this call
// was the first to stop.
func (l *lifecycle) stop() bool {
	l.mu.Lock()
	first := !l.stopped
	l.stopped = true
	cancel, done := l.cancel, l.done
	l.mu.Unlock()
	if cancel != nil {
		cancel()
		<-done
	}
	return first
}
