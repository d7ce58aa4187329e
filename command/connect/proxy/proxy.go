// Package proxy is the `trellis connect proxy` command: the sidecar proxy of
// a service registered on the local agent (connect/proxy, the same data
// plane the agent runs), run as a process of its own.
//
// The command learns everything from the agent's HTTP API, through the api
// package: the sidecar's registration (GET /v1/agent/services), the leaf
// certificate of the service it fronts, the CA roots, the intentions whose
// destination is that service, and the healthy mesh endpoints of each
// upstream. Each of the last four is a blocking query run in a loop, so a
// change reaches the proxy as soon as the agent knows it: a new leaf is
// swapped in atomically, new roots re-verify the open tunnels, new
// intentions re-authorize them (connections are decided in memory, never by
// a request per connection), new endpoints rebalance the upstreams. When the
// agent does not answer, the proxy keeps the values it last had and retries
// with backoff, logging once per outage.
package proxy

import (
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"github.com/hashicorp/cli"
	"github.com/hashicorp/go-hclog"

	"github.com/trellismesh/trellis/api"
	"github.com/trellismesh/trellis/command/flags"
)

// ExternalKey in a sidecar's proxy config, set to "true", leaves the proxy
// to this command; the agent does not run it. It is the key of
// agent/proxymgr, which this package may not import.
const ExternalKey = "external"

// kindConnectProxy is the Kind of a sidecar proxy service.
const kindConnectProxy = "connect-proxy"

// BindAddressKey in a sidecar's proxy config is the IP the public listener
// binds when the sidecar registration has no address (Consul's key).
const BindAddressKey = "bind_address"

const synopsis = "Runs a sidecar proxy outside the agent"

const help = `
Usage: trellis connect proxy -sidecar-for=ID [options]

  Runs the sidecar proxy of the service with ID, registered on the local
  agent, as a process of its own instead of inside the agent: for example
  to give the proxy its own user, limits or restarts. It is the same proxy
  the agent runs: a public mTLS listener that authorizes callers with the
  intentions and forwards to the service, and a local listener per
  upstream.

  The proxy takes everything from the agent's HTTP API and follows its
  changes: the leaf certificate (renewed and rotated), the CA roots, the
  intentions (a change applies within a second, to open connections too),
  and the healthy instances of each upstream. If the agent stops
  answering for a while, the proxy goes on with what it last had.

  The sidecar must say that it runs outside the agent, or the agent runs it
  too and the two clash on its port:

      service {
        name = "api"
        port = 8080
        connect {
          sidecar_service {
            proxy {
              config { external = "true" }
            }
          }
        }
      }

      $ trellis services register api.hcl
      $ trellis connect proxy -sidecar-for=api

  The public listener binds the sidecar's address and port as registered
  (with no address: proxy config bind_address, else the agent's address).
  Interrupt (Ctrl-C) or SIGTERM stops the proxy; it exits with 0.
`

type cmd struct {
	ui   cli.Ui
	fs   *flag.FlagSet
	http flags.HTTPFlags
	help string

	sidecarFor string
	logLevel   string
	logJSON    bool
}

// New returns `trellis connect proxy`.
func New(ui cli.Ui) cli.Command {
	c := &cmd{ui: ui}
	own := flags.NewFlagSet("connect proxy")
	own.StringVar(&c.sidecarFor, "sidecar-for", "",
		"The `ID` of the service, registered on the local agent, whose sidecar proxy to run. Required.")
	own.StringVar(&c.logLevel, "log-level", "info", "The `level` of the logs: trace, debug, info, warn or error. Defaults to info.")
	own.BoolVar(&c.logJSON, "log-json", false, "Write the logs as JSON lines.")
	hf := c.http.ClientFlags()
	c.help = flags.Usage(help,
		flags.Group{Title: "HTTP API Options", Flags: hf},
		flags.Group{Title: "Command Options", Flags: own})
	flags.Merge(own, hf)
	c.fs = own
	return c
}

func (c *cmd) Synopsis() string { return synopsis }
func (c *cmd) Help() string     { return c.help }

func (c *cmd) Run(args []string) int {
	if ok, code := flags.Parse(c.ui, c.fs, args, c.help); !ok {
		return code
	}
	if c.fs.NArg() > 0 {
		c.ui.Error(fmt.Sprintf("Error: unexpected arguments %q: connect proxy takes only flags", c.fs.Args()))
		return 1
	}
	if c.sidecarFor == "" {
		c.ui.Error("Error: -sidecar-for is required: the ID of the service whose sidecar proxy to run")
		c.ui.Error("")
		c.ui.Error(c.help)
		return 1
	}
	level := hclog.LevelFromString(c.logLevel)
	if level == hclog.NoLevel {
		c.ui.Error(fmt.Sprintf("Error: -log-level %q: want trace, debug, info, warn or error", c.logLevel))
		return 1
	}
	client, err := c.http.APIClient()
	if err != nil {
		c.ui.Error("Error: " + err.Error())
		return 1
	}
	logger := hclog.New(&hclog.LoggerOptions{Name: "connect-proxy", Level: level, JSONFormat: c.logJSON, Output: os.Stderr})

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	sidecar, err := findSidecar(client, c.sidecarFor)
	if err != nil {
		c.ui.Error("Error: " + err.Error())
		return 1
	}
	agentInfo, err := readAgent(client)
	if err != nil {
		c.ui.Error("Error: " + err.Error())
		return 1
	}
	spec, err := specOf(sidecar, agentInfo)
	if err != nil {
		c.ui.Error("Error: " + err.Error())
		return 1
	}
	if !agentInfo.policyKnown {
		logger.Warn("the agent does not say its default intention policy; connections no intention matches are denied",
			"agent", client.Address())
	}
	if err := run(ctx, runConfig{Client: client, Spec: spec, Logger: logger, OnStop: stop}); err != nil {
		c.ui.Error("Error: " + err.Error())
		return 1
	}
	return 0
}

// findSidecar returns the local service of kind connect-proxy whose
// destination service ID is id, if it is marked external.
func findSidecar(client *api.Client, id string) (*api.AgentService, error) {
	svcs, err := client.Agent().Services()
	if err != nil {
		return nil, fmt.Errorf("read the services of the agent at %s: %w", client.Address(), err)
	}
	var found []*api.AgentService
	for _, s := range svcs {
		if s.Kind == kindConnectProxy && s.Proxy != nil && s.Proxy.DestinationServiceID == id {
			found = append(found, s)
		}
	}
	slices.SortFunc(found, func(a, b *api.AgentService) int { return strings.Compare(a.ID, b.ID) })
	switch {
	case len(found) > 1:
		ids := make([]string, 0, len(found))
		for _, s := range found {
			ids = append(ids, s.ID)
		}
		return nil, fmt.Errorf("-sidecar-for %q: %d sidecar proxies front that service (%s); deregister all but one", id, len(found), strings.Join(ids, ", "))
	case len(found) == 0:
		s := svcs[id]
		switch {
		case s == nil:
			return nil, fmt.Errorf("-sidecar-for %q: no service with that ID is registered on the agent at %s", id, client.Address())
		case s.Kind == kindConnectProxy && s.Proxy != nil:
			return nil, fmt.Errorf("-sidecar-for %q: that is a sidecar proxy itself; give the ID of the service it fronts: -sidecar-for=%s", id, s.Proxy.DestinationServiceID)
		default:
			return nil, fmt.Errorf("-sidecar-for %q: the service has no sidecar proxy; register it with connect { sidecar_service { proxy { config { external = \"true\" } } } }", id)
		}
	}
	sc := found[0]
	if !isExternal(sc) {
		return nil, fmt.Errorf("-sidecar-for %q: its sidecar %q is run by the agent itself; set proxy { config { external = \"true\" } } in the sidecar_service of %q and register it again, or the two proxies clash on port %d",
			id, sc.ID, id, sc.Port)
	}
	return sc, nil
}

// isExternal reports whether a sidecar is left to this command.
func isExternal(s *api.AgentService) bool {
	v, ok := s.Proxy.Config[ExternalKey]
	return ok && fmt.Sprint(v) == "true"
}

// agentInfo is what the command reads once from /v1/agent/self.
type agentInfo struct {
	// addr is the agent's address, where the public listener binds when the
	// sidecar names none.
	addr string
	// defaultAllow is the default intention policy; policyKnown is false
	// when the agent does not say it (then it is deny).
	defaultAllow, policyKnown bool
}

func readAgent(client *api.Client) (agentInfo, error) {
	self, err := client.Agent().Self()
	if err != nil {
		return agentInfo{}, fmt.Errorf("read /v1/agent/self of the agent at %s: %w", client.Address(), err)
	}
	var in agentInfo
	in.addr, _ = self["Member"]["Addr"].(string)
	switch p, _ := self["Config"]["DefaultIntentionPolicy"].(string); p {
	case "allow":
		in.defaultAllow, in.policyKnown = true, true
	case "deny":
		in.policyKnown = true
	}
	return in, nil
}

// spec is what the proxy is made from.
type spec struct {
	// ProxyID is the sidecar's service ID.
	ProxyID string
	// Service is the name of the service the proxy fronts.
	Service string
	// PublicAddr is where the public listener binds.
	PublicAddr string
	// LocalAppAddr is the address of the service the proxy forwards to.
	LocalAppAddr string
	// Upstreams are the services the application dials through the proxy.
	Upstreams []api.Upstream
	// DefaultAllow is the default intention policy.
	DefaultAllow bool
}

func specOf(sc *api.AgentService, in agentInfo) (spec, error) {
	p := sc.Proxy
	if p.DestinationServiceName == "" {
		return spec{}, fmt.Errorf("sidecar %q names no destination service", sc.ID)
	}
	if sc.Port <= 0 {
		return spec{}, fmt.Errorf("sidecar %q has no port for its public listener", sc.ID)
	}
	if p.LocalServicePort <= 0 {
		return spec{}, fmt.Errorf("sidecar %q has no local_service_port to forward to", sc.ID)
	}
	host := sc.Address
	if host == "" {
		if v, ok := p.Config[BindAddressKey]; ok {
			host = fmt.Sprint(v)
			if net.ParseIP(host) == nil {
				return spec{}, fmt.Errorf("sidecar %q: proxy config %s %q is not an IP address", sc.ID, BindAddressKey, host)
			}
		}
	}
	if host == "" {
		host = in.addr
	}
	if host == "" {
		host = "0.0.0.0"
	}
	app := p.LocalServiceAddress
	if app == "" {
		app = "127.0.0.1"
	}
	seen := map[string]bool{}
	for _, u := range p.Upstreams {
		if u.DestinationName == "" {
			return spec{}, fmt.Errorf("sidecar %q: an upstream names no destination", sc.ID)
		}
		if seen[u.DestinationName] {
			return spec{}, fmt.Errorf("sidecar %q: upstream %q appears twice", sc.ID, u.DestinationName)
		}
		seen[u.DestinationName] = true
	}
	return spec{
		ProxyID: sc.ID, Service: p.DestinationServiceName,
		PublicAddr:   net.JoinHostPort(host, strconv.Itoa(sc.Port)),
		LocalAppAddr: net.JoinHostPort(app, strconv.Itoa(p.LocalServicePort)),
		Upstreams:    slices.Clone(p.Upstreams), DefaultAllow: in.defaultAllow,
	}, nil
}
