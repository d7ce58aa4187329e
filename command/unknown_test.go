package command

import (
	"maps"
	"slices"
	"strings"
	"testing"

	"github.com/hashicorp/cli"
)

func TestUnknownCommand(t *testing.T) {
	names := slices.Collect(maps.Keys(Registry(cli.NewMockUi())))
	for _, tc := range []struct {
		args []string
		err  string
	}{
		{args: nil},
		{args: []string{"-h"}},
		{args: []string{"members", "-detailed"}},
		{args: []string{"intention", "create", "web", "db"}},
		{args: []string{"intention"}},
		{args: []string{"intention", "-h"}},
		{args: []string{"tls", "ca", "create"}},
		{args: []string{"connect", "proxy", "-sidecar-for", "web"}},
		{args: []string{"bogus"}, err: `unknown command "trellis bogus" (trellis -h lists the commands)`},
		{args: []string{"memebrs"}, err: `unknown command "trellis memebrs": did you mean "trellis members"?`},
		{args: []string{"intention", "bogus"}, err: `unknown command "trellis intention bogus" (the subcommands of trellis intention are check, create, delete, get, list, match)`},
		{args: []string{"intention", "creat", "web", "db"}, err: `did you mean "trellis intention create"?`},
		{args: []string{"connect", "bogus"}, err: `unknown command "trellis connect bogus" (the subcommands of trellis connect are ca, chain, metrics, proxy, proxy-config)`},
		{args: []string{"connect", "ca", "rots"}, err: `did you mean "trellis connect ca roots"?`},
	} {
		err := UnknownCommand(names, tc.args)
		switch {
		case tc.err == "" && err != nil:
			t.Errorf("UnknownCommand(%q) = %v, want nil", tc.args, err)
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("UnknownCommand(%q) = %v, want an error with %q", tc.args, err, tc.err)
		}
	}
}
