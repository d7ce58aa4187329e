package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

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

	cases := []struct {
		args     []string
		code     int
		out, err string
	}{
		{[]string{"validate", good}, 0, "Configuration is valid", ""},
		{[]string{"validate", dir}, 1, "", `bad.json:1:12: ports: unknown key "htp"`},
		{[]string{"validate"}, 1, "", "at least one"},
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
