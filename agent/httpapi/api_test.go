package httpapi

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	consulapi "github.com/hashicorp/consul/api"
	"go.uber.org/goleak"

	"github.com/trellismesh/trellis/api"
	"github.com/trellismesh/trellis/internal/testutil"
)

func TestMain(m *testing.M) {
	testutil.VerifyTestMain(m,
		// The Consul client's shared transport keeps idle keep-alive
		// connections; their reads end when the agents close theirs.
		goleak.IgnoreTopFunction("net/http.(*persistConn).readLoop"),
		goleak.IgnoreTopFunction("net/http.(*persistConn).writeLoop"),
	)
}

func TestAPI_AgentServicesWithConsulClient(t *testing.T) {
	t.Parallel()
	_, _, cc, _ := startAPI(t)
	agent := cc.Agent()
	err := agent.ServiceRegister(&consulapi.AgentServiceRegistration{
		Name: "web", Port: 8080, Tags: []string{"v1"}, Meta: map[string]string{"env": "prod"},
		Checks: consulapi.AgentServiceChecks{
			{TTL: "30s", Status: "passing"},
			{TTL: "1m", Name: "second"},
		},
	})
	if err != nil {
		t.Fatalf("register: %v", err)
	}
	svcs, err := agent.Services()
	if err != nil || svcs["web"] == nil || svcs["web"].Port != 8080 || svcs["web"].Weights.Passing != 1 {
		t.Fatalf("services = %+v, %v", svcs, err)
	}
	svc, meta, err := agent.Service("web", nil)
	if err != nil || svc.Service != "web" || meta.LastIndex == 0 {
		t.Fatalf("service web = %+v, %+v, %v", svc, meta, err)
	}
	checks, err := agent.Checks()
	if err != nil || checks["service:web:1"] == nil || checks["service:web:2"] == nil {
		t.Fatalf("checks = %v, %v (want IDs service:web:1 and :2)", checks, err)
	}
	if checks["service:web:1"].Name != "Service 'web' check" || checks["service:web:2"].Status != "critical" {
		t.Errorf("check defaults: %+v %+v", checks["service:web:1"], checks["service:web:2"])
	}

	status, infos, err := agent.AgentHealthServiceByName("web")
	if err != nil || status != "critical" || len(infos) != 1 {
		t.Errorf("health by name = %q, %v, %v; want critical", status, infos, err)
	}
	if err := agent.PassTTL("service:web:2", "ok now"); err != nil {
		t.Fatal(err)
	}
	status, _, _ = agent.AgentHealthServiceByName("web")
	if status != "passing" {
		t.Errorf("health after pass = %q", status)
	}
	if err := agent.UpdateTTL("service:web:1", "slow", "warning"); err != nil {
		t.Fatal(err)
	}
	status, _, _ = agent.AgentHealthServiceByID("web")
	if status != "warning" {
		t.Errorf("health by id after warn = %q", status)
	}
	if status, _, _ := agent.AgentHealthServiceByName("nope"); status != "critical" {
		// Consul's client reports "critical" for a 404.
		t.Errorf("health of unknown service = %q", status)
	}

	if err := agent.CheckRegister(&consulapi.AgentCheckRegistration{Name: "node-ttl", AgentServiceCheck: consulapi.AgentServiceCheck{TTL: "10s"}}); err != nil {
		t.Fatal(err)
	}
	if err := agent.CheckDeregister("node-ttl"); err != nil {
		t.Fatal(err)
	}
	if err := agent.ServiceDeregister("web"); err != nil {
		t.Fatal(err)
	}
	if err := agent.ServiceDeregister("web"); err == nil || !strings.Contains(err.Error(), "404") {
		t.Errorf("second deregister = %v, want 404", err)
	}
	if err := agent.FailTTL("nope", ""); err == nil || !strings.Contains(err.Error(), "404") {
		t.Errorf("fail unknown check = %v, want 404", err)
	}
	self, err := agent.Self()
	if err != nil || self["Config"]["NodeName"] != "node1" {
		t.Errorf("self = %v, %v", self, err)
	}
	if name, err := agent.NodeName(); err != nil || name != "node1" {
		t.Errorf("NodeName = %q, %v", name, err)
	}
	if members, err := agent.Members(false); err != nil || len(members) != 1 {
		t.Errorf("members = %v, %v", members, err)
	}
}

func TestAPI_CatalogAndHealthWithConsulClient(t *testing.T) {
	t.Parallel()
	_, _, cc, _ := startAPI(t)
	cat := cc.Catalog()
	for i, node := range []string{"n3", "n1", "n2"} {
		status := "passing"
		if node == "n2" {
			status = "critical"
		}
		_, err := cat.Register(&consulapi.CatalogRegistration{
			Node: node, Address: fmt.Sprintf("10.0.0.%d", i+1), NodeMeta: map[string]string{"rack": node},
			Service: &consulapi.AgentService{ID: "web-" + node, Service: "web", Port: 80, Tags: []string{"v" + fmt.Sprint(i%2)}, Meta: map[string]string{"env": "prod"}},
			Check:   &consulapi.AgentCheck{CheckID: "web-check", Name: "web", Status: status, ServiceID: "web-" + node},
		}, nil)
		if err != nil {
			t.Fatalf("catalog register %s: %v", node, err)
		}
	}
	// SkipNodeUpdate keeps n1's address and meta.
	_, err := cat.Register(&consulapi.CatalogRegistration{Node: "n1", Address: "10.9.9.9", SkipNodeUpdate: true, Service: &consulapi.AgentService{Service: "db", Port: 5432}}, nil)
	if err != nil {
		t.Fatal(err)
	}

	services, meta, err := cat.Services(nil)
	if err != nil || len(services) != 2 || meta.LastIndex == 0 || !meta.KnownLeader {
		t.Fatalf("services = %v, %+v, %v", services, meta, err)
	}
	nodes, _, err := cat.Nodes(nil)
	if err != nil || len(nodes) != 3 || nodes[0].Node != "n1" || nodes[0].Address != "10.0.0.2" {
		t.Fatalf("nodes = %v, %v", nodes, err)
	}
	csvc, _, err := cat.Service("web", "", nil)
	if err != nil || len(csvc) != 3 || csvc[0].ServiceMeta["env"] != "prod" || csvc[0].NodeMeta["rack"] == "" {
		t.Fatalf("catalog web = %+v, %v", csvc, err)
	}
	entries, _, err := cc.Health().Service("web", "", false, nil)
	if err != nil || len(entries) != 3 {
		t.Fatalf("health web = %v, %v", entries, err)
	}
	for i := range csvc {
		if csvc[i].Node != entries[i].Node.Node || csvc[i].ServiceID != entries[i].Service.ID {
			t.Errorf("position %d: catalog %s/%s, health %s/%s", i, csvc[i].Node, csvc[i].ServiceID, entries[i].Node.Node, entries[i].Service.ID)
		}
	}
	passing, _, _ := cc.Health().Service("web", "", true, nil)
	if len(passing) != 2 {
		t.Errorf("passing web = %d entries, want 2", len(passing))
	}
	tagged, _, _ := cat.Service("web", "v1", nil)
	if len(tagged) != 1 || tagged[0].Node != "n1" {
		t.Errorf("web tag v1 = %+v", tagged)
	}
	filtered, _, err := cc.Health().Service("web", "", false, &consulapi.QueryOptions{Filter: `Node.Meta.rack == "n3"`})
	if err != nil || len(filtered) != 1 || filtered[0].Node.Node != "n3" {
		t.Errorf("filtered health = %v, %v", filtered, err)
	}
	byCheck, _, err := cc.Health().Service("web", "", false, &consulapi.QueryOptions{Filter: `Checks.0.Status == critical`})
	if err != nil || len(byCheck) != 1 || byCheck[0].Node.Node != "n2" {
		t.Errorf("filter on a check = %v, %v", byCheck, err)
	}
	byMeta, _, err := cat.Service("web", "", &consulapi.QueryOptions{Filter: `ServiceMeta.env == prod and Node != n2`})
	if err != nil || len(byMeta) != 2 {
		t.Errorf("filtered catalog = %d entries, %v", len(byMeta), err)
	}
	if _, _, err := cat.Service("web", "", &consulapi.QueryOptions{Filter: `Nope ==`}); err == nil || !strings.Contains(err.Error(), "400") {
		t.Errorf("bad filter = %v, want 400", err)
	}
	// Nested parentheses make go-bexpr's parser backtrack exponentially
	// (minutes with its default budget); the API refuses them at once.
	// The client's own timeout keeps a regression from hanging the test.
	hostile := strings.Repeat("(", 12) + "Node == n1" + strings.Repeat(")", 11)
	if _, _, err := cat.Service("web", "", &consulapi.QueryOptions{Filter: hostile}); err == nil || !strings.Contains(err.Error(), "400") {
		t.Errorf("hostile filter = %v, want 400", err)
	}
	cn, _, err := cat.Node("n1", nil)
	if err != nil || cn == nil || len(cn.Services) != 2 {
		t.Errorf("catalog node n1 = %+v, %v", cn, err)
	}
	if cn, _, err := cat.Node("nope", nil); err != nil || cn != nil {
		t.Errorf("unknown node = %+v, %v; want nil, nil", cn, err)
	}
	checks, _, err := cc.Health().Node("n2", nil)
	if err != nil || len(checks) != 1 || checks[0].Status != "critical" {
		t.Errorf("health node n2 = %v, %v", checks, err)
	}
	checks, _, err = cc.Health().Checks("web", nil)
	if err != nil || len(checks) != 3 {
		t.Errorf("health checks web = %v, %v", checks, err)
	}
	checks, _, err = cc.Health().State("critical", nil)
	if err != nil || len(checks) != 1 {
		t.Errorf("health state critical = %v, %v", checks, err)
	}
	if _, _, err := cc.Health().State("bogus", nil); err == nil {
		t.Error("health state bogus accepted")
	}
	dcs, err := cat.Datacenters()
	if err != nil || len(dcs) != 1 || dcs[0] != "dc1" {
		t.Errorf("datacenters = %v, %v", dcs, err)
	}
	leader, err := cc.Status().Leader()
	if err != nil || leader == "" {
		t.Errorf("leader = %q, %v", leader, err)
	}
	if peers, err := cc.Status().Peers(); err != nil || len(peers) != 1 || peers[0] != leader {
		t.Errorf("peers = %v, %v", peers, err)
	}
	rc, err := cc.Operator().RaftGetConfiguration(nil)
	if err != nil || len(rc.Servers) != 1 || !rc.Servers[0].Leader || !rc.Servers[0].Voter || rc.Servers[0].Address != leader {
		t.Errorf("raft configuration = %+v, %v", rc, err)
	}

	if _, err := cat.Deregister(&consulapi.CatalogDeregistration{Node: "n1", ServiceID: "db"}, nil); err != nil {
		t.Fatal(err)
	}
	if services, _, _ := cat.Services(nil); len(services) != 1 {
		t.Errorf("services after deregister = %v", services)
	}
}

func TestAPI_BlockingQueries(t *testing.T) {
	t.Parallel()
	_, _, cc, _ := startAPI(t)
	reg := func(svc, status string) {
		t.Helper()
		_, err := cc.Catalog().Register(&consulapi.CatalogRegistration{
			Node: "n-" + svc, Address: "10.0.0.1",
			Service: &consulapi.AgentService{ID: svc, Service: svc},
			Check:   &consulapi.AgentCheck{CheckID: svc, Name: svc, Status: status, ServiceID: svc},
		}, nil)
		if err != nil {
			t.Fatal(err)
		}
	}
	// An unknown service still answers with an index, never 0.
	_, meta, err := cc.Health().Service("web", "", false, nil)
	if err != nil || meta.LastIndex == 0 {
		t.Fatalf("empty answer: %+v, %v", meta, err)
	}
	reg("web", "passing")
	_, meta, _ = cc.Health().Service("web", "", false, nil)

	type result struct {
		entries []*consulapi.ServiceEntry
		meta    *consulapi.QueryMeta
		err     error
		at      time.Time
	}
	done := make(chan result, 1)
	go func() {
		e, m, err := cc.Health().Service("web", "", false, &consulapi.QueryOptions{WaitIndex: meta.LastIndex, WaitTime: time.Minute})
		done <- result{e, m, err, time.Now()}
	}()
	// Changes to another service do not answer the watch.
	reg("db", "passing")
	reg("db", "critical")
	select {
	case r := <-done:
		t.Fatalf("watch on web returned for db: %+v", r.meta)
	case <-time.After(200 * time.Millisecond):
	}
	reg("web", "critical")
	changed := time.Now()
	r := <-done
	if r.err != nil || r.meta.LastIndex <= meta.LastIndex || r.entries[0].Checks[0].Status != "critical" {
		t.Fatalf("blocking answer = %+v, %+v, %v", r.entries, r.meta, r.err)
	}
	t.Logf("blocking query answered %s after the write returned", r.at.Sub(changed))

	// At the end of its wait it answers with the same index.
	start := time.Now()
	_, m2, err := cc.Health().Service("web", "", false, &consulapi.QueryOptions{WaitIndex: r.meta.LastIndex, WaitTime: 100 * time.Millisecond})
	if err != nil || m2.LastIndex != r.meta.LastIndex {
		t.Errorf("timed-out query = %+v, %v", m2, err)
	}
	if d := time.Since(start); d < 100*time.Millisecond {
		t.Errorf("timed-out query returned after %s, before its wait", d)
	}
}

func do(t *testing.T, method, url string, body io.Reader) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, body)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

func TestAPI_BadRequests(t *testing.T) {
	t.Parallel()
	_, hs, _, _ := startAPI(t)
	base := "http://" + hs.Addrs()[0].String()
	big := bytes.Repeat([]byte("a"), MaxBodyBytes+10)
	cases := []struct {
		name, method, path, body string
		raw                      []byte
		want                     int
		wantIn                   string
	}{
		{"malformed json", "PUT", "/v1/agent/service/register", `{"Name": "web",`, nil, 400, "decode"},
		{"wrong type", "PUT", "/v1/agent/service/register", `{"Name": "web", "Port": "eighty"}`, nil, 400, "Port"},
		{"empty body", "PUT", "/v1/agent/service/register", ``, nil, 400, "empty"},
		{"no name", "PUT", "/v1/agent/service/register", `{"Port": 80}`, nil, 400, "Name"},
		{"bad port", "PUT", "/v1/agent/service/register", `{"Name": "web", "Port": 70000}`, nil, 400, "Port"},
		{"script check", "PUT", "/v1/agent/service/register", `{"Name": "web", "Check": {"Args": ["/bin/true"], "Interval": "10s"}}`, nil, 400, "script checks are not supported"},
		{"bad interval", "PUT", "/v1/agent/service/register", `{"Name": "web", "Check": {"HTTP": "http://x/", "Interval": "10x"}}`, nil, 400, "duration"},
		{"trailing data", "PUT", "/v1/agent/service/register", `{"Name": "web"} {}`, nil, 400, "after the JSON"},
		{"too large", "PUT", "/v1/agent/service/register", "", big, 413, "larger"},
		{"unknown service", "PUT", "/v1/agent/service/deregister/ghost", ``, nil, 404, "ghost"},
		{"unknown check", "PUT", "/v1/agent/check/pass/ghost", ``, nil, 404, "ghost"},
		{"wrong method", "GET", "/v1/agent/service/register", ``, nil, 405, ""},
		{"wrong method put", "POST", "/v1/catalog/services", ``, nil, 405, ""},
		{"bad index", "GET", "/v1/catalog/services?index=abc", ``, nil, 400, "index"},
		{"bad wait", "GET", "/v1/catalog/services?index=1&wait=forever", ``, nil, 400, "wait"},
		{"stale and consistent", "GET", "/v1/catalog/nodes?stale&consistent", ``, nil, 400, "stale"},
		{"catalog register no node", "PUT", "/v1/catalog/register", `{"Address": "1.2.3.4"}`, nil, 400, "Node"},
		{"check update bad status", "PUT", "/v1/agent/check/update/x", `{"Status": "great"}`, nil, 400, "Status"},
		{"unknown dc", "GET", "/v1/catalog/nodes?dc=mars", ``, nil, 400, "datacenter"},
		{"no such endpoint", "GET", "/v1/nope", ``, nil, 404, "no such endpoint"},
		{"check register no name", "PUT", "/v1/agent/check/register", `{"TTL": "10s"}`, nil, 400, "Name"},
	}
	for _, tc := range cases {
		var body io.Reader = strings.NewReader(tc.body)
		if tc.raw != nil {
			body = bytes.NewReader(tc.raw)
		}
		resp, text := do(t, tc.method, base+tc.path, body)
		if resp.StatusCode != tc.want || !strings.Contains(text, tc.wantIn) {
			t.Errorf("%s: %d %q, want %d containing %q", tc.name, resp.StatusCode, text, tc.want, tc.wantIn)
		}
		if tc.want == 405 && resp.Header.Get("Allow") == "" {
			t.Errorf("%s: 405 without Allow", tc.name)
		}
	}
	// A body over the cap without a Content-Length is cut off while read.
	chunked := io.MultiReader(strings.NewReader(`{"Name": "`), bytes.NewReader(big), strings.NewReader(`"}`))
	resp, text := do(t, "PUT", base+"/v1/agent/service/register", chunked)
	if resp.StatusCode != 413 {
		t.Errorf("chunked oversize body: %d %q, want 413", resp.StatusCode, text)
	}
	resp, _ = do(t, "OPTIONS", base+"/v1/agent/services", nil)
	if resp.StatusCode != 200 || !strings.Contains(resp.Header.Get("Allow"), "GET") {
		t.Errorf("OPTIONS = %d, Allow %q", resp.StatusCode, resp.Header.Get("Allow"))
	}
	// Every GET carries the headers Consul's client needs.
	for _, path := range []string{"/v1/catalog/services", "/v1/health/service/x", "/v1/agent/services", "/v1/agent/self", "/v1/status/leader"} {
		resp, _ := do(t, "GET", base+path, nil)
		if resp.Header.Get("X-Consul-LastContact") == "" || resp.Header.Get("X-Consul-KnownLeader") == "" {
			t.Errorf("%s: missing leader headers: %v", path, resp.Header)
		}
	}
	resp, _ = do(t, "GET", base+"/v1/catalog/services", nil)
	if idx := resp.Header.Get("X-Consul-Index"); idx == "" || idx == "0" || resp.Header.Get("X-Trellis-Index") != idx {
		t.Errorf("index headers = %q / %q", idx, resp.Header.Get("X-Trellis-Index"))
	}
	resp, text = do(t, "GET", base+"/v1/catalog/datacenters?pretty", nil)
	if resp.StatusCode != 200 || !strings.Contains(text, "\n") {
		t.Errorf("?pretty = %q", text)
	}
}

func TestAPI_OurClient(t *testing.T) {
	t.Parallel()
	_, _, _, c := startAPI(t)
	if err := c.Agent().ServiceRegister(&api.AgentServiceRegistration{Name: "web", Port: 80, Check: &api.AgentServiceCheck{TTL: "10s", Status: "passing"}}); err != nil {
		t.Fatal(err)
	}
	entries, meta, err := c.Health().Service("web", "", true, nil)
	if err != nil || len(entries) != 1 || meta.LastIndex == 0 {
		t.Fatalf("health = %v, %+v, %v", entries, meta, err)
	}
	if entries[0].Checks[0].Definition.TTL.Duration() != 10*time.Second {
		t.Errorf("TTL in definition = %v", entries[0].Checks[0].Definition.TTL)
	}
	err = c.Agent().ServiceRegister(&api.AgentServiceRegistration{Name: ""})
	var se *api.StatusError
	if !errorsAs(err, &se) || se.Code != 400 {
		t.Errorf("bad register = %v, want a 400 StatusError", err)
	}
	if prom, err := c.Agent().MetricsPrometheus(); err != nil || prom == "" {
		t.Errorf("prometheus = %q, %v", prom, err)
	}
}
