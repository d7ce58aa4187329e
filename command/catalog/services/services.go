// Package services is the `trellis catalog services` command.
package services

import (
	"flag"
	"fmt"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/hashicorp/cli"

	"github.com/trellismesh/trellis/command/flags"
)

const synopsis = "Lists the services in the catalog"

const help = `
Usage: trellis catalog services [options]

  Lists the names of the services in the catalog, one a line, sorted.

      $ trellis catalog services
      $ trellis catalog services -tags
      $ trellis catalog services -node=web-01
`

type cmd struct {
	ui   cli.Ui
	fs   *flag.FlagSet
	http flags.HTTPFlags
	help string
	tags bool
	node string
}

// New returns the command.
func New(ui cli.Ui) cli.Command {
	c := &cmd{ui: ui}
	own := flags.NewFlagSet("catalog services")
	own.BoolVar(&c.tags, "tags", false, "Print each service's tags beside its name.")
	own.StringVar(&c.node, "node", "", "Only list the services on the node with this `name`.")
	hf, sf := c.http.ClientFlags(), c.http.ServerFlags()
	c.help = flags.Usage(help, flags.Group{Title: "HTTP API Options", Flags: hf}, flags.Group{Title: "Query Options", Flags: sf}, flags.Group{Title: "Command Options", Flags: own})
	flags.Merge(own, hf)
	flags.Merge(own, sf)
	c.fs = own
	return c
}

func (c *cmd) Run(args []string) int {
	if ok, code := flags.Parse(c.ui, c.fs, args, c.help); !ok {
		return code
	}
	if c.fs.NArg() > 0 {
		c.ui.Error("Error: catalog services takes no arguments")
		return 1
	}
	client, err := c.http.APIClient()
	if err != nil {
		c.ui.Error("Error: " + err.Error())
		return 1
	}
	services := map[string][]string{}
	if c.node != "" {
		node, _, err := client.Catalog().Node(c.node, c.http.QueryOptions())
		if err != nil {
			c.ui.Error(flags.ErrorMessage("listing services", err))
			return 1
		}
		if node == nil {
			c.ui.Error(fmt.Sprintf("Error: no node named %q in the catalog", c.node))
			return 1
		}
		for _, s := range node.Services {
			services[s.Service] = append(services[s.Service], s.Tags...)
		}
	} else {
		services, _, err = client.Catalog().Services(c.http.QueryOptions())
		if err != nil {
			c.ui.Error(flags.ErrorMessage("listing services", err))
			return 1
		}
	}
	if len(services) == 0 {
		c.ui.Error("No services found")
		return 0
	}
	names := make([]string, 0, len(services))
	for n := range services {
		names = append(names, n)
	}
	slices.Sort(names)
	var b strings.Builder
	w := tabwriter.NewWriter(&b, 0, 8, 2, ' ', 0)
	for _, n := range names {
		if c.tags {
			tags := slices.Compact(slices.Sorted(slices.Values(services[n])))
			fmt.Fprintf(w, "%s\t%s\n", n, strings.Join(tags, ","))
		} else {
			fmt.Fprintln(w, n)
		}
	}
	w.Flush()
	c.ui.Output(strings.TrimRight(b.String(), "\n"))
	return 0
}

func (c *cmd) Synopsis() string { return synopsis }
func (c *cmd) Help() string     { return c.help }
