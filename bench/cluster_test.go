package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	consulapi "github.com/hashicorp/consul/api"

	"github.com/trellismesh/trellis/gossip"
	"github.com/trellismesh/trellis/internal/retry"
	"github.com/trellismesh/trellis/internal/testcluster"
	"github.com/trellismesh/trellis/internal/testutil"
)

func init() {
	// Fifty agents logging at debug level would measure the logger.
	if os.Getenv("TEST_LOG_LEVEL") == "" {
		os.Setenv("TEST_LOG_LEVEL", "error")
	}
}

// BenchmarkGossipFailureDetection measures, for 5, 50 and 200 members, the
// time from one member stopping (no leave) until every other member sees it
// as failed. The members are gossip pools with the production (LAN) timers,
// all in this process on 127.0.0.1, each with its own UDP and TCP port.
func BenchmarkGossipFailureDetection(b *testing.B) {
	for _, n := range []int{5, 50, 200} {
		b.Run(fmt.Sprintf("members=%d", n), func(b *testing.B) {
			var worst, total time.Duration
			for range b.N {
				d := detectFailure(b, n)
				total += d
				worst = max(worst, d)
			}
			b.ReportMetric(float64(total.Milliseconds())/float64(b.N), "detect-all-ms")
			b.ReportMetric(float64(worst.Milliseconds()), "worst-ms")
		})
	}
}

func detectFailure(b *testing.B, n int) time.Duration {
	b.Helper()
	var pools []*gossip.Pool
	defer func() {
		for _, p := range pools {
			p.Shutdown()
		}
	}()
	for i := range n {
		p, err := gossip.New(gossip.Config{NodeName: fmt.Sprintf("m%03d", i), BindAddr: "127.0.0.1", Timing: gossip.LANTiming(), Logger: testutil.Logger(b)})
		if err != nil {
			b.Fatal(err)
		}
		pools = append(pools, p)
		if i > 0 {
			if _, err := p.Join([]string{pools[0].LocalAddr()}); err != nil {
				b.Fatal(err)
			}
		}
	}
	retry.RunWith(&retry.Timer{Timeout: 2 * time.Minute, Wait: 100 * time.Millisecond}, b, func(r *retry.R) {
		for _, p := range pools {
			if p.NumAlive() != n {
				r.Fatalf("%d alive of %d", p.NumAlive(), n)
			}
		}
	})
	victim := pools[n/2]
	name := victim.LocalMember().Name
	start := time.Now()
	victim.Shutdown()
	retry.RunWith(&retry.Timer{Timeout: 2 * time.Minute, Wait: 10 * time.Millisecond}, b, func(r *retry.R) {
		for _, p := range pools {
			if p == victim {
				continue
			}
			for _, m := range p.Members() {
				if m.Name == name && m.Status != gossip.StatusFailed {
					r.Fatalf("%s still sees the victim as %s", p.LocalMember().Name, m.Status)
				}
			}
		}
	})
	return time.Since(start)
}

// BenchmarkFailureToPassing measures, with 50 agents (3 servers, 47
// clients, production timers, in this process on loopback), the time from a
// client stopping (no leave) until its service is gone from
// health/service/NAME?passing.
func BenchmarkFailureToPassing(b *testing.B) {
	c := testcluster.StartCluster(b, testcluster.ClusterOptions{Servers: 3, Clients: 47, Production: true})
	leader := c.WaitForLeader(b)
	var total, worst time.Duration
	for i := range b.N {
		victim := c.Clients[i%len(c.Clients)]
		name := fmt.Sprintf("victim-%d", i)
		if err := victim.Client.Agent().ServiceRegister(&consulapi.AgentServiceRegistration{Name: name}); err != nil {
			b.Fatal(err)
		}
		passing := func() int {
			e, _, err := leader.Client.Health().Service(name, "", true, nil)
			if err != nil {
				return -1
			}
			return len(e)
		}
		retry.RunWith(&retry.Timer{Timeout: time.Minute, Wait: 20 * time.Millisecond}, b, func(r *retry.R) {
			if passing() != 1 {
				r.Fatal("not passing yet")
			}
		})
		start := time.Now()
		victim.Stop()
		retry.RunWith(&retry.Timer{Timeout: time.Minute, Wait: 10 * time.Millisecond}, b, func(r *retry.R) {
			if passing() != 0 {
				r.Fatal("still passing")
			}
		})
		d := time.Since(start)
		total += d
		worst = max(worst, d)
	}
	b.ReportMetric(float64(total.Milliseconds())/float64(b.N), "failure-to-unpassing-ms")
	b.ReportMetric(float64(worst.Milliseconds()), "worst-ms")
}

// proc is a trellis agent process.
type proc struct {
	name string
	args []string
	http string
	cmd  *exec.Cmd
	done chan struct{}
	logs *testutil.LockedBuffer
}

func (p *proc) start(tb testing.TB) {
	tb.Helper()
	p.cmd = exec.Command(trellisBinary(tb), p.args...)
	p.logs = &testutil.LockedBuffer{}
	p.cmd.Stdout, p.cmd.Stderr = p.logs, p.logs
	if extra := os.Getenv(agentEnvEnv); extra != "" {
		p.cmd.Env = append(os.Environ(), strings.Fields(extra)...)
	}
	if err := p.cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	p.done = make(chan struct{})
	go func() { _ = p.cmd.Wait(); close(p.done) }()
}

func (p *proc) kill() {
	if p.cmd != nil && p.cmd.Process != nil {
		_ = p.cmd.Process.Signal(syscall.SIGKILL)
		<-p.done
	}
}

func (p *proc) client(tb testing.TB) *consulapi.Client {
	cfg := consulapi.DefaultConfig()
	cfg.Address = p.http
	cfg.Transport.MaxIdleConnsPerHost = 256
	c, err := consulapi.NewClient(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	return c
}

// processCluster starts 3 server processes and 1 client process; dev uses
// -dev's timers, else the production ones.
func processCluster(tb testing.TB, dev bool) (servers []*proc, client *proc) {
	tb.Helper()
	ports := testutil.FreePorts(tb, 12)
	join := "127.0.0.1:" + strconv.Itoa(ports[1])
	mk := func(i int, server bool) *proc {
		name := fmt.Sprintf("s%d", i)
		if !server {
			name = "c0"
		}
		p := &proc{name: name, http: "127.0.0.1:" + strconv.Itoa(ports[i*3])}
		p.args = []string{"agent", "-node", name, "-bind", "127.0.0.1", "-client", "127.0.0.1", "-log-level", "warn",
			"-data-dir", filepath.Join(tb.TempDir(), name), "-dns-port", "-1",
			"-http-port", strconv.Itoa(ports[i*3]), "-serf-lan-port", strconv.Itoa(ports[i*3+1]), "-server-port", strconv.Itoa(ports[i*3+2]),
			"-retry-join", join}
		if dev {
			p.args = append(p.args, "-dev")
		}
		if server {
			p.args = append(p.args, "-server", "-bootstrap-expect", "3")
		} else {
			p.args = append(p.args, "-server=false", "-bootstrap=false")
		}
		p.start(tb)
		tb.Cleanup(p.kill)
		return p
	}
	for i := range 3 {
		servers = append(servers, mk(i, true))
	}
	client = mk(3, false)
	waitHealthy(tb, servers, client)
	return servers, client
}

// waitHealthy waits until the client reaches a leader and there are 3 voters.
func waitHealthy(tb testing.TB, servers []*proc, client *proc) {
	tb.Helper()
	c := client.client(tb)
	retry.RunWith(&retry.Timer{Timeout: 2 * time.Minute, Wait: 50 * time.Millisecond}, tb, func(r *retry.R) {
		leader, err := c.Status().Leader()
		if err != nil || leader == "" {
			r.Fatalf("no leader: %v", err)
		}
		conf, err := c.Operator().RaftGetConfiguration(nil)
		if err != nil {
			r.Fatal(err)
		}
		voters := 0
		for _, s := range conf.Servers {
			if s.Voter {
				voters++
			}
		}
		if voters != 3 {
			r.Fatalf("%d voters", voters)
		}
		for _, s := range servers {
			if _, _, err := s.client(tb).Catalog().Services(&consulapi.QueryOptions{AllowStale: true}); err != nil {
				r.Fatalf("%s: %v", s.name, err)
			}
		}
	})
}

func leaderProc(tb testing.TB, servers []*proc) *proc {
	for _, s := range servers {
		if self, err := s.client(tb).Agent().Self(); err == nil {
			if stats, ok := self["Stats"]["raft"].(map[string]any); ok && stats["state"] == "Leader" {
				return s
			}
		}
	}
	return nil
}

// BenchmarkLeaderFailover kills the leader process with SIGKILL (3 servers,
// 1 client, each its own process) and measures the time from the kill to the
// first successful write through the client agent; the killed server is
// restarted on its data directory between runs. The figures are the median
// and the worst of the runs (go test -benchtime=10x for ten).
func BenchmarkLeaderFailover(b *testing.B) {
	for _, profile := range []string{"production", "dev"} {
		b.Run(profile, func(b *testing.B) {
			servers, client := processCluster(b, profile == "dev")
			c := client.client(b)
			write := func(i int) error {
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				defer cancel()
				_, err := c.Catalog().Register(&consulapi.CatalogRegistration{Node: "ext", Address: "10.0.0.1",
					Service: &consulapi.AgentService{ID: fmt.Sprintf("w%d", i), Service: "w"}}, (&consulapi.WriteOptions{}).WithContext(ctx))
				return err
			}
			var runs []time.Duration
			for i := range b.N {
				var leader *proc
				retry.RunWith(&retry.Timer{Timeout: time.Minute, Wait: 50 * time.Millisecond}, b, func(r *retry.R) {
					if leader = leaderProc(b, servers); leader == nil {
						r.Fatal("no leader")
					}
				})
				if err := write(i * 1000); err != nil {
					b.Fatal(err)
				}
				start := time.Now()
				leader.kill()
				for j := 1; ; j++ {
					if err := write(i*1000 + j); err == nil {
						break
					}
					if time.Since(start) > time.Minute {
						b.Fatal("no successful write within a minute")
					}
				}
				runs = append(runs, time.Since(start))
				leader.start(b)
				waitHealthy(b, servers, client)
			}
			slices.Sort(runs)
			b.ReportMetric(float64(runs[len(runs)/2].Milliseconds()), "median-ms")
			b.ReportMetric(float64(runs[len(runs)-1].Milliseconds()), "worst-ms")
		})
	}
}

// BenchmarkClientRegistrations measures catalog registrations per second
// through a client agent into 3 servers (every agent its own process,
// production timers, Raft log on disk), 64 concurrent clients; and the time
// for one registration through the client to be visible on every server.
func BenchmarkClientRegistrations(b *testing.B) {
	servers, client := processCluster(b, false)
	const workers, total = 64, 20000
	var seq atomic.Int64
	body := func(n int64) []byte {
		reg := map[string]any{"Node": fmt.Sprintf("n%d", n%50), "Address": "10.0.0.1",
			"Service": map[string]any{"ID": fmt.Sprintf("s%d", n), "Service": fmt.Sprintf("svc%d", n%200), "Port": 80},
			"Check":   map[string]any{"CheckID": fmt.Sprintf("c%d", n), "Name": "c", "Status": "passing", "ServiceID": fmt.Sprintf("s%d", n)}}
		bb, _ := json.Marshal(reg)
		return bb
	}
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: workers}}
	url := "http://" + client.http + "/v1/catalog/register"
	b.ResetTimer()
	start := time.Now()
	var wg sync.WaitGroup
	var failed atomic.Int64
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				n := seq.Add(1)
				if n > total {
					return
				}
				req, _ := http.NewRequest(http.MethodPut, url, bytes.NewReader(body(n)))
				resp, err := hc.Do(req)
				if err != nil {
					failed.Add(1)
					continue
				}
				// Drain the body, so the connection is reused.
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					failed.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	if failed.Load() > 0 {
		b.Fatalf("%d registrations failed", failed.Load())
	}
	b.ReportMetric(float64(total)/elapsed.Seconds(), "regs/s")

	// Visibility: one registration, then poll every server's own state.
	var lat []time.Duration
	cc := client.client(b)
	for i := range 20 {
		id := fmt.Sprintf("vis-%d", i)
		t0 := time.Now()
		if _, err := cc.Catalog().Register(&consulapi.CatalogRegistration{Node: "vis", Address: "10.0.0.1",
			Service: &consulapi.AgentService{ID: id, Service: id}}, nil); err != nil {
			b.Fatal(err)
		}
		for _, s := range servers {
			sc := s.client(b)
			retry.RunWith(&retry.Timer{Timeout: 30 * time.Second, Wait: time.Millisecond}, b, func(r *retry.R) {
				e, _, err := sc.Catalog().Service(id, "", &consulapi.QueryOptions{AllowStale: true})
				if err != nil || len(e) != 1 {
					r.Fatal("not visible")
				}
			})
		}
		lat = append(lat, time.Since(t0))
	}
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "visible-all-median-ms")
	b.ReportMetric(float64(lat[len(lat)-1].Microseconds())/1000, "visible-all-worst-ms")
}
