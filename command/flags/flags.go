// Package flags holds what the CLI commands share: the flags that say how to
// reach an agent (-http-addr, env TRELLIS_HTTP_ADDR), parsing with -h, and
// the layout of help texts.
package flags

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/hashicorp/cli"

	"github.com/trellismesh/trellis/api"
)

// HTTPFlags are the flags of every command that talks to an agent.
type HTTPFlags struct {
	addr       string
	datacenter string
	stale      bool
}

// ClientFlags returns the flags that say which agent to talk to.
func (f *HTTPFlags) ClientFlags() *flag.FlagSet {
	fs := flag.NewFlagSet("", flag.ContinueOnError)
	fs.StringVar(&f.addr, "http-addr", "",
		"The `address` of the agent's HTTP API, host:port or a URL. Defaults to $"+api.HTTPAddrEnv+", then 127.0.0.1:8500.")
	return fs
}

// ServerFlags returns the flags that shape a query: -datacenter and -stale.
func (f *HTTPFlags) ServerFlags() *flag.FlagSet {
	fs := flag.NewFlagSet("", flag.ContinueOnError)
	fs.StringVar(&f.datacenter, "datacenter", "", "The `name` of the datacenter to query. Defaults to the agent's.")
	fs.BoolVar(&f.stale, "stale", false, "Let any server answer, not only the leader; the answer may be slightly out of date.")
	return fs
}

// Stale reports whether -stale was given.
func (f *HTTPFlags) Stale() bool { return f.stale }

// QueryOptions returns the query options the flags ask for.
func (f *HTTPFlags) QueryOptions() *api.QueryOptions {
	return &api.QueryOptions{Datacenter: f.datacenter, AllowStale: f.stale}
}

// APIClient returns a client for the agent the flags name.
func (f *HTTPFlags) APIClient() (*api.Client, error) {
	cfg := api.DefaultConfig()
	if f.addr != "" {
		cfg.Address = f.addr
	}
	cfg.Datacenter = f.datacenter
	c, err := api.NewClient(cfg)
	if err != nil {
		return nil, fmt.Errorf("-http-addr: %w", err)
	}
	return c, nil
}

// Merge adds every flag of src to dst.
func Merge(dst, src *flag.FlagSet) {
	src.VisitAll(func(f *flag.Flag) { dst.Var(f.Value, f.Name, f.Usage) })
}

// NewFlagSet returns a flag set that reports errors instead of exiting and
// prints nothing itself (Parse does).
func NewFlagSet(name string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	return fs
}

// Parse parses args. It returns ok=false with the exit code the command
// should return: 0 after printing help for -h, 1 after printing the error
// and usage for a bad flag.
func Parse(ui cli.Ui, fs *flag.FlagSet, args []string, help string) (ok bool, code int) {
	err := fs.Parse(args)
	if err == nil {
		return true, 0
	}
	if errors.Is(err, flag.ErrHelp) {
		ui.Output(help)
		return false, 0
	}
	ui.Error(fmt.Sprintf("Error: %v", err))
	ui.Error("")
	ui.Error(help)
	return false, 1
}

// Usage returns a help text: the text, then each group of flags under its heading.
func Usage(text string, groups ...Group) string {
	var b bytes.Buffer
	b.WriteString(strings.TrimSpace(text))
	b.WriteString("\n")
	for _, g := range groups {
		if g.Flags == nil {
			continue
		}
		n := 0
		g.Flags.VisitAll(func(*flag.Flag) { n++ })
		if n == 0 {
			continue
		}
		fmt.Fprintf(&b, "\n%s:\n", g.Title)
		g.Flags.VisitAll(func(f *flag.Flag) {
			name, usage := flag.UnquoteUsage(f)
			if name != "" {
				fmt.Fprintf(&b, "\n  -%s=<%s>\n", f.Name, name)
			} else {
				fmt.Fprintf(&b, "\n  -%s\n", f.Name)
			}
			fmt.Fprintf(&b, "     %s\n", wrap(usage, 72, "     "))
		})
	}
	return strings.TrimRight(b.String(), "\n")
}

// Group is a titled set of flags in a help text.
type Group struct {
	Title string
	Flags *flag.FlagSet
}

func wrap(s string, width int, indent string) string {
	var lines []string
	line := ""
	for _, w := range strings.Fields(s) {
		if line != "" && len(line)+1+len(w) > width {
			lines = append(lines, line)
			line = w
			continue
		}
		if line != "" {
			line += " "
		}
		line += w
	}
	if line != "" {
		lines = append(lines, line)
	}
	return strings.Join(lines, "\n"+indent)
}

// StringSlice is a repeatable string flag.
type StringSlice []string

// String returns the values joined with commas.
func (s *StringSlice) String() string { return strings.Join(*s, ",") }

// Set appends a value.
func (s *StringSlice) Set(v string) error {
	*s = append(*s, v)
	return nil
}

// ErrorMessage turns an API error into a line for the user.
func ErrorMessage(what string, err error) string {
	var se *api.StatusError
	if errors.As(err, &se) {
		return fmt.Sprintf("Error %s: the agent answered %d: %s", what, se.Code, se.Body)
	}
	return fmt.Sprintf("Error %s: %v", what, err)
}

// CommandFlagSet builds a command's flag set: own (the command's flags; nil
// for none) merged with h's HTTP client flags and, when query, its query
// flags. It returns the set and the usage text, text followed by the three
// groups of flags.
func CommandFlagSet(h *HTTPFlags, name, text string, own *flag.FlagSet, query bool) (*flag.FlagSet, string) {
	if own == nil {
		own = NewFlagSet(name)
	}
	hf := h.ClientFlags()
	groups := []Group{{Title: "HTTP API Options", Flags: hf}}
	var sf *flag.FlagSet
	if query {
		sf = h.ServerFlags()
		groups = append(groups, Group{Title: "Query Options", Flags: sf})
	}
	groups = append(groups, Group{Title: "Command Options", Flags: own})
	help := Usage(text, groups...)
	Merge(own, hf)
	if sf != nil {
		Merge(own, sf)
	}
	return own, help
}

// LateFlag refuses a flag among args (what is left after parsing): Go's
// flag parsing stops at the first argument, so a flag given after it would
// otherwise be taken as an argument. what names the arguments in the error
// ("the service name").
func LateFlag(args []string, what string) error {
	for _, a := range args {
		if len(a) > 1 && strings.HasPrefix(a, "-") {
			return fmt.Errorf("flag %s comes after %s: give the flags first", a, what)
		}
	}
	return nil
}
