package testcluster

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/trellismesh/trellis/internal/retry"
	"github.com/trellismesh/trellis/raftstore/structs"
)

// Cluster is a set of agents that joined each other.
type Cluster struct {
	Servers []*Agent
	Clients []*Agent
}

// ClusterOptions shape StartCluster.
type ClusterOptions struct {
	Servers, Clients int
	// Persistent gives every agent a data directory (for restarts).
	Persistent bool
	// IPs, when set, gives agent i the address IPs[i] (servers first).
	IPs []string
	// Production runs every agent with the production timers.
	Production bool
	// Modify, when set, adjusts each agent's options before it starts
	// (i counts servers first, then clients). The servers of a
	// multi-server cluster come with RaftMultiplier 3 (see
	// clusterRaftMultiplier); Modify may change it.
	Modify func(i int, o *Options)
}

// clusterRaftMultiplier scales the Raft timers of the servers of a
// multi-server cluster: -dev's 100 ms heartbeat is missed, and elections
// churn, when the test process is starved for that long (-race, several
// clusters at once, a loaded CI machine). 300 ms still fails over in well
// under a second, and is a third of the production timers.
const clusterRaftMultiplier = 3

// StartCluster starts servers (bootstrapping together) and clients, all
// joining the first server, and waits until there is a leader and every
// agent sees every other alive.
func StartCluster(t testing.TB, co ClusterOptions) *Cluster {
	t.Helper()
	c := &Cluster{}
	var join []string
	opts := func(i int, name string, client bool) Options {
		o := Options{Name: name, Client: client, RetryJoin: join, Production: co.Production}
		if !client {
			o.BootstrapExpect = co.Servers
			if co.Servers > 1 && !co.Production {
				o.RaftMultiplier = clusterRaftMultiplier
			}
		}
		if co.Persistent {
			o.DataDir = t.TempDir()
		}
		if i < len(co.IPs) {
			o.BindIP = co.IPs[i]
		}
		if co.Modify != nil {
			co.Modify(i, &o)
		}
		return o
	}
	for i := range co.Servers {
		a := StartAgent(t, opts(i, fmt.Sprintf("server-%d", i), false))
		c.Servers = append(c.Servers, a)
		if i == 0 {
			join = []string{a.GossipAddr()}
		}
	}
	for i := range co.Clients {
		c.Clients = append(c.Clients, StartAgent(t, opts(co.Servers+i, fmt.Sprintf("client-%d", i), true)))
	}
	c.WaitForLeader(t)
	c.WaitMembers(t)
	return c
}

// All returns every agent, servers first.
func (c *Cluster) All() []*Agent { return append(append([]*Agent(nil), c.Servers...), c.Clients...) }

// Leader returns the server that leads, or nil.
func (c *Cluster) Leader() *Agent {
	for _, s := range c.Servers {
		if s.IsLeader() {
			return s
		}
	}
	return nil
}

// AwaitLeader waits until one of the servers leads, and returns it. Use
// it rather than Leader where the cluster may be between two leaders (just
// formed, or after a server went).
func (c *Cluster) AwaitLeader(t testing.TB) *Agent {
	t.Helper()
	var leader *Agent
	retry.RunWith(&retry.Timer{Timeout: 30 * time.Second, Wait: 20 * time.Millisecond}, t, func(r *retry.R) {
		leader = c.Leader()
		if leader == nil {
			r.Fatal("no leader yet")
		}
	})
	return leader
}

// WaitForLeader waits until one server leads and every agent can reach it.
func (c *Cluster) WaitForLeader(t testing.TB) *Agent {
	t.Helper()
	leader := c.AwaitLeader(t)
	for _, a := range c.All() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		err := a.WaitForLeader(ctx)
		cancel()
		if err != nil {
			t.Fatalf("%s does not reach the leader: %v", a.Config.NodeName, err)
		}
	}
	return leader
}

// WaitMembers waits until every agent sees every other as alive.
func (c *Cluster) WaitMembers(t testing.TB) {
	t.Helper()
	all := c.All()
	retry.RunWith(&retry.Timer{Timeout: 30 * time.Second, Wait: 20 * time.Millisecond}, t, func(r *retry.R) {
		for _, a := range all {
			alive := 0
			for _, m := range a.Members() {
				if m.Status == 1 {
					alive++
				}
			}
			if alive != len(all) {
				r.Fatalf("%s sees %d alive members, want %d", a.Config.NodeName, alive, len(all))
			}
		}
	})
}

// WaitVoters waits until the Raft configuration has n voters.
func (c *Cluster) WaitVoters(t testing.TB, via *Agent, n int) {
	t.Helper()
	retry.RunWith(&retry.Timer{Timeout: 30 * time.Second, Wait: 50 * time.Millisecond}, t, func(r *retry.R) {
		var reply structs.RaftConfigurationResponse
		if err := via.RPC(context.Background(), structs.MethodOperatorRaftConfig, &structs.DCSpecificRequest{}, &reply); err != nil {
			r.Fatal(err)
		}
		voters := 0
		for _, s := range reply.Servers {
			if s.Voter {
				voters++
			}
		}
		if voters != n {
			r.Fatalf("%d voters, want %d", voters, n)
		}
	})
}
