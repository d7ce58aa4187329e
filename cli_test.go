package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/trellismesh/trellis/internal/retry"
	"github.com/trellismesh/trellis/internal/testcluster"
)

var (
	buildOnce sync.Once
	binary    string
	buildErr  error
)

// trellis builds the binary once per test run.
func trellis(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "trellis-cli-")
		if err != nil {
			buildErr = err
			return
		}
		binary = filepath.Join(dir, "trellis")
		out, err := exec.Command("go", "build", "-o", binary, ".").CombinedOutput()
		if err != nil {
			buildErr = err
			t.Logf("%s", out)
		}
	})
	if buildErr != nil {
		t.Fatalf("build: %v", buildErr)
	}
	return binary
}

type result struct {
	stdout, stderr string
	code           int
}

func run(t *testing.T, httpAddr string, args ...string) result {
	t.Helper()
	cmd := exec.Command(trellis(t), args...)
	cmd.Env = append(os.Environ(), "TRELLIS_HTTP_ADDR="+httpAddr)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("run %v: %v", args, err)
	}
	return result{out.String(), errb.String(), code}
}

func TestCLI_AgainstAgent(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	t.Parallel()
	a := testcluster.StartAgent(t, testcluster.Options{Name: "cli-node"})
	addr := a.HTTPAddr()
	dir := t.TempDir()
	web := filepath.Join(dir, "web.hcl")
	os.WriteFile(web, []byte(`
service {
  name = "web"
  port = 8080
  tags = ["v1", "blue"]
  check {
    ttl    = "1h"
    status = "passing"
  }
}
`), 0o600)
	db := filepath.Join(dir, "db.json")
	os.WriteFile(db, []byte(`{"service": {"Name": "db", "ID": "db-1", "Port": 5432}}`), 0o600)

	if r := run(t, addr, "services", "register", web, db); r.code != 0 || !strings.Contains(r.stdout, "Registered service: web") || !strings.Contains(r.stdout, "Registered service: db-1") {
		t.Fatalf("register: %+v", r)
	}
	if r := run(t, addr, "services", "register", "-name", "cache", "-port", "6379", "-tag", "primary", "-meta", "team=core"); r.code != 0 {
		t.Fatalf("register -name: %+v", r)
	}
	retry.Run(t, func(rr *retry.R) {
		r := run(t, addr, "catalog", "services", "-tags")
		if r.code != 0 || !strings.Contains(r.stdout, "web") || !strings.Contains(r.stdout, "blue,v1") || !strings.Contains(r.stdout, "cache") || !strings.Contains(r.stdout, "db") {
			rr.Fatalf("catalog services: %+v", r)
		}
	})
	if r := run(t, addr, "catalog", "nodes", "-service", "web"); r.code != 0 || !strings.Contains(r.stdout, "cli-node") {
		t.Errorf("catalog nodes -service: %+v", r)
	}
	if r := run(t, addr, "catalog", "nodes", "-service", "nope"); r.code != 0 || !strings.Contains(r.stderr, "No nodes") {
		t.Errorf("catalog nodes -service nope: %+v", r)
	}
	if r := run(t, addr, "members"); r.code != 0 || !strings.Contains(r.stdout, "cli-node") || !strings.Contains(r.stdout, "alive") || !strings.Contains(r.stdout, "server") {
		t.Errorf("members: %+v", r)
	}
	if r := run(t, addr, "members", "-detailed"); r.code != 0 || !strings.Contains(r.stdout, "role=server") {
		t.Errorf("members -detailed: %+v", r)
	}
	if r := run(t, addr, "operator", "raft", "list-peers"); r.code != 0 || !strings.Contains(r.stdout, "leader") || !strings.Contains(r.stdout, "cli-node") {
		t.Errorf("list-peers: %+v", r)
	}
	if r := run(t, addr, "services", "deregister", web); r.code != 0 || !strings.Contains(r.stdout, "Deregistered service: web") {
		t.Errorf("deregister file: %+v", r)
	}
	if r := run(t, addr, "services", "deregister", "-id", "db-1"); r.code != 0 {
		t.Errorf("deregister -id: %+v", r)
	}
	if r := run(t, addr, "services", "deregister", "-id", "db-1"); r.code != 1 || !strings.Contains(r.stderr, "404") {
		t.Errorf("deregister twice: %+v", r)
	}
	retry.Run(t, func(rr *retry.R) {
		r := run(t, addr, "catalog", "services")
		if strings.Contains(r.stdout, "web") {
			rr.Fatalf("web still listed: %s", r.stdout)
		}
	})

	// Bad input: a clear message on stderr, exit code 1, nothing registered.
	bad := filepath.Join(dir, "bad.hcl")
	os.WriteFile(bad, []byte("service {\n  name = \"x\"\n  port = 99999\n}\n"), 0o600)
	if r := run(t, addr, "services", "register", web, bad); r.code != 1 || !strings.Contains(r.stderr, "bad.hcl:3:10") {
		t.Errorf("register bad file: %+v", r)
	}
	if svcs, _ := a.Client.Agent().Services(); svcs["web"] != nil {
		t.Error("a failed register command registered the good file's service")
	}
}

func TestCLI_Offline(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	t.Parallel()
	dir := t.TempDir()
	good := filepath.Join(dir, "agent.hcl")
	os.WriteFile(good, []byte("server = true\nports { http = 8501 }\nservice { name = \"web\" }\n"), 0o600)
	bad := filepath.Join(dir, "bad.json")
	os.WriteFile(bad, []byte(`{"ports": {"htp": 1}}`), 0o600)
	// Config entry files that cannot be sent, refused before any agent is
	// asked; a config entry given to validate.
	entries := t.TempDir()
	empty := filepath.Join(entries, "empty.hcl")
	os.WriteFile(empty, []byte("\n  \n"), 0o600)
	arr := filepath.Join(entries, "arr.json")
	os.WriteFile(arr, []byte(`[{"Kind": "service-defaults", "Name": "web"}]`), 0o600)
	split := filepath.Join(entries, "split90.hcl")
	os.WriteFile(split, []byte("Kind = \"service-splitter\"\nName = \"web\"\nSplits = [{ Weight = 100 }]\n"), 0o600)
	missing := filepath.Join(entries, "nonexist.hcl")

	cases := []struct {
		args     []string
		code     int
		out, err string
	}{
		{[]string{"validate", good}, 0, "Configuration is valid", ""},
		{[]string{"validate", dir}, 1, "", `bad.json:1:12: ports: unknown key "htp"`},
		{[]string{"validate"}, 1, "", "at least one"},
		{[]string{"validate", split}, 1, "", "looks like a config entry (it has a top-level Kind), not agent configuration: write it with trellis config write " + split},
		{[]string{"config", "write", empty}, 1, "", empty + " is empty: it should hold one config entry"},
		{[]string{"config", "write", dir}, 1, "", "Error: " + dir + " is a directory, not a config entry file\n"},
		{[]string{"config", "write", arr}, 1, "", arr + " holds a JSON array: config write takes one entry per file"},
		{[]string{"config", "write", missing}, 1, "", "Error: " + missing + ": no such file\n"},
		// A flag after the arguments, said the same way by every command.
		{[]string{"config", "write", split, "-cas"}, 1, "", "flag -cas comes after FILE: give the flags first"},
		{[]string{"services", "register", split, "-name", "x"}, 1, "", "flag -name comes after the files: give the flags first"},
		{[]string{"join", "10.0.0.1", "-http-addr", "x"}, 1, "", "flag -http-addr comes after the addresses"},
		{[]string{"validate", split, "-quiet"}, 1, "", "flag -quiet comes after the paths"},
		// Unknown commands, exit 1.
		{[]string{"bogus"}, 1, "", `Error: unknown command "trellis bogus"`},
		{[]string{"memebrs"}, 1, "", `did you mean "trellis members"?`},
		{[]string{"intention", "bogus"}, 1, "", `unknown command "trellis intention bogus" (the subcommands of trellis intention are`},
		{[]string{"connect", "bogus"}, 1, "", `unknown command "trellis connect bogus"`},
		{[]string{"version", "-zzz"}, 1, "", "Error: flag provided but not defined: -zzz\n\nUsage: trellis version"},
		// Values in words, not Go's.
		{[]string{"agent", "-dev", "-http-port=abc"}, 1, "", `Error: -http-port: "abc" is not a port number`},
		{[]string{"agent", "-dev", "-config-file", missing}, 1, "", "-config-file " + missing + ": no such file\n"},
		{[]string{"connect", "ca", "set-config", "-config-file", missing}, 1, "", "Error: -config-file " + missing + ": no such file\n"},
		{[]string{"catalog", "services", "-http-addr=127.0.0.1"}, 1, "", `-http-addr "127.0.0.1" has no port: give host:port`},
		{[]string{"intention", "get", "web"}, 1, "", `intention get takes SRC and DST, or an intention ID: "web" is not an ID`},
		{[]string{"intention", "get", "prod/web", "db"}, 1, "", `namespace "prod" is not supported`},
		{[]string{"intention", "get", strings.Repeat("a", 256), "db"}, 1, "", "SRC is 256 characters long: a service name has at most 255"},
		{[]string{"intention", "create", "-meta", "a=1", "-meta", "a=2", "web", "db"}, 1, "", `-meta: key "a" is given twice`},
		{[]string{"services", "deregister", "-id=good1", "-id=web"}, 1, "", `-id: given twice ("good1", then "web"): give it once`},
		{[]string{"version"}, 0, "Trellis v", ""},
		{[]string{"-v"}, 0, "Trellis v", ""},
		{[]string{"members", "-h"}, 0, "Usage: trellis members", ""},
		{[]string{"catalog", "services", "-nope"}, 1, "", "flag provided but not defined: -nope"},
		{[]string{"services", "register"}, 1, "", "at least one service definition file"},
		{[]string{"agent", "-config-file", bad}, 1, "", `unknown key "htp"`},
		{[]string{"agent", "-data-dir", dir, "-bind", "127.0.0.1", "-server", "-bootstrap", "-http-port", "70000"}, 1, "", "ports.http 70000"},
	}
	for _, tc := range cases {
		r := run(t, "127.0.0.1:1", tc.args...)
		if r.code != tc.code || !strings.Contains(r.stdout, tc.out) || !strings.Contains(r.stderr, tc.err) {
			t.Errorf("trellis %s: code %d\nstdout: %s\nstderr: %s\nwant code %d, stdout with %q, stderr with %q",
				strings.Join(tc.args, " "), r.code, r.stdout, r.stderr, tc.code, tc.out, tc.err)
		}
	}
	// No agent to talk to: a clear error, exit 1.
	if r := run(t, "127.0.0.1:1", "catalog", "services"); r.code != 1 || !strings.Contains(r.stderr, "connection refused") {
		t.Errorf("no agent: %+v", r)
	}
}

func TestCLI_ClusterCommands(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	t.Parallel()
	// keygen, and a cluster whose gossip it encrypts.
	r := run(t, "127.0.0.1:1", "keygen")
	key := strings.TrimSpace(r.stdout)
	if r.code != 0 || len(key) != 44 {
		t.Fatalf("keygen: %+v", r)
	}
	hcl := fmt.Sprintf("encrypt = %q", key)
	srv := testcluster.StartAgent(t, testcluster.Options{Name: "cli-server", HCL: hcl})
	cl := testcluster.StartAgent(t, testcluster.Options{Name: "cli-client", Client: true, HCL: hcl})
	if r := run(t, cl.HTTPAddr(), "join", srv.GossipAddr()); r.code != 0 || !strings.Contains(r.stdout, "Successfully joined") {
		t.Fatalf("join: %+v", r)
	}
	if r := run(t, cl.HTTPAddr(), "join", "127.0.0.1:1"); r.code != 1 {
		t.Errorf("join nowhere: %+v", r)
	}
	retry.Run(t, func(rr *retry.R) {
		r := run(t, cl.HTTPAddr(), "members")
		if !strings.Contains(r.stdout, "cli-server") || !strings.Contains(r.stdout, "client") {
			rr.Fatalf("members: %+v", r)
		}
	})
	if r := run(t, cl.HTTPAddr(), "keyring", "-list"); r.code != 0 || !strings.Contains(r.stdout, key+" [2/2]") {
		t.Errorf("keyring -list: %+v", r)
	}
	// A failed member is skipped by a keyring change, and the output names
	// it: a third agent that stops without leaving.
	gone := testcluster.StartAgent(t, testcluster.Options{Name: "cli-gone", Client: true, HCL: hcl, RetryJoin: []string{srv.GossipAddr()}})
	retry.Run(t, func(rr *retry.R) {
		if r := run(t, cl.HTTPAddr(), "members"); !strings.Contains(r.stdout, "cli-gone") {
			rr.Fatalf("members: %+v", r)
		}
	})
	gone.Stop()
	retry.Run(t, func(rr *retry.R) {
		if r := run(t, cl.HTTPAddr(), "members"); !regexp.MustCompile(`cli-gone +\S+ +failed`).MatchString(r.stdout) {
			rr.Fatalf("members: %+v", r)
		}
	})
	newKey := strings.TrimSpace(run(t, "", "keygen").stdout)
	for i, args := range [][]string{{"-install", newKey}, {"-use", newKey}, {"-remove", key}} {
		// Each step is run until it reaches every member but cli-gone: on
		// a loaded machine another member can be taken for failed for a
		// moment, and skipped; running a step again is what the output
		// then asks for (each is idempotent).
		retry.Run(t, func(rr *retry.R) {
			r := run(t, cl.HTTPAddr(), append([]string{"keyring"}, args...)...)
			if r.code != 0 {
				t.Fatalf("keyring %v: %+v", args, r)
			}
			if !strings.Contains(r.stdout, "Done on every alive member. Skipped, as failed: cli-gone; run this again once they are back.") {
				rr.Fatalf("keyring %v (step %d): %+v", args, i+1, r)
			}
		})
	}
	if r := run(t, cl.HTTPAddr(), "keyring", "-list"); !strings.Contains(r.stdout, newKey+" [2/2] (primary on 2)") || strings.Contains(r.stdout, key) {
		t.Errorf("keyring after rotation: %+v", r)
	}
	if r := run(t, cl.HTTPAddr(), "keyring", "-list", "-use", newKey); r.code != 1 {
		t.Errorf("keyring with two operations: %+v", r)
	}
	if r := run(t, cl.HTTPAddr(), "operator", "raft", "remove-peer", "-address", "127.0.0.1:1"); r.code != 1 || !strings.Contains(r.stderr, "404") {
		t.Errorf("remove-peer unknown: %+v", r)
	}
	// leave stops the client and takes it out of the cluster.
	if r := run(t, cl.HTTPAddr(), "leave"); r.code != 0 || !strings.Contains(r.stdout, "Graceful leave complete") {
		t.Fatalf("leave: %+v", r)
	}
	select {
	case <-cl.ShutdownCh():
	case <-time.After(20 * time.Second):
		t.Fatal("the agent did not stop after leaving")
	}
	retry.Run(t, func(rr *retry.R) {
		r := run(t, srv.HTTPAddr(), "members")
		if !strings.Contains(r.stdout, "left") {
			rr.Fatalf("members after leave: %+v", r)
		}
	})
}

func TestCLI_TLSCreate(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	t.Parallel()
	dir := t.TempDir()
	in := func(args ...string) result {
		cmd := exec.Command(trellis(t), args...)
		cmd.Dir = dir
		var out, errb bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errb
		err := cmd.Run()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		}
		return result{out.String(), errb.String(), code}
	}
	if r := in("tls", "ca", "create"); r.code != 0 || !strings.Contains(r.stdout, "trellis-agent-ca.pem") {
		t.Fatalf("ca create: %+v", r)
	}
	if r := in("tls", "ca", "create"); r.code != 1 || !strings.Contains(r.stderr, "exists") {
		t.Errorf("ca create over an existing CA: %+v", r)
	}
	if r := in("tls", "cert", "create", "-server"); r.code != 0 || !strings.Contains(r.stdout, "dc1-server-trellis-0.pem") {
		t.Fatalf("cert create -server: %+v", r)
	}
	if r := in("tls", "cert", "create", "-server"); r.code != 0 || !strings.Contains(r.stdout, "dc1-server-trellis-1.pem") {
		t.Errorf("second server cert: %+v", r)
	}
	if r := in("tls", "cert", "create", "-client", "-dc", "eu"); r.code != 0 || !strings.Contains(r.stdout, "eu-client-trellis-0.pem") {
		t.Errorf("cert create -client: %+v", r)
	}
	if r := in("tls", "cert", "create"); r.code != 1 {
		t.Errorf("cert create without a role: %+v", r)
	}
	fi, err := os.Stat(filepath.Join(dir, "dc1-server-trellis-0-key.pem"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("key file mode: %v, %v", fi, err)
	}
	// The files make a configuration the agent accepts.
	cfg := filepath.Join(dir, "tls.hcl")
	os.WriteFile(cfg, []byte(fmt.Sprintf(`tls {
  defaults {
    ca_file = %q
    cert_file = %q
    key_file = %q
    verify_incoming = true
    verify_outgoing = true
  }
}`, filepath.Join(dir, "trellis-agent-ca.pem"), filepath.Join(dir, "dc1-server-trellis-0.pem"), filepath.Join(dir, "dc1-server-trellis-0-key.pem"))), 0o600)
	if r := in("validate", cfg); r.code != 0 {
		t.Errorf("validate TLS config: %+v", r)
	}
}

// writeTestFile writes body to dir/name (0600) and returns its path.
func writeTestFile(t *testing.T, dir, name, body string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}
