package proxy

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"go.uber.org/goleak"

	"github.com/trellismesh/trellis/api"
	"github.com/trellismesh/trellis/connect"
	"github.com/trellismesh/trellis/connect/ca"
	"github.com/trellismesh/trellis/connect/intentions"
	meshproxy "github.com/trellismesh/trellis/connect/proxy"
	"github.com/trellismesh/trellis/internal/retry"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const testTrustDomain = "11111111-2222-3333-4444-555555555555.trellis"

// fakeAgent serves the agent endpoints the command reads, every blocking
// one over a single index that each update raises. Down makes it
// unreachable: every connection is closed at once, blocked ones included.
type fakeAgent struct {
	srv *httptest.Server

	mu         sync.Mutex
	index      uint64
	changed    chan struct{} // closed and replaced by every update
	down       bool
	refused    int // connections closed while down
	services   map[string]*api.AgentService
	self       map[string]map[string]any
	roots      *api.CARootList
	leaf       *api.LeafCert
	intentions []*api.Intention
	endpoints  map[string][]*api.ServiceEntry
}

func newFakeAgent(t *testing.T) *fakeAgent {
	f := &fakeAgent{
		index: 1, changed: make(chan struct{}),
		services:  map[string]*api.AgentService{},
		self:      map[string]map[string]any{"Config": {"NodeName": "n1", "DefaultIntentionPolicy": "allow"}, "Member": {"Addr": "127.0.0.1"}},
		roots:     &api.CARootList{},
		endpoints: map[string][]*api.ServiceEntry{},
	}
	f.srv = httptest.NewServer(f)
	t.Cleanup(func() {
		f.setDown(true) // wakes and ends the blocked queries
		f.srv.Close()
	})
	return f
}

// update changes the state under the lock and raises the index.
func (f *fakeAgent) update(fn func()) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn()
	f.index++
	close(f.changed)
	f.changed = make(chan struct{})
}

func (f *fakeAgent) setDown(down bool) { f.update(func() { f.down = down }) }

func (f *fakeAgent) refusedCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.refused
}

func (f *fakeAgent) client(t *testing.T) *api.Client {
	t.Helper()
	c, err := api.NewClient(&api.Config{Address: f.srv.URL, HTTPClient: &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func (f *fakeAgent) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	minIndex, _ := strconv.ParseUint(q.Get("index"), 10, 64)
	wait := 5 * time.Minute
	if s := q.Get("wait"); s != "" {
		if d, err := time.ParseDuration(s); err == nil {
			wait = d
		}
	}
	timeout := time.NewTimer(wait)
	defer timeout.Stop()
	for {
		f.mu.Lock()
		if f.down {
			f.refused++
			f.mu.Unlock()
			if c, _, err := w.(http.Hijacker).Hijack(); err == nil {
				c.Close()
			}
			return
		}
		if minIndex == 0 || f.index > minIndex {
			body, ok := f.answerLocked(r)
			idx := f.index
			f.mu.Unlock()
			if !ok {
				http.NotFound(w, r)
				return
			}
			w.Header().Set("X-Consul-Index", strconv.FormatUint(idx, 10))
			_ = json.NewEncoder(w).Encode(body)
			return
		}
		ch := f.changed
		f.mu.Unlock()
		select {
		case <-ch:
		case <-timeout.C:
			minIndex = 0 // answer as is
		case <-r.Context().Done():
			return
		}
	}
}

func (f *fakeAgent) answerLocked(r *http.Request) (any, bool) {
	p := r.URL.Path
	switch {
	case p == "/v1/agent/services":
		return f.services, true
	case p == "/v1/agent/self":
		return f.self, true
	case p == "/v1/agent/connect/ca/roots":
		return f.roots, true
	case strings.HasPrefix(p, "/v1/agent/connect/ca/leaf/"):
		return f.leaf, f.leaf != nil
	case p == "/v1/connect/intentions/match":
		name := r.URL.Query().Get("name")
		return map[string][]*api.Intention{name: append([]*api.Intention{}, f.intentions...)}, true
	case strings.HasPrefix(p, "/v1/health/connect/"):
		return append([]*api.ServiceEntry{}, f.endpoints[strings.TrimPrefix(p, "/v1/health/connect/")]...), true
	}
	return nil, false
}

// testCA is a root that signs leaves as the servers do.
type testCA struct {
	root *ca.Root
}

func newTestCA(t *testing.T) *testCA {
	t.Helper()
	root, err := ca.GenerateRoot(testTrustDomain, "test root", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return &testCA{root: root}
}

func (c *testCA) roots() *api.CARootList {
	return &api.CARootList{ActiveRootID: c.root.ID(), TrustDomain: testTrustDomain,
		Roots: []*api.CARoot{{ID: c.root.ID(), Name: "test root", RootCertPEM: c.root.CertPEM, Active: true}}}
}

func (c *testCA) leaf(t *testing.T, service string, index uint64) *api.LeafCert {
	t.Helper()
	key, err := connect.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	csrPEM, err := connect.CreateCSR(connect.NewServiceID(testTrustDomain, "dc1", service), key)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := connect.ParseCSR(csrPEM)
	if err != nil {
		t.Fatal(err)
	}
	l, err := c.root.SignLeaf(csr, ca.LeafRequest{TrustDomain: testTrustDomain, Datacenter: "dc1"})
	if err != nil {
		t.Fatal(err)
	}
	keyPEM, err := connect.EncodeKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return &api.LeafCert{SerialNumber: connect.HexString(l.Cert.SerialNumber.Bytes()), CertPEM: l.CertPEM, PrivateKeyPEM: keyPEM,
		Service: service, ValidAfter: l.Cert.NotBefore, ValidBefore: l.Cert.NotAfter, CreateIndex: index, ModifyIndex: index}
}

func entry(node, nodeAddr, svcAddr string, port int) *api.ServiceEntry {
	return &api.ServiceEntry{
		Node:    &api.Node{Node: node, Address: nodeAddr},
		Service: &api.AgentService{Kind: kindConnectProxy, ID: "db-sidecar-proxy", Service: "db-sidecar-proxy", Address: svcAddr, Port: port},
	}
}

// logBuffer collects the logs of a runner.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) count(s string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Count(l.b.String(), s)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// startRunner runs a runner against f until the test ends; stop ends it
// earlier and returns run's result. done is closed once run has returned
// (by itself or after stop), with its result in *result.
func startRunner(t *testing.T, f *fakeAgent, sp spec) (r *runner, logs *logBuffer, stop func() error) {
	r, logs, stop, _, _ = startRunnerDone(t, f, sp)
	return r, logs, stop
}

func startRunnerDone(t *testing.T, f *fakeAgent, sp spec) (r *runner, logs *logBuffer, stop func() error, done chan struct{}, result *error) {
	t.Helper()
	logs = &logBuffer{}
	r = newRunner(runConfig{
		Client: f.client(t), Spec: sp,
		Logger:    hclog.New(&hclog.LoggerOptions{Level: hclog.Debug, Output: logs}),
		QueryWait: 2 * time.Second, MinBackoff: 5 * time.Millisecond, MaxBackoff: 40 * time.Millisecond,
	})
	ctx, cancel := context.WithCancel(context.Background())
	done = make(chan struct{})
	result = new(error)
	go func() {
		*result = r.run(ctx)
		close(done)
	}()
	stop = func() error {
		cancel()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Error("run did not return 10s after its context ended")
			return nil
		}
		return *result
	}
	t.Cleanup(func() {
		stop()
		if t.Failed() {
			t.Logf("runner logs:\n%s", logs.String())
		}
	})
	return r, logs, stop, done, result
}

func waitStarted(t *testing.T, r *runner) *meshproxy.Proxy {
	t.Helper()
	select {
	case <-r.started:
		return r.proxy()
	case <-time.After(10 * time.Second):
		t.Fatal("the proxy did not start")
		return nil
	}
}

func (r *runner) instancesOf(dest string) []meshproxy.Instance {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.instances[dest]
}

func testSpec() spec {
	return spec{ProxyID: "api-sidecar-proxy", Service: "api", PublicAddr: "127.0.0.1:0", LocalAppAddr: "127.0.0.1:1",
		Upstreams: []api.Upstream{{DestinationName: "db"}}, DefaultAllow: true}
}

func TestRun_FollowsTheAgent(t *testing.T) {
	f := newFakeAgent(t)
	c := newTestCA(t)
	f.update(func() {
		f.roots = c.roots()
		f.leaf = c.leaf(t, "api", 10)
		f.endpoints["db"] = []*api.ServiceEntry{entry("n1", "10.0.0.1", "", 21000)}
	})
	r, logs, stop := startRunner(t, f, testSpec())
	p := waitStarted(t, r)

	web := connect.NewServiceID(testTrustDomain, "dc1", "web")
	if d := r.authz.Authorize(web); !d.Allowed {
		t.Errorf("web => api with no intention and default allow: %+v", d)
	}
	if d := r.authz.Authorize(connect.NewServiceID("other.trellis", "dc1", "web")); d.Allowed {
		t.Errorf("a source of another trust domain was allowed: %+v", d)
	}
	retry.Run(t, func(rr *retry.R) {
		want := []meshproxy.Instance{{Node: "n1", Addr: "10.0.0.1:21000", Service: "db"}}
		if got := r.instancesOf("db"); len(got) != 1 || got[0] != want[0] {
			rr.Fatalf("instances of db = %+v, want %+v", got, want)
		}
	})
	if b := r.certs.Bundle(); b == nil || b.ActiveRootID != c.root.ID() {
		t.Errorf("bundle = %+v", b)
	}

	// Changes reach the proxy.
	f.update(func() {
		f.intentions = []*api.Intention{{SourceName: "web", DestinationName: "api", Action: api.IntentionActionDeny}}
		f.endpoints["db"] = append(f.endpoints["db"], entry("n2", "10.0.0.2", "10.9.9.9", 21001))
	})
	retry.Run(t, func(rr *retry.R) {
		if d := r.authz.Authorize(web); d.Allowed || d.Matched == nil {
			rr.Fatalf("web => api after the deny intention: %+v", d)
		}
		if got := r.instancesOf("db"); len(got) != 2 || got[1].Addr != "10.9.9.9:21001" {
			rr.Fatalf("instances of db = %+v", got)
		}
	})
	first := r.certs.Certificate()
	f.update(func() { f.leaf = c.leaf(t, "api", 20) })
	retry.Run(t, func(rr *retry.R) {
		if cur := r.certs.Certificate(); cur == first || cur.Leaf.SerialNumber.Cmp(first.Leaf.SerialNumber) == 0 {
			rr.Fatal("the new leaf was not swapped in")
		}
	})
	renewed := r.certs.Certificate()

	// The agent goes away: one line in the logs, the last values stay.
	for outage := 1; outage <= 2; outage++ {
		before := f.refusedCount()
		f.setDown(true)
		retry.Run(t, func(rr *retry.R) {
			// Several failed attempts of every watch (4 of them).
			if n := f.refusedCount() - before; n < 20 {
				rr.Fatalf("%d refused requests so far", n)
			}
		})
		if n := logs.count("cannot get the mesh state from the agent"); n != outage {
			t.Errorf("outage %d: the outage was logged %d times in all, want %d", outage, n, outage)
		}
		if r.certs.Certificate() != renewed || r.authz.Authorize(web).Allowed || len(r.instancesOf("db")) != 2 {
			t.Errorf("outage %d: the last known values were not kept", outage)
		}
		f.setDown(false)
		retry.Run(t, func(rr *retry.R) {
			if n := logs.count("the agent answers again"); n != outage {
				rr.Fatalf("recovery logged %d times, want %d", n, outage)
			}
		})
	}
	// The watches go on after the outage.
	f.update(func() { f.intentions = nil })
	retry.Run(t, func(rr *retry.R) {
		if d := r.authz.Authorize(web); !d.Allowed {
			rr.Fatalf("web => api after the intention was deleted: %+v", d)
		}
	})

	addr := p.PublicAddr().String()
	if err := stop(); err != nil {
		t.Errorf("run = %v, want nil after its context ended", err)
	}
	if conn, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		conn.Close()
		t.Errorf("the public listener %s still accepts after run returned", addr)
	}
}

func TestRun_WaitsForTheMeshState(t *testing.T) {
	f := newFakeAgent(t)
	c := newTestCA(t)
	f.update(func() { f.leaf = c.leaf(t, "api", 10) }) // no roots yet
	r, logs, stop := startRunner(t, f, testSpec())
	retry.Run(t, func(rr *retry.R) {
		if logs.count("the agent has no CA roots yet") == 0 {
			rr.Fatal("no word of the missing roots")
		}
	})
	select {
	case <-r.started:
		t.Fatal("the proxy started without roots")
	default:
	}
	f.update(func() { f.roots = c.roots() })
	waitStarted(t, r)
	if err := stop(); err != nil {
		t.Errorf("run = %v", err)
	}
}

func TestRun_StoppedBeforeStart(t *testing.T) {
	f := newFakeAgent(t)
	f.setDown(true)
	_, logs, stop := startRunner(t, f, testSpec())
	retry.Run(t, func(rr *retry.R) {
		if logs.count("cannot get the mesh state") != 1 {
			rr.Fatal("the outage is not logged")
		}
	})
	if err := stop(); err != nil {
		t.Errorf("run = %v, want nil", err)
	}
	if logs.count("stopped before the proxy started") != 1 {
		t.Errorf("logs:\n%s", logs.String())
	}
}

func TestRun_PortTaken(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	f := newFakeAgent(t)
	c := newTestCA(t)
	f.update(func() {
		f.roots = c.roots()
		f.leaf = c.leaf(t, "api", 10)
	})
	sp := testSpec()
	sp.PublicAddr = ln.Addr().String()
	_, _, _, done, result := startRunnerDone(t, f, sp)
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("run did not give up on a taken port")
	}
	if err := *result; err == nil || !strings.Contains(err.Error(), `sidecar "api-sidecar-proxy"`) || !strings.Contains(err.Error(), ln.Addr().String()) {
		t.Errorf("run = %v; want an error naming the sidecar and the address", err)
	}
}

func TestFindSidecar(t *testing.T) {
	f := newFakeAgent(t)
	sidecar := func(id, dest string, config map[string]any) *api.AgentService {
		return &api.AgentService{Kind: kindConnectProxy, ID: id, Service: id, Port: 21000,
			Proxy: &api.AgentServiceConnectProxyConfig{DestinationServiceName: dest, DestinationServiceID: dest, LocalServicePort: 8080, Config: config}}
	}
	f.update(func() {
		f.services = map[string]*api.AgentService{
			"api":               {ID: "api", Service: "api", Port: 8080},
			"api-sidecar-proxy": sidecar("api-sidecar-proxy", "api", map[string]any{"external": "true"}),
			"web":               {ID: "web", Service: "web", Port: 8081},
			"web-sidecar-proxy": sidecar("web-sidecar-proxy", "web", nil),
			"lonely":            {ID: "lonely", Service: "lonely", Port: 1},
			"db":                {ID: "db", Service: "db", Port: 5432},
			"db-a":              sidecar("db-a", "db", map[string]any{"external": true}),
			"db-b":              sidecar("db-b", "db", map[string]any{"external": "true"}),
		}
	})
	client := f.client(t)
	for _, tc := range []struct {
		id, want, err string
	}{
		{id: "api", want: "api-sidecar-proxy"},
		{id: "nope", err: `-sidecar-for "nope": no service with that ID is registered`},
		{id: "web", err: `its sidecar "web-sidecar-proxy" is run by the agent itself; set proxy { config { external = "true" } }`},
		{id: "api-sidecar-proxy", err: "that is a sidecar proxy itself; give the ID of the service it fronts: -sidecar-for=api"},
		{id: "lonely", err: "the service has no sidecar proxy"},
		{id: "db", err: "2 sidecar proxies front that service (db-a, db-b)"},
	} {
		got, err := findSidecar(client, tc.id)
		switch {
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("findSidecar(%q) = %v; want an error with %q", tc.id, err, tc.err)
		case tc.err == "" && (err != nil || got.ID != tc.want):
			t.Errorf("findSidecar(%q) = %+v, %v; want %s", tc.id, got, err, tc.want)
		}
	}

	in, err := readAgent(client)
	if err != nil || in.addr != "127.0.0.1" || !in.defaultAllow || !in.policyKnown {
		t.Errorf("readAgent = %+v, %v", in, err)
	}
	f.update(func() { f.self = map[string]map[string]any{"Config": {"NodeName": "n1"}} })
	if in, err := readAgent(client); err != nil || in.defaultAllow || in.policyKnown || in.addr != "" {
		t.Errorf("readAgent of an agent that does not say its policy = %+v, %v; want deny", in, err)
	}
}

func TestSpecOf(t *testing.T) {
	base := func() *api.AgentService {
		return &api.AgentService{Kind: kindConnectProxy, ID: "api-sidecar-proxy", Port: 21000,
			Proxy: &api.AgentServiceConnectProxyConfig{DestinationServiceName: "api", DestinationServiceID: "api", LocalServicePort: 8080,
				Upstreams: []api.Upstream{{DestinationName: "db", LocalBindPort: 9191}}}}
	}
	agent := agentInfo{addr: "10.0.0.5", defaultAllow: true, policyKnown: true}
	for _, tc := range []struct {
		name     string
		edit     func(s *api.AgentService)
		in       agentInfo
		public   string
		app, err string
	}{
		{name: "agent address", in: agent, public: "10.0.0.5:21000", app: "127.0.0.1:8080"},
		{name: "service address", edit: func(s *api.AgentService) { s.Address = "10.1.1.1" }, in: agent, public: "10.1.1.1:21000", app: "127.0.0.1:8080"},
		{name: "bind_address", edit: func(s *api.AgentService) { s.Proxy.Config = map[string]any{"bind_address": "0.0.0.0"} }, in: agent, public: "0.0.0.0:21000", app: "127.0.0.1:8080"},
		{name: "no address known", in: agentInfo{}, public: "0.0.0.0:21000", app: "127.0.0.1:8080"},
		{name: "local address", edit: func(s *api.AgentService) { s.Proxy.LocalServiceAddress = "::1" }, in: agent, public: "10.0.0.5:21000", app: "[::1]:8080"},
		{name: "bad bind_address", edit: func(s *api.AgentService) { s.Proxy.Config = map[string]any{"bind_address": "here"} }, in: agent, err: `bind_address "here" is not an IP address`},
		{name: "no local port", edit: func(s *api.AgentService) { s.Proxy.LocalServicePort = 0 }, in: agent, err: "no local_service_port"},
		{name: "no port", edit: func(s *api.AgentService) { s.Port = 0 }, in: agent, err: "no port"},
		{name: "twice", edit: func(s *api.AgentService) {
			s.Proxy.Upstreams = append(s.Proxy.Upstreams, api.Upstream{DestinationName: "db"})
		}, in: agent, err: `upstream "db" appears twice`},
	} {
		s := base()
		if tc.edit != nil {
			tc.edit(s)
		}
		sp, err := specOf(s, tc.in)
		switch {
		case tc.err != "":
			if err == nil || !strings.Contains(err.Error(), tc.err) || !strings.Contains(err.Error(), "api-sidecar-proxy") {
				t.Errorf("%s: specOf = %v; want an error naming the sidecar and %q", tc.name, err, tc.err)
			}
		case err != nil || sp.PublicAddr != tc.public || sp.LocalAppAddr != tc.app || sp.Service != "api" || len(sp.Upstreams) != 1 || sp.DefaultAllow != tc.in.defaultAllow:
			t.Errorf("%s: specOf = %+v, %v; want public %s, app %s", tc.name, sp, err, tc.public, tc.app)
		}
	}
}

func TestAuthorizer(t *testing.T) {
	c := newTestCA(t)
	b, err := bundleOf(c.roots())
	if err != nil {
		t.Fatal(err)
	}
	certs := &certSource{}
	certs.bundle.Store(b)
	a := &authorizer{service: "api", certs: certs}
	web := connect.NewServiceID(testTrustDomain, "dc1", "web")
	if d := a.Authorize(web); d.Allowed || !strings.Contains(d.Reason, "not known yet") {
		t.Errorf("before the intentions: %+v", d)
	}
	a.set.Store(intentionsSet(&api.Intention{SourceName: "*", DestinationName: "api", Action: "allow"}))
	if d := a.Authorize(web); !d.Allowed {
		t.Errorf("* => api allow: %+v", d)
	}
	if d := a.Authorize(connect.NewServiceID("x.trellis", "dc1", "web")); d.Allowed || !strings.Contains(d.Reason, "another trust domain") {
		t.Errorf("another trust domain: %+v", d)
	}
	a.set.Store(intentionsSet(&api.Intention{SourceName: "db", DestinationName: "api", Action: "allow"}))
	if d := a.Authorize(web); d.Allowed {
		t.Errorf("no match, default deny: %+v", d)
	}
	if _, err := bundleOf(&api.CARootList{TrustDomain: testTrustDomain}); err == nil {
		t.Error("bundleOf accepted no roots")
	}
}

func intentionsSet(list ...*api.Intention) *intentions.Set {
	return intentions.NewSet(toConnectIntentions(list))
}

func TestInstancesOf(t *testing.T) {
	got := instancesOf("db", []*api.ServiceEntry{
		entry("n1", "10.0.0.1", "", 21000),
		entry("n2", "10.0.0.2", "fd00::2", 21001),
		entry("n3", "", "", 21002), // no address at all: skipped
		{Node: &api.Node{Node: "n4"}},
		nil,
	})
	want := []meshproxy.Instance{{Node: "n1", Addr: "10.0.0.1:21000", Service: "db"}, {Node: "n2", Addr: "[fd00::2]:21001", Service: "db"}}
	if len(got) != len(want) || got[0] != want[0] || got[1] != want[1] {
		t.Errorf("instancesOf = %+v, want %+v", got, want)
	}
}

func TestBackoff(t *testing.T) {
	b := backoff{min: 100 * time.Millisecond, max: time.Second}
	for i, cap := range []time.Duration{100, 200, 400, 800, 1000, 1000} {
		cap *= time.Millisecond
		if cap > time.Second {
			cap = time.Second
		}
		d := b.next()
		if d < cap/2 || d > cap {
			t.Errorf("attempt %d: %s, want within [%s, %s]", i, d, cap/2, cap)
		}
	}
	b.reset()
	if d := b.next(); d > 100*time.Millisecond {
		t.Errorf("after reset: %s", d)
	}
}
