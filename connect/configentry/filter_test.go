package configentry

import (
	"strings"
	"testing"
)

func TestFilter(t *testing.T) {
	v1 := FilterInstance{Node: "n1", Service: FilterService{ID: "web-1", Service: "web", Tags: []string{"canary", "eu"}, Meta: map[string]string{"version": "v1"}, Port: 8080}}
	v2 := FilterInstance{Node: "n2", Service: FilterService{ID: "web-2", Service: "web", Meta: map[string]string{"version": "v2"}, Port: 9090}}
	bare := FilterInstance{}
	cases := []struct {
		expr string
		want [3]bool // v1, v2, bare
	}{
		{"", [3]bool{true, true, true}},
		{"Service.Meta.version == v1", [3]bool{true, false, false}},
		{`Service.Meta.version == "v2"`, [3]bool{false, true, false}},
		{`Service.Meta.version != v1`, [3]bool{false, true, true}},
		{`"canary" in Service.Tags`, [3]bool{true, false, false}},
		{`"canary" not in Service.Tags`, [3]bool{false, true, true}},
		{`Service.Port == 9090`, [3]bool{false, true, false}},
		{`Node matches "^n[12]$" and Service.Service == web`, [3]bool{true, true, false}},
		{`Service.Tags is empty`, [3]bool{false, true, true}},
		{`Service.Meta contains version`, [3]bool{true, true, false}},
		{`any Service.Tags as t { t == eu }`, [3]bool{true, false, false}},
		{`all Service.Meta as k, v { v == v1 }`, [3]bool{true, false, true}},
		{`not (Service.ID == "web-1")`, [3]bool{false, true, true}},
	}
	for _, c := range cases {
		f, err := CompileFilter(c.expr)
		if err != nil {
			t.Errorf("CompileFilter(%q): %v", c.expr, err)
			continue
		}
		for i, inst := range []FilterInstance{v1, v2, bare} {
			if got := f.Match(inst); got != c.want[i] {
				t.Errorf("%q on instance %d: %v, want %v", c.expr, i, got, c.want[i])
			}
		}
		if f.String() != c.expr {
			t.Errorf("String() = %q", f.String())
		}
	}
	var nilFilter *Filter
	if !nilFilter.Match(v1) {
		t.Error("a nil filter matches everything")
	}
}

func TestCompileFilter_Refused(t *testing.T) {
	for expr, want := range map[string]string{
		"Service.Meta.version ==":            "no match found",
		"Service.Version == v1":              `unknown field "Version"`,
		"Nodes == x":                         `unknown field "Nodes"`,
		"Service.Port == eighty":             "is a number",
		"Service.Tags == x":                  "cannot be compared",
		`Service.Port matches "8.*"`:         "not a string",
		`Node matches "(["`:                  "missing closing",
		`"x" in Service.Port`:                "not a list",
		`Service.Meta.version.major == 1`:    "has no field",
		`Service.Tags.first == x`:            "not a list index",
		`any Service.Port as p { p == 1 }`:   "not a list or a map",
		`any Service.Tags as t { t.x == 1 }`: "has no field",
		strings.Repeat("x", 5000):            "longer than",
	} {
		_, err := CompileFilter(expr)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("CompileFilter(%.40q) = %v, want an error containing %q", expr, err, want)
		}
	}
}

// TestCompileFilter_Pathological checks that expressions on which go-bexpr's
// parser backtracks exponentially are refused quickly rather than parsed
// for minutes.
func TestCompileFilter_Pathological(t *testing.T) {
	for _, expr := range []string{
		"((((((((((",
		"(((" + strings.Repeat("not ", 300) + "a == )))",
		"(((a == b and (c == d) and (e == f) and (g ==",
		strings.Repeat("(((Node == b))) and ", 100) + "(((Node ==)))",
	} {
		if _, err := CompileFilter(expr); err == nil {
			t.Errorf("CompileFilter(%.30q) succeeded", expr)
		}
	}
	ok := strings.Repeat("(Node == a) or ", 40) + `(Service.Meta.version == v1 and "canary" in Service.Tags)`
	if _, err := CompileFilter(ok); err != nil {
		t.Errorf("a long sensible filter: %v", err)
	}
}
