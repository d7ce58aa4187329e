package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	consulapi "github.com/hashicorp/consul/api"

	"github.com/trellismesh/trellis/internal/retry"
	"github.com/trellismesh/trellis/internal/testutil"
)

// agentProc is a trellis agent running as its own process.
type agentProc struct {
	name string
	http string
	cmd  *exec.Cmd
	done chan struct{}
	mu   sync.Mutex
	logs bytes.Buffer
}

func (p *agentProc) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.logs.Write(b)
}

func (p *agentProc) log() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.logs.String()
}

func (p *agentProc) kill() {
	if p.cmd.Process != nil {
		_ = p.cmd.Process.Signal(syscall.SIGKILL)
		<-p.done
	}
}

func (p *agentProc) client(t *testing.T) *consulapi.Client {
	cfg := consulapi.DefaultConfig()
	cfg.Address = p.http
	cfg.Transport.DisableKeepAlives = true
	c, err := consulapi.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// startAgentProc starts the built binary as an agent with -dev's timers,
// in its own data directory, with extra HCL.
func startAgentProc(t *testing.T, name string, ports []int, join string, server bool, hcl string) *agentProc {
	t.Helper()
	dir := t.TempDir()
	cfgFile := filepath.Join(dir, "agent.hcl")
	if err := os.WriteFile(cfgFile, []byte(hcl), 0o600); err != nil {
		t.Fatal(err)
	}
	p := &agentProc{name: name, http: "127.0.0.1:" + strconv.Itoa(ports[0]), done: make(chan struct{})}
	args := []string{"agent", "-dev", "-node", name, "-bind", "127.0.0.1", "-client", "127.0.0.1", "-log-level", "debug",
		"-data-dir", filepath.Join(dir, "data"), "-dns-port", "-1", "-config-file", cfgFile,
		"-http-port", strconv.Itoa(ports[0]), "-serf-lan-port", strconv.Itoa(ports[1]), "-server-port", strconv.Itoa(ports[2])}
	if join != "" {
		args = append(args, "-retry-join", join)
	}
	if server {
		args = append(args, "-server", "-bootstrap-expect", "3")
	} else {
		args = append(args, "-server=false", "-bootstrap=false")
	}
	p.cmd = exec.Command(trellis(t), args...)
	p.cmd.Stdout, p.cmd.Stderr = p, p
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		p.kill()
		if t.Failed() {
			t.Logf("--- log of %s ---\n%s", name, p.log())
		}
	})
	return p
}

// serveApp runs an HTTP app in this process that answers "<name> <path>".
func serveApp(t *testing.T, name string) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s %s", name, r.URL.Path)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().(*net.TCPAddr).Port
}

// fetch makes one request on a new connection.
func fetch(addr, path string) (string, error) {
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", path)
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

func writeServiceFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// meshServiceFiles writes the service files of api (its app answering as
// apiApp) and web (upstream api on local port up), each with a sidecar.
func meshServiceFiles(t *testing.T, apiApp string, up int) (apiFile, webFile string) {
	t.Helper()
	apiFile = writeServiceFile(t, "api.hcl", fmt.Sprintf("service {\n  name = \"api\"\n  port = %d\n  connect {\n    sidecar_service {}\n  }\n}\n", serveApp(t, apiApp)))
	webFile = writeServiceFile(t, "web.hcl", fmt.Sprintf(`service {
  name = "web"
  port = %d
  connect {
    sidecar_service {
      proxy {
        upstreams = [{ destination_name = "api", local_bind_port = %d }]
      }
    }
  }
}
`, serveApp(t, "web"), up))
	return apiFile, webFile
}

// TestE2E_Mesh runs the mesh end to end with real processes: three server
// agents and two client agents of the built binary on loopback, two HTTP
// apps registered with sidecars on different agents. Traffic flows through
// the upstream port; the CLI's deny intention stops it and allow restores
// it; a root rotation under steady traffic drops nothing; killing the only
// instance's agent fails the upstream over to a second instance.
func TestE2E_Mesh(t *testing.T) {
	if testing.Short() {
		t.Skip("starts five agent processes")
	}
	t.Parallel()
	ports := testutil.FreePorts(t, 16)
	hcl := "connect {\n  default_intention_policy = \"deny\"\n}\n"
	join := "127.0.0.1:" + strconv.Itoa(ports[1])
	var servers []*agentProc
	for i := range 3 {
		servers = append(servers, startAgentProc(t, fmt.Sprintf("server-%d", i), ports[i*3:i*3+3], join, true, hcl))
	}
	web := startAgentProc(t, "client-web", ports[9:12], join, false, hcl)
	apiHost := startAgentProc(t, "client-api", ports[12:15], join, false, hcl)
	retry.RunWith(&retry.Timer{Timeout: 60 * time.Second, Wait: 100 * time.Millisecond}, t, func(r *retry.R) {
		for _, p := range []*agentProc{web, apiHost, servers[2]} {
			r2 := run(t, p.http, "connect", "ca", "roots")
			if r2.code != 0 || !strings.Contains(r2.stdout, "true") {
				r.Fatalf("%s: %+v", p.name, r2)
			}
		}
	})

	up := ports[15]
	upstream := "127.0.0.1:" + strconv.Itoa(up)
	apiFile, webFile := meshServiceFiles(t, "api-1", up)
	if r := run(t, apiHost.http, "services", "register", apiFile); r.code != 0 {
		t.Fatalf("register api: %+v", r)
	}
	if r := run(t, web.http, "services", "register", webFile); r.code != 0 {
		t.Fatalf("register web: %+v", r)
	}

	// Default deny: nothing passes until an intention allows it.
	retry.RunWith(&retry.Timer{Timeout: 30 * time.Second, Wait: 50 * time.Millisecond}, t, func(r *retry.R) {
		if _, err := net.DialTimeout("tcp", upstream, time.Second); err != nil {
			r.Fatalf("upstream listener: %v", err)
		}
	})
	if body, err := fetch(upstream, "/"); err == nil && body != "" {
		t.Fatalf("traffic passed with the default policy deny and no intention: %q", body)
	}
	if r := run(t, web.http, "intention", "create", "-allow", "web", "api"); r.code != 0 {
		t.Fatalf("intention create -allow: %+v", r)
	}
	retry.RunWith(&retry.Timer{Timeout: 30 * time.Second, Wait: 50 * time.Millisecond}, t, func(r *retry.R) {
		if body, err := fetch(upstream, "/hello"); err != nil || body != "api-1 /hello" {
			r.Fatalf("through the upstream: %q, %v", body, err)
		}
	})
	if r := run(t, web.http, "intention", "check", "web", "api"); r.code != 0 || !strings.Contains(r.stdout, "Allowed") {
		t.Errorf("intention check: %+v", r)
	}

	// -deny stops it, -allow brings it back.
	if r := run(t, web.http, "intention", "create", "-deny", "-replace", "web", "api"); r.code != 0 {
		t.Fatalf("intention create -deny: %+v", r)
	}
	retry.RunWith(&retry.Timer{Timeout: 10 * time.Second, Wait: 20 * time.Millisecond}, t, func(r *retry.R) {
		if body, err := fetch(upstream, "/"); err == nil && body != "" {
			r.Fatalf("denied traffic passed: %q", body)
		}
	})
	if r := run(t, web.http, "intention", "check", "web", "api"); r.code != 1 || !strings.Contains(r.stdout, "Denied") {
		t.Errorf("intention check after deny: %+v", r)
	}
	if r := run(t, web.http, "intention", "create", "-allow", "-replace", "web", "api"); r.code != 0 {
		t.Fatalf("intention create -allow -replace: %+v", r)
	}
	retry.RunWith(&retry.Timer{Timeout: 10 * time.Second, Wait: 20 * time.Millisecond}, t, func(r *retry.R) {
		if body, err := fetch(upstream, "/again"); err != nil || body != "api-1 /again" {
			r.Fatalf("allowed again: %q, %v", body, err)
		}
	})

	// A root rotation under steady traffic.
	rootsBefore := run(t, web.http, "connect", "ca", "roots").stdout
	ctx, cancel := context.WithCancel(t.Context())
	var ok, failed atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				if body, err := fetch(upstream, "/steady"); err != nil || body != "api-1 /steady" {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, fmt.Sprintf("%q, %v", body, err))
					continue
				}
				ok.Add(1)
			}
		}()
	}
	if r := run(t, servers[1].http, "connect", "ca", "rotate"); r.code != 0 || !strings.Contains(r.stdout, "New active root") {
		t.Fatalf("connect ca rotate: %+v", r)
	}
	retry.RunWith(&retry.Timer{Timeout: 60 * time.Second, Wait: 200 * time.Millisecond}, t, func(r *retry.R) {
		out := run(t, web.http, "connect", "ca", "roots").stdout
		lines := strings.Split(strings.TrimSpace(out), "\n")
		if len(lines) != 2 || strings.Contains(rootsBefore, strings.Fields(lines[1])[0]) {
			r.Fatalf("waiting for the old root to go:\n%s", out)
		}
	})
	n := ok.Load()
	retry.RunWith(&retry.Timer{Timeout: 10 * time.Second, Wait: 20 * time.Millisecond}, t, func(r *retry.R) {
		if ok.Load() < n+20 {
			r.Fatalf("%d requests on the new root alone", ok.Load()-n)
		}
	})
	cancel()
	wg.Wait()
	t.Logf("rotation: %d requests, %d failed", ok.Load(), failed.Load())
	if failed.Load() > 0 {
		t.Fatalf("%d requests failed during the rotation; first: %v", failed.Load(), firstErr.Load())
	}

	// A second instance of api on a server agent; then the only first
	// instance's agent dies.
	api2File := writeServiceFile(t, "api2.hcl", fmt.Sprintf("service {\n  id = \"api-2\"\n  name = \"api\"\n  port = %d\n  connect {\n    sidecar_service {}\n  }\n}\n", serveApp(t, "api-2")))
	if r := run(t, servers[2].http, "services", "register", api2File); r.code != 0 {
		t.Fatalf("register api-2: %+v", r)
	}
	seen := map[string]bool{}
	retry.RunWith(&retry.Timer{Timeout: 30 * time.Second, Wait: 10 * time.Millisecond}, t, func(r *retry.R) {
		body, err := fetch(upstream, "/")
		if err != nil {
			r.Fatal(err)
		}
		seen[strings.Fields(body)[0]] = true
		if !seen["api-1"] || !seen["api-2"] {
			r.Fatalf("instances seen: %v", seen)
		}
	})
	apiHost.kill()
	for i := range 30 {
		body, err := fetch(upstream, fmt.Sprintf("/failover/%d", i))
		if err != nil || !strings.HasPrefix(body, "api-2 ") {
			t.Fatalf("request %d after api-1's agent was killed: %q, %v", i, body, err)
		}
	}
	// The catalog learns of the failure and drops api-1 from the healthy
	// endpoints.
	retry.RunWith(&retry.Timer{Timeout: 30 * time.Second, Wait: 100 * time.Millisecond}, t, func(r *retry.R) {
		entries, _, err := web.client(t).Health().Connect("api", "", true, nil)
		if err != nil || len(entries) != 1 || entries[0].Node.Node != "server-2" {
			r.Fatalf("healthy endpoints of api: %d, %v", len(entries), err)
		}
	})
}
