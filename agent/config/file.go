package config

import (
	"fmt"
	"os"
	"time"
)

// fileConfig is one source of configuration: a file, the -dev overlay or
// the flags. Pointer fields tell "not set" from a zero value, so sources
// merge field by field; services accumulate.
type fileConfig struct {
	Datacenter        *string
	NodeName          *string
	NodeID            *string
	DataDir           *string
	Server            *bool
	Bootstrap         *bool
	BindAddr          *string
	ClientAddr        *string
	AdvertiseAddr     *string
	Domain            *string
	LogLevel          *string
	LogJSON           *bool
	UIEnabled         *bool
	ConnectEnabled    *bool
	HTTPPort          *int
	DNSPort           *int
	ServerPort        *int
	SerfLANPort       *int
	DNSNodeTTL        *time.Duration
	DNSServiceTTL     *time.Duration
	DNSUDPAnswerLimit *int
	// MeshMetricsInterval is telemetry.mesh_metrics_interval.
	MeshMetricsInterval *time.Duration
	BootstrapExpect     *int
	RetryJoin           []string
	RetryInterval       *time.Duration
	Encrypt             *string
	ReconnectTimeout    *time.Duration
	StabilizationTime   *time.Duration
	// RaftMultiplier, RPCHoldTimeout and LeaveDrainTime are performance {
	// raft_multiplier rpc_hold_timeout leave_drain_time }.
	RaftMultiplier *int
	RPCHoldTimeout *time.Duration
	LeaveDrainTime *time.Duration
	// gossip_lan { probe_interval probe_timeout suspicion_mult
	// gossip_interval }: unset keeps the profile's (-dev or production).
	GossipProbeInterval  *time.Duration
	GossipProbeTimeout   *time.Duration
	GossipSuspicionMult  *int
	GossipGossipInterval *time.Duration
	TLSCAFile            *string
	TLSCertFile          *string
	TLSKeyFile           *string
	TLSVerifyIncoming    *bool
	TLSVerifyOutgoing    *bool
	EnableDebug          *bool
	// connect { default_intention_policy ca_config { ... } } and the sidecar port range.
	DefaultIntentionPolicy *string
	CAProvider             *string
	CALeafCertTTL          *time.Duration
	CAPrivateKey           *string
	CARootCert             *string
	CAPrivateKeyType       *string
	CAPrivateKeyBits       *int
	SidecarMinPort         *int
	SidecarMaxPort         *int
	Services               []ServiceDefinition
}

var topKeys = []string{"datacenter", "node_name", "node_id", "data_dir", "server", "bootstrap", "bind_addr", "client_addr",
	"advertise_addr", "domain", "log_level", "log_json", "ui", "ui_config", "connect", "ports", "dns_config", "service", "services",
	"enable_debug", "bootstrap_expect", "retry_join", "retry_interval", "encrypt", "reconnect_timeout", "autopilot", "server_stabilization_time", "tls",
	"telemetry", "performance", "gossip_lan"}

func setStr(e *errs, f field, what string, dst **string) {
	if v, ok := e.str(f, what); ok {
		*dst = &v
	}
}

func setBool(e *errs, f field, what string, dst **bool) {
	if v, ok := e.boolean(f, what); ok {
		*dst = &v
	}
}

func setInt(e *errs, f field, what string, dst **int) {
	if v, ok := e.integer(f, what); ok {
		*dst = &v
	}
}

func setDuration(e *errs, f field, what string, dst **time.Duration) {
	if v, ok := e.duration(f, what); ok {
		*dst = &v
	}
}

// decodeConfig decodes an agent configuration file.
func decodeConfig(src []byte, filename string) (*fileConfig, error) {
	var e errs
	root, ok := parseFile(src, filename, &e)
	if !ok {
		return nil, e.err()
	}
	root.what = filename
	c := &fileConfig{}
	const top = "config"
	for _, f := range root.fields(&e) {
		switch f.key {
		case "datacenter":
			setStr(&e, f, top, &c.Datacenter)
		case "node_name":
			setStr(&e, f, top, &c.NodeName)
		case "node_id":
			setStr(&e, f, top, &c.NodeID)
		case "data_dir":
			setStr(&e, f, top, &c.DataDir)
		case "server":
			setBool(&e, f, top, &c.Server)
		case "bootstrap":
			setBool(&e, f, top, &c.Bootstrap)
		case "bind_addr":
			setStr(&e, f, top, &c.BindAddr)
		case "client_addr":
			setStr(&e, f, top, &c.ClientAddr)
		case "advertise_addr":
			setStr(&e, f, top, &c.AdvertiseAddr)
		case "domain":
			setStr(&e, f, top, &c.Domain)
		case "log_level":
			setStr(&e, f, top, &c.LogLevel)
		case "log_json":
			setBool(&e, f, top, &c.LogJSON)
		case "ui":
			setBool(&e, f, top, &c.UIEnabled)
		case "ui_config":
			decodeSection(&e, f, "ui_config", map[string]func(field, string){
				"enabled": func(f field, w string) { setBool(&e, f, w, &c.UIEnabled) },
			})
		case "connect":
			decodeSection(&e, f, "connect", map[string]func(field, string){
				"enabled":                  func(f field, w string) { setBool(&e, f, w, &c.ConnectEnabled) },
				"default_intention_policy": func(f field, w string) { setStr(&e, f, w, &c.DefaultIntentionPolicy) },
				"ca_provider":              func(f field, w string) { setStr(&e, f, w, &c.CAProvider) },
				"ca_config":                func(f field, w string) { decodeCAConfig(&e, f, "connect.ca_config", c) },
			})
		case "ports":
			decodeSection(&e, f, "ports", map[string]func(field, string){
				"http":             func(f field, w string) { setInt(&e, f, w, &c.HTTPPort) },
				"dns":              func(f field, w string) { setInt(&e, f, w, &c.DNSPort) },
				"server":           func(f field, w string) { setInt(&e, f, w, &c.ServerPort) },
				"serf_lan":         func(f field, w string) { setInt(&e, f, w, &c.SerfLANPort) },
				"sidecar_min_port": func(f field, w string) { setInt(&e, f, w, &c.SidecarMinPort) },
				"sidecar_max_port": func(f field, w string) { setInt(&e, f, w, &c.SidecarMaxPort) },
			})
		case "dns_config":
			decodeSection(&e, f, "dns_config", map[string]func(field, string){
				"node_ttl":         func(f field, w string) { setDuration(&e, f, w, &c.DNSNodeTTL) },
				"service_ttl":      func(f field, w string) { setDuration(&e, f, w, &c.DNSServiceTTL) },
				"udp_answer_limit": func(f field, w string) { setInt(&e, f, w, &c.DNSUDPAnswerLimit) },
			})
		case "telemetry":
			decodeSection(&e, f, "telemetry", map[string]func(field, string){
				"mesh_metrics_interval": func(f field, w string) { setDuration(&e, f, w, &c.MeshMetricsInterval) },
			})
		case "enable_debug":
			setBool(&e, f, top, &c.EnableDebug)
		case "bootstrap_expect":
			setInt(&e, f, top, &c.BootstrapExpect)
		case "retry_join":
			if v, ok := e.strings(f, top); ok {
				c.RetryJoin = append(c.RetryJoin, v...)
			}
		case "retry_interval":
			setDuration(&e, f, top, &c.RetryInterval)
		case "encrypt":
			setStr(&e, f, top, &c.Encrypt)
		case "reconnect_timeout":
			setDuration(&e, f, top, &c.ReconnectTimeout)
		case "server_stabilization_time": // also accepted outside the autopilot block
			setDuration(&e, f, top, &c.StabilizationTime)
		case "autopilot":
			decodeSection(&e, f, "autopilot", map[string]func(field, string){
				"server_stabilization_time": func(f field, w string) { setDuration(&e, f, w, &c.StabilizationTime) },
			})
		case "performance":
			decodeSection(&e, f, "performance", map[string]func(field, string){
				"raft_multiplier": func(f field, w string) {
					if v, ok := e.integer(f, w); ok {
						if v < 0 || v > MaxRaftMultiplier {
							e.add(f.rng, "performance.raft_multiplier %d: must be from 1 to %d (0 uses the default, 1)", v, MaxRaftMultiplier)
							return
						}
						c.RaftMultiplier = &v
					}
				},
				"leave_drain_time": func(f field, w string) { setDuration(&e, f, w, &c.LeaveDrainTime) }, // 0 or more
				"rpc_hold_timeout": func(f field, w string) {
					if v, ok := e.duration(f, w); ok {
						if v <= 0 {
							e.add(f.rng, "performance.rpc_hold_timeout %s: must be positive", v)
							return
						}
						c.RPCHoldTimeout = &v
					}
				},
			})
		case "gossip_lan":
			positive := func(dst **time.Duration) func(field, string) {
				return func(f field, w string) {
					if v, ok := e.duration(f, w); ok {
						if v <= 0 {
							e.add(f.rng, "%s.%s %s: must be positive", w, f.key, v)
							return
						}
						*dst = &v
					}
				}
			}
			decodeSection(&e, f, "gossip_lan", map[string]func(field, string){
				"probe_interval":  positive(&c.GossipProbeInterval),
				"probe_timeout":   positive(&c.GossipProbeTimeout),
				"gossip_interval": positive(&c.GossipGossipInterval),
				"suspicion_mult": func(f field, w string) {
					if v, ok := e.integer(f, w); ok {
						if v < 1 {
							e.add(f.rng, "%s.suspicion_mult %d: must be at least 1", w, v)
							return
						}
						c.GossipSuspicionMult = &v
					}
				},
			})
		case "tls":
			decodeSection(&e, f, "tls", map[string]func(field, string){
				"defaults": func(f field, w string) {
					decodeSection(&e, f, "tls.defaults", map[string]func(field, string){
						"ca_file":         func(f field, w string) { setStr(&e, f, w, &c.TLSCAFile) },
						"cert_file":       func(f field, w string) { setStr(&e, f, w, &c.TLSCertFile) },
						"key_file":        func(f field, w string) { setStr(&e, f, w, &c.TLSKeyFile) },
						"verify_incoming": func(f field, w string) { setBool(&e, f, w, &c.TLSVerifyIncoming) },
						"verify_outgoing": func(f field, w string) { setBool(&e, f, w, &c.TLSVerifyOutgoing) },
					})
				},
			})
		case "service", "services":
			nodes, _ := e.objects(f, "service")
			for _, n := range nodes {
				n.what = "service"
				if s, ok := decodeService(n, &e); ok {
					c.Services = append(c.Services, s)
				}
			}
		default:
			e.unknown(f, top, topKeys)
		}
	}
	if err := e.err(); err != nil {
		return nil, err
	}
	return c, nil
}

// decodeSection decodes a nested block such as ports { http = 8500 }.
func decodeSection(e *errs, f field, what string, keys map[string]func(field, string)) {
	n, ok := e.object(f, what)
	if !ok {
		return
	}
	var known []string
	for k := range keys {
		known = append(known, k)
	}
	for _, sf := range n.fields(e) {
		if set, ok := keys[sf.key]; ok {
			set(sf, what)
		} else {
			e.unknown(sf, what, known)
		}
	}
}

// readConfigFile decodes one file from disk.
func readConfigFile(path string) (*fileConfig, error) {
	src, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config file: %w", err)
	}
	return decodeConfig(src, path)
}

// merge lays src over c: every field src sets wins; services accumulate.
func (c *fileConfig) merge(src *fileConfig) {
	over := func(dst **string, v *string) {
		if v != nil {
			*dst = v
		}
	}
	overB := func(dst **bool, v *bool) {
		if v != nil {
			*dst = v
		}
	}
	overI := func(dst **int, v *int) {
		if v != nil {
			*dst = v
		}
	}
	overD := func(dst **time.Duration, v *time.Duration) {
		if v != nil {
			*dst = v
		}
	}
	over(&c.Datacenter, src.Datacenter)
	over(&c.NodeName, src.NodeName)
	over(&c.NodeID, src.NodeID)
	over(&c.DataDir, src.DataDir)
	overB(&c.Server, src.Server)
	overB(&c.Bootstrap, src.Bootstrap)
	over(&c.BindAddr, src.BindAddr)
	over(&c.ClientAddr, src.ClientAddr)
	over(&c.AdvertiseAddr, src.AdvertiseAddr)
	over(&c.Domain, src.Domain)
	over(&c.LogLevel, src.LogLevel)
	overB(&c.LogJSON, src.LogJSON)
	overB(&c.UIEnabled, src.UIEnabled)
	overB(&c.ConnectEnabled, src.ConnectEnabled)
	overI(&c.HTTPPort, src.HTTPPort)
	overI(&c.DNSPort, src.DNSPort)
	overI(&c.ServerPort, src.ServerPort)
	overI(&c.SerfLANPort, src.SerfLANPort)
	overD(&c.DNSNodeTTL, src.DNSNodeTTL)
	overD(&c.MeshMetricsInterval, src.MeshMetricsInterval)
	overD(&c.DNSServiceTTL, src.DNSServiceTTL)
	overI(&c.DNSUDPAnswerLimit, src.DNSUDPAnswerLimit)
	overI(&c.BootstrapExpect, src.BootstrapExpect)
	c.RetryJoin = append(c.RetryJoin, src.RetryJoin...)
	overD(&c.RetryInterval, src.RetryInterval)
	over(&c.Encrypt, src.Encrypt)
	overD(&c.ReconnectTimeout, src.ReconnectTimeout)
	overD(&c.StabilizationTime, src.StabilizationTime)
	overI(&c.RaftMultiplier, src.RaftMultiplier)
	overD(&c.RPCHoldTimeout, src.RPCHoldTimeout)
	overD(&c.LeaveDrainTime, src.LeaveDrainTime)
	overD(&c.GossipProbeInterval, src.GossipProbeInterval)
	overD(&c.GossipProbeTimeout, src.GossipProbeTimeout)
	overI(&c.GossipSuspicionMult, src.GossipSuspicionMult)
	overD(&c.GossipGossipInterval, src.GossipGossipInterval)
	over(&c.TLSCAFile, src.TLSCAFile)
	over(&c.TLSCertFile, src.TLSCertFile)
	over(&c.TLSKeyFile, src.TLSKeyFile)
	overB(&c.TLSVerifyIncoming, src.TLSVerifyIncoming)
	overB(&c.TLSVerifyOutgoing, src.TLSVerifyOutgoing)
	overB(&c.EnableDebug, src.EnableDebug)
	over(&c.DefaultIntentionPolicy, src.DefaultIntentionPolicy)
	over(&c.CAProvider, src.CAProvider)
	overD(&c.CALeafCertTTL, src.CALeafCertTTL)
	over(&c.CAPrivateKey, src.CAPrivateKey)
	over(&c.CARootCert, src.CARootCert)
	over(&c.CAPrivateKeyType, src.CAPrivateKeyType)
	overI(&c.CAPrivateKeyBits, src.CAPrivateKeyBits)
	overI(&c.SidecarMinPort, src.SidecarMinPort)
	overI(&c.SidecarMaxPort, src.SidecarMaxPort)
	c.Services = append(c.Services, src.Services...)
}
