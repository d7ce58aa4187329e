package l7

import (
	"fmt"
	"io"
	"net/http"
	"testing"

	"github.com/trellismesh/trellis/connect/configentry"
)

// BenchmarkL7 measures a small GET answered by an HTTP/1.1 app, sent over
// a keep-alive connection directly to the app, and through an outbound and
// an inbound proxy (mutual TLS, HTTP/2) in the same process: the
// difference is what the two proxies cost. The real load test (separate
// processes, fortio) is run by the lead.
func BenchmarkL7(b *testing.B) {
	m := newMesh(b)
	payload := []byte("hello from the app")
	a := startApp(b, false, func(w http.ResponseWriter, r *http.Request) { w.Write(payload) })
	d := startDest(b, m, InboundConfig{Service: "api", LocalAppAddr: a.addr})
	s := startSource(b, m, OutboundConfig{DestinationName: "api"})
	s.out.SetTargetEndpoints(targetID("api"), []Endpoint{d.endpoint()})
	c := client(b)
	do := func(url string) error {
		resp, err := c.Get(url)
		if err != nil {
			return err
		}
		n, _ := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || n != int64(len(payload)) {
			return fmt.Errorf("status %d, %d bytes", resp.StatusCode, n)
		}
		return nil
	}
	// The same destination behind a router (three routes), a splitter and
	// retries, as the load benchmark's qps=max/features prices them.
	resolver := &configentry.ServiceResolverConfigEntry{Kind: configentry.ServiceResolver, Name: "api",
		Subsets: map[string]configentry.ServiceResolverSubset{"all": {Filter: `Service.Service == "api"`}}}
	splitter := &configentry.ServiceSplitterConfigEntry{Kind: configentry.ServiceSplitter, Name: "api",
		Splits: []configentry.ServiceSplit{{Weight: 50, ServiceSubset: "all"}, {Weight: 50}}}
	router := &configentry.ServiceRouterConfigEntry{Kind: configentry.ServiceRouter, Name: "api", Routes: []configentry.ServiceRoute{
		{Match: &configentry.ServiceRouteMatch{HTTP: &configentry.ServiceRouteHTTPMatch{PathPrefix: "/admin"}}},
		{Match: &configentry.ServiceRouteMatch{HTTP: &configentry.ServiceRouteHTTPMatch{Header: []configentry.ServiceRouteHTTPMatchHeader{{Name: "x-debug", Present: true}}}}},
		{Match: &configentry.ServiceRouteMatch{HTTP: &configentry.ServiceRouteHTTPMatch{PathPrefix: "/"}},
			Destination: &configentry.ServiceRouteDestination{NumRetries: 2, RetryOnConnectFailure: true, RetryOnStatusCodes: []uint32{503}}},
	}}
	f := startSource(b, m, OutboundConfig{DestinationName: "api"}, resolver, splitter, router)
	f.out.SetTargetEndpoints(targetID("api"), []Endpoint{d.endpoint()})
	f.out.SetTargetEndpoints(targetID("api", "all"), []Endpoint{d.endpoint()})
	for _, bc := range []struct{ name, url string }{{"direct", "http://" + a.addr + "/x"}, {"mesh", s.url + "/x"}, {"mesh-features", f.url + "/x"}} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if err := do(bc.url); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(bc.name+"-parallel", func(b *testing.B) {
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if err := do(bc.url); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}
