package main

import (
	"bufio"
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
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"

	"github.com/trellismesh/trellis/api"
	"github.com/trellismesh/trellis/internal/retry"
	"github.com/trellismesh/trellis/internal/testutil"
)

// TestE2E_Traffic runs traffic management end to end with real processes:
// one server agent and two client agents of the built binary, the client
// service web on one, every backend on the other, each behind a sidecar.
// Config entries are written with `trellis config write` while web's
// upstream ports stay the same and nothing is restarted:
//
//   - a 50/50 split of api between subsets v1 and v2, over 1,000 requests;
//   - a path route that sends /admin to the service admin;
//   - a service-resolver redirect of db (tcp) to db-v2: new connections go
//     to db-v2, an established one stays on db; the same for store (http);
//   - retries hide a backend that answers 503 to every other request;
//   - an instance that answers only 500 is ejected, and comes back once it
//     heals;
//   - an L7 intention denies DELETE /users with 403 while GET /users passes;
//   - a gRPC call passes through, and a header route sends it elsewhere.
func TestE2E_Traffic(t *testing.T) {
	if testing.Short() {
		t.Skip("starts three agent processes")
	}
	t.Parallel()
	ports := testutil.FreePorts(t, 9+8)
	join := "127.0.0.1:" + strconv.Itoa(ports[1])
	const fastReports = `telemetry { mesh_metrics_interval = "300ms" }`
	server := startAgentProcArgs(t, "server", ports[0:3], nil, fastReports)
	front := startAgentProcArgs(t, "client-front", ports[3:6], []string{"-server=false", "-bootstrap=false", "-retry-join", join}, fastReports)
	back := startAgentProcArgs(t, "client-back", ports[6:9], []string{"-server=false", "-bootstrap=false", "-retry-join", join}, fastReports)
	retry.RunWith(&retry.Timer{Timeout: 60 * time.Second, Wait: 100 * time.Millisecond}, t, func(r *retry.R) {
		for _, p := range []*agentProc{server, front, back} {
			if r2 := run(t, p.http, "connect", "ca", "roots"); r2.code != 0 || !strings.Contains(r2.stdout, "true") {
				r.Fatalf("%s: %+v", p.name, r2)
			}
		}
	})

	// Protocols first, so that no sidecar starts on a wrong guess: http
	// for all, tcp for the databases, grpc for the gRPC services.
	configWrite(t, server.http, "defaults.hcl", `
Kind = "proxy-defaults"
Name = "global"
Config {
  protocol = "http"
}
`)
	for _, svc := range []string{"db", "db-v2"} {
		configWrite(t, server.http, svc+".hcl", fmt.Sprintf("kind = \"service-defaults\"\nname = %q\nprotocol = \"tcp\"\n", svc))
	}
	for _, svc := range []string{"grpc", "grpc-b"} {
		configWrite(t, server.http, svc+".hcl", fmt.Sprintf("kind = \"service-defaults\"\nname = %q\nprotocol = \"grpc\"\n", svc))
	}
	// web's outlier detection for pool: three failures eject for 2 s.
	configWrite(t, server.http, "web.hcl", `
kind = "service-defaults"
name = "web"
protocol = "http"
upstream_config {
  overrides {
    name = "pool"
    passive_health_check {
      interval = "500ms"
      max_failures = 3
      base_ejection_time = "2s"
      max_ejection_percent = 50
    }
  }
}
`)

	// Backends, all on client-back.
	var poolBadHealed atomic.Bool
	var flakyCount atomic.Int64
	backends := []struct {
		id, name string
		port     int
		meta     string
	}{
		{"api-v1", "api", serveApp(t, "api-v1"), `version = "v1"`},
		{"api-v2", "api", serveApp(t, "api-v2"), `version = "v2"`},
		{"admin", "admin", serveApp(t, "admin"), ""},
		{"store", "store", serveApp(t, "store"), ""},
		{"store-v2", "store-v2", serveApp(t, "store-v2"), ""},
		{"users", "users", serveApp(t, "users"), ""},
		{"db", "db", serveLines(t, "db"), ""},
		{"db-v2", "db-v2", serveLines(t, "db-v2"), ""},
		{"flaky", "flaky", serveHandler(t, func(w http.ResponseWriter, r *http.Request) {
			if flakyCount.Add(1)%2 == 0 {
				http.Error(w, "flaky fails this one", http.StatusServiceUnavailable)
				return
			}
			fmt.Fprintf(w, "flaky %s", r.URL.Path)
		}), ""},
		{"pool-good", "pool", serveApp(t, "pool-good"), ""},
		{"pool-bad", "pool", serveHandler(t, func(w http.ResponseWriter, r *http.Request) {
			if !poolBadHealed.Load() {
				http.Error(w, "pool-bad is broken", http.StatusInternalServerError)
				return
			}
			fmt.Fprintf(w, "pool-bad %s", r.URL.Path)
		}), ""},
		{"grpc", "grpc", serveGRPCHealth(t, "a"), ""},
		{"grpc-b", "grpc-b", serveGRPCHealth(t, "b"), ""},
	}
	for _, b := range backends {
		meta := ""
		if b.meta != "" {
			meta = "\n  meta {\n    " + b.meta + "\n  }"
		}
		f := writeServiceFile(t, b.id+".hcl", fmt.Sprintf("service {\n  id = %q\n  name = %q\n  port = %d%s\n  connect {\n    sidecar_service {}\n  }\n}\n", b.id, b.name, b.port, meta))
		if r := run(t, back.http, "services", "register", f); r.code != 0 {
			t.Fatalf("register %s: %+v", b.id, r)
		}
	}
	upstreams := []string{"api", "store", "db", "flaky", "pool", "users", "grpc"}
	up := map[string]string{}
	var list []string
	for i, name := range upstreams {
		up[name] = "127.0.0.1:" + strconv.Itoa(ports[9+i])
		list = append(list, fmt.Sprintf("{ destination_name = %q, local_bind_port = %d }", name, ports[9+i]))
	}
	webFile := writeServiceFile(t, "web.hcl", fmt.Sprintf(`service {
  name = "web"
  port = %d
  connect {
    sidecar_service {
      proxy {
        upstreams = [%s]
      }
    }
  }
}
`, serveApp(t, "web"), strings.Join(list, ", ")))
	if r := run(t, front.http, "services", "register", webFile); r.code != 0 {
		t.Fatalf("register web: %+v", r)
	}
	hc := &http.Client{Timeout: 10 * time.Second}
	get := func(upstream, method, path string) (int, string, error) {
		req, err := http.NewRequest(method, "http://"+up[upstream]+path, nil)
		if err != nil {
			return 0, "", err
		}
		resp, err := hc.Do(req)
		if err != nil {
			return 0, "", err
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body), err
	}
	for _, name := range []string{"api", "store", "users", "flaky"} {
		retry.RunWith(&retry.Timer{Timeout: 60 * time.Second, Wait: 100 * time.Millisecond}, t, func(r *retry.R) {
			if code, body, err := get(name, http.MethodGet, "/ready"); err != nil || code != 200 {
				r.Fatalf("%s through web's upstream: %d %q %v", name, code, body, err)
			}
		})
	}

	t.Run("split", func(t *testing.T) {
		configWrite(t, server.http, "api-resolver.hcl", `
kind = "service-resolver"
name = "api"
default_subset = "v1"
subsets = {
  v1 = { filter = "Service.Meta.version == v1" }
  v2 = { filter = "Service.Meta.version == v2" }
}
`)
		configWrite(t, server.http, "api-splitter.hcl", `
Kind = "service-splitter"
Name = "api"
Splits = [
  { Weight = 50, ServiceSubset = "v1" },
  { Weight = 50, ServiceSubset = "v2" },
]
`)
		// The split is in place once both subsets answer.
		seen := map[string]bool{}
		retry.RunWith(&retry.Timer{Timeout: 30 * time.Second, Wait: 10 * time.Millisecond}, t, func(r *retry.R) {
			_, body, err := get("api", http.MethodGet, "/")
			if err != nil {
				r.Fatal(err)
			}
			seen[strings.Fields(body + " ?")[0]] = true
			if !seen["api-v1"] || !seen["api-v2"] {
				r.Fatalf("seen %v", seen)
			}
		})
		counts := map[string]int{}
		for range 1000 {
			code, body, err := get("api", http.MethodGet, "/split")
			if err != nil || code != 200 {
				t.Fatalf("split request: %d %q %v", code, body, err)
			}
			counts[strings.Fields(body)[0]]++
		}
		t.Logf("split over 1000 requests: %v", counts)
		if v1 := counts["api-v1"]; v1 < 450 || v1 > 550 || counts["api-v1"]+counts["api-v2"] != 1000 {
			t.Fatalf("50/50 split landed %v", counts)
		}
		out := run(t, front.http, "connect", "chain", "api")
		if out.code != 0 || !strings.Contains(out.stdout, "v1.api") || !strings.Contains(out.stdout, "v2.api") {
			t.Errorf("connect chain api: %+v", out)
		}
	})

	t.Run("route", func(t *testing.T) {
		configWrite(t, server.http, "api-router.hcl", `
kind = "service-router"
name = "api"
routes {
  match {
    http {
      path_prefix = "/admin"
    }
  }
  destination {
    service = "admin"
  }
}
`)
		retry.RunWith(&retry.Timer{Timeout: 30 * time.Second, Wait: 20 * time.Millisecond}, t, func(r *retry.R) {
			if _, body, err := get("api", http.MethodGet, "/admin/users"); err != nil || body != "admin /admin/users" {
				r.Fatalf("/admin: %q %v", body, err)
			}
		})
		if _, body, err := get("api", http.MethodGet, "/other"); err != nil || !strings.HasPrefix(body, "api-v") {
			t.Fatalf("a path no route matches: %q %v", body, err)
		}
	})

	t.Run("redirect-tcp", func(t *testing.T) {
		old, err := net.DialTimeout("tcp", up["db"], 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer old.Close()
		oldR := bufio.NewReader(old)
		if got := askLine(t, old, oldR); got != "db" {
			t.Fatalf("before the redirect: %q", got)
		}
		configWrite(t, server.http, "db-resolver.hcl", "kind = \"service-resolver\"\nname = \"db\"\nredirect {\n  service = \"db-v2\"\n}\n")
		retry.RunWith(&retry.Timer{Timeout: 30 * time.Second, Wait: 20 * time.Millisecond}, t, func(r *retry.R) {
			c, err := net.DialTimeout("tcp", up["db"], 5*time.Second)
			if err != nil {
				r.Fatal(err)
			}
			defer c.Close()
			if got := askLine(t, c, bufio.NewReader(c)); got != "db-v2" {
				r.Fatalf("a new connection after the redirect reached %q", got)
			}
		})
		// The established connection drains: it still talks to db.
		if got := askLine(t, old, oldR); got != "db" {
			t.Fatalf("the established connection after the redirect: %q", got)
		}
	})

	t.Run("redirect-http", func(t *testing.T) {
		if _, body, err := get("store", http.MethodGet, "/x"); err != nil || body != "store /x" {
			t.Fatalf("before the redirect: %q %v", body, err)
		}
		configWrite(t, server.http, "store-resolver.hcl", "Kind = \"service-resolver\"\nName = \"store\"\nRedirect {\n  Service = \"store-v2\"\n}\n")
		retry.RunWith(&retry.Timer{Timeout: 30 * time.Second, Wait: 20 * time.Millisecond}, t, func(r *retry.R) {
			if _, body, err := get("store", http.MethodGet, "/x"); err != nil || body != "store-v2 /x" {
				r.Fatalf("after the redirect: %q %v", body, err)
			}
		})
	})

	t.Run("retries", func(t *testing.T) {
		configWrite(t, server.http, "flaky-router.hcl", `
kind = "service-router"
name = "flaky"
routes {
  match {
    http {
      path_prefix = "/"
    }
  }
  destination {
    num_retries = 3
    retry_on_status_codes = [503]
  }
}
`)
		retry.RunWith(&retry.Timer{Timeout: 30 * time.Second, Wait: 20 * time.Millisecond}, t, func(r *retry.R) {
			for i := range 100 {
				if code, body, err := get("flaky", http.MethodGet, "/r"); err != nil || code != 200 {
					r.Fatalf("request %d of 100: %d %q %v", i, code, body, err)
				}
			}
		})
	})

	t.Run("outlier", func(t *testing.T) {
		// Once pool-bad is ejected, every request lands on pool-good, and
		// web's proxy-config says so.
		cl, err := api.NewClient(&api.Config{Address: front.http})
		if err != nil {
			t.Fatal(err)
		}
		retry.RunWith(&retry.Timer{Timeout: 30 * time.Second, Wait: 10 * time.Millisecond}, t, func(r *retry.R) {
			for i := range 20 {
				if code, body, err := get("pool", http.MethodGet, "/p"); err != nil || code != 200 || body != "pool-good /p" {
					r.Fatalf("request %d: %d %q %v", i, code, body, err)
				}
			}
			pc, _, err := cl.Agent().ProxyConfig("web-sidecar-proxy", nil)
			if err != nil {
				r.Fatal(err)
			}
			var ejected []string
			for _, u := range pc.Proxy.Upstreams {
				for _, tg := range u.Targets {
					for _, in := range tg.Instances {
						if u.DestinationName == "pool" && in.Ejected && time.Until(in.EjectedUntil) > 0 {
							ejected = append(ejected, in.Addr)
						}
					}
				}
			}
			if len(ejected) != 1 {
				r.Fatalf("proxy-config shows %d ejected instances of pool, want 1 (pool-bad): %+v", len(ejected), pc.Proxy.Upstreams)
			}
		})
		poolBadHealed.Store(true)
		retry.RunWith(&retry.Timer{Timeout: 30 * time.Second, Wait: 10 * time.Millisecond}, t, func(r *retry.R) {
			if _, body, err := get("pool", http.MethodGet, "/p"); err != nil || body != "pool-bad /p" {
				r.Fatalf("pool-bad not back yet: %q %v", body, err)
			}
		})
	})

	t.Run("l7-intention", func(t *testing.T) {
		configWrite(t, server.http, "users-intentions.hcl", `
Kind = "service-intentions"
Name = "users"
Sources = [{
  Name = "web"
  Permissions = [
    { Action = "deny", HTTP = { PathPrefix = "/users", Methods = ["DELETE"] } },
    { Action = "allow", HTTP = { PathPrefix = "/users" } },
  ]
}]
`)
		retry.RunWith(&retry.Timer{Timeout: 30 * time.Second, Wait: 20 * time.Millisecond}, t, func(r *retry.R) {
			code, body, err := get("users", http.MethodDelete, "/users/7")
			if err != nil || code != http.StatusForbidden || !strings.Contains(body, "mesh") {
				r.Fatalf("DELETE /users/7: %d %q %v", code, body, err)
			}
		})
		if code, body, err := get("users", http.MethodGet, "/users/7"); err != nil || code != 200 || body != "users /users/7" {
			t.Fatalf("GET /users/7: %d %q %v", code, body, err)
		}
		// No permission matches /other: the default policy decides (allow
		// in -dev), as in Consul.
		if code, body, err := get("users", http.MethodGet, "/other"); err != nil || code != 200 || body != "users /other" {
			t.Fatalf("GET /other (no permission matches: the default policy, allow): %d %q %v", code, body, err)
		}
	})

	t.Run("metrics", func(t *testing.T) {
		// Per-request telemetry of both sides, as Prometheus scrapes it.
		scrape := func(a *agentProc) string {
			resp, err := http.Get("http://" + a.http + "/v1/agent/metrics?format=prometheus")
			if err != nil {
				return err.Error()
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			return string(b)
		}
		has := func(text, metric string, labels ...string) bool {
			for _, line := range strings.Split(text, "\n") {
				if !strings.HasPrefix(line, metric+"{") {
					continue
				}
				all := true
				for _, l := range labels {
					all = all && strings.Contains(line, l)
				}
				if all {
					return true
				}
			}
			return false
		}
		retry.RunWith(&retry.Timer{Timeout: 15 * time.Second, Wait: 200 * time.Millisecond}, t, func(r *retry.R) {
			out := scrape(front)
			if !has(out, "trellis_proxy_http_upstream_requests_total", `upstream="api"`, `class="2xx"`, `route=`) {
				var lines []string
				for _, l := range strings.Split(out, "\n") {
					if strings.Contains(l, "proxy_http") {
						lines = append(lines, l)
					}
				}
				r.Fatalf("no request count of upstream api by route and class in:\n%s", strings.Join(lines, "\n"))
			}
			if !has(out, "trellis_proxy_http_upstream_latency_ms", `upstream="api"`, `quantile="0.99"`) {
				r.Fatal("no p99 latency of upstream api")
			}
			if !has(scrape(back), "trellis_proxy_http_inbound_denied_total", `source="web"`) {
				r.Fatal("no count of requests denied by intentions at users")
			}
		})
	})

	t.Run("golden", func(t *testing.T) {
		// The golden signals of the edges, both sides, merged by the
		// leader from each agent's reports, asked through the caller's
		// agent: flaky's edge has the 503s its proxy saw (retried by web's,
		// so the outbound side counts successes), api's the split's traffic.
		retry.RunWith(&retry.Timer{Timeout: 15 * time.Second, Wait: 200 * time.Millisecond}, t, func(r *retry.R) {
			cl, err := api.NewClient(&api.Config{Address: front.http})
			if err != nil {
				r.Fatal(err)
			}
			m, err := cl.Connect().Metrics("", 5*time.Minute, nil)
			if err != nil {
				r.Fatal(err)
			}
			edges := map[string]api.MeshEdge{}
			for _, e := range m.Edges {
				edges[e.Source+">"+e.Destination+"/"+e.Protocol] = e
			}
			fl, ok := edges["web>flaky/http"]
			if !ok || fl.Inbound == nil || fl.Outbound == nil {
				r.Fatalf("web → flaky: %+v (edges %v)", fl, m.Edges)
			}
			if fl.Inbound.Failures == 0 || fl.Inbound.SuccessRate >= 1 || fl.Outbound.Requests < 100 || fl.Outbound.P99Ms <= 0 {
				r.Fatalf("web → flaky: outbound %+v, inbound %+v", *fl.Outbound, *fl.Inbound)
			}
			ap, ok := edges["web>api/http"]
			if !ok || ap.Outbound == nil || ap.Outbound.Requests < 1000 || ap.Unit != "requests" {
				r.Fatalf("web → api: %+v", ap)
			}
			if db, ok := edges["web>db/tcp"]; !ok || db.Unit != "connections" || db.Outbound == nil {
				r.Fatalf("web → db: %+v", db)
			}
		})
	})

	t.Run("grpc", func(t *testing.T) {
		conn, err := grpc.NewClient(up["grpc"], grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		hcl := healthpb.NewHealthClient(conn)
		check := func(ctx context.Context, service string) (healthpb.HealthCheckResponse_ServingStatus, error) {
			ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			defer cancel()
			resp, err := hcl.Check(ctx, &healthpb.HealthCheckRequest{Service: service})
			if err != nil {
				return 0, err
			}
			return resp.Status, nil
		}
		retry.RunWith(&retry.Timer{Timeout: 30 * time.Second, Wait: 50 * time.Millisecond}, t, func(r *retry.R) {
			if st, err := check(t.Context(), "a"); err != nil || st != healthpb.HealthCheckResponse_SERVING {
				r.Fatalf("gRPC health check through the mesh: %v %v", st, err)
			}
		})
		configWrite(t, server.http, "grpc-router.hcl", `
kind = "service-router"
name = "grpc"
routes {
  match {
    http {
      header = [{ name = "x-version", exact = "b" }]
    }
  }
  destination {
    service = "grpc-b"
  }
}
`)
		retry.RunWith(&retry.Timer{Timeout: 30 * time.Second, Wait: 50 * time.Millisecond}, t, func(r *retry.R) {
			ctx := metadata.AppendToOutgoingContext(t.Context(), "x-version", "b")
			if st, err := check(ctx, "b"); err != nil || st != healthpb.HealthCheckResponse_SERVING {
				r.Fatalf("gRPC call routed by header to grpc-b: %v %v", st, err)
			}
		})
		if st, err := check(t.Context(), "a"); err != nil || st != healthpb.HealthCheckResponse_SERVING {
			t.Fatalf("gRPC call without the header: %v %v", st, err)
		}
	})
}

// configWrite writes a config entry file and applies it with the CLI.
func configWrite(t *testing.T, httpAddr, name, content string) {
	t.Helper()
	f := writeServiceFile(t, name, content)
	if r := run(t, httpAddr, "config", "write", f); r.code != 0 {
		t.Fatalf("config write %s: %+v", name, r)
	}
}

// serveHandler runs an HTTP server in this process on a free port.
func serveHandler(t *testing.T, h http.HandlerFunc) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().(*net.TCPAddr).Port
}

// serveLines runs a TCP server that answers each line it reads with its
// name, for as long as the connection lasts.
func serveLines(t *testing.T, name string) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				sc := bufio.NewScanner(c)
				for sc.Scan() {
					if _, err := fmt.Fprintln(c, name); err != nil {
						return
					}
				}
			}()
		}
	}()
	return ln.Addr().(*net.TCPAddr).Port
}

// askLine sends a line and reads the answer.
func askLine(t *testing.T, c net.Conn, r *bufio.Reader) string {
	t.Helper()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := fmt.Fprintln(c, "who"); err != nil {
		return "write: " + err.Error()
	}
	line, err := r.ReadString('\n')
	if err != nil {
		return "read: " + err.Error()
	}
	return strings.TrimSpace(line)
}

// serveGRPCHealth runs a gRPC server (h2c) whose health service knows only
// the service name known, as SERVING.
func serveGRPCHealth(t *testing.T, known string) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := health.NewServer()
	hs.SetServingStatus(known, healthpb.HealthCheckResponse_SERVING)
	gs := grpc.NewServer()
	healthpb.RegisterHealthServer(gs, hs)
	go gs.Serve(ln)
	t.Cleanup(gs.Stop)
	return ln.Addr().(*net.TCPAddr).Port
}

// startAgentProcArgs starts the built binary as a -dev agent with extra
// flags (a lone dev server when extra is empty) and extra HCL.
func startAgentProcArgs(t *testing.T, name string, ports []int, extra []string, hcl string) *agentProc {
	t.Helper()
	dir := t.TempDir()
	cfgFile := filepath.Join(dir, "agent.hcl")
	if err := os.WriteFile(cfgFile, []byte(hcl), 0o600); err != nil {
		t.Fatal(err)
	}
	p := &agentProc{name: name, http: "127.0.0.1:" + strconv.Itoa(ports[0]), done: make(chan struct{})}
	args := append([]string{"agent", "-dev", "-node", name, "-bind", "127.0.0.1", "-client", "127.0.0.1", "-log-level", "debug",
		"-data-dir", filepath.Join(dir, "data"), "-dns-port", "-1", "-config-file", cfgFile,
		"-http-port", strconv.Itoa(ports[0]), "-serf-lan-port", strconv.Itoa(ports[1]), "-server-port", strconv.Itoa(ports[2])}, extra...)
	p.cmd = exec.Command(trellis(t), args...)
	p.cmd.Stdout, p.cmd.Stderr = p, p
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		if p.cmd.Process != nil {
			_ = p.cmd.Process.Signal(syscall.SIGKILL)
			<-p.done
		}
		if t.Failed() {
			t.Logf("--- log of %s ---\n%s", name, p.log())
		}
	})
	return p
}
