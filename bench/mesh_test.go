package bench

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	consulapi "github.com/hashicorp/consul/api"

	"github.com/trellismesh/trellis/internal/retry"
	"github.com/trellismesh/trellis/internal/testutil"
)

// Environment of the mesh benchmarks.
const (
	// fortioEnv names the fortio binary; make bench sets it. When unset the
	// benchmarks look for bin/tools/fortio in the repository.
	fortioEnv = "TRELLIS_BENCH_FORTIO"
	// repeatsEnv overrides meshRepeats, the number of direct/mesh pairs
	// per figure.
	repeatsEnv = "TRELLIS_BENCH_MESH_REPEATS"
	// durationEnv overrides loadDuration, the length of each fortio run
	// (a Go duration).
	durationEnv = "TRELLIS_BENCH_MESH_DURATION"
	// profileEnv, when set to a directory, makes BenchmarkMesh save a CPU
	// profile of both agents taken during the first mesh run of each
	// sub-benchmark (<dir>/<sub-benchmark>-<agent>.pprof).
	profileEnv = "TRELLIS_BENCH_PROFILE_DIR"
	// agentEnvEnv adds space-separated VAR=value pairs to the agents'
	// environment (for example GOMAXPROCS=1 or GODEBUG settings), to try a
	// runtime setting without rebuilding.
	agentEnvEnv = "TRELLIS_BENCH_AGENT_ENV"
	// dumpLogsEnv, when set to a directory, makes the agents' output land
	// in <dir>/<agent>.log when the benchmark ends.
	dumpLogsEnv = "TRELLIS_BENCH_DUMP_LOGS"
	// helperEnv set to "sink" makes the test binary a TCP sink (runSink)
	// instead of running tests; "tcp-relay" and "http-proxy" make it one of
	// BenchmarkRelayBaseline's relays, to helperTargetEnv.
	helperEnv = "TRELLIS_BENCH_HELPER"
	// helperTargetEnv is the address a relay helper forwards to.
	helperTargetEnv = "TRELLIS_BENCH_HELPER_TARGET"
)

const (
	meshRepeats    = 3
	loadDuration   = 10 * time.Second
	loadConns      = 16
	streamDuration = 5 * time.Second
	streamMaxBytes = 8 << 30
	streamBufSize  = 256 << 10
)

// percentiles are the latency percentiles asked of fortio, as it spells
// them; metric names drop the dot (p999).
var percentiles = []string{"50", "90", "99", "99.9"}

func TestMain(m *testing.M) {
	switch os.Getenv(helperEnv) {
	case "sink":
		os.Exit(runSink())
	case "tcp-relay":
		os.Exit(runTCPRelay(os.Getenv(helperTargetEnv)))
	case "http-proxy":
		os.Exit(runHTTPProxy(os.Getenv(helperTargetEnv)))
	}
	os.Exit(m.Run())
}

// BenchmarkMesh measures the mesh's L4 data path against a direct
// connection, on one machine in one run, with fortio (its own process) as
// the load generator:
//
//	direct: fortio ──────────────────────────────────────────────────────► fortio server
//	mesh:   fortio ─► upstream listener (agent c1) ─► mTLS/HTTP2 ─► public listener (agent s1) ─► fortio server
//
// Agent s1 is a dev server hosting service api (the fortio server) and a
// sink service (a helper process that counts bytes), each with a sidecar;
// agent c1 is a client joined to it, hosting service load, whose sidecar has
// upstreams to api and sink. Every party is its own process.
//
// Sub-benchmarks, each repeating direct and mesh runs alternately
// (meshRepeats pairs, ABBA order) and reporting medians:
//
//	qps=1000, qps=5000  HTTP/1.1 keep-alive, 16 connections, fixed rate
//	qps=max             the same as fast as it goes (fortio -qps 0)
//	newconn/qps=200     a new connection per request (fortio -keepalive=false)
//	tcp-stream          one TCP connection pushing bytes for streamDuration
//
// Latency metrics are p50, p90, p99 and p99.9 in ms, -direct, -mesh and
// -added (median mesh minus median direct); rps-direct and rps-mesh are
// the achieved requests/s, rps-ratio mesh over direct; agents-cpu-us/req is
// the CPU time both agents spent per request of a mesh run (from /proc, so
// it holds also when other work shares the machine), agents-reads/req and
// agents-writes/req their read- and write-like system calls per request
// (from /proc/PID/io, which counts read(2) and write(2) but not sendto(2):
// the MSG_MORE write of a stream's last bytes is not in it), and agents-sleeps/req the times their threads went
// to sleep per request (voluntary context switches, from
// /proc/PID/task/*/status). tcp-stream reports mbps-direct and mbps-mesh
// in MB/s (10^6 bytes), throughput-ratio, and
// agents-cpu-ms/MB. Each run logs its figures and how busy the machine was
// with work other than the benchmark's.
//
// TRELLIS_BENCH_MESH_REPEATS and TRELLIS_BENCH_MESH_DURATION change the
// number of pairs and the length of a fortio run; with
// TRELLIS_BENCH_PROFILE_DIR set, each sub-benchmark ends with one more mesh
// run, outside the figures, during which both agents are CPU-profiled;
// TRELLIS_BENCH_AGENT_ENV adds to the agents' environment, and
// TRELLIS_BENCH_DUMP_LOGS keeps their output.
func BenchmarkMesh(b *testing.B) {
	fortio := fortioBinary(b)
	m := startMesh(b, fortio)
	repeats := envInt(b, repeatsEnv, meshRepeats)
	dur := envDuration(b, durationEnv, loadDuration)

	for _, sc := range []struct {
		name    string
		qps     int
		newConn bool
	}{
		{"qps=1000", 1000, false},
		{"qps=5000", 5000, false},
		{"qps=max", 0, false},
		{"newconn/qps=200", 200, true},
	} {
		b.Run(sc.name, func(b *testing.B) {
			comparePaths(b, m, fortio, m.meshURL, sc.qps, sc.newConn, repeats, dur)
		})
	}

	b.Run("tcp-stream", func(b *testing.B) {
		compareStreams(b, m, repeats)
	})
}

// compareStreams measures one TCP stream's throughput to the sink directly
// and through m.sinkUpstream alternately (repeats pairs) and reports the
// MB/s of each, their ratio, and the agents' CPU per MB.
func compareStreams(b *testing.B, m *mesh, repeats int) {
	var direct, mesh, cpuPerMB []float64
	for i := range b.N * repeats {
		for _, path := range pairOrder(i) {
			addr := m.sinkAddr
			if path == "mesh" {
				addr = m.sinkUpstream
			}
			mark := m.markCPU(b)
			mb, secs := streamThroughput(b, addr, streamDuration)
			cpu := m.cpuSince(b, mark, 0)
			b.Logf("%s %-6s run %d: %.0f MB/s; %s", b.Name(), path, i+1, mb/secs, cpu)
			if path == "mesh" {
				mesh = append(mesh, mb/secs)
				cpuPerMB = append(cpuPerMB, 1e3*cpu.agents.Seconds()/mb)
			} else {
				direct = append(direct, mb/secs)
			}
		}
	}
	d, me := median(direct), median(mesh)
	b.ReportMetric(d, "mbps-direct")
	b.ReportMetric(me, "mbps-mesh")
	b.ReportMetric(me/d, "throughput-ratio")
	b.ReportMetric(median(cpuPerMB), "agents-cpu-ms/MB")
	if m.profileDir != "" {
		wait := m.profile(b, streamDuration)
		streamThroughput(b, m.sinkUpstream, streamDuration)
		wait()
	}
}

// comparePaths runs fortio against the direct URL and meshURL alternately
// (repeats pairs) and reports the latency, rate and CPU figures.
func comparePaths(b *testing.B, m *mesh, fortio, meshURL string, qps int, newConn bool, repeats int, dur time.Duration) {
	var direct, mesh []*fortioResult
	var cpuPerReq []float64                 // the agents' CPU µs per request, mesh runs
	var readsPerReq, writesPerReq []float64 // the agents' system calls per request, likewise
	var sleepsPerReq []float64              // the agents' threads' waits per request, likewise
	for i := range b.N * repeats {
		for _, path := range pairOrder(i) {
			url := m.directURL
			if path == "mesh" {
				url = meshURL
			}
			mark := m.markCPU(b)
			res := runFortio(b, fortio, url, qps, newConn, dur)
			cpu := m.cpuSince(b, mark, res.cpu)
			if qps > 0 && res.ActualQPS < 0.95*float64(qps) {
				b.Logf("%s %s: only %.0f of %d requests/s", b.Name(), path, res.ActualQPS, qps)
			}
			b.Logf("%s %-6s run %d: %s; %s", b.Name(), path, i+1, res, cpu)
			if path == "mesh" {
				mesh = append(mesh, res)
				n := float64(res.DurationHistogram.Count)
				cpuPerReq = append(cpuPerReq, 1e6*cpu.agents.Seconds()/n)
				readsPerReq = append(readsPerReq, float64(cpu.reads)/n)
				writesPerReq = append(writesPerReq, float64(cpu.writes)/n)
				sleepsPerReq = append(sleepsPerReq, float64(cpu.sleeps)/n)
			} else {
				direct = append(direct, res)
			}
		}
	}
	reportLatencies(b, direct, mesh)
	b.ReportMetric(median(cpuPerReq), "agents-cpu-us/req")
	// CPU seconds of both agents (both proxies and all else they do) per
	// 1,000 requests.
	b.ReportMetric(median(cpuPerReq)/1000, "agents-cpu-s/1k-req")
	// Read- and write-like system calls of both agents per request: the
	// loopback hops make system calls most of a proxy's CPU.
	b.ReportMetric(median(readsPerReq), "agents-reads/req")
	b.ReportMetric(median(writesPerReq), "agents-writes/req")
	// Times the agents' threads went to sleep per request: on a virtual
	// machine each wake-up that follows is the dearest part of a hop.
	b.ReportMetric(median(sleepsPerReq), "agents-sleeps/req")
	if newConn {
		b.ReportMetric(1000*(median(percentileOf(mesh, "50"))-median(percentileOf(direct, "50"))), "newconn-p50-added-ms")
	}
	if m.profileDir != "" {
		// One more mesh run, profiled, outside the figures.
		wait := m.profile(b, dur)
		runFortio(b, fortio, meshURL, qps, newConn, dur)
		wait()
	}
}

// BenchmarkMeshL7 measures the L7 (HTTP-aware) data path the same way as
// BenchmarkMesh's L4 figures, in the same setup: service apihttp is the same
// fortio server with service-defaults protocol http, so requests go
//
//	fortio ─HTTP/1.1─► upstream listener (c1) ─HTTP/2 over mTLS─► public listener (s1) ─HTTP/1.1─► fortio server
//
// with one pooled HTTP/2 connection between the proxies. Sub-benchmarks:
// qps=1000, qps=5000 and qps=max (16 connections), and qps=max/features,
// the maximum rate with a service-router (three routes), a splitter and
// retries enabled, to price them: apifeat (with them) against apihttp (the
// same server without), in alternating pairs (features-cost-pct).
func BenchmarkMeshL7(b *testing.B) {
	fortio := fortioBinary(b)
	m := startMesh(b, fortio)
	repeats := envInt(b, repeatsEnv, meshRepeats)
	dur := envDuration(b, durationEnv, loadDuration)
	for _, sc := range []struct {
		name string
		qps  int
	}{{"qps=1000", 1000}, {"qps=5000", 5000}, {"qps=max", 0}} {
		b.Run(sc.name, func(b *testing.B) {
			comparePaths(b, m, fortio, m.l7URL, sc.qps, false, repeats, dur)
		})
	}
	b.Run("qps=max/features", func(b *testing.B) {
		c := m.agents[0].client(b)
		for _, e := range []consulapi.ConfigEntry{
			&consulapi.ServiceResolverConfigEntry{Kind: consulapi.ServiceResolver, Name: "apifeat",
				Subsets: map[string]consulapi.ServiceResolverSubset{"all": {Filter: `Service.Service == "apifeat"`}}},
			&consulapi.ServiceSplitterConfigEntry{Kind: consulapi.ServiceSplitter, Name: "apifeat",
				Splits: []consulapi.ServiceSplit{{Weight: 50, ServiceSubset: "all"}, {Weight: 50}}},
			&consulapi.ServiceRouterConfigEntry{Kind: consulapi.ServiceRouter, Name: "apifeat", Routes: []consulapi.ServiceRoute{
				{Match: &consulapi.ServiceRouteMatch{HTTP: &consulapi.ServiceRouteHTTPMatch{PathPrefix: "/admin"}}},
				{Match: &consulapi.ServiceRouteMatch{HTTP: &consulapi.ServiceRouteHTTPMatch{Header: []consulapi.ServiceRouteHTTPMatchHeader{{Name: "x-debug", Present: true}}}}},
				{Match: &consulapi.ServiceRouteMatch{HTTP: &consulapi.ServiceRouteHTTPMatch{PathPrefix: "/"}},
					Destination: &consulapi.ServiceRouteDestination{NumRetries: 2, RetryOnConnectFailure: true, RetryOnStatusCodes: []uint32{503}}},
			}},
		} {
			if _, _, err := c.ConfigEntries().Set(e, nil); err != nil {
				b.Fatalf("write %s: %v", e.GetKind(), err)
			}
		}
		defer func() {
			for _, k := range []string{consulapi.ServiceRouter, consulapi.ServiceSplitter, consulapi.ServiceResolver} {
				if _, err := c.ConfigEntries().Delete(k, "apifeat", nil); err != nil {
					b.Errorf("delete %s: %v", k, err)
				}
			}
		}()
		waitRouted(b, m.agents[1], "apifeat", time.Minute)
		compareFeatures(b, m, fortio, repeats, dur)
	})
}

// waitRouted waits until the agent's proxy for upstream service follows a
// discovery chain with a router and a splitter.
func waitRouted(tb testing.TB, a *proc, service string, timeout time.Duration) {
	tb.Helper()
	url := "http://" + a.http + "/v1/agent/connect/proxy-config/load-sidecar-proxy"
	retry.RunWith(&retry.Timer{Timeout: timeout, Wait: 50 * time.Millisecond}, tb, func(r *retry.R) {
		resp, err := http.Get(url)
		if err != nil {
			r.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		var cfg struct {
			Proxy struct {
				Upstreams []struct {
					DestinationName string
					Chain           *struct{ StartNode string }
					Targets         []json.RawMessage
				}
			}
		}
		if err := json.Unmarshal(body, &cfg); err != nil {
			r.Fatalf("proxy-config: %v: %s", err, body)
		}
		for _, u := range cfg.Proxy.Upstreams {
			// The router starts the chain; the split leads to two targets.
			if u.DestinationName == service && u.Chain != nil && strings.HasPrefix(u.Chain.StartNode, "router:") && len(u.Targets) >= 2 {
				return
			}
		}
		r.Fatalf("upstream %s does not follow its router yet: %s", service, body)
	})
}

// compareFeatures runs the maximum rate through apihttp (no router,
// splitter or retries) and apifeat (all three) in alternating pairs, so
// that the machine's drift weighs on both alike, and reports the features'
// cost: features-rps-ratio is the median of each pair's ratio, and
// features-cost-pct 100 × (1 − that).
func compareFeatures(b *testing.B, m *mesh, fortio string, repeats int, dur time.Duration) {
	var plain, feat, ratios, cpuPlain, cpuFeat []float64
	for i := range b.N * repeats {
		order := []string{"plain", "features"}
		if i%2 == 1 {
			order = []string{"features", "plain"}
		}
		for _, path := range order {
			url := m.l7URL
			if path == "features" {
				url = m.featURL
			}
			mark := m.markCPU(b)
			res := runFortio(b, fortio, url, 0, false, dur)
			cpu := m.cpuSince(b, mark, res.cpu)
			b.Logf("%s %-8s run %d: %s; %s", b.Name(), path, i+1, res, cpu)
			perReq := 1e6 * cpu.agents.Seconds() / float64(res.DurationHistogram.Count)
			if path == "features" {
				feat, cpuFeat = append(feat, res.ActualQPS), append(cpuFeat, perReq)
			} else {
				plain, cpuPlain = append(plain, res.ActualQPS), append(cpuPlain, perReq)
			}
		}
		ratios = append(ratios, feat[i]/plain[i])
	}
	r := median(ratios)
	b.ReportMetric(median(plain), "rps-plain")
	b.ReportMetric(median(feat), "rps-features")
	b.ReportMetric(r, "features-rps-ratio")
	b.ReportMetric(100*(1-r), "features-cost-pct")
	b.ReportMetric(median(cpuPlain), "agents-cpu-us/req-plain")
	b.ReportMetric(median(cpuFeat), "agents-cpu-us/req-features")
}

// waitL7 waits until a request through url takes the L7 path: the outbound
// proxy starts a W3C trace on a request that has none, and fortio's /debug
// page echoes the request's headers.
func waitL7(tb testing.TB, url string, timeout time.Duration) {
	tb.Helper()
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	retry.RunWith(&retry.Timer{Timeout: timeout, Wait: 50 * time.Millisecond}, tb, func(r *retry.R) {
		resp, err := hc.Get(url + "debug")
		if err != nil {
			r.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || !strings.Contains(strings.ToLower(string(body)), "traceparent") {
			r.Fatalf("GET %sdebug: %s, no traceparent: not on the L7 path yet", url, resp.Status)
		}
	})
}

// pairOrder alternates which path goes first, so that drift over the run
// (other work on the machine, the agents' heaps) weighs on both alike.
func pairOrder(i int) []string {
	if i%2 == 1 {
		return []string{"mesh", "direct"}
	}
	return []string{"direct", "mesh"}
}

// BenchmarkMeshSidecarRSS reports the resident memory of a dev agent with no
// service (rss-0-sidecars-MB), then with 100 services registered through the
// agent API, each with a sidecar and an upstream (to svc-000; svc-000's to
// svc-001), once all 100 proxies run and two upstreams have carried a
// request (rss-100-sidecars-MB), and once a request has gone through every
// upstream, so that each proxy holds a pooled tunnel (rss-100-sidecars-active-MB).
// MB is 10^6 bytes. Each reading is taken once the agent is idle: sampled every
// 2 s until two readings differ by less than 2% (at most 30 s).
func BenchmarkMeshSidecarRSS(b *testing.B) {
	fortio := fortioBinary(b)
	app := startFortioServer(b, fortio)
	for range b.N {
		a := startDevAgent(b)
		empty := settledRSS(b, a)

		const n = 100
		ports := testutil.FreePorts(b, n)
		for i := range n {
			up := "svc-000"
			if i == 0 {
				up = "svc-001"
			}
			err := a.Client.Agent().ServiceRegister(&consulapi.AgentServiceRegistration{
				Name: fmt.Sprintf("svc-%03d", i), Port: app.port,
				Connect: &consulapi.AgentServiceConnect{SidecarService: &consulapi.AgentServiceRegistration{
					Proxy: &consulapi.AgentServiceConnectProxyConfig{Upstreams: []consulapi.Upstream{{DestinationName: up, LocalBindPort: ports[i]}}},
				}},
			})
			if err != nil {
				b.Fatalf("register svc-%03d: %v", i, err)
			}
		}
		retry.RunWith(&retry.Timer{Timeout: 2 * time.Minute, Wait: 100 * time.Millisecond}, b, func(r *retry.R) {
			svcs, err := a.Client.Agent().Services()
			if err != nil || len(svcs) != 2*n {
				r.Fatalf("agent has %d services (%v)", len(svcs), err)
			}
			// An upstream listener is bound when its proxy has started.
			listening := listeningPorts(r)
			for i, p := range ports {
				if !listening[p] {
					r.Fatalf("the upstream listener of svc-%03d (port %d) is not bound", i, p)
				}
			}
		})
		for _, i := range []int{0, 1} {
			waitHTTP200(b, fmt.Sprintf("http://127.0.0.1:%d/", ports[i]), 30*time.Second)
		}
		registered := settledRSS(b, a)

		for _, p := range ports {
			waitHTTP200(b, fmt.Sprintf("http://127.0.0.1:%d/", p), 30*time.Second)
		}
		active := settledRSS(b, a)

		b.ReportMetric(float64(empty)/1e6, "rss-0-sidecars-MB")
		b.ReportMetric(float64(registered)/1e6, "rss-100-sidecars-MB")
		b.ReportMetric(float64(active)/1e6, "rss-100-sidecars-active-MB")
	}
}

// mesh is the two-agent setup of BenchmarkMesh.
type mesh struct {
	directURL, meshURL     string // fortio server, directly and through the upstream
	l7URL                  string // the same server as service apihttp, protocol http
	featURL                string // the same again as service apifeat, protocol http, for qps=max/features
	sinkAddr, sinkUpstream string // the TCP sink, likewise
	agents                 []*proc
	others                 []int // pids of the benchmark's other processes: the app, the sink, this one
	profileDir             string
}

// startMesh starts the fortio server, the sink helper and the two agents,
// and waits until both paths carry traffic.
func startMesh(tb testing.TB, fortio string) *mesh {
	tb.Helper()
	app := startFortioServer(tb, fortio)
	sink := startSink(tb)
	// s1: http, serf, server, api's and sink's sidecars; c1: http, serf,
	// server, load's sidecar, load's app (never dialled), two upstreams.
	// p[12] is apihttp's sidecar, p[13] load's upstream to it; p[14] and
	// p[15] the same for apifeat.
	p := testutil.FreePorts(tb, 16)
	dir := tb.TempDir()
	sHCL := fmt.Sprintf(`
enable_debug = true
service {
  name = "api"
  port = %d
  connect {
    sidecar_service {
      port = %d
    }
  }
}
service {
  name = "sink"
  port = %d
  connect {
    sidecar_service {
      port = %d
    }
  }
}
service {
  name = "apihttp"
  port = %d
  connect {
    sidecar_service {
      port = %d
    }
  }
}
service {
  name = "apifeat"
  port = %d
  connect {
    sidecar_service {
      port = %d
    }
  }
}
`, app.port, p[3], sink.port, p[4], app.port, p[12], app.port, p[14])
	cHCL := fmt.Sprintf(`
enable_debug = true
service {
  name = "load"
  port = %d
  connect {
    sidecar_service {
      port = %d
      proxy {
        upstreams = [
          { destination_name = "api", local_bind_port = %d },
          { destination_name = "sink", local_bind_port = %d },
          { destination_name = "apihttp", local_bind_port = %d },
          { destination_name = "apifeat", local_bind_port = %d },
        ]
      }
    }
  }
}
`, p[9], p[8], p[10], p[11], p[13], p[15])
	agent := func(name string, hcl string, ports []int, extra ...string) *proc {
		cfg := filepath.Join(dir, name+".hcl")
		if err := os.WriteFile(cfg, []byte(hcl), 0o644); err != nil {
			tb.Fatal(err)
		}
		a := &proc{name: name, http: "127.0.0.1:" + strconv.Itoa(ports[0])}
		a.args = append([]string{"agent", "-dev", "-node", name, "-bind", "127.0.0.1", "-client", "127.0.0.1",
			"-log-level", "warn", "-data-dir", filepath.Join(dir, name), "-dns-port", "-1",
			"-http-port", strconv.Itoa(ports[0]), "-serf-lan-port", strconv.Itoa(ports[1]), "-server-port", strconv.Itoa(ports[2]),
			"-config-file", cfg}, extra...)
		a.start(tb)
		tb.Cleanup(func() {
			a.kill()
			if tb.Failed() {
				tb.Logf("agent %s output:\n%s", name, a.logs.String())
			}
			if d := os.Getenv(dumpLogsEnv); d != "" {
				_ = os.WriteFile(filepath.Join(d, name+".log"), []byte(a.logs.String()), 0o644)
			}
		})
		return a
	}
	s1 := agent("s1", sHCL, p[0:3])
	c1 := agent("c1", cHCL, p[5:8], "-server=false", "-bootstrap=false", "-retry-join", "127.0.0.1:"+strconv.Itoa(p[1]))

	m := &mesh{
		directURL:    fmt.Sprintf("http://127.0.0.1:%d/", app.port),
		meshURL:      fmt.Sprintf("http://127.0.0.1:%d/", p[10]),
		l7URL:        fmt.Sprintf("http://127.0.0.1:%d/", p[13]),
		featURL:      fmt.Sprintf("http://127.0.0.1:%d/", p[15]),
		sinkAddr:     fmt.Sprintf("127.0.0.1:%d", sink.port),
		sinkUpstream: fmt.Sprintf("127.0.0.1:%d", p[11]),
		agents:       []*proc{s1, c1},
		others:       []int{app.cmd.Process.Pid, sink.cmd.Process.Pid, os.Getpid()},
		profileDir:   os.Getenv(profileEnv),
	}
	for _, w := range []struct {
		a  *proc
		id string
	}{{s1, "api-sidecar-proxy"}, {s1, "sink-sidecar-proxy"}, {s1, "apihttp-sidecar-proxy"}, {s1, "apifeat-sidecar-proxy"}, {c1, "load-sidecar-proxy"}} {
		c := w.a.client(tb)
		retry.RunWith(&retry.Timer{Timeout: time.Minute, Wait: 50 * time.Millisecond}, tb, func(r *retry.R) {
			select {
			case <-w.a.done:
				r.Fatalf("agent %s exited:\n%s", w.a.name, w.a.logs.String())
			default:
			}
			svcs, err := c.Agent().Services()
			if err != nil || svcs[w.id] == nil {
				r.Fatalf("%s not registered on %s yet (%v)", w.id, w.a.name, err)
			}
		})
	}
	// When a run fails, keep what every agent's goroutines were doing (the
	// cleanup runs before the agents are killed).
	tb.Cleanup(func() {
		if !tb.Failed() {
			return
		}
		for _, a := range m.agents {
			file := filepath.Join(os.TempDir(), fmt.Sprintf("trellis-bench-%s-%d-goroutines.txt", a.name, time.Now().UnixNano()))
			if err := fetchTo("http://"+a.http+"/debug/pprof/goroutine?debug=2", file); err != nil {
				tb.Logf("goroutines of %s: %v", a.name, err)
				continue
			}
			tb.Logf("goroutines of %s: %s", a.name, file)
		}
	})
	// apihttp and apifeat speak http: their traffic takes the proxies' L7 path.
	for _, name := range []string{"apihttp", "apifeat"} {
		if _, _, err := s1.client(tb).ConfigEntries().Set(&consulapi.ServiceConfigEntry{
			Kind: consulapi.ServiceDefaults, Name: name, Protocol: "http",
		}, nil); err != nil {
			tb.Fatalf("service-defaults for %s: %v", name, err)
		}
	}
	waitHTTP200(tb, m.directURL, 30*time.Second)
	waitHTTP200(tb, m.meshURL, time.Minute)
	waitL7(tb, m.l7URL, time.Minute)
	waitL7(tb, m.featURL, time.Minute)
	retry.RunWith(&retry.Timer{Timeout: time.Minute, Wait: 50 * time.Millisecond}, tb, func(r *retry.R) {
		if err := pushBytes(m.sinkUpstream, 1); err != nil {
			r.Fatalf("through the sink's upstream: %v", err)
		}
	})
	return m
}

// profile starts CPU profiles of both agents for about d, when
// TRELLIS_BENCH_PROFILE_DIR is set; the returned function waits for them.
func (m *mesh) profile(b *testing.B, d time.Duration) func() {
	if m.profileDir == "" {
		return nil
	}
	secs := max(1, int((d-2*time.Second)/time.Second))
	name := strings.NewReplacer("/", "_", "=", "-").Replace(b.Name())
	var wg sync.WaitGroup
	for _, a := range m.agents {
		wg.Add(1)
		go func() {
			defer wg.Done()
			file := filepath.Join(m.profileDir, name+"-"+a.name+".pprof")
			if err := fetchTo(fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", a.http, secs), file); err != nil {
				b.Logf("CPU profile of %s: %v", a.name, err)
				return
			}
			b.Logf("CPU profile of %s: %s", a.name, file)
		}()
	}
	return wg.Wait
}

func fetchTo(url, file string) error {
	resp, err := http.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	if err := os.MkdirAll(filepath.Dir(file), 0o755); err != nil {
		return err
	}
	f, err := os.Create(file)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// cpuMark is a reading of CPU time: the machine's and the benchmark's
// processes', cumulative.
type cpuMark struct {
	busy, all time.Duration // the machine's, over all CPUs
	agents    time.Duration
	others    time.Duration
	// reads and writes are the agents' read- and write-like system calls
	// (syscr and syscw of /proc/PID/io).
	reads, writes int64
	// sleeps counts the times the agents' threads gave up their CPU to
	// wait (voluntary context switches): each is a wake-up paid later.
	sleeps int64
}

// cpuUse is the CPU time spent between two marks.
type cpuUse struct {
	busy, all time.Duration
	agents    time.Duration // both agents
	ours      time.Duration // the agents and the benchmark's other processes
	// reads and writes count both agents' read- and write-like system calls,
	// sleeps the times their threads waited.
	reads, writes, sleeps int64
}

// String says how much the agents used and how busy the machine was, and
// how much of that was not the benchmark (other work on a shared machine
// makes figures noisy).
func (u cpuUse) String() string {
	pct := func(d time.Duration) float64 { return 100 * d.Seconds() / max(u.all.Seconds(), 1e-9) }
	return fmt.Sprintf("CPU: agents %.2f s, machine %.0f%% busy, not this benchmark %.0f%%", u.agents.Seconds(), pct(u.busy), pct(max(0, u.busy-u.ours)))
}

func (m *mesh) markCPU(tb testing.TB) cpuMark {
	tb.Helper()
	var c cpuMark
	c.busy, c.all = machineCPU(tb)
	for _, a := range m.agents {
		c.agents += relayCPU(tb, a.cmd.Process.Pid)
		r, w := processSyscalls(tb, a.cmd.Process.Pid)
		c.reads += r
		c.writes += w
		c.sleeps += processSleeps(tb, a.cmd.Process.Pid)
	}
	for _, pid := range m.others {
		c.others += processCPU(tb, pid)
	}
	return c
}

// cpuSince returns the CPU time used since start; extra is that of
// processes that have ended since (fortio load).
func (m *mesh) cpuSince(tb testing.TB, start cpuMark, extra time.Duration) cpuUse {
	tb.Helper()
	end := m.markCPU(tb)
	agents := end.agents - start.agents
	return cpuUse{busy: end.busy - start.busy, all: end.all - start.all, agents: agents,
		ours: agents + end.others - start.others + extra, reads: end.reads - start.reads, writes: end.writes - start.writes, sleeps: end.sleeps - start.sleeps}
}

// processSyscalls returns how many read- and write-like system calls a
// process has made so far (syscr and syscw of /proc/PID/io).
func processSyscalls(tb testing.TB, pid int) (reads, writes int64) {
	tb.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/io", pid))
	if err != nil {
		tb.Fatalf("system calls of process %d: %v", pid, err)
	}
	for line := range strings.SplitSeq(string(data), "\n") {
		name, value, ok := strings.Cut(line, ": ")
		if !ok || (name != "syscr" && name != "syscw") {
			continue
		}
		n, err := strconv.ParseInt(value, 10, 64)
		if err != nil {
			tb.Fatalf("/proc/%d/io: %q: %v", pid, line, err)
		}
		if name == "syscr" {
			reads = n
		} else {
			writes = n
		}
	}
	return reads, writes
}

// processSleeps returns how many times the threads of a process have
// waited so far: the sum of voluntary_ctxt_switches over /proc/PID/task
// (threads that have ended are not counted; the Go runtime rarely ends one).
func processSleeps(tb testing.TB, pid int) int64 {
	tb.Helper()
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		tb.Fatalf("threads of process %d: %v", pid, err)
	}
	var sum int64
	for _, t := range tasks {
		data, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/status", pid, t.Name()))
		if err != nil {
			continue // the thread ended since the listing
		}
		for line := range strings.SplitSeq(string(data), "\n") {
			value, ok := strings.CutPrefix(line, "voluntary_ctxt_switches:")
			if !ok {
				continue
			}
			n, err := strconv.ParseInt(strings.TrimSpace(value), 10, 64)
			if err != nil {
				tb.Fatalf("/proc/%d/task/%s/status: %q: %v", pid, t.Name(), line, err)
			}
			sum += n
		}
	}
	return sum
}

// clockTick is the unit of /proc's CPU times (USER_HZ, 100 on Linux).
const clockTick = 10 * time.Millisecond

// processCPU returns the user and system CPU time of a process so far.
func processCPU(tb testing.TB, pid int) time.Duration {
	tb.Helper()
	return statCPU(tb, pid, false)
}

// relayCPU returns the user and system CPU time of a proxy process so far,
// with that of the children it has waited for (a relay that forks one per
// connection, as socat does in BenchmarkRelayBaseline). It first waits, up
// to 5 s, until the process has no child left running, so that the
// children of connections just closed are counted.
func relayCPU(tb testing.TB, pid int) time.Duration {
	tb.Helper()
	waitNoChildren(tb, pid, 5*time.Second)
	return statCPU(tb, pid, true)
}

// statCPU reads a process's CPU time from /proc/PID/stat, with its waited-for
// children's when children is set.
func statCPU(tb testing.TB, pid int, children bool) time.Duration {
	tb.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		tb.Fatalf("CPU time of process %d: %v", pid, err)
	}
	// The fields after the command (in parentheses, which may hold spaces)
	// start at field 3, state; utime, stime, cutime and cstime are fields
	// 14 to 17.
	s := string(data)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 15 {
		tb.Fatalf("/proc/%d/stat: %q", pid, s)
	}
	fields := f[11:13]
	if children {
		fields = f[11:15]
	}
	var sum int64
	for _, field := range fields {
		n, err := strconv.ParseInt(field, 10, 64)
		if err != nil {
			tb.Fatalf("/proc/%d/stat: %v", pid, err)
		}
		sum += n
	}
	return time.Duration(sum) * clockTick
}

// waitNoChildren polls until process pid has no child process, or timeout
// has passed (it then fails tb).
func waitNoChildren(tb testing.TB, pid int, timeout time.Duration) {
	tb.Helper()
	retry.RunWith(&retry.Timer{Timeout: timeout, Wait: 10 * time.Millisecond}, tb, func(r *retry.R) {
		tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
		if err != nil {
			r.Fatalf("threads of process %d: %v", pid, err)
		}
		for _, t := range tasks {
			data, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/children", pid, t.Name()))
			if err != nil {
				continue // the thread ended since the listing
			}
			if kids := strings.TrimSpace(string(data)); kids != "" {
				r.Fatalf("process %d still has children: %s", pid, kids)
			}
		}
	})
}

// machineCPU returns the CPU time the machine has spent busy, and in all,
// over all CPUs, from the first line of /proc/stat.
func machineCPU(tb testing.TB) (busy, all time.Duration) {
	tb.Helper()
	data, err := os.ReadFile("/proc/stat")
	if err != nil {
		tb.Fatal(err)
	}
	line, _, _ := strings.Cut(string(data), "\n")
	f := strings.Fields(line)
	if len(f) < 9 || f[0] != "cpu" {
		tb.Fatalf("/proc/stat: %q", line)
	}
	var v [8]int64 // user nice system idle iowait irq softirq steal
	for i := range v {
		if v[i], err = strconv.ParseInt(f[i+1], 10, 64); err != nil {
			tb.Fatalf("/proc/stat: %q: %v", line, err)
		}
	}
	b := v[0] + v[1] + v[2] + v[5] + v[6] + v[7]
	return time.Duration(b) * clockTick, time.Duration(b+v[3]+v[4]) * clockTick
}

// fortioBinary returns the fortio binary, or skips the benchmark.
func fortioBinary(tb testing.TB) string {
	tb.Helper()
	path := os.Getenv(fortioEnv)
	if path == "" {
		path = filepath.Join("..", "bin", "tools", "fortio")
	}
	abs, err := filepath.Abs(path)
	if err == nil {
		_, err = os.Stat(abs)
	}
	if err != nil {
		tb.Skipf("fortio not found (%v): run make bench, which installs it into bin/tools, or set %s", err, fortioEnv)
	}
	return abs
}

// child is a helper process (fortio server, the sink) killed at cleanup.
type child struct {
	cmd   *exec.Cmd
	port  int
	logs  *testutil.LockedBuffer
	done  chan struct{}
	stdin io.Closer // held open while the child runs (the sink exits when it closes)
}

func startChild(tb testing.TB, cmd *exec.Cmd) *child {
	tb.Helper()
	c := &child{cmd: cmd, logs: &testutil.LockedBuffer{}, done: make(chan struct{})}
	if cmd.Stdout == nil {
		cmd.Stdout = c.logs
	}
	cmd.Stderr = c.logs
	if err := cmd.Start(); err != nil {
		tb.Fatalf("start %s: %v", cmd.Path, err)
	}
	go func() { _ = cmd.Wait(); close(c.done) }()
	tb.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGKILL)
		<-c.done
		if tb.Failed() {
			tb.Logf("%s output:\n%s", filepath.Base(cmd.Path), c.logs.String())
		}
	})
	return c
}

// startFortioServer runs fortio's HTTP echo server alone (no gRPC,
// redirect, TCP/UDP echo or UI) on a free port.
func startFortioServer(tb testing.TB, fortio string) *child {
	tb.Helper()
	port := testutil.FreePorts(tb, 1)[0]
	c := startChild(tb, exec.Command(fortio, "server", "-loglevel", "error",
		"-http-port", "127.0.0.1:"+strconv.Itoa(port), "-grpc-port", "disabled", "-redirect-port", "disabled",
		"-tcp-port", "disabled", "-udp-port", "disabled", "-ui-path", ""))
	c.port = port
	waitHTTP200(tb, fmt.Sprintf("http://127.0.0.1:%d/", port), 30*time.Second)
	return c
}

// startSink re-runs the test binary as a TCP sink and reads its port.
func startSink(tb testing.TB) *child {
	tb.Helper()
	return startHelper(tb, "sink", "")
}

// startHelper re-runs the test binary as the helper mode names (to target,
// for a relay) and reads the port it prints.
func startHelper(tb testing.TB, mode, target string) *child {
	tb.Helper()
	exe, err := os.Executable()
	if err != nil {
		tb.Fatal(err)
	}
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), helperEnv+"="+mode, helperTargetEnv+"="+target)
	out, err := cmd.StdoutPipe()
	if err != nil {
		tb.Fatal(err)
	}
	// The helper exits when its stdin closes, should this process die first.
	stdin, err := cmd.StdinPipe()
	if err != nil {
		tb.Fatal(err)
	}
	c := startChild(tb, cmd)
	c.stdin = stdin
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		tb.Fatalf("%s helper: %v\n%s", mode, err, c.logs.String())
	}
	_, port, err := net.SplitHostPort(strings.TrimSpace(line))
	if err == nil {
		c.port, err = strconv.Atoi(port)
	}
	if err != nil {
		tb.Fatalf("%s helper printed %q: %v", mode, line, err)
	}
	return c
}

// runSink is the sink helper: it listens on a free loopback port, prints
// the address, and on every connection reads until EOF, then writes the
// number of bytes read (8 bytes, big endian). It exits when stdin closes.
func runSink() int {
	return serveHelper(func(c net.Conn) {
		buf := make([]byte, streamBufSize)
		var n int64
		for {
			m, err := c.Read(buf)
			n += int64(m)
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				return
			}
		}
		_ = binary.Write(c, binary.BigEndian, n)
	})
}

// pushBytes sends n bytes to a sink at addr and checks its count.
func pushBytes(addr string, n int) error {
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write(make([]byte, n)); err != nil {
		return err
	}
	if err := c.(*net.TCPConn).CloseWrite(); err != nil {
		return err
	}
	var got int64
	if err := binary.Read(c, binary.BigEndian, &got); err != nil {
		return err
	}
	if got != int64(n) {
		return fmt.Errorf("sink counted %d bytes of %d", got, n)
	}
	return nil
}

// streamThroughput pushes bytes on one TCP connection to the sink at addr
// for d (at most streamMaxBytes), half-closes, and waits for the sink's
// count. It returns the MB (10^6 bytes) sent and the seconds from the dial
// to the count.
func streamThroughput(tb testing.TB, addr string, d time.Duration) (mb, secs float64) {
	tb.Helper()
	start := time.Now()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		tb.Fatal(err)
	}
	defer c.Close()
	buf := make([]byte, streamBufSize)
	var sent int64
	for deadline := start.Add(d); sent < streamMaxBytes && time.Now().Before(deadline); {
		n, err := c.Write(buf)
		sent += int64(n)
		if err != nil {
			tb.Fatalf("stream to %s after %d bytes: %v", addr, sent, err)
		}
	}
	if err := c.(*net.TCPConn).CloseWrite(); err != nil {
		tb.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(time.Minute))
	var got int64
	if err := binary.Read(c, binary.BigEndian, &got); err != nil {
		tb.Fatalf("read the sink's count from %s: %v", addr, err)
	}
	elapsed := time.Since(start)
	if got != sent {
		tb.Fatalf("sink counted %d bytes of %d", got, sent)
	}
	return float64(sent) / 1e6, elapsed.Seconds()
}

// fortioResult is the part of fortio's JSON result the benchmark reads.
type fortioResult struct {
	ActualQPS         float64
	RetCodes          map[string]int64
	DurationHistogram struct {
		Count       int64
		Percentiles []struct {
			Percentile float64
			Value      float64 // seconds
		}
	}
	ErrorsDurationHistogram struct {
		Count int64
	}

	cpu time.Duration // of the fortio process
}

// percentile returns the latency at p (as in percentiles) in seconds.
func (r *fortioResult) percentile(p string) float64 {
	want, _ := strconv.ParseFloat(p, 64)
	for _, pv := range r.DurationHistogram.Percentiles {
		if pv.Percentile == want {
			return pv.Value
		}
	}
	return -1
}

func (r *fortioResult) String() string {
	var s strings.Builder
	fmt.Fprintf(&s, "%.0f req/s, %d requests", r.ActualQPS, r.DurationHistogram.Count)
	for _, p := range percentiles {
		fmt.Fprintf(&s, ", p%s %.3f ms", p, 1000*r.percentile(p))
	}
	return s.String()
}

// runFortio runs one fortio load against url: qps requests/s (0: as fast
// as it goes) over loadConns connections for d, HTTP/1.1 keep-alive unless
// newConn. It fails the benchmark if any request failed.
func runFortio(tb testing.TB, fortio, url string, qps int, newConn bool, d time.Duration) *fortioResult {
	tb.Helper()
	out := filepath.Join(tb.TempDir(), "fortio.json")
	args := []string{"load", "-quiet", "-qps", strconv.Itoa(qps), "-c", strconv.Itoa(loadConns), "-t", d.String(),
		"-uniform", "-r", "0.00001", "-p", strings.Join(percentiles, ","), "-json", out}
	if newConn {
		args = append(args, "-keepalive=false")
	}
	args = append(args, url)
	cmd := exec.Command(fortio, args...)
	var logs testutil.LockedBuffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Run(); err != nil {
		tb.Fatalf("fortio %s: %v\n%s", strings.Join(args, " "), err, logs.String())
	}
	data, err := os.ReadFile(out)
	if err != nil {
		tb.Fatal(err)
	}
	r := fortioResult{cpu: cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()}
	if err := json.Unmarshal(data, &r); err != nil {
		tb.Fatalf("fortio's JSON: %v", err)
	}
	var bad []string
	for code, n := range r.RetCodes {
		if code != "200" {
			bad = append(bad, fmt.Sprintf("%d × %s", n, code))
		}
	}
	if len(bad) > 0 || r.ErrorsDurationHistogram.Count > 0 || r.DurationHistogram.Count == 0 || r.RetCodes["200"] != r.DurationHistogram.Count {
		tb.Fatalf("fortio against %s: %d requests, %d errors, codes %v\n%s", url, r.DurationHistogram.Count, r.ErrorsDurationHistogram.Count, r.RetCodes, logs.String())
	}
	for _, p := range percentiles {
		if r.percentile(p) < 0 {
			tb.Fatalf("fortio's JSON has no p%s", p)
		}
	}
	return &r
}

// reportLatencies reports, for every percentile, the median direct and
// mesh latencies in ms and their difference, and the achieved rates.
func reportLatencies(b *testing.B, direct, mesh []*fortioResult) {
	for _, p := range percentiles {
		d, m := median(percentileOf(direct, p)), median(percentileOf(mesh, p))
		name := "p" + strings.ReplaceAll(p, ".", "")
		b.ReportMetric(1000*d, name+"-direct-ms")
		b.ReportMetric(1000*m, name+"-mesh-ms")
		b.ReportMetric(1000*(m-d), name+"-added-ms")
	}
	rate := func(rs []*fortioResult) float64 {
		var v []float64
		for _, r := range rs {
			v = append(v, r.ActualQPS)
		}
		return median(v)
	}
	d, m := rate(direct), rate(mesh)
	b.ReportMetric(d, "rps-direct")
	b.ReportMetric(m, "rps-mesh")
	b.ReportMetric(m/d, "rps-ratio")
}

func percentileOf(rs []*fortioResult, p string) []float64 {
	var v []float64
	for _, r := range rs {
		v = append(v, r.percentile(p))
	}
	return v
}

// median returns the median of v (the mean of the middle two for an even
// count).
func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	n := len(s)
	if n == 0 {
		return 0
	}
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// waitHTTP200 polls url with new connections until it answers 200.
func waitHTTP200(tb testing.TB, url string, timeout time.Duration) {
	tb.Helper()
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	retry.RunWith(&retry.Timer{Timeout: timeout, Wait: 50 * time.Millisecond}, tb, func(r *retry.R) {
		resp, err := hc.Get(url)
		if err != nil {
			r.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			r.Fatalf("GET %s: %s", url, resp.Status)
		}
	})
}

// listeningPorts returns the ports listening on 127.0.0.1 (TCP), as
// /proc/net/tcp shows them.
func listeningPorts(r *retry.R) map[int]bool {
	data, err := os.ReadFile("/proc/net/tcp")
	if err != nil {
		r.Fatal(err)
	}
	out := map[int]bool{}
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		// local_address is f[1] (hex IP:port, 0100007F is 127.0.0.1); state 0A is LISTEN.
		if len(f) > 3 && f[3] == "0A" && strings.HasPrefix(f[1], "0100007F:") {
			if p, err := strconv.ParseUint(strings.TrimPrefix(f[1], "0100007F:"), 16, 16); err == nil {
				out[int(p)] = true
			}
		}
	}
	return out
}

// settledRSS samples the agent's RSS every 2 s until two readings differ by
// less than 2% (at most 15 samples) and returns the last.
func settledRSS(tb testing.TB, a *devAgent) int64 {
	tb.Helper()
	prev := a.rssBytes(tb)
	rss := prev
	for range 15 {
		time.Sleep(2 * time.Second) // sampling period of an idle process, not a wait for a condition
		rss = a.rssBytes(tb)
		if diff := rss - prev; diff < prev/50 && -diff < prev/50 {
			break
		}
		prev = rss
	}
	return rss
}

func envInt(tb testing.TB, name string, def int) int {
	tb.Helper()
	s := os.Getenv(name)
	if s == "" {
		return def
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 {
		tb.Fatalf("%s=%q: want a positive integer", name, s)
	}
	return n
}

func envDuration(tb testing.TB, name string, def time.Duration) time.Duration {
	tb.Helper()
	s := os.Getenv(name)
	if s == "" {
		return def
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < time.Second {
		tb.Fatalf("%s=%q: want a duration of at least 1s", name, s)
	}
	return d
}
