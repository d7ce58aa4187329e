package intentions

import (
	"fmt"
	"net/http"

	"github.com/trellismesh/trellis/connect"
)

// DecideHTTP returns whether source may send the HTTP request r to
// destination. The deciding intention is the one Decide would pick. When it
// has no permissions its Action decides; otherwise its permissions are
// tried in order and the first whose HTTP rule matches r decides by its
// Action. When none matches, or no intention matches at all, defaultAllow
// decides (Matched is then nil, and Reason names the intention whose
// permissions did not match).
func (s *Set) DecideHTTP(source, destination string, r *http.Request, defaultAllow bool) Decision {
	policy := "deny"
	if defaultAllow {
		policy = "allow"
	}
	if s != nil {
		for _, ixn := range s.all {
			if !nameMatches(ixn.SourceName, source) || !nameMatches(ixn.DestinationName, destination) {
				continue
			}
			if len(ixn.Permissions) == 0 {
				return Decision{
					Allowed: ixn.Action == connect.IntentionAllow,
					Matched: ixn,
					Reason:  fmt.Sprintf("Matched intention: %s => %s (%s)", ixn.SourceName, ixn.DestinationName, ixn.Action),
				}
			}
			for k, p := range ixn.Permissions {
				if p != nil && p.HTTP.Matches(r) {
					return Decision{
						Allowed: p.Action == connect.IntentionAllow,
						Matched: ixn,
						Reason: fmt.Sprintf("Matched intention: %s => %s, permission %d (%s %s)",
							ixn.SourceName, ixn.DestinationName, k, p.Action, describe(p.HTTP)),
					}
				}
			}
			return Decision{
				Allowed: defaultAllow,
				Reason: fmt.Sprintf("Intention %s => %s has no permission matching %s %s; the default intention policy is %s",
					ixn.SourceName, ixn.DestinationName, r.Method, r.URL.Path, policy),
			}
		}
	}
	return Decision{
		Allowed: defaultAllow,
		Reason:  fmt.Sprintf("No intention matched %s => %s; the default intention policy is %s", source, destination, policy),
	}
}

// describe summarises a permission's rule for a Reason.
func describe(h *connect.IntentionHTTPPermission) string {
	var path string
	switch {
	case h.PathExact != "":
		path = "path " + h.PathExact
	case h.PathPrefix != "":
		path = "path prefix " + h.PathPrefix
	case h.PathRegex != "":
		path = "path regex " + h.PathRegex
	}
	out := path
	if len(h.Methods) > 0 {
		if out != "" {
			out += ", "
		}
		out += fmt.Sprintf("methods %v", h.Methods)
	}
	if len(h.Header) > 0 {
		if out != "" {
			out += ", "
		}
		out += fmt.Sprintf("%d header rules", len(h.Header))
	}
	return out
}
