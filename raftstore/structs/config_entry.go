package structs

import (
	"github.com/trellismesh/trellis/connect/chain"
	"github.com/trellismesh/trellis/connect/configentry"
)

// Config entry and discovery chain methods.
const (
	MethodConfigEntryApply  = "ConfigEntry.Apply"  // ConfigEntryRequest → ConfigEntryApplyReply
	MethodConfigEntryDelete = "ConfigEntry.Delete" // ConfigEntryRequest (Entry holds kind and name) → ConfigEntryApplyReply
	MethodConfigEntryGet    = "ConfigEntry.Get"    // ConfigEntryQuery → ConfigEntryResponse (blocking)
	MethodConfigEntryList   = "ConfigEntry.List"   // ConfigEntryQuery (Name empty) → IndexedConfigEntries (blocking)
	MethodDiscoveryChainGet = "DiscoveryChain.Get" // DiscoveryChainRequest → DiscoveryChainResponse (blocking)
)

// Operations of ConfigEntryRequest.
const (
	ConfigEntryOpUpsert = "upsert"
	ConfigEntryOpDelete = "delete"
)

// ConfigEntryRequest writes (Op "upsert" or "delete") one entry. With CAS, the
// write happens only when the entry's ModifyIndex is Index (0: it must not
// exist yet).
type ConfigEntryRequest struct {
	Datacenter string
	Op         string
	Entry      configentry.Envelope
	CAS        bool
	Index      uint64
	WriteRequest
}

// ConfigEntryApplyReply says whether the write happened (false when a CAS
// did not match) and at which index.
type ConfigEntryApplyReply struct {
	Applied bool
	Index   uint64
}

// ConfigEntryQuery reads one entry (Kind and Name) or a kind's entries (Name
// empty; Kind empty lists every kind).
type ConfigEntryQuery struct {
	Datacenter string
	Kind       string
	Name       string
	QueryOptions
}

// ConfigEntryResponse is one entry, nil when there is none.
type ConfigEntryResponse struct {
	Entry *configentry.Envelope
	QueryMeta
}

// IndexedConfigEntries is a list of entries, by kind then name.
type IndexedConfigEntries struct {
	Entries []configentry.Envelope
	QueryMeta
}

// DiscoveryChainRequest asks for a service's compiled chain.
type DiscoveryChainRequest struct {
	Datacenter string
	Name       string
	QueryOptions
}

// DiscoveryChainResponse is the compiled chain.
type DiscoveryChainResponse struct {
	Chain *chain.Chain
	QueryMeta
}
