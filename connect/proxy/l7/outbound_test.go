package l7

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/trellismesh/trellis/connect/configentry"
)

// pairOf starts an app, a destination proxy of api in front of it and a
// source proxy of web for upstream api with the destination as instance.
func pairOf(t *testing.T, h http.HandlerFunc, entries ...configentry.Entry) (*srcProxy, *destProxy, *app) {
	t.Helper()
	m := newMesh(t)
	a := startApp(t, false, h)
	d := startDest(t, m, InboundConfig{Service: "api", LocalAppAddr: a.addr})
	s := startSource(t, m, OutboundConfig{DestinationName: "api"}, entries...)
	s.out.SetTargetEndpoints(targetID("api"), []Endpoint{d.endpoint()})
	return s, d, a
}

func TestOutbound_GetAndPost(t *testing.T) {
	s, d, _ := pairOf(t, func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("X-Method", r.Method)
		w.Header().Set("X-Client-Cert", r.Header.Get(HeaderClientCert))
		fmt.Fprintf(w, "%s %s?%s body=%q", r.Method, r.URL.Path, r.URL.RawQuery, body)
	})
	c := client(t)
	status, body, hdr := get(t, c, s.url+"/users/7?x=1")
	if status != 200 || body != `GET /users/7?x=1 body=""` {
		t.Fatalf("GET: %d %q", status, body)
	}
	if want := "URI=spiffe://" + testTrustDomain + "/ns/default/dc/dc1/svc/web"; hdr.Get("X-Client-Cert") != want {
		t.Errorf("the app saw %s %q, want %q", HeaderClientCert, hdr.Get("X-Client-Cert"), want)
	}
	big := bytes.Repeat([]byte("x"), 200<<10) // larger than MaxReplayBody: streamed
	for _, payload := range [][]byte{[]byte(`{"name":"ada"}`), big} {
		resp, err := c.Post(s.url+"/users", "application/json", bytes.NewReader(payload))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.HasPrefix(string(b), "POST /users? body=") || len(b) < len(payload) {
			t.Fatalf("POST of %d bytes: %d %.80q", len(payload), resp.StatusCode, b)
		}
	}
	if n := d.accepted.Load(); n != 1 {
		t.Errorf("destination accepted %d connections, want 1", n)
	}
	waitMetric(t, &s.out.reg, "upstream.requests", 3, "upstream=api", "class=2xx", "route=default", "proxy="+s.out.cfg.ProxyID)
	waitMetric(t, &d.in.reg, "inbound.requests", 3, "source=web", "class=2xx", "proxy="+d.in.cfg.ProxyID)
	retryLatency(t, s)
}

// retryLatency checks that the latency quantiles were emitted.
func retryLatency(t *testing.T, s *srcProxy) {
	t.Helper()
	if v := metric("upstream.latency_ms", "proxy="+s.out.cfg.ProxyID, "quantile=0.99"); v <= 0 {
		t.Errorf("p99 latency gauge is %v, want > 0", v)
	}
}
