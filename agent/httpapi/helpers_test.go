package httpapi

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	consulapi "github.com/hashicorp/consul/api"

	"github.com/trellismesh/trellis/api"
	"github.com/trellismesh/trellis/connect"
	"github.com/trellismesh/trellis/connect/golden"
	"github.com/trellismesh/trellis/connect/intentions"
	"github.com/trellismesh/trellis/connect/proxy"
	"github.com/trellismesh/trellis/internal/testutil"
	"github.com/trellismesh/trellis/raftstore"
	"github.com/trellismesh/trellis/raftstore/blocking"
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

	// defaultAllow is the default intention policy.
	defaultAllow atomic.Bool
	// leafMu serializes signing, so a service has one current leaf.
	leafMu sync.Mutex
	leaves map[string]*structs.IssuedCert // guarded by leafMu

	samples []golden.Sample // guarded by mu; what AddMeshSamples got
}

var _ Agent = (*testAgent)(nil)

func (a *testAgent) DescribeProxy(string) (proxy.Description, []*connect.Intention, bool) {
	return proxy.Description{}, nil, false
}

func (a *testAgent) AddMeshSamples(samples []golden.Sample) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.samples = append(a.samples, samples...)
	return nil
}

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
	a := &testAgent{srv: srv, node: "node1", services: map[string]*structs.NodeService{}, checks: map[string]*structs.HealthCheck{},
		leaves: map[string]*structs.IssuedCert{}}
	hs := serveAPI(t, a, Config{})
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

// serveAPI starts an HTTP API of cfg (on a free loopback port, with the
// test's logger) for a, stopped when the test ends.
func serveAPI(t testing.TB, a Agent, cfg Config) *Server {
	t.Helper()
	cfg.Addrs = []string{"127.0.0.1:0"}
	cfg.Logger = testutil.Logger(t)
	hs := New(cfg, a)
	if err := hs.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		hs.Shutdown(ctx)
	})
	return hs
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

// The mesh side: the roots and intentions come from the Raft server by RPC;
// leaves are signed from a CSR made here, as the real agent does.

func (a *testAgent) ConnectRoots(ctx context.Context, minIndex uint64, wait time.Duration) (*structs.IndexedCARoots, error) {
	req := &structs.DCSpecificRequest{QueryOptions: structs.QueryOptions{MinQueryIndex: minIndex, MaxQueryTime: wait}}
	var reply structs.IndexedCARoots
	if err := a.srv.RPC(ctx, structs.MethodCARoots, req, &reply); err != nil {
		return nil, err
	}
	return &reply, nil
}

// signLeaf makes a key and a CSR for service and has the leader sign it.
func (a *testAgent) signLeaf(ctx context.Context, service string) (*structs.IssuedCert, error) {
	roots, err := a.ConnectRoots(ctx, 0, 0)
	if err != nil {
		return nil, err
	}
	key, err := connect.GenerateKey()
	if err != nil {
		return nil, err
	}
	csr, err := connect.CreateCSR(connect.NewServiceID(roots.TrustDomain, "dc1", service), key)
	if err != nil {
		return nil, err
	}
	var cert structs.IssuedCert
	if err := a.srv.RPC(ctx, structs.MethodCASign, &structs.CASignRequest{CSR: csr, Node: a.node}, &cert); err != nil {
		return nil, err
	}
	if cert.PrivateKeyPEM, err = connect.EncodeKey(key); err != nil {
		return nil, err
	}
	return &cert, nil
}

func (a *testAgent) ConnectLeaf(ctx context.Context, service string, minIndex uint64, wait time.Duration) (*structs.IssuedCert, error) {
	a.leafMu.Lock()
	leaf := a.leaves[service]
	if leaf == nil {
		var err error
		if leaf, err = a.signLeaf(ctx, service); err != nil {
			a.leafMu.Unlock()
			return nil, err
		}
		a.leaves[service] = leaf
	}
	a.leafMu.Unlock()
	if minIndex == 0 || leaf.ModifyIndex > minIndex {
		c := *leaf
		return &c, nil
	}
	// Block until the active root changes (then sign a new leaf) or the
	// wait has passed (then answer the same leaf).
	if wait <= 0 {
		wait = blocking.DefaultWait
	}
	wctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	var rootsIndex uint64
	for {
		left := time.Until(deadlineOf(wctx))
		if left <= 0 {
			c := *leaf
			return &c, nil
		}
		roots, err := a.ConnectRoots(wctx, rootsIndex, left)
		if wctx.Err() != nil && ctx.Err() == nil {
			c := *leaf
			return &c, nil
		}
		if err != nil {
			return nil, err
		}
		if roots.ActiveRootID != leaf.RootID {
			a.leafMu.Lock()
			defer a.leafMu.Unlock()
			if cur := a.leaves[service]; cur != leaf {
				c := *cur
				return &c, nil
			}
			next, err := a.signLeaf(ctx, service)
			if err != nil {
				return nil, err
			}
			a.leaves[service] = next
			c := *next
			return &c, nil
		}
		rootsIndex = roots.Index
	}
}

func deadlineOf(ctx context.Context) time.Time {
	d, _ := ctx.Deadline()
	return d
}

func (a *testAgent) ConnectAuthorize(ctx context.Context, target, clientCertURI string) (intentions.Decision, error) {
	id, err := connect.ParseServiceID(clientCertURI)
	if err != nil {
		return intentions.Decision{}, structs.Invalid("ClientCertURI", "%v", err)
	}
	roots, err := a.ConnectRoots(ctx, 0, 0)
	if err != nil {
		return intentions.Decision{}, err
	}
	if !strings.EqualFold(id.TrustDomain, roots.TrustDomain) {
		return intentions.Decision{}, structs.Invalid("ClientCertURI", "trust domain %q is not this cluster's (%s)", id.TrustDomain, roots.TrustDomain)
	}
	req := &structs.IntentionMatchRequest{By: "destination", Names: []string{target}}
	var reply structs.IndexedIntentionMatches
	if err := a.srv.RPC(ctx, structs.MethodIntentionMatch, req, &reply); err != nil {
		return intentions.Decision{}, err
	}
	if len(reply.Matches) != 1 {
		return intentions.Decision{}, fmt.Errorf("match answered %d lists for 1 name", len(reply.Matches))
	}
	return intentions.NewSet(reply.Matches[0]).Decide(id.Service, target, a.DefaultIntentionAllow()), nil
}

func (a *testAgent) DefaultIntentionAllow() bool { return a.defaultAllow.Load() }
