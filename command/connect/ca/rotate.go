package ca

import (
	"github.com/hashicorp/cli"

	"github.com/trellismesh/trellis/command/flags"
)

const rotateHelp = `
Usage: trellis connect ca rotate [options]

  Makes a new root for the mesh's certificate authority, cross-signed by
  the current one, and prints its ID. New leaves are signed by the new
  root at once; the previous root stays trusted until every leaf it signed
  has been replaced, so no connection breaks.

      $ trellis connect ca rotate
`

type rotateCmd struct{ base }

// NewRotate returns `trellis connect ca rotate`.
func NewRotate(ui cli.Ui) cli.Command {
	c := &rotateCmd{}
	c.init(ui, "connect ca rotate", rotateHelp, nil, false)
	return c
}

func (c *rotateCmd) Run(args []string) int {
	client, ok, code := c.start(args, "connect ca rotate")
	if !ok {
		return code
	}
	roots, _, err := client.Connect().CARotate(nil)
	if err != nil {
		c.ui.Error(flags.ErrorMessage("rotating the CA root", err))
		return 1
	}
	c.ui.Output("New active root: " + roots.ActiveRootID)
	return 0
}

func (c *rotateCmd) Synopsis() string { return "Makes a new CA root" }
