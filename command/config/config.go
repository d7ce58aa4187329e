// Package config holds the `trellis config` commands: write, read, list
// and delete. They manage config entries, the cluster-wide settings that
// steer and authorize mesh traffic (service-defaults, service-router,
// service-splitter, service-resolver, service-intentions, proxy-defaults);
// each command is a file of this package.
package config

import (
	"errors"
	"flag"
	"fmt"
	"strings"

	"github.com/hashicorp/cli"

	"github.com/trellismesh/trellis/api"
	"github.com/trellismesh/trellis/command/flags"
)

// kinds lists the kinds of entry, for messages (commands cannot import
// connect/configentry; the agent checks the kind).
var kinds = []string{api.ProxyDefaults, api.ServiceDefaults, api.ServiceRouter, api.ServiceSplitter, api.ServiceResolver, api.ServiceIntentions}

// usageErr is an error in the shape of the arguments: it is printed with
// the command's usage.
type usageErr struct{ error }

func usagef(format string, args ...any) error { return usageErr{fmt.Errorf(format, args...)} }

// checkKindName refuses a missing -kind or -name.
func checkKindName(kind, name string, needName bool) error {
	if kind == "" {
		return usagef("-kind is required: one of %s", strings.Join(kinds, ", "))
	}
	if needName && name == "" {
		return usagef("-name is required")
	}
	return nil
}

// noArgs refuses arguments where a command takes none.
func noArgs(fs *flag.FlagSet, command string) error {
	if fs.NArg() > 0 {
		return usagef("%s takes no arguments (got %q); give -kind and -name", command, fs.Args())
	}
	return nil
}

// base holds what every config command has.
type base struct {
	ui   cli.Ui
	fs   *flag.FlagSet
	http flags.HTTPFlags
	help string
}

// init builds the flag set: own (may be nil) plus the HTTP flags, and the
// query flags when query.
func (b *base) init(ui cli.Ui, name, text string, own *flag.FlagSet, query bool) {
	b.ui = ui
	b.fs, b.help = flags.CommandFlagSet(&b.http, name, text, own, query)
}

// Help returns the command's usage.
func (b *base) Help() string { return b.help }

// argsError prints an error about the arguments, with the usage when it is
// about their shape.
func (b *base) argsError(err error) {
	b.ui.Error("Error: " + err.Error())
	var ue usageErr
	if errors.As(err, &ue) {
		b.ui.Error("")
		b.ui.Error(b.help)
	}
}

// client returns the API client, printing the error when there is none.
func (b *base) client() (*api.Client, bool) {
	c, err := b.http.APIClient()
	if err != nil {
		b.ui.Error("Error: " + err.Error())
		return nil, false
	}
	return c, true
}

// isStatus reports whether err is an answer of the agent with code.
func isStatus(err error, code int) bool {
	var se *api.StatusError
	return errors.As(err, &se) && se.Code == code
}
