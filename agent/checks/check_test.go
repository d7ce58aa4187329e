package checks

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"go.uber.org/goleak"

	"github.com/trellismesh/trellis/internal/retry"
	"github.com/trellismesh/trellis/internal/testutil"
	"github.com/trellismesh/trellis/raftstore/structs"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type update struct{ id, status, output string }

// recorder is a Notifier that keeps every result.
type recorder struct {
	mu      sync.Mutex
	updates []update
}

func (r *recorder) UpdateCheck(id, status, output string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.updates = append(r.updates, update{id, status, output})
}

func (r *recorder) all() []update {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]update(nil), r.updates...)
}

func (r *recorder) last() (update, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.updates) == 0 {
		return update{}, false
	}
	return r.updates[len(r.updates)-1], true
}

// waitStatus waits until the last result has status and returns it.
func (r *recorder) waitStatus(t *testing.T, status string) update {
	t.Helper()
	var got update
	retry.Run(t, func(rr *retry.R) {
		u, ok := r.last()
		if !ok {
			rr.Fatal("no result yet")
		}
		if u.status != status {
			rr.Fatalf("status %q (output %q), want %q", u.status, u.output, status)
		}
		got = u
	})
	return got
}

func startCheck(t *testing.T, def *structs.CheckType) (*recorder, Check) {
	t.Helper()
	rec := &recorder{}
	c, err := New(Config{CheckID: "chk", Def: def, Notifier: rec, Logger: testutil.Logger(t)})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	c.Start()
	t.Cleanup(c.Stop)
	return rec, c
}

func httpDef(url string) *structs.CheckType {
	return &structs.CheckType{HTTP: url, Interval: 100 * time.Millisecond}
}

func TestHTTP_status(t *testing.T) {
	t.Parallel()
	tests := []struct {
		code   int
		want   string
		output string
	}{
		{200, structs.HealthPassing, "200 OK Output: hello"},
		{204, structs.HealthPassing, "204 No Content Output: "},
		{429, structs.HealthWarning, "429 Too Many Requests Output: hello"},
		{500, structs.HealthCritical, "500 Internal Server Error Output: hello"},
		{404, structs.HealthCritical, "404 Not Found Output: hello"},
	}
	for _, test := range tests {
		t.Run(fmt.Sprint(test.code), func(t *testing.T) {
			t.Parallel()
			var ua sync.Map
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				ua.Store("ua", r.UserAgent())
				ua.Store("method", r.Method)
				w.WriteHeader(test.code)
				io.WriteString(w, "hello")
			}))
			t.Cleanup(srv.Close)

			rec, _ := startCheck(t, httpDef(srv.URL+"/health"))
			got := rec.waitStatus(t, test.want)
			want := "HTTP GET " + srv.URL + "/health: " + test.output
			if got.output != want {
				t.Errorf("output %q, want %q", got.output, want)
			}
			if got.id != "chk" {
				t.Errorf("check ID %q, want chk", got.id)
			}
			if v, _ := ua.Load("ua"); v != UserAgent {
				t.Errorf("User-Agent %q, want %q", v, UserAgent)
			}
			if v, _ := ua.Load("method"); v != http.MethodGet {
				t.Errorf("method %q, want GET", v)
			}
		})
	}
}

func TestHTTP_methodHeaderBody(t *testing.T) {
	t.Parallel()
	type seen struct{ method, body, header, host, ua string }
	got := make(chan seen, 10)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		select {
		case got <- seen{r.Method, string(b), r.Header.Get("X-Probe"), r.Host, r.UserAgent()}:
		default:
		}
	}))
	t.Cleanup(srv.Close)

	def := httpDef(srv.URL)
	def.Method = "PUT"
	def.Body = `{"ping":true}`
	def.Header = map[string][]string{"X-Probe": {"yes"}, "Host": {"example.test"}, "User-Agent": {"mine"}}
	rec, _ := startCheck(t, def)
	rec.waitStatus(t, structs.HealthPassing)
	s := <-got
	want := seen{"PUT", `{"ping":true}`, "yes", "example.test", "mine"}
	if s != want {
		t.Errorf("server saw %+v, want %+v", s, want)
	}
	if u, _ := rec.last(); !strings.HasPrefix(u.output, "HTTP PUT ") {
		t.Errorf("output %q, want it to start with HTTP PUT", u.output)
	}
}

func TestHTTP_timeout(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-r.Context().Done() // never answers; the check gives up
	}))
	t.Cleanup(srv.Close)

	def := httpDef(srv.URL)
	def.Timeout = 50 * time.Millisecond
	rec, _ := startCheck(t, def)
	got := rec.waitStatus(t, structs.HealthCritical)
	if want := "timed out after 50ms"; !strings.Contains(got.output, want) {
		t.Errorf("output %q, want it to contain %q", got.output, want)
	}
}

func TestHTTP_connectionRefused(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()

	rec, _ := startCheck(t, httpDef("http://"+addr+"/"))
	got := rec.waitStatus(t, structs.HealthCritical)
	if !strings.Contains(got.output, "connection refused") || !strings.HasPrefix(got.output, "HTTP GET http://"+addr+"/: ") {
		t.Errorf("output %q, want HTTP GET <url>: ... connection refused", got.output)
	}
}

func TestHTTP_outputTruncated(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, strings.Repeat("é", 10000))
	}))
	t.Cleanup(srv.Close)

	def := httpDef(srv.URL)
	def.OutputMaxSize = 101
	rec, _ := startCheck(t, def)
	got := rec.waitStatus(t, structs.HealthPassing)
	if len(got.output) > 101 {
		t.Errorf("output is %d bytes, want at most 101", len(got.output))
	}
	if !strings.HasSuffix(got.output, "é") {
		t.Errorf("output %q was cut inside a character", got.output)
	}

	// The default cap.
	rec2, _ := startCheck(t, httpDef(srv.URL))
	got = rec2.waitStatus(t, structs.HealthPassing)
	if len(got.output) > DefaultOutputMaxSize || len(got.output) < DefaultOutputMaxSize-1 {
		t.Errorf("output is %d bytes, want about %d", len(got.output), DefaultOutputMaxSize)
	}
}

func TestHTTP_redirects(t *testing.T) {
	t.Parallel()
	mux := http.NewServeMux()
	mux.HandleFunc("/loop", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/loop", http.StatusFound)
	})
	mux.HandleFunc("/once", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/ok", http.StatusFound)
	})
	mux.HandleFunc("/ok", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "fine") })
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)

	rec, _ := startCheck(t, httpDef(srv.URL+"/once"))
	if got := rec.waitStatus(t, structs.HealthPassing); !strings.HasSuffix(got.output, "Output: fine") {
		t.Errorf("output %q, want the redirect target's body", got.output)
	}
	rec2, _ := startCheck(t, httpDef(srv.URL+"/loop"))
	if got := rec2.waitStatus(t, structs.HealthCritical); !strings.Contains(got.output, "302 Found") {
		t.Errorf("output %q, want the last 302", got.output)
	}
}

func TestHTTP_TLSSkipVerify(t *testing.T) {
	t.Parallel()
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the unverified probe fails the handshake on purpose
	srv.StartTLS()
	t.Cleanup(srv.Close)

	// TLS handshakes under the race detector can take longer than the
	// 100ms of httpDef's interval (which also bounds the timeout).
	def := httpDef(srv.URL)
	def.TLSSkipVerify = true
	def.Interval = 2 * time.Second
	rec, _ := startCheck(t, def)
	rec.waitStatus(t, structs.HealthPassing)

	def2 := httpDef(srv.URL)
	def2.Interval = 2 * time.Second
	rec2, _ := startCheck(t, def2)
	if got := rec2.waitStatus(t, structs.HealthCritical); !strings.Contains(got.output, "certificate") {
		t.Errorf("output %q, want a certificate error", got.output)
	}
}

func TestHTTP_stopClosesConnections(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	t.Cleanup(srv.Close)
	rec, c := startCheck(t, httpDef(srv.URL))
	retry.Run(t, func(r *retry.R) {
		if n := len(rec.all()); n < 2 {
			r.Fatalf("%d results, want 2 (a reused connection)", n)
		}
	})
	c.Stop()
	c.Stop() // idempotent
	n := len(rec.all())
	c.Start() // a stopped check stays stopped
	// goleak (TestMain) fails on transport goroutines left by an idle
	// connection that Stop did not close.
	if got := len(rec.all()); got != n {
		t.Errorf("results after Stop: %d, want %d", got, n)
	}
}

func TestTCP(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			conn.Close()
		}
	}()
	addr := ln.Addr().String()
	rec, _ := startCheck(t, &structs.CheckType{TCP: addr, Interval: 100 * time.Millisecond})
	got := rec.waitStatus(t, structs.HealthPassing)
	if want := "TCP connect " + addr + ": Success"; got.output != want {
		t.Errorf("output %q, want %q", got.output, want)
	}

	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedAddr := closed.Addr().String()
	closed.Close()
	rec2, _ := startCheck(t, &structs.CheckType{TCP: closedAddr, Interval: 100 * time.Millisecond})
	got = rec2.waitStatus(t, structs.HealthCritical)
	if !strings.HasPrefix(got.output, "TCP connect "+closedAddr+": ") || !strings.Contains(got.output, "refused") {
		t.Errorf("output %q, want TCP connect <addr>: ... refused", got.output)
	}
}

func TestTTL(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		rec := &recorder{}
		c, err := New(Config{CheckID: "ttl", Def: &structs.CheckType{TTL: 10 * time.Second}, Notifier: rec, Logger: testutil.Logger(t)})
		if err != nil {
			t.Fatal(err)
		}
		ttl := c.(*TTL)
		ttl.Start()
		defer ttl.Stop()

		for _, status := range []string{structs.HealthPassing, structs.HealthWarning, structs.HealthCritical, structs.HealthPassing} {
			if err := ttl.SetStatus(status, "set "+status); err != nil {
				t.Fatalf("SetStatus(%q): %v", status, err)
			}
			if u, _ := rec.last(); u != (update{"ttl", status, "set " + status}) {
				t.Errorf("after SetStatus(%q) last result %+v", status, u)
			}
		}
		var ve *structs.ValidationError
		if err := ttl.SetStatus("bogus", ""); !errors.As(err, &ve) || ve.Field != "Status" {
			t.Errorf("SetStatus(bogus) = %v, want a validation error on Status", err)
		}

		// Updates within the TTL keep it alive.
		for range 3 {
			time.Sleep(9 * time.Second) // fake time: advances the bubble's clock
			if err := ttl.SetStatus(structs.HealthPassing, "alive"); err != nil {
				t.Fatal(err)
			}
			synctest.Wait()
			if u, _ := rec.last(); u.status != structs.HealthPassing {
				t.Fatalf("expired despite updates: %+v", u)
			}
		}
		// Silence past the TTL turns it critical, once.
		time.Sleep(10*time.Second + time.Millisecond)
		synctest.Wait()
		u, _ := rec.last()
		want := update{"ttl", structs.HealthCritical, "TTL expired (last output before timeout follows): alive"}
		if u != want {
			t.Errorf("after the TTL: %+v, want %+v", u, want)
		}
		n := len(rec.all())
		time.Sleep(time.Minute)
		synctest.Wait()
		if got := len(rec.all()); got != n {
			t.Errorf("%d results after expiry, want %d (expiry reported once)", got, n)
		}
		// A new status revives it, and the TTL runs again.
		if err := ttl.SetStatus(structs.HealthPassing, ""); err != nil {
			t.Fatal(err)
		}
		time.Sleep(11 * time.Second)
		synctest.Wait()
		if u, _ := rec.last(); u.output != ttlExpiredOutput || u.status != structs.HealthCritical {
			t.Errorf("second expiry %+v, want critical %q", u, ttlExpiredOutput)
		}
	})
}

func TestTTL_expiresFromStart(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		rec := &recorder{}
		c, err := New(Config{Def: &structs.CheckType{CheckID: "from-def", TTL: time.Second}, Notifier: rec, Logger: testutil.Logger(t)})
		if err != nil {
			t.Fatal(err)
		}
		c.Start()
		defer c.Stop()
		time.Sleep(999 * time.Millisecond)
		synctest.Wait()
		if n := len(rec.all()); n != 0 {
			t.Fatalf("%d results before the TTL passed", n)
		}
		time.Sleep(2 * time.Millisecond)
		synctest.Wait()
		if u, _ := rec.last(); u != (update{"from-def", structs.HealthCritical, ttlExpiredOutput}) {
			t.Errorf("got %+v, want critical TTL expired under from-def", u)
		}
	})
}

// TestPeriodic_damping drives a periodic check with a scripted probe on a
// fake clock.
func TestPeriodic_damping(t *testing.T) {
	t.Parallel()
	P, W, C := structs.HealthPassing, structs.HealthWarning, structs.HealthCritical
	tests := []struct {
		name                string
		success, failures   int
		results, wantReport []string
	}{
		{"none", 0, 0, []string{P, C, P, W}, []string{P, C, P, W}},
		{"one is none", 1, 1, []string{P, C, P}, []string{P, C, P}},
		{"success 2", 2, 0, []string{P, C, P, P, P}, []string{C, P, P}},
		{"failures 3", 0, 3, []string{P, C, C, P, C, W, C, P}, []string{P, P, C, P}},
		{"both", 2, 2, []string{C, C, P, C, P, P, C}, []string{C, P}},
	}
	for _, test := range tests {
		t.Run(test.name, func(t *testing.T) {
			t.Parallel()
			synctest.Test(t, func(t *testing.T) {
				rec := &recorder{}
				var probes atomic.Int32
				probe := func(context.Context) (string, string) {
					n := probes.Add(1)
					return test.results[n-1], fmt.Sprint("probe ", n)
				}
				p := newPeriodic(base{
					id: "d", notifier: rec, logger: testutil.Logger(t),
					def: structs.CheckType{
						TCP: "127.0.0.1:1", Interval: 10 * time.Second,
						SuccessBeforePassing: test.success, FailuresBeforeCritical: test.failures,
					},
				}, probe)
				p.Start()
				// The first probe is within a second, the second within the
				// next interval, then one per interval.
				time.Sleep(time.Second)
				synctest.Wait()
				for int(probes.Load()) < len(test.results) {
					time.Sleep(10 * time.Second)
					synctest.Wait()
				}
				p.Stop()
				var got []string
				for _, u := range rec.all() {
					got = append(got, u.status)
				}
				if fmt.Sprint(got) != fmt.Sprint(test.wantReport) {
					t.Errorf("reported %v, want %v", got, test.wantReport)
				}
			})
		})
	}
}

func TestPeriodic_timing(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		var mu sync.Mutex
		var times []time.Time
		start := time.Now()
		p := newPeriodic(base{id: "t", notifier: &recorder{}, logger: testutil.Logger(t),
			def: structs.CheckType{TCP: "127.0.0.1:1", Interval: 30 * time.Second}},
			func(context.Context) (string, string) {
				mu.Lock()
				times = append(times, time.Now())
				mu.Unlock()
				return structs.HealthPassing, ""
			})
		p.Start()
		time.Sleep(2*time.Minute + time.Second)
		synctest.Wait()
		p.Stop()
		mu.Lock()
		defer mu.Unlock()
		if len(times) < 4 {
			t.Fatalf("%d probes in 2 min at 30 s", len(times))
		}
		if d := times[0].Sub(start); d >= MaxFirstDelay {
			t.Errorf("first probe after %s, want under %s", d, MaxFirstDelay)
		}
		if d := times[1].Sub(times[0]); d < 15*time.Second || d >= 30*time.Second {
			t.Errorf("second probe %s after the first, want in [15s, 30s)", d)
		}
		for i := 2; i < len(times); i++ {
			if d := times[i].Sub(times[i-1]); d != 30*time.Second {
				t.Errorf("probe %d came %s after the previous, want 30s", i, d)
			}
		}
	})
}

func TestProbeTimeout(t *testing.T) {
	t.Parallel()
	tests := []struct{ timeout, interval, want time.Duration }{
		{0, time.Minute, DefaultTimeout},
		{0, time.Second, time.Second},
		{2 * time.Second, time.Minute, 2 * time.Second},
		{time.Minute, 5 * time.Second, 5 * time.Second},
	}
	for _, test := range tests {
		if got := probeTimeout(test.timeout, test.interval); got != test.want {
			t.Errorf("probeTimeout(%s, %s) got %s, want %s", test.timeout, test.interval, got, test.want)
		}
	}
}

func TestNew_badInput(t *testing.T) {
	t.Parallel()
	rec := &recorder{}
	tests := []struct {
		name string
		cfg  Config
		want string
	}{
		{"no def", Config{CheckID: "x", Notifier: rec}, "definition"},
		{"no id", Config{Def: &structs.CheckType{TTL: time.Second}, Notifier: rec}, "CheckID"},
		{"no type", Config{CheckID: "x", Def: &structs.CheckType{}, Notifier: rec}, "one of HTTP, TCP or TTL"},
		{"bad url", Config{CheckID: "x", Def: &structs.CheckType{HTTP: "ftp://x", Interval: time.Second}, Notifier: rec}, "Check.HTTP"},
		{"short interval", Config{CheckID: "x", Def: &structs.CheckType{TCP: "a:1", Interval: time.Millisecond}, Notifier: rec}, "Check.Interval"},
		{"no notifier", Config{CheckID: "x", Def: &structs.CheckType{TTL: time.Second}}, "notifier"},
	}
	for _, test := range tests {
		t.Run(test.name, func(t *testing.T) {
			c, err := New(test.cfg)
			if err == nil || !strings.Contains(err.Error(), test.want) {
				t.Errorf("New() = %v, %v; want an error mentioning %q", c, err, test.want)
			}
		})
	}
}

func TestNew_types(t *testing.T) {
	t.Parallel()
	rec := &recorder{}
	for _, test := range []struct {
		def  *structs.CheckType
		want string
	}{
		{&structs.CheckType{TTL: time.Second}, "*checks.TTL"},
		{&structs.CheckType{HTTP: "http://127.0.0.1:1/", Interval: time.Second}, "*checks.HTTP"},
		{&structs.CheckType{TCP: "127.0.0.1:1", Interval: time.Second}, "*checks.TCP"},
	} {
		c, err := New(Config{CheckID: "x", Def: test.def, Notifier: rec})
		if err != nil {
			t.Fatal(err)
		}
		if got := fmt.Sprintf("%T", c); got != test.want {
			t.Errorf("New(%+v) is %s, want %s", test.def, got, test.want)
		}
		c.Stop() // before Start: does nothing
		c.Stop()
	}
}

func TestTruncate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in   string
		n    int
		want string
	}{
		{"hello", 10, "hello"},
		{"hello", 5, "hello"},
		{"hello", 3, "hel"},
		{"héllo", 2, "h"},
		{"héllo", 3, "hé"},
		{"日本", 2, ""},
	}
	for _, test := range tests {
		if got := truncate(test.in, test.n); got != test.want {
			t.Errorf("truncate(%q, %d) got %q, want %q", test.in, test.n, got, test.want)
		}
	}
}
