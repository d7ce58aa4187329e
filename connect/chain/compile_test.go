package chain

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/trellismesh/trellis/connect/configentry"
)

func set(entries ...configentry.Entry) configentry.MapSet {
	m := configentry.MapSet{}
	for _, e := range entries {
		m[configentry.Key{Kind: e.GetKind(), Name: e.GetName()}] = e
	}
	return m
}

func httpDefaults(names ...string) []configentry.Entry {
	var out []configentry.Entry
	for _, n := range names {
		out = append(out, &configentry.ServiceConfigEntry{Kind: configentry.ServiceDefaults, Name: n, Protocol: "http"})
	}
	return out
}

func compile(t *testing.T, svc string, entries ...configentry.Entry) *Chain {
	t.Helper()
	c, err := Compile(Request{ServiceName: svc, Datacenter: "dc1", Entries: set(entries...)})
	if err != nil {
		t.Fatalf("Compile(%s): %v", svc, err)
	}
	return c
}

func TestCompile_Default(t *testing.T) {
	c := compile(t, "web")
	if !c.Default || c.Protocol != "tcp" || c.StartNode != "resolver:web.default.default.dc1" || len(c.Nodes) != 1 || len(c.Targets) != 1 {
		t.Fatalf("chain = %+v", c)
	}
	n := c.Nodes[c.StartNode]
	if n.Type != NodeResolver || n.Name != "web.default.default.dc1" || !n.Resolver.Default ||
		n.Resolver.Target != "web.default.default.dc1" || n.Resolver.ConnectTimeout != DefaultConnectTimeout || n.Resolver.Failover != nil {
		t.Errorf("node = %+v, resolver %+v", n, n.Resolver)
	}
	tg := c.Targets["web.default.default.dc1"]
	if tg == nil || tg.Service != "web" || tg.Name != "web" || tg.Datacenter != "dc1" || tg.ServiceSubset != "" || tg.ConnectTimeout != DefaultConnectTimeout {
		t.Errorf("target = %+v", tg)
	}
	if p, f := c.TCPTarget(); p != "web.default.default.dc1" || f != nil {
		t.Errorf("TCPTarget = %q %v", p, f)
	}
	// A service-defaults entry alone leaves the chain the default one.
	if c := compile(t, "web", httpDefaults("web")...); !c.Default || c.Protocol != "http" {
		t.Errorf("with service-defaults: Default %v, protocol %s", c.Default, c.Protocol)
	}
	if _, err := Compile(Request{Datacenter: "dc1"}); err == nil {
		t.Error("no service name: no error")
	}
}

func TestCompile_Resolvers(t *testing.T) {
	sec := func(n int) configentry.Duration { return configentry.Duration(time.Duration(n) * time.Second) }
	resolver := func(name string, f func(*configentry.ServiceResolverConfigEntry)) *configentry.ServiceResolverConfigEntry {
		r := &configentry.ServiceResolverConfigEntry{Kind: configentry.ServiceResolver, Name: name}
		f(r)
		return r
	}
	subsets := map[string]configentry.ServiceResolverSubset{
		"v1": {Filter: "Service.Meta.version == v1"},
		"v2": {Filter: "Service.Meta.version == v2", OnlyPassing: true},
	}
	cases := []struct {
		name     string
		svc      string
		entries  []configentry.Entry
		target   string   // the start resolver's target
		failover []string // its failover targets
		filter   string   // the target's subset filter
		timeout  configentry.Duration
		err      string
	}{
		{name: "redirect", svc: "db", entries: []configentry.Entry{
			resolver("db", func(r *configentry.ServiceResolverConfigEntry) {
				r.Redirect = &configentry.ServiceResolverRedirect{Service: "db-v2"}
			})}, target: "db-v2.default.default.dc1", timeout: DefaultConnectTimeout},
		{name: "redirect chain and subset", svc: "db", entries: []configentry.Entry{
			resolver("db", func(r *configentry.ServiceResolverConfigEntry) {
				r.Redirect = &configentry.ServiceResolverRedirect{Service: "db-v2"}
			}),
			resolver("db-v2", func(r *configentry.ServiceResolverConfigEntry) {
				r.Redirect = &configentry.ServiceResolverRedirect{Service: "db-v3", ServiceSubset: "v2", Datacenter: "dc2"}
			}),
			resolver("db-v3", func(r *configentry.ServiceResolverConfigEntry) {
				r.Subsets = subsets
				r.ConnectTimeout = sec(2)
			})}, target: "v2.db-v3.default.default.dc2", filter: "Service.Meta.version == v2", timeout: sec(2)},
		{name: "redirect to own subset", svc: "db", entries: []configentry.Entry{
			resolver("db", func(r *configentry.ServiceResolverConfigEntry) {
				r.Subsets = subsets
				r.Redirect = &configentry.ServiceResolverRedirect{ServiceSubset: "v1"}
			})}, target: "v1.db.default.default.dc1", filter: "Service.Meta.version == v1", timeout: DefaultConnectTimeout},
		{name: "redirect loop", svc: "a", entries: []configentry.Entry{
			resolver("a", func(r *configentry.ServiceResolverConfigEntry) {
				r.Redirect = &configentry.ServiceResolverRedirect{Service: "b"}
			}),
			resolver("b", func(r *configentry.ServiceResolverConfigEntry) {
				r.Redirect = &configentry.ServiceResolverRedirect{Service: "a"}
			})}, err: "redirect loop: a.default.default.dc1 -> b.default.default.dc1 -> a.default.default.dc1"},
		{name: "default subset", svc: "web", entries: []configentry.Entry{
			resolver("web", func(r *configentry.ServiceResolverConfigEntry) {
				r.Subsets = subsets
				r.DefaultSubset = "v1"
				r.ConnectTimeout = sec(3)
			})}, target: "v1.web.default.default.dc1", filter: "Service.Meta.version == v1", timeout: sec(3)},
		{name: "unknown default subset", svc: "web", entries: []configentry.Entry{
			resolver("web", func(r *configentry.ServiceResolverConfigEntry) {
				r.Subsets = subsets
				r.DefaultSubset = "v9"
			})}, err: `service-resolver/web: Subsets: no subset "v9"`},
		{name: "failover in order", svc: "db", entries: []configentry.Entry{
			resolver("db", func(r *configentry.ServiceResolverConfigEntry) {
				r.Failover = map[string]configentry.ServiceResolverFailover{"*": {Targets: []configentry.ServiceResolverFailoverTarget{
					{Service: "db-backup"}, {Datacenter: "dc2"}, {Service: "db"}, {Service: "db-backup"}, {Service: "db-old"},
				}}}
			}),
			resolver("db-old", func(r *configentry.ServiceResolverConfigEntry) {
				r.Redirect = &configentry.ServiceResolverRedirect{Service: "db-archive"}
			})},
			target:   "db.default.default.dc1",
			failover: []string{"db-backup.default.default.dc1", "db.default.default.dc2", "db-archive.default.default.dc1"},
			timeout:  DefaultConnectTimeout},
		{name: "failover by subset before *", svc: "web", entries: []configentry.Entry{
			resolver("web", func(r *configentry.ServiceResolverConfigEntry) {
				r.Subsets = subsets
				r.DefaultSubset = "v2"
				r.Failover = map[string]configentry.ServiceResolverFailover{
					"*":  {Service: "web-dr"},
					"v2": {ServiceSubset: "v1", Datacenters: []string{"dc2", "dc3"}},
				}
			})},
			target:   "v2.web.default.default.dc1",
			failover: []string{"v1.web.default.default.dc2", "v1.web.default.default.dc3"},
			filter:   "Service.Meta.version == v2", timeout: DefaultConnectTimeout},
		{name: "failover keeps the subset", svc: "web", entries: []configentry.Entry{
			resolver("web", func(r *configentry.ServiceResolverConfigEntry) {
				r.Subsets = subsets
				r.DefaultSubset = "v1"
				r.Failover = map[string]configentry.ServiceResolverFailover{"*": {Datacenters: []string{"dc2"}}}
			})},
			target: "v1.web.default.default.dc1", failover: []string{"v1.web.default.default.dc2"},
			filter: "Service.Meta.version == v1", timeout: DefaultConnectTimeout},
		{name: "failover to unknown subset", svc: "web", entries: []configentry.Entry{
			resolver("web", func(r *configentry.ServiceResolverConfigEntry) {
				r.Failover = map[string]configentry.ServiceResolverFailover{"*": {ServiceSubset: "nope"}}
			})}, err: `Failover["*"].Targets[0]: service-resolver/web: Subsets: no subset "nope"`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Compile(Request{ServiceName: tc.svc, Datacenter: "dc1", Entries: set(tc.entries...)})
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if c.Default {
				t.Error("Default with a resolver entry")
			}
			if c.StartNode != "resolver:"+tc.target {
				t.Fatalf("StartNode = %s, want resolver:%s", c.StartNode, tc.target)
			}
			res := c.Nodes[c.StartNode].Resolver
			var failover []string
			if res.Failover != nil {
				failover = res.Failover.Targets
			}
			if res.Target != tc.target || strings.Join(failover, ",") != strings.Join(tc.failover, ",") || res.ConnectTimeout != tc.timeout {
				t.Errorf("resolver = %+v (failover %v), want target %s failover %v timeout %s", res, failover, tc.target, tc.failover, tc.timeout.D())
			}
			p, f := c.TCPTarget()
			if p != tc.target || strings.Join(f, ",") != strings.Join(tc.failover, ",") {
				t.Errorf("TCPTarget = %s %v", p, f)
			}
			tg := c.Targets[tc.target]
			if tg == nil || tg.Subset.Filter != tc.filter || tg.ConnectTimeout != tc.timeout || tg.Name != tg.Service {
				t.Errorf("target = %+v", tg)
			}
			for _, id := range failover {
				if c.Targets[id] == nil {
					t.Errorf("failover target %s not in Targets", id)
				}
			}
		})
	}
}

func TestCompile_ResolverSettings(t *testing.T) {
	lb := &configentry.LoadBalancer{Policy: configentry.LBRingHash, HashPolicies: []configentry.HashPolicy{{Field: "header", FieldValue: "x-user"}}}
	r := &configentry.ServiceResolverConfigEntry{Kind: configentry.ServiceResolver, Name: "api",
		RequestTimeout: configentry.Duration(7 * time.Second), DrainTimeout: configentry.Duration(time.Minute), LoadBalancer: lb}
	c := compile(t, "api", r)
	n := c.Nodes[c.StartNode]
	if n.Resolver.Default || n.Resolver.RequestTimeout.D() != 7*time.Second || n.Resolver.DrainTimeout.D() != time.Minute ||
		n.Resolver.ConnectTimeout != DefaultConnectTimeout || n.LoadBalancer == nil || n.LoadBalancer.Policy != configentry.LBRingHash {
		t.Errorf("node = %+v resolver %+v", n, n.Resolver)
	}
	if n.LoadBalancer == lb {
		t.Error("LoadBalancer aliases the entry")
	}
}

// A redirect's DrainTimeout, written beside it, is the one the chain uses:
// the redirect is what moves the connections.
func TestCompile_RedirectCarriesDrainTimeout(t *testing.T) {
	db := &configentry.ServiceResolverConfigEntry{Kind: configentry.ServiceResolver, Name: "db",
		Redirect: &configentry.ServiceResolverRedirect{Service: "db-v2"}, DrainTimeout: configentry.Duration(30 * time.Second)}
	for _, tc := range []struct {
		name    string
		entries []configentry.Entry
	}{
		{"no resolver for db-v2", []configentry.Entry{db}},
		{"db-v2 has its own", []configentry.Entry{db, &configentry.ServiceResolverConfigEntry{Kind: configentry.ServiceResolver, Name: "db-v2",
			DrainTimeout: configentry.Duration(time.Hour)}}},
	} {
		c := compile(t, "db", tc.entries...)
		res := c.Nodes[c.StartNode].Resolver
		if res.Target != "db-v2.default.default.dc1" || res.DrainTimeout.D() != 30*time.Second {
			t.Errorf("%s: resolver %+v", tc.name, res)
		}
	}
}

func router(name string, routes ...configentry.ServiceRoute) *configentry.ServiceRouterConfigEntry {
	return &configentry.ServiceRouterConfigEntry{Kind: configentry.ServiceRouter, Name: name, Routes: routes}
}

func splitter(name string, splits ...configentry.ServiceSplit) *configentry.ServiceSplitterConfigEntry {
	return &configentry.ServiceSplitterConfigEntry{Kind: configentry.ServiceSplitter, Name: name, Splits: splits}
}

func pathRoute(prefix, svc string) configentry.ServiceRoute {
	return configentry.ServiceRoute{
		Match:       &configentry.ServiceRouteMatch{HTTP: &configentry.ServiceRouteHTTPMatch{PathPrefix: prefix}},
		Destination: &configentry.ServiceRouteDestination{Service: svc},
	}
}

func TestCompile_RouterSplitterResolver(t *testing.T) {
	entries := append(httpDefaults("web", "admin", "billing"),
		router("web", pathRoute("/admin", "admin"), pathRoute("/billing", "billing"),
			configentry.ServiceRoute{
				Match:       &configentry.ServiceRouteMatch{HTTP: &configentry.ServiceRouteHTTPMatch{PathPrefix: "/v1"}},
				Destination: &configentry.ServiceRouteDestination{ServiceSubset: "v1"},
			}),
		splitter("billing", configentry.ServiceSplit{Weight: 90, ServiceSubset: "v1"}, configentry.ServiceSplit{Weight: 10, ServiceSubset: "v2"}),
		&configentry.ServiceResolverConfigEntry{Kind: configentry.ServiceResolver, Name: "billing",
			Subsets: map[string]configentry.ServiceResolverSubset{"v1": {Filter: "Service.Meta.v == 1"}, "v2": {Filter: "Service.Meta.v == 2"}}},
		&configentry.ServiceResolverConfigEntry{Kind: configentry.ServiceResolver, Name: "web",
			Subsets: map[string]configentry.ServiceResolverSubset{"v1": {Filter: "Service.Meta.v == 1"}}},
	)
	c := compile(t, "web", entries...)
	if c.Default || c.StartNode != "router:web.default.default" {
		t.Fatalf("StartNode = %s, Default %v", c.StartNode, c.Default)
	}
	rt := c.Nodes["router:web.default.default"]
	want := []string{"resolver:admin.default.default.dc1", "splitter:billing.default.default", "resolver:v1.web.default.default.dc1", "resolver:web.default.default.dc1"}
	if rt == nil || len(rt.Routes) != len(want) {
		t.Fatalf("router = %+v", rt)
	}
	for i, r := range rt.Routes {
		if r.NextNode != want[i] {
			t.Errorf("Routes[%d].NextNode = %s, want %s", i, r.NextNode, want[i])
		}
	}
	last := rt.Routes[len(rt.Routes)-1].Definition
	if last.Match.HTTP.PathPrefix != "/" || last.Destination.Service != "web" {
		t.Errorf("catch-all = %+v", last)
	}
	sp := c.Nodes["splitter:billing.default.default"]
	if sp == nil || len(sp.Splits) != 2 || sp.Splits[0].NextNode != "resolver:v1.billing.default.default.dc1" ||
		sp.Splits[1].NextNode != "resolver:v2.billing.default.default.dc1" || sp.Splits[0].Weight != 90 {
		t.Fatalf("splitter = %+v", sp)
	}
	for _, id := range []string{"admin.default.default.dc1", "v1.billing.default.default.dc1", "v2.billing.default.default.dc1", "v1.web.default.default.dc1", "web.default.default.dc1"} {
		if c.Targets[id] == nil || c.Nodes["resolver:"+id] == nil {
			t.Errorf("no target or resolver node %s", id)
		}
	}
	if p, _ := c.TCPTarget(); p != "web.default.default.dc1" {
		t.Errorf("TCPTarget of an http chain = %s", p)
	}

}

func TestCompile_SplitterFlattened(t *testing.T) {
	entries := append(httpDefaults("web", "web-next", "web-canary"),
		splitter("web", configentry.ServiceSplit{Weight: 50}, configentry.ServiceSplit{Weight: 50, Service: "web-next"}),
		splitter("web-next", configentry.ServiceSplit{Weight: 80}, configentry.ServiceSplit{Weight: 20, Service: "web-canary"}),
	)
	c := compile(t, "web", entries...)
	sp := c.Nodes[c.StartNode]
	if c.StartNode != "splitter:web.default.default" || sp == nil || len(sp.Splits) != 3 {
		t.Fatalf("chain = %+v", c)
	}
	want := []struct {
		w    float32
		next string
	}{{50, "resolver:web.default.default.dc1"}, {40, "resolver:web-next.default.default.dc1"}, {10, "resolver:web-canary.default.default.dc1"}}
	for i, s := range sp.Splits {
		if s.Weight != want[i].w || s.NextNode != want[i].next {
			t.Errorf("Splits[%d] = %v → %s, want %v → %s", i, s.Weight, s.NextNode, want[i].w, want[i].next)
		}
	}
	if c.Nodes["splitter:web-next.default.default"] != nil {
		t.Error("the nested splitter is a node of its own")
	}

	loop := append(httpDefaults("a", "b"),
		splitter("a", configentry.ServiceSplit{Weight: 50}, configentry.ServiceSplit{Weight: 50, Service: "b"}),
		splitter("b", configentry.ServiceSplit{Weight: 50}, configentry.ServiceSplit{Weight: 50, Service: "a"}))
	if _, err := Compile(Request{ServiceName: "a", Datacenter: "dc1", Entries: set(loop...)}); err == nil || !strings.Contains(err.Error(), "splitter loop: a -> b -> a") {
		t.Errorf("splitter loop: err = %v", err)
	}
}

func TestCompile_TCPUsesOnlyTheResolver(t *testing.T) {
	// A router and splitter left behind when the protocol became tcp.
	c := compile(t, "db",
		router("db", pathRoute("/x", "other")),
		splitter("db", configentry.ServiceSplit{Weight: 100, Service: "other"}),
		&configentry.ServiceResolverConfigEntry{Kind: configentry.ServiceResolver, Name: "db",
			Redirect: &configentry.ServiceResolverRedirect{Service: "db-v2"}},
	)
	if c.Protocol != "tcp" || c.StartNode != "resolver:db-v2.default.default.dc1" || len(c.Nodes) != 1 || len(c.Targets) != 1 {
		t.Fatalf("chain = %+v", c)
	}
	if p, f := c.TCPTarget(); p != "db-v2.default.default.dc1" || f != nil {
		t.Errorf("TCPTarget = %s %v", p, f)
	}
}

func TestCompile_JSONShape(t *testing.T) {
	c := compile(t, "web", append(httpDefaults("web"),
		router("web", pathRoute("/admin", "admin")),
		&configentry.ServiceResolverConfigEntry{Kind: configentry.ServiceResolver, Name: "web",
			Failover: map[string]configentry.ServiceResolverFailover{"*": {Service: "web-dr"}}},
	)...)
	b, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"ServiceName", "Datacenter", "Protocol", "StartNode", "Nodes", "Targets", "Default"} {
		if _, ok := m[k]; !ok {
			t.Errorf("no %s in %s", k, b)
		}
	}
	if len(m) != 7 {
		t.Errorf("top-level keys: %v", m)
	}
	nodes := m["Nodes"].(map[string]any)
	rt := nodes["router:web.default.default"].(map[string]any)
	route := rt["Routes"].([]any)[0].(map[string]any)
	def := route["Definition"].(map[string]any)
	if rt["Type"] != "router" || route["NextNode"] != "resolver:admin.default.default.dc1" ||
		def["Match"].(map[string]any)["HTTP"].(map[string]any)["PathPrefix"] != "/admin" {
		t.Errorf("router node = %v", rt)
	}
	res := nodes["resolver:web.default.default.dc1"].(map[string]any)["Resolver"].(map[string]any)
	if res["Target"] != "web.default.default.dc1" || res["ConnectTimeout"] != "5s" ||
		res["Failover"].(map[string]any)["Targets"].([]any)[0] != "web-dr.default.default.dc1" {
		t.Errorf("resolver = %v", res)
	}
	tg := m["Targets"].(map[string]any)["web.default.default.dc1"].(map[string]any)
	for _, k := range []string{"ID", "Service", "Datacenter", "Subset", "ConnectTimeout", "Name"} {
		if _, ok := tg[k]; !ok {
			t.Errorf("target lacks %s: %v", k, tg)
		}
	}

	// It reads back into a chain that evaluates the same.
	var back Chain
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	d, err := back.Route(newReq("GET", "/admin/x", nil), 0)
	if err != nil || d.Target != "admin.default.default.dc1" || d.RouteName != "route:0" {
		t.Errorf("decoded chain routes to %+v, %v", d, err)
	}
}

// Splitters that reach one another by many paths flatten in the number of
// their splits, not of the paths (2^30 here).
func TestCompile_SplitterPathsDoNotMultiply(t *testing.T) {
	var entries []configentry.Entry
	const depth = 30
	for i := range depth {
		name := fmt.Sprint("s", i)
		entries = append(entries, httpDefaults(name)...)
		if i == depth-1 {
			entries = append(entries, splitter(name, configentry.ServiceSplit{Weight: 100}))
			continue
		}
		next := fmt.Sprint("s", i+1)
		entries = append(entries, splitter(name, configentry.ServiceSplit{Weight: 50, Service: next}, configentry.ServiceSplit{Weight: 50, Service: next}))
	}
	c := compile(t, "s0", entries...)
	sp := c.Nodes[c.StartNode]
	var sum float32
	for _, s := range sp.Splits {
		sum += s.Weight
		if s.NextNode != "resolver:s29.default.default.dc1" {
			t.Errorf("a split leads to %s", s.NextNode)
		}
	}
	if len(sp.Splits) > 2 || sum < 99.99 || sum > 100.01 {
		t.Errorf("%d splits summing to %v; want at most 2, summing to 100", len(sp.Splits), sum)
	}
}
