package intention

import (
	"fmt"
	"net/http"

	"github.com/hashicorp/cli"

	"github.com/trellismesh/trellis/api"
	"github.com/trellismesh/trellis/command/flags"
)

const createHelp = `
Usage: trellis intention create [options] SRC DST

  Creates an intention: whether connections from the service SRC to the
  service DST are allowed (the default) or denied. Either name may be *,
  for any service. The most precise intention that matches a connection
  decides it; when none matches, the agent's default policy does.

  An intention of the same SRC and DST is an error unless -replace is
  given, which replaces it.

      $ trellis intention create web db
      $ trellis intention create -deny -description "not from the edge" edge db
      $ trellis intention create -replace -allow -meta team=core '*' metrics
`

type createCmd struct {
	base
	allow, deny, replace bool
	description          string
	meta                 flags.StringSlice
}

// NewCreate returns `trellis intention create`.
func NewCreate(ui cli.Ui) cli.Command {
	c := &createCmd{}
	own := flags.NewFlagSet("intention create")
	own.BoolVar(&c.allow, "allow", false, "Allow the connections (the default).")
	own.BoolVar(&c.deny, "deny", false, "Deny the connections.")
	own.BoolVar(&c.replace, "replace", false, "Replace the intention of the same SRC and DST if there is one.")
	own.StringVar(&c.description, "description", "", "A `text` that says why the intention exists.")
	own.Var(&c.meta, "meta", "A `key=value` pair of metadata; may be repeated.")
	c.init(ui, "intention create", createHelp, own, false)
	return c
}

func (c *createCmd) Run(args []string) int {
	if ok, code := flags.Parse(c.ui, c.fs, args, c.help); !ok {
		return code
	}
	src, dst, err := pair(c.fs, "intention create")
	if err != nil {
		argsError(c.ui, c.help, err)
		return 1
	}
	if c.allow && c.deny {
		c.ui.Error("Error: give -allow or -deny, not both")
		return 1
	}
	action := api.IntentionActionAllow
	if c.deny {
		action = api.IntentionActionDeny
	}
	meta, err := flags.KeyValues("-meta", c.meta)
	if err != nil {
		c.ui.Error("Error: " + err.Error())
		return 1
	}
	client, ok := c.client()
	if !ok {
		return 1
	}
	ixn := &api.Intention{SourceName: src, DestinationName: dst, Action: action, Description: c.description, Meta: meta}
	done, doing := "Created", "creating"
	if c.replace {
		// An upsert, which the servers may apply twice safely (and so
		// send again across a change of leader); the read before it only
		// says which of the two it did.
		existing, _, gerr := client.Connect().IntentionGetExact(src, dst, nil)
		if gerr != nil {
			c.ui.Error(flags.ErrorMessage(fmt.Sprintf("reading the intention %s => %s", src, dst), gerr))
			return 1
		}
		if existing != nil {
			done, doing = "Replaced", "replacing"
		}
		_, err = client.Connect().IntentionUpsert(ixn, nil)
	} else {
		_, _, err = client.Connect().IntentionCreate(ixn, nil)
	}
	switch {
	case isStatus(err, http.StatusConflict):
		c.ui.Error(fmt.Sprintf("Error: an intention %s => %s exists already; give -replace to replace it", src, dst))
		return 1
	case err != nil:
		c.ui.Error(flags.ErrorMessage(fmt.Sprintf("%s the intention %s => %s", doing, src, dst), err))
		return 1
	}
	c.ui.Output(fmt.Sprintf("%s: %s", done, ixn))
	return 0
}

func (c *createCmd) Synopsis() string { return "Creates an intention" }
