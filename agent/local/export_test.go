package local

import "context"

// RPCClient is rpcClient, for the external tests.
type RPCClient = rpcClient

// NewFakeCatalog exposes the in-test catalog to the external tests.
func NewFakeCatalog() interface {
	RPC(ctx context.Context, method string, args, reply any) error
} {
	return newFakeCatalog()
}
