package intentions

import (
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/trellismesh/trellis/connect"
)

// ixn makes an intention with its precedence computed, as the servers store it.
func ixn(src, dst, action string) *connect.Intention {
	return &connect.Intention{
		ID:              src + "=>" + dst,
		SourceName:      src,
		DestinationName: dst,
		Action:          action,
		Precedence:      connect.ComputePrecedence(src, dst),
	}
}

// names lists intentions as "src=>dst".
func names(list []*connect.Intention) string {
	var out []string
	for _, i := range list {
		out = append(out, i.SourceName+"=>"+i.DestinationName)
	}
	return strings.Join(out, " ")
}

const (
	allow = connect.IntentionAllow
	deny  = connect.IntentionDeny
)

func TestSet_Decide(t *testing.T) {
	t.Parallel()
	// Each level of precedence with the opposite action of the one below, so
	// that the answer tells which one decided.
	all := []*connect.Intention{
		ixn("*", "*", deny),
		ixn("web", "*", allow),
		ixn("*", "db", deny),
		ixn("web", "db", allow),
	}
	tests := []struct {
		name         string
		list         []*connect.Intention
		src, dst     string
		defaultAllow bool
		want         bool
		wantMatch    string // "" when the default decided
	}{
		{"exact/exact beats all", all, "web", "db", false, true, "web=>db"},
		{"*/exact beats exact/*", all, "api", "db", true, false, "*=>db"},
		{"exact/* beats */*", all, "web", "cache", false, true, "web=>*"},
		{"*/* when nothing else", all, "api", "cache", true, false, "*=>*"},
		{"exact/exact over */exact", []*connect.Intention{ixn("*", "db", allow), ixn("web", "db", deny)}, "web", "db", true, false, "web=>db"},
		{"*/exact over exact/*", []*connect.Intention{ixn("web", "*", deny), ixn("*", "db", allow)}, "web", "db", false, true, "*=>db"},
		{"exact/* over */*", []*connect.Intention{ixn("*", "*", allow), ixn("web", "*", deny)}, "web", "db", true, false, "web=>*"},
		{"default allow", all[1:2], "api", "cache", true, true, ""},
		{"default deny", all[1:2], "api", "cache", false, false, ""},
		{"no intentions, default allow", nil, "web", "db", true, true, ""},
		{"no intentions, default deny", nil, "web", "db", false, false, ""},
		{"source is not destination", []*connect.Intention{ixn("db", "web", allow)}, "web", "db", false, false, ""},
		{"upper-case request", all, "WEB", "DB", false, true, "web=>db"},
		{"upper-case intention", []*connect.Intention{ixn("Web", "DB", allow)}, "web", "db", false, true, "Web=>DB"},
		{"prefix is not a match", []*connect.Intention{ixn("web", "db", allow)}, "web2", "db", false, false, ""},
	}
	for _, test := range tests {
		t.Run(test.name, func(t *testing.T) {
			t.Parallel()
			s := NewSet(test.list)
			d := s.Decide(test.src, test.dst, test.defaultAllow)
			if d.Allowed != test.want {
				t.Errorf("Decide(%q, %q) allowed %v, want %v (%s)", test.src, test.dst, d.Allowed, test.want, d.Reason)
			}
			switch {
			case test.wantMatch == "" && d.Matched != nil:
				t.Errorf("Decide(%q, %q) matched %s, want the default", test.src, test.dst, d.Matched.ID)
			case test.wantMatch != "" && (d.Matched == nil || d.Matched.ID != test.wantMatch):
				t.Errorf("Decide(%q, %q) matched %v, want %s", test.src, test.dst, d.Matched, test.wantMatch)
			}
			if test.wantMatch == "" && !strings.Contains(d.Reason, "default") {
				t.Errorf("Decide reason %q does not say the default decided", d.Reason)
			}
			if test.wantMatch != "" && !strings.Contains(d.Reason, d.Matched.Action) {
				t.Errorf("Decide reason %q does not name the action", d.Reason)
			}
		})
	}
}

// TestSet_Decide_precedenceFromNames: an intention whose Precedence field was
// never set (or is wrong) is still ranked by its names.
func TestSet_Decide_precedenceFromNames(t *testing.T) {
	t.Parallel()
	list := []*connect.Intention{
		{SourceName: "*", DestinationName: "*", Action: allow},
		{SourceName: "web", DestinationName: "db", Action: deny},
		{SourceName: "*", DestinationName: "db", Action: allow, Precedence: 100},
	}
	d := NewSet(list).Decide("web", "db", true)
	if d.Allowed || d.Matched != list[1] {
		t.Errorf("Decide got %+v, want web=>db deny", d)
	}
	if d := NewSet(list).Decide("api", "db", false); !d.Allowed || d.Matched != list[2] {
		t.Errorf("Decide got %+v, want *=>db allow", d)
	}
}

func TestSet_nil(t *testing.T) {
	t.Parallel()
	var s *Set
	if d := s.Decide("web", "db", true); !d.Allowed || d.Matched != nil {
		t.Errorf("nil Set Decide got %+v, want the default", d)
	}
	if d := s.Decide("web", "db", false); d.Allowed {
		t.Errorf("nil Set Decide got %+v, want the default", d)
	}
	if s.Len() != 0 || len(s.All()) != 0 {
		t.Errorf("nil Set has %d intentions", s.Len())
	}
	if got, err := s.Match("source", "web"); err != nil || len(got) != 0 {
		t.Errorf("nil Set Match got %v, %v", got, err)
	}
}

func TestSort(t *testing.T) {
	t.Parallel()
	want := []*connect.Intention{
		ixn("api", "db", allow),
		ixn("web", "api", allow),
		ixn("web", "db", deny),
		ixn("*", "api", deny),
		ixn("*", "db", allow),
		ixn("api", "*", allow),
		ixn("web", "*", deny),
		ixn("*", "*", deny),
	}
	r := rand.New(rand.NewPCG(1, 2))
	for range 20 {
		list := slices.Clone(want)
		r.Shuffle(len(list), func(i, j int) { list[i], list[j] = list[j], list[i] })
		Sort(list)
		if names(list) != names(want) {
			t.Fatalf("Sort got\n%s\nwant\n%s", names(list), names(want))
		}
	}
	rev := slices.Clone(want)
	slices.Reverse(rev)
	s := NewSet(rev)
	if names(s.All()) != names(want) || s.Len() != len(want) {
		t.Errorf("NewSet().All() got %s, want %s", names(s.All()), names(want))
	}
	if rev[0].SourceName != "*" {
		t.Error("NewSet reordered the caller's slice")
	}
}

func TestSort_caseInsensitive(t *testing.T) {
	t.Parallel()
	// Names compare without case, so a name sorts in the same place however
	// it was typed; of two intentions that differ only in case (one
	// intention to the servers), deny comes first and so decides.
	list := []*connect.Intention{
		ixn("web", "db", allow),
		ixn("Web", "DB", allow),
		ixn("WEB", "db", deny),
		ixn("api", "db", allow),
		ixn("Cache", "db", allow),
	}
	Sort(list)
	if got, want := names(list), "api=>db Cache=>db WEB=>db Web=>DB web=>db"; got != want {
		t.Errorf("Sort got %s, want %s", got, want)
	}
	for i := 0; i < 2; i++ {
		slices.Reverse(list)
		if d := NewSet(list).Decide("web", "db", true); d.Allowed {
			t.Errorf("web=>db allow and WEB=>db deny: Decide got %+v, want deny", d)
		}
	}
}

func TestSet_Match(t *testing.T) {
	t.Parallel()
	s := NewSet([]*connect.Intention{
		ixn("web", "db", allow),
		ixn("api", "db", deny),
		ixn("*", "db", deny),
		ixn("web", "*", allow),
		ixn("*", "*", deny),
		ixn("web", "api", allow),
		ixn("Cache", "DB", allow),
	})
	tests := []struct {
		by, name string
		want     string
	}{
		{"destination", "db", "api=>db Cache=>DB web=>db *=>db web=>* *=>*"},
		{"destination", "DB", "api=>db Cache=>DB web=>db *=>db web=>* *=>*"},
		{"destination", "api", "web=>api web=>* *=>*"},
		{"destination", "nothing", "web=>* *=>*"},
		{"destination", "*", "web=>* *=>*"},
		{"source", "web", "web=>api web=>db *=>db web=>* *=>*"},
		{"source", "WEB", "web=>api web=>db *=>db web=>* *=>*"},
		{"source", "cache", "Cache=>DB *=>db *=>*"},
		{"source", "nothing", "*=>db *=>*"},
	}
	for _, test := range tests {
		got, err := s.Match(test.by, test.name)
		if err != nil {
			t.Errorf("Match(%q, %q): %v", test.by, test.name, err)
			continue
		}
		if names(got) != test.want {
			t.Errorf("Match(%q, %q) got %s, want %s", test.by, test.name, names(got), test.want)
		}
	}
	for _, by := range []string{"", "src", "Source", "both"} {
		if _, err := s.Match(by, "web"); err == nil {
			t.Errorf("Match(%q) succeeded, want an error", by)
		}
	}
}

// FuzzSet_Decide checks Decide against a plain reading of the rules: the
// matching intention of highest precedence decides, whatever the order of
// the list.
func FuzzSet_Decide(f *testing.F) {
	f.Add("web", "db", "web", "db", "*", "db", true)
	f.Add("WEB", "db", "web", "*", "*", "*", false)
	f.Add("", "*", "*", "db", "web", "db", false)
	f.Fuzz(func(t *testing.T, src, dst, s1, d1, s2, d2 string, defaultAllow bool) {
		list := []*connect.Intention{ixn(s1, d1, allow), ixn(s2, d2, deny)}
		matches := func(i *connect.Intention) bool {
			return (i.SourceName == "*" || strings.EqualFold(i.SourceName, src)) &&
				(i.DestinationName == "*" || strings.EqualFold(i.DestinationName, dst))
		}
		var want *connect.Intention
		for _, i := range list {
			if matches(i) && (want == nil || i.Precedence > want.Precedence ||
				i.Precedence == want.Precedence && i.Action == deny) {
				want = i
			}
		}
		for range 2 {
			d := NewSet(list).Decide(src, dst, defaultAllow)
			switch {
			case want == nil:
				if d.Matched != nil || d.Allowed != defaultAllow {
					t.Fatalf("Decide(%q, %q) over %s got %+v, want the default", src, dst, names(list), d)
				}
			case d.Matched == nil || d.Matched.Precedence != want.Precedence || d.Allowed != (want.Action == allow):
				t.Fatalf("Decide(%q, %q) over %s got %+v, want %s (%s)", src, dst, names(list), d, want.ID, want.Action)
			}
			slices.Reverse(list)
		}
	})
}

// An intention with HTTP permissions denies a plain connection, even under
// a default allow, and says why.
func TestSet_Decide_permissionsDenyConnections(t *testing.T) {
	s := NewSet([]*connect.Intention{{
		SourceName: "web", DestinationName: "api",
		Permissions: []*connect.IntentionPermission{{Action: connect.IntentionAllow, HTTP: &connect.IntentionHTTPPermission{PathPrefix: "/"}}},
	}})
	d := s.Decide("web", "api", true)
	if d.Allowed || d.Matched == nil {
		t.Fatalf("decision %+v: want denied by the matched L7 intention", d)
	}
	if !strings.Contains(d.Reason, "HTTP permissions") {
		t.Errorf("reason %q does not say the permissions decided", d.Reason)
	}
}
