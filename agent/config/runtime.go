package config

import "time"

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
	UIEnabled         bool
	ConnectEnabled    bool
	// Services are registered at start.
	Services []ServiceDefinition
	// Sources lists the files read, in order.
	Sources []string
}
