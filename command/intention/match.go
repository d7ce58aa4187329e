package intention

import (
	"errors"
	"flag"
	"fmt"
	"strings"

	"github.com/hashicorp/cli"

	"github.com/trellismesh/trellis/api"
	"github.com/trellismesh/trellis/command/flags"
)

const matchHelp = `
Usage: trellis intention match [options] -source NAME | -destination NAME

  Lists the intentions that apply to connections from (-source) or to
  (-destination) a service, wildcards included, in precedence order: the
  first that matches a connection decides it.

      $ trellis intention match -destination db
      $ trellis intention match -source web
`

type matchCmd struct {
	base
	source, destination string
}

// NewMatch returns `trellis intention match`.
func NewMatch(ui cli.Ui) cli.Command {
	c := &matchCmd{}
	own := flags.NewFlagSet("intention match")
	own.StringVar(&c.source, "source", "", "List the intentions of connections from the service with this `name`.")
	own.StringVar(&c.destination, "destination", "", "List the intentions of connections to the service with this `name`.")
	c.init(ui, "intention match", matchHelp, own, true)
	return c
}

func (c *matchCmd) Run(args []string) int {
	if ok, code := flags.Parse(c.ui, c.fs, args, c.help); !ok {
		return code
	}
	if c.fs.NArg() > 0 {
		argsError(c.ui, c.help, usageErr{errors.New("intention match takes no arguments: give -source NAME or -destination NAME")})
		return 1
	}
	given := map[string]bool{}
	c.fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	var by, name string
	switch {
	case given["source"] && given["destination"]:
		c.ui.Error("Error: give -source or -destination, not both")
		return 1
	case given["source"]:
		by, name = api.IntentionMatchSource, c.source
	case given["destination"]:
		by, name = api.IntentionMatchDestination, c.destination
	default:
		argsError(c.ui, c.help, usageErr{errors.New("give -source NAME or -destination NAME")})
		return 1
	}
	name, err := checkName("-"+by, name)
	if err != nil {
		c.ui.Error("Error: " + err.Error())
		return 1
	}
	client, ok := c.client()
	if !ok {
		return 1
	}
	m, _, err := client.Connect().IntentionMatch(&api.IntentionMatch{By: by, Names: []string{name}}, c.http.QueryOptions())
	if err != nil {
		c.ui.Error(flags.ErrorMessage(fmt.Sprintf("matching intentions by %s %q", by, name), err))
		return 1
	}
	list := m[name]
	if len(list) == 0 {
		c.ui.Error(fmt.Sprintf("No intentions match %s %q", by, name))
		return 0
	}
	lines := make([]string, 0, len(list))
	for _, i := range list {
		lines = append(lines, i.String())
	}
	c.ui.Output(strings.Join(lines, "\n"))
	return 0
}

func (c *matchCmd) Synopsis() string { return "Lists the intentions that apply to a service" }
