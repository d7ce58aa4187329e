// Package members is the `trellis members` command.
package members

import (
	"flag"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/hashicorp/cli"

	"github.com/trellismesh/trellis/api"
	"github.com/trellismesh/trellis/command/flags"
)

const synopsis = "Lists the members of the cluster"

const help = `
Usage: trellis members [options]

  Lists the agents the contacted agent knows, with their address, gossip
  status (alive, leaving, left, failed), role (server or client), build
  and datacenter.

      $ trellis members
      $ trellis members -detailed
      $ trellis members -status=alive
`

type cmd struct {
	ui       cli.Ui
	fs       *flag.FlagSet
	http     flags.HTTPFlags
	detailed bool
	status   string
	help     string
}

// New returns the members command.
func New(ui cli.Ui) cli.Command {
	c := &cmd{ui: ui}
	own := flags.NewFlagSet("members")
	own.BoolVar(&c.detailed, "detailed", false, "Print every gossip tag of each member.")
	own.StringVar(&c.status, "status", "", "Only list members whose status is this `status` (alive, leaving, left, failed).")
	httpFlags := c.http.ClientFlags()
	c.help = flags.Usage(help, flags.Group{Title: "HTTP API Options", Flags: httpFlags}, flags.Group{Title: "Command Options", Flags: own})
	flags.Merge(own, httpFlags)
	c.fs = own
	return c
}

var statusNames = map[int]string{
	api.MemberStatusNone: "none", api.MemberStatusAlive: "alive", api.MemberStatusLeaving: "leaving",
	api.MemberStatusLeft: "left", api.MemberStatusFailed: "failed",
}

func (c *cmd) Run(args []string) int {
	if ok, code := flags.Parse(c.ui, c.fs, args, c.help); !ok {
		return code
	}
	if c.fs.NArg() > 0 {
		c.ui.Error("Error: members takes no arguments")
		return 1
	}
	if c.status != "" && !slices.Contains([]string{"alive", "leaving", "left", "failed"}, c.status) {
		c.ui.Error(fmt.Sprintf("Error: -status=%q: want alive, leaving, left or failed", c.status))
		return 1
	}
	client, err := c.http.APIClient()
	if err != nil {
		c.ui.Error("Error: " + err.Error())
		return 1
	}
	members, err := client.Agent().Members()
	if err != nil {
		c.ui.Error(flags.ErrorMessage("listing members", err))
		return 1
	}
	slices.SortFunc(members, func(a, b *api.AgentMember) int { return strings.Compare(a.Name, b.Name) })
	var b strings.Builder
	w := tabwriter.NewWriter(&b, 0, 8, 2, ' ', 0)
	if c.detailed {
		fmt.Fprintln(w, "Node\tAddress\tStatus\tTags")
	} else {
		fmt.Fprintln(w, "Node\tAddress\tStatus\tType\tBuild\tDC")
	}
	for _, m := range members {
		status := statusNames[m.Status]
		if c.status != "" && status != c.status {
			continue
		}
		addr := net.JoinHostPort(m.Addr, strconv.Itoa(int(m.Port)))
		if c.detailed {
			var tags []string
			for k, v := range m.Tags {
				tags = append(tags, k+"="+v)
			}
			slices.Sort(tags)
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", m.Name, addr, status, strings.Join(tags, ","))
			continue
		}
		role := m.Tags["role"]
		if role == "" {
			role = "client"
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\n", m.Name, addr, status, role, m.Tags["build"], m.Tags["dc"])
	}
	w.Flush()
	c.ui.Output(strings.TrimRight(b.String(), "\n"))
	return 0
}

func (c *cmd) Synopsis() string { return synopsis }
func (c *cmd) Help() string     { return c.help }
