package telemetry

import (
	"bufio"
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-metrics"
)

// cumulativeSink keeps every metric since it was created, as Prometheus
// wants them: the last value of gauges, running totals of counters, and the
// count and sum of samples.
type cumulativeSink struct {
	mu     sync.Mutex
	series map[string]*series // by name and labels; guarded by mu
	now    func() time.Time   // time.Now; tests set their own
}

// quantileStaleAfter is how long a gauge with a quantile label (a latency
// percentile over the last interval, as the proxies emit them) is shown
// after it was last set. A percentile is set only for an interval that had
// samples; without this, one second's p99 would be shown for ever after
// the traffic stopped, and an alert on it would never clear.
const quantileStaleAfter = 10 * time.Second

type kind int

const (
	kindGauge kind = iota
	kindCounter
	kindSummary
)

type series struct {
	name     string
	key      string // the key as emitted, joined by dots: the HELP text
	labels   []metrics.Label
	kind     kind
	value    float64   // gauge value or counter total
	count    uint64    // samples
	sum      float64   // samples
	quantile bool      // a gauge with a quantile label
	set      time.Time // when a gauge was last set
}

func newCumulativeSink() *cumulativeSink {
	return &cumulativeSink{series: make(map[string]*series), now: time.Now}
}

var _ metrics.MetricSink = (*cumulativeSink)(nil)

func (s *cumulativeSink) get(key []string, labels []metrics.Label, k kind) *series {
	name := metricName(key)
	id := name
	for _, l := range labels {
		id += "\x00" + l.Name + "\x00" + l.Value
	}
	id += "\x00" + strconv.Itoa(int(k))
	sr, ok := s.series[id]
	if !ok {
		sr = &series{name: name, key: strings.Join(key, "."), labels: slices.Clone(labels), kind: k}
		sr.quantile = k == kindGauge && slices.ContainsFunc(labels, func(l metrics.Label) bool { return l.Name == "quantile" })
		s.series[id] = sr
	}
	return sr
}

func (s *cumulativeSink) SetGauge(key []string, val float32) { s.SetGaugeWithLabels(key, val, nil) }
func (s *cumulativeSink) SetGaugeWithLabels(key []string, val float32, labels []metrics.Label) {
	s.mu.Lock()
	sr := s.get(key, labels, kindGauge)
	sr.value, sr.set = float64(val), s.now()
	s.mu.Unlock()
}

// EmitKey values are points without aggregation; they are shown as gauges.
func (s *cumulativeSink) EmitKey(key []string, val float32) { s.SetGauge(key, val) }

func (s *cumulativeSink) IncrCounter(key []string, val float32) {
	s.IncrCounterWithLabels(key, val, nil)
}
func (s *cumulativeSink) IncrCounterWithLabels(key []string, val float32, labels []metrics.Label) {
	s.mu.Lock()
	s.get(key, labels, kindCounter).value += float64(val)
	s.mu.Unlock()
}

func (s *cumulativeSink) AddSample(key []string, val float32) { s.AddSampleWithLabels(key, val, nil) }
func (s *cumulativeSink) AddSampleWithLabels(key []string, val float32, labels []metrics.Label) {
	s.mu.Lock()
	sr := s.get(key, labels, kindSummary)
	sr.count++
	sr.sum += float64(val)
	s.mu.Unlock()
}

// metricName joins and sanitises a key: "trellis.http.request" with dots,
// dashes and anything else outside [a-zA-Z0-9_:] turned into underscores.
func metricName(key []string) string {
	name := strings.Join(key, "_")
	var b strings.Builder
	for i, r := range name {
		ok := r == '_' || r == ':' || (r >= 'a' && r <= 'z') || (r >= 'A' && r <= 'Z') || (i > 0 && r >= '0' && r <= '9')
		if ok {
			b.WriteRune(r)
		} else {
			b.WriteByte('_')
		}
	}
	return b.String()
}

func labelName(s string) string {
	n := metricName([]string{s})
	return strings.ReplaceAll(n, ":", "_")
}

func escapeLabelValue(s string) string {
	return strings.NewReplacer(`\`, `\\`, "\n", `\n`, `"`, `\"`).Replace(s)
}

func formatLabels(labels []metrics.Label) string {
	if len(labels) == 0 {
		return ""
	}
	parts := make([]string, len(labels))
	for i, l := range labels {
		parts[i] = fmt.Sprintf(`%s="%s"`, labelName(l.Name), escapeLabelValue(l.Value))
	}
	return "{" + strings.Join(parts, ",") + "}"
}

func formatFloat(v float64) string {
	switch {
	case math.IsInf(v, 1):
		return "+Inf"
	case math.IsInf(v, -1):
		return "-Inf"
	case math.IsNaN(v):
		return "NaN"
	}
	return strconv.FormatFloat(v, 'g', -1, 64)
}

// write renders the series, grouped by name, in a stable order.
func (s *cumulativeSink) write(w io.Writer) error {
	s.mu.Lock()
	all := make([]series, 0, len(s.series))
	stale := s.now().Add(-quantileStaleAfter)
	for id, sr := range s.series {
		if sr.quantile && sr.set.Before(stale) {
			delete(s.series, id) // set again when it has samples again
			continue
		}
		all = append(all, *sr)
	}
	s.mu.Unlock()
	slices.SortFunc(all, func(a, b series) int {
		if c := strings.Compare(a.name, b.name); c != 0 {
			return c
		}
		if a.kind != b.kind {
			return int(a.kind) - int(b.kind)
		}
		return strings.Compare(formatLabels(a.labels), formatLabels(b.labels))
	})
	bw := bufio.NewWriter(w)
	lastHeader := ""
	for _, sr := range all {
		name := sr.name
		typ := "gauge"
		switch sr.kind {
		case kindCounter:
			typ = "counter"
		case kindSummary:
			typ = "summary"
		}
		if sr.kind == kindCounter && !strings.HasSuffix(name, "_total") {
			name += "_total"
		}
		// Counters end in _total and summaries write _sum and _count, so a
		// name used for two kinds still yields distinct series.
		if header := name + " " + typ; header != lastHeader {
			fmt.Fprintf(bw, "# HELP %s %s\n# TYPE %s %s\n", name, sr.key, name, typ)
			lastHeader = header
		}
		lbl := formatLabels(sr.labels)
		switch sr.kind {
		case kindSummary:
			fmt.Fprintf(bw, "%s_sum%s %s\n", name, lbl, formatFloat(sr.sum))
			fmt.Fprintf(bw, "%s_count%s %d\n", name, lbl, sr.count)
		default:
			fmt.Fprintf(bw, "%s%s %s\n", name, lbl, formatFloat(sr.value))
		}
	}
	return bw.Flush()
}
