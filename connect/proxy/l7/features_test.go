package l7

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/trellismesh/trellis/connect"
	"github.com/trellismesh/trellis/connect/configentry"
	"github.com/trellismesh/trellis/connect/intentions"
	"github.com/trellismesh/trellis/internal/retry"
)

// h2cClient returns a client speaking HTTP/2 with prior knowledge, as gRPC
// clients do.
func h2cClient(t testing.TB) *http.Client {
	p := new(http.Protocols)
	p.SetUnencryptedHTTP2(true)
	tr := &http.Transport{Protocols: p}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 20 * time.Second}
}

// TestOutbound_GRPCStreamTrailers runs a bidirectional stream of
// newline-framed messages over h2c from the client to an h2c app, through
// both proxies, and checks that each message is answered before the next
// is sent (nothing is buffered) and that the trailers arrive.
func TestOutbound_GRPCStreamTrailers(t *testing.T) {
	m := newMesh(t)
	a := startApp(t, true, func(w http.ResponseWriter, r *http.Request) {
		if r.ProtoMajor != 2 || r.Header.Get("Te") != "trailers" {
			http.Error(w, fmt.Sprintf("proto %s, te %q", r.Proto, r.Header.Get("Te")), 400)
			return
		}
		w.Header().Set("Content-Type", "application/grpc")
		w.Header().Set("Trailer", "Grpc-Status, Grpc-Message")
		w.WriteHeader(200)
		w.(http.Flusher).Flush()
		sc := bufio.NewScanner(r.Body)
		n := 0
		for sc.Scan() {
			n++
			fmt.Fprintf(w, "echo %s\n", sc.Text())
			w.(http.Flusher).Flush()
		}
		w.Header().Set("Grpc-Status", "0")
		w.Header().Set("Grpc-Message", fmt.Sprintf("%d messages", n))
	})
	d := startDest(t, m, InboundConfig{Service: "api", LocalAppAddr: a.addr, Protocol: configentry.ProtocolGRPC})
	s := startSource(t, m, OutboundConfig{DestinationName: "api"},
		&configentry.ServiceConfigEntry{Kind: configentry.ServiceDefaults, Name: "api", Protocol: "grpc"})
	s.out.SetTargetEndpoints(targetID("api"), []Endpoint{d.endpoint()})

	pr, pw := io.Pipe()
	req, err := http.NewRequest("POST", s.url+"/echo.Echo/Stream", pr)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/grpc")
	req.Header.Set("Te", "trailers")
	resp, err := h2cClient(t).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 || resp.ProtoMajor != 2 {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("stream: %d %s %q", resp.StatusCode, resp.Proto, b)
	}
	br := bufio.NewReader(resp.Body)
	for i := range 3 {
		if _, err := fmt.Fprintf(pw, "msg-%d\n", i); err != nil {
			t.Fatal(err)
		}
		line, err := br.ReadString('\n')
		if err != nil || line != fmt.Sprintf("echo msg-%d\n", i) {
			t.Fatalf("message %d: %q, %v", i, line, err)
		}
	}
	pw.Close()
	if rest, err := io.ReadAll(br); err != nil || len(rest) != 0 {
		t.Fatalf("after the stream: %q, %v", rest, err)
	}
	if got := resp.Trailer.Get("Grpc-Status"); got != "0" {
		t.Errorf("trailer Grpc-Status %q, want 0 (trailers %v)", got, resp.Trailer)
	}
	if got := resp.Trailer.Get("Grpc-Message"); got != "3 messages" {
		t.Errorf("trailer Grpc-Message %q", got)
	}
}

// An http2 application's trailers reach an HTTP/1.1 caller too, though
// the application gave its body a length: the source proxy sends the body
// chunked, with the trailers it announces after it.
func TestOutbound_TrailersOfAnHTTP2AppReachAnHTTP1Caller(t *testing.T) {
	m := newMesh(t)
	a := startApp(t, true, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Trailer", "X-Trail")
		w.Header().Set("Content-Length", "4")
		io.WriteString(w, "body")
		w.Header().Set("X-Trail", "done")
	})
	d := startDest(t, m, InboundConfig{Service: "api", LocalAppAddr: a.addr, Protocol: configentry.ProtocolHTTP2})
	s := startSource(t, m, OutboundConfig{DestinationName: "api"},
		&configentry.ServiceConfigEntry{Kind: configentry.ServiceDefaults, Name: "api", Protocol: "http2"})
	s.out.SetTargetEndpoints(targetID("api"), []Endpoint{d.endpoint()})
	for name, c := range map[string]*http.Client{"HTTP/1.1": client(t), "h2c": h2cClient(t)} {
		resp, err := c.Get(s.url + "/t")
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || string(b) != "body" || resp.StatusCode != 200 {
			t.Fatalf("%s: %d %q, %v", name, resp.StatusCode, b, err)
		}
		if got := resp.Trailer.Get("X-Trail"); got != "done" {
			t.Errorf("%s caller: trailer X-Trail %q, want done (trailers %v, header %v)", name, got, resp.Trailer, resp.Header)
		}
	}
}

func TestOutbound_OneHandshakeFor200Requests(t *testing.T) {
	s, d, a := pairOf(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
	c := client(t)
	var wg sync.WaitGroup
	errs := make(chan error, 200)
	for w := range 10 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 20 {
				resp, err := c.Get(fmt.Sprintf("%s/r/%d/%d", s.url, w, i))
				if err != nil {
					errs <- err
					return
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					errs <- fmt.Errorf("status %d", resp.StatusCode)
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if n := a.hits.Load(); n != 200 {
		t.Fatalf("app saw %d requests, want 200", n)
	}
	if n := d.accepted.Load(); n != 1 {
		t.Errorf("destination accepted %d connections for 200 requests, want 1", n)
	}
	if n := s.out.Handshakes(); n != 1 {
		t.Errorf("source did %d TLS handshakes for 200 requests, want 1", n)
	}
	s.out.reg.flush()
	if n := metric("upstream.connections", "proxy="+s.out.cfg.ProxyID); n != 1 {
		t.Errorf("upstream.connections is %v, want 1", n)
	}
	waitMetric(t, &s.out.reg, "upstream.requests", 200, "proxy="+s.out.cfg.ProxyID, "class=2xx")
}

func TestOutbound_RouteByPathHeaderAndRewrite(t *testing.T) {
	m := newMesh(t)
	echo := func(name string) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, "%s %s x-added=%s", name, r.URL.Path, r.Header.Get("X-Added"))
		}
	}
	api := startDest(t, m, InboundConfig{Service: "api", LocalAppAddr: startApp(t, false, echo("api")).addr})
	admin := startDest(t, m, InboundConfig{Service: "admin", LocalAppAddr: startApp(t, false, echo("admin")).addr})
	router := &configentry.ServiceRouterConfigEntry{Kind: configentry.ServiceRouter, Name: "api", Routes: []configentry.ServiceRoute{
		{
			Match: &configentry.ServiceRouteMatch{HTTP: &configentry.ServiceRouteHTTPMatch{PathPrefix: "/admin/"}},
			Destination: &configentry.ServiceRouteDestination{Service: "admin", PrefixRewrite: "/",
				RequestHeaders: &configentry.HTTPHeaderModifiers{Set: map[string]string{"X-Added": "yes"}}},
		},
		{
			Match:       &configentry.ServiceRouteMatch{HTTP: &configentry.ServiceRouteHTTPMatch{Header: []configentry.ServiceRouteHTTPMatchHeader{{Name: "X-Role", Exact: "admin"}}}},
			Destination: &configentry.ServiceRouteDestination{Service: "admin"},
		},
	}}
	s := startSource(t, m, OutboundConfig{DestinationName: "api"}, router)
	s.out.SetTargetEndpoints(targetID("api"), []Endpoint{api.endpoint()})
	s.out.SetTargetEndpoints(targetID("admin"), []Endpoint{admin.endpoint()})
	c := client(t)
	for _, tc := range []struct {
		path, role, want string
	}{
		{"/admin/users", "", "admin /users x-added=yes"},
		{"/users", "", "api /users x-added="},
		{"/users", "admin", "admin /users x-added="},
	} {
		status, body, _ := get(t, c, s.url+tc.path, "X-Role", tc.role)
		if status != 200 || body != tc.want {
			t.Errorf("%s (role %q): %d %q, want %q", tc.path, tc.role, status, body, tc.want)
		}
	}
	waitMetric(t, &s.out.reg, "upstream.requests", 1, "route=route:0", "class=2xx", "proxy="+s.out.cfg.ProxyID)
}

func TestOutbound_Split90_10(t *testing.T) {
	m := newMesh(t)
	v1 := startDest(t, m, InboundConfig{Service: "api", LocalAppAddr: startApp(t, false, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "v1") }).addr})
	v2 := startDest(t, m, InboundConfig{Service: "api", LocalAppAddr: startApp(t, false, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "v2") }).addr})
	resolver := &configentry.ServiceResolverConfigEntry{Kind: configentry.ServiceResolver, Name: "api", Subsets: map[string]configentry.ServiceResolverSubset{
		"v1": {Filter: "Service.Meta.version == v1"}, "v2": {Filter: "Service.Meta.version == v2"},
	}}
	splitter := &configentry.ServiceSplitterConfigEntry{Kind: configentry.ServiceSplitter, Name: "api", Splits: []configentry.ServiceSplit{
		{Weight: 90, ServiceSubset: "v1"},
		{Weight: 10, ServiceSubset: "v2", ResponseHeaders: &configentry.HTTPHeaderModifiers{Set: map[string]string{"X-Canary": "1"}}},
	}}
	s := startSource(t, m, OutboundConfig{DestinationName: "api"}, resolver, splitter)
	s.out.SetTargetEndpoints(targetID("api", "v1"), []Endpoint{v1.endpoint()})
	s.out.SetTargetEndpoints(targetID("api", "v2"), []Endpoint{v2.endpoint()})
	c := client(t)
	counts := map[string]int{}
	for range 1000 {
		status, body, hdr := get(t, c, s.url+"/")
		if status != 200 {
			t.Fatalf("status %d %q", status, body)
		}
		if (body == "v2") != (hdr.Get("X-Canary") == "1") {
			t.Fatalf("answer %s with X-Canary %q", body, hdr.Get("X-Canary"))
		}
		counts[body]++
	}
	// 1000 draws at 10%: the standard deviation is 9.5; allow 4.5 of them.
	if counts["v2"] < 57 || counts["v2"] > 143 || counts["v1"]+counts["v2"] != 1000 {
		t.Fatalf("split %v, want about 900/100", counts)
	}
	t.Logf("split %v", counts)
}

// retryRouter is a router of api whose catch-all route retries as d says.
func retryRouter(d configentry.ServiceRouteDestination) *configentry.ServiceRouterConfigEntry {
	return &configentry.ServiceRouterConfigEntry{Kind: configentry.ServiceRouter, Name: "api", Routes: []configentry.ServiceRoute{
		{Match: &configentry.ServiceRouteMatch{HTTP: &configentry.ServiceRouteHTTPMatch{PathPrefix: "/"}}, Destination: &d},
	}}
}

func TestOutbound_RetriesHideFlakyBackend(t *testing.T) {
	var n atomic.Int64
	s, _, a := pairOf(t, func(w http.ResponseWriter, r *http.Request) {
		if n.Add(1)%2 == 1 {
			http.Error(w, "flaky", http.StatusServiceUnavailable)
			return
		}
		io.WriteString(w, "ok")
	}, retryRouter(configentry.ServiceRouteDestination{NumRetries: 2, RetryOn: []string{"5xx"}}))
	c := client(t)
	for i := range 100 {
		status, body, _ := get(t, c, s.url+"/flaky")
		if status != 200 {
			t.Fatalf("request %d: %d %q", i, status, body)
		}
	}
	if h := a.hits.Load(); h < 190 || h > 200 {
		t.Errorf("app saw %d requests for 100 answers, want about 200", h)
	}
	waitMetric(t, &s.out.reg, "upstream.retries", 95, "proxy="+s.out.cfg.ProxyID)
}

// TestOutbound_RetryBudget holds 10 failing requests at the app, releases
// them together, and checks that only one retry (the budget's minimum, with
// a percentage that allows fewer) runs while the others give up.
func TestOutbound_RetryBudget(t *testing.T) {
	first, second := make(chan struct{}), make(chan struct{})
	var hits atomic.Int64
	handler := func(w http.ResponseWriter, r *http.Request) {
		if hits.Add(1) <= 10 {
			<-first
		} else {
			<-second
		}
		http.Error(w, "down", http.StatusServiceUnavailable)
	}
	m := newMesh(t)
	a := startApp(t, false, handler)
	d := startDest(t, m, InboundConfig{Service: "api", LocalAppAddr: a.addr})
	s := startSource(t, m, OutboundConfig{DestinationName: "api", Upstream: &configentry.UpstreamConfig{
		RetryBudget:        &configentry.RetryBudget{Percent: 1, MinRetryConcurrency: 1},
		PassiveHealthCheck: &configentry.PassiveHealthCheck{MaxFailures: 1000},
	}}, retryRouter(configentry.ServiceRouteDestination{NumRetries: 2, RetryOn: []string{"5xx"}}))
	s.out.SetTargetEndpoints(targetID("api"), []Endpoint{d.endpoint()})
	t.Cleanup(func() {
		select {
		case <-second:
		default:
			close(second)
		}
	})

	c := client(t)
	statuses := make(chan int, 10)
	var done atomic.Int64
	for range 10 {
		go func() {
			resp, err := c.Get(s.url + "/down")
			if err != nil {
				statuses <- 0
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			done.Add(1)
			statuses <- resp.StatusCode
		}()
	}
	retry.Run(t, func(r *retry.R) {
		if h := hits.Load(); h < 10 {
			r.Fatalf("app holds %d requests, want 10", h)
		}
	})
	close(first)
	// Nine requests give up at once; one retry waits at the app.
	retry.Run(t, func(r *retry.R) {
		if n, h := done.Load(), hits.Load(); n < 9 || h < 11 {
			r.Fatalf("%d requests answered, %d at the app; want 9 and 11", n, h)
		}
	})
	if n, h := done.Load(), hits.Load(); n != 9 || h != 11 {
		t.Errorf("%d answered and %d at the app while the retry waits, want 9 and 11 (10 + 1 retry)", n, h)
	}
	close(second)
	for range 10 {
		if st := <-statuses; st != http.StatusServiceUnavailable {
			t.Errorf("status %d, want the app's 503", st)
		}
	}
	// The retried request retried once more (2 retries in all).
	if h := hits.Load(); h != 12 {
		t.Errorf("app saw %d requests in all, want 12", h)
	}
	waitMetric(t, &s.out.reg, "upstream.retry_budget_exhausted", 9, "proxy="+s.out.cfg.ProxyID)
}

func TestOutbound_EjectsFailingInstance(t *testing.T) {
	m := newMesh(t)
	good := startApp(t, false, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "good") })
	bad := startApp(t, false, func(w http.ResponseWriter, r *http.Request) { http.Error(w, "bad", 500) })
	gd := startDest(t, m, InboundConfig{Service: "api", LocalAppAddr: good.addr})
	bd := startDest(t, m, InboundConfig{Service: "api", LocalAppAddr: bad.addr})
	base := configentry.Duration(400 * time.Millisecond)
	s := startSource(t, m, OutboundConfig{DestinationName: "api", Upstream: &configentry.UpstreamConfig{
		PassiveHealthCheck: &configentry.PassiveHealthCheck{MaxFailures: 3, BaseEjectionTime: &base},
	}})
	s.out.SetTargetEndpoints(targetID("api"), []Endpoint{gd.endpoint(), bd.endpoint()})
	c := client(t)
	// Until the bad instance has failed 3 times in a row, some answers are 500.
	retry.Run(t, func(r *retry.R) {
		get(t, c, s.url+"/")
		if n := bad.hits.Load(); n < 3 {
			r.Fatalf("bad instance hit %d times", n)
		}
	})
	waitMetric(t, &s.out.reg, "upstream.ejections", 1, "proxy="+s.out.cfg.ProxyID)
	ejectedAt := time.Now()
	before := bad.hits.Load()
	for i := range 20 {
		if status, body, _ := get(t, c, s.url+"/"); status != 200 || body != "good" {
			if time.Since(ejectedAt) < 400*time.Millisecond {
				t.Fatalf("request %d while ejected: %d %q", i, status, body)
			}
		}
	}
	if time.Since(ejectedAt) < 400*time.Millisecond && bad.hits.Load() != before {
		t.Fatalf("the ejected instance got %d requests", bad.hits.Load()-before)
	}
	// After the ejection time it is tried again.
	retry.Run(t, func(r *retry.R) {
		get(t, c, s.url+"/")
		if bad.hits.Load() == before {
			r.Fatal("the ejected instance did not come back")
		}
	})
	if since := time.Since(ejectedAt); since < 300*time.Millisecond {
		t.Errorf("the instance came back after %s, before its ejection time", since)
	}
}

func TestOutbound_CircuitBreakerConcurrentRequests(t *testing.T) {
	release := make(chan struct{})
	var inflight atomic.Int64
	m := newMesh(t)
	a := startApp(t, false, func(w http.ResponseWriter, r *http.Request) {
		inflight.Add(1)
		select {
		case <-release:
		case <-r.Context().Done():
		}
		io.WriteString(w, "ok")
	})
	d := startDest(t, m, InboundConfig{Service: "api", LocalAppAddr: a.addr})
	s := startSource(t, m, OutboundConfig{DestinationName: "api", Upstream: &configentry.UpstreamConfig{
		Limits: &configentry.UpstreamLimits{MaxConcurrentRequests: ptr(2)},
	}})
	s.out.SetTargetEndpoints(targetID("api"), []Endpoint{d.endpoint()})
	c := client(t)
	results := make(chan int, 2)
	for range 2 {
		go func() {
			resp, err := c.Get(s.url + "/slow")
			if err != nil {
				results <- 0
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			results <- resp.StatusCode
		}()
	}
	retry.Run(t, func(r *retry.R) {
		if n := inflight.Load(); n < 2 {
			r.Fatalf("%d requests at the app, want 2", n)
		}
	})
	status, body, hdr := get(t, c, s.url+"/slow")
	close(release)
	if status != 503 || hdr.Get(HeaderOverloaded) != "true" || !strings.HasPrefix(body, "trellis mesh: ") {
		t.Errorf("third request: %d %q %v", status, body, hdr)
	}
	for range 2 {
		if st := <-results; st != 200 {
			t.Errorf("held request: %d", st)
		}
	}
	waitMetric(t, &s.out.reg, "upstream.overloaded", 1, "proxy="+s.out.cfg.ProxyID)
	waitMetric(t, &s.out.reg, "upstream.requests", 1, "class=5xx", "proxy="+s.out.cfg.ProxyID)
}

func TestInbound_L7IntentionDeniesDelete(t *testing.T) {
	m := newMesh(t)
	a := startApp(t, false, func(w http.ResponseWriter, r *http.Request) { fmt.Fprintf(w, "%s %s", r.Method, r.URL.Path) })
	ixn := &connect.Intention{ID: "web-api", SourceName: "web", DestinationName: "api", Permissions: []*connect.IntentionPermission{
		{Action: connect.IntentionDeny, HTTP: &connect.IntentionHTTPPermission{PathPrefix: "/users", Methods: []string{"DELETE"}}},
		{Action: connect.IntentionAllow, HTTP: &connect.IntentionHTTPPermission{PathPrefix: "/users"}},
	}}
	set := intentions.NewSet([]*connect.Intention{ixn})
	authz := &IntentionsAuthorizer{Destination: "api", Set: func() *intentions.Set { return set }}
	d := startDest(t, m, InboundConfig{Service: "api", LocalAppAddr: a.addr, Authorizer: authz})
	s := startSource(t, m, OutboundConfig{DestinationName: "api"})
	s.out.SetTargetEndpoints(targetID("api"), []Endpoint{d.endpoint()})
	c := client(t)
	if status, body, _ := get(t, c, s.url+"/users"); status != 200 || body != "GET /users" {
		t.Errorf("GET /users: %d %q", status, body)
	}
	req, _ := http.NewRequest("DELETE", s.url+"/users/7", nil)
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	want := "trellis mesh: request denied by intention web => api\n"
	if resp.StatusCode != 403 || string(b) != want {
		t.Errorf("DELETE /users/7: %d %q, want 403 %q", resp.StatusCode, b, want)
	}
	if status, body, _ := get(t, c, s.url+"/other"); status != 403 || body != "trellis mesh: request denied by the default intention policy (source web → destination api)\n" {
		t.Errorf("GET /other: %d %q, want 403 by the default policy", status, body)
	}
	if n := a.hits.Load(); n != 1 {
		t.Errorf("app saw %d requests, want 1", n)
	}
	waitMetric(t, &d.in.reg, "inbound.denied", 2, "source=web", "proxy="+d.in.cfg.ProxyID)
	waitMetric(t, &d.in.reg, "inbound.requests", 2, "source=web", "class=4xx", "proxy="+d.in.cfg.ProxyID)
	// Deletes a source proxy retries never: a 403 is not a failure.
	waitMetric(t, &s.out.reg, "upstream.requests", 2, "class=4xx", "proxy="+s.out.cfg.ProxyID)
}

func TestOutbound_Traceparent(t *testing.T) {
	s, _, _ := pairOf(t, func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s|%s", r.Header.Get("Traceparent"), r.Header.Get("Tracestate"))
	})
	c := client(t)
	const valid = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"
	if _, body, _ := get(t, c, s.url+"/", "Traceparent", valid, "Tracestate", "vendor=1"); body != valid+"|vendor=1" {
		t.Errorf("a valid traceparent became %q", body)
	}
	_, body, _ := get(t, c, s.url+"/")
	tp, ts, _ := strings.Cut(body, "|")
	if !validTraceparent(tp) || !strings.HasSuffix(tp, "-01") || ts != "" {
		t.Errorf("started trace %q %q", tp, ts)
	}
	_, body2, _ := get(t, c, s.url+"/")
	if tp2, _, _ := strings.Cut(body2, "|"); tp2[3:35] == tp[3:35] {
		t.Errorf("two requests got the same trace-id %s", tp2)
	}
	_, body, _ = get(t, c, s.url+"/", "Traceparent", "00-00000000000000000000000000000000-00f067aa0ba902b7-01", "Tracestate", "vendor=1")
	tp, ts, _ = strings.Cut(body, "|")
	if !validTraceparent(tp) || ts != "" {
		t.Errorf("an invalid traceparent became %q, tracestate %q", tp, ts)
	}
}

func TestOutbound_RequestTimeout(t *testing.T) {
	s, _, _ := pairOf(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			<-r.Context().Done()
			return
		}
		io.WriteString(w, "fast")
	}, retryRouter(configentry.ServiceRouteDestination{RequestTimeout: configentry.Duration(300 * time.Millisecond)}))
	c := client(t)
	start := time.Now()
	status, body, _ := get(t, c, s.url+"/slow")
	if status != 504 || !strings.HasPrefix(body, "trellis mesh: api did not answer within 300ms") {
		t.Errorf("slow: %d %q", status, body)
	}
	if el := time.Since(start); el < 300*time.Millisecond {
		t.Errorf("answered after %s, before the timeout", el)
	}
	if status, body, _ := get(t, c, s.url+"/fast"); status != 200 || body != "fast" {
		t.Errorf("fast: %d %q", status, body)
	}
	waitMetric(t, &s.out.reg, "upstream.timeouts", 1, "proxy="+s.out.cfg.ProxyID)
}

func TestOutbound_Errors(t *testing.T) {
	m := newMesh(t)
	s := startSource(t, m, OutboundConfig{DestinationName: "api", ConnectTimeout: 2 * time.Second})
	c := client(t)
	status, body, _ := get(t, c, s.url+"/")
	if status != 503 || !strings.HasPrefix(body, "trellis mesh: no healthy instance of api.default.default.dc1") {
		t.Errorf("no instances: %d %q", status, body)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	ln.Close()
	s.out.SetTargetEndpoints(targetID("api"), []Endpoint{{Addr: dead, Node: "gone"}})
	status, body, _ = get(t, c, s.url+"/")
	if status != 502 || !strings.HasPrefix(body, "trellis mesh: no instance of api.default.default.dc1 could be reached") {
		t.Errorf("dead instance: %d %q", status, body)
	}
	// An instance whose certificate is of another service is refused.
	other := startDest(t, m, InboundConfig{Service: "billing", LocalAppAddr: dead})
	s.out.SetTargetEndpoints(targetID("api"), []Endpoint{{Addr: other.addr(), Service: "api"}})
	if status, body, _ = get(t, c, s.url+"/"); status != 502 {
		t.Errorf("impostor instance: %d %q", status, body)
	}
	waitMetric(t, &s.out.reg, "upstream.connect_failures", 2, "proxy="+s.out.cfg.ProxyID)
}

func TestOutbound_FailoverWhenPrimaryHasNoInstance(t *testing.T) {
	m := newMesh(t)
	backup := startDest(t, m, InboundConfig{Service: "api-backup", LocalAppAddr: startApp(t, false, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "backup") }).addr})
	resolver := &configentry.ServiceResolverConfigEntry{Kind: configentry.ServiceResolver, Name: "api",
		Failover: map[string]configentry.ServiceResolverFailover{"*": {Service: "api-backup"}}}
	s := startSource(t, m, OutboundConfig{DestinationName: "api"}, resolver,
		&configentry.ServiceConfigEntry{Kind: configentry.ServiceDefaults, Name: "api-backup", Protocol: "http"})
	s.out.SetTargetEndpoints(targetID("api-backup"), []Endpoint{backup.endpoint()})
	if status, body, _ := get(t, client(t), s.url+"/"); status != 200 || body != "backup" {
		t.Errorf("failover: %d %q", status, body)
	}
}

func TestOutbound_ServeConnAndClose(t *testing.T) {
	m := newMesh(t)
	a := startApp(t, false, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
	d := startDest(t, m, InboundConfig{Service: "api", LocalAppAddr: a.addr})
	out, err := NewOutbound(OutboundConfig{ProxyID: proxyID(t, "web"), DestinationName: "api", Chain: compile(t, "api"), Certs: m.certs("web")})
	if err != nil {
		t.Fatal(err)
	}
	out.SetTargetEndpoints(targetID("api"), []Endpoint{d.endpoint()})
	c1, c2 := net.Pipe()
	out.ServeConn(c1)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c2.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(c2, "GET / HTTP/1.1\r\nHost: api\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(c2), nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 2))
	if resp.StatusCode != 200 || string(b) != "ok" {
		t.Errorf("ServeConn: %d %q", resp.StatusCode, b)
	}
	_ = ctx
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	c2.Close()
}

func TestOutbound_RetryGoesToAnotherInstance(t *testing.T) {
	m := newMesh(t)
	good := startApp(t, false, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "good") })
	bad := startApp(t, false, func(w http.ResponseWriter, r *http.Request) { http.Error(w, "bad", http.StatusServiceUnavailable) })
	gd := startDest(t, m, InboundConfig{Service: "api", LocalAppAddr: good.addr})
	bd := startDest(t, m, InboundConfig{Service: "api", LocalAppAddr: bad.addr})
	s := startSource(t, m, OutboundConfig{DestinationName: "api", Upstream: &configentry.UpstreamConfig{
		PassiveHealthCheck: &configentry.PassiveHealthCheck{MaxFailures: 1000},
	}}, retryRouter(configentry.ServiceRouteDestination{NumRetries: 1, RetryOnStatusCodes: []uint32{503}}))
	s.out.SetTargetEndpoints(targetID("api"), []Endpoint{gd.endpoint(), bd.endpoint()})
	c := client(t)
	for i := range 40 {
		if status, body, _ := get(t, c, s.url+"/"); status != 200 || body != "good" {
			t.Fatalf("request %d: %d %q", i, status, body)
		}
	}
	if bad.hits.Load() == 0 {
		t.Error("the failing instance was never tried first; the test proves nothing")
	}
	// After a drain, requests go on over new connections.
	before := s.out.Handshakes()
	s.out.DrainConnections()
	if status, _, _ := get(t, c, s.url+"/"); status != 200 {
		t.Fatalf("after drain: %d", status)
	}
	if s.out.Handshakes() == before {
		t.Error("no new connection after DrainConnections")
	}
}

// TestOutbound_MaxPendingRequests dials an instance that accepts TCP but
// never answers the TLS handshake: the first request dials, the second
// waits for that dial, and the third is refused by the breaker.
func TestOutbound_MaxPendingRequests(t *testing.T) {
	m := newMesh(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var conns sync.WaitGroup
	conns.Add(1)
	go func() {
		defer conns.Done()
		var held []net.Conn
		defer func() {
			for _, c := range held {
				c.Close()
			}
		}()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			held = append(held, c)
		}
	}()
	t.Cleanup(func() { ln.Close(); conns.Wait() })
	s := startSource(t, m, OutboundConfig{DestinationName: "api", Upstream: &configentry.UpstreamConfig{
		Limits: &configentry.UpstreamLimits{MaxPendingRequests: ptr(1)},
	}}, &configentry.ServiceResolverConfigEntry{Kind: configentry.ServiceResolver, Name: "api", ConnectTimeout: configentry.Duration(time.Second)})
	s.out.SetTargetEndpoints(targetID("api"), []Endpoint{{Addr: ln.Addr().String()}})
	c := client(t)
	results := make(chan int, 2)
	send := func() {
		resp, err := c.Get(s.url + "/")
		if err != nil {
			results <- 0
			return
		}
		resp.Body.Close()
		results <- resp.StatusCode
	}
	go send()
	retry.Run(t, func(r *retry.R) {
		if s.out.active.Load() != 1 {
			r.Fatal("first request not dialling yet")
		}
	})
	go send()
	retry.Run(t, func(r *retry.R) {
		if n := s.out.pool.pending.Load(); n != 1 {
			r.Fatalf("%d requests pending, want 1", n)
		}
	})
	status, body, hdr := get(t, c, s.url+"/")
	if status != 503 || hdr.Get(HeaderOverloaded) != "true" {
		t.Errorf("third request: %d %q", status, body)
	}
	for range 2 {
		if st := <-results; st != 502 {
			t.Errorf("a request to the silent instance: %d, want 502 after the connect timeout", st)
		}
	}
}

// TestOutbound_ConcurrentMixed sends GETs and POSTs from many goroutines,
// with bodies of every kind, through three instances, one of which fails
// a third of its requests, with retries: every answer must be right.
func TestOutbound_ConcurrentMixed(t *testing.T) {
	m := newMesh(t)
	var n atomic.Int64
	handler := func(flaky bool) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			if flaky && n.Add(1)%3 == 0 {
				http.Error(w, "flaky", http.StatusBadGateway)
				return
			}
			b, _ := io.ReadAll(r.Body)
			fmt.Fprintf(w, "%s %s %d", r.Method, r.URL.Path, len(b))
		}
	}
	var eps []Endpoint
	for i := range 3 {
		d := startDest(t, m, InboundConfig{Service: "api", LocalAppAddr: startApp(t, false, handler(i == 0)).addr})
		eps = append(eps, d.endpoint())
	}
	s := startSource(t, m, OutboundConfig{DestinationName: "api", Upstream: &configentry.UpstreamConfig{
		RetryBudget: &configentry.RetryBudget{MinRetryConcurrency: 100},
	}}, retryRouter(configentry.ServiceRouteDestination{NumRetries: 3, RetryOn: []string{"gateway-error"}}))
	s.out.SetTargetEndpoints(targetID("api"), eps)
	c := client(t)
	var wg sync.WaitGroup
	errs := make(chan error, 20)
	for g := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 25 {
				size := (g*25 + i) % 4 * 20000 // 0, 20k, 40k, 60k: all replayable
				var resp *http.Response
				var err error
				path := fmt.Sprintf("/g%d/%d", g, i)
				if size == 0 {
					resp, err = c.Get(s.url + path)
				} else {
					resp, err = c.Post(s.url+path, "application/octet-stream", strings.NewReader(strings.Repeat("b", size)))
				}
				if err != nil {
					errs <- err
					return
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				method := "POST"
				if size == 0 {
					method = "GET"
				}
				if want := fmt.Sprintf("%s %s %d", method, path, size); resp.StatusCode != 200 || string(b) != want {
					errs <- fmt.Errorf("%s: %d %q, want %q", path, resp.StatusCode, b, want)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestOutbound_IdleTimeout(t *testing.T) {
	s, _, _ := pairOf(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/silent":
			<-r.Context().Done()
		case "/stalls":
			io.WriteString(w, "first chunk")
			w.(http.Flusher).Flush()
			<-r.Context().Done()
		case "/trickle":
			// Data every 50ms keeps a 300ms idle timeout from firing.
			for i := range 8 {
				fmt.Fprintf(w, "%d", i)
				w.(http.Flusher).Flush()
				select {
				case <-time.After(50 * time.Millisecond):
				case <-r.Context().Done():
					return
				}
			}
		}
	}, retryRouter(configentry.ServiceRouteDestination{IdleTimeout: configentry.Duration(300 * time.Millisecond)}))
	c := client(t)
	status, body, _ := get(t, c, s.url+"/silent")
	if status != 504 || !strings.Contains(body, "idle timeout") {
		t.Errorf("silent: %d %q", status, body)
	}
	resp, err := c.Get(s.url + "/stalls")
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(b) != "first chunk" || err == nil {
		t.Errorf("stalls: %d %q, %v; want the first chunk, then an error", resp.StatusCode, b, err)
	}
	if status, body, _ := get(t, c, s.url+"/trickle"); status != 200 || body != "01234567" {
		t.Errorf("trickle: %d %q", status, body)
	}
}
