// Package telemetry collects the agent's metrics (hashicorp/go-metrics) and
// serves them as JSON (the shape of Consul's /v1/agent/metrics) and as
// Prometheus text.
//
// # One process, several agents
//
// go-metrics keeps one global registry per process, and Raft and memberlist
// emit into it. Setup installs, once per process, a fan-out sink as that
// global; each Telemetry adds its own sinks to the fan-out and removes them on
// Close. So every agent of a process (tests start several) sees the metrics
// of all of them; in production there is one agent per process.
//
// Raft and memberlist emit through go-metrics' compat package, which by
// default forwards to armon/go-metrics; Setup installs an adapter there too, so
// their metrics land in the same sinks, under the "trellis" prefix.
package telemetry

import (
	"fmt"
	"io"
	"runtime"
	"sync"
	"time"

	armon "github.com/armon/go-metrics"
	"github.com/hashicorp/go-metrics"
)

// ContentTypePrometheus is the Content-Type of WritePrometheus's output.
const ContentTypePrometheus = "text/plain; version=0.0.4; charset=utf-8"

// Config configures the metrics of an agent.
type Config struct {
	// Interval is the length of one interval of the JSON summary (default 10s).
	Interval time.Duration
	// Retain is how long intervals are kept (default 1m).
	Retain time.Duration
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config { return Config{Interval: 10 * time.Second, Retain: time.Minute} }

// Telemetry is an agent's view of the process's metrics.
type Telemetry struct {
	inmem     *metrics.InmemSink
	prom      *cumulativeSink
	closeOnce sync.Once
}

var (
	globalOnce sync.Once
	global     = &fanout{}
)

// Setup starts collecting metrics for an agent. Close stops it.
func Setup(cfg Config) (*Telemetry, error) {
	if cfg.Interval <= 0 || cfg.Retain < cfg.Interval {
		return nil, fmt.Errorf("telemetry: interval %s and retain %s: need 0 < interval <= retain", cfg.Interval, cfg.Retain)
	}
	globalOnce.Do(func() {
		mc := metrics.DefaultConfig("")
		mc.EnableHostname = false
		mc.EnableRuntimeMetrics = false // its collector goroutine never stops; WritePrometheus samples the runtime instead
		mc.EnableServiceLabel = false
		_, _ = metrics.NewGlobal(mc, global)

		ac := armon.DefaultConfig("trellis")
		ac.EnableHostname = false
		ac.EnableRuntimeMetrics = false
		_, _ = armon.NewGlobal(ac, armonAdapter{global})
	})
	t := &Telemetry{inmem: metrics.NewInmemSink(cfg.Interval, cfg.Retain), prom: newCumulativeSink()}
	global.add(t.inmem)
	global.add(t.prom)
	return t, nil
}

// Close detaches the agent's sinks. It is idempotent.
func (t *Telemetry) Close() {
	t.closeOnce.Do(func() {
		global.remove(t.inmem)
		global.remove(t.prom)
	})
}

// Summary returns the metrics of the latest finished interval (or the current
// one, when none has finished), in the JSON shape of Consul's
// /v1/agent/metrics: Timestamp, Gauges, Points, Counters, Samples.
func (t *Telemetry) Summary() (any, error) {
	sampleRuntime()
	return t.inmem.DisplayMetrics(nil, nil)
}

// WritePrometheus writes every metric since Setup in the Prometheus text
// format 0.0.4: gauges as gauges, counters as cumulative counters, timings
// and samples as summaries (_sum and _count, in the unit emitted —
// milliseconds for timings).
func (t *Telemetry) WritePrometheus(w io.Writer) error {
	sampleRuntime()
	return t.prom.write(w)
}

// sampleRuntime sets the runtime gauges, so they are current when read.
func sampleRuntime() {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	metrics.SetGauge([]string{"trellis", "runtime", "num_goroutines"}, float32(runtime.NumGoroutine()))
	metrics.SetGauge([]string{"trellis", "runtime", "alloc_bytes"}, float32(ms.Alloc))
	metrics.SetGauge([]string{"trellis", "runtime", "sys_bytes"}, float32(ms.Sys))
	metrics.SetGauge([]string{"trellis", "runtime", "heap_objects"}, float32(ms.HeapObjects))
	metrics.SetGauge([]string{"trellis", "runtime", "total_gc_pause_ns"}, float32(ms.PauseTotalNs))
}

// fanout is the process-wide sink: it passes every metric to the sinks
// currently added.
type fanout struct {
	mu    sync.RWMutex
	sinks []metrics.MetricSink // guarded by mu
}

var _ metrics.MetricSink = (*fanout)(nil)

func (f *fanout) add(s metrics.MetricSink) {
	f.mu.Lock()
	f.sinks = append(f.sinks, s)
	f.mu.Unlock()
}

func (f *fanout) remove(s metrics.MetricSink) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for i, x := range f.sinks {
		if x == s {
			f.sinks = append(f.sinks[:i:i], f.sinks[i+1:]...)
			return
		}
	}
}

func (f *fanout) each(fn func(metrics.MetricSink)) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	for _, s := range f.sinks {
		fn(s)
	}
}

func (f *fanout) SetGauge(key []string, val float32) {
	f.each(func(s metrics.MetricSink) { s.SetGauge(key, val) })
}
func (f *fanout) SetGaugeWithLabels(key []string, val float32, labels []metrics.Label) {
	f.each(func(s metrics.MetricSink) { s.SetGaugeWithLabels(key, val, labels) })
}
func (f *fanout) EmitKey(key []string, val float32) {
	f.each(func(s metrics.MetricSink) { s.EmitKey(key, val) })
}
func (f *fanout) IncrCounter(key []string, val float32) {
	f.each(func(s metrics.MetricSink) { s.IncrCounter(key, val) })
}
func (f *fanout) IncrCounterWithLabels(key []string, val float32, labels []metrics.Label) {
	f.each(func(s metrics.MetricSink) { s.IncrCounterWithLabels(key, val, labels) })
}
func (f *fanout) AddSample(key []string, val float32) {
	f.each(func(s metrics.MetricSink) { s.AddSample(key, val) })
}
func (f *fanout) AddSampleWithLabels(key []string, val float32, labels []metrics.Label) {
	f.each(func(s metrics.MetricSink) { s.AddSampleWithLabels(key, val, labels) })
}

// armonAdapter receives the metrics Raft and memberlist emit through
// armon/go-metrics and passes them on.
type armonAdapter struct{ to *fanout }

var _ armon.MetricSink = armonAdapter{}

func convertLabels(ls []armon.Label) []metrics.Label {
	out := make([]metrics.Label, len(ls))
	for i, l := range ls {
		out[i] = metrics.Label{Name: l.Name, Value: l.Value}
	}
	return out
}

func (a armonAdapter) SetGauge(key []string, val float32) { a.to.SetGauge(key, val) }
func (a armonAdapter) SetGaugeWithLabels(key []string, val float32, labels []armon.Label) {
	a.to.SetGaugeWithLabels(key, val, convertLabels(labels))
}
func (a armonAdapter) EmitKey(key []string, val float32)     { a.to.EmitKey(key, val) }
func (a armonAdapter) IncrCounter(key []string, val float32) { a.to.IncrCounter(key, val) }
func (a armonAdapter) IncrCounterWithLabels(key []string, val float32, labels []armon.Label) {
	a.to.IncrCounterWithLabels(key, val, convertLabels(labels))
}
func (a armonAdapter) AddSample(key []string, val float32) { a.to.AddSample(key, val) }
func (a armonAdapter) AddSampleWithLabels(key []string, val float32, labels []armon.Label) {
	a.to.AddSampleWithLabels(key, val, convertLabels(labels))
}
