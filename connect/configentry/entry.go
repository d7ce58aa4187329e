// Package configentry owns the config entries: the kinds of entry that steer
// and authorize mesh traffic at run time (proxy-defaults, service-defaults,
// service-router, service-splitter, service-resolver, service-intentions),
// their JSON and HCL forms (Consul's documented shapes, CamelCase or
// snake_case keys), and their validation, alone and against the other
// entries they refer to. It holds no state: raftstore keeps the entries,
// connect/chain compiles them into discovery chains.
package configentry

import (
	"encoding/json"
	"fmt"
)

// The kinds of config entry.
const (
	ProxyDefaults     = "proxy-defaults"
	ServiceDefaults   = "service-defaults"
	ServiceRouter     = "service-router"
	ServiceSplitter   = "service-splitter"
	ServiceResolver   = "service-resolver"
	ServiceIntentions = "service-intentions"
)

// ProxyDefaultsName is the only name a proxy-defaults entry may have.
const ProxyDefaultsName = "global"

// Kinds lists every kind, in the order listings show them.
var Kinds = []string{ProxyDefaults, ServiceDefaults, ServiceRouter, ServiceSplitter, ServiceResolver, ServiceIntentions}

// ValidKind reports whether kind names a kind of entry.
func ValidKind(kind string) bool {
	for _, k := range Kinds {
		if k == kind {
			return true
		}
	}
	return false
}

// RaftIndex is where an entry was created and last modified in the Raft
// log. Entries embed it, so the JSON has CreateIndex and ModifyIndex at the
// top level, as Consul's does.
type RaftIndex struct {
	CreateIndex uint64 `json:",omitempty" hcl:"-"`
	ModifyIndex uint64 `json:",omitempty" hcl:"-"`
}

// GetRaftIndex returns the index, for the store to set.
func (r *RaftIndex) GetRaftIndex() *RaftIndex { return r }

// Entry is one config entry of any kind.
type Entry interface {
	GetKind() string
	GetName() string
	GetMeta() map[string]string
	GetRaftIndex() *RaftIndex
	// Normalize fills defaults and canonical forms (the kind, upper-case
	// methods, lower-case protocols) in place, before Validate.
	Normalize()
	// Validate checks the entry alone; errors are *FieldError where a field
	// is at fault.
	Validate() error
}

// Key identifies an entry.
type Key struct {
	Kind string
	Name string
}

func (k Key) String() string { return k.Kind + "/" + k.Name }

// KeyOf returns e's key.
func KeyOf(e Entry) Key { return Key{Kind: e.GetKind(), Name: e.GetName()} }

// FieldError is a validation error that names the field at fault, as a path
// in the entry's JSON form (for example "Routes[1].Destination.Service").
type FieldError struct {
	Field string
	Msg   string
}

func (e *FieldError) Error() string {
	if e.Field == "" {
		return e.Msg
	}
	return e.Field + ": " + e.Msg
}

func fieldErr(field, format string, args ...any) error {
	return &FieldError{Field: field, Msg: fmt.Sprintf(format, args...)}
}

// New returns an empty entry of kind, or an error naming the kind when it
// is not one.
func New(kind string) (Entry, error) {
	switch kind {
	case ProxyDefaults:
		return &ProxyConfigEntry{Kind: kind}, nil
	case ServiceDefaults:
		return &ServiceConfigEntry{Kind: kind}, nil
	case ServiceRouter:
		return &ServiceRouterConfigEntry{Kind: kind}, nil
	case ServiceSplitter:
		return &ServiceSplitterConfigEntry{Kind: kind}, nil
	case ServiceResolver:
		return &ServiceResolverConfigEntry{Kind: kind}, nil
	case ServiceIntentions:
		return &ServiceIntentionsConfigEntry{Kind: kind}, nil
	}
	return nil, fieldErr("Kind", "unknown kind %q (want one of %v)", kind, Kinds)
}

// Set is a read-only view of the entries, for validation across entries and
// for compiling chains. Get returns nil when there is no such entry.
type Set interface {
	Get(kind, name string) Entry
	List(kind string) []Entry
}

// MapSet is a Set held in a map, for tests and for overlaying a change on a
// store's view.
type MapSet map[Key]Entry

// Get returns the entry at kind/name, or nil.
func (m MapSet) Get(kind, name string) Entry { return m[Key{kind, name}] }

// List returns the entries of kind, in no particular order.
func (m MapSet) List(kind string) []Entry {
	var out []Entry
	for k, e := range m {
		if k.Kind == kind {
			out = append(out, e)
		}
	}
	return out
}

// Envelope carries an entry of any kind through JSON: it marshals as the
// entry and unmarshals by reading Kind first (unknown fields refused).
type Envelope struct {
	Entry Entry
}

// MarshalJSON writes the entry.
func (e Envelope) MarshalJSON() ([]byte, error) { return json.Marshal(e.Entry) }

// UnmarshalJSON reads an entry whose type its Kind field gives.
func (e *Envelope) UnmarshalJSON(b []byte) error {
	ent, err := DecodeJSON(b)
	if err != nil {
		return err
	}
	e.Entry = ent
	return nil
}
