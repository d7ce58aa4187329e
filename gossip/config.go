package gossip

import (
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/memberlist"
)

// Config configures a Pool.
type Config struct {
	// NodeName is this member's name, unique in the cluster. Required.
	NodeName string
	// BindAddr and BindPort are where gossip listens (TCP and UDP). Port 0
	// picks a free one.
	BindAddr string
	BindPort int
	// AdvertiseAddr and AdvertisePort are what other members dial; the bind
	// address and port when empty.
	AdvertiseAddr string
	AdvertisePort int
	// Tags are this member's metadata (at most 512 bytes encoded).
	Tags map[string]string
	// Keys are the gossip encryption keys (32 bytes each); the first is the
	// primary. None means gossip is not encrypted.
	Keys [][]byte
	// KeyringFile, when set, keeps the keyring across restarts: it is read
	// at start (and then takes the place of Keys) and rewritten on every
	// keyring change (mode 0600).
	KeyringFile string
	// SnapshotFile, when set, keeps the addresses of the known members, so
	// a restarted agent rejoins them at once instead of knowing nobody until
	// retry_join or another member reaches it.
	SnapshotFile string
	// Timing holds the protocol timers; LANTiming in production.
	Timing Timing
	// Logger is named "gossip"; nil means hclog.Default().
	Logger hclog.Logger
}

// Timing holds the timers of the gossip protocol and of the pool.
type Timing struct {
	// ProbeInterval: each member probes one other this often.
	ProbeInterval time.Duration
	// ProbeTimeout: a probe unanswered this long asks others to probe.
	ProbeTimeout time.Duration
	// SuspicionMult scales how long a suspect has to refute before it is
	// declared failed: SuspicionMult * log10(members) * ProbeInterval at
	// least (shorter with more confirmations).
	SuspicionMult int
	// GossipInterval: how often state changes are gossiped.
	GossipInterval time.Duration
	// PushPullInterval: how often full state is exchanged with a random member.
	PushPullInterval time.Duration
	// TCPTimeout bounds stream connections (join, push-pull).
	TCPTimeout time.Duration
	// ReconnectInterval: how often a failed member is retried.
	ReconnectInterval time.Duration
	// ReconnectTimeout: a member failed this long is reaped.
	ReconnectTimeout time.Duration
	// TombstoneTimeout: a member that left is forgotten after this long.
	TombstoneTimeout time.Duration
}

// LANTiming is the production profile for one datacenter's LAN. It starts
// from memberlist's LAN defaults and probes twice as often with a shorter
// suspicion: a member is declared failed once suspected for
// SuspicionMult * log10(n) * ProbeInterval (1.7 s at 50 members, 2.3 s at
// 200), so a failed agent is known everywhere within a few seconds (see the
// figures of BenchmarkGossipFailureDetection). Lifeguard's awareness still
// stretches the timeouts of a member that is itself slow, which keeps false
// alarms down. SuspicionMult 2 also makes memberlist use the short timeout
// at once instead of waiting for confirmations.
func LANTiming() Timing {
	d := memberlist.DefaultLANConfig()
	return Timing{
		ProbeInterval:     500 * time.Millisecond, // memberlist: 1s
		ProbeTimeout:      250 * time.Millisecond, // memberlist: 500ms; far above a LAN round trip
		SuspicionMult:     2,                      // memberlist: 4
		GossipInterval:    100 * time.Millisecond, // memberlist: 200ms
		PushPullInterval:  d.PushPullInterval,
		TCPTimeout:        d.TCPTimeout,
		ReconnectInterval: 30 * time.Second,
		ReconnectTimeout:  72 * time.Hour,
		TombstoneTimeout:  24 * time.Hour,
	}
}

// DevTiming is the profile of -dev and tests: fast timers on loopback.
func DevTiming() Timing {
	return Timing{
		ProbeInterval:     200 * time.Millisecond,
		ProbeTimeout:      100 * time.Millisecond,
		SuspicionMult:     2,
		GossipInterval:    50 * time.Millisecond,
		PushPullInterval:  5 * time.Second,
		TCPTimeout:        2 * time.Second,
		ReconnectInterval: 500 * time.Millisecond,
		ReconnectTimeout:  72 * time.Hour,
		TombstoneTimeout:  24 * time.Hour,
	}
}

// Validate checks cfg without changing it.
func (c *Config) Validate() error {
	if c.NodeName == "" {
		return errors.New("gossip: NodeName is required")
	}
	if c.BindPort < 0 || c.BindPort > 65535 {
		return fmt.Errorf("gossip: bind port %d out of range", c.BindPort)
	}
	for i, k := range c.Keys {
		if err := memberlist.ValidateKey(k); err != nil {
			return fmt.Errorf("gossip: key %d: %w", i, err)
		}
	}
	t := c.Timing
	if t.ProbeInterval <= 0 || t.ProbeTimeout <= 0 || t.SuspicionMult < 1 || t.GossipInterval <= 0 ||
		t.PushPullInterval <= 0 || t.TCPTimeout <= 0 || t.ReconnectInterval <= 0 || t.ReconnectTimeout <= 0 || t.TombstoneTimeout <= 0 {
		return errors.New("gossip: every Timing field must be positive")
	}
	if b, err := encodeTags(c.Tags); err != nil {
		return err
	} else if len(b) > memberlist.MetaMaxSize {
		return fmt.Errorf("gossip: tags take %d bytes, more than the %d allowed", len(b), memberlist.MetaMaxSize)
	}
	return nil
}
