package main

import (
	"encoding/json"
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"

	"github.com/trellismesh/trellis/internal/testcluster"
)

// putConfigEntry writes a config entry through PUT /v1/config.
func putConfigEntry(t *testing.T, addr, body string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPut, "http://"+addr+"/v1/config", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || strings.TrimSpace(string(b)) != "true" {
		t.Fatalf("PUT /v1/config %s: %d %s", body, resp.StatusCode, b)
	}
}

func TestCLI_ConnectChain(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	t.Parallel()
	a := testcluster.StartAgent(t, testcluster.Options{Name: "cli-chain"})
	addr := a.HTTPAddr()

	// With no entry, the chain is the service itself.
	r := run(t, addr, "connect", "chain", "db")
	if r.code != 0 || !regexp.MustCompile(`(?m)^Start node:\s+resolver:db\.default\.default\.dc1$`).MatchString(r.stdout) ||
		!strings.Contains(r.stdout, "Default:") {
		t.Errorf("default chain: %+v", r)
	}

	putConfigEntry(t, addr, `{"Kind": "service-resolver", "Name": "db", "Redirect": {"Service": "db-v2"}, "ConnectTimeout": "2s"}`)
	putConfigEntry(t, addr, `{"Kind": "service-resolver", "Name": "db-v2", "ConnectTimeout": "3s",
		"Failover": {"*": {"Targets": [{"Service": "db-backup"}]}}}`)

	r = run(t, addr, "connect", "chain", "db")
	for _, want := range []string{
		`(?m)^Protocol:\s+tcp$`,
		`(?m)^Start node:\s+resolver:db-v2\.default\.default\.dc1$`,
		`(?m)^  Target:\s+db-v2\.default\.default\.dc1$`,
		`(?m)^  Failover:\s+db-backup\.default\.default\.dc1$`,
		`(?m)^  Connect timeout:\s+3s$`,
		`(?m)^  db-v2\.default\.default\.dc1\s+service db-v2`,
	} {
		if !regexp.MustCompile(want).MatchString(r.stdout) {
			t.Errorf("connect chain db lacks %s: %+v", want, r)
		}
	}
	if strings.Contains(r.stdout, "Default:") {
		t.Errorf("a redirected chain says Default: %s", r.stdout)
	}

	r = run(t, addr, "connect", "chain", "-format", "json", "db")
	// The same shape as GET /v1/discovery-chain/db: {"Chain": {...}}.
	var resp struct {
		Chain struct {
			ServiceName, StartNode string
			Nodes                  map[string]struct{ Resolver struct{ Target string } }
		}
	}
	ch := &resp.Chain
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &resp) != nil || ch.ServiceName != "db" ||
		ch.Nodes[ch.StartNode].Resolver.Target != "db-v2.default.default.dc1" {
		t.Errorf("-format json: %+v", r)
	}
	if !strings.HasPrefix(strings.TrimSpace(r.stdout), "{\n    \"Chain\": {") {
		t.Errorf("-format json is not the API's {\"Chain\": ...}: %s", r.stdout)
	}

	for _, tc := range []struct {
		args []string
		err  string
	}{
		{[]string{"connect", "chain"}, "takes one argument"},
		{[]string{"connect", "chain", "a", "b"}, "takes one argument"},
		{[]string{"connect", "chain", "db", "-format", "json"}, "comes after"},
		{[]string{"connect", "chain", "-format", "yaml", "db"}, `-format "yaml"`},
	} {
		if r := run(t, addr, tc.args...); r.code != 1 || !strings.Contains(r.stderr, tc.err) {
			t.Errorf("trellis %s: %+v, want stderr with %q", strings.Join(tc.args, " "), r, tc.err)
		}
	}
	if r := run(t, "127.0.0.1:1", "connect", "chain", "db"); r.code != 1 || !strings.Contains(r.stderr, "connection refused") {
		t.Errorf("no agent: %+v", r)
	}
}
