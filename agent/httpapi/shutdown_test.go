package httpapi

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/trellismesh/trellis/internal/retry"
	"github.com/trellismesh/trellis/raftstore/structs"
)

// hookedAgent is a testAgent that tells the test when a blocking read
// reaches it, and holds catalog registrations until release is closed.
type hookedAgent struct {
	*testAgent
	blocked     chan string   // the method of each blocking read, as it starts
	registering chan struct{} // a registration has reached the agent
	release     chan struct{} // closed to let registrations through
}

func newHookedAgent(a *testAgent) *hookedAgent {
	return &hookedAgent{testAgent: a, blocked: make(chan string, 8), registering: make(chan struct{}, 8), release: make(chan struct{})}
}

func (a *hookedAgent) RPC(ctx context.Context, method string, args, reply any) error {
	if q, ok := args.(interface{ QueryOpts() *structs.QueryOptions }); ok && q.QueryOpts().MinQueryIndex > 0 {
		a.blocked <- method
	}
	if method == structs.MethodCatalogRegister {
		a.registering <- struct{}{}
		select {
		case <-a.release:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return a.testAgent.RPC(ctx, method, args, reply)
}

func (a *hookedAgent) ConnectLeaf(ctx context.Context, service string, minIndex uint64, wait time.Duration) (*structs.IssuedCert, error) {
	if minIndex > 0 {
		a.blocked <- "leaf"
	}
	return a.testAgent.ConnectLeaf(ctx, service, minIndex, wait)
}

// answer is what a request in the background got.
type answer struct {
	path   string
	status int
	index  string
	body   string
	err    error
}

func getInBackground(client *http.Client, url, path string, out chan<- answer) {
	go func() {
		resp, err := client.Get(url + path)
		if err != nil {
			out <- answer{path: path, err: err}
			return
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		out <- answer{path: path, status: resp.StatusCode, index: resp.Header.Get("X-Consul-Index"), body: string(b), err: err}
	}()
}

func indexOf(t *testing.T, client *http.Client, url string) string {
	t.Helper()
	resp, err := client.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	idx := resp.Header.Get("X-Consul-Index")
	if resp.StatusCode != http.StatusOK || idx == "" || idx == "0" {
		t.Fatalf("GET %s: %s, X-Consul-Index %q", url, resp.Status, idx)
	}
	return idx
}

// receive waits for a value of ch, failing the test after 10 s.
func receive[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	timer := time.NewTimer(10 * time.Second)
	defer timer.Stop()
	select {
	case v := <-ch:
		return v
	case <-timer.C:
		t.Fatalf("no %s after 10s", what)
		panic("unreachable")
	}
}

// TestServer_ShutdownAnswersBlockingQueries: blocking queries in flight
// (a catalog read and the agent's leaf) are answered at once, with the
// current result and index, when the API shuts down, and Shutdown returns
// nil long before its deadline instead of waiting out their 5-minute waits.
func TestServer_ShutdownAnswersBlockingQueries(t *testing.T) {
	t.Parallel()
	ta, _, cc, _ := startAPI(t)
	a := newHookedAgent(ta)
	hs := serveAPI(t, a, Config{})
	base := "http://" + hs.Addrs()[0].String()
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	waitCA(t, cc)

	servicesIdx := indexOf(t, client, base+"/v1/catalog/services")
	leafIdx := indexOf(t, client, base+"/v1/agent/connect/ca/leaf/web")

	answers := make(chan answer, 2)
	getInBackground(client, base, "/v1/catalog/services?index="+servicesIdx+"&wait=5m", answers)
	getInBackground(client, base, "/v1/agent/connect/ca/leaf/web?index="+leafIdx+"&wait=5m", answers)
	for range 2 {
		receive(t, a.blocked, "blocking query reaching the agent")
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	start := time.Now()
	err := hs.Shutdown(ctx)
	took := time.Since(start)
	if err != nil {
		t.Errorf("Shutdown with blocking queries in flight = %v after %s; want nil", err, took)
	}
	if took > 5*time.Second {
		t.Errorf("Shutdown took %s with blocking queries in flight; want them answered at once", took)
	}

	want := map[string]string{"/v1/catalog/services": servicesIdx, "/v1/agent/connect/ca/leaf/web": leafIdx}
	for range 2 {
		got := receive(t, answers, "answer to a blocking query")
		path, _, _ := strings.Cut(got.path, "?")
		if got.err != nil || got.status != http.StatusOK {
			t.Errorf("GET %s during shutdown: status %d, error %v, body %q; want 200", got.path, got.status, got.err, got.body)
			continue
		}
		if got.index != want[path] {
			t.Errorf("GET %s during shutdown: X-Consul-Index %q, want the current %s", got.path, got.index, want[path])
		}
		var body map[string]any
		if err := json.Unmarshal([]byte(got.body), &body); err != nil {
			t.Errorf("GET %s during shutdown: body %q: %v", got.path, got.body, err)
		}
		if path == "/v1/agent/connect/ca/leaf/web" && body["CertPEM"] == nil {
			t.Errorf("leaf answered during shutdown lacks its certificate: %q", got.body)
		}
	}
}

// TestServer_ShutdownLetsRequestsFinish: an ordinary request in flight
// keeps its grace period; Shutdown waits for it and it is answered.
func TestServer_ShutdownLetsRequestsFinish(t *testing.T) {
	t.Parallel()
	ta, _, _, _ := startAPI(t)
	a := newHookedAgent(ta)
	hs := serveAPI(t, a, Config{})
	addr := hs.Addrs()[0].String()
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}

	registered := make(chan answer, 1)
	go func() {
		body := `{"Node": "n2", "Address": "10.0.0.2"}`
		req, err := http.NewRequest(http.MethodPut, "http://"+addr+"/v1/catalog/register", strings.NewReader(body))
		if err != nil {
			registered <- answer{err: err}
			return
		}
		resp, err := client.Do(req)
		if err != nil {
			registered <- answer{err: err}
			return
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		registered <- answer{status: resp.StatusCode, body: string(b), err: err}
	}()
	receive(t, a.registering, "registration reaching the agent")

	stopped := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		stopped <- hs.Shutdown(ctx)
	}()
	// Shutdown has begun once the listener is closed.
	retry.Run(t, func(r *retry.R) {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			r.Fatalf("%s still accepts connections", addr)
		}
	})
	select {
	case err := <-stopped:
		t.Fatalf("Shutdown returned (%v) while a registration was in flight", err)
	default:
	}
	close(a.release)

	got := receive(t, registered, "answer to the registration")
	if got.err != nil || got.status != http.StatusOK {
		t.Errorf("registration during shutdown: status %d, error %v, body %q; want 200", got.status, got.err, got.body)
	}
	if err := receive(t, stopped, "end of Shutdown"); err != nil {
		t.Errorf("Shutdown = %v, want nil", err)
	}
}
