package main

import (
	"encoding/json"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/trellismesh/trellis/internal/retry"
	"github.com/trellismesh/trellis/internal/testcluster"
	"github.com/trellismesh/trellis/internal/testutil"
)

// TestCLI_ConnectProxyConfig: a sidecar with an upstream, on a dev agent,
// shows its upstream, the chain target with its instance, the intentions
// and its certificate.
func TestCLI_ConnectProxyConfig(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	t.Parallel()
	a := testcluster.StartAgent(t, testcluster.Options{Name: "cli-proxy-config"})
	addr := a.HTTPAddr()

	// Applications that accept and do nothing: the proxies only need an address.
	app := func() int {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ln.Close() })
		return ln.Addr().(*net.TCPAddr).Port
	}
	dir := t.TempDir()
	write := func(name, body string) string { return writeTestFile(t, dir, name, body) }
	apiFile := write("api.hcl", fmt.Sprintf("service {\n  name = \"api\"\n  port = %d\n  connect {\n    sidecar_service {}\n  }\n}\n", app()))
	webFile := write("web.hcl", fmt.Sprintf(`service {
  name = "web"
  port = %d
  connect {
    sidecar_service {
      proxy {
        upstreams = [{ destination_name = "api", local_bind_port = %d }]
      }
    }
  }
}
`, app(), testutil.FreePorts(t, 1)[0]))
	for _, f := range []string{apiFile, webFile} {
		if r := run(t, addr, "services", "register", f); r.code != 0 {
			t.Fatalf("register %s: %+v", f, r)
		}
	}
	if r := run(t, addr, "intention", "create", "-deny", "web", "api"); r.code != 0 {
		t.Fatalf("intention create: %+v", r)
	}

	// The api sidecar's proxy fronts api: the intention to api is its.
	retry.RunWith(&retry.Timer{Timeout: 30 * time.Second, Wait: 100 * time.Millisecond}, t, func(r *retry.R) {
		res := run(t, addr, "connect", "proxy-config", "api-sidecar-proxy")
		for _, want := range []string{"Proxy api-sidecar-proxy (service api)", "web => api deny", "spiffe://", "/svc/api", "default policy"} {
			if res.code != 0 || !strings.Contains(res.stdout, want) {
				r.Fatalf("proxy-config api-sidecar-proxy lacks %q: %+v", want, res)
			}
		}
	})
	// The web sidecar's upstream follows api's chain to its instance.
	retry.RunWith(&retry.Timer{Timeout: 30 * time.Second, Wait: 100 * time.Millisecond}, t, func(r *retry.R) {
		res := run(t, addr, "connect", "proxy-config", "web-sidecar-proxy")
		for _, want := range []string{"Upstreams:", "  api on 127.0.0.1:", "mode tcp", "target api.default.default.dc1", "identity api,", "spiffe://", "/svc/web"} {
			if res.code != 0 || !strings.Contains(res.stdout, want) {
				r.Fatalf("proxy-config web-sidecar-proxy lacks %q: %+v", want, res)
			}
		}
	})

	res := run(t, addr, "connect", "proxy-config", "-format", "json", "web-sidecar-proxy")
	var pc struct {
		Proxy struct {
			ProxyID   string
			Upstreams []struct {
				DestinationName string
				Chain           struct{ Target string }
				Targets         []struct{ Instances []struct{ Addr string } }
			}
			Certificate struct{ SpiffeID string }
		}
		DefaultIntentionPolicy string
	}
	if res.code != 0 {
		t.Fatalf("-format json: %+v", res)
	}
	if err := json.Unmarshal([]byte(res.stdout), &pc); err != nil {
		t.Fatalf("-format json does not parse: %v\n%s", err, res.stdout)
	}
	if pc.Proxy.ProxyID != "web-sidecar-proxy" || len(pc.Proxy.Upstreams) != 1 || pc.Proxy.Upstreams[0].DestinationName != "api" ||
		pc.Proxy.Upstreams[0].Chain.Target != "api.default.default.dc1" || !strings.HasPrefix(pc.Proxy.Certificate.SpiffeID, "spiffe://") ||
		(pc.DefaultIntentionPolicy != "allow" && pc.DefaultIntentionPolicy != "deny") {
		t.Errorf("-format json: %+v", pc)
	}

	for _, tc := range []struct {
		args []string
		err  string
	}{
		{[]string{"connect", "proxy-config", "nope"}, `no proxy "nope" on this agent; its proxies are api-sidecar-proxy, web-sidecar-proxy`},
		{[]string{"connect", "proxy-config"}, "takes one argument"},
		{[]string{"connect", "proxy-config", "web-sidecar-proxy", "-format", "json"}, "comes after"},
		{[]string{"connect", "proxy-config", "-format", "yaml", "web-sidecar-proxy"}, `-format "yaml"`},
	} {
		if r := run(t, addr, tc.args...); r.code != 1 || !strings.Contains(r.stderr, tc.err) {
			t.Errorf("trellis %s: %+v, want exit 1 and stderr with %q", strings.Join(tc.args, " "), r, tc.err)
		}
	}
}
