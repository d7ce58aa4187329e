package agent

import (
	"testing"
	"time"

	"github.com/trellismesh/trellis/agent/config"
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
