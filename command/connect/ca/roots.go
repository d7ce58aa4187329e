package ca

import (
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/hashicorp/cli"

	"github.com/trellismesh/trellis/command/flags"
)

const rootsHelp = `
Usage: trellis connect ca roots [options]

  Lists the roots the mesh trusts: the active one signs new leaves; the
  others stay until the leaves they signed have been replaced.

      $ trellis connect ca roots
`

type rootsCmd struct{ base }

// NewRoots returns `trellis connect ca roots`.
func NewRoots(ui cli.Ui) cli.Command {
	c := &rootsCmd{}
	c.init(ui, "connect ca roots", rootsHelp, nil, true)
	return c
}

func (c *rootsCmd) Run(args []string) int {
	client, ok, code := c.start(args, "connect ca roots")
	if !ok {
		return code
	}
	roots, _, err := client.Connect().CARoots(c.http.QueryOptions())
	if err != nil {
		c.ui.Error(flags.ErrorMessage("listing the CA roots", err))
		return 1
	}
	if len(roots.Roots) == 0 {
		c.ui.Error("No roots: the CA is not initialised yet")
		return 1
	}
	var b strings.Builder
	w := tabwriter.NewWriter(&b, 0, 8, 2, ' ', 0)
	fmt.Fprintln(w, "ID\tName\tActive\tNotAfter")
	for _, r := range roots.Roots {
		fmt.Fprintf(w, "%s\t%s\t%t\t%s\n", r.ID, r.Name, r.Active, r.NotAfter.UTC().Format(time.RFC3339))
	}
	w.Flush()
	c.ui.Output(strings.TrimRight(b.String(), "\n"))
	return 0
}

func (c *rootsCmd) Synopsis() string { return "Lists the CA's roots" }
