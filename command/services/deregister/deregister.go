// Package deregister is the `trellis services deregister` command.
package deregister

import (
	"flag"
	"fmt"

	"github.com/hashicorp/cli"

	"github.com/trellismesh/trellis/agent/config"
	"github.com/trellismesh/trellis/command/flags"
)

const synopsis = "Deregisters services from the local agent"

const help = `
Usage: trellis services deregister [options] [FILE...]

  Deregisters services from the agent, by ID or by the service definition
  files they were registered from. Their checks go with them.

      $ trellis services deregister -id=web
      $ trellis services deregister web.hcl
`

type cmd struct {
	ui   cli.Ui
	fs   *flag.FlagSet
	http flags.HTTPFlags
	help string
	id   flags.OnceString
}

// New returns the command.
func New(ui cli.Ui) cli.Command {
	c := &cmd{ui: ui}
	own := flags.NewFlagSet("services deregister")
	own.Var(&c.id, "id", "The `ID` of the service to deregister; give it once (for several services, give their files, or run a command each).")
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
	var ids []string
	switch {
	case c.id.Value != "" && len(files) > 0:
		c.ui.Error("Error: give -id or service definition files, not both")
		return 1
	case c.id.Value != "":
		ids = []string{c.id.Value}
	case len(files) == 0:
		c.ui.Error("Error: give -id or at least one service definition file")
		c.ui.Error("")
		c.ui.Error(c.help)
		return 1
	default:
		for _, f := range files {
			defs, err := config.ParseServiceFile(f)
			if err != nil {
				c.ui.Error("Error: " + err.Error())
				return 1
			}
			for _, d := range defs {
				ids = append(ids, d.ID)
			}
		}
	}
	client, err := c.http.APIClient()
	if err != nil {
		c.ui.Error("Error: " + err.Error())
		return 1
	}
	for _, id := range ids {
		if err := client.Agent().ServiceDeregister(id); err != nil {
			c.ui.Error(flags.ErrorMessage(fmt.Sprintf("deregistering service %q", id), err))
			return 1
		}
		c.ui.Output("Deregistered service: " + id)
	}
	return 0
}

func (c *cmd) Synopsis() string { return synopsis }
func (c *cmd) Help() string     { return c.help }
