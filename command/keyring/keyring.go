// Package keyring is the `trellis keyring` command.
package keyring

import (
	"flag"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/hashicorp/cli"

	"github.com/trellismesh/trellis/command/flags"
)

// memberFailed is the Status of a failed member in /v1/agent/members
// (Serf's numbering, as in Consul's API).
const memberFailed = 4

const synopsis = "Manages the gossip encryption keys"

const help = `
Usage: trellis keyring [options]

  Lists, installs, uses and removes gossip encryption keys on every member
  of the cluster at once. To rotate the key with no downtime:

      $ trellis keyring -install=$(trellis keygen)    # every agent can decrypt it
      $ trellis keyring -use=NEWKEY                   # every agent encrypts with it
      $ trellis keyring -remove=OLDKEY                # the old key is gone

  Exactly one of -list, -install, -use or -remove is given. Keyrings are
  kept in each agent's data directory, so a restarted agent keeps the new
  key; update the encrypt setting of new agents.
`

type cmd struct {
	ui                   cli.Ui
	fs                   *flag.FlagSet
	http                 flags.HTTPFlags
	help                 string
	list                 bool
	install, use, remove string
}

// New returns the command.
func New(ui cli.Ui) cli.Command {
	c := &cmd{ui: ui}
	own := flags.NewFlagSet("keyring")
	own.BoolVar(&c.list, "list", false, "List the keys of every member.")
	own.StringVar(&c.install, "install", "", "Install a new `key` on every member.")
	own.StringVar(&c.use, "use", "", "Make an installed `key` the one every member encrypts with.")
	own.StringVar(&c.remove, "remove", "", "Remove a `key` from every member (not the one in use).")
	hf := c.http.ClientFlags()
	c.help = flags.Usage(help, flags.Group{Title: "HTTP API Options", Flags: hf}, flags.Group{Title: "Command Options", Flags: own})
	flags.Merge(own, hf)
	c.fs = own
	return c
}

func (c *cmd) Run(args []string) int {
	if ok, code := flags.Parse(c.ui, c.fs, args, c.help); !ok {
		return code
	}
	n := 0
	for _, set := range []bool{c.list, c.install != "", c.use != "", c.remove != ""} {
		if set {
			n++
		}
	}
	if n != 1 || c.fs.NArg() > 0 {
		c.ui.Error("Error: give exactly one of -list, -install, -use or -remove")
		c.ui.Error("")
		c.ui.Error(c.help)
		return 1
	}
	client, err := c.http.APIClient()
	if err != nil {
		c.ui.Error("Error: " + err.Error())
		return 1
	}
	op := client.Operator()
	switch {
	case c.list:
		c.ui.Output("==> Gathering installed encryption keys...")
		resps, err := op.KeyringList()
		if err != nil {
			c.ui.Error(flags.ErrorMessage("listing keys", err))
			return 1
		}
		for _, r := range resps {
			c.ui.Output(fmt.Sprintf("\n%s (LAN):", r.Datacenter))
			for _, k := range slices.Sorted(maps.Keys(r.Keys)) {
				primary := ""
				if r.PrimaryKeys[k] > 0 {
					primary = fmt.Sprintf(" (primary on %d)", r.PrimaryKeys[k])
				}
				c.ui.Output(fmt.Sprintf("  %s [%d/%d]%s", k, r.Keys[k], r.NumNodes, primary))
			}
			for node, msg := range r.Messages {
				c.ui.Error(fmt.Sprintf("  error on %s: %s", node, msg))
			}
		}
		return 0
	case c.install != "":
		c.ui.Output("==> Installing new gossip encryption key...")
		err = op.KeyringInstall(c.install)
	case c.use != "":
		c.ui.Output("==> Changing primary gossip encryption key...")
		err = op.KeyringUse(c.use)
	default:
		c.ui.Output("==> Removing gossip encryption key...")
		err = op.KeyringRemove(c.remove)
	}
	if err != nil {
		c.ui.Error(strings.TrimSpace(flags.ErrorMessage("changing the keyring", err)))
		return 1
	}
	// The operation reached the members alive at the time; a failed one
	// was skipped and keeps its old keyring until this is run again.
	var skipped []string
	if members, err := client.Agent().Members(); err == nil {
		for _, m := range members {
			if m.Status == memberFailed {
				skipped = append(skipped, m.Name)
			}
		}
	}
	if len(skipped) > 0 {
		slices.Sort(skipped)
		c.ui.Output(fmt.Sprintf("Done on every alive member. Skipped, as failed: %s; run this again once they are back.",
			strings.Join(skipped, ", ")))
		return 0
	}
	c.ui.Output("Done on every member.")
	return 0
}

func (c *cmd) Synopsis() string { return synopsis }
func (c *cmd) Help() string     { return c.help }
