package config

import (
	"time"

	"github.com/trellismesh/trellis/raftstore/structs"
)

// RuntimeConfig is the agent's configuration once every source is merged and
// checked. It holds plain values, is passed by value, and never changes: a
// reload builds a new one.
type RuntimeConfig struct {
	// DevMode is true for -dev.
	DevMode bool
	// Datacenter is lowercased.
	Datacenter string
	NodeName   string
	// NodeID is a UUID: configured, kept in DataDir/node-id, or (in -dev)
	// random.
	NodeID string
	// DataDir is where the agent keeps state; empty in -dev (in memory).
	DataDir string
	// Server and Bootstrap: see the flags of the same names.
	Server    bool
	Bootstrap bool
	// BindAddr is the IP the cluster ports bind; AdvertiseAddr the IP other
	// agents reach.
	BindAddr      string
	AdvertiseAddr string
	// ClientAddrs are the IPs the HTTP and DNS interfaces bind.
	ClientAddrs []string
	// Ports: 0 picks a free port (tests); -1 disables HTTP or DNS.
	HTTPPort    int
	DNSPort     int
	ServerPort  int
	SerfLANPort int
	// LogLevel is trace, debug, info, warn or error.
	LogLevel string
	LogJSON  bool
	// DNSDomain is fully qualified and lowercased ("trellis.").
	DNSDomain         string
	DNSNodeTTL        time.Duration
	DNSServiceTTL     time.Duration
	DNSUDPAnswerLimit int
	// MeshMetricsInterval is how often the agent sends its proxies' golden
	// signals to the servers (telemetry { mesh_metrics_interval }).
	MeshMetricsInterval time.Duration
	UIEnabled           bool
	// ConnectEnabled turns the mesh on (connect { enabled }).
	ConnectEnabled bool
	// DefaultIntentionAllow is the policy when no intention matches:
	// connect { default_intention_policy } is "deny" by default, "allow" in
	// -dev.
	DefaultIntentionAllow bool
	// ConnectCA is connect { ca_config { ... } }: what the first leader
	// starts the CA with.
	ConnectCA structs.CAConfig `json:"-"`
	// SidecarMinPort and SidecarMaxPort bound the public ports the agent
	// picks for sidecars that name none.
	SidecarMinPort, SidecarMaxPort int
	// BootstrapExpect is the number of servers that form the cluster
	// together; 0 when not set.
	BootstrapExpect int
	// RetryJoin are the agents to join at start, tried every RetryInterval
	// until one answers.
	RetryJoin     []string
	RetryInterval time.Duration
	// EncryptKey is the gossip key (base64); empty means no encryption.
	EncryptKey string `json:"-"`
	// ReconnectTimeout is how long a failed member is kept (and retried)
	// before it is reaped from the catalog.
	ReconnectTimeout time.Duration
	// ServerStabilizationTime is how long a new server stays healthy as a
	// non-voter before it votes.
	ServerStabilizationTime time.Duration
	// RaftMultiplier scales a server's Raft timers (heartbeat, election and
	// leader lease timeouts): 1 is the fastest failover, up to
	// MaxRaftMultiplier trades failover time for calm on slow or
	// overcommitted machines.
	RaftMultiplier int
	// RPCHoldTimeout is how long a request that needs the leader is held,
	// and tried again, while no server can serve it (an election, a lost
	// server).
	RPCHoldTimeout time.Duration
	// LeaveDrainTime is how long a server that left the cluster gracefully
	// keeps answering the requests still sent to it before it shuts down.
	LeaveDrainTime time.Duration
	// GossipLAN overrides timers of the gossip profile (-dev or
	// production); a zero field keeps the profile's.
	GossipLAN GossipLANConfig
	// TLS secures Raft and internal RPC between agents.
	TLS TLSConfig
	// EnableDebug serves Go's profiler on the HTTP port.
	EnableDebug bool
	// Services are registered at start.
	Services []ServiceDefinition
	// Sources lists the files read, in order.
	Sources []string
}

// GossipLANConfig is gossip_lan { ... }: the failure detector's timers,
// as in Consul.
type GossipLANConfig struct {
	// ProbeInterval: each agent probes one other this often.
	ProbeInterval time.Duration
	// ProbeTimeout: a probe unanswered this long asks others to probe.
	ProbeTimeout time.Duration
	// SuspicionMult scales how long a suspect member has to refute the
	// suspicion before it is declared failed.
	SuspicionMult int
	// GossipInterval: how often changes are gossiped.
	GossipInterval time.Duration
}

// MaxRaftMultiplier is the largest performance.raft_multiplier, as in
// Consul.
const MaxRaftMultiplier = 10

// TLSConfig is the tls { defaults { ... } } block.
type TLSConfig struct {
	CAFile, CertFile, KeyFile      string
	VerifyIncoming, VerifyOutgoing bool
}

// Enabled reports whether TLS is configured.
func (t TLSConfig) Enabled() bool { return t.CAFile != "" || t.CertFile != "" || t.KeyFile != "" }
