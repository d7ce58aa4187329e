// Package testcluster starts real Trellis agents inside a test process, on
// free loopback ports, with their logs sent to the test. It is test-only.
package testcluster

import (
	"context"
	"flag"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	consulapi "github.com/hashicorp/consul/api"

	"github.com/trellismesh/trellis/agent"
	"github.com/trellismesh/trellis/agent/config"
	"github.com/trellismesh/trellis/internal/testutil"
)

// Options shape a test agent.
type Options struct {
	// Name is the node name; the test's name when empty.
	Name string
	// DataDir makes a persistent (non-dev) bootstrapped server there; empty
	// starts a -dev agent.
	DataDir string
	// ServerPort fixes the server port (a restart must keep it); 0 picks one.
	ServerPort int
	// HCL is extra configuration, written to a file the agent loads.
	HCL string
	// Args are extra agent flags.
	Args []string
}

// Agent is a running test agent.
type Agent struct {
	*agent.Agent
	// Config is the agent's runtime configuration.
	Config config.RuntimeConfig
	// Client is a Consul API client for its HTTP API.
	Client *consulapi.Client
}

// StartAgent starts an agent and waits until it has a leader and its node
// is in the catalog. It is shut down when the test ends (or by Stop).
func StartAgent(t testing.TB, opts Options) *Agent {
	t.Helper()
	name := opts.Name
	if name == "" {
		name = sanitize(t.Name())
	}
	args := []string{"-node", name, "-bind", "127.0.0.1", "-client", "127.0.0.1",
		"-http-port", "0", "-dns-port", "0", "-serf-lan-port", "0",
		"-server-port", strconv.Itoa(opts.ServerPort)}
	if opts.DataDir == "" {
		args = append(args, "-dev")
	} else {
		args = append(args, "-server", "-bootstrap", "-data-dir", opts.DataDir)
	}
	if opts.HCL != "" {
		p := filepath.Join(t.TempDir(), "extra.hcl")
		if err := os.WriteFile(p, []byte(opts.HCL), 0o600); err != nil {
			t.Fatal(err)
		}
		args = append(args, "-config-file", p)
	}
	args = append(args, opts.Args...)

	var f config.Flags
	fs := flag.NewFlagSet("agent", flag.ContinueOnError)
	config.AddFlags(fs, &f)
	if err := fs.Parse(args); err != nil {
		t.Fatalf("agent flags: %v", err)
	}
	rc, _, err := config.Load(config.LoadOpts{Flags: f})
	if err != nil {
		t.Fatalf("agent config: %v", err)
	}
	a, err := agent.New(rc, testutil.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := a.Start(ctx); err != nil {
		t.Fatalf("start agent: %v", err)
	}
	ta := &Agent{Agent: a, Config: rc}
	t.Cleanup(func() { ta.Stop() })
	if err := a.WaitForLeader(ctx); err != nil {
		t.Fatalf("agent has no leader: %v", err)
	}
	cfg := consulapi.DefaultConfig()
	cfg.Address = a.HTTPAddr()
	// Idle keep-alive connections would outlive the agent; close them.
	cfg.Transport.DisableKeepAlives = true
	ta.Client, err = consulapi.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return ta
}

// Stop shuts the agent down (idempotent).
func (a *Agent) Stop() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = a.Shutdown(ctx)
}

// sanitize makes a test name a valid node name.
func sanitize(s string) string {
	b := []byte(s)
	for i, c := range b {
		if !(c == '-' || c == '_' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) {
			b[i] = '-'
		}
	}
	if len(b) > 60 {
		b = b[:60]
	}
	return string(b)
}
