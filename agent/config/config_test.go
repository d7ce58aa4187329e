package config

import (
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/trellismesh/trellis/connect"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

func load(t *testing.T, dev bool, args []string, files ...string) (RuntimeConfig, []string, error) {
	t.Helper()
	var f Flags
	fs := flag.NewFlagSet("agent", flag.ContinueOnError)
	AddFlags(fs, &f)
	if err := fs.Parse(args); err != nil {
		t.Fatal(err)
	}
	f.Dev = f.Dev || dev
	f.ConfigFiles = append(f.ConfigFiles, files...)
	return Load(LoadOpts{Flags: f, ValidateOnly: true, Hostname: func() (string, error) { return "host-a", nil }})
}

func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestLoad_Golden(t *testing.T) {
	t.Parallel()
	rc, _, err := load(t, false, nil, "testdata/full.hcl")
	if err != nil {
		t.Fatal(err)
	}
	rc.Sources = nil
	got, _ := json.MarshalIndent(rc, "", "  ")
	golden := "testdata/full.golden.json"
	if *update {
		if err := os.WriteFile(golden, append(got, '\n'), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if strings.TrimSpace(string(want)) != strings.TrimSpace(string(got)) {
		t.Errorf("runtime config differs from %s (run go test -update after checking):\n%s", golden, got)
	}

	// The JSON spelling (with Consul's CamelCase service keys) is the same config.
	rcJSON, _, err := load(t, false, nil, "testdata/full.json")
	if err != nil {
		t.Fatal(err)
	}
	rcJSON.Sources = nil
	for i := range rcJSON.Services {
		rcJSON.Services[i].Source, rc.Services[i].Source = "", ""
	}
	if !reflect.DeepEqual(rc, rcJSON) {
		a, _ := json.MarshalIndent(rc, "", " ")
		b, _ := json.MarshalIndent(rcJSON, "", " ")
		t.Errorf("HCL and JSON differ:\nHCL:  %s\nJSON: %s", a, b)
	}
}

func TestLoad_Defaults(t *testing.T) {
	t.Parallel()
	rc, _, err := load(t, false, []string{"-data-dir", "/tmp/x"})
	if err != nil {
		t.Fatal(err)
	}
	if rc.Datacenter != "dc1" || rc.NodeName != "host-a" || rc.HTTPPort != 8500 || rc.DNSPort != 8600 ||
		rc.ServerPort != 8300 || rc.SerfLANPort != 8301 || rc.DNSDomain != "trellis." || rc.LogLevel != "info" ||
		rc.Server || len(rc.ClientAddrs) != 1 || rc.ClientAddrs[0] != "127.0.0.1" || rc.DNSUDPAnswerLimit != 3 {
		t.Errorf("defaults = %+v", rc)
	}
}

func TestLoad_Performance(t *testing.T) {
	t.Parallel()
	rc, _, err := load(t, false, []string{"-data-dir", "/tmp/x"})
	if err != nil {
		t.Fatal(err)
	}
	if rc.RaftMultiplier != 1 || rc.RPCHoldTimeout != 7*time.Second || rc.LeaveDrainTime != 5*time.Second {
		t.Errorf("defaults: raft_multiplier %d, rpc_hold_timeout %s, leave_drain_time %s; want 1, 7s, 5s", rc.RaftMultiplier, rc.RPCHoldTimeout, rc.LeaveDrainTime)
	}
	dir := t.TempDir()
	for _, file := range []struct{ name, content string }{
		{"p.hcl", "performance {\n  raft_multiplier = 5\n  rpc_hold_timeout = \"20s\"\n  leave_drain_time = \"0s\"\n}\n"},
		{"p.json", `{"performance": {"raft_multiplier": 5, "rpc_hold_timeout": "20s", "leave_drain_time": "0s"}}`},
	} {
		rc, _, err := load(t, true, nil, writeFile(t, dir, file.name, file.content))
		if err != nil {
			t.Fatalf("%s: %v", file.name, err)
		}
		if rc.RaftMultiplier != 5 || rc.RPCHoldTimeout != 20*time.Second || rc.LeaveDrainTime != 0 {
			t.Errorf("%s: raft_multiplier %d, rpc_hold_timeout %s; want 5, 20s", file.name, rc.RaftMultiplier, rc.RPCHoldTimeout)
		}
	}
	rc, _, err = load(t, true, nil, writeFile(t, dir, "g.hcl", `gossip_lan {
  probe_interval  = "2s"
  probe_timeout   = "1s"
  suspicion_mult  = 6
  gossip_interval = "300ms"
}`))
	if want := (GossipLANConfig{ProbeInterval: 2 * time.Second, ProbeTimeout: time.Second, SuspicionMult: 6, GossipInterval: 300 * time.Millisecond}); err != nil || rc.GossipLAN != want {
		t.Errorf("gossip_lan: %+v, %v; want %+v", rc.GossipLAN, err, want)
	}
	// 0 is Consul's "the default".
	rc, _, err = load(t, true, nil, writeFile(t, dir, "zero.hcl", "performance {\n  raft_multiplier = 0\n}\n"))
	if err != nil || rc.RaftMultiplier != 1 {
		t.Errorf("raft_multiplier = 0: got %d, %v; want 1", rc.RaftMultiplier, err)
	}
}

func TestLoad_Dev(t *testing.T) {
	t.Parallel()
	rc, _, err := load(t, true, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !rc.DevMode || !rc.Server || !rc.Bootstrap || rc.BindAddr != "127.0.0.1" || rc.AdvertiseAddr != "127.0.0.1" ||
		rc.DataDir != "" || !rc.UIEnabled {
		t.Errorf("dev = %+v", rc)
	}
}

func TestLoad_Precedence(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	a := writeFile(t, dir, "a.hcl", `datacenter = "one"
node_name = "from-a"
ports { http = 1111 }
service { name = "a" }`)
	b := writeFile(t, dir, "b.json", `{"datacenter": "two", "ports": {"dns": 2222}, "service": {"name": "b"}}`)
	rc, _, err := load(t, true, []string{"-datacenter", "three", "-http-port", "3333"}, a, b)
	if err != nil {
		t.Fatal(err)
	}
	if rc.Datacenter != "three" || rc.NodeName != "from-a" || rc.HTTPPort != 3333 || rc.DNSPort != 2222 {
		t.Errorf("merge: dc %q node %q http %d dns %d", rc.Datacenter, rc.NodeName, rc.HTTPPort, rc.DNSPort)
	}
	if len(rc.Services) != 2 || rc.Services[0].Name != "a" || rc.Services[1].Name != "b" {
		t.Errorf("services accumulate in order: %+v", rc.Services)
	}
	// Files override the -dev overlay.
	c := writeFile(t, dir, "c.hcl", `bind_addr = "127.0.0.2"`)
	rc, _, err = load(t, true, nil, c)
	if err != nil || rc.BindAddr != "127.0.0.2" {
		t.Errorf("file over dev: %q, %v", rc.BindAddr, err)
	}
}

func TestLoad_ConfigDir(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	writeFile(t, dir, "02.hcl", `node_name = "second"`)
	writeFile(t, dir, "01.json", `{"node_name": "first", "datacenter": "d1"}`)
	writeFile(t, dir, "README.md", `not config`)
	var f Flags
	f.Dev = true
	f.ConfigDirs = []string{dir}
	rc, _, err := Load(LoadOpts{Flags: f, ValidateOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	if rc.NodeName != "second" || rc.Datacenter != "d1" || len(rc.Sources) != 2 {
		t.Errorf("config dir: node %q dc %q sources %v", rc.NodeName, rc.Datacenter, rc.Sources)
	}
}

func TestLoad_NodeIDPersisted(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	var f Flags
	fs := flag.NewFlagSet("agent", flag.ContinueOnError)
	AddFlags(fs, &f)
	_ = fs.Parse([]string{"-data-dir", dir, "-node", "n", "-bind", "127.0.0.1"})
	rc1, _, err := Load(LoadOpts{Flags: f})
	if err != nil {
		t.Fatal(err)
	}
	rc2, _, err := Load(LoadOpts{Flags: f})
	if err != nil || rc1.NodeID == "" || rc1.NodeID != rc2.NodeID || !uuidRE.MatchString(rc1.NodeID) {
		t.Errorf("node IDs %q and %q, %v", rc1.NodeID, rc2.NodeID, err)
	}
	fi, err := os.Stat(filepath.Join(dir, "node-id"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("node-id file: %v, %v", fi, err)
	}
	// Without -dev a data directory is required.
	var f2 Flags
	if _, _, err := Load(LoadOpts{Flags: f2, Hostname: func() (string, error) { return "h", nil }}); err == nil || !strings.Contains(err.Error(), "data_dir is required") {
		t.Errorf("missing data_dir: %v", err)
	}
}

func TestLoad_Errors(t *testing.T) {
	key, err := connect.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	keyPEM, err := connect.EncodeKey(key)
	if err != nil {
		t.Fatal(err)
	}
	t.Parallel()
	cases := []struct {
		name, file, content string
		want                []string
	}{
		{"syntax", "a.hcl", "datacenter = \n", []string{"a.hcl:1:"}},
		{"json syntax", "a.json", `{"datacenter": }`, []string{"a.json:1:"}},
		{"unknown key", "a.hcl", "datacentre = \"x\"\n", []string{"a.hcl:1:1", `unknown key "datacentre"`, `did you mean "datacenter"`}},
		{"unknown nested key", "a.hcl", "ports {\n  htp = 1\n}\n", []string{"a.hcl:2:3", `unknown key "htp"`}},
		{"wrong type", "a.hcl", "server = \"yes\"\n", []string{"a.hcl:1:10", "expected true or false"}},
		{"wrong type port", "a.hcl", "ports { http = \"x\" }\n", []string{"a.hcl:1:16", "whole number"}},
		{"port range", "a.hcl", "ports { http = 70000 }\n", []string{"ports.http 70000", "out of range"}},
		{"bad level", "a.hcl", "log_level = \"loud\"\n", []string{"log_level", "loud"}},
		{"bad duration", "a.hcl", "service {\n  name = \"web\"\n  check {\n    tcp = \"127.0.0.1:1\"\n    interval = \"10x\"\n  }\n}\n", []string{"a.hcl:5:16", `service "web": check 1: interval`, `"10x" is not a duration`}},
		{"empty service name", "a.hcl", "service {\n  port = 80\n}\n", []string{"a.hcl:1:", "name"}},
		{"service port range", "a.hcl", "service {\n  name = \"web\"\n  port = 99999\n}\n", []string{"a.hcl:3:10", "port", "out of range"}},
		{"script check", "a.hcl", "service {\n  name = \"web\"\n  check {\n    args = [\"/bin/true\"]\n    interval = \"10s\"\n  }\n}\n", []string{"a.hcl:4:5", "script checks are not supported"}},
		{"no check type", "a.hcl", "service {\n  name = \"web\"\n  check {\n    interval = \"10s\"\n  }\n}\n", []string{"a.hcl:3:", "check 1", "HTTP, TCP or TTL"}},
		{"two check types", "a.hcl", "service {\n  name = \"web\"\n  check {\n    ttl = \"10s\"\n    tcp = \"a:1\"\n  }\n}\n", []string{"check 1", "only one"}},
		{"bad http url", "a.json", `{"service": {"name": "w", "check": {"http": "ftp://x", "interval": "1s"}}}`, []string{"a.json:1:", "check 1", "http"}},
		{"duplicate id", "a.hcl", "service {\n  name = \"web\"\n}\nservice {\n  name = \"web\"\n}\n", []string{"a.hcl:4:", `"web" is already defined at a.hcl:1:`}},
		{"checks not list", "a.hcl", "service {\n  name = \"web\"\n  checks = 5\n}\n", []string{"a.hcl:3:12", "list of objects"}},
		{"labels", "a.hcl", "service \"web\" {\n  name = \"web\"\n}\n", []string{"a.hcl:1:9", "no labels"}},
		{"bootstrap client", "a.hcl", "bootstrap = true\nserver = false\n", []string{"only a server can bootstrap"}},
		{"bad node id", "a.hcl", "node_id = \"abc\"\n", []string{"node_id", "UUID"}},
		{"bad dc", "a.hcl", "datacenter = \"dc 1\"\n", []string{"datacenter"}},
		{"bad ext", "a.yaml", "x: 1\n", []string{"a.yaml", ".hcl or .json"}},
		{"expect on client", "a.hcl", "server = false\nbootstrap = false\nbootstrap_expect = 3\n", []string{"only servers bootstrap"}},
		{"bad encrypt", "a.hcl", "encrypt = \"abc\"\n", []string{"encrypt", "keygen"}},
		{"tls without ca", "a.hcl", "tls {\n  defaults {\n    verify_incoming = true\n  }\n}\n", []string{"verify_incoming"}},
		{"tls missing file", "a.hcl", "tls {\n  defaults {\n    ca_file = \"/nope/ca.pem\"\n    cert_file = \"/nope/c.pem\"\n    key_file = \"/nope/k.pem\"\n  }\n}\n", []string{"tls.defaults.ca_file", "/nope/ca.pem"}},
		{"tls unknown key", "a.hcl", "tls {\n  defaults {\n    ca = \"x\"\n  }\n}\n", []string{"a.hcl:3:5", `unknown key "ca"`}},
		{"raft multiplier", "a.hcl", "performance {\n  raft_multiplier = 11\n}\n", []string{"a.hcl:2:3", "performance.raft_multiplier 11", "from 1 to 10"}},
		{"negative raft multiplier", "a.json", `{"performance": {"raft_multiplier": -1}}`, []string{"a.json:1:", "performance.raft_multiplier -1"}},
		{"negative drain", "a.hcl", "performance {\n  leave_drain_time = \"-1s\"\n}\n", []string{"a.hcl:2:22", "leave_drain_time", "negative"}},
		{"zero hold timeout", "a.hcl", "performance {\n  rpc_hold_timeout = \"0s\"\n}\n", []string{"a.hcl:2:3", "performance.rpc_hold_timeout", "positive"}},
		{"unknown performance key", "a.hcl", "performance {\n  raft_multiplyer = 2\n}\n", []string{"a.hcl:2:3", `unknown key "raft_multiplyer"`, `did you mean "raft_multiplier"`}},
		{"gossip probe zero", "a.hcl", "gossip_lan {\n  probe_interval = \"0s\"\n}\n", []string{"a.hcl:2:3", "gossip_lan.probe_interval 0s", "positive"}},
		{"gossip suspicion", "a.json", `{"gossip_lan": {"suspicion_mult": 0}}`, []string{"a.json:1:", "gossip_lan.suspicion_mult 0", "at least 1"}},
		{"gossip probe timeout", "a.hcl", "gossip_lan {\n  probe_interval = \"1s\"\n  probe_timeout = \"2s\"\n}\n", []string{"gossip_lan.probe_timeout 2s", "at most gossip_lan.probe_interval (1s)"}},
		{"gossip unknown key", "a.hcl", "gossip_lan {\n  probe_intreval = \"1s\"\n}\n", []string{"a.hcl:2:3", `unknown key "probe_intreval"`, `did you mean "probe_interval"`}},
		{"zero reconnect", "a.hcl", "reconnect_timeout = \"0s\"\n", []string{"reconnect_timeout"}},
		{"bad intention policy", "a.hcl", "connect {\n  default_intention_policy = \"maybe\"\n}\n", []string{"connect.default_intention_policy", "allow or deny"}},
		{"unknown connect key", "a.hcl", "connect {\n  enable = true\n}\n", []string{"a.hcl:2:3", `unknown key "enable"`, `did you mean "enabled"`}},
		{"vault provider", "a.hcl", "connect {\n  ca_provider = \"vault\"\n}\n", []string{"connect.ca_provider", "vault"}},
		{"leaf ttl too short", "a.hcl", "connect {\n  ca_config {\n    leaf_cert_ttl = \"10s\"\n  }\n}\n", []string{"a.hcl:3:5", "connect.ca_config.leaf_cert_ttl", "between"}},
		{"ca key type", "a.hcl", "connect {\n  ca_config {\n    private_key_type = \"rsa\"\n  }\n}\n", []string{"a.hcl:3:5", "connect.ca_config.private_key_type", "ec"}},
		{"ca key bits", "a.hcl", "connect {\n  ca_config {\n    private_key_bits = 384\n  }\n}\n", []string{"a.hcl:3:5", "private_key_bits 384"}},
		{"ca key without cert", "a.hcl", "connect {\n  ca_config {\n    private_key = \"x\"\n  }\n}\n", []string{"private_key and root_cert go together"}},
		{"ca bad key", "a.hcl", "connect {\n  ca_config {\n    private_key = \"x\"\n    root_cert = \"y\"\n  }\n}\n", []string{"a.hcl:3:5", "connect.ca_config.private_key"}},
		{"ca bad cert", "a.hcl", "connect {\n  ca_config {\n    root_cert = \"y\"\n    private_key = <<EOT\n" + keyPEM + "EOT\n  }\n}\n", []string{"a.hcl:3:5", "connect.ca_config.root_cert"}},
		{"ca rotation period", "a.hcl", "connect {\n  ca_config {\n    rotation_period = \"1h\"\n  }\n}\n", []string{"a.hcl:3:5", "not supported"}},
		{"sidecar range", "a.hcl", "ports {\n  sidecar_min_port = 30000\n  sidecar_max_port = 20000\n}\n", []string{"sidecar_min_port", "min <= max"}},
		{"upstream without port", "a.hcl", "service {\n  name = \"web\"\n  port = 80\n  connect {\n    sidecar_service {\n      proxy {\n        upstreams = [{ destination_name = \"api\" }]\n      }\n    }\n  }\n}\n", []string{"a.hcl:4:", `service "web"`, "local_bind_port"}},
		{"upstream bad name", "a.hcl", "service {\n  name = \"web\"\n  port = 80\n  connect {\n    sidecar_service {\n      proxy {\n        upstreams = [{ destination_name = \"a/b\", local_bind_port = 1 }]\n      }\n    }\n  }\n}\n", []string{"destination_name", "a/b"}},
		{"upstream unknown key", "a.hcl", "service {\n  name = \"web\"\n  connect {\n    sidecar_service {\n      proxy {\n        upstreams = [{ destination = \"api\", local_bind_port = 1 }]\n      }\n    }\n  }\n}\n", []string{"a.hcl:6:24", `unknown key "destination"`}},
		{"duplicate upstream port", "a.hcl", "service {\n  name = \"web\"\n  port = 80\n  connect {\n    sidecar_service {\n      proxy {\n        upstreams = [{ destination_name = \"a\", local_bind_port = 1 }, { destination_name = \"b\", local_bind_port = 1 }]\n      }\n    }\n  }\n}\n", []string{"both listen on"}},
		{"sidecar check", "a.hcl", "service {\n  name = \"web\"\n  connect {\n    sidecar_service {\n      check {\n        ttl = \"1s\"\n      }\n    }\n  }\n}\n", []string{"a.hcl:5:7", "leave the checks out"}},
		{"sidecar without connect", "a.hcl", "connect {\n  enabled = false\n}\nservice {\n  name = \"web\"\n  port = 80\n  connect {\n    sidecar_service {}\n  }\n}\n", []string{"connect is disabled"}},
		{"proxy on plain service", "a.hcl", "service {\n  name = \"web\"\n  port = 80\n  proxy {\n    destination_service_name = \"x\"\n  }\n}\n", []string{"a.hcl:4:", "connect-proxy"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			p := writeFile(t, dir, tc.file, tc.content)
			_, _, err := load(t, true, nil, p)
			if err == nil {
				t.Fatalf("loaded without error")
			}
			msg := strings.ReplaceAll(err.Error(), dir+string(filepath.Separator), "")
			for _, w := range tc.want {
				if !strings.Contains(msg, w) {
					t.Errorf("error %q does not contain %q", msg, w)
				}
			}
			// The CA's errors name the HTTP API's fields; the agent's must
			// name its configuration keys.
			if strings.Contains(msg, "PrivateKey") || strings.Contains(msg, "RootCert") {
				t.Errorf("error %q names an API field, not a configuration key", msg)
			}
		})
	}
}

func TestParseServices(t *testing.T) {
	t.Parallel()
	defs, err := ParseServices([]byte(`
service {
  name = "web"
  port = 80
  checks = [
    { http = "http://127.0.0.1/h", interval = "5s" },
    { ttl = "30s" },
  ]
}
service {
  id = "web-2"
  name = "web"
  check {
    tcp      = "127.0.0.1:81"
    interval = "1s"
  }
}
`), "web.hcl")
	if err != nil {
		t.Fatal(err)
	}
	if len(defs) != 2 || defs[0].ID != "web" || defs[1].ID != "web-2" {
		t.Fatalf("defs = %+v", defs)
	}
	cts := defs[0].CheckTypes()
	if len(cts) != 2 || cts[0].CheckID != "service:web:1" || cts[1].CheckID != "service:web:2" || cts[1].TTL != 30*time.Second || cts[0].ServiceID != "web" {
		t.Errorf("check types = %+v %+v", cts[0], cts[1])
	}
	if c := defs[1].CheckTypes()[0]; c.CheckID != "service:web-2" || c.Name != "Service 'web' check" {
		t.Errorf("single check defaults = %+v", c)
	}
	if ns := defs[0].NodeService(); ns.Service != "web" || ns.Port != 80 {
		t.Errorf("node service = %+v", ns)
	}
	if _, err := ParseServices([]byte(`datacenter = "x"`), "a.hcl"); err == nil || !strings.Contains(err.Error(), "only service") {
		t.Errorf("agent key in a service file: %v", err)
	}
	if _, err := ParseServices([]byte(``), "a.hcl"); err == nil {
		t.Error("empty service file accepted")
	}
	// Consul's agent API JSON, pasted.
	defs, err = ParseServices([]byte(`{"service": {"ID": "api-1", "Name": "api", "Port": 9000, "EnableTagOverride": true,
		"Check": {"CheckID": "api-ttl", "TTL": "15s", "DeregisterCriticalServiceAfter": "1m", "TLSSkipVerify": true}}}`), "api.json")
	if err != nil {
		t.Fatal(err)
	}
	c := defs[0].CheckTypes()[0]
	if defs[0].ID != "api-1" || !defs[0].EnableTagOverride || c.CheckID != "api-ttl" || c.DeregisterCriticalServiceAfter != time.Minute || !c.TLSSkipVerify {
		t.Errorf("CamelCase JSON = %+v %+v", defs[0], c)
	}
}

func TestValidateFiles(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	writeFile(t, dir, "agent.hcl", `server = true`)
	writeFile(t, dir, "web.json", `{"service": {"name": "web", "port": 80}}`)
	if err := ValidateFiles(dir); err != nil {
		t.Errorf("valid dir: %v", err)
	}
	bad := writeFile(t, t.TempDir(), "bad.hcl", `service { name = "" }`)
	if err := ValidateFiles(bad); err == nil || !strings.Contains(err.Error(), "bad.hcl:1:") {
		t.Errorf("invalid file: %v", err)
	}
	if err := ValidateFiles(filepath.Join(dir, "missing.hcl")); err == nil {
		t.Error("missing file accepted")
	}
}

func TestNormalizeKey(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"Name": "name", "ID": "id", "CheckID": "check_id", "TLSSkipVerify": "tls_skip_verify",
		"DeregisterCriticalServiceAfter": "deregister_critical_service_after", "HTTP": "http",
		"EnableTagOverride": "enable_tag_override", "node_name": "node_name", "SerfLAN": "serf_lan",
	} {
		if got := normalizeKey(in); got != want {
			t.Errorf("normalizeKey(%q) got %q, want %q", in, got, want)
		}
	}
}

// FuzzDecodeServiceDefinition feeds arbitrary content to the service file
// decoder, as HCL and as JSON: it must never panic.
func FuzzDecodeServiceDefinition(f *testing.F) {
	for _, p := range []string{"testdata/full.hcl", "testdata/full.json"} {
		b, err := os.ReadFile(p)
		if err == nil {
			f.Add(string(b), strings.HasSuffix(p, ".json"))
		}
	}
	f.Add(`service { name = "web" port = 80 }`, false)
	f.Add(`service { name = "web"
checks = [{ http = "http://x/", interval = "1s" }, { ttl = "5s" }] }`, false)
	f.Add(`{"service": {"Name": "w", "Check": {"TTL": "1s"}}}`, true)
	f.Add(`{"services": [{"name": "a"}, {"name": "b", "meta": {"k": "v"}}]}`, true)
	f.Fuzz(func(t *testing.T, content string, isJSON bool) {
		name := "f.hcl"
		if isJSON {
			name = "f.json"
		}
		_, _ = ParseServices([]byte(content), name)
		_, _ = decodeConfig([]byte(content), name)
	})
}

// TestLoad_UIConfig: the web UI is off by default, on with -dev, and
// ui_config { enabled } (HCL or JSON), the older top-level ui key and the
// -ui flag set it either way, later sources winning.
func TestLoad_UIConfig(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	on := writeFile(t, dir, "on.hcl", "ui_config {\n  enabled = true\n}\n")
	off := writeFile(t, dir, "off.json", `{"ui_config": {"enabled": false}}`)
	legacy := writeFile(t, dir, "legacy.hcl", "ui = true\n")
	bad := writeFile(t, dir, "bad.hcl", "ui_config {\n  enabeld = true\n}\n")
	for _, c := range []struct {
		name  string
		dev   bool
		args  []string
		files []string
		want  bool
	}{
		{"default", false, nil, nil, false},
		{"dev", true, nil, nil, true},
		{"file on", false, nil, []string{on}, true},
		{"dev, file off", true, nil, []string{off}, false},
		{"later file wins", false, nil, []string{on, off}, false},
		{"top-level ui", false, nil, []string{legacy}, true},
		{"flag over file", false, []string{"-ui=false"}, []string{on}, false},
		{"flag on", false, []string{"-ui"}, nil, true},
	} {
		rc, _, err := load(t, c.dev, append([]string{"-data-dir", dir}, c.args...), c.files...)
		if err != nil {
			t.Errorf("%s: %v", c.name, err)
			continue
		}
		if rc.UIEnabled != c.want {
			t.Errorf("%s: UIEnabled = %t, want %t", c.name, rc.UIEnabled, c.want)
		}
	}
	if _, _, err := load(t, false, []string{"-data-dir", dir}, bad); err == nil || !strings.Contains(err.Error(), "bad.hcl:2:3") || !strings.Contains(err.Error(), "enabeld") {
		t.Errorf("a misspelt ui_config key = %v, want an error naming bad.hcl:2:3 and the key", err)
	}
}
