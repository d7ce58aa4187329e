// Package keygen is the `trellis keygen` command.
package keygen

import (
	"crypto/rand"
	"encoding/base64"
	"flag"

	"github.com/hashicorp/cli"

	"github.com/trellismesh/trellis/command/flags"
)

const synopsis = "Makes a gossip encryption key"

const help = `
Usage: trellis keygen

  Prints a new random 32-byte key, base64-encoded, for the encrypt setting
  (gossip encryption) or for trellis keyring -install.

      $ trellis keygen
`

type cmd struct {
	ui   cli.Ui
	fs   *flag.FlagSet
	help string
}

// New returns the command.
func New(ui cli.Ui) cli.Command {
	c := &cmd{ui: ui, fs: flags.NewFlagSet("keygen")}
	c.help = flags.Usage(help)
	return c
}

func (c *cmd) Run(args []string) int {
	if ok, code := flags.Parse(c.ui, c.fs, args, c.help); !ok {
		return code
	}
	if c.fs.NArg() > 0 {
		c.ui.Error("Error: keygen takes no arguments")
		return 1
	}
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		c.ui.Error("Error reading random data: " + err.Error())
		return 1
	}
	c.ui.Output(base64.StdEncoding.EncodeToString(key))
	return 0
}

func (c *cmd) Synopsis() string { return synopsis }
func (c *cmd) Help() string     { return c.help }
