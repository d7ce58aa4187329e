package intention

import (
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/hashicorp/cli"

	"github.com/trellismesh/trellis/api"
	"github.com/trellismesh/trellis/command/flags"
)

const getHelp = `
Usage: trellis intention get [options] SRC DST
       trellis intention get [options] ID

  Shows the intention of SRC and DST (either may be *), or the intention
  with an ID.

      $ trellis intention get web db
`

type getCmd struct{ base }

// NewGet returns `trellis intention get`.
func NewGet(ui cli.Ui) cli.Command {
	c := &getCmd{}
	c.init(ui, "intention get", getHelp, nil, true)
	return c
}

func (c *getCmd) Run(args []string) int {
	if ok, code := flags.Parse(c.ui, c.fs, args, c.help); !ok {
		return code
	}
	id, src, dst, err := idOrPair(c.fs.Args(), "intention get")
	if err != nil {
		argsError(c.ui, c.help, err)
		return 1
	}
	client, ok := c.client()
	if !ok {
		return 1
	}
	var ixn *api.Intention
	what := fmt.Sprintf("%s => %s", src, dst)
	if id != "" {
		what = "with ID " + id
		ixn, _, err = client.Connect().IntentionGet(id, c.http.QueryOptions())
	} else {
		ixn, _, err = client.Connect().IntentionGetExact(src, dst, c.http.QueryOptions())
	}
	if err != nil {
		c.ui.Error(flags.ErrorMessage("reading the intention "+what, err))
		return 1
	}
	if ixn == nil {
		c.ui.Error(fmt.Sprintf("Error: there is no intention %s", what))
		return 1
	}
	var b strings.Builder
	w := tabwriter.NewWriter(&b, 0, 8, 2, ' ', 0)
	fmt.Fprintf(w, "ID:\t%s\n", ixn.ID)
	fmt.Fprintf(w, "Source:\t%s\n", ixn.SourceName)
	fmt.Fprintf(w, "Destination:\t%s\n", ixn.DestinationName)
	if ixn.Action != "" || len(ixn.Permissions) == 0 {
		fmt.Fprintf(w, "Action:\t%s\n", ixn.Action)
	}
	for i, p := range ixn.Permissions {
		fmt.Fprintf(w, "Permission[%d]:\t%s\n", i, permissionText(p))
	}
	fmt.Fprintf(w, "Precedence:\t%d\n", ixn.Precedence)
	if ixn.Description != "" {
		fmt.Fprintf(w, "Description:\t%s\n", ixn.Description)
	}
	for _, k := range slices.Sorted(maps.Keys(ixn.Meta)) {
		fmt.Fprintf(w, "Meta[%s]:\t%s\n", k, ixn.Meta[k])
	}
	// An intention of a service-intentions config entry has no times of
	// its own: the entry has its indexes only.
	if !ixn.CreatedAt.IsZero() {
		fmt.Fprintf(w, "Created At:\t%s\n", ixn.CreatedAt.Local().Format(time.RFC1123))
	}
	if !ixn.UpdatedAt.IsZero() {
		fmt.Fprintf(w, "Updated At:\t%s\n", ixn.UpdatedAt.Local().Format(time.RFC1123))
	}
	w.Flush()
	c.ui.Output(strings.TrimRight(b.String(), "\n"))
	return 0
}

func (c *getCmd) Synopsis() string { return "Shows an intention" }

// permissionText is one HTTP permission on one line: its action, then
// what a request must match ("deny DELETE path_prefix=/users").
func permissionText(p *api.IntentionPermission) string {
	if p == nil {
		return "(none)"
	}
	parts := []string{p.Action}
	if h := p.HTTP; h != nil {
		if len(h.Methods) > 0 {
			parts = append(parts, strings.Join(h.Methods, ","))
		}
		for _, f := range []struct{ name, v string }{{"path_exact", h.PathExact}, {"path_prefix", h.PathPrefix}, {"path_regex", h.PathRegex}} {
			if f.v != "" {
				parts = append(parts, f.name+"="+strconv.Quote(f.v))
			}
		}
		for _, hd := range h.Header {
			parts = append(parts, headerText(hd))
		}
	}
	return strings.Join(parts, " ")
}

// headerText is one header condition: `header[x-team] exact="core"`,
// `header[x-debug] not present`.
func headerText(h api.IntentionHTTPHeaderPermission) string {
	var cond string
	switch {
	case h.Present:
		cond = "present"
	case h.Exact != "":
		cond = "exact=" + strconv.Quote(h.Exact)
	case h.Prefix != "":
		cond = "prefix=" + strconv.Quote(h.Prefix)
	case h.Suffix != "":
		cond = "suffix=" + strconv.Quote(h.Suffix)
	case h.Regex != "":
		cond = "regex=" + strconv.Quote(h.Regex)
	}
	if h.Invert {
		cond = "not " + cond
	}
	return "header[" + h.Name + "] " + cond
}
