// Package version is the `trellis version` command.
package version

import (
	"flag"
	"fmt"
	"runtime"

	"github.com/hashicorp/cli"

	"github.com/trellismesh/trellis/command/flags"
	"github.com/trellismesh/trellis/version"
)

const synopsis = "Prints the Trellis version"

const help = `
Usage: trellis version

  Prints the version of this binary, the commit it was built from, and the
  Go version and platform.
`

type cmd struct {
	ui   cli.Ui
	fs   *flag.FlagSet
	help string
}

// New returns the version command writing to ui.
func New(ui cli.Ui) cli.Command {
	c := &cmd{ui: ui, fs: flags.NewFlagSet("version")}
	c.help = flags.Usage(help)
	return c
}

func (c *cmd) Run(args []string) int {
	if ok, code := flags.Parse(c.ui, c.fs, args, c.help); !ok {
		return code
	}
	if c.fs.NArg() > 0 {
		c.ui.Error(fmt.Sprintf("Error: version takes no arguments (got %q)", c.fs.Args()))
		c.ui.Error("")
		c.ui.Error(c.help)
		return 1
	}
	c.ui.Output("Trellis " + version.String())
	c.ui.Output(fmt.Sprintf("Go %s %s/%s", runtime.Version(), runtime.GOOS, runtime.GOARCH))
	return 0
}

func (c *cmd) Synopsis() string { return synopsis }
func (c *cmd) Help() string     { return c.help }
