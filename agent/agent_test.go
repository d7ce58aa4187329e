package agent_test

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	consulapi "github.com/hashicorp/consul/api"
	"github.com/miekg/dns"
	"go.uber.org/goleak"

	"github.com/trellismesh/trellis/internal/retry"
	"github.com/trellismesh/trellis/internal/testcluster"
	"github.com/trellismesh/trellis/internal/testutil"
)

func TestMain(m *testing.M) {
	testutil.VerifyTestMain(m,
		// httptest servers' and clients' idle connections close asynchronously.
		goleak.IgnoreTopFunction("net/http.(*persistConn).readLoop"),
		goleak.IgnoreTopFunction("net/http.(*persistConn).writeLoop"),
	)
}

func dnsQuery(t *testing.T, addr, name string, qtype uint16) *dns.Msg {
	t.Helper()
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	r, _, err := (&dns.Client{Net: "udp"}).Exchange(m, addr)
	if err != nil {
		t.Fatalf("dns %s: %v", name, err)
	}
	return r
}

// TestAgent_HTTPCheckDrivesHealthAndDNS registers a service whose HTTP check
// probes a real server, then flips that server's answer and follows the
// status through the agent, the catalog, ?passing and DNS.
func TestAgent_HTTPCheckDrivesHealthAndDNS(t *testing.T) {
	t.Parallel()
	a := testcluster.StartAgent(t, testcluster.Options{})
	var code atomic.Int32
	code.Store(200)
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(int(code.Load()))
		io.WriteString(w, "ok")
	}))
	defer backend.Close()
	_, portStr, _ := net.SplitHostPort(strings.TrimPrefix(backend.URL, "http://"))
	var port int
	fmt.Sscan(portStr, &port)

	err := a.Client.Agent().ServiceRegister(&consulapi.AgentServiceRegistration{
		Name: "web", Port: port, Address: "127.0.0.1", Tags: []string{"v1"},
		Check: &consulapi.AgentServiceCheck{HTTP: backend.URL + "/health", Interval: "200ms", Timeout: "1s"},
	})
	if err != nil {
		t.Fatal(err)
	}
	waitStatus := func(want string) {
		t.Helper()
		retry.Run(t, func(r *retry.R) {
			entries, _, err := a.Client.Health().Service("web", "", false, nil)
			if err != nil || len(entries) != 1 || entries[0].Checks.AggregatedStatus() != want {
				r.Fatalf("web in catalog: %d entries, err %v, want %s", len(entries), err, want)
			}
		})
	}
	waitStatus("passing")
	r := dnsQuery(t, a.DNSAddr(), "web.service.trellis.", dns.TypeSRV)
	if len(r.Answer) != 1 || r.Answer[0].(*dns.SRV).Port != uint16(port) {
		t.Fatalf("SRV web = %v", r.Answer)
	}
	if r := dnsQuery(t, a.DNSAddr(), "v1.web.service.trellis.", dns.TypeA); len(r.Answer) != 1 || r.Answer[0].(*dns.A).A.String() != "127.0.0.1" {
		t.Errorf("A v1.web = %v", r.Answer)
	}
	name := a.Config.NodeName
	if r := dnsQuery(t, a.DNSAddr(), strings.ToLower(name)+".node.trellis.", dns.TypeA); len(r.Answer) != 1 {
		t.Errorf("A of the agent's node = %v", r.Answer)
	}

	code.Store(429)
	waitStatus("warning")
	code.Store(500)
	waitStatus("critical")
	if passing, _, _ := a.Client.Health().Service("web", "", true, nil); len(passing) != 0 {
		t.Errorf("?passing returned a critical instance")
	}
	if r := dnsQuery(t, a.DNSAddr(), "web.service.trellis.", dns.TypeA); r.Rcode != dns.RcodeNameError {
		t.Errorf("DNS for a critical service: %s %v", dns.RcodeToString[r.Rcode], r.Answer)
	}
	status, _, _ := a.Client.Agent().AgentHealthServiceByName("web")
	if status != "critical" {
		t.Errorf("agent health = %q", status)
	}
	code.Store(200)
	waitStatus("passing")

	if err := a.Client.Agent().ServiceDeregister("web"); err != nil {
		t.Fatal(err)
	}
	retry.Run(t, func(r *retry.R) {
		svcs, _, err := a.Client.Catalog().Services(nil)
		if err != nil || svcs["web"] != nil {
			r.Fatalf("web still in catalog: %v %v", svcs, err)
		}
	})
}

func TestAgent_TTLAndReap(t *testing.T) {
	t.Parallel()
	a := testcluster.StartAgent(t, testcluster.Options{HCL: `
service {
  name = "worker"
  check {
    id     = "worker-ttl"
    ttl    = "300ms"
    status = "passing"
  }
}
service {
  name = "doomed"
  check {
    ttl    = "100ms"
    deregister_critical_service_after = "500ms"
  }
}
`})
	// The service from the config file is in the catalog.
	retry.Run(t, func(r *retry.R) {
		entries, _, err := a.Client.Health().Service("worker", "", false, nil)
		if err != nil || len(entries) != 1 {
			r.Fatalf("worker: %v %v", entries, err)
		}
	})
	// Without updates its TTL expires.
	retry.Run(t, func(r *retry.R) {
		checks, _, _ := a.Client.Health().Checks("worker", nil)
		if len(checks) != 1 || checks[0].Status != "critical" || !strings.Contains(checks[0].Output, "TTL expired") {
			r.Fatalf("worker checks = %+v", checks)
		}
	})
	if err := a.Client.Agent().UpdateTTL("worker-ttl", "busy", "warning"); err != nil {
		t.Fatal(err)
	}
	retry.Run(t, func(r *retry.R) {
		checks, _, _ := a.Client.Health().Checks("worker", nil)
		if len(checks) != 1 || checks[0].Status != "warning" {
			r.Fatalf("worker checks = %+v", checks)
		}
	})
	// The doomed service is removed once critical long enough.
	retry.RunWith(&retry.Timer{Timeout: 20 * time.Second, Wait: 50 * time.Millisecond}, t, func(r *retry.R) {
		svcs, err := a.Client.Agent().Services()
		if err != nil || svcs["doomed"] != nil {
			r.Fatalf("doomed still registered: %v", err)
		}
		cat, _, _ := a.Client.Catalog().Service("doomed", "", nil)
		if len(cat) != 0 {
			r.Fatalf("doomed still in catalog")
		}
	})
}

func TestAgent_TCPCheckAndNodeCheck(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a := testcluster.StartAgent(t, testcluster.Options{HCL: fmt.Sprintf(`
service {
  name = "db"
  port = 5432
  check {
    tcp      = "%s"
    interval = "200ms"
  }
}`, ln.Addr())})
	retry.Run(t, func(r *retry.R) {
		entries, _, _ := a.Client.Health().Service("db", "", true, nil)
		if len(entries) != 1 {
			r.Fatalf("db not passing")
		}
	})
	ln.Close()
	retry.Run(t, func(r *retry.R) {
		entries, _, _ := a.Client.Health().Service("db", "", true, nil)
		if len(entries) != 0 {
			r.Fatalf("db still passing with its port closed")
		}
	})
	// A failing node check takes every service of the node out.
	err = a.Client.Agent().CheckRegister(&consulapi.AgentCheckRegistration{Name: "maintenance", AgentServiceCheck: consulapi.AgentServiceCheck{TTL: "1h", Status: "critical"}})
	if err != nil {
		t.Fatal(err)
	}
	retry.Run(t, func(r *retry.R) {
		checks, _, _ := a.Client.Health().State("critical", nil)
		if len(checks) != 2 {
			r.Fatalf("critical checks = %d, want 2", len(checks))
		}
	})
}

// TestAgent_RestartKeepsState restarts a server on its data directory: the
// catalog keeps what was written, and config services come back.
func TestAgent_RestartKeepsState(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	port := testutil.FreePorts(t, 1)[0]
	opts := testcluster.Options{Name: "persist", DataDir: dir, ServerPort: port, HCL: `service { name = "from-config" }`}
	a := testcluster.StartAgent(t, opts)
	_, err := a.Client.Catalog().Register(&consulapi.CatalogRegistration{Node: "external", Address: "10.1.2.3",
		Service: &consulapi.AgentService{Service: "legacy-db", Port: 3306}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	retry.Run(t, func(r *retry.R) {
		svcs, _, _ := a.Client.Catalog().Services(nil)
		if svcs["from-config"] == nil {
			r.Fatal("config service not synced")
		}
	})
	_, meta, _ := a.Client.Catalog().Services(nil)
	a.Stop()

	b := testcluster.StartAgent(t, opts)
	svcs, meta2, err := b.Client.Catalog().Services(nil)
	if err != nil || svcs["legacy-db"] == nil || svcs["from-config"] == nil {
		t.Fatalf("after restart: %v, %v", svcs, err)
	}
	if meta2.LastIndex < meta.LastIndex {
		t.Errorf("index went back from %d to %d", meta.LastIndex, meta2.LastIndex)
	}
	if b.Config.NodeID != a.Config.NodeID {
		t.Errorf("node ID changed across restart: %s → %s", a.Config.NodeID, b.Config.NodeID)
	}
}

// TestAgent_AntiEntropyRestoresCatalog removes the agent's service from the
// catalog behind its back; the next full sync puts it back.
func TestAgent_AntiEntropyRestoresCatalog(t *testing.T) {
	t.Parallel()
	a := testcluster.StartAgent(t, testcluster.Options{})
	if err := a.Client.Agent().ServiceRegister(&consulapi.AgentServiceRegistration{Name: "api", Port: 80}); err != nil {
		t.Fatal(err)
	}
	retry.Run(t, func(r *retry.R) {
		if svcs, _, _ := a.Client.Catalog().Services(nil); svcs["api"] == nil {
			r.Fatal("api not synced")
		}
	})
	if _, err := a.Client.Catalog().Deregister(&consulapi.CatalogDeregistration{Node: a.Config.NodeName, ServiceID: "api"}, nil); err != nil {
		t.Fatal(err)
	}
	a.TriggerFullSync()
	retry.Run(t, func(r *retry.R) {
		if svcs, _, _ := a.Client.Catalog().Services(nil); svcs["api"] == nil {
			r.Fatal("api not restored")
		}
	})
}

func TestAgent_Metrics(t *testing.T) {
	t.Parallel()
	a := testcluster.StartAgent(t, testcluster.Options{})
	m, err := a.Client.Agent().Metrics()
	if err != nil || m.Timestamp == "" {
		t.Fatalf("metrics = %+v, %v", m, err)
	}
	resp, err := http.Get("http://" + a.HTTPAddr() + "/v1/agent/metrics?format=prometheus")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain; version=0.0.4") || !strings.Contains(string(body), "trellis_runtime_num_goroutines") {
		t.Errorf("prometheus: %s\n%.500s", resp.Header.Get("Content-Type"), body)
	}
}
