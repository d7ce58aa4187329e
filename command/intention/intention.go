// Package intention holds the `trellis intention` commands: create, delete,
// get, list, check and match. Intentions say which services may connect to
// which; each command is a file of this package.
package intention

import (
	"errors"
	"flag"
	"fmt"
	"regexp"
	"strings"

	"github.com/hashicorp/cli"

	"github.com/trellismesh/trellis/api"
	"github.com/trellismesh/trellis/command/flags"
)

// serviceNameRE is the rule of connect.ValidateServiceName, which commands
// cannot import: letters, digits, '.', '_' and '-', starting and ending
// with a letter or digit, at most maxNameLength characters.
var serviceNameRE = regexp.MustCompile(`^[a-zA-Z0-9]([a-zA-Z0-9._-]*[a-zA-Z0-9])?$`)

// maxNameLength is the longest service name.
const maxNameLength = 255

// defaultNamespace is the one namespace: "default/web", as Consul's
// clients may write a name, means web.
const defaultNamespace = "default"

// checkName returns the service name (or *) that the argument arg gives,
// without a "default/" namespace, or an error naming arg.
func checkName(arg, name string) (string, error) {
	if ns, rest, ok := strings.Cut(name, "/"); ok {
		if ns != defaultNamespace {
			return "", fmt.Errorf("%s %q: namespace %q is not supported: there is one namespace, default (write %s or default/%s)", arg, name, ns, rest, rest)
		}
		name = rest
	}
	switch {
	case name == api.IntentionWildcard:
		return name, nil
	case name == "":
		return "", fmt.Errorf("%s is empty: give a service name or *", arg)
	case len(name) > maxNameLength:
		return "", fmt.Errorf("%s is %d characters long: a service name has at most %d", arg, len(name), maxNameLength)
	case !serviceNameRE.MatchString(name):
		return "", fmt.Errorf("%s %q is not a service name (letters, digits, '.', '_' and '-', starting and ending with a letter or digit; or * for any)", arg, name)
	}
	return name, nil
}

// usageErr is an error in the shape of the arguments: it is printed with
// the command's usage.
type usageErr struct{ error }

// pair reads the SRC and DST arguments.
func pair(fs *flag.FlagSet, command string) (src, dst string, err error) {
	args := fs.Args()
	if err := flagsAfterArgs(args); err != nil {
		return "", "", err
	}
	if len(args) != 2 {
		return "", "", usageErr{fmt.Errorf("%s takes two arguments, SRC and DST (got %d)", command, len(args))}
	}
	if src, err = checkName("SRC", args[0]); err != nil {
		return "", "", err
	}
	if dst, err = checkName("DST", args[1]); err != nil {
		return "", "", err
	}
	return src, dst, nil
}

// flagsAfterArgs refuses a flag given after the arguments, which Go's flag
// parsing would otherwise take as an argument.
func flagsAfterArgs(args []string) error {
	if err := flags.LateFlag(args, "the arguments"); err != nil {
		return usageErr{err}
	}
	return nil
}

// isStatus reports whether err is an answer of the agent with code.
func isStatus(err error, code int) bool {
	var se *api.StatusError
	return errors.As(err, &se) && se.Code == code
}

// argsError prints an error about the arguments, with the usage when it
// is about their shape.
func argsError(ui cli.Ui, help string, err error) {
	ui.Error("Error: " + err.Error())
	var ue usageErr
	if errors.As(err, &ue) {
		ui.Error("")
		ui.Error(help)
	}
}

// base holds what every intention command has.
type base struct {
	ui   cli.Ui
	fs   *flag.FlagSet
	http flags.HTTPFlags
	help string
}

// init builds the flag set: own (the command's flags; may be nil) plus the
// HTTP flags, and the query flags when query.
func (b *base) init(ui cli.Ui, name, text string, own *flag.FlagSet, query bool) {
	b.ui = ui
	b.fs, b.help = flags.CommandFlagSet(&b.http, name, text, own, query)
}

// Help returns the command's usage.
func (b *base) Help() string { return b.help }

// client returns the API client, printing the error when there is none.
func (b *base) client() (*api.Client, bool) {
	c, err := b.http.APIClient()
	if err != nil {
		b.ui.Error("Error: " + err.Error())
		return nil, false
	}
	return c, true
}
