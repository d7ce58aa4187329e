package httpapi

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	consulapi "github.com/hashicorp/consul/api"

	"github.com/trellismesh/trellis/api"
	"github.com/trellismesh/trellis/internal/testutil"
	"github.com/trellismesh/trellis/raftstore"
	"github.com/trellismesh/trellis/raftstore/structs"
)

// testAgent serves the HTTP API over a real Raft server; its local state is
// a plain map that writes through to the catalog (the real agent's local
// state and anti-entropy are tested in their own packages and end to end).
type testAgent struct {
	srv  *raftstore.Server
	node string

	mu       sync.Mutex
	services map[string]*structs.NodeService
	checks   map[string]*structs.HealthCheck
}

var _ Agent = (*testAgent)(nil)

func (a *testAgent) RPC(ctx context.Context, method string, args, reply any) error {
	return a.srv.RPC(ctx, method, args, reply)
}

func (a *testAgent) Self() Self {
	return Self{Config: SelfConfig{Datacenter: "dc1", NodeName: a.node, Server: true, Version: "test"}}
}

func (a *testAgent) Members() []api.AgentMember {
	return []api.AgentMember{{Name: a.node, Addr: "127.0.0.1", Port: 8301, Status: api.MemberStatusAlive}}
}

func (a *testAgent) LocalServices() []*structs.NodeService {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []*structs.NodeService
	for _, s := range a.services {
		out = append(out, s.Clone())
	}
	slices.SortFunc(out, func(x, y *structs.NodeService) int { return strings.Compare(x.ID, y.ID) })
	return out
}

func (a *testAgent) LocalChecks() []*structs.HealthCheck {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []*structs.HealthCheck
	for _, c := range a.checks {
		out = append(out, c.Clone())
	}
	slices.SortFunc(out, func(x, y *structs.HealthCheck) int { return strings.Compare(x.CheckID, y.CheckID) })
	return out
}

func (a *testAgent) sync(ctx context.Context, svc *structs.NodeService, checks structs.HealthChecks) error {
	return a.srv.RPC(ctx, structs.MethodCatalogRegister, &structs.RegisterRequest{Node: a.node, Address: "127.0.0.1", Service: svc, Checks: checks}, &structs.WriteReply{})
}

func (a *testAgent) AddService(ctx context.Context, svc *structs.NodeService, defs []*structs.CheckType, replace bool) error {
	var checks structs.HealthChecks
	a.mu.Lock()
	a.services[svc.ID] = svc.Clone()
	for _, d := range defs {
		status := d.Status
		if status == "" {
			status = structs.HealthCritical
		}
		c := &structs.HealthCheck{Node: a.node, CheckID: d.CheckID, Name: d.Name, Status: status, ServiceID: svc.ID, ServiceName: svc.Service, Type: d.Type(), Definition: d.Definition()}
		a.checks[c.CheckID] = c
		checks = append(checks, c.Clone())
	}
	a.mu.Unlock()
	return a.sync(ctx, svc, checks)
}

func (a *testAgent) RemoveService(ctx context.Context, id string) error {
	a.mu.Lock()
	_, ok := a.services[id]
	delete(a.services, id)
	a.mu.Unlock()
	if !ok {
		return fmt.Errorf("service %q: %w", id, structs.ErrNotFound)
	}
	return a.srv.RPC(ctx, structs.MethodCatalogDeregister, &structs.DeregisterRequest{Node: a.node, ServiceID: id}, &structs.WriteReply{})
}

func (a *testAgent) AddCheck(ctx context.Context, chk *structs.HealthCheck, def *structs.CheckType) error {
	a.mu.Lock()
	if chk.ServiceID != "" && a.services[chk.ServiceID] == nil {
		a.mu.Unlock()
		return fmt.Errorf("service %q: %w", chk.ServiceID, structs.ErrNotFound)
	}
	c := chk.Clone()
	c.Node = a.node
	a.checks[c.CheckID] = c
	a.mu.Unlock()
	return a.sync(ctx, nil, structs.HealthChecks{c.Clone()})
}

func (a *testAgent) RemoveCheck(ctx context.Context, id string) error {
	a.mu.Lock()
	_, ok := a.checks[id]
	delete(a.checks, id)
	a.mu.Unlock()
	if !ok {
		return fmt.Errorf("check %q: %w", id, structs.ErrNotFound)
	}
	return nil
}

func (a *testAgent) UpdateTTLCheck(ctx context.Context, id, status, output string) error {
	a.mu.Lock()
	c, ok := a.checks[id]
	if !ok {
		a.mu.Unlock()
		return fmt.Errorf("check %q: %w", id, structs.ErrNotFound)
	}
	if c.Type != structs.CheckTypeTTL {
		a.mu.Unlock()
		return structs.Invalid("CheckID", "%q is not a TTL check", id)
	}
	c.Status, c.Output = status, output
	cc := c.Clone()
	a.mu.Unlock()
	return a.sync(ctx, nil, structs.HealthChecks{cc})
}

func (a *testAgent) MetricsJSON() (any, error) { return map[string]any{"Gauges": []any{}}, nil }
func (a *testAgent) WritePrometheus(w io.Writer) error {
	_, err := io.WriteString(w, "# empty\n")
	return err
}

// startAPI starts a Raft server, a test agent and the HTTP API on a free
// port, and returns the agent and a Consul client and our client for it.
func startAPI(t *testing.T) (*testAgent, *Server, *consulapi.Client, *api.Client) {
	t.Helper()
	return startAPIOnce(t)
}

// startAPIOnce is startAPI for any testing.TB (the fuzz target starts one
// API for all its inputs).
func startAPIOnce(t testing.TB) (*testAgent, *Server, *consulapi.Client, *api.Client) {
	t.Helper()
	cfg := raftstore.TestConfig("s1", "")
	cfg.Logger = testutil.Logger(t)
	srv, err := raftstore.NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Shutdown() })
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if err := srv.WaitForLeader(ctx); err != nil {
		t.Fatal(err)
	}
	a := &testAgent{srv: srv, node: "node1", services: map[string]*structs.NodeService{}, checks: map[string]*structs.HealthCheck{}}
	hs := New(Config{Addrs: []string{"127.0.0.1:0"}, Logger: testutil.Logger(t)}, a)
	if err := hs.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		hs.Shutdown(ctx)
	})
	addr := hs.Addrs()[0].String()
	ccfg := consulapi.DefaultConfig()
	ccfg.Address = addr
	cc, err := consulapi.NewClient(ccfg)
	if err != nil {
		t.Fatal(err)
	}
	ours, err := api.NewClient(&api.Config{Address: addr})
	if err != nil {
		t.Fatal(err)
	}
	return a, hs, cc, ours
}

// The cluster operations have no cluster behind them here; they are tested
// end to end with real agents.
func (a *testAgent) Join(context.Context, []string) (int, error) {
	return 0, errors.New("no cluster in this test")
}
func (a *testAgent) Leave(context.Context) error              { return nil }
func (a *testAgent) ForceLeave(context.Context, string) error { return nil }
func (a *testAgent) Keyring(context.Context, string, string) (*api.KeyringResponse, error) {
	return &api.KeyringResponse{NumNodes: 1, Keys: map[string]int{}, PrimaryKeys: map[string]int{}}, nil
}
