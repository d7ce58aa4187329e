package intentions

import (
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/trellismesh/trellis/connect"
)

func TestSet_DecideHTTP(t *testing.T) {
	t.Parallel()
	l7 := &connect.Intention{
		ID: "web=>api", SourceName: "web", DestinationName: "api",
		Precedence: connect.ComputePrecedence("web", "api"),
		Permissions: []*connect.IntentionPermission{
			{Action: deny, HTTP: &connect.IntentionHTTPPermission{PathPrefix: "/users", Methods: []string{"DELETE"}}},
			{Action: allow, HTTP: &connect.IntentionHTTPPermission{PathPrefix: "/users"}},
		},
	}
	set := NewSet([]*connect.Intention{l7, ixn("*", "api", deny), ixn("admin", "*", allow)})
	cases := []struct {
		source, method, path string
		defaultAllow         bool
		allowed              bool
		matched              string // "" when the default decided
		reason               string
	}{
		{"web", "GET", "/users/1", false, true, "web=>api", "permission 1 (allow path prefix /users)"},
		{"web", "DELETE", "/users/1", true, false, "web=>api", "permission 0 (deny path prefix /users, methods [DELETE])"},
		{"web", "GET", "/other", true, true, "", "has no permission matching GET /other; the default intention policy is allow"},
		{"web", "GET", "/other", false, false, "", "the default intention policy is deny"},
		// An intention without permissions decides by its action.
		{"billing", "GET", "/users", true, false, "*=>api", "Matched intention: * => api (deny)"},
		{"admin", "GET", "/x", false, false, "*=>api", ""}, // exact destination beats exact source
	}
	for _, tc := range cases {
		r := httptest.NewRequest(tc.method, tc.path, nil)
		d := set.DecideHTTP(tc.source, "api", r, tc.defaultAllow)
		got := ""
		if d.Matched != nil {
			got = d.Matched.ID
		}
		if d.Allowed != tc.allowed || got != tc.matched || !strings.Contains(d.Reason, tc.reason) {
			t.Errorf("%s %s %s: allowed %v by %q (%s); want %v by %q (%s)", tc.source, tc.method, tc.path, d.Allowed, got, d.Reason, tc.allowed, tc.matched, tc.reason)
		}
	}
	// No intention at all.
	if d := (*Set)(nil).DecideHTTP("web", "api", httptest.NewRequest("GET", "/", nil), true); !d.Allowed || d.Matched != nil {
		t.Errorf("nil set: %+v", d)
	}
	// Decide (for connections) still denies an intention with permissions.
	if d := set.Decide("web", "api", true); d.Allowed {
		t.Errorf("Decide of an L7 intention allowed a connection: %s", d.Reason)
	}
}
