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
	"net"
	"os"
	"strconv"
	"strings"
	"time"

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
		"The `address` of the agent's HTTP API, host:port or a URL. Defaults to $"+api.HTTPAddrEnv+", then $"+consulHTTPAddrEnv+", then "+api.DefaultAddress+".")
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

// consulHTTPAddrEnv is Consul's variable for the agent address, read when
// $TRELLIS_HTTP_ADDR is not set (by api.DefaultConfig).
const consulHTTPAddrEnv = "CONSUL_HTTP_ADDR"

// APIClient returns a client for the agent the flags name.
func (f *HTTPFlags) APIClient() (*api.Client, error) {
	cfg := api.DefaultConfig()
	source := "-http-addr"
	switch {
	case f.addr != "":
		cfg.Address = f.addr
	case os.Getenv(api.HTTPAddrEnv) != "":
		source = "$" + api.HTTPAddrEnv
	case os.Getenv(consulHTTPAddrEnv) != "":
		source = "$" + consulHTTPAddrEnv
	}
	if err := checkAddress(cfg.Address); err != nil {
		return nil, fmt.Errorf("%s %w", source, err)
	}
	cfg.Datacenter = f.datacenter
	c, err := api.NewClient(cfg)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", source, err)
	}
	return c, nil
}

// checkAddress refuses an agent address of host:port form (no scheme)
// that lacks its port or whose port is not a number: dialling port 80
// quietly for "127.0.0.1" would only fail later, and less clearly. (As
// Consul's -http-addr, the address must include the port; a URL with a
// scheme keeps the scheme's default port.)
func checkAddress(addr string) error {
	if addr == "" || strings.Contains(addr, "://") {
		return nil
	}
	hostport := strings.TrimSuffix(addr, "/")
	host, port, err := net.SplitHostPort(hostport)
	if err != nil || host == "" && port == "" {
		return fmt.Errorf("%q has no port: give host:port, such as %s", addr, api.DefaultAddress)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return fmt.Errorf("%q: %q is not a port number (1 to 65535)", addr, port)
	}
	return nil
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
	err := parse(fs, args)
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

// parse is fs.Parse, with a value that does not parse as its flag's type
// said in words ("-http-port: \"abc\" is not a port number") rather than as
// the flag package does ("invalid value \"abc\" for flag -http-port:
// strconv.Atoi: parsing \"abc\": invalid syntax").
func parse(fs *flag.FlagSet, args []string) error {
	var bad error
	var orig []*flag.Flag
	var values []flag.Value
	fs.VisitAll(func(f *flag.Flag) {
		orig, values = append(orig, f), append(values, f.Value)
		f.Value = &wordedValue{Value: f.Value, name: f.Name, bad: &bad}
	})
	defer func() {
		for i, f := range orig {
			f.Value = values[i]
		}
	}()
	err := fs.Parse(args)
	if err != nil && bad != nil {
		return bad
	}
	return err
}

// wordedValue is a flag value whose Set, when the value does not parse as
// a number or bool, records what is wrong in words.
type wordedValue struct {
	flag.Value
	name string
	bad  *error
}

func (v *wordedValue) Set(s string) error {
	err := v.Value.Set(s)
	if err == nil {
		return nil
	}
	var ve valueError
	if errors.As(err, &ve) {
		*v.bad = fmt.Errorf("-%s: %s", v.name, ve.msg)
		return err
	}
	var ne *strconv.NumError
	if errors.As(err, &ne) {
		*v.bad = fmt.Errorf("-%s: %s", v.name, valueWords(v.name, s, ne.Func == "ParseBool", ne.Func == "ParseFloat"))
		return err
	}
	// The flag package's own values hide strconv's error; their Get says
	// the type.
	if g, ok := v.Value.(flag.Getter); ok {
		switch g.Get().(type) {
		case bool:
			*v.bad = fmt.Errorf("-%s: %s", v.name, valueWords(v.name, s, true, false))
		case int, int64, uint, uint64:
			*v.bad = fmt.Errorf("-%s: %s", v.name, valueWords(v.name, s, false, false))
		case float64:
			*v.bad = fmt.Errorf("-%s: %s", v.name, valueWords(v.name, s, false, true))
		case time.Duration:
			*v.bad = fmt.Errorf("-%s: %q is not a duration (a number and a unit, such as 10s or 1m30s)", v.name, s)
		}
	}
	return err
}

// IsBoolFlag keeps -flag (without =value) working for bool flags.
func (v *wordedValue) IsBoolFlag() bool {
	b, ok := v.Value.(interface{ IsBoolFlag() bool })
	return ok && b.IsBoolFlag()
}

// valueWords says why s is not a value of the flag name: a bool, a float,
// else a whole number (a port number for the -...port flags).
func valueWords(name, s string, isBool, isFloat bool) string {
	switch {
	case isBool:
		return fmt.Sprintf("%q is not true or false", s)
	case strings.HasSuffix(name, "port"):
		return fmt.Sprintf("%q is not a port number", s)
	case isFloat:
		return fmt.Sprintf("%q is not a number", s)
	}
	if _, err := strconv.ParseFloat(s, 64); err == nil {
		return fmt.Sprintf("%s is not a whole number in range", s)
	}
	return fmt.Sprintf("%q is not a whole number", s)
}

// ParseArgs is Parse for a command that takes arguments. After parsing, it
// refuses a flag among the arguments (see LateFlag), unless "--" ended the
// flags, printing the error and the usage; what names the arguments in the
// error ("FILE", "the service name"). It returns the arguments.
func ParseArgs(ui cli.Ui, fs *flag.FlagSet, args []string, help, what string) (rest []string, ok bool, code int) {
	if ok, code := Parse(ui, fs, args, help); !ok {
		return nil, false, code
	}
	rest = fs.Args()
	if n := len(args) - len(rest); n > 0 && args[n-1] == "--" {
		return rest, true, 0
	}
	if err := LateFlag(rest, what); err != nil {
		ui.Error(fmt.Sprintf("Error: %v", err))
		ui.Error("")
		ui.Error(help)
		return nil, false, 1
	}
	return rest, true, 0
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

// valueError is an error of a Set of ours, said whole after the flag's
// name ("-id: given twice ...").
type valueError struct{ msg string }

func (e valueError) Error() string { return e.msg }

// OnceString is a string flag that may be given once: a second value is
// refused instead of silently replacing the first.
type OnceString struct {
	Value string
	set   bool
}

// String returns the value.
func (s *OnceString) String() string { return s.Value }

// Set sets the value, or refuses a second one.
func (s *OnceString) Set(v string) error {
	if s.set {
		return valueError{fmt.Sprintf("given twice (%q, then %q): give it once", s.Value, v)}
	}
	s.Value, s.set = v, true
	return nil
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

// KeyValues reads the key=value pairs of a repeatable flag (-meta) into a
// map, nil when there are none. A pair without '=' or an empty key is
// refused, and so is a key given twice: the last would win silently.
func KeyValues(flagName string, pairs []string) (map[string]string, error) {
	var m map[string]string
	for _, kv := range pairs {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("%s %q: want key=value", flagName, kv)
		}
		if old, dup := m[k]; dup {
			return nil, fmt.Errorf("%s: key %q is given twice (%q and %q): give each key once", flagName, k, k+"="+old, kv)
		}
		if m == nil {
			m = map[string]string{}
		}
		m[k] = v
	}
	return m, nil
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
