package intention

import (
	"errors"
	"fmt"
	"net/http"
	"regexp"

	"github.com/hashicorp/cli"

	"github.com/trellismesh/trellis/command/flags"
)

const deleteHelp = `
Usage: trellis intention delete [options] SRC DST
       trellis intention delete [options] ID

  Deletes the intention of SRC and DST (either may be *), or the intention
  with an ID. Connections it decided are then decided by the next matching
  intention, or by the default policy.

      $ trellis intention delete web db
      $ trellis intention delete '*' db
`

type deleteCmd struct{ base }

// NewDelete returns `trellis intention delete`.
func NewDelete(ui cli.Ui) cli.Command {
	c := &deleteCmd{}
	c.init(ui, "intention delete", deleteHelp, nil, false)
	return c
}

func (c *deleteCmd) Run(args []string) int {
	if ok, code := flags.Parse(c.ui, c.fs, args, c.help); !ok {
		return code
	}
	id, src, dst, err := idOrPair(c.fs.Args(), "intention delete")
	if err != nil {
		argsError(c.ui, c.help, err)
		return 1
	}
	client, ok := c.client()
	if !ok {
		return 1
	}
	what := fmt.Sprintf("%s => %s", src, dst)
	if id != "" {
		what = "with ID " + id
		_, err = client.Connect().IntentionDelete(id, nil)
	} else {
		_, err = client.Connect().IntentionDeleteExact(src, dst, nil)
	}
	switch {
	case isStatus(err, http.StatusNotFound):
		c.ui.Error(fmt.Sprintf("Error: there is no intention %s", what))
		return 1
	case err != nil:
		c.ui.Error(flags.ErrorMessage("deleting the intention "+what, err))
		return 1
	}
	c.ui.Output(fmt.Sprintf("Deleted: the intention %s", what))
	return 0
}

func (c *deleteCmd) Synopsis() string { return "Deletes an intention" }

// uuidRE is the shape of an intention ID.
var uuidRE = regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)

// idOrPair reads either one ID argument or SRC and DST.
func idOrPair(args []string, command string) (id, src, dst string, err error) {
	if err := flagsAfterArgs(args); err != nil {
		return "", "", "", err
	}
	switch len(args) {
	case 1:
		if args[0] == "" {
			return "", "", "", errors.New("ID is empty")
		}
		if !uuidRE.MatchString(args[0]) {
			return "", "", "", usageErr{fmt.Errorf("%s takes SRC and DST, or an intention ID: %q is not an ID (IDs are UUIDs, as intention get SRC DST shows them)", command, args[0])}
		}
		return args[0], "", "", nil
	case 2:
		if src, err = checkName("SRC", args[0]); err != nil {
			return "", "", "", err
		}
		if dst, err = checkName("DST", args[1]); err != nil {
			return "", "", "", err
		}
		return "", src, dst, nil
	}
	return "", "", "", usageErr{fmt.Errorf("%s takes SRC and DST, or an intention ID (got %d arguments)", command, len(args))}
}
