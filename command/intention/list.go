package intention

import (
	"fmt"
	"strings"
	"text/tabwriter"

	"github.com/hashicorp/cli"

	"github.com/trellismesh/trellis/api"
	"github.com/trellismesh/trellis/command/flags"
)

const listHelp = `
Usage: trellis intention list [options]

  Lists every intention in precedence order: the first that matches a
  connection decides it.

      $ trellis intention list
      $ trellis intention list -filter 'Action == deny'
`

type listCmd struct {
	base
	filter string
}

// NewList returns `trellis intention list`.
func NewList(ui cli.Ui) cli.Command {
	c := &listCmd{}
	own := flags.NewFlagSet("intention list")
	own.StringVar(&c.filter, "filter", "", "Only list the intentions that match this filter `expression`, e.g. 'DestinationName == db'.")
	c.init(ui, "intention list", listHelp, own, true)
	return c
}

func (c *listCmd) Run(args []string) int {
	if ok, code := flags.Parse(c.ui, c.fs, args, c.help); !ok {
		return code
	}
	if c.fs.NArg() > 0 {
		c.ui.Error("Error: intention list takes no arguments")
		return 1
	}
	client, ok := c.client()
	if !ok {
		return 1
	}
	q := c.http.QueryOptions()
	q.Filter = c.filter
	list, _, err := client.Connect().Intentions(q)
	if err != nil {
		c.ui.Error(flags.ErrorMessage("listing intentions", err))
		return 1
	}
	if len(list) == 0 {
		c.ui.Error("No intentions found")
		return 0
	}
	c.ui.Output(table(list))
	return 0
}

// table lays out intentions as the list shows them.
func table(list []*api.Intention) string {
	var b strings.Builder
	w := tabwriter.NewWriter(&b, 0, 8, 2, ' ', 0)
	fmt.Fprintln(w, "Source\tAction\tDestination\tPrecedence\tDescription")
	for _, i := range list {
		fmt.Fprintf(w, "%s\t%s\t%s\t%d\t%s\n", i.SourceName, i.ActionSummary(), i.DestinationName, i.Precedence, i.Description)
	}
	w.Flush()
	lines := strings.Split(strings.TrimRight(b.String(), "\n"), "\n")
	for i, l := range lines {
		lines[i] = strings.TrimRight(l, " ")
	}
	return strings.Join(lines, "\n")
}

func (c *listCmd) Synopsis() string { return "Lists intentions" }
