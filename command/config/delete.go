package config

import (
	"fmt"

	"github.com/hashicorp/cli"

	"github.com/trellismesh/trellis/command/flags"
)

const deleteHelp = `
Usage: trellis config delete [options] -kind KIND -name NAME

  Deletes the config entry of KIND and NAME. A deletion that would leave
  the other entries contradicting each other (a router whose destination
  loses its http protocol) is refused. Deleting an entry that does not exist
  succeeds.

      $ trellis config delete -kind service-router -name web
      $ trellis config delete -kind service-defaults -name web -cas -modify-index 42
`

type deleteCmd struct {
	base
	kind, name  string
	cas         bool
	modifyIndex uint64
}

// NewDelete returns `trellis config delete`.
func NewDelete(ui cli.Ui) cli.Command {
	c := &deleteCmd{}
	own := flags.NewFlagSet("config delete")
	own.StringVar(&c.kind, "kind", "", "The `kind` of the entry: proxy-defaults, service-defaults, service-router, service-splitter, service-resolver or service-intentions.")
	own.StringVar(&c.name, "name", "", "The `name` of the entry (global for proxy-defaults).")
	own.BoolVar(&c.cas, "cas", false, "Delete only if the entry's ModifyIndex is -modify-index.")
	own.Uint64Var(&c.modifyIndex, "modify-index", 0, "The `index` a -cas delete expects: the ModifyIndex of the entry as last read.")
	c.init(ui, "config delete", deleteHelp, own, false)
	return c
}

func (c *deleteCmd) Run(args []string) int {
	if ok, code := flags.Parse(c.ui, c.fs, args, c.help); !ok {
		return code
	}
	if err := noArgs(c.fs, "config delete"); err != nil {
		c.argsError(err)
		return 1
	}
	if err := checkKindName(c.kind, c.name, true); err != nil {
		c.argsError(err)
		return 1
	}
	if c.cas && c.modifyIndex == 0 {
		c.argsError(usagef("-cas needs -modify-index: the ModifyIndex of the entry as last read"))
		return 1
	}
	if !c.cas && c.modifyIndex != 0 {
		c.argsError(usagef("-modify-index goes with -cas"))
		return 1
	}
	client, ok := c.client()
	if !ok {
		return 1
	}
	what := c.kind + "/" + c.name
	if c.cas {
		deleted, _, err := client.ConfigEntries().DeleteCAS(c.kind, c.name, c.modifyIndex, nil)
		if err != nil {
			c.ui.Error(flags.ErrorMessage("deleting the config entry "+what, err))
			return 1
		}
		if !deleted {
			c.ui.Error(fmt.Sprintf("Error: config entry %s not deleted: its ModifyIndex is not %d (-cas); read it again and retry", what, c.modifyIndex))
			return 1
		}
	} else if _, err := client.ConfigEntries().Delete(c.kind, c.name, nil); err != nil {
		c.ui.Error(flags.ErrorMessage("deleting the config entry "+what, err))
		return 1
	}
	c.ui.Output("Config entry deleted: " + what)
	return 0
}

func (c *deleteCmd) Synopsis() string { return "Deletes a config entry" }
