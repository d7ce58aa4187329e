package mesh

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/trellismesh/trellis/connect/chain"
	"github.com/trellismesh/trellis/connect/configentry"
	"github.com/trellismesh/trellis/connect/proxy"
	"github.com/trellismesh/trellis/internal/retry"
	"github.com/trellismesh/trellis/internal/testutil"
	"github.com/trellismesh/trellis/raftstore"
	"github.com/trellismesh/trellis/raftstore/structs"
)

// writeEntry upserts (or with del, deletes) a config entry through the
// server's RPC.
func writeEntry(t *testing.T, s *raftstore.Server, e configentry.Entry, del bool) {
	t.Helper()
	method, op := structs.MethodConfigEntryApply, "upsert"
	if del {
		method, op = structs.MethodConfigEntryDelete, "delete"
	}
	var reply structs.ConfigEntryApplyReply
	if err := s.RPC(t.Context(), method, &structs.ConfigEntryRequest{Op: op, Entry: configentry.Envelope{Entry: e}}, &reply); err != nil {
		t.Fatalf("%s %s/%s: %v", op, e.GetKind(), e.GetName(), err)
	}
}

// chains collects what a chain subscription delivers.
func chains(t *testing.T, c *Cache, service string) (<-chan *chain.Chain, func()) {
	t.Helper()
	got := make(chan *chain.Chain, 100)
	release, err := c.SubscribeChain(service, func(ch *chain.Chain) { got <- ch })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(release)
	return got, release
}

// waitPrimary waits for a chain from got whose tcp target is want.
func waitPrimary(t *testing.T, got <-chan *chain.Chain, want string) *chain.Chain {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case ch := <-got:
			if p, _ := ch.TCPTarget(); p == want {
				return ch
			}
		case <-timeout:
			t.Fatalf("no chain leading to %s", want)
		}
	}
}

func TestCache_SubscribeChain_followsEntries(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	c := newCache(t, s, true)
	got, release := chains(t, c, "db")
	first := waitPrimary(t, got, "db.default.default.dc1")
	if !first.Default {
		t.Errorf("the chain of a service without entries is not Default: %+v", first)
	}
	// A second subscriber shares the watch and sees the current chain at once.
	got2, release2 := chains(t, c, "DB")
	waitPrimary(t, got2, "db.default.default.dc1")
	c.mu.Lock()
	n := len(c.chains)
	c.mu.Unlock()
	if n != 1 {
		t.Errorf("%d chain watches for one service, want 1", n)
	}

	writeEntry(t, s, &configentry.ServiceResolverConfigEntry{Kind: configentry.ServiceResolver, Name: "db",
		Redirect: &configentry.ServiceResolverRedirect{Service: "db-v2"}}, false)
	waitPrimary(t, got, "db-v2.default.default.dc1")
	waitPrimary(t, got2, "db-v2.default.default.dc1")

	writeEntry(t, s, &configentry.ServiceResolverConfigEntry{Kind: configentry.ServiceResolver, Name: "db"}, true)
	waitPrimary(t, got, "db.default.default.dc1")

	release()
	release2()
	release2() // idempotent
	c.mu.Lock()
	n = len(c.chains)
	c.mu.Unlock()
	if n != 0 {
		t.Errorf("%d chain watches after the last release, want 0", n)
	}
	if ch, err := c.Chain(t.Context(), "db"); err != nil || !ch.Default {
		t.Errorf("Chain: %+v, %v", ch, err)
	}
}

// olderServer is a real server as one of a version before discovery chains
// answers: it does not know the method.
type olderServer struct{ *raftstore.Server }

func (o olderServer) RPC(ctx context.Context, method string, args, reply any) error {
	if method == structs.MethodDiscoveryChainGet {
		return fmt.Errorf("%w: %q", structs.ErrUnknownMethod, method)
	}
	return o.Server.RPC(ctx, method, args, reply)
}

func TestCache_SubscribeChain_olderServerGetsTheDefault(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	c := New(Config{RPC: olderServer{s}, NodeName: "n1", Datacenter: "dc1", Logger: testutil.Logger(t)})
	t.Cleanup(c.Close)
	got, _ := chains(t, c, "db")
	ch := waitPrimary(t, got, "db.default.default.dc1")
	if !ch.Default || ch.Targets["db.default.default.dc1"].Name != "db" {
		t.Errorf("default chain %+v", ch)
	}
	// The watch waits before asking again, rather than spinning.
	select {
	case again := <-got:
		t.Errorf("the default chain was published again at once: %+v", again)
	case <-time.After(200 * time.Millisecond):
	}
}

// register puts a sidecar of db on node with the meta of the instance it
// proxies and a check of status on that instance.
func registerDB(t *testing.T, s *raftstore.Server, node, addr, id string, port int, version, status string) {
	t.Helper()
	ctx := t.Context()
	if err := s.RPC(ctx, structs.MethodCatalogRegister, &structs.RegisterRequest{Node: node, Address: addr,
		Service: &structs.NodeService{ID: id, Service: "db", Port: 5432, Meta: map[string]string{"version": version}},
		Check:   &structs.HealthCheck{Node: node, CheckID: "check-" + id, Name: "db", Status: status, ServiceID: id, ServiceName: "db"},
	}, &structs.WriteReply{}); err != nil {
		t.Fatal(err)
	}
	if err := s.RPC(ctx, structs.MethodCatalogRegister, &structs.RegisterRequest{Node: node, Address: addr, Service: &structs.NodeService{
		ID: id + "-sidecar-proxy", Service: "db-sidecar-proxy", Kind: structs.ServiceKindConnectProxy, Port: port,
		Meta:  map[string]string{"version": version},
		Proxy: &structs.ConnectProxyConfig{DestinationServiceName: "db", DestinationServiceID: id, LocalServicePort: 5432},
	}}, &structs.WriteReply{}); err != nil {
		t.Fatal(err)
	}
}

func addrs(in []proxy.Instance) []string {
	var out []string
	for _, i := range in {
		out = append(out, i.Addr+"/"+i.Service)
	}
	slices.Sort(out)
	return out
}

func TestCache_SubscribeTarget(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	c := newCache(t, s, true)
	registerDB(t, s, "n2", "10.0.0.2", "db-1", 21001, "v1", structs.HealthPassing)
	registerDB(t, s, "n3", "10.0.0.3", "db-2", 21002, "v1", structs.HealthWarning)
	registerDB(t, s, "n4", "10.0.0.4", "db-3", 21003, "v2", structs.HealthPassing)
	registerDB(t, s, "n5", "10.0.0.5", "db-4", 21004, "v1", structs.HealthCritical)

	sub := func(tg *chain.Target) func() []string {
		ch := make(chan []proxy.Instance, 100)
		release, err := c.SubscribeTarget(tg, func(in []proxy.Instance) { ch <- in })
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(release)
		var last []proxy.Instance
		return func() []string {
			for {
				select {
				case last = <-ch:
					continue
				default:
				}
				return addrs(last)
			}
		}
	}
	all := sub(&chain.Target{ID: "db.default.default.dc1", Service: "db", Datacenter: "dc1", Name: "db"})
	v1 := sub(&chain.Target{ID: "v1.db.default.default.dc1", Service: "db", ServiceSubset: "v1", Datacenter: "dc1", Name: "db",
		Subset: configentry.ServiceResolverSubset{Filter: `Service.Meta.version == v1 and Service.ID != "db-9" and Service.Service == db and Service.Port == 5432`}})
	v1Passing := sub(&chain.Target{ID: "v1p.db.default.default.dc1", Service: "db", ServiceSubset: "v1p", Datacenter: "dc1", Name: "db",
		Subset: configentry.ServiceResolverSubset{Filter: `Service.Meta.version == v1`, OnlyPassing: true}})
	onNode := sub(&chain.Target{ID: "n4.db.default.default.dc1", Service: "db", ServiceSubset: "n4", Datacenter: "dc1", Name: "db",
		Subset: configentry.ServiceResolverSubset{Filter: `Node == n4`}})
	retry.Run(t, func(r *retry.R) {
		want := map[string][]string{
			"all":        {"10.0.0.2:21001/db", "10.0.0.3:21002/db", "10.0.0.4:21003/db"},
			"v1":         {"10.0.0.2:21001/db", "10.0.0.3:21002/db"},
			"v1 passing": {"10.0.0.2:21001/db"},
			"on n4":      {"10.0.0.4:21003/db"},
		}
		got := map[string][]string{"all": all(), "v1": v1(), "v1 passing": v1Passing(), "on n4": onNode()}
		for k, w := range want {
			if !slices.Equal(got[k], w) {
				r.Errorf("%s: %v, want %v", k, got[k], w)
			}
		}
	})
	c.mu.Lock()
	n := len(c.nodes)
	c.mu.Unlock()
	if n != 1 {
		t.Errorf("%d endpoint watches for four targets of one service, want 1", n)
	}

	// A change of health reaches the targets.
	registerDB(t, s, "n3", "10.0.0.3", "db-2", 21002, "v1", structs.HealthPassing)
	retry.Run(t, func(r *retry.R) {
		if got := v1Passing(); len(got) != 2 {
			r.Errorf("v1 passing after db-2 passed: %v", got)
		}
	})

	if _, err := c.SubscribeTarget(&chain.Target{ID: "x", Service: "db", Subset: configentry.ServiceResolverSubset{Filter: "Service.Meta.version =="}}, nil); err == nil {
		t.Error("a filter that does not parse was accepted")
	}
}
