// Package testcluster starts real Trellis agents inside a test process, on
// free loopback ports, with their logs sent to the test. It is test-only.
package testcluster

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	consulapi "github.com/hashicorp/consul/api"

	"github.com/trellismesh/trellis/agent"
	"github.com/trellismesh/trellis/agent/config"
	"github.com/trellismesh/trellis/internal/authz"
	"github.com/trellismesh/trellis/internal/testutil"
)

// Options shape a test agent. Every agent runs with the -dev profile's
// fast timers; the options pick its role.
type Options struct {
	// Name is the node name; the test's name when empty.
	Name string
	// DataDir keeps the agent's state there (a restart on it resumes);
	// empty keeps it in memory.
	DataDir string
	// Client makes a client agent (no Raft); otherwise it is a server.
	Client bool
	// BootstrapExpect > 0 makes a server of a cluster of that many servers;
	// 0 (for a server) bootstraps alone.
	BootstrapExpect int
	// RetryJoin are gossip addresses to join.
	RetryJoin []string
	// BindIP is the loopback address the agent binds (default 127.0.0.1);
	// distinct addresses let a test cut traffic between agents.
	BindIP string
	// ServerPort and SerfPort fix those ports (a restart must keep the
	// server port; 0 picks one).
	ServerPort, SerfPort int
	// Production runs with the production timers (Raft, gossip) instead
	// of -dev's fast ones; it needs a DataDir (one is made when empty).
	Production bool
	// RaftMultiplier > 1 scales a server's Raft timers
	// (performance.raft_multiplier): StartCluster sets 3 for the servers
	// of a multi-server cluster.
	RaftMultiplier int
	// HCL is extra configuration, written to a file the agent loads.
	HCL string
	// Args are extra agent flags.
	Args []string
	// Authorizer, when set, decides the agent's requests (agent.SetAuthorizer).
	Authorizer authz.Authorizer
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
	ip := opts.BindIP
	if ip == "" {
		ip = "127.0.0.1"
	}
	args := []string{"-node", name, "-bind", ip, "-client", ip,
		"-http-port", "0", "-dns-port", "0", "-serf-lan-port", strconv.Itoa(opts.SerfPort),
		"-server-port", strconv.Itoa(opts.ServerPort)}
	if opts.Production && opts.DataDir == "" {
		opts.DataDir = t.TempDir()
	}
	if !opts.Production {
		args = append(args, "-dev")
	}
	if opts.DataDir != "" {
		args = append(args, "-data-dir", opts.DataDir)
	}
	switch {
	case opts.Client:
		args = append(args, "-server=false", "-bootstrap=false")
	case opts.BootstrapExpect > 0:
		args = append(args, "-server", "-bootstrap-expect", strconv.Itoa(opts.BootstrapExpect))
	case opts.Production:
		args = append(args, "-server", "-bootstrap")
	}
	for _, j := range opts.RetryJoin {
		args = append(args, "-retry-join", j)
	}
	if opts.RaftMultiplier > 0 {
		p := filepath.Join(t.TempDir(), "performance.hcl")
		if err := os.WriteFile(p, []byte(fmt.Sprintf("performance {\n  raft_multiplier = %d\n}\n", opts.RaftMultiplier)), 0o600); err != nil {
			t.Fatal(err)
		}
		args = append(args, "-config-file", p)
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
	if opts.Authorizer != nil {
		a.SetAuthorizer(opts.Authorizer)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := a.Start(ctx); err != nil {
		t.Fatalf("start agent: %v", err)
	}
	ta := &Agent{Agent: a, Config: rc}
	t.Cleanup(func() { ta.Stop() })
	if opts.BootstrapExpect == 0 && !opts.Client && len(opts.RetryJoin) == 0 {
		if err := a.WaitForLeader(ctx); err != nil {
			t.Fatalf("agent has no leader: %v", err)
		}
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
