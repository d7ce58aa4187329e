package main

import (
	"encoding/json"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/trellismesh/trellis/internal/retry"
	"github.com/trellismesh/trellis/internal/testcluster"
)

// waitForCA waits until the agent's servers have made the CA's first root.
func waitForCA(t *testing.T, addr string) {
	t.Helper()
	retry.Run(t, func(r *retry.R) {
		if res := run(t, addr, "connect", "ca", "roots"); res.code != 0 || !strings.Contains(res.stdout, "true") {
			r.Fatalf("connect ca roots: %+v", res)
		}
	})
}

func TestCLI_Intentions(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	t.Parallel()
	a := testcluster.StartAgent(t, testcluster.Options{Name: "cli-intentions"})
	addr := a.HTTPAddr()

	expect := func(r result, code int, stdout, stderr string) {
		t.Helper()
		if r.code != code || !strings.Contains(r.stdout, stdout) || !strings.Contains(r.stderr, stderr) {
			t.Errorf("code %d\nstdout: %s\nstderr: %s\nwant code %d, stdout with %q, stderr with %q", r.code, r.stdout, r.stderr, code, stdout, stderr)
		}
	}
	expect(run(t, addr, "intention", "list"), 0, "", "No intentions")
	expect(run(t, addr, "intention", "create", "web", "db"), 0, "Created: web => db (allow)", "")
	expect(run(t, addr, "intention", "create", "-deny", "web", "db"), 1, "", "exists already; give -replace")
	expect(run(t, addr, "intention", "create", "-replace", "-deny", "-description", "no writes", "-meta", "team=core", "web", "db"), 0, "Replaced: web => db (deny)", "")
	expect(run(t, addr, "intention", "create", "-replace", "-deny", "api", "db"), 0, "Created: api => db (deny)", "")
	expect(run(t, addr, "intention", "delete", "api", "db"), 0, "Deleted", "")
	expect(run(t, addr, "intention", "create", "-deny", "*", "db"), 0, "Created: * => db (deny)", "")
	expect(run(t, addr, "intention", "create", "-allow", "api", "*"), 0, "Created: api => * (allow)", "")
	expect(run(t, addr, "intention", "create", "-allow", "-deny", "x", "y"), 1, "", "-allow or -deny")
	expect(run(t, addr, "intention", "create", "-meta", "novalue", "x", "y"), 1, "", `-meta "novalue"`)

	r := run(t, addr, "intention", "get", "web", "db")
	expect(r, 0, "Action:", "")
	for _, want := range []string{`(?m)^Source:\s+web$`, `(?m)^Destination:\s+db$`, `(?m)^Action:\s+deny$`, `(?m)^Precedence:\s+9$`,
		`(?m)^Description:\s+no writes$`, `(?m)^Meta\[team\]:\s+core$`, `(?m)^ID:\s+[0-9a-f-]{36}$`} {
		if !regexp.MustCompile(want).MatchString(r.stdout) {
			t.Errorf("intention get lacks %s:\n%s", want, r.stdout)
		}
	}
	id := regexp.MustCompile(`(?m)^ID:\s+(\S+)$`).FindStringSubmatch(r.stdout)
	if id != nil {
		expect(run(t, addr, "intention", "get", id[1]), 0, "Destination:  db", "")
	}
	expect(run(t, addr, "intention", "get", "web", "nope"), 1, "", "no intention web => nope")
	// A name in the default namespace, as Consul's clients write it.
	expect(run(t, addr, "intention", "get", "default/web", "default/db"), 0, "Destination:  db", "")
	expect(run(t, addr, "intention", "check", "default/web", "db"), 1, "Denied", "")

	// The list is in precedence order, in aligned columns.
	r = run(t, addr, "intention", "list")
	lines := strings.Split(r.stdout, "\n")
	if r.code != 0 || len(lines) < 4 || !regexp.MustCompile(`^Source\s+Action\s+Destination\s+Precedence\s+Description$`).MatchString(lines[0]) ||
		!regexp.MustCompile(`^web\s+deny\s+db\s+9\s+no writes$`).MatchString(lines[1]) ||
		!regexp.MustCompile(`^\*\s+deny\s+db\s+8`).MatchString(lines[2]) ||
		!regexp.MustCompile(`^api\s+allow\s+\*\s+6`).MatchString(lines[3]) {
		t.Errorf("intention list: %+v", r)
	}

	r = run(t, addr, "intention", "list", "-filter", "Action == allow")
	if r.code != 0 || !strings.Contains(r.stdout, "api") || strings.Contains(r.stdout, "deny") {
		t.Errorf("intention list -filter: %+v", r)
	}
	expect(run(t, addr, "intention", "list", "-filter", "Nope =="), 1, "", "400")

	// check: 0 allowed, 1 denied, 2 on any error.
	expect(run(t, addr, "intention", "check", "web", "db"), 1, "Denied", "")
	expect(run(t, addr, "intention", "check", "api", "db"), 1, "Denied", "") // * => db beats api => *
	expect(run(t, addr, "intention", "check", "api", "cache"), 0, "Allowed", "")
	expect(run(t, addr, "intention", "check", "cache", "web"), 0, "Allowed", "") // no intention: -dev allows by default
	expect(run(t, addr, "intention", "check"), 2, "", "takes two arguments")
	expect(run(t, addr, "intention", "check", "web"), 2, "", "takes two arguments")
	expect(run(t, addr, "intention", "check", "we b", "db"), 2, "", `SRC "we b" is not a service name`)
	expect(run(t, addr, "intention", "check", "web", ""), 2, "", "DST is empty")
	expect(run(t, addr, "intention", "check", "-nope", "web", "db"), 2, "", "-nope")
	expect(run(t, "127.0.0.1:1", "intention", "check", "web", "db"), 2, "", "connection refused")

	// match: the lines in precedence order.
	r = run(t, addr, "intention", "match", "-destination", "db")
	if r.code != 0 || r.stdout != "web => db (deny)\n* => db (deny)\napi => * (allow)\n" {
		t.Errorf("match -destination db: %+v", r)
	}
	r = run(t, addr, "intention", "match", "-source", "api")
	if r.code != 0 || r.stdout != "* => db (deny)\napi => * (allow)\n" {
		t.Errorf("match -source api: %+v", r)
	}
	expect(run(t, addr, "intention", "match", "-source", "nobody-here"), 0, "* => db (deny)", "")
	expect(run(t, addr, "intention", "match"), 1, "", "give -source NAME or -destination NAME")
	expect(run(t, addr, "intention", "match", "-source", "web", "-destination", "db"), 1, "", "not both")
	expect(run(t, addr, "intention", "match", "-source", "bad name"), 1, "", `-source "bad name"`)

	expect(run(t, addr, "intention", "delete", "web", "db"), 0, "Deleted: the intention web => db", "")
	expect(run(t, addr, "intention", "delete", "web", "db"), 1, "", "no intention web => db")
	expect(run(t, addr, "intention", "get", "web", "db"), 1, "", "no intention")
	expect(run(t, addr, "intention", "check", "web", "db"), 1, "Denied", "") // now * => db decides

	// Malformed names are refused before any request: no agent is needed.
	for _, args := range [][]string{
		{"intention", "create", "web/x", "db"},
		{"intention", "create", "web", "-db"},
		{"intention", "delete", "", "db"},
		{"intention", "get", "a", "b", "c"},
	} {
		r := run(t, "127.0.0.1:1", args...)
		if r.code != 1 || strings.Contains(r.stderr, "connection refused") || !regexp.MustCompile(`SRC|DST|arguments|flag`).MatchString(r.stderr) {
			t.Errorf("trellis %s: %+v", strings.Join(args, " "), r)
		}
	}
}

func TestCLI_ConnectCA(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	t.Parallel()
	a := testcluster.StartAgent(t, testcluster.Options{Name: "cli-ca"})
	addr := a.HTTPAddr()
	waitForCA(t, addr)

	getConfig := func() map[string]any {
		t.Helper()
		r := run(t, addr, "connect", "ca", "get-config")
		var conf map[string]any
		if r.code != 0 || json.Unmarshal([]byte(r.stdout), &conf) != nil {
			t.Fatalf("get-config: %+v", r)
		}
		return conf
	}
	conf := getConfig()
	cfg, _ := conf["Config"].(map[string]any)
	if conf["Provider"] != "trellis" || conf["ClusterID"] == "" || cfg["LeafCertTTL"] != "72h0m0s" || cfg["PrivateKey"] != nil {
		t.Errorf("get-config = %v", conf)
	}

	dir := t.TempDir()
	write := func(name, body string) string { return writeTestFile(t, dir, name, body) }
	good := write("ca.json", `{"Provider": "consul", "Config": {"LeafCertTTL": "24h"}}`)
	if r := run(t, addr, "connect", "ca", "set-config", "-config-file", good); r.code != 0 || !strings.Contains(r.stdout, "Configuration updated") {
		t.Fatalf("set-config: %+v", r)
	}
	if cfg, _ := getConfig()["Config"].(map[string]any); cfg["LeafCertTTL"] != "24h0m0s" {
		t.Errorf("after set-config: %v", cfg)
	}
	bad := []struct {
		file, body, want string
	}{
		{"consul-only.json", `{"Config": {"RotationPeriod": "2160h"}}`, "RotationPeriod is not supported"},
		{"unknown.json", `{"Config": {"Colour": "blue"}}`, "Config.Colour: unknown key"},
		{"syntax.json", "{\n  \"Config\": {\"LeafCertTTL\": \"24h\",}\n}", "syntax.json:2:"},
		{"top.json", `{"Provder": "trellis"}`, `unknown field "Provder"`},
		{"type.json", `{"Provider": 5}`, "type.json:1:"},
		{"empty.json", ``, "empty.json: the file is empty"},
		{"range.json", `{"Config": {"LeafCertTTL": "10s"}}`, "Config.LeafCertTTL"},
	}
	for _, tc := range bad {
		p := write(tc.file, tc.body)
		r := run(t, addr, "connect", "ca", "set-config", "-config-file", p)
		if r.code != 1 || !strings.Contains(r.stderr, tc.want) || !strings.Contains(r.stderr, tc.file) {
			t.Errorf("set-config %s: %+v; want exit 1 naming the file and %q", tc.file, r, tc.want)
		}
	}
	if r := run(t, addr, "connect", "ca", "set-config"); r.code != 1 || !strings.Contains(r.stderr, "-config-file is required") {
		t.Errorf("set-config without a file: %+v", r)
	}
	if r := run(t, addr, "connect", "ca", "set-config", "-config-file", filepath.Join(dir, "missing.json")); r.code != 1 || !strings.Contains(r.stderr, "missing.json") {
		t.Errorf("set-config of a missing file: %+v", r)
	}
	if cfg, _ := getConfig()["Config"].(map[string]any); cfg["LeafCertTTL"] != "24h0m0s" {
		t.Errorf("refused set-configs changed the configuration: %v", cfg)
	}

	r := run(t, addr, "connect", "ca", "roots")
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if r.code != 0 || len(lines) != 2 || !regexp.MustCompile(`^ID\s+Name\s+Active\s+NotAfter$`).MatchString(lines[0]) || !strings.Contains(lines[1], "true") {
		t.Fatalf("roots: %+v", r)
	}
	oldID := strings.Fields(lines[1])[0]

	r = run(t, addr, "connect", "ca", "rotate")
	m := regexp.MustCompile(`^New active root: ([0-9a-f:]+)\n$`).FindStringSubmatch(r.stdout)
	if r.code != 0 || m == nil || m[1] == oldID {
		t.Fatalf("rotate: %+v", r)
	}
	r = run(t, addr, "connect", "ca", "roots")
	if r.code != 0 || !regexp.MustCompile(regexp.QuoteMeta(m[1])+`\s.*\strue\s`).MatchString(r.stdout) ||
		!regexp.MustCompile(regexp.QuoteMeta(oldID)+`\s.*\sfalse\s`).MatchString(r.stdout) {
		t.Errorf("roots after rotate (want %s active, %s kept): %+v", m[1], oldID, r)
	}
	if r := run(t, addr, "connect", "ca", "roots", "extra"); r.code != 1 || !strings.Contains(r.stderr, "takes no arguments") {
		t.Errorf("roots with an argument: %+v", r)
	}
}

// TestCLI_IntentionsL7 shows how the intention commands show an intention
// of HTTP permissions (from a service-intentions entry), which has no
// Action: list and match count its permissions, get lists them and no
// creation time it lacks, check judges it a connection, so denied.
func TestCLI_IntentionsL7(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	t.Parallel()
	a := testcluster.StartAgent(t, testcluster.Options{Name: "cli-intentions-l7"})
	addr := a.HTTPAddr()
	dir := t.TempDir()
	write := func(name, hcl string) {
		t.Helper()
		if r := run(t, addr, "config", "write", writeTestFile(t, dir, name, hcl)); r.code != 0 {
			t.Fatalf("config write %s: %+v", name, r)
		}
	}
	write("defaults.hcl", `Kind = "service-defaults"
Name = "users"
Protocol = "http"
`)
	write("intentions.hcl", `Kind = "service-intentions"
Name = "users"
Sources = [{
  Name = "web"
  Permissions = [
    { Action = "deny", HTTP = { PathPrefix = "/users", Methods = ["DELETE"] } },
    { Action = "allow", HTTP = { PathPrefix = "/", Header = [{ Name = "x-team", Exact = "core" }] } },
  ]
}]
`)
	r := run(t, addr, "intention", "list")
	if r.code != 0 || !regexp.MustCompile(`(?m)^web\s+2 HTTP permissions\s+users\s+9`).MatchString(r.stdout) {
		t.Errorf("intention list: %+v", r)
	}
	r = run(t, addr, "intention", "match", "-destination", "users")
	if r.code != 0 || r.stdout != "web => users (2 HTTP permissions)\n" {
		t.Errorf("intention match: %+v", r)
	}
	r = run(t, addr, "intention", "get", "web", "users")
	for _, want := range []string{`(?m)^Permission\[0\]:\s+deny DELETE path_prefix="/users"$`,
		`(?m)^Permission\[1\]:\s+allow path_prefix="/" header\[x-team\] exact="core"$`} {
		if !regexp.MustCompile(want).MatchString(r.stdout) {
			t.Errorf("intention get lacks %s: %+v", want, r)
		}
	}
	if r.code != 0 || strings.Contains(r.stdout, "Action:") || strings.Contains(r.stdout, "0001") {
		t.Errorf("intention get shows an empty action or a year-1 time: %+v", r)
	}
	// HTTP permissions cannot judge a connection: check says Denied, as
	// Consul's does, even in -dev where the default is allow.
	if r := run(t, addr, "intention", "check", "web", "users"); r.code != 1 || r.stdout != "Denied\n" ||
		!strings.Contains(r.stderr, "the intention web => users decides by HTTP permissions") {
		t.Errorf("intention check: %+v", r)
	}
}
