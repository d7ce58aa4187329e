package main

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/trellismesh/trellis/internal/retry"
	"github.com/trellismesh/trellis/internal/testcluster"
)

// runStdin is run with stdin.
func runStdin(t *testing.T, httpAddr, stdin string, args ...string) result {
	t.Helper()
	cmd := exec.Command(trellis(t), args...)
	cmd.Env = append(os.Environ(), "TRELLIS_HTTP_ADDR="+httpAddr)
	cmd.Stdin = strings.NewReader(stdin)
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

func TestCLI_Config(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	t.Parallel()
	a := testcluster.StartAgent(t, testcluster.Options{Name: "cli-config"})
	addr := a.HTTPAddr()
	dir := t.TempDir()
	write := func(name, body string) string { return writeTestFile(t, dir, name, body) }
	expect := func(r result, code int, stdout, stderr string) {
		t.Helper()
		if r.code != code || !strings.Contains(r.stdout, stdout) || !strings.Contains(r.stderr, stderr) {
			t.Errorf("code %d\nstdout: %s\nstderr: %s\nwant code %d, stdout with %q, stderr with %q", r.code, r.stdout, r.stderr, code, stdout, stderr)
		}
	}

	// CamelCase HCL, as Consul's docs write it.
	web := write("web-defaults.hcl", `
Kind     = "service-defaults"
Name     = "web"
Protocol = "http"
`)
	// snake_case HCL with blocks.
	router := write("web-router.hcl", `
kind = "service-router"
name = "web"
routes {
  match {
    http {
      path_prefix = "/admin"
    }
  }
  destination {
    service         = "web"
    request_timeout = "3s"
  }
}
`)
	expect(run(t, addr, "config", "write", web), 0, "Config entry written: "+web, "")
	expect(run(t, addr, "config", "write", router), 0, "Config entry written", "")
	expect(runStdin(t, addr, `{"Kind": "service-defaults", "Name": "api", "Protocol": "grpc"}`, "config", "write", "-"), 0, "Config entry written: stdin", "")
	// A byte order mark, as some editors write, is dropped.
	bom := write("bom.json", "\ufeff{\"Kind\": \"service-defaults\", \"Name\": \"bom\"}\n")
	expect(run(t, addr, "config", "write", bom), 0, "Config entry written: "+bom, "")
	expect(run(t, addr, "config", "delete", "-kind", "service-defaults", "-name", "bom"), 0, "Config entry deleted", "")
	// Server-set fields are refused without a suggestion of themselves.
	ci := write("ci.hcl", "Kind = \"service-resolver\"\nName = \"zz\"\nCreateIndex = 5\n")
	expect(run(t, addr, "config", "write", ci), 1, "", "ci.hcl:3:1: CreateIndex: set by the servers, not written in a file")
	// A weight is printed as written.
	thirds := write("thirds.json", `{"Kind": "service-splitter", "Name": "web", "Splits": [{"Weight": 33.333}, {"Weight": 66.667}]}`)
	expect(run(t, addr, "config", "write", thirds), 1, "", "Splits[0].Weight: 33.333: at most two decimals")

	r := run(t, addr, "config", "read", "-kind", "service-router", "-name", "web")
	expect(r, 0, `"PathPrefix": "/admin"`, "")
	var got struct {
		Kind, Name string
		Routes     []struct {
			Destination struct{ Service, RequestTimeout string }
		}
		ModifyIndex uint64
	}
	if err := json.Unmarshal([]byte(r.stdout), &got); err != nil || got.Kind != "service-router" || len(got.Routes) != 1 ||
		got.Routes[0].Destination.RequestTimeout != "3s" || got.ModifyIndex == 0 {
		t.Errorf("config read = %+v, %v\n%s", got, err, r.stdout)
	}
	expect(run(t, addr, "config", "list", "-kind", "service-defaults"), 0, "api\nweb", "")
	expect(run(t, addr, "config", "list"), 1, "", "-kind is required")
	expect(run(t, addr, "config", "list", "-kind", "service-nope"), 1, "", "service-nope")
	expect(run(t, addr, "config", "read", "-kind", "service-defaults", "-name", "ghost"), 1, "", "no config entry service-defaults/ghost")

	// Refused: a misspelt field, named with its line; field errors, with
	// theirs; a delete contradicting the protocols.
	bad := write("bad.hcl", "Kind = \"service-defaults\"\nName = \"db\"\nProtocl = \"http\"\n")
	expect(run(t, addr, "config", "write", bad), 1, "", "bad.hcl:3")
	expect(run(t, addr, "config", "write", bad), 1, "", "Protocl")
	pigeon := write("pigeon.json", `{"Kind": "service-defaults", "Name": "db", "Protocol": "carrier-pigeon"}`)
	expect(run(t, addr, "config", "write", pigeon), 1, "", "pigeon.json:1:44: invalid Protocol")
	// A value Validate refuses on the leader is located in the file too.
	smtp := write("smtp.hcl", "kind = \"service-defaults\"\nname = \"mail\"\n\nprotocol = \"smtp\"\n")
	expect(run(t, addr, "config", "write", smtp), 1, "", "smtp.hcl:4:1: invalid Protocol")
	expect(run(t, addr, "config", "delete", "-kind", "service-defaults", "-name", "web"), 1, "", "has a service-router")
	// A conflict with the other entries is located at the field it is about
	// (here the entry's name: the router's service speaks tcp).
	plain := write("plain.hcl", "# a router for a tcp service\nKind = \"service-router\"\nName = \"plain\"\n")
	expect(run(t, addr, "config", "write", plain), 1, "", `plain.hcl:3:1: invalid Name: service "plain" has a service-router`)

	// CAS.
	var cur struct{ ModifyIndex uint64 }
	json.Unmarshal([]byte(run(t, addr, "config", "read", "-kind", "service-defaults", "-name", "api").stdout), &cur)
	api2 := write("api.json", `{"Kind": "service-defaults", "Name": "api", "Protocol": "http2"}`)
	expect(run(t, addr, "config", "write", "-cas", "-modify-index", "1", api2), 1, "", "not written")
	expect(run(t, addr, "config", "write", "-cas", "-modify-index", itoa(cur.ModifyIndex), api2), 0, "Config entry written", "")
	expect(run(t, addr, "config", "delete", "-kind", "service-defaults", "-name", "api", "-cas", "-modify-index", itoa(cur.ModifyIndex)), 1, "", "not deleted")
	json.Unmarshal([]byte(run(t, addr, "config", "read", "-kind", "service-defaults", "-name", "api").stdout), &cur)
	expect(run(t, addr, "config", "delete", "-kind", "service-defaults", "-name", "api", "-cas", "-modify-index", itoa(cur.ModifyIndex)), 0, "Config entry deleted: service-defaults/api", "")

	expect(run(t, addr, "config", "delete", "-kind", "service-router", "-name", "web"), 0, "Config entry deleted: service-router/web", "")
	expect(run(t, addr, "config", "delete", "-kind", "service-defaults", "-name", "web"), 0, "Config entry deleted", "")
	if r := run(t, addr, "config", "list", "-kind", "service-defaults"); r.code != 0 || strings.TrimSpace(r.stdout) != "" {
		t.Errorf("list after deletes: %+v", r)
	}
	expect(run(t, addr, "config", "write"), 1, "", "Usage: trellis config write")
}

// TestCLI_ConfigThroughClientAgent: entries, chains and the intentions of
// service-intentions entries cross the internal RPC from a client agent.
func TestCLI_ConfigThroughClientAgent(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	t.Parallel()
	srv := testcluster.StartAgent(t, testcluster.Options{Name: "cfg-server"})
	cl := testcluster.StartAgent(t, testcluster.Options{Name: "cfg-client", Client: true, RetryJoin: []string{srv.GossipAddr()}})
	addr := cl.HTTPAddr()
	dir := t.TempDir()
	p := filepath.Join(dir, "db-intentions.hcl")
	if err := os.WriteFile(p, []byte(`
kind = "service-intentions"
name = "db"
sources = [
  { name = "web", action = "allow" },
  { name = "*", action = "deny" },
]
`), 0o600); err != nil {
		t.Fatal(err)
	}
	retry.Run(t, func(r *retry.R) {
		if res := run(t, addr, "config", "write", p); res.code != 0 {
			r.Fatalf("config write through the client: %+v", res)
		}
	})
	if r := run(t, addr, "config", "read", "-kind", "service-intentions", "-name", "db"); r.code != 0 || !strings.Contains(r.stdout, `"Action": "deny"`) {
		t.Errorf("config read through the client: %+v", r)
	}
	if r := run(t, addr, "intention", "check", "web", "db"); r.code != 0 || !strings.Contains(r.stdout, "Allowed") {
		t.Errorf("intention check web db: %+v", r)
	}
	if r := run(t, addr, "intention", "check", "api", "db"); r.code != 1 || !strings.Contains(r.stdout, "Denied") {
		t.Errorf("intention check api db: %+v", r)
	}
	if r := run(t, addr, "intention", "create", "api", "db"); r.code != 1 || !strings.Contains(r.stderr, "trellis config write") {
		t.Errorf("legacy intention for a managed destination: %+v", r)
	}
	ch, _, err := cl.Client.DiscoveryChain().Get("db", nil, nil)
	if err != nil || ch.Chain == nil || ch.Chain.ServiceName != "db" || len(ch.Chain.Targets) != 1 {
		t.Errorf("discovery chain through the client: %+v, %v", ch, err)
	}
}

func itoa(n uint64) string { return strconv.FormatUint(n, 10) }
