// Package leave is the `trellis leave` command.
package leave

import (
	"flag"

	"github.com/hashicorp/cli"

	"github.com/trellismesh/trellis/command/flags"
)

const synopsis = "Makes an agent leave the cluster gracefully and stop"

const help = `
Usage: trellis leave [options]

  Makes the agent leave the cluster and stop. A server first leaves the Raft
  configuration (handing leadership over when it leads), so the remaining
  servers keep their quorum; then the agent tells the others it leaves, so
  its node is removed from the catalog instead of turning critical. A server
  then keeps answering for performance.leave_drain_time (5s by default), so
  that requests on their way to it do not fail, before it stops.

      $ trellis leave
      $ trellis leave -http-addr=10.0.0.5:8500
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
	c.fs = flags.NewFlagSet("leave")
	hf := c.http.ClientFlags()
	c.help = flags.Usage(help, flags.Group{Title: "HTTP API Options", Flags: hf})
	flags.Merge(c.fs, hf)
	return c
}

func (c *cmd) Run(args []string) int {
	if ok, code := flags.Parse(c.ui, c.fs, args, c.help); !ok {
		return code
	}
	if c.fs.NArg() > 0 {
		c.ui.Error("Error: leave takes no arguments")
		return 1
	}
	client, err := c.http.APIClient()
	if err != nil {
		c.ui.Error("Error: " + err.Error())
		return 1
	}
	if err := client.Agent().Leave(); err != nil {
		c.ui.Error(flags.ErrorMessage("leaving", err))
		return 1
	}
	c.ui.Output("Graceful leave complete")
	return 0
}

func (c *cmd) Synopsis() string { return synopsis }
func (c *cmd) Help() string     { return c.help }
