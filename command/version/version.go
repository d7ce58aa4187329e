// Package version is the `trellis version` command.
package version

import (
	"flag"
	"fmt"
	"runtime"
	"strings"

	"github.com/hashicorp/cli"

	"github.com/trellismesh/trellis/version"
)

const synopsis = "Prints the Trellis version"

const help = `
Usage: trellis version

  Prints the version of this binary, the commit it was built from, and the
  Go version and platform.
`

type cmd struct {
	ui    cli.Ui
	flags *flag.FlagSet
}

// New returns the version command writing to ui.
func New(ui cli.Ui) cli.Command {
	c := &cmd{ui: ui, flags: flag.NewFlagSet("version", flag.ContinueOnError)}
	c.flags.SetOutput(discard{})
	return c
}

func (c *cmd) Run(args []string) int {
	if err := c.flags.Parse(args); err != nil {
		if err == flag.ErrHelp {
			c.ui.Output(c.Help())
			return 0
		}
		c.ui.Error(err.Error())
		return 1
	}
	if c.flags.NArg() > 0 {
		c.ui.Error("version takes no arguments")
		return 1
	}
	c.ui.Output("Trellis " + version.String())
	c.ui.Output(fmt.Sprintf("Go %s %s/%s", runtime.Version(), runtime.GOOS, runtime.GOARCH))
	return 0
}

func (c *cmd) Synopsis() string { return synopsis }
func (c *cmd) Help() string     { return strings.TrimSpace(help) }

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }
