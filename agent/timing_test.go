package agent

import (
	"strings"
	"testing"
	"time"

	"github.com/trellismesh/trellis/agent/config"
	"github.com/trellismesh/trellis/gossip"
	"github.com/trellismesh/trellis/raftstore"
)

// TestServerTiming checks that performance.raft_multiplier reaches the
// server's Raft timers, in production and in -dev.
func TestServerTiming(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		dev  bool
		m    int
		base raftstore.Timing
	}{
		{false, 1, raftstore.DefaultTiming()},
		{false, 5, raftstore.DefaultTiming()},
		{true, 1, raftstore.DevTiming()},
		{true, 3, raftstore.DevTiming()},
	} {
		got := serverTiming(config.RuntimeConfig{DevMode: tc.dev, RaftMultiplier: tc.m})
		m := time.Duration(tc.m)
		if got.HeartbeatTimeout != m*tc.base.HeartbeatTimeout || got.ElectionTimeout != m*tc.base.ElectionTimeout ||
			got.LeaderLeaseTimeout != m*tc.base.LeaderLeaseTimeout {
			t.Errorf("dev %v, raft_multiplier %d: heartbeat %s election %s lease %s; want %d× %s %s %s", tc.dev, tc.m,
				got.HeartbeatTimeout, got.ElectionTimeout, got.LeaderLeaseTimeout, tc.m,
				tc.base.HeartbeatTimeout, tc.base.ElectionTimeout, tc.base.LeaderLeaseTimeout)
		}
		// The other timers do not detect failures: they stay.
		if got.CommitTimeout != tc.base.CommitTimeout || got.SnapshotInterval != tc.base.SnapshotInterval {
			t.Errorf("dev %v, raft_multiplier %d: commit %s snapshot %s changed", tc.dev, tc.m, got.CommitTimeout, got.SnapshotInterval)
		}
	}
}

// TestGossipTiming checks that the gossip_lan keys reach the failure
// detector over either profile, and refuses a probe timeout longer than the
// interval.
func TestGossipTiming(t *testing.T) {
	t.Parallel()
	got, err := gossipTiming(config.RuntimeConfig{ReconnectTimeout: time.Hour})
	if want := gossip.LANTiming(); err != nil || got.ProbeInterval != want.ProbeInterval || got.ReconnectTimeout != time.Hour {
		t.Errorf("production, no keys: %+v, %v; want the LAN profile with reconnect_timeout 1h", got, err)
	}
	got, err = gossipTiming(config.RuntimeConfig{DevMode: true, GossipLAN: config.GossipLANConfig{ProbeTimeout: 150 * time.Millisecond, SuspicionMult: 5}})
	dev := gossip.DevTiming()
	if err != nil || got.ProbeTimeout != 150*time.Millisecond || got.SuspicionMult != 5 || got.ProbeInterval != dev.ProbeInterval || got.GossipInterval != dev.GossipInterval {
		t.Errorf("-dev with probe_timeout and suspicion_mult: %+v, %v", got, err)
	}
	got, err = gossipTiming(config.RuntimeConfig{GossipLAN: config.GossipLANConfig{ProbeInterval: 3 * time.Second, ProbeTimeout: time.Second, GossipInterval: time.Second}})
	if err != nil || got.ProbeInterval != 3*time.Second || got.ProbeTimeout != time.Second || got.GossipInterval != time.Second {
		t.Errorf("production with every key: %+v, %v", got, err)
	}
	if _, err := gossipTiming(config.RuntimeConfig{GossipLAN: config.GossipLANConfig{ProbeTimeout: 5 * time.Second}}); err == nil ||
		!strings.Contains(err.Error(), "gossip_lan.probe_timeout 5s: must be at most gossip_lan.probe_interval") {
		t.Errorf("probe_timeout above the interval: %v", err)
	}
}
