package bench

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	consulapi "github.com/hashicorp/consul/api"

	"github.com/trellismesh/trellis/internal/retry"
	"github.com/trellismesh/trellis/internal/testutil"
)

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// trellisBinary builds the binary once per test process.
func trellisBinary(tb testing.TB) string {
	tb.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "trellis-bench-")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "trellis")
		cmd := exec.Command("go", "build", "-o", binPath, "..")
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Run(); err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out.String())
		}
	})
	if buildErr != nil {
		tb.Fatal(buildErr)
	}
	return binPath
}

// devAgent is a `trellis agent -dev` process.
type devAgent struct {
	cmd      *exec.Cmd
	HTTPAddr string
	DNSAddr  string
	Client   *consulapi.Client
}

// startDevAgent starts a dev agent on free ports and waits until it has a leader.
func startDevAgent(tb testing.TB, extraArgs ...string) *devAgent {
	tb.Helper()
	bin := trellisBinary(tb)
	ports := testutil.FreePorts(tb, 4)
	args := append([]string{"agent", "-dev", "-log-level", "warn",
		"-http-port", strconv.Itoa(ports[0]), "-dns-port", strconv.Itoa(ports[1]),
		"-server-port", strconv.Itoa(ports[2]), "-serf-lan-port", strconv.Itoa(ports[3])}, extraArgs...)
	cmd := exec.Command(bin, args...)
	var logs testutil.LockedBuffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		tb.Fatalf("start agent: %v", err)
	}
	a := &devAgent{cmd: cmd, HTTPAddr: fmt.Sprintf("127.0.0.1:%d", ports[0]), DNSAddr: fmt.Sprintf("127.0.0.1:%d", ports[1])}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	tb.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
		if tb.Failed() {
			tb.Logf("agent output:\n%s", logs.String())
		}
	})
	cfg := consulapi.DefaultConfig()
	cfg.Address = a.HTTPAddr
	cfg.Transport.MaxIdleConnsPerHost = 2048
	cfg.Transport.MaxIdleConns = 4096
	client, err := consulapi.NewClient(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	a.Client = client
	retry.RunWith(&retry.Timer{Timeout: 30 * time.Second, Wait: 20 * time.Millisecond}, tb, func(r *retry.R) {
		select {
		case err := <-exited:
			exited <- err
			r.Fatalf("agent exited: %v\n%s", err, logs.String())
		default:
		}
		leader, err := client.Status().Leader()
		if err != nil || leader == "" {
			r.Fatalf("no leader yet: %q %v", leader, err)
		}
	})
	return a
}

// rssBytes reads the resident set size of the agent process.
func (a *devAgent) rssBytes(tb testing.TB) int64 {
	tb.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", a.cmd.Process.Pid))
	if err != nil {
		tb.Fatalf("read agent RSS: %v", err)
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if rest, ok := strings.CutPrefix(s.Text(), "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			if err != nil {
				tb.Fatalf("parse VmRSS %q: %v", rest, err)
			}
			return kb * 1024
		}
	}
	tb.Fatal("no VmRSS in /proc status")
	return 0
}

// BenchmarkCatalogRegister measures catalog registrations per second through
// the HTTP API of a dev agent: 64 concurrent clients, each registering
// distinct service instances with a check (PUT /v1/catalog/register).
func BenchmarkCatalogRegister(b *testing.B) {
	a := startDevAgent(b)
	const workers = 64
	const perOp = 20000
	var seq int64
	var mu sync.Mutex
	b.ResetTimer()
	var total time.Duration
	for i := 0; i < b.N; i++ {
		start := time.Now()
		var wg sync.WaitGroup
		errs := make(chan error, workers)
		for w := 0; w < workers; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					mu.Lock()
					seq++
					n := seq
					mu.Unlock()
					if n > int64((i+1)*perOp) {
						return
					}
					_, err := a.Client.Catalog().Register(&consulapi.CatalogRegistration{
						Node:    fmt.Sprintf("bench-node-%d", n%50),
						Address: "10.0.0.1",
						Service: &consulapi.AgentService{ID: fmt.Sprintf("svc-%d", n), Service: fmt.Sprintf("svc-%d", n%200), Port: 8080},
						Check:   &consulapi.AgentCheck{CheckID: fmt.Sprintf("chk-%d", n), Name: "c", Status: "passing", ServiceID: fmt.Sprintf("svc-%d", n)},
					}, nil)
					if err != nil {
						errs <- err
						return
					}
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			b.Fatalf("register: %v", err)
		}
		total += time.Since(start)
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N*perOp)/total.Seconds(), "regs/s")
}

// BenchmarkBlockingQueryFanout measures 1,000 concurrent blocking queries on
// health/service/web, all woken by one change: the time from the write's
// acknowledgement until the last of them has returned.
func BenchmarkBlockingQueryFanout(b *testing.B) {
	a := startDevAgent(b)
	const watchers = 1000
	reg := func(id string) {
		if _, err := a.Client.Catalog().Register(&consulapi.CatalogRegistration{
			Node: "n1", Address: "10.0.0.1",
			Service: &consulapi.AgentService{ID: id, Service: "web", Port: 80},
		}, nil); err != nil {
			b.Fatalf("register %s: %v", id, err)
		}
	}
	reg("web-0")
	var lastMax, lastMedian time.Duration
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		_, meta, err := a.Client.Health().Service("web", "", false, nil)
		if err != nil {
			b.Fatal(err)
		}
		idx := meta.LastIndex
		var sent sync.WaitGroup
		sent.Add(watchers)
		done := make(chan time.Time, watchers)
		errs := make(chan error, watchers)
		for w := 0; w < watchers; w++ {
			go func() {
				var once sync.Once
				ctx := withWroteRequest(context.Background(), func() { once.Do(sent.Done) })
				_, m, err := a.Client.Health().Service("web", "", false, (&consulapi.QueryOptions{WaitIndex: idx, WaitTime: time.Minute}).WithContext(ctx))
				once.Do(sent.Done)
				if err != nil {
					errs <- err
					return
				}
				if m.LastIndex <= idx {
					errs <- fmt.Errorf("returned without a change: index %d", m.LastIndex)
					return
				}
				done <- time.Now()
			}()
		}
		sent.Wait()
		// Every request is on the wire; wait until the agent side holds all
		// the connections open too, so the change finds them parked.
		waitBlocked(b, a, watchers)
		b.StartTimer()
		reg(fmt.Sprintf("web-%d", i+1))
		changed := time.Now()
		var lat []time.Duration
		for len(lat) < watchers {
			select {
			case t := <-done:
				lat = append(lat, t.Sub(changed))
			case err := <-errs:
				b.Fatalf("watcher: %v", err)
			case <-time.After(30 * time.Second):
				b.Fatalf("only %d of %d watchers returned", len(lat), watchers)
			}
		}
		b.StopTimer()
		lastMax, lastMedian = maxAndMedian(lat)
	}
	b.ReportMetric(float64(lastMax.Microseconds())/1000, "last-wake-ms")
	b.ReportMetric(float64(lastMedian.Microseconds())/1000, "median-wake-ms")
}

// BenchmarkIdleRSS registers 1,000 services with the agent API (each with a
// TTL check) and reports the agent's resident memory once idle.
func BenchmarkIdleRSS(b *testing.B) {
	a := startDevAgent(b)
	b.StopTimer()
	before := a.rssBytes(b)
	for i := 0; i < 1000; i++ {
		err := a.Client.Agent().ServiceRegister(&consulapi.AgentServiceRegistration{
			ID: fmt.Sprintf("svc-%d", i), Name: fmt.Sprintf("svc-%d", i%100), Port: 10000 + i,
			Tags:  []string{"v1", "bench"},
			Check: &consulapi.AgentServiceCheck{TTL: "10m", Status: "passing"},
		})
		if err != nil {
			b.Fatalf("register service %d: %v", i, err)
		}
	}
	retry.RunWith(&retry.Timer{Timeout: 60 * time.Second, Wait: 100 * time.Millisecond}, b, func(r *retry.R) {
		svcs, _, err := a.Client.Catalog().Services(nil)
		if err != nil || len(svcs) < 100 {
			r.Fatalf("catalog has %d services (%v)", len(svcs), err)
		}
	})
	// Idle: let background work (anti-entropy, GC) settle by sampling until two
	// readings 2 s apart differ by less than 2%.
	var rss int64
	prev := a.rssBytes(b)
	for range 15 {
		time.Sleep(2 * time.Second) // sampling period of an idle process, not a wait for a condition
		rss = a.rssBytes(b)
		if diff := rss - prev; diff < prev/50 && -diff < prev/50 {
			break
		}
		prev = rss
	}
	b.ReportMetric(float64(before)/(1<<20), "rss-empty-MiB")
	b.ReportMetric(float64(rss)/(1<<20), "rss-1000svc-MiB")
}

func maxAndMedian(d []time.Duration) (time.Duration, time.Duration) {
	sorted := slices.Clone(d)
	slices.Sort(sorted)
	return sorted[len(sorted)-1], sorted[len(sorted)/2]
}

// waitBlocked waits until at least n connections to the agent's HTTP port
// are established, as /proc/net/tcp shows them.
func waitBlocked(tb testing.TB, a *devAgent, n int) {
	tb.Helper()
	_, port, _ := net.SplitHostPort(a.HTTPAddr)
	p, _ := strconv.Atoi(port)
	hexPort := fmt.Sprintf(":%04X", p)
	retry.RunWith(&retry.Timer{Timeout: 30 * time.Second, Wait: 20 * time.Millisecond}, tb, func(r *retry.R) {
		data, err := os.ReadFile("/proc/net/tcp")
		if err != nil {
			r.Fatal(err)
		}
		count := 0
		for _, line := range strings.Split(string(data), "\n") {
			f := strings.Fields(line)
			// local_address is f[1]; state 01 is ESTABLISHED.
			if len(f) > 3 && strings.HasSuffix(f[1], hexPort) && f[3] == "01" {
				count++
			}
		}
		if count < n {
			r.Fatalf("%d of %d connections established", count, n)
		}
	})
}
