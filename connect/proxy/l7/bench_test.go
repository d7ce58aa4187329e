package l7

import (
	"fmt"
	"io"
	"net/http"
	"testing"
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
	for _, bc := range []struct{ name, url string }{{"direct", "http://" + a.addr + "/x"}, {"mesh", s.url + "/x"}} {
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
