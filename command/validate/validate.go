// Package validate is the `trellis validate` command.
package validate

import (
	"flag"
	"strings"

	"github.com/hashicorp/cli"

	"github.com/trellismesh/trellis/agent/config"
	"github.com/trellismesh/trellis/command/flags"
)

const synopsis = "Checks config files and service definitions"

const help = `
Usage: trellis validate [options] PATH...

  Checks agent config files and service definition files (HCL or JSON), or
  every *.hcl and *.json file of a directory: syntax, keys, types and values,
  then the configuration they make together. Nothing is started or changed.
  Errors name the file, line and column.

      $ trellis validate /etc/trellis.d
      $ trellis validate agent.hcl web.json
`

type cmd struct {
	ui    cli.Ui
	fs    *flag.FlagSet
	help  string
	quiet bool
}

// New returns the command.
func New(ui cli.Ui) cli.Command {
	c := &cmd{ui: ui}
	c.fs = flags.NewFlagSet("validate")
	c.fs.BoolVar(&c.quiet, "quiet", false, "Print nothing when the configuration is valid.")
	c.help = flags.Usage(help, flags.Group{Title: "Command Options", Flags: c.fs})
	return c
}

func (c *cmd) Run(args []string) int {
	if ok, code := flags.Parse(c.ui, c.fs, args, c.help); !ok {
		return code
	}
	if c.fs.NArg() == 0 {
		c.ui.Error("Error: give at least one file or directory to validate")
		c.ui.Error("")
		c.ui.Error(c.help)
		return 1
	}
	if err := config.ValidateFiles(c.fs.Args()...); err != nil {
		c.ui.Error("Configuration is invalid:\n" + strings.TrimSpace(err.Error()))
		return 1
	}
	if !c.quiet {
		c.ui.Output("Configuration is valid!")
	}
	return 0
}

func (c *cmd) Synopsis() string { return synopsis }
func (c *cmd) Help() string     { return c.help }
