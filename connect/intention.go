package connect

import (
	"fmt"
	"maps"
	"regexp"
	"time"
)

// Intention actions.
const (
	IntentionAllow = "allow"
	IntentionDeny  = "deny"
)

// Wildcard matches any service in an intention.
const Wildcard = "*"

// Intention says whether connections from one service to another are
// allowed. Names are exact service names or Wildcard.
type Intention struct {
	// ID is assigned when the intention is stored.
	ID              string
	SourceName      string
	DestinationName string
	Action          string
	Description     string            `json:",omitempty"`
	Meta            map[string]string `json:",omitempty"`
	// Permissions, when present, decide per HTTP request instead of Action
	// (which is then empty): the first permission that matches decides;
	// when none matches, the default intention policy does. They come from
	// service-intentions config entries and apply only to services whose
	// protocol is http, http2 or grpc; for tcp, an intention with
	// permissions denies.
	Permissions []*IntentionPermission `json:",omitempty"`
	// Precedence is computed from the names: the more exact, the higher.
	Precedence int
	// CreatedAt and UpdatedAt are set by the leader when it writes the
	// intention (so every server stores the same times).
	CreatedAt   time.Time
	UpdatedAt   time.Time
	CreateIndex uint64
	ModifyIndex uint64
}

// Clone returns a deep copy of i.
func (i *Intention) Clone() *Intention {
	if i == nil {
		return nil
	}
	c := *i
	c.Meta = maps.Clone(i.Meta)
	if i.Permissions != nil {
		c.Permissions = make([]*IntentionPermission, len(i.Permissions))
		for k, p := range i.Permissions {
			c.Permissions[k] = p.Clone()
		}
	}
	return &c
}

// Precedence values, as Consul orders them (without namespaces): an exact
// destination beats a wildcard one; then an exact source beats a wildcard.
const (
	PrecedenceExactExact       = 9
	PrecedenceWildcardSrcExact = 8 // source *, destination exact
	PrecedenceExactSrcWildcard = 6 // source exact, destination *
	PrecedenceWildcardWildcard = 5
)

// ComputePrecedence returns the precedence of an intention from its names.
func ComputePrecedence(source, destination string) int {
	switch {
	case source != Wildcard && destination != Wildcard:
		return PrecedenceExactExact
	case source == Wildcard && destination != Wildcard:
		return PrecedenceWildcardSrcExact
	case source != Wildcard && destination == Wildcard:
		return PrecedenceExactSrcWildcard
	}
	return PrecedenceWildcardWildcard
}

var serviceNameRE = regexp.MustCompile(`^[a-zA-Z0-9]([a-zA-Z0-9._-]{0,253}[a-zA-Z0-9])?$`)

// FieldError says which field of a value is invalid and why.
type FieldError struct {
	Field  string
	Reason string
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Reason }

func fieldErr(field, format string, args ...any) error {
	return &FieldError{Field: field, Reason: fmt.Sprintf(format, args...)}
}

// ValidateServiceName checks a name used in an intention: a service name
// (letters, digits, '.', '_', '-'; at most 255) or Wildcard.
func ValidateServiceName(field, name string) error {
	if name == Wildcard {
		return nil
	}
	if name == "" {
		return fieldErr(field, "required (a service name or *)")
	}
	if !serviceNameRE.MatchString(name) {
		return fieldErr(field, "%q is not a service name (letters, digits, '.', '_' and '-', or * for any)", name)
	}
	return nil
}

// Validate checks an intention's names and action.
func (i *Intention) Validate() error {
	if err := ValidateServiceName("SourceName", i.SourceName); err != nil {
		return err
	}
	if err := ValidateServiceName("DestinationName", i.DestinationName); err != nil {
		return err
	}
	switch {
	case len(i.Permissions) > 0:
		if i.Action != "" {
			return fieldErr("Action", "must be empty when Permissions are given: the permissions decide")
		}
		if len(i.Permissions) > 64 {
			return fieldErr("Permissions", "%d permissions is more than the 64 allowed", len(i.Permissions))
		}
		for k, p := range i.Permissions {
			if err := p.Validate(fmt.Sprintf("Permissions[%d]", k)); err != nil {
				return err
			}
		}
	case i.Action != IntentionAllow && i.Action != IntentionDeny:
		return fieldErr("Action", "%q is not allow or deny", i.Action)
	}
	if len(i.Description) > 512 {
		return fieldErr("Description", "longer than 512 characters")
	}
	if len(i.Meta) > 64 {
		return fieldErr("Meta", "%d pairs is more than the 64 allowed", len(i.Meta))
	}
	for k, v := range i.Meta {
		if k == "" || len(k) > 128 || len(v) > 512 {
			return fieldErr("Meta", "key %q: keys are 1-128 characters, values at most 512", k)
		}
	}
	return nil
}
