package golden

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestHistogram_Quantiles(t *testing.T) {
	t.Parallel()
	var h Histogram
	// 1..1000 ms, uniformly.
	for i := 1; i <= 1000; i++ {
		h.Record(time.Duration(i) * time.Millisecond)
	}
	s := h.Snapshot()
	if s.Total() != 1000 {
		t.Fatalf("total %d", s.Total())
	}
	for _, q := range []float64{0.5, 0.9, 0.99} {
		got := s.Quantile(q).Seconds() * 1000
		want := q * 1000
		if math.Abs(got-want)/want > 0.07 {
			t.Errorf("p%v = %.1fms, want %.0fms within 7%%", q*100, got, want)
		}
	}
	if s2 := h.Snapshot(); s2.Total() != 0 || s2.Quantile(0.5) != 0 {
		t.Errorf("a snapshot did not reset the histogram: %d", s2.Total())
	}
	// Every bucket's bounds hold the values that index it.
	for _, us := range []uint64{0, 1, 15, 16, 17, 31, 32, 1000, 123456, 1 << 30} {
		lo, hi := histBounds(histIndex(us))
		if us < lo || us >= hi {
			t.Errorf("%dµs in bucket [%d, %d)", us, lo, hi)
		}
	}
}

func TestSnapshot_BucketsRoundTrip(t *testing.T) {
	t.Parallel()
	var h Histogram
	for i := 1; i <= 500; i++ {
		h.Record(time.Duration(i*37) * time.Microsecond)
	}
	s := h.Snapshot()
	var back Snapshot
	back.AddBuckets(s.Buckets())
	if back != s {
		t.Fatalf("round trip changed the snapshot: total %d vs %d", back.Total(), s.Total())
	}
	var merged Snapshot
	merged.Add(&s)
	merged.Add(&back)
	if merged.Total() != 1000 || merged.Quantile(0.5) != s.Quantile(0.5) {
		t.Errorf("merging two equal snapshots: total %d, p50 %v vs %v", merged.Total(), merged.Quantile(0.5), s.Quantile(0.5))
	}
}

func TestRecorder_CollectDrains(t *testing.T) {
	t.Parallel()
	r := NewRecorder()
	if r.Active() {
		t.Fatal("a new recorder is active")
	}
	k := Key{Side: Outbound, Source: "web", Destination: "api", Protocol: "http"}
	e := r.Edge(k)
	if r.Edge(k) != e {
		t.Fatal("the same key gave two edges")
	}
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for i := range 250 {
				e.Observe(i%50 == 0, time.Millisecond)
			}
		})
	}
	wg.Wait()
	r.Edge(Key{Side: Inbound, Source: "web", Destination: "api", Protocol: "http"}) // no traffic: no sample
	got := r.Collect()
	if len(got) != 1 {
		t.Fatalf("samples %+v", got)
	}
	s := got[0]
	if s.Requests != 1000 || s.Failures != 20 || s.Side != Outbound || s.Source != "web" || s.Destination != "api" {
		t.Errorf("sample %+v", s)
	}
	if err := Validate(got); err != nil {
		t.Errorf("a recorder's own samples do not validate: %v", err)
	}
	if again := r.Collect(); len(again) != 0 {
		t.Errorf("a second collect found %+v", again)
	}
	if !r.Active() {
		t.Error("a recorder with edges is not active")
	}
	var nilRec *Recorder
	nilRec.Edge(k).Observe(true, time.Second) // no panic
	if nilRec.Collect() != nil || nilRec.Active() {
		t.Error("a nil recorder reported something")
	}
}

func TestRecorder_BoundsEdges(t *testing.T) {
	t.Parallel()
	r := NewRecorder()
	for i := range MaxEdges + 10 {
		r.Edge(Key{Side: Inbound, Source: strings.Repeat("s", 1+i%200) + string(rune('a'+i/200)), Destination: "api", Protocol: "tcp"}).Observe(false, 0)
	}
	got := r.Collect()
	if len(got) > MaxEdges+1 {
		t.Fatalf("%d samples past the bound", len(got))
	}
	var other bool
	for _, s := range got {
		other = other || s.Source == OtherService
	}
	if !other {
		t.Error("edges past the bound were not counted under " + OtherService)
	}
}

func TestWindow_MergesNodesAndSides(t *testing.T) {
	t.Parallel()
	w := NewWindow(5 * time.Minute)
	now := time.Now()
	mk := func(side Side, n, fail uint64, d time.Duration) Sample {
		var h Histogram
		for range n {
			h.Record(d)
		}
		s := h.Snapshot()
		return Sample{Side: side, Source: "web", Destination: "api", Protocol: "http", Requests: n, Failures: fail, Latency: s.Buckets()}
	}
	// Two callers' nodes, three 5-second reports each in the last 15 s;
	// the destination's node reports its side once.
	for i := range 3 {
		at := now.Add(-time.Duration(10-5*i) * time.Second)
		w.Add("c1", 5*time.Second, []Sample{mk(Outbound, 50, 0, time.Millisecond)}, at)
		w.Add("c2", 5*time.Second, []Sample{mk(Outbound, 50, 5, 10*time.Millisecond)}, at)
	}
	w.Add("s1", 5*time.Second, []Sample{mk(Inbound, 300, 15, 500*time.Microsecond)}, now)
	w.Add("c3", 5*time.Second, []Sample{{Side: Outbound, Source: "db-admin", Destination: "db", Protocol: "tcp", Requests: 1}}, now)

	got := w.Edges(30*time.Second, now, func(src, dst string) bool { return src == "api" || dst == "api" })
	if len(got) != 1 {
		t.Fatalf("edges %+v", got)
	}
	e := got[0]
	out, in := e.Outbound, e.Inbound
	if out == nil || in == nil {
		t.Fatalf("sides %+v", e)
	}
	if out.Requests != 300 || out.Failures != 15 || out.Reporters != 2 {
		t.Errorf("outbound %+v", *out)
	}
	// 300 requests over the 15 s the callers' nodes covered.
	if math.Abs(out.RequestsPerSecond-20) > 0.01 {
		t.Errorf("outbound rate %.2f/s, want 20", out.RequestsPerSecond)
	}
	if math.Abs(out.SuccessRate-0.95) > 1e-9 {
		t.Errorf("success rate %v", out.SuccessRate)
	}
	// Half the samples at 1 ms and half at 10 ms: p50 ≈ 1 ms, p99 ≈ 10 ms.
	if out.P50Ms < 0.9 || out.P50Ms > 1.1 || out.P99Ms < 9.3 || out.P99Ms > 10.7 {
		t.Errorf("outbound p50 %.2f ms, p99 %.2f ms", out.P50Ms, out.P99Ms)
	}
	if in.Requests != 300 || in.Reporters != 1 || math.Abs(in.RequestsPerSecond-60) > 0.01 {
		t.Errorf("inbound %+v", *in)
	}

	// A narrower span takes only the latest reports.
	if got := w.Edges(3*time.Second, now, nil); len(got) != 2 || got[1].Outbound.Requests != 100 {
		t.Errorf("3 s span: %+v", got)
	}
	// Reset forgets everything (a server that stops leading).
	w2 := NewWindow(time.Minute)
	w2.Add("c1", time.Second, []Sample{{Side: Outbound, Source: "a", Destination: "b", Protocol: "tcp", Requests: 1}}, now)
	w2.Reset()
	if got := w2.Edges(time.Minute, now, nil); len(got) != 0 {
		t.Errorf("after Reset: %+v", got)
	}
	// Reports past the retention go away on the next Add.
	w.Add("c1", 5*time.Second, nil, now.Add(10*time.Minute))
	if got := w.Edges(time.Hour, now.Add(10*time.Minute), nil); len(got) != 0 {
		t.Errorf("expired reports still answer: %+v", got)
	}
}

func TestValidate(t *testing.T) {
	t.Parallel()
	good := Sample{Side: Inbound, Source: "a", Destination: "b", Protocol: "tcp", Requests: 2, Failures: 1, Latency: [][2]uint64{{100, 2}}}
	if err := Validate([]Sample{good}); err != nil {
		t.Fatalf("good sample: %v", err)
	}
	for name, tc := range map[string]struct {
		mut  func(*Sample)
		want string
	}{
		"side":     {func(s *Sample) { s.Side = "sideways" }, "Side"},
		"source":   {func(s *Sample) { s.Source = "" }, "Source"},
		"long":     {func(s *Sample) { s.Destination = strings.Repeat("x", 300) }, "Destination"},
		"protocol": {func(s *Sample) { s.Protocol = "smtp" }, "Protocol"},
		"failures": {func(s *Sample) { s.Failures = 3 }, "failures"},
		"latency":  {func(s *Sample) { s.Latency = [][2]uint64{{1, 1 << 41}} }, "Latency"},
		"requests": {func(s *Sample) { s.Requests, s.Failures = 1<<41, 0 }, "requests"},
	} {
		s := good
		tc.mut(&s)
		if err := Validate([]Sample{s}); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want one naming %s", name, err, tc.want)
		}
	}
	if err := Validate(make([]Sample, MaxEdges+1)); err == nil {
		t.Error("too many samples passed")
	}
}

// Old reports are merged into 30-second ones: fewer kept, the same totals,
// rates and quantiles.
func TestWindow_CompactsOldReports(t *testing.T) {
	t.Parallel()
	w := NewWindow(5 * time.Minute)
	start := time.Now()
	var now time.Time
	for i := range 60 {
		var h Histogram
		for j := range 10 {
			h.Record(time.Duration(1+j%2) * time.Millisecond)
		}
		s := h.Snapshot()
		now = start.Add(time.Duration(i) * 5 * time.Second)
		w.Add("n1", 5*time.Second, []Sample{
			{Side: Outbound, Source: "web", Destination: "api", Protocol: "http", Requests: 10, Failures: 1, Latency: s.Buckets()},
			{Side: Inbound, Source: "web", Destination: "api", Protocol: "http", Requests: 10},
		}, now)
	}
	if n := len(w.nodes["n1"]); n > 16 {
		t.Errorf("%d reports kept of 60", n)
	}
	got := w.Edges(5*time.Minute, now, nil)
	if len(got) != 1 || got[0].Outbound == nil {
		t.Fatalf("edges %+v", got)
	}
	out := got[0].Outbound
	if out.Requests != 600 || out.Failures != 60 || math.Abs(out.RequestsPerSecond-2) > 0.01 || out.P50Ms < 0.9 || out.P50Ms > 1.1 || out.P99Ms < 1.8 {
		t.Errorf("after compaction: %+v", *out)
	}
	if in := got[0].Inbound; in == nil || in.Requests != 600 {
		t.Errorf("inbound after compaction: %+v", in)
	}
	// The last 15 s are still in 5-second steps.
	if got := w.Edges(12*time.Second, now, nil); got[0].Outbound.Requests != 30 {
		t.Errorf("last 12 s: %d requests, want 30", got[0].Outbound.Requests)
	}
}

// Samples from another recorder add up with the local counts.
func TestRecorder_Add(t *testing.T) {
	t.Parallel()
	local, other := NewRecorder(), NewRecorder()
	k := Key{Side: Outbound, Source: "web", Destination: "api", Protocol: "tcp"}
	local.Edge(k).Observe(false, time.Millisecond)
	for range 3 {
		other.Edge(k).Observe(true, 10*time.Millisecond)
	}
	local.Add(other.Collect())
	got := local.Collect()
	if len(got) != 1 || got[0].Requests != 4 || got[0].Failures != 3 {
		t.Fatalf("after Add: %+v", got)
	}
	var s Snapshot
	s.AddBuckets(got[0].Latency)
	if s.Total() != 4 || s.Quantile(0.25) > 2*time.Millisecond || s.Quantile(1) < 9*time.Millisecond {
		t.Errorf("latencies after Add: %d samples, p25 %v, max %v", s.Total(), s.Quantile(0.25), s.Quantile(1))
	}
	var nilRec *Recorder
	nilRec.Add(got) // no panic
}

// Totals run on across collections, with latencies in Prometheus buckets.
func TestTotals(t *testing.T) {
	t.Parallel()
	r, tot := NewRecorder(), NewTotals()
	k := Key{Side: Inbound, Source: "web", Destination: "api", Protocol: "http"}
	for range 3 {
		r.Edge(k).Observe(false, 300*time.Microsecond) // ≤ 0.5 ms
	}
	tot.Add(r.Collect())
	r.Edge(k).Observe(true, 40*time.Millisecond) // ≤ 50 ms
	r.Edge(k).Observe(false, 20*time.Second)     // above every bound
	tot.Add(r.Collect())
	got := tot.Snapshot()
	if len(got) != 1 {
		t.Fatalf("totals %+v", got)
	}
	e := got[0]
	if e.Key != k || e.Requests != 5 || e.Failures != 1 {
		t.Errorf("total %+v", e)
	}
	want := make([]uint64, len(PromBounds)+1)
	want[0], want[6], want[len(PromBounds)] = 3, 1, 1
	if !slices.Equal(e.Buckets, want) {
		t.Errorf("buckets %v, want %v", e.Buckets, want)
	}
	if e.SumSeconds < 18.5 || e.SumSeconds > 21.5 { // within the fine buckets' 7%
		t.Errorf("sum %v s", e.SumSeconds)
	}
}

// A window keeps at most MaxNodes nodes; the known ones go on reporting.
func TestWindow_BoundsNodes(t *testing.T) {
	t.Parallel()
	w := NewWindow(time.Minute)
	now := time.Now()
	for i := range MaxNodes {
		if err := w.Add(fmt.Sprint("n", i), time.Second, nil, now); err != nil {
			t.Fatalf("node %d: %v", i, err)
		}
	}
	if err := w.Add("one-too-many", time.Second, nil, now); !errors.Is(err, ErrFull) {
		t.Errorf("a node past MaxNodes: %v, want ErrFull", err)
	}
	if err := w.Add("n0", time.Second, nil, now); err != nil {
		t.Errorf("a known node: %v", err)
	}
}
