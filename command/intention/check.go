package intention

import (
	"fmt"

	"github.com/hashicorp/cli"

	"github.com/trellismesh/trellis/api"
	"github.com/trellismesh/trellis/command/flags"
)

const checkHelp = `
Usage: trellis intention check [options] SRC DST

  Checks whether a connection from the service SRC to the service DST would
  be allowed, by the intentions and the agent's default policy. It prints
  Allowed or Denied.

  The exit code is 0 when allowed, 1 when denied, and 2 on any error (bad
  arguments, the agent cannot be reached), so scripts can test it:

      $ trellis intention check web db && echo "web may call db"
`

type checkCmd struct{ base }

// NewCheck returns `trellis intention check`.
func NewCheck(ui cli.Ui) cli.Command {
	c := &checkCmd{}
	c.init(ui, "intention check", checkHelp, nil, true)
	return c
}

// Exit codes of check.
const (
	checkAllowed = 0
	checkDenied  = 1
	checkError   = 2
)

func (c *checkCmd) Run(args []string) int {
	if ok, code := flags.Parse(c.ui, c.fs, args, c.help); !ok {
		if code != 0 {
			return checkError
		}
		return code
	}
	src, dst, err := pair(c.fs, "intention check")
	if err != nil {
		argsError(c.ui, c.help, err)
		return checkError
	}
	client, ok := c.client()
	if !ok {
		return checkError
	}
	allowed, _, err := client.Connect().IntentionCheck(&api.IntentionCheck{Source: src, Destination: dst}, c.http.QueryOptions())
	if err != nil {
		c.ui.Error(flags.ErrorMessage(fmt.Sprintf("checking %s => %s", src, dst), err))
		return checkError
	}
	if allowed {
		c.ui.Output("Allowed")
		return checkAllowed
	}
	c.ui.Output("Denied")
	return checkDenied
}

func (c *checkCmd) Synopsis() string { return "Checks whether a connection would be allowed" }
