// Package join is the `trellis join` command.
package join

import (
	"flag"
	"fmt"

	"github.com/hashicorp/cli"

	"github.com/trellismesh/trellis/command/flags"
)

const synopsis = "Tells an agent to join the cluster"

const help = `
Usage: trellis join [options] ADDRESS...

  Tells the agent to join the cluster through the agents at the given
  gossip addresses (host, or host:port; the port defaults to the agent's
  own gossip port, 8301). One agent answering is enough: membership spreads
  by gossip. Agents set with retry_join do this by themselves at start.

      $ trellis join 10.0.0.5
      $ trellis join 10.0.0.5:8301 10.0.0.6
`

type cmd struct {
	ui   cli.Ui
	fs   *flag.FlagSet
	http flags.HTTPFlags
	help string
}

// New returns the command.
func New(ui cli.Ui) cli.Command {
	c := &cmd{ui: ui}
	c.fs = flags.NewFlagSet("join")
	hf := c.http.ClientFlags()
	c.help = flags.Usage(help, flags.Group{Title: "HTTP API Options", Flags: hf})
	flags.Merge(c.fs, hf)
	return c
}

func (c *cmd) Run(args []string) int {
	addrs, ok, code := flags.ParseArgs(c.ui, c.fs, args, c.help, "the addresses")
	if !ok {
		return code
	}
	if len(addrs) == 0 {
		c.ui.Error("Error: give at least one address to join")
		c.ui.Error("")
		c.ui.Error(c.help)
		return 1
	}
	client, err := c.http.APIClient()
	if err != nil {
		c.ui.Error("Error: " + err.Error())
		return 1
	}
	joined := 0
	for _, a := range addrs {
		if err := client.Agent().Join(a); err != nil {
			c.ui.Error(flags.ErrorMessage("joining "+a, err))
			continue
		}
		joined++
	}
	if joined == 0 {
		return 1
	}
	c.ui.Output(fmt.Sprintf("Successfully joined cluster by contacting %d agents.", joined))
	return 0
}

func (c *cmd) Synopsis() string { return synopsis }
func (c *cmd) Help() string     { return c.help }
