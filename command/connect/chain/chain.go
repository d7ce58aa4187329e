// Package chain holds `trellis connect chain SERVICE`, which shows the
// compiled discovery chain of a service: where requests and connections to
// it go, through its routers, splitters and resolvers, to which targets.
package chain

import (
	"encoding/json"
	"flag"
	"fmt"
	"strings"

	"github.com/hashicorp/cli"

	"github.com/trellismesh/trellis/command/flags"
)

const help = `
Usage: trellis connect chain [options] SERVICE

  Shows the discovery chain of SERVICE, compiled from its config entries
  (service-router, service-splitter, service-resolver, and the
  service-defaults that give its protocol): the node evaluation starts at,
  each router's routes in order (match -> next node), each splitter's
  shares (weight -> next node), each resolver's target, failover,
  timeouts and load balancing, and every target with its subset filter.

      $ trellis connect chain web
      $ trellis connect chain -format json db
`

type cmd struct {
	ui     cli.Ui
	fs     *flag.FlagSet
	http   flags.HTTPFlags
	format string
	help   string
}

// New returns `trellis connect chain`.
func New(ui cli.Ui) cli.Command {
	c := &cmd{ui: ui}
	own := flags.NewFlagSet("connect chain")
	own.StringVar(&c.format, "format", "text", "The output `format`: text, or json (the answer of GET /v1/discovery-chain/SERVICE: {\"Chain\": {...}}).")
	c.fs, c.help = flags.CommandFlagSet(&c.http, "connect chain", help, own, true)
	return c
}

func (c *cmd) Run(args []string) int {
	if ok, code := flags.Parse(c.ui, c.fs, args, c.help); !ok {
		return code
	}
	rest := c.fs.Args()
	if err := flags.LateFlag(rest, "the service name"); err != nil {
		c.usageError(err.Error())
		return 1
	}
	if len(rest) != 1 || rest[0] == "" {
		c.usageError(fmt.Sprintf("connect chain takes one argument, SERVICE (got %d)", len(rest)))
		return 1
	}
	if c.format != "text" && c.format != "json" {
		c.usageError(fmt.Sprintf("-format %q: want text or json", c.format))
		return 1
	}
	service := rest[0]
	client, err := c.http.APIClient()
	if err != nil {
		c.ui.Error("Error: " + err.Error())
		return 1
	}
	resp, _, err := client.DiscoveryChain().Get(service, c.http.QueryOptions())
	if err != nil {
		c.ui.Error(flags.ErrorMessage("reading the discovery chain of "+service, err))
		return 1
	}
	if resp == nil || resp.Chain == nil {
		c.ui.Error("Error: the agent answered no chain for " + service)
		return 1
	}
	if c.format == "json" {
		// The whole answer, {"Chain": {...}}, as GET /v1/discovery-chain/SERVICE gives it.
		b, err := json.MarshalIndent(resp, "", "    ")
		if err != nil {
			c.ui.Error("Error: encoding the chain: " + err.Error())
			return 1
		}
		c.ui.Output(string(b))
		return 0
	}
	c.ui.Output(strings.TrimRight(formatText(resp.Chain), "\n"))
	return 0
}

func (c *cmd) usageError(msg string) {
	c.ui.Error("Error: " + msg)
	c.ui.Error("")
	c.ui.Error(c.help)
}

func (c *cmd) Synopsis() string { return "Shows where traffic to a service goes" }

func (c *cmd) Help() string { return c.help }
