package raftstore

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/trellismesh/trellis/internal/authz"
	"github.com/trellismesh/trellis/raftstore/structs"
)

// Config configures a Server. Start from DefaultConfig.
type Config struct {
	// NodeName is this server's node name. Required.
	NodeName string
	// NodeID is this server's Raft ID; NodeName when empty. It must stay the
	// same across restarts on one DataDir.
	NodeID string
	// Datacenter is the datacenter this server serves. Required.
	Datacenter string
	// DataDir holds the Raft log and snapshots. Empty keeps everything in
	// memory (state is lost at shutdown).
	DataDir string
	// BindAddr is the host:port of the server port. Port 0 picks a free one.
	BindAddr string
	// AdvertiseAddr is the host:port other servers reach this one at; the
	// bound address when empty. It must not be an unspecified address.
	AdvertiseAddr string
	// Bootstrap makes this server form a single-server cluster when it has
	// no Raft state yet.
	Bootstrap bool
	// BootstrapExpect, when above 0, makes the servers form a cluster by
	// themselves once that many servers of the datacenter are alive in
	// Membership and none of them has Raft state yet.
	BootstrapExpect int
	// Membership is how this server learns the cluster's members (the agent
	// feeds it from gossip). The leader reconciles it into the catalog and
	// the Raft configuration. May be nil for a lone server.
	Membership Membership
	// ServerStabilizationTime is how long a new server must be healthy as a
	// non-voter before the leader makes it a voter.
	ServerStabilizationTime time.Duration
	// ReconcileInterval is how often the leader reconciles membership even
	// without a change.
	ReconcileInterval time.Duration
	// MissingGrace is how long a node or server must be absent from
	// membership (reaped) before the leader removes it, so a leader that has
	// just restarted and not yet relearned the members removes nobody.
	MissingGrace time.Duration
	// RPCHoldTimeout is how long a request that needs the leader waits for
	// one (during an election) before failing with ErrNoLeader.
	RPCHoldTimeout time.Duration
	// TLS secures Raft and internal RPC between agents; nil means plaintext.
	TLS *TLSConfig
	// Authorizer decides every RPC (rpcaccess.go) before it is served or
	// forwarded; nil allows all.
	Authorizer authz.Authorizer
	// Timing holds the Raft timers; DefaultTiming for production.
	Timing Timing
	// ApplyTimeout bounds how long a write waits to be enqueued in Raft.
	ApplyTimeout time.Duration
	// ConnectDisabled turns the mesh off: the leader makes no CA, and
	// signing requests fail.
	ConnectDisabled bool
	// CA is the CA configuration the first leader starts with (the agent's
	// connect { ca_config { ... } }); later changes go through
	// ConnectCA.ConfigurationSet. The zero value generates a root with the
	// default leaf TTL.
	CA structs.CAConfig
	// CAPruneInterval is how often the leader looks for rotated-out roots
	// that no unexpired leaf depends on any more (and removes them).
	CAPruneInterval time.Duration
	// CARootGrace is the least time a rotated-out root stays trusted, so
	// that every agent has seen the new roots before the old one goes.
	CARootGrace time.Duration

	// Logger is named "server"; nil means hclog.Default().
	Logger hclog.Logger
}

// TLSConfig is the TLS of the server port.
type TLSConfig struct {
	// Incoming is the server side: the certificate shown, and the client
	// certificates required when VerifyIncoming.
	Incoming *tls.Config
	// Outgoing is the client side for dialing other servers.
	Outgoing *tls.Config
	// RequireIncoming refuses plaintext connections.
	RequireIncoming bool
}

// Timing holds the Raft timers of a server.
type Timing struct {
	// HeartbeatTimeout: a follower that hears nothing from the leader for
	// this long (randomised up to 2x) starts an election.
	HeartbeatTimeout time.Duration
	// ElectionTimeout: a candidate that wins no election within this long
	// (randomised up to 2x) tries again.
	ElectionTimeout time.Duration
	// LeaderLeaseTimeout: a leader that cannot reach a quorum for this long
	// steps down. At most HeartbeatTimeout.
	LeaderLeaseTimeout time.Duration
	// CommitTimeout: the longest a leader waits before sending an
	// AppendEntries with nothing new, to carry the commit index.
	CommitTimeout time.Duration
	// SnapshotInterval and SnapshotThreshold: a snapshot is taken every
	// interval (randomised) when at least threshold entries were logged.
	SnapshotInterval  time.Duration
	SnapshotThreshold uint64
}

// DefaultTiming returns the production timers: a failed leader is replaced
// in about 1 to 2 seconds on a LAN.
func DefaultTiming() Timing {
	return Timing{
		HeartbeatTimeout:   1000 * time.Millisecond,
		ElectionTimeout:    1000 * time.Millisecond,
		LeaderLeaseTimeout: 500 * time.Millisecond,
		// Followers learn of a commit at the next AppendEntries; waiting
		// at most this long for one keeps a write visible on every
		// server within a few tens of milliseconds.
		CommitTimeout:     15 * time.Millisecond,
		SnapshotInterval:  120 * time.Second,
		SnapshotThreshold: 8192,
	}
}

// Scaled returns t with the timers that detect a failed leader and elect
// the next (HeartbeatTimeout, ElectionTimeout, LeaderLeaseTimeout)
// multiplied by m, as Consul's performance.raft_multiplier does: a larger m
// rides out longer pauses (CPU steal on a busy virtual machine, a long
// garbage collection) without an election, and takes m times longer to
// replace a leader that really failed. m below 1 is taken as 1.
func (t Timing) Scaled(m int) Timing {
	if m < 1 {
		m = 1
	}
	d := time.Duration(m)
	t.HeartbeatTimeout *= d
	t.ElectionTimeout *= d
	t.LeaderLeaseTimeout *= d
	return t
}

// DevTiming returns fast timers for -dev and tests: elections settle in a
// few hundred milliseconds on loopback.
func DevTiming() Timing {
	return Timing{
		HeartbeatTimeout:   100 * time.Millisecond,
		ElectionTimeout:    100 * time.Millisecond,
		LeaderLeaseTimeout: 100 * time.Millisecond,
		CommitTimeout:      5 * time.Millisecond,
		SnapshotInterval:   30 * time.Second,
		SnapshotThreshold:  8192,
	}
}

// DefaultConfig returns a complete configuration but for NodeName.
func DefaultConfig() Config {
	return Config{
		Datacenter:              "dc1",
		BindAddr:                "0.0.0.0:8300",
		Timing:                  DefaultTiming(),
		ApplyTimeout:            30 * time.Second,
		ServerStabilizationTime: 10 * time.Second,
		ReconcileInterval:       60 * time.Second,
		MissingGrace:            2 * time.Minute,
		RPCHoldTimeout:          7 * time.Second,
		CAPruneInterval:         10 * time.Second,
		CARootGrace:             time.Minute,
	}
}

// Validate checks cfg without changing it.
func (c *Config) Validate() error {
	if c.NodeName == "" {
		return errors.New("node name is required (NodeName)")
	}
	if c.Datacenter == "" {
		return errors.New("datacenter is required (Datacenter)")
	}
	if _, _, err := net.SplitHostPort(c.BindAddr); err != nil {
		return fmt.Errorf("BindAddr %q: %w", c.BindAddr, err)
	}
	if c.AdvertiseAddr != "" {
		host, _, err := net.SplitHostPort(c.AdvertiseAddr)
		if err != nil {
			return fmt.Errorf("AdvertiseAddr %q: %w", c.AdvertiseAddr, err)
		}
		if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
			return fmt.Errorf("AdvertiseAddr %q: an unspecified address cannot be reached", c.AdvertiseAddr)
		}
	}
	t := c.Timing
	if t.HeartbeatTimeout < 5*time.Millisecond || t.ElectionTimeout < 5*time.Millisecond || t.CommitTimeout < time.Millisecond {
		return fmt.Errorf("timing: heartbeat and election timeouts must be at least 5ms and commit timeout 1ms")
	}
	if t.LeaderLeaseTimeout <= 0 || t.LeaderLeaseTimeout > t.HeartbeatTimeout {
		return fmt.Errorf("timing: LeaderLeaseTimeout (%s) must be positive and at most HeartbeatTimeout (%s)", t.LeaderLeaseTimeout, t.HeartbeatTimeout)
	}
	if c.Bootstrap && c.BootstrapExpect > 0 {
		return errors.New("bootstrap and bootstrap_expect are mutually exclusive")
	}
	if c.BootstrapExpect < 0 {
		return errors.New("bootstrap_expect must be 0 or more")
	}
	if c.ServerStabilizationTime < 0 || c.ReconcileInterval <= 0 || c.RPCHoldTimeout <= 0 || c.MissingGrace < 0 {
		return errors.New("ServerStabilizationTime and MissingGrace must be 0 or more; ReconcileInterval and RPCHoldTimeout positive")
	}
	if c.CAPruneInterval <= 0 || c.CARootGrace < 0 {
		return errors.New("CAPruneInterval must be positive and CARootGrace 0 or more")
	}
	if c.ApplyTimeout <= 0 {
		return errors.New("apply timeout must be positive (ApplyTimeout)")
	}
	return nil
}
