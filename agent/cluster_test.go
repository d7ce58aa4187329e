package agent_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	consulapi "github.com/hashicorp/consul/api"

	"github.com/trellismesh/trellis/internal/retry"
	"github.com/trellismesh/trellis/internal/testcluster"
	"github.com/trellismesh/trellis/raftstore/structs"
)

// staleServices reads the catalog's service names from one server's own
// state (a stale read is answered locally).
func staleServices(t *testing.T, a *testcluster.Agent) map[string][]string {
	t.Helper()
	svcs, _, err := a.Client.Catalog().Services(&consulapi.QueryOptions{AllowStale: true})
	if err != nil {
		return nil
	}
	return svcs
}

func TestCluster_FormsAndReplicates(t *testing.T) {
	t.Parallel()
	c := testcluster.StartCluster(t, testcluster.ClusterOptions{Servers: 3, Clients: 2})
	c.WaitVoters(t, c.Servers[0], 3)

	client := c.Clients[0]
	if err := client.Client.Agent().ServiceRegister(&consulapi.AgentServiceRegistration{Name: "web", Port: 8080}); err != nil {
		t.Fatal(err)
	}
	for _, s := range c.Servers {
		retry.Run(t, func(r *retry.R) {
			if svcs := staleServices(t, s); svcs["web"] == nil {
				r.Fatalf("%s does not have web: %v", s.Config.NodeName, svcs)
			}
		})
	}
	// Every agent lists every member with its role.
	for _, a := range c.All() {
		members, err := a.Client.Agent().Members(false)
		if err != nil || len(members) != 5 {
			t.Fatalf("%s: members %v, %v", a.Config.NodeName, members, err)
		}
		roles := map[string]int{}
		for _, m := range members {
			roles[m.Tags["role"]]++
		}
		if roles["server"] != 3 || roles["client"] != 2 {
			t.Errorf("%s: roles %v", a.Config.NodeName, roles)
		}
	}
	// Every node has its gossip health check, passing.
	retry.Run(t, func(r *retry.R) {
		checks, _, err := client.Client.Health().State("passing", nil)
		if err != nil {
			r.Fatal(err)
		}
		serf := 0
		for _, ch := range checks {
			if ch.CheckID == "serfHealth" {
				serf++
			}
		}
		if serf != 5 {
			r.Fatalf("%d serfHealth checks passing, want 5", serf)
		}
	})
	// A blocking query through a client returns on a change.
	_, meta, err := client.Client.Health().Service("web", "", false, nil)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, m, err := c.Clients[1].Client.Health().Service("web", "", false, &consulapi.QueryOptions{WaitIndex: meta.LastIndex, WaitTime: time.Minute})
		if err == nil && m.LastIndex <= meta.LastIndex {
			err = fmt.Errorf("returned without a change")
		}
		done <- err
	}()
	if err := client.Client.Agent().ServiceRegister(&consulapi.AgentServiceRegistration{Name: "web", ID: "web-2", Port: 8081}); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("blocking query through a client did not return")
	}
	// A stale read through a client says how fresh it is.
	_, meta, err = client.Client.Catalog().Services(&consulapi.QueryOptions{AllowStale: true})
	if err != nil || !meta.KnownLeader {
		t.Errorf("stale read: %+v, %v", meta, err)
	}
}

// TestCluster_LeaderHardStop stops the leader without leaving: a new leader
// is elected, writes succeed again, and no acknowledged write is lost.
func TestCluster_LeaderHardStop(t *testing.T) {
	t.Parallel()
	c := testcluster.StartCluster(t, testcluster.ClusterOptions{Servers: 3, Clients: 1})
	c.WaitVoters(t, c.Servers[0], 3)
	client := c.Clients[0].Client
	var acked []string
	write := func(i int) error {
		id := fmt.Sprintf("db-%d", i)
		_, err := client.Catalog().Register(&consulapi.CatalogRegistration{Node: "ext", Address: "10.0.0.1",
			Service: &consulapi.AgentService{ID: id, Service: "db", Port: 5432}}, nil)
		if err == nil {
			acked = append(acked, id)
		}
		return err
	}
	for i := range 20 {
		if err := write(i); err != nil {
			t.Fatal(err)
		}
	}
	leader := c.AwaitLeader(t)
	stopped := time.Now()
	leader.Stop()
	var firstOK time.Duration
	for i := 20; ; i++ {
		if err := write(i); err == nil {
			firstOK = time.Since(stopped)
			break
		}
		if time.Since(stopped) > 30*time.Second {
			t.Fatal("no write succeeded within 30s of the leader stopping")
		}
	}
	t.Logf("leader stopped; first successful write after %s", firstOK)
	var survivor *testcluster.Agent
	for _, s := range c.Servers {
		if s != leader {
			survivor = s
		}
	}
	retry.Run(t, func(r *retry.R) {
		nodes, _, err := survivor.Client.Catalog().Service("db", "", nil)
		if err != nil {
			r.Fatal(err)
		}
		have := map[string]bool{}
		for _, n := range nodes {
			have[n.ServiceID] = true
		}
		for _, id := range acked {
			if !have[id] {
				r.Fatalf("acknowledged write %s lost", id)
			}
		}
	})
	// The stopped leader's node turns critical.
	retry.Run(t, func(r *retry.R) {
		checks, _, _ := client.Health().Node(leader.Config.NodeName, nil)
		for _, ch := range checks {
			if ch.CheckID == "serfHealth" && ch.Status == "critical" {
				return
			}
		}
		r.Fatalf("old leader's serfHealth = %v", checks)
	})
}

// TestCluster_RestartsCatchUp restarts a server on its data directory (it
// catches up with writes made while it was down) and a client (it registers
// its services again, even after its node was removed from the catalog).
func TestCluster_RestartsCatchUp(t *testing.T) {
	t.Parallel()
	ports := map[int][2]int{}
	c := testcluster.StartCluster(t, testcluster.ClusterOptions{Servers: 3, Clients: 1, Persistent: true,
		Modify: func(i int, o *testcluster.Options) {
			// Restarts keep their ports.
			p := freePorts(t, 2)
			o.ServerPort, o.SerfPort = p[0], p[1]
			ports[i] = [2]int{p[0], p[1]}
		}})
	c.WaitVoters(t, c.Servers[0], 3)

	// A follower goes down; writes go on.
	var follower *testcluster.Agent
	idx := 0
	for i, s := range c.Servers {
		if !s.IsLeader() {
			follower, idx = s, i
		}
	}
	dataDir := follower.Config.DataDir
	follower.Stop()
	for i := range 10 {
		_, err := c.Clients[0].Client.Catalog().Register(&consulapi.CatalogRegistration{Node: "ext", Address: "10.0.0.1",
			Service: &consulapi.AgentService{ID: fmt.Sprintf("later-%d", i), Service: "later"}}, nil)
		if err != nil {
			t.Fatal(err)
		}
	}
	back := testcluster.StartAgent(t, testcluster.Options{Name: follower.Config.NodeName, DataDir: dataDir,
		BootstrapExpect: 3, ServerPort: ports[idx][0], SerfPort: ports[idx][1], RetryJoin: []string{c.Servers[(idx+1)%3].GossipAddr()}})
	retry.RunWith(&retry.Timer{Timeout: 30 * time.Second, Wait: 50 * time.Millisecond}, t, func(r *retry.R) {
		nodes, _, err := back.Client.Catalog().Service("later", "", &consulapi.QueryOptions{AllowStale: true})
		if err != nil || len(nodes) != 10 {
			r.Fatalf("restarted server has %d of 10 later writes (%v)", len(nodes), err)
		}
	})

	// The client registers a service, goes down, and its node is removed
	// from the catalog meanwhile; restarted, it puts everything back.
	cl := c.Clients[0]
	if err := cl.Client.Agent().ServiceRegister(&consulapi.AgentServiceRegistration{Name: "api", Port: 9000,
		Check: &consulapi.AgentServiceCheck{TTL: "1h", Status: "passing"}}); err != nil {
		t.Fatal(err)
	}
	retry.Run(t, func(r *retry.R) {
		if svcs := staleServices(t, c.Servers[0]); svcs["api"] == nil {
			r.Fatal("api not synced")
		}
	})
	clientDir, name := cl.Config.DataDir, cl.Config.NodeName
	cl.Stop()
	if _, err := c.Servers[0].Client.Catalog().Deregister(&consulapi.CatalogDeregistration{Node: name}, nil); err != nil {
		t.Fatal(err)
	}
	cl2 := testcluster.StartAgent(t, testcluster.Options{Name: name, DataDir: clientDir, Client: true,
		ServerPort: ports[3][0], SerfPort: ports[3][1], RetryJoin: []string{c.Servers[0].GossipAddr()}})
	retry.RunWith(&retry.Timer{Timeout: 30 * time.Second, Wait: 50 * time.Millisecond}, t, func(r *retry.R) {
		entries, _, err := c.Servers[0].Client.Health().Service("api", "", true, nil)
		if err != nil || len(entries) != 1 || entries[0].Node.Node != name {
			r.Fatalf("api after client restart: %v, %v", entries, err)
		}
	})
	if svcs, _ := cl2.Client.Agent().Services(); svcs["api"] == nil {
		t.Error("restarted client does not list its service")
	}
}

// TestCluster_ServerLeaveAndJoin: a server that leaves is removed from the
// Raft configuration; a new server is added, first as a non-voter, then as
// a voter once stable.
func TestCluster_ServerLeaveAndJoin(t *testing.T) {
	t.Parallel()
	c := testcluster.StartCluster(t, testcluster.ClusterOptions{Servers: 3})
	c.WaitVoters(t, c.Servers[0], 3)
	var leaving *testcluster.Agent
	for _, s := range c.Servers {
		if !s.IsLeader() {
			leaving = s
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := leaving.LeaveAndShutdown(ctx); err != nil {
		t.Fatalf("leave: %v", err)
	}
	leader := c.AwaitLeader(t)
	c.WaitVoters(t, leader, 2)
	retry.Run(t, func(r *retry.R) {
		nodes, _, _ := leader.Client.Catalog().Nodes(nil)
		for _, n := range nodes {
			if n.Node == leaving.Config.NodeName {
				r.Fatalf("node that left still in the catalog")
			}
		}
	})
	// A new server joins: non-voter first, voter after stabilisation.
	extra := testcluster.StartAgent(t, testcluster.Options{Name: "server-new", BootstrapExpect: 3, RetryJoin: []string{leader.GossipAddr()}})
	c.WaitVoters(t, leader, 3)
	ctx2, cancel2 := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel2()
	if err := extra.WaitForLeader(ctx2); err != nil {
		t.Fatal(err)
	}
}

// TestCluster_ServerLeaveDrains: a server that leaves keeps answering for
// leave_drain_time once the others know it left and its Raft has stopped,
// forwarding writes through another server; then it shuts down.
func TestCluster_ServerLeaveDrains(t *testing.T) {
	t.Parallel()
	const drain = 5 * time.Second
	c := testcluster.StartCluster(t, testcluster.ClusterOptions{Servers: 3, Modify: func(_ int, o *testcluster.Options) {
		o.HCL = fmt.Sprintf("performance {\n  leave_drain_time = %q\n}\n", drain)
	}})
	leader := c.AwaitLeader(t)
	c.WaitVoters(t, leader, 3)
	var leaving *testcluster.Agent
	for _, s := range c.Servers {
		if s != leader {
			leaving = s
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	start := time.Now()
	done := make(chan error, 1)
	go func() { done <- leaving.LeaveAndShutdown(ctx) }()

	// Out of Raft, and left as far as gossip goes...
	c.WaitVoters(t, leader, 2)
	retry.Run(t, func(r *retry.R) {
		for _, m := range leader.Members() {
			if m.Name == leaving.Config.NodeName && m.Status != 3 {
				r.Fatalf("%s is %d, not left (3)", m.Name, m.Status)
			}
		}
	})
	// ...and with its Raft stopped (removed, it knows no leader any more)...
	retry.Run(t, func(r *retry.R) {
		if l, err := leaving.Client.Status().Leader(); err != nil || l != "" {
			r.Fatalf("the leaving server still knows a leader: %q, %v", l, err)
		}
	})
	// ...it still answers: a write sent to it goes to the leader, through
	// another server.
	if _, err := leaving.Client.Catalog().Register(&consulapi.CatalogRegistration{Node: "ext", Address: "10.0.0.1",
		Service: &consulapi.AgentService{ID: "late", Service: "late", Port: 1}}, nil); err != nil {
		t.Fatalf("a write sent to the draining server: %v", err)
	}
	select {
	case err := <-done:
		t.Fatalf("the leaving server shut down (%v) %s after its leave began, before its drain ended", err, time.Since(start))
	default:
	}
	if err := <-done; err != nil {
		t.Fatalf("leave: %v", err)
	}
	if took := time.Since(start); took < drain {
		t.Errorf("leave returned after %s, before the %s drain", took, drain)
	}
	if nodes, _, err := leader.Client.Catalog().Service("late", "", nil); err != nil || len(nodes) != 1 {
		t.Errorf("the write made during the drain: %v, %v", nodes, err)
	}
}

// TestCluster_OperatorRemovePeer removes a failed server by hand.
func TestCluster_OperatorRemovePeer(t *testing.T) {
	t.Parallel()
	c := testcluster.StartCluster(t, testcluster.ClusterOptions{Servers: 3})
	c.WaitVoters(t, c.Servers[0], 3)
	var victim *testcluster.Agent
	for _, s := range c.Servers {
		if !s.IsLeader() {
			victim = s
		}
	}
	addr := victim.ServerAddr()
	victim.Stop()
	leader := c.AwaitLeader(t)
	// Until gossip sees it failed, autopilot would add a live server back.
	retry.Run(t, func(r *retry.R) {
		for _, m := range leader.Members() {
			if m.Name == victim.Config.NodeName && m.Status != 4 {
				r.Fatalf("victim is %d, not failed yet", m.Status)
			}
		}
	})
	// Two voters are left to commit the removal: a change of leader while
	// it commits leaves its outcome unknown (a 500 that says so). Then, as
	// the docs tell users, read the configuration back and remove again
	// only if the server is still in it.
	retry.Run(t, func(r *retry.R) {
		err := leader.Client.Operator().RaftRemovePeerByAddress(addr, nil)
		switch {
		case err == nil:
		case strings.Contains(err.Error(), "may or may not have been applied"), strings.Contains(err.Error(), "No cluster leader"):
			var reply structs.RaftConfigurationResponse
			if rerr := leader.RPC(context.Background(), structs.MethodOperatorRaftConfig, &structs.DCSpecificRequest{}, &reply); rerr != nil {
				r.Fatalf("remove-peer: %v; then reading the configuration: %v", err, rerr)
			}
			for _, s := range reply.Servers {
				if s.Address == addr {
					r.Fatalf("remove-peer: %v, and the server is still in the configuration", err)
				}
			}
		default:
			t.Fatal(err)
		}
	})
	c.WaitVoters(t, leader, 2)
	var reply structs.RaftConfigurationResponse
	if err := leader.RPC(context.Background(), structs.MethodOperatorRaftConfig, &structs.DCSpecificRequest{}, &reply); err != nil {
		t.Fatal(err)
	}
	for _, s := range reply.Servers {
		if s.Address == addr {
			t.Errorf("removed peer still listed: %+v", s)
		}
	}
	if err := leader.Client.Operator().RaftRemovePeerByAddress(addr, nil); err == nil || !strings.Contains(err.Error(), "404") {
		t.Errorf("removing again: %v, want 404", err)
	}
}

// TestCluster_FailedClientReaped: a client that fails is critical at once
// and deregistered once failed for reconnect_timeout; one that leaves is
// deregistered at once.
func TestCluster_FailedClientReaped(t *testing.T) {
	t.Parallel()
	c := testcluster.StartCluster(t, testcluster.ClusterOptions{Servers: 1, Clients: 2,
		Modify: func(i int, o *testcluster.Options) { o.HCL = `reconnect_timeout = "3s"` }})
	leader := c.Servers[0].Client
	hasNode := func(name string) bool {
		nodes, _, _ := leader.Catalog().Nodes(nil)
		for _, n := range nodes {
			if n.Node == name {
				return true
			}
		}
		return false
	}
	failed, leaving := c.Clients[0], c.Clients[1]
	retry.Run(t, func(r *retry.R) {
		if !hasNode(failed.Config.NodeName) || !hasNode(leaving.Config.NodeName) {
			r.Fatal("clients not in the catalog yet")
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := leaving.LeaveAndShutdown(ctx); err != nil {
		t.Fatal(err)
	}
	retry.Run(t, func(r *retry.R) {
		if hasNode(leaving.Config.NodeName) {
			r.Fatal("the client that left is still in the catalog")
		}
	})
	failed.Stop()
	retry.Run(t, func(r *retry.R) {
		checks, _, _ := leader.Health().Node(failed.Config.NodeName, nil)
		for _, ch := range checks {
			if ch.CheckID == "serfHealth" && ch.Status == "critical" {
				return
			}
		}
		r.Fatal("the failed client is not critical")
	})
	retry.RunWith(&retry.Timer{Timeout: 30 * time.Second, Wait: 100 * time.Millisecond}, t, func(r *retry.R) {
		if hasNode(failed.Config.NodeName) {
			r.Fatal("the failed client was not reaped")
		}
	})
}
