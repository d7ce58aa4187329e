package connect

import (
	"net/http"
	"regexp"
	"slices"
	"strings"
	"sync"
)

// Matches reports whether the HTTP request r satisfies every field of p that
// is set: the path (exact, prefix, or a regular expression that must match
// the whole path), the method, and each header rule. A nil p matches
// nothing.
//
// A header rule reads the request's values of Name joined with ","
// (":authority" and "host" read r.Host, ":method" the method, ":path" the
// path with its query). A missing header matches no rule, then Invert
// negates the result, so an inverted rule matches a request without the
// header, as Envoy's header matchers do.
func (p *IntentionHTTPPermission) Matches(r *http.Request) bool {
	if p == nil || r == nil {
		return false
	}
	path := ""
	if r.URL != nil {
		path = r.URL.Path
	}
	switch {
	case p.PathExact != "" && path != p.PathExact:
		return false
	case p.PathPrefix != "" && !strings.HasPrefix(path, p.PathPrefix):
		return false
	case p.PathRegex != "" && !fullMatch(p.PathRegex, path):
		return false
	}
	if len(p.Methods) > 0 && !slices.ContainsFunc(p.Methods, func(m string) bool { return strings.EqualFold(m, r.Method) }) {
		return false
	}
	for i := range p.Header {
		if !p.Header[i].matches(r) {
			return false
		}
	}
	return true
}

func (h *IntentionHTTPHeaderPermission) matches(r *http.Request) bool {
	v, ok := headerValue(r, h.Name)
	var m bool
	if ok {
		switch {
		case h.Present:
			m = true
		case h.Exact != "":
			m = v == h.Exact
		case h.Prefix != "":
			m = strings.HasPrefix(v, h.Prefix)
		case h.Suffix != "":
			m = strings.HasSuffix(v, h.Suffix)
		case h.Regex != "":
			m = fullMatch(h.Regex, v)
		}
	}
	return m != h.Invert
}

// headerValue returns the values of the named header joined with ",", and
// whether the request has it at all.
func headerValue(r *http.Request, name string) (string, bool) {
	switch strings.ToLower(name) {
	case ":authority", "host":
		return r.Host, r.Host != ""
	case ":method":
		return r.Method, true
	case ":path":
		if r.URL == nil {
			return "", false
		}
		return r.URL.RequestURI(), true
	}
	vs := r.Header.Values(name)
	switch len(vs) {
	case 0:
		return "", false
	case 1:
		return vs[0], true
	}
	return strings.Join(vs, ","), true
}

// regexps caches compiled patterns of permissions: they are validated when
// written, and evaluated for every request.
var regexps sync.Map // string → *regexp.Regexp, or nil for a bad pattern

// fullMatch reports whether pattern matches all of s. A pattern that does
// not compile matches nothing.
func fullMatch(pattern, s string) bool {
	v, ok := regexps.Load(pattern)
	if !ok {
		re, err := regexp.Compile(`^(?:` + pattern + `)$`)
		if err != nil {
			re = nil
		}
		v, _ = regexps.LoadOrStore(pattern, re)
	}
	re, _ := v.(*regexp.Regexp)
	return re != nil && re.MatchString(s)
}
