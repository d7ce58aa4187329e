package raftstore

import (
	"context"
	"errors"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/trellismesh/trellis/internal/testutil"
	"github.com/trellismesh/trellis/raftstore/structs"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func startServer(t *testing.T, dataDir string, bind ...string) *Server {
	t.Helper()
	cfg := TestConfig("s1", dataDir)
	if len(bind) > 0 {
		cfg.BindAddr = bind[0] // a restart keeps its address, as in production
	}
	return startServerWith(t, cfg)
}

// startServerWith starts a server of cfg (with the test's logger) and
// waits for it to lead.
func startServerWith(t *testing.T, cfg Config) *Server {
	t.Helper()
	cfg.Logger = testutil.Logger(t)
	s, err := NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Shutdown() })
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if err := s.WaitForLeader(ctx); err != nil {
		t.Fatalf("no leader: %v", err)
	}
	return s
}

func register(t *testing.T, s *Server, req *structs.RegisterRequest) uint64 {
	t.Helper()
	var reply structs.WriteReply
	if err := s.RPC(t.Context(), structs.MethodCatalogRegister, req, &reply); err != nil {
		t.Fatalf("register: %v", err)
	}
	return reply.Index
}

func webReg(status string) *structs.RegisterRequest {
	return &structs.RegisterRequest{
		Node: "n1", Address: "10.0.0.1",
		Service: &structs.NodeService{Service: "web", Port: 80, Tags: []string{"v1"}},
		Check:   &structs.HealthCheck{Name: "web-alive", ServiceID: "web", Status: status},
	}
}

func TestServer_RegisterAndQuery(t *testing.T) {
	t.Parallel()
	s := startServer(t, "")
	idx := register(t, s, webReg(structs.HealthPassing))
	if idx == 0 {
		t.Fatal("write index 0")
	}

	var nodes structs.IndexedCheckServiceNodes
	if err := s.RPC(t.Context(), structs.MethodHealthServiceNodes, &structs.ServiceSpecificRequest{ServiceName: "web", PassingOnly: true}, &nodes); err != nil {
		t.Fatal(err)
	}
	if len(nodes.Nodes) != 1 || nodes.Index != idx || !nodes.KnownLeader || nodes.LastContact != 0 {
		t.Fatalf("health web = %+v", nodes)
	}
	c := nodes.Nodes[0].Checks[0]
	if c.CheckID != "web-alive" || nodes.Nodes[0].Service.ID != "web" {
		t.Errorf("defaults not filled: check %q, service ID %q", c.CheckID, nodes.Nodes[0].Service.ID)
	}

	register(t, s, webReg(structs.HealthCritical))
	if err := s.RPC(t.Context(), structs.MethodHealthServiceNodes, &structs.ServiceSpecificRequest{ServiceName: "web", PassingOnly: true}, &nodes); err != nil {
		t.Fatal(err)
	}
	if len(nodes.Nodes) != 0 {
		t.Errorf("?passing returned a critical instance")
	}

	var leader string
	if err := s.RPC(t.Context(), structs.MethodStatusLeader, &struct{}{}, &leader); err != nil || leader != s.Addr() {
		t.Errorf("leader = %q, %v; want %q", leader, err, s.Addr())
	}
	var peers []string
	if err := s.RPC(t.Context(), structs.MethodStatusPeers, &struct{}{}, &peers); err != nil || len(peers) != 1 {
		t.Errorf("peers = %v, %v", peers, err)
	}
	var dcs []string
	if err := s.RPC(t.Context(), structs.MethodCatalogListDatacenters, &structs.DCSpecificRequest{}, &dcs); err != nil || len(dcs) != 1 || dcs[0] != "dc1" {
		t.Errorf("datacenters = %v, %v", dcs, err)
	}
}

func TestServer_InvalidWritesNeverReachRaft(t *testing.T) {
	t.Parallel()
	s := startServer(t, "")
	register(t, s, webReg(structs.HealthPassing))
	// The new leader writes the CA's first root on its own; wait for that
	// write so that the only entries the check below could see are the
	// invalid writes'.
	caRoots(t, s)
	before := s.raft.LastIndex()

	cases := []struct {
		name      string
		method    string
		args      any
		wantField string
	}{
		{"no node", structs.MethodCatalogRegister, &structs.RegisterRequest{Address: "a"}, "Node"},
		{"no address", structs.MethodCatalogRegister, &structs.RegisterRequest{Node: "n"}, "Address"},
		{"bad port", structs.MethodCatalogRegister, &structs.RegisterRequest{Node: "n", Address: "a", Service: &structs.NodeService{Service: "x", Port: 70000}}, "Service.Port"},
		{"empty service name", structs.MethodCatalogRegister, &structs.RegisterRequest{Node: "n", Address: "a", Service: &structs.NodeService{ID: "x"}}, "Service.Name"},
		{"bad status", structs.MethodCatalogRegister, &structs.RegisterRequest{Node: "n", Address: "a", Check: &structs.HealthCheck{CheckID: "c", Status: "great"}}, "Check.Status"},
		{"check without id", structs.MethodCatalogRegister, &structs.RegisterRequest{Node: "n", Address: "a", Checks: structs.HealthChecks{{}}}, "Checks[0].CheckID"},
		{"unknown service", structs.MethodCatalogRegister, &structs.RegisterRequest{Node: "n", Address: "a", Check: &structs.HealthCheck{CheckID: "c", ServiceID: "ghost"}}, "Check.ServiceID"},
		{"bad meta", structs.MethodCatalogRegister, &structs.RegisterRequest{Node: "n", Address: "a", NodeMeta: map[string]string{"bad key": "v"}}, "NodeMeta"},
		{"deregister no node", structs.MethodCatalogDeregister, &structs.DeregisterRequest{}, "Node"},
	}
	for _, tc := range cases {
		var reply structs.WriteReply
		err := s.RPC(t.Context(), tc.method, tc.args, &reply)
		var ve *structs.ValidationError
		if !errors.As(err, &ve) || ve.Field != tc.wantField {
			t.Errorf("%s: error %v, want a validation error on %s", tc.name, err, tc.wantField)
		}
	}
	if after := s.raft.LastIndex(); after != before {
		t.Errorf("raft log moved from %d to %d on invalid writes", before, after)
	}

	var reply structs.WriteReply
	if err := s.RPC(t.Context(), "Nope.Nope", &struct{}{}, &reply); !errors.Is(err, structs.ErrUnknownMethod) {
		t.Errorf("unknown method: %v", err)
	}
	if err := s.RPC(t.Context(), structs.MethodCatalogRegister, &structs.DeregisterRequest{}, &reply); err == nil {
		t.Error("wrong args type accepted")
	}
	if err := s.RPC(t.Context(), structs.MethodCatalogListNodes, &structs.DCSpecificRequest{Datacenter: "mars"}, &structs.IndexedNodes{}); !errors.Is(err, structs.ErrUnknownDatacenter) {
		t.Errorf("unknown dc: %v", err)
	}
}

func TestServer_BlockingRead(t *testing.T) {
	t.Parallel()
	s := startServer(t, "")
	idx := register(t, s, webReg(structs.HealthPassing))
	done := make(chan structs.IndexedCheckServiceNodes, 1)
	go func() {
		var reply structs.IndexedCheckServiceNodes
		req := &structs.ServiceSpecificRequest{ServiceName: "web", QueryOptions: structs.QueryOptions{MinQueryIndex: idx, MaxQueryTime: time.Minute}}
		_ = s.RPC(context.Background(), structs.MethodHealthServiceNodes, req, &reply)
		done <- reply
	}()
	// Another service's registration does not answer the query.
	register(t, s, &structs.RegisterRequest{Node: "n2", Address: "10.0.0.2", Service: &structs.NodeService{Service: "db"}})
	select {
	case r := <-done:
		t.Fatalf("returned after a change to db: %+v", r.QueryMeta)
	case <-time.After(100 * time.Millisecond):
	}
	changed := time.Now()
	idx2 := register(t, s, webReg(structs.HealthWarning))
	r := <-done
	if r.Index != idx2 || r.Nodes[0].Checks[0].Status != structs.HealthWarning {
		t.Errorf("woke with %+v", r)
	}
	if d := time.Since(changed); d > 50*time.Millisecond+50*time.Millisecond {
		t.Logf("woke %s after the write was acknowledged", d)
	}
}

func TestServer_RestartKeepsState(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := startServer(t, dir)
	register(t, s, webReg(structs.HealthPassing))
	idx := register(t, s, &structs.RegisterRequest{Node: "n2", Address: "10.0.0.2", Service: &structs.NodeService{Service: "db", Port: 5432}})
	if err := s.RPC(t.Context(), structs.MethodCatalogDeregister, &structs.DeregisterRequest{Node: "n1", CheckID: "web-alive"}, &structs.WriteReply{}); err != nil {
		t.Fatal(err)
	}
	wantServiceIdx := s.State().Index("service.web")
	if err := s.Shutdown(); err != nil {
		t.Fatal(err)
	}

	s2 := startServer(t, dir, s.Addr())
	var svcs structs.IndexedServices
	if err := s2.RPC(t.Context(), structs.MethodCatalogListServices, &structs.DCSpecificRequest{}, &svcs); err != nil {
		t.Fatal(err)
	}
	if len(svcs.Services) != 2 || svcs.Index != idx {
		t.Errorf("after restart: services %v at %d, want web and db at %d", svcs.Services, svcs.Index, idx)
	}
	var checks structs.IndexedHealthChecks
	if err := s2.RPC(t.Context(), structs.MethodHealthNodeChecks, &structs.NodeSpecificRequest{Node: "n1"}, &checks); err != nil || len(checks.HealthChecks) != 0 {
		t.Errorf("after restart: n1 checks %v, %v; want none (deregistered)", checks.HealthChecks, err)
	}
	if got := s2.State().Index("service.web"); got != wantServiceIdx {
		t.Errorf("after restart: service.web index %d, want %d", got, wantServiceIdx)
	}
}

func TestServer_Snapshot(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := startServer(t, dir)
	register(t, s, webReg(structs.HealthPassing))
	if err := s.raft.Snapshot().Error(); err != nil {
		t.Fatalf("snapshot: %v", err)
	}
	register(t, s, &structs.RegisterRequest{Node: "n2", Address: "10.0.0.2", Service: &structs.NodeService{Service: "db"}})
	s.Shutdown()
	// Restart restores from the snapshot, then replays the log after it.
	s2 := startServer(t, dir, s.Addr())
	var svcs structs.IndexedServices
	if err := s2.RPC(t.Context(), structs.MethodCatalogListServices, &structs.DCSpecificRequest{}, &svcs); err != nil || len(svcs.Services) != 2 {
		t.Errorf("after snapshot and restart: %v, %v", svcs.Services, err)
	}
}

func TestConfig_Validate(t *testing.T) {
	t.Parallel()
	good := TestConfig("n", "")
	if err := good.Validate(); err != nil {
		t.Fatal(err)
	}
	for name, mut := range map[string]func(*Config){
		"no name":       func(c *Config) { c.NodeName = "" },
		"bad bind":      func(c *Config) { c.BindAddr = "nope" },
		"lease too big": func(c *Config) { c.Timing.LeaderLeaseTimeout = time.Hour },
		"unspecified":   func(c *Config) { c.AdvertiseAddr = "0.0.0.0:8300" },
	} {
		c := good
		mut(&c)
		if err := c.Validate(); err == nil {
			t.Errorf("%s: Validate accepted it", name)
		}
	}
}

func TestTiming_Scaled(t *testing.T) {
	t.Parallel()
	base := DefaultTiming()
	got := base.Scaled(5)
	if got.HeartbeatTimeout != 5*time.Second || got.ElectionTimeout != 5*time.Second ||
		got.LeaderLeaseTimeout != 2500*time.Millisecond || got.CommitTimeout != base.CommitTimeout {
		t.Errorf("Scaled(5) = %+v", got)
	}
	if base.Scaled(0) != base || base.Scaled(-3) != base || base.Scaled(1) != base {
		t.Errorf("a multiplier below 2 must leave the timers as they are")
	}
	// A scaled configuration still validates: the lease stays within the
	// heartbeat timeout.
	cfg := DefaultConfig()
	cfg.NodeName = "n"
	cfg.Timing = DevTiming().Scaled(10)
	if err := cfg.Validate(); err != nil {
		t.Errorf("Validate with Scaled(10): %v", err)
	}
}
