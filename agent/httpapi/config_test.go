package httpapi

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	consulapi "github.com/hashicorp/consul/api"

	"github.com/trellismesh/trellis/api"
)

// consulEntries is one entry of every kind, as Consul's client writes them,
// in an order the cross-entry checks accept.
func consulEntries() []consulapi.ConfigEntry {
	return []consulapi.ConfigEntry{
		&consulapi.ProxyConfigEntry{Kind: consulapi.ProxyDefaults, Name: consulapi.ProxyConfigGlobal, Config: map[string]any{"protocol": "tcp"}},
		&consulapi.ServiceConfigEntry{Kind: consulapi.ServiceDefaults, Name: "web", Protocol: "http"},
		&consulapi.ServiceConfigEntry{Kind: consulapi.ServiceDefaults, Name: "admin", Protocol: "http",
			UpstreamConfig: &consulapi.UpstreamConfiguration{Defaults: &consulapi.UpstreamConfig{ConnectTimeoutMs: 500},
				Overrides: []*consulapi.UpstreamConfig{{Name: "db", Limits: &consulapi.UpstreamLimits{MaxConnections: ptr(10)}}}}},
		&consulapi.ServiceRouterConfigEntry{Kind: consulapi.ServiceRouter, Name: "web", Routes: []consulapi.ServiceRoute{{
			Match:       &consulapi.ServiceRouteMatch{HTTP: &consulapi.ServiceRouteHTTPMatch{PathPrefix: "/admin"}},
			Destination: &consulapi.ServiceRouteDestination{Service: "admin", RequestTimeout: 2 * time.Second},
		}}},
		&consulapi.ServiceResolverConfigEntry{Kind: consulapi.ServiceResolver, Name: "admin", DefaultSubset: "stable",
			Subsets: map[string]consulapi.ServiceResolverSubset{
				"stable": {Filter: "Service.Meta.version == v1"},
				"canary": {Filter: "Service.Meta.version == v2"},
			},
			ConnectTimeout: 3 * time.Second},
		&consulapi.ServiceSplitterConfigEntry{Kind: consulapi.ServiceSplitter, Name: "admin", Splits: []consulapi.ServiceSplit{
			{Weight: 90}, {Weight: 10, ServiceSubset: "canary"},
		}},
		&consulapi.ServiceIntentionsConfigEntry{Kind: consulapi.ServiceIntentions, Name: "admin", Sources: []*consulapi.SourceIntention{
			{Name: "web", Action: consulapi.IntentionActionAllow},
			{Name: "ops", Permissions: []*consulapi.IntentionPermission{{Action: consulapi.IntentionActionAllow,
				HTTP: &consulapi.IntentionHTTPPermission{PathPrefix: "/admin", Methods: []string{"GET"}}}}},
		}},
	}
}

func ptr[T any](v T) *T { return &v }

func TestAPI_ConfigEntriesWithConsulClient(t *testing.T) {
	t.Parallel()
	_, _, cc, _ := startAPI(t)
	ce := cc.ConfigEntries()
	for _, e := range consulEntries() {
		ok, _, err := ce.Set(e, nil)
		if err != nil || !ok {
			t.Fatalf("set %s/%s = %v, %v", e.GetKind(), e.GetName(), ok, err)
		}
	}
	for _, want := range consulEntries() {
		got, meta, err := ce.Get(want.GetKind(), want.GetName(), nil)
		if err != nil || got.GetName() != want.GetName() || got.GetModifyIndex() == 0 || meta.LastIndex == 0 {
			t.Fatalf("get %s/%s = %+v, %v", want.GetKind(), want.GetName(), got, err)
		}
		list, _, err := ce.List(want.GetKind(), nil)
		if err != nil || len(list) == 0 {
			t.Errorf("list %s = %v, %v", want.GetKind(), list, err)
		}
	}
	r, _, _ := ce.Get(consulapi.ServiceResolver, "admin", nil)
	if res := r.(*consulapi.ServiceResolverConfigEntry); res.ConnectTimeout != 3*time.Second || res.Subsets["canary"].Filter == "" {
		t.Errorf("resolver read back = %+v", res)
	}
	rt, _, _ := ce.Get(consulapi.ServiceRouter, "web", nil)
	if d := rt.(*consulapi.ServiceRouterConfigEntry).Routes[0].Destination; d.RequestTimeout != 2*time.Second || d.Service != "admin" {
		t.Errorf("router destination read back = %+v", d)
	}
	si, _, _ := ce.Get(consulapi.ServiceIntentions, "admin", nil)
	if s := si.(*consulapi.ServiceIntentionsConfigEntry).Sources; len(s) != 2 || s[1].Permissions[0].HTTP.PathPrefix != "/admin" {
		t.Errorf("intentions read back = %+v", s)
	}
	ad, _, _ := ce.Get(consulapi.ServiceDefaults, "admin", nil)
	if u := ad.(*consulapi.ServiceConfigEntry).UpstreamConfig; u == nil || u.Defaults.ConnectTimeoutMs != 500 || *u.Overrides[0].Limits.MaxConnections != 10 {
		t.Errorf("upstream config read back = %+v", u)
	}
	if list, _, err := ce.List(consulapi.ServiceDefaults, nil); err != nil || len(list) != 2 || list[0].GetName() != "admin" {
		t.Errorf("list service-defaults = %v, %v", list, err)
	}

	// CAS writes and deletes.
	web, _, _ := ce.Get(consulapi.ServiceDefaults, "web", nil)
	upd := &consulapi.ServiceConfigEntry{Kind: consulapi.ServiceDefaults, Name: "web", Protocol: "http", MaxInboundConnections: 10}
	if ok, _, err := ce.CAS(upd, web.GetModifyIndex()+1000, nil); err != nil || ok {
		t.Errorf("CAS with a wrong index = %v, %v; want false", ok, err)
	}
	if ok, _, err := ce.CAS(upd, web.GetModifyIndex(), nil); err != nil || !ok {
		t.Errorf("CAS with the right index = %v, %v; want true", ok, err)
	}
	if ok, _, err := ce.CAS(&consulapi.ServiceConfigEntry{Kind: consulapi.ServiceDefaults, Name: "fresh"}, 0, nil); err != nil || !ok {
		t.Errorf("CAS 0 of a new entry = %v, %v", ok, err)
	}
	fresh, _, _ := ce.Get(consulapi.ServiceDefaults, "fresh", nil)
	if ok, _, err := ce.DeleteCAS(consulapi.ServiceDefaults, "fresh", fresh.GetModifyIndex()+1, nil); err != nil || ok {
		t.Errorf("DeleteCAS with a wrong index = %v, %v", ok, err)
	}
	if ok, _, err := ce.DeleteCAS(consulapi.ServiceDefaults, "fresh", fresh.GetModifyIndex(), nil); err != nil || !ok {
		t.Errorf("DeleteCAS with the right index = %v, %v", ok, err)
	}
	if _, _, err := ce.Get(consulapi.ServiceDefaults, "fresh", nil); err == nil || !strings.Contains(err.Error(), "404") {
		t.Errorf("get of a deleted entry = %v, want a 404", err)
	}

	// The discovery chain of web: a router in front of admin's splitter.
	ch, meta, err := cc.DiscoveryChain().Get("web", nil, nil)
	if err != nil || ch.Chain == nil || ch.Chain.ServiceName != "web" || ch.Chain.Protocol != "http" || meta.LastIndex == 0 {
		t.Fatalf("discovery chain = %+v, %v", ch, err)
	}
	if n := ch.Chain.Nodes[ch.Chain.StartNode]; n == nil || n.Type != consulapi.DiscoveryGraphNodeTypeRouter {
		t.Errorf("start node = %+v, want the router", n)
	}

	// Delete every entry, in an order the others allow.
	for _, k := range [][2]string{{consulapi.ServiceRouter, "web"}, {consulapi.ServiceSplitter, "admin"}, {consulapi.ServiceResolver, "admin"},
		{consulapi.ServiceIntentions, "admin"}, {consulapi.ServiceDefaults, "admin"}, {consulapi.ServiceDefaults, "web"}, {consulapi.ProxyDefaults, "global"}} {
		if _, err := ce.Delete(k[0], k[1], nil); err != nil {
			t.Errorf("delete %s/%s: %v", k[0], k[1], err)
		}
	}
	if list, _, err := ce.List(consulapi.ServiceDefaults, nil); err != nil || len(list) != 0 {
		t.Errorf("list after deletes = %v, %v", list, err)
	}
}

func TestAPI_ConfigEntriesRefused(t *testing.T) {
	t.Parallel()
	_, hs, cc, _ := startAPI(t)
	base := "http://" + hs.Addrs()[0].String()
	do := func(method, path, body string, header ...string) (int, string) {
		t.Helper()
		req, err := http.NewRequest(method, base+path, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		if len(header) == 2 {
			req.Header.Set(header[0], header[1])
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	cases := []struct {
		method, path, body string
		code               int
		want               string
	}{
		{"GET", "/v1/config/service-nope", "", 400, "service-nope"},
		{"GET", "/v1/config/nope/web", "", 400, "nope"},
		{"GET", "/v1/config/service-defaults/ghost", "", 404, "ghost"},
		{"PUT", "/v1/config", `{"Kind":"service-bogus","Name":"x"}`, 400, "service-bogus"},
		{"PUT", "/v1/config", `{"Kind":"service-defaults","Name":"web","Protocol":"carrier-pigeon"}`, 400, "Protocol"},
		{"PUT", "/v1/config", `{"Kind":"service-defaults","Name":"web","Protocl":"http"}`, 400, "Protocl"},
		{"PUT", "/v1/config", ``, 400, "empty"},
		{"PUT", "/v1/config?cas=x", `{"Kind":"service-defaults","Name":"web"}`, 400, "cas"},
		{"PUT", "/v1/config", `{"Kind":"service-defaults","Name":"web","MeshGateway":{"Mode":"local"}}`, 400, "MeshGateway"},
		{"PUT", "/v1/config?format=hcl&filename=web.hcl", "Kind = \"service-defaults\"\nName = \"web\"\nProtocol = 5\nbogus = 1\n", 400, "web.hcl:"},
		{"GET", "/v1/discovery-chain/", "", 404, ""},
	}
	for _, c := range cases {
		code, body := do(c.method, c.path, c.body)
		if code != c.code || !strings.Contains(body, c.want) {
			t.Errorf("%s %s %s = %d %q, want %d naming %q", c.method, c.path, c.body, code, body, c.code, c.want)
		}
	}
	// HCL with Content-Type, snake_case keys.
	if code, body := do("PUT", "/v1/config?filename=db.hcl", "kind = \"service-defaults\"\nname = \"db\"\nprotocol = \"grpc\"\n", "Content-Type", "application/hcl"); code != 200 || body != "true" {
		t.Errorf("HCL write = %d %q", code, body)
	}
	if e, _, err := cc.ConfigEntries().Get(consulapi.ServiceDefaults, "db", nil); err != nil || e.(*consulapi.ServiceConfigEntry).Protocol != "grpc" {
		t.Errorf("HCL entry read back = %+v, %v", e, err)
	}
	// Consul's DELETE answers: {} without cas, {"Deleted":...} with.
	if code, body := do("DELETE", "/v1/config/service-defaults/db?cas=1", ""); code != 200 || body != `{"Deleted":false}` {
		t.Errorf("DELETE ?cas stale = %d %q", code, body)
	}
	if code, body := do("DELETE", "/v1/config/service-defaults/db", ""); code != 200 || body != `{}` {
		t.Errorf("DELETE = %d %q", code, body)
	}
}

func TestAPI_ConfigEntriesOurClientAndBlocking(t *testing.T) {
	t.Parallel()
	_, _, _, ours := startAPI(t)
	ce := ours.ConfigEntries()
	ok, _, err := ce.Set(&api.ServiceConfigEntry{Kind: api.ServiceDefaults, Name: "web", Protocol: "http"}, nil)
	if err != nil || !ok {
		t.Fatalf("set = %v, %v", ok, err)
	}
	list, meta, err := ce.List(api.ServiceDefaults, nil)
	if err != nil || len(list) != 1 || meta.LastIndex == 0 {
		t.Fatalf("list = %v, %+v, %v", list, meta, err)
	}
	type res struct {
		list []api.ConfigEntry
		meta *api.QueryMeta
		err  error
	}
	done := make(chan res, 1)
	go func() {
		l, m, err := ce.List(api.ServiceDefaults, &api.QueryOptions{WaitIndex: meta.LastIndex, WaitTime: 10 * time.Second})
		done <- res{l, m, err}
	}()
	ok, _, err = ce.WriteSource([]byte("Kind = \"service-defaults\"\nName = \"api\"\nProtocol = \"http\"\n"), "api.hcl", false, 0, nil)
	if err != nil || !ok {
		t.Fatalf("write source = %v, %v", ok, err)
	}
	select {
	case r := <-done:
		if r.err != nil || len(r.list) != 2 || r.meta.LastIndex <= meta.LastIndex {
			t.Errorf("blocking list = %v, %+v, %v", r.list, r.meta, r.err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the blocking list did not wake on a write")
	}
	got, _, err := ce.Get(api.ServiceDefaults, "api", nil)
	if err != nil || got.(*api.ServiceConfigEntry).Protocol != "http" || got.GetCreateIndex() == 0 {
		t.Errorf("get = %+v, %v", got, err)
	}
	if ok, _, err := ce.CAS(got, got.GetModifyIndex()+5, nil); err != nil || ok {
		t.Errorf("CAS stale = %v, %v", ok, err)
	}
	if ok, _, err := ce.DeleteCAS(api.ServiceDefaults, "api", got.GetModifyIndex(), nil); err != nil || !ok {
		t.Errorf("DeleteCAS = %v, %v", ok, err)
	}
	_, _, err = ce.WriteSource([]byte("Kind = \"service-defaults\"\nName = \"x\"\nProtocl = \"http\"\n"), "x.hcl", false, 0, nil)
	if err == nil || !strings.Contains(err.Error(), "x.hcl:3") || !strings.Contains(err.Error(), "Protocl") {
		t.Errorf("bad source = %v, want an error naming x.hcl:3 and the field", err)
	}
	ch, _, err := ours.DiscoveryChain().Get("web", nil)
	if err != nil || ch.Chain == nil || ch.Chain.Protocol != "http" || ch.Chain.Targets[ch.Chain.Nodes[ch.Chain.StartNode].Resolver.Target] == nil {
		t.Errorf("chain = %+v, %v", ch, err)
	}
}
