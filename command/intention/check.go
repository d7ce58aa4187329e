package intention

import (
	"fmt"
	"strings"

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

  An intention with HTTP permissions (from a service-intentions config
  entry) decides per request, so a connection check counts it as Denied;
  when one decides, a note on stderr says so.
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
	if ixn := c.deciding(client, src, dst); ixn != nil && len(ixn.Permissions) > 0 {
		// On stderr, so that scripts reading stdout see Denied alone.
		c.ui.Error(fmt.Sprintf("Note: the intention %s => %s decides by HTTP permissions, which apply per request: a connection check counts it as Denied. See trellis intention get %s %s.",
			ixn.SourceName, ixn.DestinationName, ixn.SourceName, ixn.DestinationName))
	}
	return checkDenied
}

// deciding returns the intention that decides src => dst: the first, in
// precedence order, of those for dst whose source is src or *; nil when
// none does or the agent cannot say.
func (c *checkCmd) deciding(client *api.Client, src, dst string) *api.Intention {
	m, _, err := client.Connect().IntentionMatch(&api.IntentionMatch{By: api.IntentionMatchDestination, Names: []string{dst}}, c.http.QueryOptions())
	if err != nil {
		return nil
	}
	for _, i := range m[dst] {
		if i.SourceName == "*" || strings.EqualFold(i.SourceName, src) {
			return i
		}
	}
	return nil
}

func (c *checkCmd) Synopsis() string { return "Checks whether a connection would be allowed" }
