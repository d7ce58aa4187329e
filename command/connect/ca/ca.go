// Package ca holds the `trellis connect ca` commands: get-config,
// set-config, rotate and roots, which read and change the mesh's built-in
// certificate authority. Each command is a file of this package.
package ca

import (
	"flag"

	"github.com/hashicorp/cli"

	"github.com/trellismesh/trellis/api"
	"github.com/trellismesh/trellis/command/flags"
)

// base holds what every CA command has.
type base struct {
	ui   cli.Ui
	fs   *flag.FlagSet
	http flags.HTTPFlags
	help string
}

// init builds the flag set: own (the command's flags; may be nil) plus the
// HTTP flags, and the query flags when query.
func (b *base) init(ui cli.Ui, name, text string, own *flag.FlagSet, query bool) {
	b.ui = ui
	b.fs, b.help = flags.CommandFlagSet(&b.http, name, text, own, query)
}

// Help returns the command's usage.
func (b *base) Help() string { return b.help }

// start parses args, refuses arguments, and returns the API client; ok is
// false with the exit code when the command should stop.
func (b *base) start(args []string, name string) (client *api.Client, ok bool, code int) {
	if ok, code := flags.Parse(b.ui, b.fs, args, b.help); !ok {
		return nil, false, code
	}
	if b.fs.NArg() > 0 {
		b.ui.Error("Error: " + name + " takes no arguments (flags go before any argument)")
		return nil, false, 1
	}
	c, err := b.http.APIClient()
	if err != nil {
		b.ui.Error("Error: " + err.Error())
		return nil, false, 1
	}
	return c, true, 0
}
