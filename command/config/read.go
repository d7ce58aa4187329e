package config

import (
	"encoding/json"
	"fmt"
	"net/http"

	"github.com/hashicorp/cli"

	"github.com/trellismesh/trellis/command/flags"
)

const readHelp = `
Usage: trellis config read [options] -kind KIND -name NAME

  Shows the config entry of KIND and NAME as indented JSON, with its
  CreateIndex and ModifyIndex (give the latter to config write -cas).

      $ trellis config read -kind service-defaults -name web
`

type readCmd struct {
	base
	kind, name string
}

// NewRead returns `trellis config read`.
func NewRead(ui cli.Ui) cli.Command {
	c := &readCmd{}
	own := flags.NewFlagSet("config read")
	own.StringVar(&c.kind, "kind", "", "The `kind` of the entry: proxy-defaults, service-defaults, service-router, service-splitter, service-resolver or service-intentions.")
	own.StringVar(&c.name, "name", "", "The `name` of the entry (global for proxy-defaults).")
	c.init(ui, "config read", readHelp, own, true)
	return c
}

func (c *readCmd) Run(args []string) int {
	if ok, code := flags.Parse(c.ui, c.fs, args, c.help); !ok {
		return code
	}
	if err := noArgs(c.fs, "config read"); err != nil {
		c.argsError(err)
		return 1
	}
	if err := checkKindName(c.kind, c.name, true); err != nil {
		c.argsError(err)
		return 1
	}
	client, ok := c.client()
	if !ok {
		return 1
	}
	what := c.kind + "/" + c.name
	e, _, err := client.ConfigEntries().Get(c.kind, c.name, c.http.QueryOptions())
	switch {
	case isStatus(err, http.StatusNotFound):
		c.ui.Error(fmt.Sprintf("Error: there is no config entry %s", what))
		return 1
	case err != nil:
		c.ui.Error(flags.ErrorMessage("reading the config entry "+what, err))
		return 1
	}
	b, err := json.MarshalIndent(e, "", "    ")
	if err != nil {
		c.ui.Error(fmt.Sprintf("Error: encode the config entry %s: %v", what, err))
		return 1
	}
	c.ui.Output(string(b))
	return 0
}

func (c *readCmd) Synopsis() string { return "Shows a config entry" }
