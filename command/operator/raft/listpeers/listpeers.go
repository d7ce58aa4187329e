// Package listpeers is the `trellis operator raft list-peers` command.
package listpeers

import (
	"flag"
	"fmt"
	"strings"
	"text/tabwriter"

	"github.com/hashicorp/cli"

	"github.com/trellismesh/trellis/command/flags"
)

const synopsis = "Lists the servers of the Raft configuration"

const help = `
Usage: trellis operator raft list-peers [options]

  Lists the servers in the Raft configuration, which one leads, and which
  vote.

      $ trellis operator raft list-peers
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
	own := flags.NewFlagSet("operator raft list-peers")
	hf, sf := c.http.ClientFlags(), c.http.ServerFlags()
	c.help = flags.Usage(help, flags.Group{Title: "HTTP API Options", Flags: hf}, flags.Group{Title: "Query Options", Flags: sf})
	flags.Merge(own, hf)
	flags.Merge(own, sf)
	c.fs = own
	return c
}

func (c *cmd) Run(args []string) int {
	if ok, code := flags.Parse(c.ui, c.fs, args, c.help); !ok {
		return code
	}
	if c.fs.NArg() > 0 {
		c.ui.Error("Error: list-peers takes no arguments")
		return 1
	}
	client, err := c.http.APIClient()
	if err != nil {
		c.ui.Error("Error: " + err.Error())
		return 1
	}
	conf, err := client.Operator().RaftGetConfiguration(c.http.QueryOptions())
	if err != nil {
		c.ui.Error(flags.ErrorMessage("reading the Raft configuration", err))
		return 1
	}
	var b strings.Builder
	w := tabwriter.NewWriter(&b, 0, 8, 2, ' ', 0)
	fmt.Fprintln(w, "Node\tID\tAddress\tState\tVoter")
	for _, s := range conf.Servers {
		state := "follower"
		if s.Leader {
			state = "leader"
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%t\n", s.Node, s.ID, s.Address, state, s.Voter)
	}
	w.Flush()
	c.ui.Output(strings.TrimRight(b.String(), "\n"))
	return 0
}

func (c *cmd) Synopsis() string { return synopsis }
func (c *cmd) Help() string     { return c.help }
