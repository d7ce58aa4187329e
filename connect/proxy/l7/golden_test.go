package l7

import (
	"net/http"
	"testing"

	"github.com/trellismesh/trellis/connect/golden"
	"github.com/trellismesh/trellis/internal/retry"
)

// Each request counts once on each side of its edge; a 5xx answer is a
// failure on both.
func TestGolden_countsRequestsOnBothSides(t *testing.T) {
	t.Parallel()
	m := newMesh(t)
	rec := golden.NewRecorder()
	appAddr := startApp(t, false, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/fail" {
			w.WriteHeader(http.StatusInternalServerError)
		}
	}).addr
	api := startDest(t, m, InboundConfig{Service: "api", LocalAppAddr: appAddr, Golden: rec})
	s := startSource(t, m, OutboundConfig{DestinationName: "api", Golden: rec})
	s.out.SetTargetEndpoints(targetID("api"), []Endpoint{api.endpoint()})
	c := client(t)
	for i := range 10 {
		path := "/ok"
		if i < 2 {
			path = "/fail"
		}
		get(t, c, s.url+path)
	}
	// A side counts a request when its handler returns, which may be just
	// after the client read the answer: collect until all are in.
	got := map[golden.Side]*golden.Sample{}
	retry.Run(t, func(r *retry.R) {
		for _, smp := range rec.Collect() {
			if smp.Source != "web" || smp.Destination != "api" || smp.Protocol != "http" {
				t.Fatalf("unexpected sample %+v", smp)
			}
			if acc := got[smp.Side]; acc != nil {
				acc.Requests += smp.Requests
				acc.Failures += smp.Failures
			} else {
				got[smp.Side] = &smp
			}
		}
		for _, side := range []golden.Side{golden.Outbound, golden.Inbound} {
			if smp := got[side]; smp == nil || smp.Requests != 10 || smp.Failures != 2 {
				r.Fatalf("%s: %+v; want 10 requests, 2 failed", side, smp)
			}
		}
	})
}
