package telemetry

import (
	"bytes"
	"encoding/json"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-metrics"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// promLine is one sample line of the text format.
var promLine = regexp.MustCompile(`^[a-zA-Z_:][a-zA-Z0-9_:]*(\{[a-zA-Z_][a-zA-Z0-9_]*="(\\.|[^"\\])*"(,[a-zA-Z_][a-zA-Z0-9_]*="(\\.|[^"\\])*")*\})? (-?[0-9.eE+-]+|\+Inf|-Inf|NaN)$`)

func checkPrometheus(t *testing.T, text string) {
	t.Helper()
	types := map[string]string{}
	for i, line := range strings.Split(strings.TrimRight(text, "\n"), "\n") {
		switch {
		case strings.HasPrefix(line, "# HELP "):
		case strings.HasPrefix(line, "# TYPE "):
			f := strings.Fields(line)
			if len(f) != 4 {
				t.Errorf("line %d: bad TYPE line %q", i+1, line)
				continue
			}
			if prev, dup := types[f[2]]; dup {
				t.Errorf("line %d: %s typed twice (%s, %s)", i+1, f[2], prev, f[3])
			}
			types[f[2]] = f[3]
		case !promLine.MatchString(line):
			t.Errorf("line %d: not a valid sample: %q", i+1, line)
		}
	}
}

func TestTelemetry_Formats(t *testing.T) {
	tel, err := Setup(DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer tel.Close()
	metrics.SetGauge([]string{"trellis", "test", "queue-depth"}, 7)
	metrics.IncrCounterWithLabels([]string{"trellis", "test", "requests"}, 2, []metrics.Label{{Name: "route", Value: `/v1/"x"`}})
	metrics.IncrCounterWithLabels([]string{"trellis", "test", "requests"}, 3, []metrics.Label{{Name: "route", Value: `/v1/"x"`}})
	metrics.AddSample([]string{"trellis", "test", "latency"}, 1.5)
	metrics.AddSample([]string{"trellis", "test", "latency"}, 2.5)

	var buf bytes.Buffer
	if err := tel.WritePrometheus(&buf); err != nil {
		t.Fatal(err)
	}
	text := buf.String()
	checkPrometheus(t, text)
	for _, want := range []string{
		"# TYPE trellis_test_queue_depth gauge\ntrellis_test_queue_depth 7\n",
		"# TYPE trellis_test_requests_total counter\ntrellis_test_requests_total{route=\"/v1/\\\"x\\\"\"} 5\n",
		"# TYPE trellis_test_latency summary\ntrellis_test_latency_sum 4\ntrellis_test_latency_count 2\n",
		"trellis_runtime_num_goroutines ",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("prometheus output lacks %q:\n%s", want, text)
		}
	}

	sum, err := tel.Summary()
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(sum)
	var shape map[string]any
	_ = json.Unmarshal(b, &shape)
	for _, k := range []string{"Timestamp", "Gauges", "Points", "Counters", "Samples"} {
		if _, ok := shape[k]; !ok {
			t.Errorf("summary lacks %s: %s", k, b)
		}
	}
	if !strings.Contains(string(b), `"trellis.test.queue-depth"`) {
		t.Errorf("summary lacks the gauge: %s", b)
	}
}

func TestTelemetry_SeveralAgents(t *testing.T) {
	a, err := Setup(DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	b, err := Setup(DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	metrics.IncrCounter([]string{"trellis", "test", "shared"}, 1)
	b.Close()
	b.Close() // idempotent
	metrics.IncrCounter([]string{"trellis", "test", "shared"}, 1)
	var bufA, bufB bytes.Buffer
	_ = a.WritePrometheus(&bufA)
	_ = b.WritePrometheus(&bufB)
	if !strings.Contains(bufA.String(), "trellis_test_shared_total 2") || !strings.Contains(bufB.String(), "trellis_test_shared_total 1") {
		t.Errorf("a:\n%s\nb:\n%s", bufA.String(), bufB.String())
	}
	a.Close()
	if _, err := Setup(Config{}); err == nil {
		t.Error("zero config accepted")
	}
}

func TestMetricName(t *testing.T) {
	for in, want := range map[string]string{"trellis.http.request": "trellis_http_request", "a-b c": "a_b_c", "9lives": "_lives"} {
		if got := metricName(strings.Split(in, ".")); got != want {
			t.Errorf("metricName(%q) got %q, want %q", in, got, want)
		}
	}
}

// A gauge with a quantile label (a percentile of the last interval) leaves
// the Prometheus output once it has not been set for quantileStaleAfter;
// other gauges stay. The HELP text is the key as it was emitted.
func TestPrometheus_quantileGaugesGoStale(t *testing.T) {
	s := newCumulativeSink()
	now := time.Unix(1000, 0)
	s.now = func() time.Time { return now }
	q := []metrics.Label{{Name: "route", Value: "default"}, {Name: "quantile", Value: "0.99"}}
	s.SetGaugeWithLabels([]string{"trellis", "proxy", "latency_ms"}, 155.6, q)
	s.SetGauge([]string{"trellis", "proxy", "conns_active"}, 3)
	render := func() string {
		var buf bytes.Buffer
		if err := s.write(&buf); err != nil {
			t.Fatal(err)
		}
		checkPrometheus(t, buf.String())
		return buf.String()
	}
	const p99 = `trellis_proxy_latency_ms{route="default",quantile="0.99"} 155.`
	if text := render(); !strings.Contains(text, p99) || !strings.Contains(text, "# HELP trellis_proxy_latency_ms trellis.proxy.latency_ms\n") {
		t.Fatalf("a fresh percentile, or its HELP, is missing:\n%s", text)
	}
	now = now.Add(quantileStaleAfter + time.Second)
	text := render()
	if strings.Contains(text, "latency_ms") {
		t.Errorf("a percentile not set for %s is still shown:\n%s", quantileStaleAfter+time.Second, text)
	}
	if !strings.Contains(text, "trellis_proxy_conns_active 3\n") {
		t.Errorf("a gauge without a quantile label went stale:\n%s", text)
	}
	s.SetGaugeWithLabels([]string{"trellis", "proxy", "latency_ms"}, 2, q)
	if text := render(); !strings.Contains(text, `trellis_proxy_latency_ms{route="default",quantile="0.99"} 2`) {
		t.Errorf("a percentile set again is not shown:\n%s", text)
	}
}
