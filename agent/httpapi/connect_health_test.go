package httpapi

import (
	"testing"
	"time"

	consulapi "github.com/hashicorp/consul/api"
)

// registerMesh registers, on node, an instance of api with a check of
// status and a sidecar proxy of it (address may be empty: the node's).
func registerMesh(t *testing.T, cc *consulapi.Client, node, nodeAddr, proxyAddr, status string, tags []string) {
	t.Helper()
	_, err := cc.Catalog().Register(&consulapi.CatalogRegistration{
		Node: node, Address: nodeAddr,
		Service: &consulapi.AgentService{ID: "api", Service: "api", Port: 8080},
		Check:   &consulapi.AgentCheck{CheckID: "api-check", Name: "api", Status: status, ServiceID: "api"},
	}, nil)
	if err != nil {
		t.Fatalf("register api on %s: %v", node, err)
	}
	_, err = cc.Catalog().Register(&consulapi.CatalogRegistration{
		Node: node, Address: nodeAddr,
		Service: &consulapi.AgentService{
			Kind: consulapi.ServiceKindConnectProxy, ID: "api-sidecar-proxy", Service: "api-sidecar-proxy",
			Address: proxyAddr, Port: 21000, Tags: tags,
			Proxy: &consulapi.AgentServiceConnectProxyConfig{DestinationServiceName: "api", DestinationServiceID: "api", LocalServicePort: 8080},
		},
		Check: &consulapi.AgentCheck{CheckID: "proxy-alive", Name: "proxy", Status: "passing", ServiceID: "api-sidecar-proxy"},
	}, nil)
	if err != nil {
		t.Fatalf("register the sidecar of api on %s: %v", node, err)
	}
}

func checkStatus(checks consulapi.HealthChecks, id string) string {
	for _, c := range checks {
		if c.CheckID == id {
			return c.Status
		}
	}
	return ""
}

func TestAPI_HealthConnect(t *testing.T) {
	t.Parallel()
	_, _, cc, ours := startAPI(t)
	registerMesh(t, cc, "n1", "10.0.0.1", "", "passing", []string{"v1"})
	registerMesh(t, cc, "n2", "10.0.0.2", "10.1.1.2", "critical", nil)
	// A mesh-native service is its own mesh endpoint.
	_, err := cc.Catalog().Register(&consulapi.CatalogRegistration{
		Node: "n1", Address: "10.0.0.1",
		Service: &consulapi.AgentService{ID: "db", Service: "db", Port: 5432, Connect: &consulapi.AgentServiceConnect{Native: true}},
	}, nil)
	if err != nil {
		t.Fatal(err)
	}

	// The proxies of api, not api itself, with api's checks folded in.
	entries, meta, err := cc.Health().Connect("api", "", false, nil)
	if err != nil || len(entries) != 2 || meta.LastIndex == 0 {
		t.Fatalf("health connect api = %+v, %+v, %v; want 2 entries", entries, meta, err)
	}
	for i, node := range []string{"n1", "n2"} {
		e := entries[i]
		if e.Node.Node != node || e.Service.Kind != consulapi.ServiceKindConnectProxy || e.Service.Service != "api-sidecar-proxy" ||
			e.Service.Proxy == nil || e.Service.Proxy.DestinationServiceName != "api" || e.Service.Port != 21000 {
			t.Errorf("entry %d = node %s, service %+v; want the sidecar of api on %s", i, e.Node.Node, e.Service, node)
		}
		if checkStatus(e.Checks, "proxy-alive") != "passing" || checkStatus(e.Checks, "api-check") == "" {
			t.Errorf("entry %d checks = %+v; want the proxy's and api's", i, e.Checks)
		}
	}
	if got := checkStatus(entries[1].Checks, "api-check"); got != "critical" {
		t.Errorf("n2's folded api check = %q, want critical", got)
	}
	if entries[1].Service.Address != "10.1.1.2" || entries[0].Service.Address != "" || entries[0].Node.Address != "10.0.0.1" {
		t.Errorf("addresses: %q/%q and %q", entries[0].Service.Address, entries[0].Node.Address, entries[1].Service.Address)
	}
	apps, _, err := cc.Health().Service("api", "", false, nil)
	if err != nil || len(apps) != 2 || apps[0].Service.Kind != "" || apps[0].Service.Service != "api" {
		t.Errorf("health service api = %+v, %v; want the two instances themselves", apps, err)
	}

	// ?passing keeps the proxies whose app (and own) checks all pass.
	passing, _, err := cc.Health().Connect("api", "", true, nil)
	if err != nil || len(passing) != 1 || passing[0].Node.Node != "n1" {
		t.Errorf("passing connect api = %+v, %v; want n1's only", passing, err)
	}
	tagged, _, err := cc.Health().Connect("api", "v1", false, nil)
	if err != nil || len(tagged) != 1 || tagged[0].Node.Node != "n1" {
		t.Errorf("connect api tag v1 = %+v, %v", tagged, err)
	}
	native, _, err := cc.Health().Connect("db", "", false, nil)
	if err != nil || len(native) != 1 || native[0].Service.Service != "db" {
		t.Errorf("connect db (native) = %+v, %v", native, err)
	}
	none, meta, err := cc.Health().Connect("nope", "", false, nil)
	if err != nil || none == nil || len(none) != 0 || meta.LastIndex == 0 {
		t.Errorf("connect of an unknown service = %v, %+v, %v; want [] with an index", none, meta, err)
	}
	filtered, _, err := cc.Health().Connect("api", "", false, &consulapi.QueryOptions{Filter: `Node.Node == "n2"`})
	if err != nil || len(filtered) != 1 || filtered[0].Node.Node != "n2" {
		t.Errorf("filtered connect = %+v, %v", filtered, err)
	}

	// Our client reads the same.
	mine, _, err := ours.Health().Connect("api", "", true, nil)
	if err != nil || len(mine) != 1 || mine[0].Node.Node != "n1" || mine[0].Service.Proxy.DestinationServiceName != "api" {
		t.Errorf("our client: passing connect api = %+v, %v", mine, err)
	}

	// A blocking query wakes when the app's check changes.
	_, meta, err = cc.Health().Connect("api", "", true, nil)
	if err != nil {
		t.Fatal(err)
	}
	type answer struct {
		entries []*consulapi.ServiceEntry
		meta    *consulapi.QueryMeta
		err     error
	}
	done := make(chan answer, 1)
	go func() {
		e, m, err := cc.Health().Connect("api", "", true, &consulapi.QueryOptions{WaitIndex: meta.LastIndex, WaitTime: 30 * time.Second})
		done <- answer{e, m, err}
	}()
	registerMesh(t, cc, "n2", "10.0.0.2", "10.1.1.2", "passing", nil)
	select {
	case a := <-done:
		if a.err != nil || a.meta.LastIndex <= meta.LastIndex || len(a.entries) != 2 {
			t.Errorf("blocking connect answered %d entries, index %d (from %d), %v; want both proxies passing", len(a.entries), a.meta.LastIndex, meta.LastIndex, a.err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("blocking connect did not wake on the check change")
	}
}

func TestAPI_CatalogConnect(t *testing.T) {
	t.Parallel()
	_, _, cc, ours := startAPI(t)
	registerMesh(t, cc, "n1", "10.0.0.1", "", "passing", []string{"v1"})
	registerMesh(t, cc, "n2", "10.0.0.2", "10.1.1.2", "critical", nil)

	svcs, meta, err := cc.Catalog().Connect("api", "", nil)
	if err != nil || len(svcs) != 2 || meta.LastIndex == 0 {
		t.Fatalf("catalog connect api = %+v, %+v, %v; want 2", svcs, meta, err)
	}
	for i, node := range []string{"n1", "n2"} {
		s := svcs[i]
		if s.Node != node || s.ServiceName != "api-sidecar-proxy" ||
			s.ServiceProxy == nil || s.ServiceProxy.DestinationServiceName != "api" || s.ServicePort != 21000 {
			t.Errorf("entry %d = %+v; want the sidecar of api on %s", i, s, node)
		}
	}
	if svcs[1].ServiceAddress != "10.1.1.2" || svcs[0].Address != "10.0.0.1" {
		t.Errorf("addresses: %q, %q", svcs[0].Address, svcs[1].ServiceAddress)
	}
	apps, _, err := cc.Catalog().Service("api", "", nil)
	if err != nil || len(apps) != 2 || apps[0].ServiceName != "api" {
		t.Errorf("catalog service api = %+v, %v; want the instances themselves", apps, err)
	}
	tagged, _, err := cc.Catalog().Connect("api", "v1", nil)
	if err != nil || len(tagged) != 1 || tagged[0].Node != "n1" {
		t.Errorf("catalog connect api tag v1 = %+v, %v", tagged, err)
	}
	if none, _, err := cc.Catalog().Connect("nope", "", nil); err != nil || none == nil || len(none) != 0 {
		t.Errorf("catalog connect of an unknown service = %v, %v; want []", none, err)
	}
	if mine, _, err := ours.Catalog().Connect("api", "v1", nil); err != nil || len(mine) != 1 || mine[0].ServiceProxy.DestinationServiceName != "api" {
		t.Errorf("our client: catalog connect api tag v1 = %+v, %v", mine, err)
	}

	// A blocking query wakes when a proxy registers.
	type answer struct {
		svcs []*consulapi.CatalogService
		meta *consulapi.QueryMeta
		err  error
	}
	done := make(chan answer, 1)
	go func() {
		s, m, err := cc.Catalog().Connect("api", "", &consulapi.QueryOptions{WaitIndex: meta.LastIndex, WaitTime: 30 * time.Second})
		done <- answer{s, m, err}
	}()
	_, err = cc.Catalog().Register(&consulapi.CatalogRegistration{
		Node: "n3", Address: "10.0.0.3",
		Service: &consulapi.AgentService{
			Kind: consulapi.ServiceKindConnectProxy, ID: "api-proxy", Service: "api-proxy", Port: 21001,
			Proxy: &consulapi.AgentServiceConnectProxyConfig{DestinationServiceName: "api", LocalServicePort: 8080},
		},
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case a := <-done:
		if a.err != nil || a.meta.LastIndex <= meta.LastIndex || len(a.svcs) != 3 {
			t.Errorf("blocking catalog connect answered %d, index %d (from %d), %v; want 3", len(a.svcs), a.meta.LastIndex, meta.LastIndex, a.err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("blocking catalog connect did not wake on a new proxy")
	}
}

func TestAPI_SelfDefaultIntentionPolicy(t *testing.T) {
	t.Parallel()
	a, _, cc, _ := startAPI(t)
	for _, allow := range []bool{false, true} {
		a.defaultAllow.Store(allow)
		want := map[bool]string{false: "deny", true: "allow"}[allow]
		self, err := cc.Agent().Self()
		if err != nil || self["Config"]["DefaultIntentionPolicy"] != want || self["Config"]["NodeName"] != "node1" || self["Member"] == nil {
			t.Errorf("self with default allow %t = %v, %v; want DefaultIntentionPolicy %q beside the rest", allow, self, err, want)
		}
	}
}
