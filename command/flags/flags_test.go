package flags

import (
	"strconv"
	"strings"
	"testing"

	"github.com/hashicorp/cli"
)

// TestClientFlags_HelpNamesTheEnvironment: -http-addr's help gives the
// whole order of defaults, as cli.md does.
func TestClientFlags_HelpNamesTheEnvironment(t *testing.T) {
	var h HTTPFlags
	_, help := CommandFlagSet(&h, "x", "Usage: trellis x", nil, false)
	flat := strings.Join(strings.Fields(help), " ")
	if want := "Defaults to $TRELLIS_HTTP_ADDR, then $CONSUL_HTTP_ADDR, then 127.0.0.1:8500."; !strings.Contains(flat, want) {
		t.Errorf("help lacks %q:\n%s", want, help)
	}
}

func TestCheckAddress(t *testing.T) {
	for _, tc := range []struct{ addr, err string }{
		{"127.0.0.1:8500", ""},
		{"localhost:17500/", ""},
		{"[::1]:8500", ""},
		{"http://127.0.0.1", ""},
		{"https://agent.example", ""},
		{"127.0.0.1", `"127.0.0.1" has no port: give host:port, such as 127.0.0.1:8500`},
		{"agent.example", `"agent.example" has no port`},
		{"::1", `"::1" has no port`},
		{"127.0.0.1:", `"" is not a port number`},
		{"127.0.0.1:http", `"http" is not a port number`},
		{"127.0.0.1:70000", `"70000" is not a port number`},
	} {
		err := checkAddress(tc.addr)
		switch {
		case tc.err == "" && err != nil:
			t.Errorf("checkAddress(%q) = %v, want nil", tc.addr, err)
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("checkAddress(%q) = %v, want an error with %q", tc.addr, err, tc.err)
		}
	}
}

func TestAPIClient_AddressWithoutPort(t *testing.T) {
	t.Setenv("TRELLIS_HTTP_ADDR", "")
	t.Setenv("CONSUL_HTTP_ADDR", "10.0.0.5")
	var h HTTPFlags
	if _, err := h.APIClient(); err == nil || !strings.Contains(err.Error(), `$CONSUL_HTTP_ADDR "10.0.0.5" has no port`) {
		t.Errorf("CONSUL_HTTP_ADDR without a port: %v", err)
	}
	fs, _ := CommandFlagSet(&h, "x", "", nil, false)
	if err := fs.Parse([]string{"-http-addr=127.0.0.1"}); err != nil {
		t.Fatal(err)
	}
	if _, err := h.APIClient(); err == nil || !strings.Contains(err.Error(), `-http-addr "127.0.0.1" has no port`) {
		t.Errorf("-http-addr without a port: %v", err)
	}
}

// TestParseArgs: a flag after the arguments is refused with the helpful
// message, unless "--" ended the flags.
func TestParseArgs(t *testing.T) {
	for _, tc := range []struct {
		args []string
		rest []string
		err  string
	}{
		{args: []string{"-cas", "f.hcl"}, rest: []string{"f.hcl"}},
		{args: []string{"f.hcl", "-cas"}, err: "Error: flag -cas comes after FILE: give the flags first"},
		{args: []string{"-"}, rest: []string{"-"}},
		{args: []string{"--", "-odd.hcl"}, rest: []string{"-odd.hcl"}},
		{args: []string{"-nope"}, err: "flag provided but not defined: -nope"},
	} {
		ui := cli.NewMockUi()
		fs := NewFlagSet("config write")
		fs.Bool("cas", false, "")
		rest, ok, code := ParseArgs(ui, fs, tc.args, "Usage: trellis config write", "FILE")
		if tc.err == "" {
			if !ok || code != 0 || strings.Join(rest, " ") != strings.Join(tc.rest, " ") {
				t.Errorf("ParseArgs(%q) = %q, %v, %d (%s); want %q", tc.args, rest, ok, code, ui.ErrorWriter, tc.rest)
			}
			continue
		}
		if ok || code != 1 || !strings.Contains(ui.ErrorWriter.String(), tc.err) || !strings.Contains(ui.ErrorWriter.String(), "Usage:") {
			t.Errorf("ParseArgs(%q) = %v, %d, stderr %q; want code 1 with %q and the usage", tc.args, ok, code, ui.ErrorWriter, tc.err)
		}
	}
}

// intVal is a flag value of our own, as agent/config's are: its Set gives
// strconv's error.
type intVal struct{ n *int }

func (v intVal) String() string { return "" }
func (v intVal) Set(s string) error {
	n, err := strconv.Atoi(s)
	if err == nil {
		*v.n = n
	}
	return err
}

// TestParse_ValueWords: a value that does not parse is said in words, not
// with strconv's or the flag package's text.
func TestParse_ValueWords(t *testing.T) {
	for _, tc := range []struct{ arg, want string }{
		{"-http-port=abc", `Error: -http-port: "abc" is not a port number`},
		{"-modify-index=x", `Error: -modify-index: "x" is not a whole number`},
		{"-modify-index=-1", `Error: -modify-index: -1 is not a whole number in range`},
		{"-count=2.5", `Error: -count: 2.5 is not a whole number in range`},
		{"-cas=maybe", `Error: -cas: "maybe" is not true or false`},
		{"-timeout=soon", `Error: -timeout: "soon" is not a duration`},
		{"-nope", "Error: flag provided but not defined: -nope"},
	} {
		ui := cli.NewMockUi()
		fs := NewFlagSet("x")
		var port int
		fs.Var(intVal{&port}, "http-port", "")
		fs.Uint64("modify-index", 0, "")
		fs.Int("count", 0, "")
		fs.Bool("cas", false, "")
		fs.Duration("timeout", 0, "")
		ok, code := Parse(ui, fs, []string{tc.arg}, "Usage: x")
		stderr := ui.ErrorWriter.String()
		if ok || code != 1 || !strings.HasPrefix(stderr, tc.want) || strings.Contains(stderr, "strconv") || !strings.Contains(stderr, "Usage: x") {
			t.Errorf("Parse(%s): %v %d %q; want %q and the usage", tc.arg, ok, code, stderr, tc.want)
		}
	}
	// The flags keep working, bool ones without a value too.
	fs := NewFlagSet("x")
	var port int
	fs.Var(intVal{&port}, "http-port", "")
	cas := fs.Bool("cas", false, "")
	if ok, _ := Parse(cli.NewMockUi(), fs, []string{"-cas", "-http-port=17500"}, ""); !ok || !*cas || port != 17500 {
		t.Errorf("valid flags: ok %v, cas %v, port %d", ok, *cas, port)
	}
	if _, wrapped := fs.Lookup("cas").Value.(*wordedValue); wrapped {
		t.Error("Parse left its wrappers in the flag set")
	}
}
