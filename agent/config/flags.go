package config

import (
	"flag"
	"strconv"
	"strings"
)

// Flags holds the `trellis agent` flags. Build it with AddFlags; fields the
// user did not set stay unset, so they do not override config files.
type Flags struct {
	// Dev is -dev: start from the development overlay.
	Dev bool
	// ConfigFiles are the -config-file values, in order.
	ConfigFiles []string
	// ConfigDirs are the -config-dir values, in order.
	ConfigDirs []string
	cfg        fileConfig
}

type stringValue struct{ p **string }

func (v stringValue) String() string {
	if v.p == nil || *v.p == nil {
		return ""
	}
	return **v.p
}

func (v stringValue) Set(s string) error { *v.p = &s; return nil }

type boolValue struct{ p **bool }

func (v boolValue) String() string {
	if v.p == nil || *v.p == nil {
		return "false"
	}
	return strconv.FormatBool(**v.p)
}

func (v boolValue) Set(s string) error {
	b, err := strconv.ParseBool(s)
	if err != nil {
		return err
	}
	*v.p = &b
	return nil
}

func (v boolValue) IsBoolFlag() bool { return true }

type intValue struct{ p **int }

func (v intValue) String() string {
	if v.p == nil || *v.p == nil {
		return ""
	}
	return strconv.Itoa(**v.p)
}

func (v intValue) Set(s string) error {
	i, err := strconv.Atoi(s)
	if err != nil {
		return err
	}
	*v.p = &i
	return nil
}

type listValue struct{ p *[]string }

func (v listValue) String() string {
	if v.p == nil {
		return ""
	}
	return strings.Join(*v.p, ",")
}

func (v listValue) Set(s string) error { *v.p = append(*v.p, s); return nil }

// AddFlags registers the agent's flags on fs, writing into f.
func AddFlags(fs *flag.FlagSet, f *Flags) {
	c := &f.cfg
	fs.BoolVar(&f.Dev, "dev", false, "Start a development agent: a single in-memory server on 127.0.0.1, no config needed. State is lost when it stops.")
	fs.Var(listValue{&f.ConfigFiles}, "config-file", "A config `file` (HCL or JSON) to load; may be given more than once, later files win.")
	fs.Var(listValue{&f.ConfigDirs}, "config-dir", "A `directory` whose *.hcl and *.json files are loaded in lexical order; may be given more than once.")
	fs.Var(boolValue{&c.Server}, "server", "Run as a server (keeps the cluster state in Raft).")
	fs.Var(boolValue{&c.Bootstrap}, "bootstrap", "Form a single-server cluster. Only for one server, never for several.")
	fs.Var(stringValue{&c.DataDir}, "data-dir", "The `path` of the directory that holds the agent's state.")
	fs.Var(stringValue{&c.NodeName}, "node", "The `name` of this node in the cluster; defaults to the host name.")
	fs.Var(stringValue{&c.NodeID}, "node-id", "The `UUID` of this node; generated and kept in data-dir when not set.")
	fs.Var(stringValue{&c.Datacenter}, "datacenter", "The `name` of the datacenter; defaults to dc1.")
	fs.Var(stringValue{&c.BindAddr}, "bind", "The `address` the agent binds for cluster traffic (server port, gossip); defaults to 0.0.0.0.")
	fs.Var(stringValue{&c.ClientAddr}, "client", "The `addresses` (space separated) of the HTTP and DNS interfaces; defaults to 127.0.0.1.")
	fs.Var(stringValue{&c.AdvertiseAddr}, "advertise", "The `address` other agents reach this one at; defaults to the bind address, or the first private IPv4 when binding 0.0.0.0.")
	fs.Var(intValue{&c.HTTPPort}, "http-port", "The `port` of the HTTP API and UI; -1 disables it. Defaults to 8500.")
	fs.Var(intValue{&c.DNSPort}, "dns-port", "The `port` of the DNS interface (UDP and TCP); -1 disables it. Defaults to 8600.")
	fs.Var(intValue{&c.ServerPort}, "server-port", "The `port` of the server's Raft and RPC traffic. Defaults to 8300.")
	fs.Var(intValue{&c.SerfLANPort}, "serf-lan-port", "The `port` of the gossip protocol (TCP and UDP). Defaults to 8301.")
	fs.Var(stringValue{&c.Domain}, "domain", "The DNS `domain` answered; defaults to trellis.")
	fs.Var(stringValue{&c.LogLevel}, "log-level", "The `level` of logs: trace, debug, info, warn or error. Defaults to info.")
	fs.Var(boolValue{&c.LogJSON}, "log-json", "Write logs as JSON, one object a line.")
	fs.Var(boolValue{&c.UIEnabled}, "ui", "Serve the web UI on the HTTP port.")
	fs.Var(intValue{&c.BootstrapExpect}, "bootstrap-expect", "The `number` of servers to wait for before they form the cluster together (3 or 5).")
	fs.Var(listValue{&c.RetryJoin}, "retry-join", "An `address` (host or host:port) of an agent to join, retried until it answers; may be repeated.")
	fs.Var(stringValue{&c.Encrypt}, "encrypt", "The gossip encryption `key` (base64, from trellis keygen).")
}
