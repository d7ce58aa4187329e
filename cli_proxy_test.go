package main

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	consulapi "github.com/hashicorp/consul/api"

	"github.com/trellismesh/trellis/api"
	"github.com/trellismesh/trellis/internal/retry"
	"github.com/trellismesh/trellis/internal/testcluster"
	"github.com/trellismesh/trellis/internal/testutil"
)

// proxyProcess is a running `trellis connect proxy`.
type proxyProcess struct {
	cmd    *exec.Cmd
	stderr *testutil.LockedBuffer
	done   chan struct{} // closed when the process has exited
	err    error         // of Wait; set before done is closed
}

// startProxy starts `trellis connect proxy args...` against the agent at
// httpAddr; it is killed when the test ends if still running.
func startProxy(t *testing.T, httpAddr string, args ...string) *proxyProcess {
	t.Helper()
	cmd := exec.Command(trellis(t), append([]string{"connect", "proxy", "-http-addr", httpAddr}, args...)...)
	pp := &proxyProcess{cmd: cmd, stderr: &testutil.LockedBuffer{}, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = io.Discard, pp.stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("start connect proxy: %v", err)
	}
	go func() {
		pp.err = cmd.Wait()
		close(pp.done)
	}()
	t.Cleanup(func() {
		select {
		case <-pp.done:
		default:
			_ = cmd.Process.Kill()
			<-pp.done
		}
		if t.Failed() {
			t.Logf("connect proxy stderr:\n%s", pp.stderr.String())
		}
	})
	return pp
}

// get fetches url on a new connection with a short timeout.
func get(url string) (string, error) {
	c := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("status %d: %s", resp.StatusCode, b)
	}
	return string(b), nil
}

// proxyTestbed is an agent with an HTTP app, registered as "api" with an
// external sidecar by register, and "web", whose sidecar (run by the agent)
// has an upstream to api on a free port.
type proxyTestbed struct {
	agent    *testcluster.Agent
	addr     string // the agent's HTTP address
	upstream string // the URL of web's upstream to api
	public   string // the address of api's sidecar's public listener
}

// newProxyTestbed starts the agent and the app, registers api with
// registerAPI (given the app's port) and web.
func newProxyTestbed(t *testing.T, name string, registerAPI func(agent *consulapi.Agent, appPort int) error) *proxyTestbed {
	t.Helper()
	a := testcluster.StartAgent(t, testcluster.Options{Name: name, HCL: `telemetry { mesh_metrics_interval = "200ms" }`})
	tb := &proxyTestbed{agent: a, addr: a.HTTPAddr()}
	waitForCA(t, tb.addr)

	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "hello from api")
	}))
	t.Cleanup(app.Close)
	if err := registerAPI(a.Client.Agent(), app.Listener.Addr().(*net.TCPAddr).Port); err != nil {
		t.Fatalf("register api: %v", err)
	}
	ports := testutil.FreePorts(t, 2)
	err := a.Client.Agent().ServiceRegister(&consulapi.AgentServiceRegistration{
		Name: "web", Port: ports[0],
		Connect: &consulapi.AgentServiceConnect{SidecarService: &consulapi.AgentServiceRegistration{
			Proxy: &consulapi.AgentServiceConnectProxyConfig{Upstreams: []consulapi.Upstream{
				{DestinationName: "api", LocalBindAddress: "127.0.0.1", LocalBindPort: ports[1]},
			}},
		}},
	})
	if err != nil {
		t.Fatalf("register web: %v", err)
	}
	tb.upstream = "http://127.0.0.1:" + strconv.Itoa(ports[1]) + "/"
	svcs, err := a.Client.Agent().Services()
	if err != nil || svcs["api-sidecar-proxy"] == nil {
		t.Fatalf("services = %v, %v", svcs, err)
	}
	tb.public = net.JoinHostPort("127.0.0.1", strconv.Itoa(svcs["api-sidecar-proxy"].Port))
	return tb
}

// waitServing waits until a request through web's upstream reaches the app.
func (tb *proxyTestbed) waitServing(t *testing.T, pp *proxyProcess) {
	t.Helper()
	retry.RunWith(&retry.Timer{Timeout: 30 * time.Second, Wait: 50 * time.Millisecond}, t, func(r *retry.R) {
		select {
		case <-pp.done:
			r.Fatalf("connect proxy exited: %v", pp.err)
		default:
		}
		body, err := get(tb.upstream)
		if err != nil || body != "hello from api" {
			r.Fatalf("GET through web's upstream: %q, %v", body, err)
		}
	})
}

// stop sends SIGTERM and checks the proxy exits 0 with its public port closed.
func (tb *proxyTestbed) stop(t *testing.T, pp *proxyProcess) {
	t.Helper()
	if err := pp.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-pp.done:
	case <-time.After(10 * time.Second):
		t.Fatal("connect proxy still running 10s after SIGTERM")
	}
	if pp.err != nil {
		t.Errorf("connect proxy after SIGTERM: %v; want exit 0", pp.err)
	}
	if c, err := net.DialTimeout("tcp", tb.public, time.Second); err == nil {
		c.Close()
		t.Errorf("the public port %s still accepts after the proxy stopped", tb.public)
	}
	if s := pp.stderr.String(); !strings.Contains(s, "proxy started") || !strings.Contains(s, "proxy stopped") {
		t.Errorf("connect proxy logs lack start and stop:\n%s", s)
	}
}

// TestCLI_ConnectProxy runs the proxy of a sidecar registered as a
// connect-proxy service of its own (what sidecar_service expands to, on a
// port of the test's choosing).
func TestCLI_ConnectProxy(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	t.Parallel()
	tb := newProxyTestbed(t, "cli-proxy", func(agent *consulapi.Agent, appPort int) error {
		if err := agent.ServiceRegister(&consulapi.AgentServiceRegistration{Name: "api", Port: appPort}); err != nil {
			return err
		}
		return agent.ServiceRegister(&consulapi.AgentServiceRegistration{
			Kind: consulapi.ServiceKindConnectProxy, ID: "api-sidecar-proxy", Name: "api-sidecar-proxy", Port: testutil.FreePorts(t, 1)[0],
			Proxy: &consulapi.AgentServiceConnectProxyConfig{
				DestinationServiceName: "api", DestinationServiceID: "api", LocalServicePort: appPort,
				Config: map[string]any{"external": "true"},
			},
		})
	})
	addr := tb.addr

	// Refusals: a clear error and exit 1, before anything is bound.
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"-sidecar-for", "nope"}, `-sidecar-for "nope": no service with that ID`},
		{[]string{"-sidecar-for", "web"}, `proxy { config { external = "true" } }`},
		{[]string{"-sidecar-for", "api-sidecar-proxy"}, "-sidecar-for=api"},
		{nil, "-sidecar-for is required"},
		{[]string{"-sidecar-for", "api", "-log-level", "loud"}, `-log-level "loud"`},
		{[]string{"-sidecar-for", "api", "extra"}, "takes only flags"},
	} {
		r := run(t, addr, append([]string{"connect", "proxy"}, tc.args...)...)
		if r.code != 1 || !strings.Contains(r.stderr, tc.want) {
			t.Errorf("connect proxy %v: %+v; want exit 1 and %q on stderr", tc.args, r, tc.want)
		}
	}
	if r := run(t, "127.0.0.1:1", "connect", "proxy", "-sidecar-for", "api"); r.code != 1 || !strings.Contains(r.stderr, "connection refused") {
		t.Errorf("connect proxy without an agent: %+v", r)
	}
	if r := run(t, addr, "connect", "proxy", "-h"); r.code != 0 || !strings.Contains(r.stdout, "$ trellis connect proxy -sidecar-for=api") {
		t.Errorf("connect proxy -h: %+v", r)
	}

	pp := startProxy(t, addr, "-sidecar-for", "api", "-log-level", "debug")
	tb.waitServing(t, pp)

	// A deny intention takes effect within a few seconds; allow brings it back.
	fast := &retry.Timer{Timeout: 5 * time.Second, Wait: 50 * time.Millisecond}
	setIntention := func(action consulapi.IntentionAction) {
		t.Helper()
		if _, err := tb.agent.Client.Connect().IntentionUpsert(&consulapi.Intention{SourceName: "web", DestinationName: "api", Action: action}, nil); err != nil {
			t.Fatalf("intention web => api (%s): %v", action, err)
		}
	}
	setIntention(consulapi.IntentionActionDeny)
	denied := time.Now()
	retry.RunWith(fast, t, func(r *retry.R) {
		if body, err := get(tb.upstream); err == nil {
			r.Fatalf("GET after the deny intention answered %q", body)
		}
	})
	t.Logf("deny took effect in %s", time.Since(denied).Round(time.Millisecond))
	setIntention(consulapi.IntentionActionAllow)
	retry.RunWith(fast, t, func(r *retry.R) {
		if body, err := get(tb.upstream); err != nil || body != "hello from api" {
			r.Fatalf("GET after the allow intention: %q, %v", body, err)
		}
	})

	tb.stop(t, pp)

	// The proxy handed its counts to the agent (the last ones as it
	// stopped): api's side of web → api is known, though the agent does not
	// run api's proxy.
	cl, err := api.NewClient(&api.Config{Address: addr})
	if err != nil {
		t.Fatal(err)
	}
	retry.RunWith(&retry.Timer{Timeout: 10 * time.Second, Wait: 100 * time.Millisecond}, t, func(r *retry.R) {
		m, err := cl.Connect().Metrics("api", 5*time.Minute, nil)
		if err != nil {
			r.Fatal(err)
		}
		for _, e := range m.Edges {
			if e.Source == "web" && e.Destination == "api" && e.Inbound != nil && e.Inbound.Requests > 0 {
				return
			}
		}
		r.Fatalf("no inbound side of web → api in %+v", m.Edges)
	})
}

// TestCLI_ConnectProxy_SidecarService runs the proxy of a sidecar_service
// marked external.
func TestCLI_ConnectProxy_SidecarService(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	t.Parallel()
	tb := newProxyTestbed(t, "cli-proxy-sidecar", func(agent *consulapi.Agent, appPort int) error {
		// A port outside the sidecar range: agents of other tests in this
		// process pick from that range and could take it between the agent
		// letting go of it and the proxy binding it.
		return agent.ServiceRegister(&consulapi.AgentServiceRegistration{
			Name: "api", Port: appPort,
			Connect: &consulapi.AgentServiceConnect{SidecarService: &consulapi.AgentServiceRegistration{
				Port:  testutil.FreePorts(t, 1)[0],
				Proxy: &consulapi.AgentServiceConnectProxyConfig{Config: map[string]any{"external": "true"}},
			}},
		})
	})
	// The agent reserves the port when it registers the sidecar and must let
	// go of it once it sees the sidecar is external (asynchronously).
	retry.RunWith(&retry.Timer{Timeout: 5 * time.Second, Wait: 50 * time.Millisecond}, t, func(r *retry.R) {
		ln, err := net.Listen("tcp", tb.public)
		if err != nil {
			r.Fatal(err)
		}
		ln.Close()
	})
	pp := startProxy(t, tb.addr, "-sidecar-for", "api")
	tb.waitServing(t, pp)
	tb.stop(t, pp)
}
