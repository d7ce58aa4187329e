package connect

import (
	"crypto/x509"
	"errors"
	"net/url"
	"strings"
	"testing"
)

func TestTrustDomain(t *testing.T) {
	t.Parallel()
	tests := []struct{ in, want string }{
		{"11111111-2222-3333-4444-555555555555", "11111111-2222-3333-4444-555555555555.trellis"},
		{"ABCDEF", "abcdef.trellis"},
	}
	for _, test := range tests {
		if got := TrustDomain(test.in); got != test.want {
			t.Errorf("TrustDomain(%q) got %q, want %q", test.in, got, test.want)
		}
	}
}

func TestServiceID_String(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		id   ServiceID
		want string // "" means invalid
	}{
		{"service", NewServiceID("abc.trellis", "dc1", "web"), "spiffe://abc.trellis/ns/default/dc/dc1/svc/web"},
		{"dotted and dashed", NewServiceID("abc.trellis", "eu-west_1", "api.v2-beta"), "spiffe://abc.trellis/ns/default/dc/eu-west_1/svc/api.v2-beta"},
		{"other namespace", ServiceID{TrustDomain: "abc.trellis", Namespace: "team", Datacenter: "dc1", Service: "web"}, "spiffe://abc.trellis/ns/team/dc/dc1/svc/web"},
		{"zero", ServiceID{}, ""},
		{"no service", NewServiceID("abc.trellis", "dc1", ""), ""},
		{"no datacenter", NewServiceID("abc.trellis", "", "web"), ""},
		{"upper-case trust domain", NewServiceID("ABC.trellis", "dc1", "web"), ""},
		{"slash in service", NewServiceID("abc.trellis", "dc1", "web/admin"), ""},
		{"dot segment", NewServiceID("abc.trellis", "dc1", ".."), ""},
		{"space", NewServiceID("abc.trellis", "dc 1", "web"), ""},
	}
	for _, test := range tests {
		t.Run(test.name, func(t *testing.T) {
			t.Parallel()
			u, err := test.id.URI()
			s := test.id.String()
			if test.want == "" {
				if err == nil {
					t.Fatalf("%#v.URI() got %s, want an error", test.id, u)
				}
				if !strings.HasPrefix(s, "invalid service identity") {
					t.Errorf("%#v.String() got %q, want it to say the identity is invalid", test.id, s)
				}
				return
			}
			if err != nil {
				t.Fatalf("%#v.URI(): %v", test.id, err)
			}
			if u.String() != test.want || s != test.want {
				t.Errorf("%#v: URI() %q, String() %q, want %q", test.id, u, s, test.want)
			}
			back, err := ParseServiceID(s)
			if err != nil || back != test.id {
				t.Errorf("ParseServiceID(%q) got %#v, %v, want %#v", s, back, err, test.id)
			}
		})
	}
}

// parseServiceIDTests is also the seed corpus of FuzzParseServiceID.
var parseServiceIDTests = []struct {
	in         string
	want       ServiceID
	notService bool // a SPIFFE ID, but not a service's: ErrNotServiceID
	invalid    bool // not a SPIFFE ID at all
}{
	{in: "spiffe://abc.trellis/ns/default/dc/dc1/svc/web", want: ServiceID{"abc.trellis", "default", "dc1", "web"}},
	{in: "spiffe://abc.trellis/ns/team/dc/eu-1/svc/Web_API.v2", want: ServiceID{"abc.trellis", "team", "eu-1", "Web_API.v2"}},
	{in: "spiffe://a/ns/n/dc/d/svc/s", want: ServiceID{"a", "n", "d", "s"}},

	{in: "spiffe://abc.trellis", notService: true},
	{in: "spiffe://abc.trellis/ns/default", notService: true},
	{in: "spiffe://abc.trellis/ns/default/dc/dc1/svc", notService: true},
	{in: "spiffe://abc.trellis/ns/default/dc/dc1/svc/web/extra", notService: true},
	{in: "spiffe://abc.trellis/ns/default/dc/dc1/service/web", notService: true},
	{in: "spiffe://abc.trellis/namespace/default/dc/dc1/svc/web", notService: true},
	{in: "spiffe://abc.trellis/ns/default/datacenter/dc1/svc/web", notService: true},
	{in: "spiffe://abc.trellis/dc/dc1/ns/default/svc/web", notService: true},
	{in: "spiffe://abc.trellis/agent/client/dc/dc1/id/x", notService: true},

	{in: "", invalid: true},
	{in: "web", invalid: true},
	{in: "https://abc.trellis/ns/default/dc/dc1/svc/web", invalid: true},
	{in: "SPIFFE://abc.trellis/ns/default/dc/dc1/svc/web", invalid: true},
	{in: "spiffe:///ns/default/dc/dc1/svc/web", invalid: true},
	{in: "spiffe://ABC.trellis/ns/default/dc/dc1/svc/web", invalid: true},
	{in: "spiffe://abc.trellis/ns/default/dc/dc1/svc/web/", invalid: true},
	{in: "spiffe://abc.trellis/ns//dc/dc1/svc/web", invalid: true},
	{in: "spiffe://abc.trellis/ns/./dc/dc1/svc/web", invalid: true},
	{in: "spiffe://abc.trellis/ns/default/dc/../svc/web", invalid: true},
	{in: "spiffe://abc.trellis/ns/default/dc/dc1/svc/we%62", invalid: true},
	{in: "spiffe://abc.trellis/ns/default/dc/dc1/svc/web?x=1", invalid: true},
	{in: "spiffe://abc.trellis/ns/default/dc/dc1/svc/web#x", invalid: true},
	{in: "spiffe://abc.trellis:8443/ns/default/dc/dc1/svc/web", invalid: true},
	{in: "spiffe://user@abc.trellis/ns/default/dc/dc1/svc/web", invalid: true},
	{in: "spiffe://abc.trellis/ns/default/dc/dc1/svc/w b", invalid: true},
	{in: "spiffe://abc.trellis/ns/default/dc/dc1/svc/*", invalid: true},
	{in: " spiffe://abc.trellis/ns/default/dc/dc1/svc/web", invalid: true},
}

func TestParseServiceID(t *testing.T) {
	t.Parallel()
	for _, test := range parseServiceIDTests {
		t.Run(test.in, func(t *testing.T) {
			t.Parallel()
			got, err := ParseServiceID(test.in)
			switch {
			case test.notService:
				if !errors.Is(err, ErrNotServiceID) {
					t.Errorf("ParseServiceID(%q) got %#v, %v, want ErrNotServiceID", test.in, got, err)
				}
			case test.invalid:
				if err == nil || errors.Is(err, ErrNotServiceID) {
					t.Errorf("ParseServiceID(%q) got %#v, %v, want a SPIFFE parse error", test.in, got, err)
				}
			default:
				if err != nil || got != test.want {
					t.Fatalf("ParseServiceID(%q) got %#v, %v, want %#v", test.in, got, err, test.want)
				}
				if s := got.String(); s != test.in {
					t.Errorf("ParseServiceID(%q).String() got %q, want the input back", test.in, s)
				}
			}
		})
	}
}

func TestServiceIDFromCert(t *testing.T) {
	t.Parallel()
	mustURL := func(s string) *url.URL {
		u, err := url.Parse(s)
		if err != nil {
			t.Fatal(err)
		}
		return u
	}
	web := mustURL("spiffe://abc.trellis/ns/default/dc/dc1/svc/web")
	tests := []struct {
		name    string
		uris    []*url.URL
		want    ServiceID
		wantErr bool
	}{
		{"one service ID", []*url.URL{web}, NewServiceID("abc.trellis", "dc1", "web"), false},
		{"no URI", nil, ServiceID{}, true},
		{"two URIs", []*url.URL{web, mustURL("spiffe://abc.trellis/ns/default/dc/dc1/svc/db")}, ServiceID{}, true},
		{"trust domain only", []*url.URL{mustURL("spiffe://abc.trellis")}, ServiceID{}, true},
		{"not SPIFFE", []*url.URL{mustURL("https://web.example.com/")}, ServiceID{}, true},
	}
	for _, test := range tests {
		t.Run(test.name, func(t *testing.T) {
			t.Parallel()
			got, err := ServiceIDFromCert(&x509.Certificate{URIs: test.uris})
			if test.wantErr {
				if err == nil {
					t.Errorf("ServiceIDFromCert(%v) got %v, want an error", test.uris, got)
				}
				return
			}
			if err != nil || got != test.want {
				t.Errorf("ServiceIDFromCert(%v) got %#v, %v, want %#v", test.uris, got, err, test.want)
			}
		})
	}
}

// FuzzParseServiceID checks that ParseServiceID never panics, and that what
// it accepts prints back to the same string and parses again to the same ID.
func FuzzParseServiceID(f *testing.F) {
	for _, test := range parseServiceIDTests {
		f.Add(test.in)
	}
	f.Fuzz(func(t *testing.T, in string) {
		id, err := ParseServiceID(in)
		if err != nil {
			return
		}
		s := id.String()
		if s != in {
			t.Fatalf("ParseServiceID(%q).String() got %q, want the input back", in, s)
		}
		u, err := id.URI()
		if err != nil {
			t.Fatalf("ParseServiceID(%q) gave %#v whose URI fails: %v", in, id, err)
		}
		back, err := ServiceIDFromCert(&x509.Certificate{URIs: []*url.URL{u}})
		if err != nil || back != id {
			t.Fatalf("ServiceIDFromCert(URI of %q) got %#v, %v, want %#v", in, back, err, id)
		}
	})
}
