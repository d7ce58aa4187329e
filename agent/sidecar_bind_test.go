package agent_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	consulapi "github.com/hashicorp/consul/api"

	"github.com/trellismesh/trellis/internal/retry"
	"github.com/trellismesh/trellis/internal/testcluster"
	"github.com/trellismesh/trellis/internal/testutil"
)

// registerRaw PUTs reg to /v1/agent/service/register and returns the
// status and the body of the answer.
func registerRaw(t *testing.T, a *testcluster.Agent, reg *consulapi.AgentServiceRegistration) (int, string) {
	t.Helper()
	b, err := json.Marshal(reg)
	if err != nil {
		t.Fatal(err)
	}
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPut, "http://"+a.HTTPAddr()+"/v1/agent/service/register", bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// holdPort binds a free loopback port until the returned function is
// called (or the test ends).
func holdPort(t *testing.T) (int, func()) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln.Addr().(*net.TCPAddr).Port, func() { ln.Close() }
}

func loopback(port int) string { return fmt.Sprintf("127.0.0.1:%d", port) }

// notRegistered fails the test when any of ids is a service of a.
func notRegistered(t *testing.T, a *testcluster.Agent, ids ...string) {
	t.Helper()
	svcs, err := a.Client.Agent().Services()
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range ids {
		if svcs[id] != nil {
			t.Errorf("%s is registered after the refusal: %+v", id, svcs[id])
		}
	}
	if ps := a.Proxies(); len(ps) > 0 {
		for _, id := range ids {
			if _, ok := ps[id]; ok {
				t.Errorf("the agent runs a proxy for %s after the refusal", id)
			}
		}
	}
}

// The tester's report: a sidecar whose upstream port is taken was
// registered, listed as a passing endpoint with nothing on its public
// port, and took the port over once it was free. Now the registration is
// refused with 409 naming the service, the listener and the address, and
// nothing of it is left.
func TestAgent_SidecarWithBusyUpstreamIsRefused(t *testing.T) {
	t.Parallel()
	a := testcluster.StartAgent(t, testcluster.Options{})
	busy, free := holdPort(t)
	public := freePorts(t, 1)[0]
	reg := &consulapi.AgentServiceRegistration{Name: "inuse", Port: 19097, Connect: &consulapi.AgentServiceConnect{
		SidecarService: &consulapi.AgentServiceRegistration{Port: public, Proxy: &consulapi.AgentServiceConnectProxyConfig{
			Upstreams: []consulapi.Upstream{{DestinationName: "api", LocalBindPort: busy}},
		}},
	}}
	code, body := registerRaw(t, a, reg)
	if code != http.StatusConflict {
		t.Fatalf("registration with a busy upstream port: %d %s (want 409)", code, body)
	}
	for _, want := range []string{`"inuse"`, `upstream "api"`, loopback(busy), "address already in use"} {
		if !strings.Contains(body, want) {
			t.Errorf("the answer %q does not say %s", body, want)
		}
	}
	notRegistered(t, a, "inuse", "inuse-sidecar-proxy")
	if entries, _, err := a.Client.Health().Connect("inuse", "", false, nil); err != nil || len(entries) != 0 {
		t.Errorf("mesh endpoints of inuse: %v, %v", entries, err)
	}
	if testutil.ListensHere(t, loopback(public)) {
		t.Error("the refused sidecar's public port is bound")
	}

	// Once the port is free the agent does not take it: no retry in the
	// background. Another registration wakes whatever follows the local
	// services, and the agent is watched for longer than the old retry
	// interval (5s).
	free()
	if err := a.Client.Agent().ServiceRegister(&consulapi.AgentServiceRegistration{Name: "other", Port: 1}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(6 * time.Second)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for time.Now().Before(deadline) {
		if _, ok := a.Proxies()["inuse-sidecar-proxy"]; ok || testutil.ListensHere(t, loopback(busy)) {
			t.Fatalf("the agent bound port %d, or started the refused sidecar, once the port was freed", busy)
		}
		<-tick.C
	}
	notRegistered(t, a, "inuse", "inuse-sidecar-proxy")
}

// A re-registration that cannot bind is refused and leaves the working
// proxy serving with its previous configuration.
func TestAgent_RefusedReRegistrationKeepsTheProxy(t *testing.T) {
	t.Parallel()
	a := testcluster.StartAgent(t, testcluster.Options{Name: "rereg"})
	webPort := startHTTPApp(t, "web")
	up := freePorts(t, 1)[0]
	registerWithSidecar(t, a, "api", startHTTPApp(t, "api"), nil)
	registerWithSidecar(t, a, "web", webPort, map[string]int{"api": up})
	upstream := loopback(up)
	retry.RunWith(&retry.Timer{Timeout: 20 * time.Second, Wait: 50 * time.Millisecond}, t, func(r *retry.R) {
		if body, err := get(upstream, "/hello"); err != nil || body != "api /hello" {
			r.Fatalf("through the upstream: %q, %v", body, err)
		}
	})
	svcs, err := a.Client.Agent().Services()
	if err != nil {
		t.Fatal(err)
	}
	before := svcs["web-sidecar-proxy"]
	if before == nil {
		t.Fatal("web has no sidecar")
	}
	busy, _ := holdPort(t)

	for _, tc := range []struct {
		name string
		sc   *consulapi.AgentServiceRegistration
		code int
		says string
	}{
		{"unassigned address", &consulapi.AgentServiceRegistration{Address: "192.0.2.1", Proxy: &consulapi.AgentServiceConnectProxyConfig{
			Upstreams: []consulapi.Upstream{{DestinationName: "api", LocalBindPort: up}},
		}}, http.StatusBadRequest, "192.0.2.1:"},
		{"busy upstream port", &consulapi.AgentServiceRegistration{Proxy: &consulapi.AgentServiceConnectProxyConfig{
			Upstreams: []consulapi.Upstream{{DestinationName: "api", LocalBindPort: up}, {DestinationName: "db", LocalBindPort: busy}},
		}}, http.StatusConflict, loopback(busy)},
	} {
		reg := &consulapi.AgentServiceRegistration{Name: "web", Port: webPort, Connect: &consulapi.AgentServiceConnect{SidecarService: tc.sc}}
		code, body := registerRaw(t, a, reg)
		if code != tc.code || !strings.Contains(body, tc.says) || !strings.Contains(body, `"web"`) {
			t.Fatalf("%s: %d %s (want %d naming %s)", tc.name, code, body, tc.code, tc.says)
		}
		if body, err := get(upstream, "/after"); err != nil || body != "api /after" {
			t.Fatalf("%s: the proxy after the refused change: %q, %v", tc.name, body, err)
		}
		svcs, err := a.Client.Agent().Services()
		if err != nil {
			t.Fatal(err)
		}
		sc := svcs["web-sidecar-proxy"]
		if sc == nil || sc.Address != before.Address || sc.Port != before.Port || len(sc.Proxy.Upstreams) != 1 {
			t.Fatalf("%s: the sidecar's registration after the refused change: %+v (before %+v)", tc.name, sc, before)
		}
		if p := a.Proxies()["web-sidecar-proxy"]; p.PublicAddr == nil || p.PublicAddr.(*net.TCPAddr).Port != before.Port || p.Upstreams["db"] != nil {
			t.Fatalf("%s: the running proxy after the refused change: %+v", tc.name, p)
		}
	}
}

// Two sidecars asking for one port, or more sidecars than the range has
// ports: the user's mistake, answered 409 with the service, the listener
// and the port named, and the refused service left out entirely.
func TestAgent_SidecarPortConflictsAreRefused(t *testing.T) {
	t.Parallel()
	ports := freePorts(t, 2)
	explicit, only := ports[0], ports[1]
	a := testcluster.StartAgent(t, testcluster.Options{Name: "dup", HCL: fmt.Sprintf("ports {\n  sidecar_min_port = %d\n  sidecar_max_port = %d\n}\n", only, only)})
	withPort := func(name string, port int) *consulapi.AgentServiceRegistration {
		return &consulapi.AgentServiceRegistration{Name: name, Port: 1, Connect: &consulapi.AgentServiceConnect{
			SidecarService: &consulapi.AgentServiceRegistration{Port: port},
		}}
	}
	if code, body := registerRaw(t, a, withPort("dupa", explicit)); code != http.StatusOK {
		t.Fatalf("dupa: %d %s", code, body)
	}
	code, body := registerRaw(t, a, withPort("dupb", explicit))
	if code != http.StatusConflict {
		t.Fatalf("dupb on dupa's sidecar port: %d %s (want 409)", code, body)
	}
	for _, want := range []string{`"dupb"`, "public listener", loopback(explicit), `"dupa-sidecar-proxy"`} {
		if !strings.Contains(body, want) {
			t.Errorf("the answer %q does not say %s", body, want)
		}
	}
	notRegistered(t, a, "dupb", "dupb-sidecar-proxy")
	if p := a.Proxies()["dupa-sidecar-proxy"]; p.PublicAddr == nil || p.PublicAddr.(*net.TCPAddr).Port != explicit {
		t.Errorf("dupa's proxy after dupb was refused: %+v", p)
	}

	// The range has one port: the first sidecar without a port takes it,
	// the second is refused.
	if code, body := registerRaw(t, a, withPort("one", 0)); code != http.StatusOK {
		t.Fatalf("one: %d %s", code, body)
	}
	code, body = registerRaw(t, a, withPort("two", 0))
	if code != http.StatusConflict || !strings.Contains(body, `"two"`) || !strings.Contains(body, fmt.Sprintf("no free port for its public listener in %d-%d", only, only)) {
		t.Fatalf("two, with the range full: %d %s (want 409 naming the range)", code, body)
	}
	notRegistered(t, a, "two", "two-sidecar-proxy")
}

// A sidecar restored from the data directory whose upstream port is taken
// at start-up is registered (nobody is there to refuse it) but critical,
// so it is not a passing mesh endpoint; registering it again once the port
// is free starts it and clears the check.
func TestAgent_RestoredSidecarWithBusyPortIsCritical(t *testing.T) {
	t.Parallel()
	ports := freePorts(t, 3)
	serverPort, public, up := ports[0], ports[1], ports[2]
	opts := testcluster.Options{Name: "restore-busy", DataDir: t.TempDir(), ServerPort: serverPort}
	a := testcluster.StartAgent(t, opts)
	webPort := startHTTPApp(t, "web")
	reg := &consulapi.AgentServiceRegistration{Name: "web", Port: webPort, Connect: &consulapi.AgentServiceConnect{
		SidecarService: &consulapi.AgentServiceRegistration{Port: public, Proxy: &consulapi.AgentServiceConnectProxyConfig{
			Upstreams: []consulapi.Upstream{{DestinationName: "api", LocalBindPort: up}},
		}},
	}}
	if err := a.Client.Agent().ServiceRegister(reg); err != nil {
		t.Fatal(err)
	}
	a.Stop()

	ln, err := net.Listen("tcp", loopback(up))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	b := testcluster.StartAgent(t, opts)
	svcs, err := b.Client.Agent().Services()
	if err != nil || svcs["web-sidecar-proxy"] == nil {
		t.Fatalf("the sidecar was not restored: %v, %v", svcs, err)
	}
	if _, ok := b.Proxies()["web-sidecar-proxy"]; ok {
		t.Fatal("the agent runs the proxy of a sidecar whose upstream port is taken")
	}
	if testutil.ListensHere(t, loopback(public)) {
		t.Error("the public port of the sidecar that did not start is bound")
	}
	checks, err := b.Client.Agent().Checks()
	if err != nil {
		t.Fatal(err)
	}
	chk := checks["proxy:web-sidecar-proxy"]
	if chk == nil || chk.Status != consulapi.HealthCritical || chk.ServiceID != "web-sidecar-proxy" || !strings.Contains(chk.Output, loopback(up)) {
		t.Fatalf("the sidecar's proxy check: %+v", chk)
	}
	retry.Run(t, func(r *retry.R) {
		all, _, err := b.Client.Health().Connect("web", "", false, nil)
		if err != nil || len(all) != 1 {
			r.Fatalf("mesh endpoints of web: %v, %v", all, err)
		}
		if passing, _, err := b.Client.Health().Connect("web", "", true, nil); err != nil || len(passing) != 0 {
			r.Fatalf("passing mesh endpoints of web: %v, %v", passing, err)
		}
	})

	ln.Close()
	if err := b.Client.Agent().ServiceRegister(reg); err != nil {
		t.Fatalf("registering again once the port is free: %v", err)
	}
	if !testutil.ListensHere(t, loopback(public)) || !testutil.ListensHere(t, loopback(up)) {
		t.Fatal("the proxy does not listen after the sidecar was registered again")
	}
	if checks, err := b.Client.Agent().Checks(); err != nil || checks["proxy:web-sidecar-proxy"] != nil {
		t.Fatalf("the proxy check after the proxy started: %v, %v", checks, err)
	}
	retry.Run(t, func(r *retry.R) {
		if passing, _, err := b.Client.Health().Connect("web", "", true, nil); err != nil || len(passing) != 1 {
			r.Fatalf("passing mesh endpoints of web: %v, %v", passing, err)
		}
	})
}
