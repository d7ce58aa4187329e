package testutil

import (
	"fmt"
	"os"
	"sort"
	"strings"
	"sync"

	"github.com/hashicorp/go-metrics"
)

// MetricsSink is a go-metrics sink for tests: it keeps counter totals and
// the last value of gauges, by key and labels.
type MetricsSink struct {
	mu     sync.Mutex
	values map[string]*sinkValue // guarded by mu; by key and sorted labels
}

type sinkValue struct {
	key    string
	labels map[string]string
	value  float64
}

// InstallMetricsSink makes a MetricsSink the process's global go-metrics
// sink (for a TestMain), with no hostname and no runtime metrics (which
// would run a goroutine for ever). It exits the process when it cannot.
func InstallMetricsSink() *MetricsSink {
	s := &MetricsSink{values: make(map[string]*sinkValue)}
	conf := metrics.DefaultConfig("")
	conf.EnableHostname = false
	conf.EnableHostnameLabel = false
	conf.EnableRuntimeMetrics = false
	if _, err := metrics.NewGlobal(conf, s); err != nil {
		fmt.Fprintln(os.Stderr, "metrics:", err)
		os.Exit(1)
	}
	return s
}

func (s *MetricsSink) record(key []string, val float32, labels []metrics.Label, add bool) {
	k := strings.Join(key, ".")
	parts := []string{k}
	lm := make(map[string]string, len(labels))
	for _, l := range labels {
		parts = append(parts, l.Name+"="+l.Value)
		lm[l.Name] = l.Value
	}
	sort.Strings(parts[1:])
	flat := strings.Join(parts, ";")
	s.mu.Lock()
	defer s.mu.Unlock()
	v := s.values[flat]
	if v == nil {
		v = &sinkValue{key: k, labels: lm}
		s.values[flat] = v
	}
	if add {
		v.value += float64(val)
	} else {
		v.value = float64(val)
	}
}

// SetGauge implements metrics.MetricSink.
func (s *MetricsSink) SetGauge(key []string, val float32) { s.record(key, val, nil, false) }

// SetGaugeWithLabels implements metrics.MetricSink.
func (s *MetricsSink) SetGaugeWithLabels(key []string, val float32, labels []metrics.Label) {
	s.record(key, val, labels, false)
}

// EmitKey implements metrics.MetricSink; it keeps nothing.
func (s *MetricsSink) EmitKey([]string, float32) {}

// IncrCounter implements metrics.MetricSink.
func (s *MetricsSink) IncrCounter(key []string, val float32) { s.record(key, val, nil, true) }

// IncrCounterWithLabels implements metrics.MetricSink.
func (s *MetricsSink) IncrCounterWithLabels(key []string, val float32, labels []metrics.Label) {
	s.record(key, val, labels, true)
}

// AddSample implements metrics.MetricSink; it keeps nothing.
func (s *MetricsSink) AddSample([]string, float32) {}

// AddSampleWithLabels implements metrics.MetricSink; it keeps nothing.
func (s *MetricsSink) AddSampleWithLabels([]string, float32, []metrics.Label) {}

var _ metrics.MetricSink = (*MetricsSink)(nil)

// Get sums the values of key (dotted, "trellis.proxy.inbound.denied") over
// the label sets that include every name=value pair of match.
func (s *MetricsSink) Get(key string, match ...string) float64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	var sum float64
	for _, v := range s.values {
		if v.key != key {
			continue
		}
		ok := true
		for _, m := range match {
			name, value, _ := strings.Cut(m, "=")
			if v.labels[name] != value {
				ok = false
				break
			}
		}
		if ok {
			sum += v.value
		}
	}
	return sum
}
