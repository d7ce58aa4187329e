package local_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/trellismesh/trellis/agent/ae"
	"github.com/trellismesh/trellis/agent/checks"
	"github.com/trellismesh/trellis/agent/local"
	"github.com/trellismesh/trellis/internal/retry"
	"github.com/trellismesh/trellis/internal/testutil"
	"github.com/trellismesh/trellis/raftstore/structs"
)

// wiringCatalogs are the catalogs the wiring test runs against; the real
// server is added where it is available (catalog_server_test.go).
var wiringCatalogs = map[string]func(t *testing.T) local.RPCClient{
	"fake": func(*testing.T) local.RPCClient { return local.NewFakeCatalog() },
}

// TestWiring puts the pieces together as the agent does: a check runner
// reports to the local state, whose changes trigger anti-entropy, which
// pushes them to the catalog; the reaper removes the service once its check
// has been critical long enough.
func TestWiring(t *testing.T) {
	t.Parallel()
	for name, newCatalog := range wiringCatalogs {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			testWiring(t, newCatalog(t))
		})
	}
}

func testWiring(t *testing.T, catalog local.RPCClient) {
	logger := testutil.Logger(t)
	var healthy atomic.Bool
	healthy.Store(true)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !healthy.Load() {
			w.WriteHeader(http.StatusInternalServerError)
		}
		io.WriteString(w, "ok")
	}))
	t.Cleanup(srv.Close)

	ctx, cancel := context.WithCancel(context.Background())
	trig := ae.NewTrigger()
	state, err := local.New(local.Config{
		NodeName: "node1", Address: "127.0.0.1", Datacenter: "dc1",
		OnChange: trig.Fire, Logger: logger,
	}, catalog)
	if err != nil {
		t.Fatal(err)
	}
	syncer, err := ae.NewStateSyncer(ae.Config{State: state, Trigger: trig, Logger: logger})
	if err != nil {
		t.Fatal(err)
	}

	// The agent's removal: stop the runners, then forget the service.
	runners := map[string]checks.Check{}
	remove := func(serviceID string) error {
		for id := range state.ChecksForService(serviceID) {
			if r := runners[id]; r != nil {
				r.Stop()
			}
		}
		return state.RemoveService(serviceID)
	}
	reaper, err := local.NewReaper(local.ReaperConfig{State: state, Remove: remove, Interval: 20 * time.Millisecond, Logger: logger})
	if err != nil {
		t.Fatal(err)
	}

	// Register a service with an HTTP check, as the agent API does.
	if err := state.AddService(&structs.NodeService{ID: "web1", Service: "web", Port: 8080}); err != nil {
		t.Fatal(err)
	}
	def := &structs.CheckType{HTTP: srv.URL, Interval: 100 * time.Millisecond, DeregisterCriticalServiceAfter: 300 * time.Millisecond}
	if err := state.AddCheck(&structs.HealthCheck{CheckID: "service:web1", Name: "web http", ServiceID: "web1"}, def); err != nil {
		t.Fatal(err)
	}
	runner, err := checks.New(checks.Config{CheckID: "service:web1", Def: def, Notifier: state, Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	runners["service:web1"] = runner
	runner.Start()

	done := make(chan struct{}, 2)
	go func() { syncer.Run(ctx); done <- struct{}{} }()
	go func() { reaper.Run(ctx); done <- struct{}{} }()
	t.Cleanup(func() {
		runner.Stop() // stops before the server closes, and before the syncer's context ends
		cancel()
		<-done
		<-done
		state.Close()
	})

	checkStatus := func(r *retry.R) (*structs.NodeServices, *structs.HealthCheck) {
		req := structs.NodeSpecificRequest{Datacenter: "dc1", Node: "node1"}
		var svcs structs.IndexedNodeServices
		r.Check(catalog.RPC(ctx, structs.MethodCatalogNodeServices, &req, &svcs))
		var chks structs.IndexedHealthChecks
		r.Check(catalog.RPC(ctx, structs.MethodHealthNodeChecks, &req, &chks))
		for _, c := range chks.HealthChecks {
			if c.CheckID == "service:web1" {
				return svcs.NodeServices, c
			}
		}
		return svcs.NodeServices, nil
	}
	retry.Run(t, func(r *retry.R) {
		ns, c := checkStatus(r)
		if ns == nil || ns.Services["web1"] == nil || c == nil || c.Status != structs.HealthPassing {
			r.Fatalf("catalog has %+v and check %+v, want web1 passing", ns, c)
		}
	})

	// The target fails: critical in the catalog, then reaped.
	healthy.Store(false)
	retry.Run(t, func(r *retry.R) {
		ns, c := checkStatus(r)
		if ns != nil && ns.Services["web1"] != nil {
			r.Fatalf("web1 still in the catalog (check %+v)", c)
		}
	})
	if state.Service("web1") != nil {
		t.Error("web1 still in the local state after the reaper")
	}
}
