// Package intentions decides whether one service may call another from a set
// of intentions: the most precise matching intention wins (an exact
// destination beats a wildcard one, then an exact source beats a wildcard),
// and when none matches the default policy decides. It does no I/O; the
// proxies, the agent's authorize endpoint and the CLI's check all use it.
package intentions

import (
	"cmp"
	"fmt"
	"slices"
	"strings"

	"github.com/trellismesh/trellis/connect"
)

// Decision is the outcome of Decide.
type Decision struct {
	// Allowed reports whether the call is allowed.
	Allowed bool
	// Matched is the intention that decided; nil when the default did.
	Matched *connect.Intention
	// Reason says in words what decided.
	Reason string
}

// Set is an immutable set of intentions ready for evaluation.
type Set struct {
	all []*connect.Intention // sorted by Sort
}

// NewSet returns a set over list. The intentions are not copied; they must
// not be modified afterwards.
func NewSet(list []*connect.Intention) *Set {
	s := &Set{all: slices.Clone(list)}
	Sort(s.all)
	return s
}

// All returns the intentions in precedence order. Do not modify them.
// A nil Set has none.
func (s *Set) All() []*connect.Intention {
	if s == nil {
		return nil
	}
	return s.all
}

// Len returns the number of intentions.
func (s *Set) Len() int { return len(s.All()) }

// Sort orders intentions as Consul lists them: highest precedence first,
// then by source name, then by destination name, names compared without
// case. The precedence is computed from the names (ComputePrecedence), not
// read from the Precedence field, so that an intention whose field was never
// set still ranks where it belongs. Intentions whose names differ only in
// case (the same intention to the servers) put deny first, so that it
// decides, then come in byte order of their names.
func Sort(list []*connect.Intention) {
	slices.SortStableFunc(list, compare)
}

func compare(a, b *connect.Intention) int {
	if c := cmp.Compare(precedence(b), precedence(a)); c != 0 {
		return c
	}
	if c := cmp.Compare(strings.ToLower(a.SourceName), strings.ToLower(b.SourceName)); c != 0 {
		return c
	}
	if c := cmp.Compare(strings.ToLower(a.DestinationName), strings.ToLower(b.DestinationName)); c != 0 {
		return c
	}
	if c := cmp.Compare(denyFirst(a), denyFirst(b)); c != 0 {
		return c
	}
	if c := cmp.Compare(a.SourceName, b.SourceName); c != 0 {
		return c
	}
	return cmp.Compare(a.DestinationName, b.DestinationName)
}

func precedence(i *connect.Intention) int {
	return connect.ComputePrecedence(i.SourceName, i.DestinationName)
}

func denyFirst(i *connect.Intention) int {
	if i.Action == connect.IntentionAllow {
		return 1
	}
	return 0
}

func nameMatches(pattern, name string) bool {
	return pattern == connect.Wildcard || strings.EqualFold(pattern, name)
}

// Decide returns whether source may call destination. defaultAllow is the
// policy when no intention matches.
func (s *Set) Decide(source, destination string, defaultAllow bool) Decision {
	if s != nil {
		for _, ixn := range s.all {
			if nameMatches(ixn.SourceName, source) && nameMatches(ixn.DestinationName, destination) {
				if len(ixn.Permissions) > 0 {
					// HTTP permissions cannot judge a connection.
					return Decision{
						Matched: ixn,
						Reason:  fmt.Sprintf("Matched intention: %s => %s has HTTP permissions, which deny a connection that is not HTTP", ixn.SourceName, ixn.DestinationName),
					}
				}
				return Decision{
					Allowed: ixn.Action == connect.IntentionAllow,
					Matched: ixn,
					Reason:  fmt.Sprintf("Matched intention: %s => %s (%s)", ixn.SourceName, ixn.DestinationName, ixn.Action),
				}
			}
		}
	}
	policy := "deny"
	if defaultAllow {
		policy = "allow"
	}
	return Decision{
		Allowed: defaultAllow,
		Reason:  fmt.Sprintf("No intention matched %s => %s; the default intention policy is %s", source, destination, policy),
	}
}

// Match returns the intentions that apply to name, in precedence order: by
// "source" those whose source matches it, by "destination" those whose
// destination does (wildcards included).
func (s *Set) Match(by, name string) ([]*connect.Intention, error) {
	var pick func(*connect.Intention) string
	switch by {
	case "source":
		pick = func(i *connect.Intention) string { return i.SourceName }
	case "destination":
		pick = func(i *connect.Intention) string { return i.DestinationName }
	default:
		return nil, fmt.Errorf("match by %q: want source or destination", by)
	}
	var out []*connect.Intention
	for _, ixn := range s.All() {
		if nameMatches(pick(ixn), name) {
			out = append(out, ixn)
		}
	}
	return out, nil
}
