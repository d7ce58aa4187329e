// Package agent is the `trellis agent` command: it loads the configuration,
// runs an agent until a signal, and shuts it down.
package agent

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/hashicorp/cli"
	"github.com/hashicorp/go-hclog"

	"github.com/trellismesh/trellis/agent"
	"github.com/trellismesh/trellis/agent/config"
	"github.com/trellismesh/trellis/command/flags"
	"github.com/trellismesh/trellis/internal/heapfloor"
	"github.com/trellismesh/trellis/internal/procs"
	"github.com/trellismesh/trellis/version"
)

const synopsis = "Runs a Trellis agent"

const help = `
Usage: trellis agent [options]

  Starts an agent and runs it until interrupted. An agent holds the services
  registered on it, runs their health checks, and answers the HTTP API and
  DNS; a server agent also keeps the cluster's state in Raft.

  A development agent needs no configuration: a single in-memory server on
  127.0.0.1 (HTTP API :8500, DNS :8600).

      $ trellis agent -dev

  A server with its configuration in files:

      $ trellis agent -config-dir=/etc/trellis.d

  Interrupt (Ctrl-C) or SIGTERM stops the agent gracefully; a second one
  stops it at once.
`

// shutdownTimeout bounds a graceful shutdown.
const shutdownTimeout = 15 * time.Second

type cmd struct {
	ui   cli.Ui
	fs   *flag.FlagSet
	f    config.Flags
	help string
}

// New returns the agent command.
func New(ui cli.Ui) cli.Command {
	c := &cmd{ui: ui}
	c.fs = flags.NewFlagSet("agent")
	config.AddFlags(c.fs, &c.f)
	c.help = flags.Usage(help, flags.Group{Title: "Options", Flags: c.fs})
	return c
}

func (c *cmd) Run(args []string) int {
	if ok, code := flags.Parse(c.ui, c.fs, args, c.help); !ok {
		return code
	}
	if c.fs.NArg() > 0 {
		c.ui.Error(fmt.Sprintf("Error: unexpected arguments %q: the agent takes only flags", c.fs.Args()))
		return 1
	}
	if err := checkPaths(c.f.ConfigFiles, c.f.ConfigDirs); err != nil {
		c.ui.Error("Error in configuration:\n" + err.Error())
		return 1
	}
	rc, warnings, err := config.Load(config.LoadOpts{Flags: c.f})
	if err != nil {
		c.ui.Error("Error in configuration:\n" + err.Error())
		return 1
	}
	level := hclog.LevelFromString(rc.LogLevel)
	logger := hclog.New(&hclog.LoggerOptions{
		Name: "agent", Level: level, JSONFormat: rc.LogJSON, Output: os.Stderr,
	})
	for _, w := range warnings {
		logger.Warn(w)
	}
	// Fewer garbage collections while the heap is small: they made the
	// proxies' tail latency (website/performance.md).
	gc := heapfloor.Start(heapfloor.DefaultFloor, logger.Named("gc"))
	defer gc.Stop()
	// One scheduler processor while the agent is lightly loaded: fewer
	// wake-ups of idle threads per request (website/performance.md).
	sched := procs.Start(logger.Named("procs"))
	defer sched.Stop()

	// A signal during start cancels it; after start, the first signal
	// shuts down gracefully and a second one exits at once.
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(sigs)
	startCtx, cancelStart := context.WithCancel(context.Background())
	defer cancelStart()
	go func() {
		select {
		case <-sigs:
			cancelStart()
		case <-startCtx.Done():
		}
	}()

	a, err := agent.New(rc, logger)
	if err != nil {
		c.ui.Error("Error: " + err.Error())
		return 1
	}
	if err := a.Start(startCtx); err != nil {
		c.ui.Error("Error starting agent: " + err.Error())
		return 1
	}
	cancelStart()
	c.banner(rc, a)

	for {
		var sig os.Signal
		select {
		case <-a.ShutdownCh():
			logger.Info("agent stopped after leaving the cluster")
			return 0
		case sig = <-sigs:
		}
		if sig == syscall.SIGHUP {
			logger.Warn("configuration reload (SIGHUP) is not supported yet; restart the agent to apply changes")
			continue
		}
		logger.Info("caught signal; shutting down", "signal", sig.String())
		ctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
		done := make(chan error, 1)
		go func() {
			// A client leaves the cluster on the way out, so its node is
			// removed instead of turning critical; a server does not, so a
			// restart keeps the Raft quorum (use trellis leave to retire one).
			if rc.Server {
				done <- a.Shutdown(ctx)
			} else {
				done <- a.LeaveAndShutdown(ctx)
			}
		}()
		select {
		case err := <-done:
			cancel()
			if err != nil {
				logger.Error("shutdown", "error", err)
				return 1
			}
			return 0
		case sig := <-sigs:
			cancel()
			logger.Warn("caught a second signal; exiting at once", "signal", sig.String())
			return 1
		}
	}
}

// checkPaths refuses a -config-file or -config-dir that is missing or of
// the other kind, in words, before the configuration is loaded.
func checkPaths(files, dirs []string) error {
	check := func(flagName, p string, wantDir bool) error {
		fi, err := os.Stat(p)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			return fmt.Errorf("%s %s: no such file", flagName, p)
		case errors.Is(err, fs.ErrPermission):
			return fmt.Errorf("%s %s: permission denied", flagName, p)
		case err != nil:
			return nil // left to the loader, which says why
		case wantDir && !fi.IsDir():
			return fmt.Errorf("%s %s is not a directory: give a file with -config-file", flagName, p)
		case !wantDir && fi.IsDir():
			return fmt.Errorf("%s %s is a directory: give it with -config-dir", flagName, p)
		}
		return nil
	}
	for _, f := range files {
		if err := check("-config-file", f, false); err != nil {
			return err
		}
	}
	for _, d := range dirs {
		if err := check("-config-dir", d, true); err != nil {
			return err
		}
	}
	return nil
}

func (c *cmd) banner(rc config.RuntimeConfig, a *agent.Agent) {
	mode := "client"
	switch {
	case rc.Server && rc.DevMode && rc.DataDir == "":
		mode = "server (development mode: state is in memory and lost on exit)"
	case rc.Server:
		mode = "server"
	}
	lines := []string{
		"Trellis agent running!",
		"           Version: " + version.String(),
		"         Node name: " + rc.NodeName,
		"           Node ID: " + rc.NodeID,
		"        Datacenter: " + rc.Datacenter,
		"              Mode: " + mode,
		"       Gossip port: " + a.GossipAddr(),
	}
	if addr := a.ServerAddr(); addr != "" {
		lines = append(lines, "       Server port: "+addr)
		if rc.RaftMultiplier > 1 {
			lines = append(lines, fmt.Sprintf("   Raft multiplier: %d (a failed leader is noticed %d× later)", rc.RaftMultiplier, rc.RaftMultiplier))
		}
	}
	if addr := a.HTTPAddr(); addr != "" {
		lines = append(lines, "          HTTP API: http://"+addr)
	}
	if addr := a.DNSAddr(); addr != "" {
		lines = append(lines, "               DNS: "+addr+" (domain "+rc.DNSDomain+")")
	}
	if rc.DataDir != "" {
		lines = append(lines, "          Data dir: "+rc.DataDir)
	}
	lines = append(lines, "              Mesh: "+a.MeshStatus())
	if rc.ConnectEnabled && rc.DefaultIntentionAllow && !rc.DevMode {
		lines = append(lines, "                    (warning: every service may call every other unless an intention denies it)")
	} else if rc.ConnectEnabled && rc.DefaultIntentionAllow {
		lines = append(lines, "                    (-dev allows every call unless an intention denies it; production defaults to deny)")
	}
	c.ui.Output(strings.Join(lines, "\n") + "\n")
}

func (c *cmd) Synopsis() string { return synopsis }
func (c *cmd) Help() string     { return c.help }
