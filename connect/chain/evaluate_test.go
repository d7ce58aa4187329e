package chain

import (
	"errors"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/trellismesh/trellis/connect/configentry"
)

func newReq(method, target string, header map[string]string) *http.Request {
	r := httptest.NewRequest(method, target, nil)
	for k, v := range header {
		r.Header.Set(k, v)
	}
	return r
}

func httpRoute(m configentry.ServiceRouteHTTPMatch, svc string) configentry.ServiceRoute {
	return configentry.ServiceRoute{
		Match:       &configentry.ServiceRouteMatch{HTTP: &m},
		Destination: &configentry.ServiceRouteDestination{Service: svc},
	}
}

func TestRoute_Matches(t *testing.T) {
	type hdr = configentry.ServiceRouteHTTPMatchHeader
	type qp = configentry.ServiceRouteHTTPMatchQueryParam
	c := compile(t, "web", append(httpDefaults("web", "s0", "s1", "s2", "s3", "s4", "s5", "s6", "s7", "s8", "s9", "s10", "s11"),
		router("web",
			httpRoute(configentry.ServiceRouteHTTPMatch{PathExact: "/exact"}, "s0"),
			httpRoute(configentry.ServiceRouteHTTPMatch{PathPrefix: "/api/", Methods: []string{"POST", "PUT"}}, "s1"),
			httpRoute(configentry.ServiceRouteHTTPMatch{PathRegex: "/items/[0-9]+"}, "s2"),
			httpRoute(configentry.ServiceRouteHTTPMatch{Header: []hdr{{Name: "x-debug", Present: true}}}, "s3"),
			httpRoute(configentry.ServiceRouteHTTPMatch{Header: []hdr{{Name: "X-Env", Exact: "staging"}}}, "s4"),
			httpRoute(configentry.ServiceRouteHTTPMatch{Header: []hdr{{Name: "user-agent", Prefix: "curl/"}, {Name: "accept", Suffix: "json"}}}, "s5"),
			httpRoute(configentry.ServiceRouteHTTPMatch{Header: []hdr{{Name: "x-user", Regex: "u[0-9]{3}"}}}, "s6"),
			httpRoute(configentry.ServiceRouteHTTPMatch{PathPrefix: "/inv", Header: []hdr{{Name: "x-tenant", Exact: "a", Invert: true}}}, "s7"),
			httpRoute(configentry.ServiceRouteHTTPMatch{QueryParam: []qp{{Name: "beta", Present: true}}}, "s8"),
			httpRoute(configentry.ServiceRouteHTTPMatch{QueryParam: []qp{{Name: "v", Exact: "a b"}}}, "s9"),
			httpRoute(configentry.ServiceRouteHTTPMatch{QueryParam: []qp{{Name: "id", Regex: "[a-f]+"}}}, "s10"),
			httpRoute(configentry.ServiceRouteHTTPMatch{Header: []hdr{{Name: "Host", Exact: "admin.example"}}}, "s11"),
		))...)
	cases := []struct {
		method, target string
		header         map[string]string
		want           string // service of the target; "web" for the catch-all
		route          string
	}{
		{"GET", "/exact", nil, "s0", "route:0"},
		{"GET", "/exact/more", nil, "web", "default"},
		{"POST", "/api/x", nil, "s1", "route:1"},
		{"GET", "/api/x", nil, "web", "default"},
		{"GET", "/items/42", nil, "s2", "route:2"},
		{"GET", "/items/42x", nil, "web", "default"},
		{"GET", "/", map[string]string{"X-Debug": ""}, "s3", "route:3"},
		{"GET", "/", map[string]string{"X-Env": "staging"}, "s4", "route:4"},
		{"GET", "/", map[string]string{"X-Env": "prod"}, "web", "default"},
		{"GET", "/", map[string]string{"User-Agent": "curl/8", "Accept": "application/json"}, "s5", "route:5"},
		{"GET", "/", map[string]string{"User-Agent": "curl/8", "Accept": "text/html"}, "web", "default"},
		{"GET", "/", map[string]string{"X-User": "u123"}, "s6", "route:6"},
		{"GET", "/", map[string]string{"X-User": "u1234"}, "web", "default"},
		{"GET", "/inv", map[string]string{"X-Tenant": "b"}, "s7", "route:7"},
		{"GET", "/inv", nil, "s7", "route:7"},
		{"GET", "/inv", map[string]string{"X-Tenant": "a"}, "web", "default"},
		{"GET", "/?beta", nil, "s8", "route:8"},
		{"GET", "/?x=1&v=a+b", nil, "s9", "route:9"},
		{"GET", "/?v=a%20b", nil, "s9", "route:9"},
		{"GET", "/?v=ab", nil, "web", "default"},
		{"GET", "/?id=cafe", nil, "s10", "route:10"},
		{"GET", "/?id=cafe1", nil, "web", "default"},
		{"GET", "http://admin.example/", nil, "s11", "route:11"},
		{"DELETE", "/anything", nil, "web", "default"},
	}
	for _, tc := range cases {
		d, err := c.Route(newReq(tc.method, tc.target, tc.header), 0)
		if err != nil {
			t.Errorf("%s %s: %v", tc.method, tc.target, err)
			continue
		}
		want := TargetID(tc.want, "", "dc1")
		if d.Target != want || d.RouteName != tc.route {
			t.Errorf("%s %s %v → %s (%s), want %s (%s)", tc.method, tc.target, tc.header, d.Target, d.RouteName, want, tc.route)
		}
		if (tc.route == "default") != (d.Destination == nil) {
			t.Errorf("%s %s: Destination = %+v", tc.method, tc.target, d.Destination)
		}
		if d.Resolver == nil || d.Resolver.Target != d.Target {
			t.Errorf("%s %s: Resolver = %+v", tc.method, tc.target, d.Resolver)
		}
	}
}

func TestRoute_BadRegex(t *testing.T) {
	c := compile(t, "web", append(httpDefaults("web"),
		router("web", httpRoute(configentry.ServiceRouteHTTPMatch{PathRegex: "("}, "x")))...)
	if err := c.Prepare(); err == nil {
		t.Fatal("Prepare: no error for a bad regex")
	}
	if _, err := c.Route(newReq("GET", "/", nil), 0); err == nil {
		t.Error("Route: no error for a bad regex")
	}
}

func TestRoute_Split(t *testing.T) {
	entries := append(httpDefaults("web", "api"),
		router("web", pathRoute("/api", "api")),
		splitter("api", configentry.ServiceSplit{Weight: 90, ServiceSubset: "v1"}, configentry.ServiceSplit{Weight: 10, ServiceSubset: "v2"}),
		&configentry.ServiceResolverConfigEntry{Kind: configentry.ServiceResolver, Name: "api",
			Subsets:      map[string]configentry.ServiceResolverSubset{"v1": {Filter: "Service.Meta.v == 1"}, "v2": {Filter: "Service.Meta.v == 2"}},
			Failover:     map[string]configentry.ServiceResolverFailover{"v2": {ServiceSubset: "v1"}},
			LoadBalancer: &configentry.LoadBalancer{Policy: configentry.LBLeastRequest}},
	)
	c := compile(t, "web", entries...)
	v1, v2 := "v1.api.default.default.dc1", "v2.api.default.default.dc1"

	// Every pick in a fine sweep of [0, 100) falls in its share exactly.
	counts := map[string]int{}
	for i := range 10000 {
		d, err := c.Route(newReq("GET", "/api/x", nil), float64(i)/100)
		if err != nil {
			t.Fatal(err)
		}
		counts[d.Target]++
		if d.Split == nil || d.RouteName != "route:0" || d.LoadBalancer == nil || d.LoadBalancer.Policy != configentry.LBLeastRequest {
			t.Fatalf("decision = %+v", d)
		}
		if d.Target == v2 && (len(d.Failover) != 1 || d.Failover[0] != v1) {
			t.Fatalf("v2 failover = %v", d.Failover)
		}
	}
	if counts[v1] != 9000 || counts[v2] != 1000 {
		t.Errorf("sweep counts = %v", counts)
	}

	// Random picks land within tolerance of 90/10.
	rng := rand.New(rand.NewPCG(1, 2))
	counts = map[string]int{}
	const n = 20000
	for range n {
		d, err := c.Route(newReq("GET", "/api", nil), rng.Float64()*100)
		if err != nil {
			t.Fatal(err)
		}
		counts[d.Target]++
	}
	if share := float64(counts[v2]) / n; share < 0.09 || share > 0.11 {
		t.Errorf("v2 share = %.3f (%v)", share, counts)
	}

	// Beyond the last share (rounding) the last split serves.
	if d, _ := c.Route(newReq("GET", "/api", nil), 100); d.Target != v2 {
		t.Errorf("pick 100 → %s", d.Target)
	}
	// Not under /api: the default route, the service itself.
	if d, _ := c.Route(newReq("GET", "/", nil), 95); d.Target != "web.default.default.dc1" || d.Split != nil {
		t.Errorf("/ → %+v", d)
	}
}

func TestRoute_Concurrent(t *testing.T) {
	c := benchChain(t)
	done := make(chan error)
	for range 8 {
		go func() {
			var err error
			for i := range 200 {
				if _, e := c.Route(newReq("GET", "/p4", nil), float64(i%100)); e != nil {
					err = e
				}
			}
			done <- err
		}()
	}
	for range 8 {
		if err := <-done; err != nil {
			t.Error(err)
		}
	}
}

type tb interface {
	Helper()
	Fatalf(string, ...any)
}

// benchChain is a 5-route router whose last route leads to a 90/10 splitter.
func benchChain(t tb) *Chain {
	t.Helper()
	entries := append(httpDefaults("web", "a", "b", "c", "d", "e"),
		router("web",
			httpRoute(configentry.ServiceRouteHTTPMatch{PathExact: "/p0"}, "a"),
			httpRoute(configentry.ServiceRouteHTTPMatch{PathPrefix: "/p1", Methods: []string{"POST"}}, "b"),
			httpRoute(configentry.ServiceRouteHTTPMatch{PathRegex: "/p2/[0-9]+"}, "c"),
			httpRoute(configentry.ServiceRouteHTTPMatch{Header: []configentry.ServiceRouteHTTPMatchHeader{{Name: "x-p3", Exact: "yes"}}}, "d"),
			httpRoute(configentry.ServiceRouteHTTPMatch{PathPrefix: "/p4", QueryParam: []configentry.ServiceRouteHTTPMatchQueryParam{{Name: "q", Present: true, Regex: ""}}}, "e"),
		),
		splitter("web", configentry.ServiceSplit{Weight: 90, ServiceSubset: "v1"}, configentry.ServiceSplit{Weight: 10, ServiceSubset: "v2"}),
		&configentry.ServiceResolverConfigEntry{Kind: configentry.ServiceResolver, Name: "web",
			Subsets: map[string]configentry.ServiceResolverSubset{"v1": {Filter: "Service.Meta.v == 1"}, "v2": {Filter: "Service.Meta.v == 2"}}},
	)
	c, err := Compile(Request{ServiceName: "web", Datacenter: "dc1", Entries: set(entries...)})
	if err != nil {
		t.Fatalf("%v", err)
	}
	return c
}

// BenchmarkRoute evaluates a request that misses all 5 routes and is split
// 90/10 by the default route's splitter.
func BenchmarkRoute(b *testing.B) {
	c := benchChain(b)
	req := newReq("GET", "/other/path?x=1", map[string]string{"X-P3": "no"})
	if err := c.Prepare(); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if _, err := c.Route(req, float64(i%100)); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

func TestRoute_DestinationFilled(t *testing.T) {
	entries := append(httpDefaults("web"),
		router("web",
			configentry.ServiceRoute{Match: &configentry.ServiceRouteMatch{HTTP: &configentry.ServiceRouteHTTPMatch{PathPrefix: "/a"}}},
			configentry.ServiceRoute{
				Match:       &configentry.ServiceRouteMatch{HTTP: &configentry.ServiceRouteHTTPMatch{PathPrefix: "/b"}},
				Destination: &configentry.ServiceRouteDestination{PrefixRewrite: "/"},
			}),
	)
	c := compile(t, "web", entries...)
	for i, path := range []string{"/a", "/b"} {
		d, err := c.Route(newReq("GET", path, nil), 0)
		if err != nil || d.Destination == nil || d.Destination.Service != "web" || d.Target != "web.default.default.dc1" || d.RouteName != c.eval.prep.names[i] {
			t.Errorf("%s → %+v, %v", path, d, err)
		}
	}
	if r := entries[1].(*configentry.ServiceRouterConfigEntry); r.Routes[1].Destination.Service != "" || r.Routes[0].Destination != nil {
		t.Errorf("the entry was changed: %+v", r.Routes)
	}
}

func TestEvaluate_Malformed(t *testing.T) {
	loop := &Chain{ServiceName: "x", StartNode: "splitter:x", Nodes: map[string]*Node{
		"splitter:x": {Type: NodeSplitter, Splits: []*Split{{Weight: 100, NextNode: "splitter:x"}}},
	}}
	if _, err := loop.Route(newReq("GET", "/", nil), 0); err == nil || !strings.Contains(err.Error(), "more than") {
		t.Errorf("loop: %v", err)
	}
	if p, _ := loop.TCPTarget(); p != "" {
		t.Errorf("loop TCPTarget = %q", p)
	}
	missing := &Chain{ServiceName: "x", StartNode: "resolver:nope", Nodes: map[string]*Node{}}
	if _, err := missing.Route(newReq("GET", "/", nil), 0); err == nil || !strings.Contains(err.Error(), "resolver:nope") {
		t.Errorf("missing node: %v", err)
	}
	noCatchAll := &Chain{ServiceName: "x", StartNode: "router:x", Nodes: map[string]*Node{
		"router:x": {Type: NodeRouter, Routes: []*Route{{Definition: &configentry.ServiceRoute{
			Match: &configentry.ServiceRouteMatch{HTTP: &configentry.ServiceRouteHTTPMatch{PathExact: "/only"}}}, NextNode: "resolver:y"}}},
	}}
	if _, err := noCatchAll.Route(newReq("GET", "/", nil), 0); !errors.Is(err, ErrNoRoute) {
		t.Errorf("no catch-all: %v", err)
	}
}

func TestTCPTarget_HTTPChain(t *testing.T) {
	// A splitter start: the heaviest share's resolver.
	c := compile(t, "web", append(httpDefaults("web", "web-next"),
		splitter("web", configentry.ServiceSplit{Weight: 30}, configentry.ServiceSplit{Weight: 70, Service: "web-next"}))...)
	if p, _ := c.TCPTarget(); p != "web-next.default.default.dc1" {
		t.Errorf("TCPTarget = %s", p)
	}
}
