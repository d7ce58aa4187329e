package chain

import (
	"strings"
	"testing"
	"time"

	"github.com/trellismesh/trellis/api"
)

func TestFormatText(t *testing.T) {
	sec := func(n int) api.ReadableDuration { return api.ReadableDuration(time.Duration(n) * time.Second) }
	ch := &api.CompiledDiscoveryChain{
		ServiceName: "web", Datacenter: "dc1", Protocol: "http", StartNode: "router:web.default.default",
		Nodes: map[string]*api.DiscoveryGraphNode{
			"router:web.default.default": {Type: "router", Name: "web.default.default", Routes: []*api.DiscoveryRoute{
				{Definition: &api.ServiceRoute{Match: &api.ServiceRouteMatch{HTTP: &api.ServiceRouteHTTPMatch{
					PathRegex:  "/items/[0-9]+",
					Header:     []api.ServiceRouteHTTPMatchHeader{{Name: "x-env", Exact: "prod", Invert: true}, {Name: "x-debug"}},
					QueryParam: []api.ServiceRouteHTTPMatchQueryParam{{Name: "beta", Present: true}, {Name: "id", Regex: "[a-f]+"}},
					Methods:    []string{"GET", "HEAD"},
				}}}, NextNode: "splitter:web.default.default"},
				{Definition: &api.ServiceRoute{Match: &api.ServiceRouteMatch{HTTP: &api.ServiceRouteHTTPMatch{PathPrefix: "/"}}}, NextNode: "resolver:web.default.default.dc1"},
			}},
			"splitter:web.default.default": {Type: "splitter", Name: "web.default.default", Splits: []*api.DiscoverySplit{
				{Weight: 66.67, NextNode: "resolver:v1.web.default.default.dc1"},
				{Weight: 33.33, NextNode: "resolver:web.default.default.dc1"},
			}},
			"resolver:v1.web.default.default.dc1": {Type: "resolver", Name: "v1.web.default.default.dc1",
				Resolver: &api.DiscoveryResolver{ConnectTimeout: sec(2), RequestTimeout: sec(9), DrainTimeout: sec(60),
					Target: "v1.web.default.default.dc1", Failover: &api.DiscoveryFailover{Targets: []string{"v1.web.default.default.dc2"}}},
				LoadBalancer: &api.LoadBalancer{Policy: "ring_hash"}},
			"resolver:web.default.default.dc1": {Type: "resolver", Name: "web.default.default.dc1",
				Resolver: &api.DiscoveryResolver{Default: true, ConnectTimeout: sec(5), Target: "web.default.default.dc1"}},
			"resolver:orphan.default.default.dc1": {Type: "resolver", Name: "orphan.default.default.dc1",
				Resolver: &api.DiscoveryResolver{ConnectTimeout: sec(5), Target: "orphan.default.default.dc1"}},
		},
		Targets: map[string]*api.DiscoveryTarget{
			"v1.web.default.default.dc1": {ID: "v1.web.default.default.dc1", Service: "web", ServiceSubset: "v1", Datacenter: "dc1",
				Subset: api.ServiceResolverSubset{Filter: "Service.Meta.version == v1", OnlyPassing: true}, ConnectTimeout: sec(2), Name: "web"},
			"v1.web.default.default.dc2": {ID: "v1.web.default.default.dc2", Service: "web", ServiceSubset: "v1", Datacenter: "dc2", ConnectTimeout: sec(2), Name: "web"},
			"web.default.default.dc1":    {ID: "web.default.default.dc1", Service: "web", Datacenter: "dc1", ConnectTimeout: sec(5), Name: "web"},
		},
	}
	got := formatText(ch)
	for _, want := range []string{
		"Start node:  router:web.default.default\n",
		"  route:0  path ~ /items/[0-9]+, header x-env not = prod, header x-debug present, query beta present, query id ~ [a-f]+, method GET|HEAD  -> splitter:web.default.default\n",
		"  default  path prefix /",
		"  66.67%  -> resolver:v1.web.default.default.dc1\n",
		"  33.33%  -> resolver:web.default.default.dc1\n",
		"  Failover:         v1.web.default.default.dc2\n",
		"  Request timeout:  9s\n",
		"  Drain timeout:    1m0s\n",
		"  Load balancer:    ring_hash\n",
		"  (no service-resolver entry: defaults)\n",
		"  v1.web.default.default.dc1  service web, subset v1 (Service.Meta.version == v1), only passing, connect timeout 2s\n",
		"  v1.web.default.default.dc2  service web, subset v1, datacenter dc2, connect timeout 2s\n",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("output lacks %q:\n%s", want, got)
		}
	}
	// Nodes in the order evaluation reaches them; unreached ones last.
	order := []string{"\nrouter:web.default.default\n", "\nsplitter:web.default.default\n", "\nresolver:web.default.default.dc1\n",
		"\nresolver:v1.web.default.default.dc1\n", "\nresolver:orphan.default.default.dc1\n", "\nTargets\n"}
	last := -1
	for _, o := range order {
		i := strings.Index(got, o)
		if i <= last {
			t.Errorf("%q out of order:\n%s", o, got)
		}
		last = i
	}
	if strings.Contains(got, "Default:") {
		t.Error("a shaped chain says Default")
	}
}

func TestWeight(t *testing.T) {
	for w, want := range map[float32]string{100: "100", 90: "90", 12.5: "12.5", 33.33: "33.33", 0: "0"} {
		if got := weight(w); got != want {
			t.Errorf("weight(%v) = %q, want %q", w, got, want)
		}
	}
}
