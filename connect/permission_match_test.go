package connect

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

func TestIntentionHTTPPermission_Matches(t *testing.T) {
	t.Parallel()
	req := func(method, target string, hdr ...string) *http.Request {
		r := httptest.NewRequest(method, target, nil)
		for i := 0; i+1 < len(hdr); i += 2 {
			r.Header.Add(hdr[i], hdr[i+1])
		}
		return r
	}
	cases := []struct {
		name string
		p    *IntentionHTTPPermission
		r    *http.Request
		want bool
	}{
		{"nil", nil, req("GET", "/"), false},
		{"exact", &IntentionHTTPPermission{PathExact: "/users"}, req("GET", "/users"), true},
		{"exact other", &IntentionHTTPPermission{PathExact: "/users"}, req("GET", "/users/1"), false},
		{"prefix", &IntentionHTTPPermission{PathPrefix: "/users"}, req("GET", "/users/1?x=1"), true},
		{"prefix other", &IntentionHTTPPermission{PathPrefix: "/users"}, req("GET", "/admin"), false},
		{"regex whole path", &IntentionHTTPPermission{PathRegex: "/users/[0-9]+"}, req("GET", "/users/12"), true},
		{"regex partial", &IntentionHTTPPermission{PathRegex: "/users/[0-9]+"}, req("GET", "/users/12/x"), false},
		{"bad regex", &IntentionHTTPPermission{PathRegex: "("}, req("GET", "/"), false},
		{"method", &IntentionHTTPPermission{Methods: []string{"GET", "HEAD"}}, req("HEAD", "/"), true},
		{"method other", &IntentionHTTPPermission{Methods: []string{"GET"}}, req("DELETE", "/"), false},
		{"path and method", &IntentionHTTPPermission{PathPrefix: "/users", Methods: []string{"DELETE"}}, req("DELETE", "/users/1"), true},
		{"path and wrong method", &IntentionHTTPPermission{PathPrefix: "/users", Methods: []string{"DELETE"}}, req("GET", "/users/1"), false},
		{"header present", &IntentionHTTPPermission{Header: []IntentionHTTPHeaderPermission{{Name: "x-role", Present: true}}}, req("GET", "/", "X-Role", ""), true},
		{"header missing", &IntentionHTTPPermission{Header: []IntentionHTTPHeaderPermission{{Name: "x-role", Present: true}}}, req("GET", "/"), false},
		{"header missing inverted", &IntentionHTTPPermission{Header: []IntentionHTTPHeaderPermission{{Name: "x-role", Exact: "admin", Invert: true}}}, req("GET", "/"), true},
		{"header exact", &IntentionHTTPPermission{Header: []IntentionHTTPHeaderPermission{{Name: "X-Role", Exact: "admin"}}}, req("GET", "/", "X-Role", "admin"), true},
		{"header exact inverted", &IntentionHTTPPermission{Header: []IntentionHTTPHeaderPermission{{Name: "X-Role", Exact: "admin", Invert: true}}}, req("GET", "/", "X-Role", "admin"), false},
		{"header values joined", &IntentionHTTPPermission{Header: []IntentionHTTPHeaderPermission{{Name: "X-Role", Exact: "a,b"}}}, req("GET", "/", "X-Role", "a", "X-Role", "b"), true},
		{"header prefix", &IntentionHTTPPermission{Header: []IntentionHTTPHeaderPermission{{Name: "X-Role", Prefix: "adm"}}}, req("GET", "/", "X-Role", "admin"), true},
		{"header suffix", &IntentionHTTPPermission{Header: []IntentionHTTPHeaderPermission{{Name: "X-Role", Suffix: "min"}}}, req("GET", "/", "X-Role", "admin"), true},
		{"header regex", &IntentionHTTPPermission{Header: []IntentionHTTPHeaderPermission{{Name: "X-Role", Regex: "ad.*"}}}, req("GET", "/", "X-Role", "admin"), true},
		{"host header", &IntentionHTTPPermission{Header: []IntentionHTTPHeaderPermission{{Name: "Host", Exact: "api.local"}}}, req("GET", "http://api.local/"), true},
		{"every header rule", &IntentionHTTPPermission{Header: []IntentionHTTPHeaderPermission{{Name: "A", Present: true}, {Name: "B", Present: true}}}, req("GET", "/", "A", "1"), false},
	}
	for _, tc := range cases {
		if got := tc.p.Matches(tc.r); got != tc.want {
			t.Errorf("%s: Matches = %v, want %v", tc.name, got, tc.want)
		}
	}
}
