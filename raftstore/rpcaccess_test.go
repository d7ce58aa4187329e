package raftstore

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"github.com/hashicorp/raft"

	"github.com/trellismesh/trellis/internal/authz"
	"github.com/trellismesh/trellis/raftstore/structs"
)

// Every RPC method has an access rule.
func TestRPCAccesses_coverEveryMethod(t *testing.T) {
	for m := range endpoints {
		if _, ok := rpcAccesses[m]; !ok {
			t.Errorf("method %s has no entry in rpcAccesses", m)
		}
	}
	for m := range rpcAccesses {
		if _, ok := endpoints[m]; !ok {
			t.Errorf("rpcAccesses names %s, which is not a method", m)
		}
	}
}

type denyWrites struct{ asked []authz.Request }

func (d *denyWrites) Authorize(_ context.Context, req authz.Request) error {
	d.asked = append(d.asked, req)
	if req.Access == authz.Write {
		return authz.Denied(req)
	}
	return nil
}

// A refused write never reaches Raft; the token of a write reaches the
// Authorizer.
func TestRPC_authorizerRefusesBeforeRaft(t *testing.T) {
	t.Parallel()
	deny := &denyWrites{}
	cfg := TestConfig("s1", "")
	cfg.Authorizer = deny
	s := startServerWith(t, cfg)
	err := s.RPC(t.Context(), structs.MethodCatalogRegister, &structs.RegisterRequest{
		Node: "n1", Address: "127.0.0.1", WriteRequest: structs.WriteRequest{Token: "t-1"},
	}, &structs.WriteReply{})
	if !errors.Is(err, authz.ErrDenied) {
		t.Fatalf("register: %v, want a denial", err)
	}
	var nodes structs.IndexedNodes
	if err := s.RPC(t.Context(), structs.MethodCatalogListNodes, &structs.DCSpecificRequest{}, &nodes); err != nil {
		t.Fatal(err)
	}
	for _, n := range nodes.Nodes {
		if n.Node == "n1" {
			t.Error("the refused registration reached the catalog")
		}
	}
	var sawToken bool
	for _, r := range deny.asked {
		sawToken = sawToken || (r.Resource == authz.Node && r.Access == authz.Write && r.Token == "t-1")
	}
	if !sawToken {
		t.Errorf("asked %+v; want node:write with the token", deny.asked)
	}
}

// A write's token is cleared once it is authorized: it never reaches the
// Raft log.
func TestRPC_tokenNeverReachesTheLog(t *testing.T) {
	t.Parallel()
	s := startServer(t, "")
	const secret = "secret-token-7f3a"
	for _, req := range []struct {
		method string
		args   any
	}{
		{structs.MethodCatalogRegister, &structs.RegisterRequest{Node: "n1", Address: "127.0.0.1", WriteRequest: structs.WriteRequest{Token: secret}}},
		{structs.MethodCatalogDeregister, &structs.DeregisterRequest{Node: "n1", WriteRequest: structs.WriteRequest{Token: secret}}},
	} {
		if err := s.RPC(t.Context(), req.method, req.args, &structs.WriteReply{}); err != nil {
			t.Fatalf("%s: %v", req.method, err)
		}
	}
	first, err := s.logStore.FirstIndex()
	if err != nil {
		t.Fatal(err)
	}
	last, err := s.logStore.LastIndex()
	if err != nil {
		t.Fatal(err)
	}
	for i := first; i <= last; i++ {
		var l raft.Log
		if err := s.logStore.GetLog(i, &l); err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(l.Data, []byte(secret)) {
			t.Errorf("log entry %d holds the token: %q", i, l.Data)
		}
	}
}
