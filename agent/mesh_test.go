package agent_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	consulapi "github.com/hashicorp/consul/api"

	"github.com/trellismesh/trellis/internal/retry"
	"github.com/trellismesh/trellis/internal/testcluster"
	"github.com/trellismesh/trellis/internal/testutil"
)

// startHTTPApp serves a tiny HTTP app that answers with its name, on a
// free loopback port, until the test ends.
func startHTTPApp(t *testing.T, name string) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s %s", name, r.URL.Path)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().(*net.TCPAddr).Port
}

// get makes one request on a new connection through addr; it returns the
// body or the error.
func get(addr, path string) (string, error) {
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(3 * time.Second))
	if _, err := fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", path); err != nil {
		return "", err
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

// TestMesh_SidecarsOnOneAgent registers two services with sidecars on a
// dev agent (default policy allow) and sends traffic from web to api
// through web's upstream listener; a deny intention stops it, an allow
// brings it back; deregistering api's service stops its proxy.
func TestMesh_SidecarsOnOneAgent(t *testing.T) {
	t.Parallel()
	apiPort := startHTTPApp(t, "api")
	webPort := startHTTPApp(t, "web")
	up := testutil.FreePorts(t, 1)[0]
	a := testcluster.StartAgent(t, testcluster.Options{Name: "mesh-one", HCL: fmt.Sprintf(`
service {
  name = "api"
  port = %d
  connect {
    sidecar_service {}
  }
}
service {
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
`, apiPort, webPort, up)})
	upstream := fmt.Sprintf("127.0.0.1:%d", up)
	retry.RunWith(&retry.Timer{Timeout: 20 * time.Second, Wait: 50 * time.Millisecond}, t, func(r *retry.R) {
		body, err := get(upstream, "/hello")
		if err != nil || body != "api /hello" {
			r.Fatalf("through the upstream: %q, %v", body, err)
		}
	})

	svcs, err := a.Client.Agent().Services()
	if err != nil {
		t.Fatal(err)
	}
	sc := svcs["web-sidecar-proxy"]
	if sc == nil || sc.Kind != consulapi.ServiceKindConnectProxy || sc.Proxy.DestinationServiceName != "web" || sc.Port < 21000 || sc.Port > 21255 {
		t.Fatalf("web's sidecar: %+v", sc)
	}

	if _, err := a.Client.Connect().IntentionUpsert(&consulapi.Intention{SourceName: "web", DestinationName: "api", Action: consulapi.IntentionActionDeny}, nil); err != nil {
		t.Fatal(err)
	}
	retry.RunWith(&retry.Timer{Timeout: 5 * time.Second, Wait: 20 * time.Millisecond}, t, func(r *retry.R) {
		if body, err := get(upstream, "/"); err == nil && body != "" {
			r.Fatalf("denied traffic passed: %q", body)
		}
	})
	if _, err := a.Client.Connect().IntentionUpsert(&consulapi.Intention{SourceName: "web", DestinationName: "api", Action: consulapi.IntentionActionAllow}, nil); err != nil {
		t.Fatal(err)
	}
	retry.RunWith(&retry.Timer{Timeout: 5 * time.Second, Wait: 20 * time.Millisecond}, t, func(r *retry.R) {
		if body, err := get(upstream, "/again"); err != nil || body != "api /again" {
			r.Fatalf("allowed again: %q, %v", body, err)
		}
	})

	if err := a.Client.Agent().ServiceDeregister("api"); err != nil {
		t.Fatal(err)
	}
	retry.RunWith(&retry.Timer{Timeout: 5 * time.Second, Wait: 20 * time.Millisecond}, t, func(r *retry.R) {
		svcs, err := a.Client.Agent().Services()
		if err != nil {
			r.Fatal(err)
		}
		if _, ok := svcs["api-sidecar-proxy"]; ok {
			r.Fatal("api's sidecar is still registered")
		}
		if _, ok := a.Proxies()["api-sidecar-proxy"]; ok {
			r.Fatal("api's proxy still runs")
		}
	})
	if testutil.ListensHere(t, fmt.Sprintf("127.0.0.1:%d", svcs["api-sidecar-proxy"].Port)) {
		t.Error("api's public listener is still open")
	}
	if body, err := get(upstream, "/"); err == nil && strings.HasPrefix(body, "api") {
		t.Error("traffic reaches api after its deregistration")
	}
}
