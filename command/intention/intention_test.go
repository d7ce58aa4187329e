package intention

import (
	"strings"
	"testing"
)

func TestCheckName(t *testing.T) {
	for _, tc := range []struct{ in, want, err string }{
		{in: "web", want: "web"},
		{in: "*", want: "*"},
		{in: "default/web", want: "web"},
		{in: "default/*", want: "*"},
		{in: strings.Repeat("a", 255), want: strings.Repeat("a", 255)},
		{in: "prod/web", err: `SRC "prod/web": namespace "prod" is not supported: there is one namespace, default`},
		{in: "default/", err: "SRC is empty"},
		{in: "", err: "SRC is empty"},
		{in: strings.Repeat("a", 256), err: "SRC is 256 characters long: a service name has at most 255"},
		{in: "web app", err: `SRC "web app" is not a service name`},
		{in: "-web", err: `SRC "-web" is not a service name`},
	} {
		got, err := checkName("SRC", tc.in)
		switch {
		case tc.err == "" && (err != nil || got != tc.want):
			t.Errorf("checkName(%.20q) = %q, %v; want %q", tc.in, got, err, tc.want)
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("checkName(%.20q) = %q, %v; want an error with %q", tc.in, got, err, tc.err)
		}
	}
}

func TestIDOrPair(t *testing.T) {
	const id = "0b4a1b3e-6f0e-4c1a-9a43-2d5e1c7f8a90"
	for _, tc := range []struct {
		args              []string
		id, src, dst, err string
	}{
		{args: []string{id}, id: id},
		{args: []string{"default/newone", "db"}, src: "newone", dst: "db"},
		{args: []string{"web"}, err: `intention get takes SRC and DST, or an intention ID: "web" is not an ID`},
		{args: []string{"web", "db", "-x"}, err: "flag -x comes after the arguments"},
		{args: []string{"a", "b", "c"}, err: "takes SRC and DST, or an intention ID (got 3 arguments)"},
		{args: []string{"team/web", "db"}, err: `namespace "team" is not supported`},
	} {
		gotID, src, dst, err := idOrPair(tc.args, "intention get")
		switch {
		case tc.err == "" && (err != nil || gotID != tc.id || src != tc.src || dst != tc.dst):
			t.Errorf("idOrPair(%q) = %q, %q, %q, %v", tc.args, gotID, src, dst, err)
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("idOrPair(%q) error %v, want one with %q", tc.args, err, tc.err)
		}
	}
}
