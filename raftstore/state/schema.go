package state

import (
	"fmt"

	"github.com/hashicorp/go-memdb"

	"github.com/trellismesh/trellis/raftstore/structs"
)

// Table names.
const (
	tableNodes    = "nodes"
	tableServices = "services"
	tableChecks   = "checks"
	tableIndex    = "index"

	tableCAConfig   = "ca_config"
	tableCARoots    = "ca_roots"
	tableIntentions = "intentions"
	tableLeaves     = "ca_leaves"

	tableConfigEntries = "config_entries"
)

// serviceRow is a service instance as stored: the instance plus the node it is
// on, since an instance's ID is only unique on its node.
type serviceRow struct {
	Node string
	ID   string
	Name string
	// Connect is the service this row is a mesh endpoint of: a proxy's
	// destination, or a mesh-native service's own name; empty otherwise.
	Connect string
	Service *structs.NodeService
}

func newServiceRow(node string, svc *structs.NodeService) *serviceRow {
	return &serviceRow{Node: node, ID: svc.ID, Name: svc.Service, Connect: connectTarget(svc), Service: svc}
}

// connectTarget is the service a row serves mesh traffic for.
func connectTarget(svc *structs.NodeService) string {
	switch {
	case svc.Kind == structs.ServiceKindConnectProxy && svc.Proxy != nil:
		return svc.Proxy.DestinationServiceName
	case svc.Connect != nil && svc.Connect.Native:
		return svc.Service
	}
	return ""
}

// caConfigRow holds the one CA configuration.
type caConfigRow struct {
	ID     string
	Config *structs.CAConfiguration
}

const caConfigID = "config"

// indexRow is a named Raft index.
type indexRow struct {
	Key   string
	Value uint64
}

func schema() *memdb.DBSchema {
	return &memdb.DBSchema{Tables: map[string]*memdb.TableSchema{
		tableNodes: {
			Name: tableNodes,
			Indexes: map[string]*memdb.IndexSchema{
				"id": {Name: "id", Unique: true, Indexer: &memdb.StringFieldIndex{Field: "Node", Lowercase: true}},
			},
		},
		tableServices: {
			Name: tableServices,
			Indexes: map[string]*memdb.IndexSchema{
				"id": {Name: "id", Unique: true, Indexer: &memdb.CompoundIndex{Indexes: []memdb.Indexer{
					&memdb.StringFieldIndex{Field: "Node", Lowercase: true},
					&memdb.StringFieldIndex{Field: "ID"},
				}}},
				"node":    {Name: "node", Indexer: &memdb.StringFieldIndex{Field: "Node", Lowercase: true}},
				"service": {Name: "service", Indexer: &memdb.StringFieldIndex{Field: "Name", Lowercase: true}},
				"connect": {Name: "connect", AllowMissing: true, Indexer: &memdb.StringFieldIndex{Field: "Connect", Lowercase: true}},
			},
		},
		tableChecks: {
			Name: tableChecks,
			Indexes: map[string]*memdb.IndexSchema{
				"id": {Name: "id", Unique: true, Indexer: &memdb.CompoundIndex{Indexes: []memdb.Indexer{
					&memdb.StringFieldIndex{Field: "Node", Lowercase: true},
					&memdb.StringFieldIndex{Field: "CheckID"},
				}}},
				"node":    {Name: "node", Indexer: &memdb.StringFieldIndex{Field: "Node", Lowercase: true}},
				"service": {Name: "service", AllowMissing: true, Indexer: &memdb.StringFieldIndex{Field: "ServiceName", Lowercase: true}},
				// node_service finds a service's checks without scanning
				// every check of its node.
				"node_service": {Name: "node_service", AllowMissing: true, Indexer: &memdb.CompoundIndex{
					AllowMissing: true,
					Indexes: []memdb.Indexer{
						&memdb.StringFieldIndex{Field: "Node", Lowercase: true},
						&memdb.StringFieldIndex{Field: "ServiceID"},
					},
				}},
				"status": {Name: "status", Indexer: &memdb.StringFieldIndex{Field: "Status"}},
			},
		},
		tableCAConfig: {
			Name: tableCAConfig,
			Indexes: map[string]*memdb.IndexSchema{
				"id": {Name: "id", Unique: true, Indexer: &memdb.StringFieldIndex{Field: "ID"}},
			},
		},
		tableCARoots: {
			Name: tableCARoots,
			Indexes: map[string]*memdb.IndexSchema{
				"id": {Name: "id", Unique: true, Indexer: &memdb.StringFieldIndex{Field: "ID"}},
			},
		},
		tableIntentions: {
			Name: tableIntentions,
			Indexes: map[string]*memdb.IndexSchema{
				"id": {Name: "id", Unique: true, Indexer: &memdb.StringFieldIndex{Field: "ID"}},
				"exact": {Name: "exact", Unique: true, Indexer: &memdb.CompoundIndex{Indexes: []memdb.Indexer{
					&memdb.StringFieldIndex{Field: "SourceName", Lowercase: true},
					&memdb.StringFieldIndex{Field: "DestinationName", Lowercase: true},
				}}},
			},
		},
		tableLeaves: {
			Name: tableLeaves,
			Indexes: map[string]*memdb.IndexSchema{
				"id": {Name: "id", Unique: true, Indexer: &memdb.CompoundIndex{Indexes: []memdb.Indexer{
					&memdb.StringFieldIndex{Field: "Node", Lowercase: true},
					&memdb.StringFieldIndex{Field: "Service", Lowercase: true},
				}}},
			},
		},
		tableConfigEntries: {
			Name: tableConfigEntries,
			Indexes: map[string]*memdb.IndexSchema{
				"id": {Name: "id", Unique: true, Indexer: &memdb.CompoundIndex{Indexes: []memdb.Indexer{
					&memdb.StringFieldIndex{Field: "Kind"},
					&memdb.StringFieldIndex{Field: "Name", Lowercase: true},
				}}},
				"kind": {Name: "kind", Indexer: &memdb.StringFieldIndex{Field: "Kind"}},
			},
		},
		tableIndex: {
			Name: tableIndex,
			Indexes: map[string]*memdb.IndexSchema{
				"id": {Name: "id", Unique: true, Indexer: &memdb.StringFieldIndex{Field: "Key"}},
			},
		},
	}}
}

func newDB() *memdb.MemDB {
	db, err := memdb.NewMemDB(schema())
	if err != nil {
		// The schema is static: an error is a programming error.
		panic(fmt.Sprintf("state store schema: %v", err))
	}
	return db
}
