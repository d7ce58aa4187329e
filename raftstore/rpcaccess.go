package raftstore

import (
	"context"
	"fmt"

	"github.com/trellismesh/trellis/internal/authz"
	"github.com/trellismesh/trellis/raftstore/structs"
)

// rpcAccess is what an RPC method touches, in the terms of Consul's ACL
// rules; a zero Resource is a method anyone may call (status).
type rpcAccess struct {
	resource authz.Resource
	access   authz.Access
}

// rpcAccesses covers every method of endpoints (a test keeps it so).
var rpcAccesses = map[string]rpcAccess{
	structs.MethodCatalogRegister:        {authz.Node, authz.Write},
	structs.MethodCatalogDeregister:      {authz.Node, authz.Write},
	structs.MethodCatalogListDatacenters: {},
	structs.MethodCatalogListNodes:       {authz.Node, authz.Read},
	structs.MethodCatalogListServices:    {authz.Service, authz.Read},
	structs.MethodCatalogServiceNodes:    {authz.Service, authz.Read},
	structs.MethodCatalogNodeServices:    {authz.Node, authz.Read},
	structs.MethodHealthChecksInState:    {authz.Node, authz.Read},
	structs.MethodHealthNodeChecks:       {authz.Node, authz.Read},
	structs.MethodHealthServiceChecks:    {authz.Service, authz.Read},
	structs.MethodHealthServiceNodes:     {authz.Service, authz.Read},
	structs.MethodStatusLeader:           {},
	structs.MethodStatusPeers:            {},
	structs.MethodStatusRaftStats:        {},
	structs.MethodOperatorRaftConfig:     {authz.Operator, authz.Read},
	structs.MethodOperatorRaftRemovePeer: {authz.Operator, authz.Write},
	structs.MethodCARoots:                {authz.Mesh, authz.Read},
	structs.MethodCAConfigurationGet:     {authz.Operator, authz.Read},
	structs.MethodCAConfigurationSet:     {authz.Operator, authz.Write},
	structs.MethodCASign:                 {authz.Service, authz.Write},
	structs.MethodCALeaves:               {authz.Mesh, authz.Read},
	structs.MethodIntentionApply:         {authz.Intention, authz.Write},
	structs.MethodIntentionList:          {authz.Intention, authz.Read},
	structs.MethodIntentionGet:           {authz.Intention, authz.Read},
	structs.MethodIntentionMatch:         {authz.Intention, authz.Read},
	structs.MethodConfigEntryApply:       {authz.Mesh, authz.Write},
	structs.MethodConfigEntryDelete:      {authz.Mesh, authz.Write},
	structs.MethodConfigEntryGet:         {authz.Mesh, authz.Read},
	structs.MethodConfigEntryList:        {authz.Mesh, authz.Read},
	structs.MethodDiscoveryChainGet:      {authz.Service, authz.Read},
	structs.MethodMetricsReport:          {authz.Service, authz.Write},
	structs.MethodMetricsEdges:           {authz.Service, authz.Read},
}

// authorizeRPC asks the Authorizer about one call, with the caller's token.
func (s *Server) authorizeRPC(ctx context.Context, method string, args any) error {
	ra, ok := rpcAccesses[method]
	if !ok {
		return fmt.Errorf("%w: %q has no access rule", structs.ErrUnknownMethod, method)
	}
	if ra.resource == "" || s.cfg.Authorizer == nil {
		return nil
	}
	req := authz.Request{Resource: ra.resource, Access: ra.access}
	if t, ok := args.(interface{ RequestToken() string }); ok {
		req.Token = t.RequestToken()
	}
	return s.cfg.Authorizer.Authorize(ctx, req)
}
