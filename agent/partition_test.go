package agent_test

import (
	"context"
	"testing"
	"time"

	consulapi "github.com/hashicorp/consul/api"

	"github.com/trellismesh/trellis/internal/retry"
	"github.com/trellismesh/trellis/internal/testcluster"
)

// TestCluster_ClientPartition cuts a client off from everyone with iptables:
// its services go critical in the catalog, and come back passing after the
// partition heals, with no manual step.
func TestCluster_ClientPartition(t *testing.T) {
	t.Parallel()
	fw := testcluster.NewFirewall(t)
	ips := testcluster.LoopbackIPs(t, 4)
	c := testcluster.StartCluster(t, testcluster.ClusterOptions{Servers: 3, Clients: 1, IPs: ips})
	client := c.Clients[0]
	if err := client.Client.Agent().ServiceRegister(&consulapi.AgentServiceRegistration{Name: "api", Port: 9000}); err != nil {
		t.Fatal(err)
	}
	server := c.Servers[0].Client
	passing := func() int {
		entries, _, err := server.Health().Service("api", "", true, &consulapi.QueryOptions{AllowStale: true})
		if err != nil {
			return -1
		}
		return len(entries)
	}
	// A cluster of four forming on a loaded machine can take a while.
	retry.RunWith(&retry.Timer{Timeout: 30 * time.Second, Wait: 100 * time.Millisecond}, t, func(r *retry.R) {
		if n := passing(); n != 1 {
			r.Fatalf("api passing on %d instances, want 1", n)
		}
	})

	fw.Partition(ips[3:], ips[:3])
	cut := time.Now()
	retry.RunWith(&retry.Timer{Timeout: 30 * time.Second, Wait: 50 * time.Millisecond}, t, func(r *retry.R) {
		if n := passing(); n != 0 {
			r.Fatalf("api still passing on %d instances", n)
		}
	})
	t.Logf("partitioned client's service left ?passing after %s", time.Since(cut).Round(time.Millisecond))
	entries, _, err := server.Health().Service("api", "", false, nil)
	if err != nil || len(entries) != 1 || entries[0].Checks.AggregatedStatus() != "critical" {
		t.Fatalf("api during the partition: %v, %v (want it listed, critical)", entries, err)
	}

	fw.Heal()
	healed := time.Now()
	retry.RunWith(&retry.Timer{Timeout: 60 * time.Second, Wait: 50 * time.Millisecond}, t, func(r *retry.R) {
		if n := passing(); n != 1 {
			r.Fatalf("api passing on %d instances after healing", n)
		}
	})
	t.Logf("service passing again %s after the partition healed", time.Since(healed).Round(time.Millisecond))
}

// TestCluster_MinorityLeaderPartition cuts the leader off from the other
// two servers: they elect a new leader, and the old one stops accepting
// writes.
func TestCluster_MinorityLeaderPartition(t *testing.T) {
	t.Parallel()
	fw := testcluster.NewFirewall(t)
	ips := testcluster.LoopbackIPs(t, 3)
	c := testcluster.StartCluster(t, testcluster.ClusterOptions{Servers: 3, IPs: ips})
	c.WaitVoters(t, c.Servers[0], 3)
	old := c.AwaitLeader(t)
	var oldIP string
	var majority []string
	var others []*testcluster.Agent
	for i, s := range c.Servers {
		if s == old {
			oldIP = ips[i]
		} else {
			majority = append(majority, ips[i])
			others = append(others, s)
		}
	}
	fw.Partition([]string{oldIP}, majority)

	var newLeader *testcluster.Agent
	retry.RunWith(&retry.Timer{Timeout: 30 * time.Second, Wait: 50 * time.Millisecond}, t, func(r *retry.R) {
		for _, s := range others {
			if s.IsLeader() {
				newLeader = s
				return
			}
		}
		r.Fatal("the majority has no leader yet")
	})
	// The majority takes writes.
	reg := &consulapi.CatalogRegistration{Node: "ext", Address: "10.0.0.1", Service: &consulapi.AgentService{Service: "after-split"}}
	if _, err := newLeader.Client.Catalog().Register(reg, nil); err != nil {
		t.Fatalf("write to the new leader: %v", err)
	}
	// The old leader steps down and refuses writes (after holding them for
	// a leader that it cannot reach).
	retry.RunWith(&retry.Timer{Timeout: 30 * time.Second, Wait: 50 * time.Millisecond}, t, func(r *retry.R) {
		if old.IsLeader() {
			r.Fatal("the isolated server still leads")
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	_, err := old.Client.Catalog().Register(&consulapi.CatalogRegistration{Node: "ext", Address: "10.0.0.1",
		Service: &consulapi.AgentService{Service: "on-minority"}}, (&consulapi.WriteOptions{}).WithContext(ctx))
	if err == nil {
		t.Fatal("the isolated old leader accepted a write")
	}
	fw.Heal()
	c.WaitForLeader(t)
	retry.RunWith(&retry.Timer{Timeout: 30 * time.Second, Wait: 50 * time.Millisecond}, t, func(r *retry.R) {
		svcs := staleServices(t, old)
		if svcs["after-split"] == nil {
			r.Fatal("old leader has not caught up after healing")
		}
		if svcs["on-minority"] != nil {
			r.Fatal("a write refused on the minority appeared")
		}
	})
}
