package main

import (
	"slices"
	"strings"
	"testing"

	"github.com/trellismesh/trellis/internal/deptest"
)

// TestDeps keeps the import direction of DESIGN.md true.
func TestDeps(t *testing.T) {
	if testing.Short() {
		t.Skip("runs go list over the module")
	}
	pkgs := deptest.List(t, ".", "./...")
	rules := []deptest.Rule{
		{From: "api", Deny: []string{"..."}, Reason: "api imports nothing of ours, so it can become its own module"},
		{From: "gossip/...", Deny: []string{"..."}, Allow: []string{"internal/...", "version"}, Reason: "gossip imports only internal/"},
		{From: "connect/...", Deny: []string{"agent/...", "raftstore/...", "gossip/...", "api/...", "command/..."}, Reason: "connect is below agent and raftstore"},
		{From: "raftstore/...", Deny: []string{"agent/...", "gossip/...", "api/...", "command/...", "connect/proxy/..."}, Reason: "raftstore never imports gossip or the agent; membership reaches it through an interface"},
		{From: "raftstore/structs", Deny: []string{"..."}, Allow: []string{"connect", "connect/configentry", "connect/chain", "connect/golden"}, Reason: "structs is a leaf type package"},
		{From: "connect/golden", Deny: []string{"..."}, Reason: "golden signals are shared by the data plane and the servers"},
		{From: "connect/configentry", Deny: []string{"..."}, Allow: []string{"connect", "internal/suggest"}, Reason: "config entries are types and their validation (and its did-you-mean)"},
		{From: "connect/chain", Deny: []string{"..."}, Allow: []string{"connect", "connect/configentry"}, Reason: "the chain compiler is a pure function of the entries"},
		{From: "raftstore/state", Deny: []string{"..."}, Allow: []string{"raftstore/structs", "connect/..."}, Reason: "the state store knows only its records"},
		{From: "raftstore/rpc", Deny: []string{"..."}, Allow: []string{"raftstore/structs"}, Reason: "the RPC wire knows only the request and error types"},
		{From: "agent/tlsutil", Deny: []string{"..."}, Reason: "tlsutil is a leaf the CLI uses too"},
		{From: "agent/...", Deny: []string{"command/..."}, Reason: "the agent never imports the CLI"},
		{From: "agent/config", Deny: []string{"agent/...", "raftstore/...", "gossip/..."}, Allow: []string{"agent/config/...", "raftstore/structs"}, Reason: "config is below the agent"},
		{From: "agent/local", Deny: []string{"agent/...", "raftstore", "gossip/..."}, Allow: []string{"agent/local/..."}, Reason: "local state takes its RPC as an interface"},
		{From: "agent/checks", Deny: []string{"agent/...", "raftstore", "gossip/..."}, Allow: []string{"agent/checks/..."}, Reason: "checks report through an interface"},
		{From: "agent/ae", Deny: []string{"..."}, Allow: []string{"internal/..."}, Reason: "anti-entropy is a generic syncer"},
		{From: "agent/httpapi", Deny: []string{"agent", "raftstore", "gossip/..."}, Reason: "the HTTP API takes the agent as an interface"},
		{From: "agent/dns", Deny: []string{"agent", "raftstore", "gossip/...", "api"}, Reason: "DNS takes the catalog as an interface"},
		{From: "agent/mesh", Deny: []string{"agent/...", "raftstore", "gossip/...", "api"}, Allow: []string{"agent/mesh/..."}, Reason: "the mesh cache reaches the servers through an RPC interface"},
		{From: "agent/proxymgr", Deny: []string{"agent/...", "raftstore", "gossip/...", "api"}, Allow: []string{"agent/proxymgr/...", "agent/mesh"}, Reason: "the proxy manager runs connect/proxy from the mesh cache"},
		{From: "connect/proxy", Deny: []string{"..."}, Allow: []string{"connect", "connect/intentions", "connect/ca", "connect/chain", "connect/configentry", "connect/proxy/l7", "connect/proxy/rawsock", "connect/golden", "internal/..."}, Reason: "the data plane knows only identities, intentions, TLS and compiled chains"},
		{From: "connect/proxy/l7", Deny: []string{"..."}, Allow: []string{"connect", "connect/intentions", "connect/chain", "connect/configentry", "connect/golden", "connect/proxy/l7/h2link", "connect/proxy/rawsock", "internal/..."}, Reason: "the HTTP data path is below the proxy"},
		{From: "connect/proxy/rawsock", Deny: []string{"..."}, Reason: "raw socket reads and writes know nothing of the mesh"},
		{From: "connect/proxy/l7/h2link", Deny: []string{"..."}, Allow: []string{"internal/..."}, Reason: "HTTP/2 between proxies knows nothing of the mesh"},
		{From: "command/...", Deny: []string{"agent/...", "raftstore/...", "gossip/...", "connect/..."},
			Allow:  []string{"agent/config", "agent/tlsutil"},
			Reason: "commands talk to an agent only through api (agent/config parses service files for register and validate; agent/tlsutil makes certificates)"},
	}
	var filtered []deptest.Package
	for _, p := range pkgs {
		rel := deptest.Rel(p.ImportPath)
		if rel == "command/agent" || rel == "command/connect/proxy" {
			continue // the documented exceptions: it runs an agent (or a proxy)
		}
		filtered = append(filtered, p)
	}
	for _, bad := range deptest.Check(filtered, rules) {
		t.Error(bad)
	}

	// Nothing imports the agent package but command/agent (and test-only helpers).
	for _, p := range pkgs {
		rel := deptest.Rel(p.ImportPath)
		if rel == "command/agent" || strings.HasPrefix(rel, "internal/testcluster") {
			continue
		}
		if slices.Contains(p.Imports, deptest.Module+"/agent") {
			t.Errorf("%s imports agent: only command/agent may", p.ImportPath)
		}
	}
}

// TestBinaryDeps keeps test-only packages out of the trellis binary. (The
// testing package itself is linked: hashicorp/raft exports test helpers from
// a non-test file. None of ours may import it.)
func TestBinaryDeps(t *testing.T) {
	if testing.Short() {
		t.Skip("runs go list over the module")
	}
	deps := deptest.List(t, ".", ".")[0].Deps
	for _, dep := range deps {
		switch {
		case strings.HasPrefix(dep, deptest.Module+"/internal/testutil"),
			strings.HasPrefix(dep, deptest.Module+"/internal/retry"),
			strings.HasPrefix(dep, deptest.Module+"/internal/testcluster"),
			strings.HasPrefix(dep, deptest.Module+"/internal/deptest"),
			strings.HasPrefix(dep, "github.com/hashicorp/consul/"),
			strings.HasPrefix(dep, "go.uber.org/goleak"):
			t.Errorf("the trellis binary depends on %s, a test-only package", dep)
		}
	}
	var ours []string
	for _, dep := range deps {
		if strings.HasPrefix(dep, deptest.Module) {
			ours = append(ours, dep)
		}
	}
	for _, p := range deptest.List(t, ".", ours...) {
		for _, imp := range p.Imports {
			if imp == "testing" || imp == "net/http/httptest" {
				t.Errorf("%s, part of the binary, imports %s", p.ImportPath, imp)
			}
		}
	}
}
