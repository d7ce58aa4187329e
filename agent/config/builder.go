package config

import (
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/trellismesh/trellis/raftstore/structs"
)

// LoadOpts says where configuration comes from.
type LoadOpts struct {
	// Flags are the command line's.
	Flags Flags
	// Hostname returns the default node name; os.Hostname when nil.
	Hostname func() (string, error)
	// ValidateOnly checks the configuration without touching the machine:
	// no data directory or node-id file is created, and a missing data_dir
	// is not an error.
	ValidateOnly bool
}

func ptr[T any](v T) *T { return &v }

// deref returns *p, or the zero value when p is nil.
func deref[T any](p *T) T {
	var v T
	if p != nil {
		v = *p
	}
	return v
}

// defaults is the first source.
func defaults() *fileConfig {
	return &fileConfig{
		Datacenter: ptr("dc1"), Server: ptr(false), Bootstrap: ptr(false),
		BindAddr: ptr("0.0.0.0"), ClientAddr: ptr("127.0.0.1"), Domain: ptr("trellis."),
		LogLevel: ptr("info"), LogJSON: ptr(false), UIEnabled: ptr(false), ConnectEnabled: ptr(true),
		HTTPPort: ptr(8500), DNSPort: ptr(8600), ServerPort: ptr(8300), SerfLANPort: ptr(8301),
		DNSNodeTTL: ptr(time.Duration(0)), DNSServiceTTL: ptr(time.Duration(0)), DNSUDPAnswerLimit: ptr(3),
		MeshMetricsInterval: ptr(5 * time.Second),
		BootstrapExpect:     ptr(0), RetryInterval: ptr(30 * time.Second), Encrypt: ptr(""),
		ReconnectTimeout: ptr(72 * time.Hour), StabilizationTime: ptr(10 * time.Second),
		RaftMultiplier: ptr(0), RPCHoldTimeout: ptr(7 * time.Second), LeaveDrainTime: ptr(5 * time.Second),
		TLSCAFile: ptr(""), TLSCertFile: ptr(""), TLSKeyFile: ptr(""), TLSVerifyIncoming: ptr(false), TLSVerifyOutgoing: ptr(false),
		EnableDebug: ptr(false), DefaultIntentionPolicy: ptr("deny"), CAProvider: ptr(""),
		CALeafCertTTL: ptr(time.Duration(0)), CAPrivateKey: ptr(""), CARootCert: ptr(""), CAPrivateKeyType: ptr(""),
		CAPrivateKeyBits: ptr(0), SidecarMinPort: ptr(21000), SidecarMaxPort: ptr(21255),
	}
}

// devOverlay is laid over the defaults by -dev; files and flags still win.
func devOverlay() *fileConfig {
	return &fileConfig{
		Server: ptr(true), Bootstrap: ptr(true), BindAddr: ptr("127.0.0.1"), ClientAddr: ptr("127.0.0.1"),
		UIEnabled: ptr(true), ConnectEnabled: ptr(true), RetryInterval: ptr(time.Second),
		StabilizationTime: ptr(time.Second), DefaultIntentionPolicy: ptr("allow"),
	}
}

// Load merges defaults, the -dev overlay, config files and directories, and
// flags (in that order, later wins) into a RuntimeConfig. Warnings are
// things worth logging that do not stop the agent.
func Load(opts LoadOpts) (RuntimeConfig, []string, error) {
	merged := defaults()
	if opts.Flags.Dev {
		merged.merge(devOverlay())
	}
	files, err := configFiles(opts.Flags.ConfigFiles, opts.Flags.ConfigDirs)
	if err != nil {
		return RuntimeConfig{}, nil, err
	}
	var errList []string
	for _, path := range files {
		fc, err := readConfigFile(path)
		if err != nil {
			errList = append(errList, err.Error())
			continue
		}
		merged.merge(fc)
	}
	if len(errList) > 0 {
		return RuntimeConfig{}, nil, errors.New(strings.Join(errList, "\n"))
	}
	merged.merge(&opts.Flags.cfg)
	rc, warnings, err := build(merged, opts)
	if err != nil {
		return RuntimeConfig{}, nil, err
	}
	rc.Sources = files
	return rc, warnings, nil
}

// configFiles lists the files to read: -config-file values in order, then
// the *.hcl and *.json files of each -config-dir in lexical order.
func configFiles(files, dirs []string) ([]string, error) {
	out := slices.Clone(files)
	for _, f := range files {
		if fi, err := os.Stat(f); err != nil {
			return nil, fmt.Errorf("-config-file %s: %w", f, err)
		} else if fi.IsDir() {
			return nil, fmt.Errorf("-config-file %s is a directory: use -config-dir", f)
		}
	}
	for _, d := range dirs {
		entries, err := os.ReadDir(d)
		if err != nil {
			return nil, fmt.Errorf("-config-dir %s: %w", d, err)
		}
		for _, e := range entries {
			ext := strings.ToLower(filepath.Ext(e.Name()))
			if e.IsDir() || (ext != ".hcl" && ext != ".json") {
				continue
			}
			out = append(out, filepath.Join(d, e.Name()))
		}
	}
	return out, nil
}

var (
	dcRE     = regexp.MustCompile(`^[a-z0-9_-]+$`)
	uuidRE   = regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)
	domainRE = regexp.MustCompile(`^([a-z0-9]([a-z0-9-]*[a-z0-9])?\.)+$`)
)

// build checks the merged sources and produces the runtime configuration.
func build(c *fileConfig, opts LoadOpts) (RuntimeConfig, []string, error) {
	var warnings []string
	rc := RuntimeConfig{
		DevMode:                 opts.Flags.Dev,
		Datacenter:              strings.ToLower(*c.Datacenter),
		Server:                  *c.Server,
		Bootstrap:               *c.Bootstrap,
		LogJSON:                 *c.LogJSON,
		UIEnabled:               *c.UIEnabled,
		ConnectEnabled:          *c.ConnectEnabled,
		HTTPPort:                *c.HTTPPort,
		DNSPort:                 *c.DNSPort,
		ServerPort:              *c.ServerPort,
		SerfLANPort:             *c.SerfLANPort,
		DNSNodeTTL:              *c.DNSNodeTTL,
		DNSServiceTTL:           *c.DNSServiceTTL,
		DNSUDPAnswerLimit:       *c.DNSUDPAnswerLimit,
		MeshMetricsInterval:     *c.MeshMetricsInterval,
		Services:                c.Services,
		BootstrapExpect:         *c.BootstrapExpect,
		RetryJoin:               c.RetryJoin,
		RetryInterval:           *c.RetryInterval,
		EncryptKey:              *c.Encrypt,
		ReconnectTimeout:        *c.ReconnectTimeout,
		ServerStabilizationTime: *c.StabilizationTime,
		RaftMultiplier:          *c.RaftMultiplier,
		RPCHoldTimeout:          *c.RPCHoldTimeout,
		LeaveDrainTime:          *c.LeaveDrainTime,
		GossipLAN: GossipLANConfig{ProbeInterval: deref(c.GossipProbeInterval), ProbeTimeout: deref(c.GossipProbeTimeout),
			SuspicionMult: deref(c.GossipSuspicionMult), GossipInterval: deref(c.GossipGossipInterval)},
		EnableDebug: *c.EnableDebug,
		TLS: TLSConfig{CAFile: *c.TLSCAFile, CertFile: *c.TLSCertFile, KeyFile: *c.TLSKeyFile,
			VerifyIncoming: *c.TLSVerifyIncoming, VerifyOutgoing: *c.TLSVerifyOutgoing},
	}
	if !dcRE.MatchString(rc.Datacenter) {
		return rc, nil, fmt.Errorf("datacenter %q: use only letters, digits, '-' and '_'", *c.Datacenter)
	}

	// Node name.
	if c.NodeName != nil {
		rc.NodeName = *c.NodeName
	} else {
		hostname := opts.Hostname
		if hostname == nil {
			hostname = os.Hostname
		}
		h, err := hostname()
		if err != nil || h == "" {
			return rc, nil, fmt.Errorf("node_name: not set, and the host name is unknown (%v): set node_name or -node", err)
		}
		rc.NodeName = h
	}
	if strings.TrimSpace(rc.NodeName) == "" || strings.ContainsAny(rc.NodeName, " \t/\x00") {
		return rc, nil, fmt.Errorf("node_name %q: must not be empty or contain spaces or '/'", rc.NodeName)
	}

	// Data directory and node ID.
	if c.DataDir != nil && *c.DataDir != "" {
		dir, err := filepath.Abs(*c.DataDir)
		if err != nil {
			return rc, nil, fmt.Errorf("data_dir %q: %w", *c.DataDir, err)
		}
		rc.DataDir = dir
	} else if !rc.DevMode && !opts.ValidateOnly {
		return rc, nil, errors.New("data_dir is required: set data_dir in a config file or pass -data-dir (or run trellis agent -dev)")
	}
	if c.NodeID != nil && *c.NodeID != "" {
		if !uuidRE.MatchString(*c.NodeID) {
			return rc, nil, fmt.Errorf("node_id %q: not a UUID", *c.NodeID)
		}
		rc.NodeID = strings.ToLower(*c.NodeID)
	} else if !opts.ValidateOnly {
		id, err := nodeID(rc.DataDir)
		if err != nil {
			return rc, nil, err
		}
		rc.NodeID = id
	}

	// Log level.
	switch lvl := strings.ToLower(*c.LogLevel); lvl {
	case "trace", "debug", "info", "warn", "error":
		rc.LogLevel = lvl
	case "warning", "err":
		rc.LogLevel = map[string]string{"warning": "warn", "err": "error"}[lvl]
	default:
		return rc, nil, fmt.Errorf("log_level %q: want trace, debug, info, warn or error", *c.LogLevel)
	}

	// Addresses.
	bind := net.ParseIP(*c.BindAddr)
	if bind == nil {
		return rc, nil, fmt.Errorf("bind_addr %q: not an IP address", *c.BindAddr)
	}
	rc.BindAddr = bind.String()
	for _, a := range strings.Fields(*c.ClientAddr) {
		ip := net.ParseIP(a)
		if ip == nil {
			return rc, nil, fmt.Errorf("client_addr %q: %q is not an IP address", *c.ClientAddr, a)
		}
		rc.ClientAddrs = append(rc.ClientAddrs, ip.String())
	}
	if len(rc.ClientAddrs) == 0 {
		return rc, nil, fmt.Errorf("client_addr: at least one address is needed")
	}
	switch {
	case c.AdvertiseAddr != nil && *c.AdvertiseAddr != "":
		ip := net.ParseIP(*c.AdvertiseAddr)
		if ip == nil || ip.IsUnspecified() {
			return rc, nil, fmt.Errorf("advertise_addr %q: want the IP address other agents reach this one at", *c.AdvertiseAddr)
		}
		rc.AdvertiseAddr = ip.String()
	case !bind.IsUnspecified():
		rc.AdvertiseAddr = rc.BindAddr
	case opts.ValidateOnly:
		// Which address to advertise depends on the machine that runs the agent.
	default:
		ip, err := privateIPv4()
		if err != nil {
			return rc, nil, fmt.Errorf("bind_addr is %s and no advertise_addr is set: %w; set advertise_addr", rc.BindAddr, err)
		}
		rc.AdvertiseAddr = ip
	}

	// Ports.
	for _, p := range []struct {
		name     string
		v        int
		disables bool
	}{{"ports.http", rc.HTTPPort, true}, {"ports.dns", rc.DNSPort, true}, {"ports.server", rc.ServerPort, false}, {"ports.serf_lan", rc.SerfLANPort, false}} {
		if (p.v == -1 && p.disables) || (p.v >= 0 && p.v <= 65535) {
			continue
		}
		extra := ""
		if p.disables {
			extra = ", or -1 to disable it"
		}
		return rc, nil, fmt.Errorf("%s %d: out of range 0-65535%s", p.name, p.v, extra)
	}

	// DNS.
	domain := strings.ToLower(*c.Domain)
	if !strings.HasSuffix(domain, ".") {
		domain += "."
	}
	if !domainRE.MatchString(domain) {
		return rc, nil, fmt.Errorf("domain %q: not a DNS domain name", *c.Domain)
	}
	rc.DNSDomain = domain
	if rc.MeshMetricsInterval < 100*time.Millisecond || rc.MeshMetricsInterval > time.Minute {
		return rc, nil, fmt.Errorf("telemetry.mesh_metrics_interval %s: want 100ms to 1m", rc.MeshMetricsInterval)
	}
	if rc.DNSUDPAnswerLimit < 0 {
		return rc, nil, fmt.Errorf("dns_config.udp_answer_limit %d: must be 0 (no limit) or more", rc.DNSUDPAnswerLimit)
	}

	// Roles and cluster.
	if rc.Bootstrap && !rc.Server {
		return rc, nil, errors.New("bootstrap is set but server is not: only a server can bootstrap")
	}
	if rc.BootstrapExpect < 0 {
		return rc, nil, fmt.Errorf("bootstrap_expect %d: must be 0 or more", rc.BootstrapExpect)
	}
	if rc.BootstrapExpect > 0 && !rc.Server {
		return rc, nil, errors.New("bootstrap_expect is set but server is not: only servers bootstrap")
	}
	if rc.BootstrapExpect > 0 && rc.Bootstrap {
		if rc.DevMode {
			rc.Bootstrap = false // bootstrap_expect in a file wins over the -dev default
		} else {
			return rc, nil, errors.New("bootstrap and bootstrap_expect are mutually exclusive: use bootstrap_expect for several servers")
		}
	}
	if rc.BootstrapExpect == 1 {
		warnings = append(warnings, "bootstrap_expect = 1: a single server has no fault tolerance; use 3 or 5")
	} else if rc.BootstrapExpect == 2 || rc.BootstrapExpect == 4 {
		warnings = append(warnings, fmt.Sprintf("bootstrap_expect = %d: an even number of servers tolerates no more failures than one fewer; use 3 or 5", rc.BootstrapExpect))
	}
	if rc.RetryInterval <= 0 {
		return rc, nil, fmt.Errorf("retry_interval %s: must be positive", rc.RetryInterval)
	}
	if rc.ReconnectTimeout < time.Minute && !(rc.DevMode && rc.ReconnectTimeout > 0) {
		return rc, nil, fmt.Errorf("reconnect_timeout %s: must be at least 1m (a failed agent is reaped after it; -dev allows less)", rc.ReconnectTimeout)
	}
	if g := rc.GossipLAN; g.ProbeInterval > 0 && g.ProbeTimeout > g.ProbeInterval {
		return rc, nil, fmt.Errorf("gossip_lan.probe_timeout %s: must be at most gossip_lan.probe_interval (%s)", g.ProbeTimeout, g.ProbeInterval)
	}
	if rc.RaftMultiplier == 0 { // decoding checked the range
		rc.RaftMultiplier = 1
	}
	if rc.EncryptKey != "" {
		k, err := base64.StdEncoding.DecodeString(rc.EncryptKey)
		if err != nil || (len(k) != 16 && len(k) != 24 && len(k) != 32) {
			return rc, nil, errors.New("encrypt: not a base64 key of 16, 24 or 32 bytes (make one with trellis keygen)")
		}
	}
	if t := rc.TLS; t.Enabled() {
		for _, f := range []struct{ key, path string }{{"tls.defaults.ca_file", t.CAFile}, {"tls.defaults.cert_file", t.CertFile}, {"tls.defaults.key_file", t.KeyFile}} {
			if f.path == "" {
				return rc, nil, fmt.Errorf("%s: required when TLS is configured", f.key)
			}
			if _, err := os.Stat(f.path); err != nil {
				return rc, nil, fmt.Errorf("%s: %w", f.key, err)
			}
		}
	} else if rc.TLS.VerifyIncoming || rc.TLS.VerifyOutgoing {
		return rc, nil, errors.New("tls.defaults.verify_incoming and verify_outgoing need ca_file, cert_file and key_file")
	}
	if rc.Bootstrap && !rc.DevMode {
		warnings = append(warnings, "bootstrap mode: this server forms a cluster alone; never start several servers with bootstrap")
	}
	if err := checkDuplicateIDs(rc.Services); err != nil {
		return rc, nil, err
	}
	if err := buildConnect(c, &rc); err != nil {
		return rc, nil, err
	}

	return rc, warnings, nil
}

// nodeID reads the node ID kept in dataDir, or makes (and keeps) a new one.
// Without a data directory the ID is new each time.
func nodeID(dataDir string) (string, error) {
	if dataDir == "" {
		return structs.NewUUID(), nil
	}
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return "", fmt.Errorf("data_dir %s: %w", dataDir, err)
	}
	path := filepath.Join(dataDir, "node-id")
	b, err := os.ReadFile(path)
	if err == nil {
		id := strings.TrimSpace(string(b))
		if !uuidRE.MatchString(id) {
			return "", fmt.Errorf("%s holds %q, not a UUID: fix or remove the file", path, id)
		}
		return strings.ToLower(id), nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("read node ID: %w", err)
	}
	id := structs.NewUUID()
	if err := os.WriteFile(path, []byte(id+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("keep node ID: %w", err)
	}
	return id, nil
}

// privateIPv4 returns the first private IPv4 address of this host.
func privateIPv4() (string, error) {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return "", fmt.Errorf("list interface addresses: %w", err)
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok {
			if ip := n.IP.To4(); ip != nil && ip.IsPrivate() {
				return ip.String(), nil
			}
		}
	}
	return "", errors.New("this host has no private IPv4 address")
}

// ValidateFiles checks config files and service definition files (or the
// *.hcl and *.json files of directories): syntax, keys, types and values,
// then the merged configuration. It touches nothing.
func ValidateFiles(paths ...string) error {
	var files, dirs []string
	for _, p := range paths {
		fi, err := os.Stat(p)
		if err != nil {
			return err
		}
		if fi.IsDir() {
			dirs = append(dirs, p)
		} else {
			files = append(files, p)
		}
	}
	all, err := configFiles(files, dirs)
	if err != nil {
		return err
	}
	if len(all) == 0 {
		return errors.New("no .hcl or .json files to validate")
	}
	opts := LoadOpts{ValidateOnly: true, Hostname: func() (string, error) { return "validate", nil }}
	opts.Flags.ConfigFiles = all
	_, _, err = Load(opts)
	return err
}
