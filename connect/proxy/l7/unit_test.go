package l7

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/trellismesh/trellis/connect/configentry"
)

func TestTraceparent(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		v    string
		want bool
	}{
		{"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", true},
		{"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-later", true},
		{"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x", false},
		{"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", false},
		{"00-00000000000000000000000000000000-00f067aa0ba902b7-01", false},
		{"00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", false},
		{"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01", false},
		{"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7", false},
		{"", false},
	} {
		if got := validTraceparent(tc.v); got != tc.want {
			t.Errorf("validTraceparent(%q) = %v", tc.v, got)
		}
	}
	h := http.Header{}
	h.Set("Tracestate", "a=1")
	if !ensureTraceparent(h) || !validTraceparent(h.Get("Traceparent")) || h.Get("Tracestate") != "" {
		t.Errorf("started %v", h)
	}
	tp := h.Get("Traceparent")
	h.Set("Tracestate", "a=1")
	if ensureTraceparent(h) || h.Get("Traceparent") != tp || h.Get("Tracestate") != "a=1" {
		t.Errorf("kept %v", h)
	}
}

// testTarget is a target over n endpoints 10.0.0.i:20000.
func testTarget(n int) *target {
	t := &target{id: "api"}
	s := &instanceSet{}
	for i := range n {
		s.list = append(s.list, &instance{ep: Endpoint{Addr: fmt.Sprintf("10.0.0.%d:20000", i)}})
	}
	t.set.Store(s)
	return t
}

func TestPick_Policies(t *testing.T) {
	t.Parallel()
	tg := testTarget(4)
	list := tg.set.Load().list
	now := time.Now().UnixNano()
	count := func(lb *configentry.LoadBalancer, req func(i int) *http.Request) map[string]int {
		out := map[string]int{}
		for i := range 400 {
			o := pickOpts{lb: lb, req: req(i), now: now}
			out[tg.pick(&o).ep.Addr]++
		}
		return out
	}
	plain := func(int) *http.Request { return httptest.NewRequest("GET", "/", nil) }
	rr := count(&configentry.LoadBalancer{Policy: configentry.LBRoundRobin}, plain)
	for _, i := range list {
		if rr[i.ep.Addr] != 100 {
			t.Errorf("round_robin: %v", rr)
			break
		}
	}
	// The default (power of two choices) avoids the busiest.
	list[0].inflight.Store(10)
	if p2c := count(nil, plain); p2c[list[0].ep.Addr] != 0 || len(p2c) != 3 {
		t.Errorf("p2c sent requests to a busy instance or not to all idle ones: %v", p2c)
	}
	list[0].inflight.Store(0)
	for _, policy := range []string{configentry.LBRingHash, configentry.LBMaglev} {
		lb := &configentry.LoadBalancer{Policy: policy, HashPolicies: []configentry.HashPolicy{{Field: "header", FieldValue: "x-user"}}}
		byUser := func(i int) *http.Request {
			r := httptest.NewRequest("GET", "/", nil)
			r.Header.Set("X-User", fmt.Sprintf("user-%d", i%40))
			return r
		}
		a, b := map[string]string{}, map[string]string{}
		spread := map[string]int{}
		for i := range 400 {
			r := byUser(i)
			o := pickOpts{lb: lb, req: r, now: now}
			got := tg.pick(&o).ep.Addr
			u := r.Header.Get("X-User")
			if prev, ok := a[u]; ok && prev != got {
				t.Errorf("%s: %s went to %s and %s", policy, u, prev, got)
			}
			a[u] = got
			spread[got]++
		}
		if len(spread) < 3 {
			t.Errorf("%s: 40 users on %d instances", policy, len(spread))
		}
		// An ejected instance's users move; the others stay.
		list[1].ejectedUntil.Store(now + int64(time.Hour))
		moved := 0
		for i := range 40 {
			r := byUser(i)
			o := pickOpts{lb: lb, req: r, now: now}
			got := tg.pick(&o).ep.Addr
			b[r.Header.Get("X-User")] = got
			if got == list[1].ep.Addr {
				t.Errorf("%s: picked the ejected instance", policy)
			}
		}
		for u, addr := range a {
			if addr != list[1].ep.Addr && b[u] != addr {
				moved++
			}
		}
		if moved != 0 {
			t.Errorf("%s: %d users of healthy instances moved", policy, moved)
		}
		list[1].ejectedUntil.Store(0)
	}
}

// TestPick_HashTablesBuiltOnceUnderConcurrency has many requests pick at
// once by ring_hash and maglev on a set with no table yet: each policy's
// table is built once, kept, and sends a user to one instance.
func TestPick_HashTablesBuiltOnceUnderConcurrency(t *testing.T) {
	t.Parallel()
	tg := testTarget(5)
	set := tg.set.Load()
	now := time.Now().UnixNano()
	lbs := []*configentry.LoadBalancer{
		{Policy: configentry.LBRingHash, HashPolicies: []configentry.HashPolicy{{Field: "header", FieldValue: "x-user"}}},
		{Policy: configentry.LBMaglev, HashPolicies: []configentry.HashPolicy{{Field: "header", FieldValue: "x-user"}}},
	}
	const workers = 8
	got := make([][]string, workers) // by worker: the instance of user-0 under each policy
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for _, lb := range lbs {
				r := httptest.NewRequest("GET", "/", nil)
				r.Header.Set("X-User", "user-0")
				o := pickOpts{lb: lb, req: r, now: now}
				got[w] = append(got[w], tg.pick(&o).ep.Addr)
			}
		})
	}
	wg.Wait()
	for w := 1; w < workers; w++ {
		if !slices.Equal(got[w], got[0]) {
			t.Fatalf("user-0 went to %v for one request and %v for another", got[0], got[w])
		}
	}
	m := set.hashers.Load()
	if m == nil || len(*m) != len(lbs) {
		t.Fatalf("hash tables kept: %v, want one per policy", m)
	}
	for _, lb := range lbs {
		if set.table(lb) != set.table(lb) {
			t.Errorf("%s: the table is built again on a later request", lb.Policy)
		}
	}
}

func TestOutlier_MaxEjectionPercent(t *testing.T) {
	t.Parallel()
	tg := testTarget(4)
	list := tg.set.Load().list
	p := outlierOf(&configentry.PassiveHealthCheck{MaxFailures: 2, MaxEjectionPercent: ptr[uint32](50)})
	now := time.Now().UnixNano()
	ejected := 0
	for _, i := range list {
		for range 2 {
			if tg.failed(i, &p, now) {
				ejected++
			}
		}
	}
	if ejected != 2 {
		t.Errorf("50%% of 4 instances: %d ejected, want 2", ejected)
	}
	// 10% of 4 rounds to none, but one may always be ejected.
	tg = testTarget(4)
	p = outlierOf(nil)
	p.maxFailures = 1
	ejected = 0
	for _, i := range tg.set.Load().list {
		if tg.failed(i, &p, now) {
			ejected++
		}
	}
	if ejected != 1 {
		t.Errorf("default percent: %d ejected, want 1", ejected)
	}
	// The second ejection lasts twice as long.
	i := tg.set.Load().list[0]
	first := time.Duration(i.ejectedUntil.Load() - now)
	later := now + int64(first) + 1
	if !tg.failed(i, &p, later) {
		t.Fatal("not ejected again")
	}
	if second := time.Duration(i.ejectedUntil.Load() - later); second != 2*first {
		t.Errorf("second ejection %s, want %s", second, 2*first)
	}
}
