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
)

// serviceRow is a service instance as stored: the instance plus the node it is
// on, since an instance's ID is only unique on its node.
type serviceRow struct {
	Node    string
	ID      string
	Name    string
	Service *structs.NodeService
}

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
