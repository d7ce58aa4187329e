// Package removepeer is the `trellis operator raft remove-peer` command.
package removepeer

import (
	"flag"

	"github.com/hashicorp/cli"

	"github.com/trellismesh/trellis/command/flags"
)

const synopsis = "Removes a server from the Raft configuration"

const help = `
Usage: trellis operator raft remove-peer [options] -id=ID | -address=HOST:PORT

  Removes a server from the Raft configuration, by its ID or its server
  address (see trellis operator raft list-peers). Use it for a server that
  failed for good: a server that leaves with trellis leave, or that is
  reaped after reconnect_timeout, is removed by the leader itself. A server
  that is still alive is added back by the leader.

      $ trellis operator raft remove-peer -address=10.0.0.7:8300
`

type cmd struct {
	ui          cli.Ui
	fs          *flag.FlagSet
	http        flags.HTTPFlags
	help        string
	id, address string
}

// New returns the command.
func New(ui cli.Ui) cli.Command {
	c := &cmd{ui: ui}
	own := flags.NewFlagSet("operator raft remove-peer")
	own.StringVar(&c.id, "id", "", "The Raft `ID` of the server to remove.")
	own.StringVar(&c.address, "address", "", "The server `address` (host:port) of the server to remove.")
	hf := c.http.ClientFlags()
	c.help = flags.Usage(help, flags.Group{Title: "HTTP API Options", Flags: hf}, flags.Group{Title: "Command Options", Flags: own})
	flags.Merge(own, hf)
	c.fs = own
	return c
}

func (c *cmd) Run(args []string) int {
	if ok, code := flags.Parse(c.ui, c.fs, args, c.help); !ok {
		return code
	}
	if (c.id == "") == (c.address == "") || c.fs.NArg() > 0 {
		c.ui.Error("Error: give -id or -address, not both")
		return 1
	}
	client, err := c.http.APIClient()
	if err != nil {
		c.ui.Error("Error: " + err.Error())
		return 1
	}
	if c.id != "" {
		err = client.Operator().RaftRemovePeerByID(c.id)
	} else {
		err = client.Operator().RaftRemovePeerByAddress(c.address)
	}
	if err != nil {
		c.ui.Error(flags.ErrorMessage("removing the peer", err))
		return 1
	}
	if c.id != "" {
		c.ui.Output("Removed peer with ID " + c.id)
	} else {
		c.ui.Output("Removed peer with address " + c.address)
	}
	return 0
}

func (c *cmd) Synopsis() string { return synopsis }
func (c *cmd) Help() string     { return c.help }
