package golden

import (
	"fmt"
	"runtime"
	"slices"
	"testing"
	"time"
)

// BenchmarkEdge_Observe is the cost a proxy pays per request: the figure
// the golden-metrics page quotes.
func BenchmarkEdge_Observe(b *testing.B) {
	e := NewRecorder().Edge(Key{Side: Outbound, Source: "web", Destination: "api", Protocol: "http"})
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			i++
			e.Observe(i%100 == 0, time.Duration(i%5000)*time.Microsecond)
		}
	})
}

// BenchmarkWindow_Edges is a query of the UI over a large mesh: 200 nodes,
// each reporting 20 edges every 5 s for the last 5 minutes, asked for one
// service's edges over 15 s and for every edge over 5 minutes.
func BenchmarkWindow_Edges(b *testing.B) {
	w := NewWindow(5 * time.Minute)
	now := time.Now()
	var h Histogram
	for i := range 200 {
		h.Record(time.Duration(i) * 37 * time.Microsecond)
	}
	snap := h.Snapshot()
	lat := snap.Buckets()
	// Every report's samples are its own, as when decoded from the wire.
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for r := range 60 {
		for node := range 200 {
			var samples []Sample
			for e := range 20 {
				samples = append(samples, Sample{Side: Outbound, Source: fmt.Sprintf("svc-%d", node%50), Destination: fmt.Sprintf("svc-%d", e),
					Protocol: "http", Requests: 200, Failures: 1, Latency: slices.Clone(lat)})
			}
			w.Add(fmt.Sprintf("node-%d", node), 5*time.Second, samples, now.Add(-time.Duration(60-r)*5*time.Second+time.Second))
		}
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	held := float64(after.HeapAlloc-before.HeapAlloc) / (1 << 20)
	for _, tc := range []struct {
		name string
		span time.Duration
		svc  string
	}{{"one-service-15s", 15 * time.Second, "svc-3"}, {"all-5m", 5 * time.Minute, ""}} {
		b.Run(tc.name, func(b *testing.B) {
			var match func(string, string) bool
			if tc.svc != "" {
				match = func(src, dst string) bool { return src == tc.svc || dst == tc.svc }
			}
			var n int
			for b.Loop() {
				n = len(w.Edges(tc.span, now, match))
			}
			b.ReportMetric(float64(n), "edges")
			b.ReportMetric(held, "MB-held")
		})
	}
}
