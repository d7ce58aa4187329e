// Package nodes is the `trellis catalog nodes` command.
package nodes

import (
	"flag"
	"fmt"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/hashicorp/cli"

	"github.com/trellismesh/trellis/api"
	"github.com/trellismesh/trellis/command/flags"
)

const synopsis = "Lists the nodes in the catalog"

const help = `
Usage: trellis catalog nodes [options]

  Lists the nodes in the catalog with their ID, address and datacenter.

      $ trellis catalog nodes
      $ trellis catalog nodes -service=web
      $ trellis catalog nodes -detailed
`

type cmd struct {
	ui       cli.Ui
	fs       *flag.FlagSet
	http     flags.HTTPFlags
	help     string
	service  string
	detailed bool
}

// New returns the command.
func New(ui cli.Ui) cli.Command {
	c := &cmd{ui: ui}
	own := flags.NewFlagSet("catalog nodes")
	own.StringVar(&c.service, "service", "", "Only list the nodes that run an instance of the service with this `name`.")
	own.BoolVar(&c.detailed, "detailed", false, "Print the full node ID, tagged addresses and meta.")
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
		c.ui.Error("Error: catalog nodes takes no arguments")
		return 1
	}
	client, err := c.http.APIClient()
	if err != nil {
		c.ui.Error("Error: " + err.Error())
		return 1
	}
	var nodes []*api.Node
	if c.service != "" {
		instances, _, err := client.Catalog().Service(c.service, "", c.http.QueryOptions())
		if err != nil {
			c.ui.Error(flags.ErrorMessage("listing nodes", err))
			return 1
		}
		seen := map[string]bool{}
		for _, s := range instances {
			if !seen[s.Node] {
				seen[s.Node] = true
				nodes = append(nodes, &api.Node{ID: s.ID, Node: s.Node, Address: s.Address, Datacenter: s.Datacenter, TaggedAddresses: s.TaggedAddresses, Meta: s.NodeMeta})
			}
		}
	} else {
		nodes, _, err = client.Catalog().Nodes(c.http.QueryOptions())
		if err != nil {
			c.ui.Error(flags.ErrorMessage("listing nodes", err))
			return 1
		}
	}
	if len(nodes) == 0 {
		c.ui.Error("No nodes match the given query")
		return 0
	}
	slices.SortFunc(nodes, func(a, b *api.Node) int { return strings.Compare(a.Node, b.Node) })
	var b strings.Builder
	w := tabwriter.NewWriter(&b, 0, 8, 2, ' ', 0)
	if c.detailed {
		fmt.Fprintln(w, "Node\tID\tAddress\tDC\tTaggedAddresses\tMeta")
	} else {
		fmt.Fprintln(w, "Node\tID\tAddress\tDC")
	}
	for _, n := range nodes {
		id := n.ID
		if !c.detailed && len(id) > 8 {
			id = id[:8]
		}
		if c.detailed {
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\n", n.Node, id, n.Address, n.Datacenter, pairs(n.TaggedAddresses), pairs(n.Meta))
		} else {
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", n.Node, id, n.Address, n.Datacenter)
		}
	}
	w.Flush()
	c.ui.Output(strings.TrimRight(b.String(), "\n"))
	return 0
}

func pairs(m map[string]string) string {
	var out []string
	for k, v := range m {
		out = append(out, k+"="+v)
	}
	slices.Sort(out)
	return strings.Join(out, ",")
}

func (c *cmd) Synopsis() string { return synopsis }
func (c *cmd) Help() string     { return c.help }
