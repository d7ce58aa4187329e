// Package register is the `trellis services register` command.
package register

import (
	"flag"
	"fmt"
	"maps"
	"time"

	"github.com/hashicorp/cli"

	"github.com/trellismesh/trellis/agent/config"
	"github.com/trellismesh/trellis/api"
	"github.com/trellismesh/trellis/command/flags"
)

const synopsis = "Registers services with the local agent"

const help = `
Usage: trellis services register [options] [FILE...]

  Registers services with the agent, from service definition files (HCL or
  JSON holding service { ... } blocks) or from flags for a single service.
  The agent runs their checks and keeps the catalog in step. Registering a
  service again with the same ID replaces it.

      $ trellis services register web.hcl
      $ trellis services register -name=web -port=8080 -tag=v1
`

type cmd struct {
	ui      cli.Ui
	fs      *flag.FlagSet
	http    flags.HTTPFlags
	help    string
	id      string
	name    string
	address string
	port    int
	tags    flags.StringSlice
	meta    flags.StringSlice
}

// New returns the command.
func New(ui cli.Ui) cli.Command {
	c := &cmd{ui: ui}
	own := flags.NewFlagSet("services register")
	own.StringVar(&c.id, "id", "", "The `ID` of the service (with -name); defaults to the name.")
	own.StringVar(&c.name, "name", "", "The `name` of a service to register without a file.")
	own.StringVar(&c.address, "address", "", "The `address` of the service (with -name); defaults to the node's.")
	own.IntVar(&c.port, "port", 0, "The `port` of the service (with -name).")
	own.Var(&c.tags, "tag", "A `tag` of the service (with -name); may be repeated.")
	own.Var(&c.meta, "meta", "A `key=value` pair of service metadata (with -name); may be repeated.")
	hf := c.http.ClientFlags()
	c.help = flags.Usage(help, flags.Group{Title: "HTTP API Options", Flags: hf}, flags.Group{Title: "Command Options", Flags: own})
	flags.Merge(own, hf)
	c.fs = own
	return c
}

func (c *cmd) Run(args []string) int {
	files, ok, code := flags.ParseArgs(c.ui, c.fs, args, c.help, "the files")
	if !ok {
		return code
	}
	var defs []config.ServiceDefinition
	switch {
	case c.name != "" && len(files) > 0:
		c.ui.Error("Error: give service definition files or -name, not both")
		return 1
	case c.name != "":
		meta, err := flags.KeyValues("-meta", c.meta)
		if err != nil {
			c.ui.Error("Error: " + err.Error())
			return 1
		}
		if meta == nil {
			meta = map[string]string{}
		}
		id := c.id
		if id == "" {
			id = c.name
		}
		defs = append(defs, config.ServiceDefinition{ID: id, Name: c.name, Address: c.address, Port: c.port, Tags: c.tags, Meta: meta})
	case len(files) == 0:
		c.ui.Error("Error: give at least one service definition file, or -name")
		c.ui.Error("")
		c.ui.Error(c.help)
		return 1
	case c.id != "" || c.address != "" || c.port != 0 || len(c.tags) > 0 || len(c.meta) > 0:
		c.ui.Error("Error: -id, -address, -port, -tag and -meta go with -name, not with files")
		return 1
	default:
		// Parse every file before registering anything.
		for _, f := range files {
			d, err := config.ParseServiceFile(f)
			if err != nil {
				c.ui.Error("Error: " + err.Error())
				return 1
			}
			defs = append(defs, d...)
		}
	}
	client, err := c.http.APIClient()
	if err != nil {
		c.ui.Error("Error: " + err.Error())
		return 1
	}
	for _, d := range defs {
		if err := client.Agent().ServiceRegister(registration(d)); err != nil {
			c.ui.Error(flags.ErrorMessage(fmt.Sprintf("registering service %q", d.ID), err))
			return 1
		}
		c.ui.Output(fmt.Sprintf("Registered service: %s", d.ID))
	}
	return 0
}

// registration turns a definition into the agent API's registration.
func registration(d config.ServiceDefinition) *api.AgentServiceRegistration {
	reg := &api.AgentServiceRegistration{
		Kind: d.Kind, ID: d.ID, Name: d.Name, Tags: d.Tags, Port: d.Port, Address: d.Address,
		EnableTagOverride: d.EnableTagOverride, Meta: maps.Clone(d.Meta),
	}
	if d.Weights != nil {
		reg.Weights = &api.AgentWeights{Passing: d.Weights.Passing, Warning: d.Weights.Warning}
	}
	if len(d.TaggedAddresses) > 0 {
		reg.TaggedAddresses = map[string]api.ServiceAddress{}
		for k, v := range d.TaggedAddresses {
			reg.TaggedAddresses[k] = api.ServiceAddress{Address: v.Address, Port: v.Port}
		}
	}
	reg.Proxy = proxyConfig(d.Proxy)
	if c := d.Connect; c != nil {
		reg.Connect = &api.AgentServiceConnect{Native: c.Native}
		if sc := c.SidecarService; sc != nil {
			reg.Connect.SidecarService = &api.AgentServiceRegistration{
				ID: sc.ID, Name: sc.Service, Port: sc.Port, Address: sc.Address, Tags: sc.Tags, Meta: maps.Clone(sc.Meta),
				Proxy: proxyConfig(sc.Proxy),
			}
		}
	}
	for _, ch := range d.Checks {
		reg.Checks = append(reg.Checks, &api.AgentServiceCheck{
			CheckID: ch.ID, Name: ch.Name, Notes: ch.Notes, Status: ch.Status,
			HTTP: ch.HTTP, Method: ch.Method, Header: ch.Header, Body: ch.Body, TLSSkipVerify: ch.TLSSkipVerify, TCP: ch.TCP,
			TTL: durationString(ch.TTL), Interval: durationString(ch.Interval), Timeout: durationString(ch.Timeout),
			DeregisterCriticalServiceAfter: durationString(ch.DeregisterCriticalServiceAfter),
			SuccessBeforePassing:           ch.SuccessBeforePassing, FailuresBeforeCritical: ch.FailuresBeforeCritical,
		})
	}
	return reg
}

// proxyConfig is the API form of a proxy configuration.
func proxyConfig(p *config.ProxyConfig) *api.AgentServiceConnectProxyConfig {
	if p == nil {
		return nil
	}
	out := &api.AgentServiceConnectProxyConfig{
		DestinationServiceName: p.DestinationServiceName, DestinationServiceID: p.DestinationServiceID,
		LocalServiceAddress: p.LocalServiceAddress, LocalServicePort: p.LocalServicePort,
	}
	for k, v := range p.Config {
		if out.Config == nil {
			out.Config = map[string]any{}
		}
		out.Config[k] = v
	}
	for _, u := range p.Upstreams {
		out.Upstreams = append(out.Upstreams, api.Upstream{DestinationName: u.DestinationName, Datacenter: u.Datacenter, LocalBindAddress: u.LocalBindAddress, LocalBindPort: u.LocalBindPort})
	}
	return out
}

// durationString writes a duration as the API takes it; "" for none.
func durationString(d time.Duration) string {
	if d == 0 {
		return ""
	}
	return d.String()
}

func (c *cmd) Synopsis() string { return synopsis }
func (c *cmd) Help() string     { return c.help }
