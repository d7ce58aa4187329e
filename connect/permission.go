package connect

import (
	"fmt"
	"net/http"
	"regexp"
	"slices"
	"strings"
)

// IntentionPermission is one L7 rule of an intention: when HTTP matches a
// request, Action decides it.
type IntentionPermission struct {
	Action string
	HTTP   *IntentionHTTPPermission `json:",omitempty"`
}

// IntentionHTTPPermission matches HTTP requests. Every field set must match;
// at most one of the path fields may be set.
type IntentionHTTPPermission struct {
	PathExact  string                          `json:",omitempty"`
	PathPrefix string                          `json:",omitempty"`
	PathRegex  string                          `json:",omitempty"`
	Header     []IntentionHTTPHeaderPermission `json:",omitempty"`
	// Methods, upper case; any method when empty.
	Methods []string `json:",omitempty"`
}

// IntentionHTTPHeaderPermission matches one request header. Exactly one of
// Present, Exact, Prefix, Suffix and Regex is set; Invert negates the result.
type IntentionHTTPHeaderPermission struct {
	Name    string
	Present bool   `json:",omitempty"`
	Exact   string `json:",omitempty"`
	Prefix  string `json:",omitempty"`
	Suffix  string `json:",omitempty"`
	Regex   string `json:",omitempty"`
	Invert  bool   `json:",omitempty"`
}

// Clone returns a deep copy of p.
func (p *IntentionPermission) Clone() *IntentionPermission {
	if p == nil {
		return nil
	}
	c := *p
	if p.HTTP != nil {
		h := *p.HTTP
		h.Header = slices.Clone(p.HTTP.Header)
		h.Methods = slices.Clone(p.HTTP.Methods)
		c.HTTP = &h
	}
	return &c
}

var httpMethods = []string{
	http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
	http.MethodDelete, http.MethodConnect, http.MethodOptions, http.MethodTrace,
}

// Validate checks p; field is its name in errors ("Sources[0].Permissions[1]").
// Methods are upper-cased in place.
func (p *IntentionPermission) Validate(field string) error {
	if p == nil {
		return fieldErr(field, "missing")
	}
	if p.Action != IntentionAllow && p.Action != IntentionDeny {
		return fieldErr(field+".Action", "%q: must be %q or %q", p.Action, IntentionAllow, IntentionDeny)
	}
	h := p.HTTP
	if h == nil {
		return fieldErr(field+".HTTP", "missing: a permission matches HTTP requests")
	}
	paths := 0
	for _, v := range []string{h.PathExact, h.PathPrefix, h.PathRegex} {
		if v != "" {
			paths++
		}
	}
	if paths > 1 {
		return fieldErr(field+".HTTP", "at most one of PathExact, PathPrefix and PathRegex may be set")
	}
	if h.PathExact != "" && !strings.HasPrefix(h.PathExact, "/") {
		return fieldErr(field+".HTTP.PathExact", "%q: must start with /", h.PathExact)
	}
	if h.PathPrefix != "" && !strings.HasPrefix(h.PathPrefix, "/") {
		return fieldErr(field+".HTTP.PathPrefix", "%q: must start with /", h.PathPrefix)
	}
	if h.PathRegex != "" {
		if _, err := regexp.Compile(h.PathRegex); err != nil {
			return fieldErr(field+".HTTP.PathRegex", "%q: %v", h.PathRegex, err)
		}
	}
	for k, m := range h.Methods {
		up := strings.ToUpper(m)
		if !slices.Contains(httpMethods, up) {
			return fieldErr(fmt.Sprintf("%s.HTTP.Methods[%d]", field, k), "%q: not an HTTP method", m)
		}
		h.Methods[k] = up
	}
	for k, hd := range h.Header {
		f := fmt.Sprintf("%s.HTTP.Header[%d]", field, k)
		if hd.Name == "" {
			return fieldErr(f+".Name", "missing")
		}
		set := 0
		if hd.Present {
			set++
		}
		for _, v := range []string{hd.Exact, hd.Prefix, hd.Suffix, hd.Regex} {
			if v != "" {
				set++
			}
		}
		if set != 1 {
			return fieldErr(f, "exactly one of Present, Exact, Prefix, Suffix and Regex must be set")
		}
		if hd.Regex != "" {
			if _, err := regexp.Compile(hd.Regex); err != nil {
				return fieldErr(f+".Regex", "%q: %v", hd.Regex, err)
			}
		}
	}
	if paths == 0 && len(h.Methods) == 0 && len(h.Header) == 0 {
		return fieldErr(field+".HTTP", "matches every request: set a path, methods or a header")
	}
	return nil
}
