package config

import (
	"github.com/hashicorp/cli"

	"github.com/trellismesh/trellis/command/flags"
)

const listHelp = `
Usage: trellis config list [options] -kind KIND

  Lists the names of the config entries of KIND, one a line.

      $ trellis config list -kind service-resolver
`

type listCmd struct {
	base
	kind string
}

// NewList returns `trellis config list`.
func NewList(ui cli.Ui) cli.Command {
	c := &listCmd{}
	own := flags.NewFlagSet("config list")
	own.StringVar(&c.kind, "kind", "", "The `kind` of entries to list: proxy-defaults, service-defaults, service-router, service-splitter, service-resolver or service-intentions.")
	c.init(ui, "config list", listHelp, own, true)
	return c
}

func (c *listCmd) Run(args []string) int {
	if ok, code := flags.Parse(c.ui, c.fs, args, c.help); !ok {
		return code
	}
	if err := noArgs(c.fs, "config list"); err != nil {
		c.argsError(err)
		return 1
	}
	if err := checkKindName(c.kind, "", false); err != nil {
		c.argsError(err)
		return 1
	}
	client, ok := c.client()
	if !ok {
		return 1
	}
	entries, _, err := client.ConfigEntries().List(c.kind, c.http.QueryOptions())
	if err != nil {
		c.ui.Error(flags.ErrorMessage("listing the config entries of kind "+c.kind, err))
		return 1
	}
	for _, e := range entries {
		c.ui.Output(e.GetName())
	}
	return 0
}

func (c *listCmd) Synopsis() string { return "Lists config entries of a kind" }
