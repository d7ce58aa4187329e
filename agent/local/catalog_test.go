package local

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"sync"
	"testing"

	"github.com/trellismesh/trellis/raftstore/structs"
)

// fakeCatalog is an in-memory catalog behind the RPC interface, enough of
// Catalog.Register/Deregister/NodeServices and Health.NodeChecks to test
// anti-entropy. Requests and replies go through JSON, as over the wire.
type fakeCatalog struct {
	mu       sync.Mutex
	index    uint64
	nodes    map[string]*structs.Node
	services map[string]map[string]*structs.NodeService // node → ID → service
	checks   map[string]map[string]*structs.HealthCheck // node → ID → check
}

func newFakeCatalog() *fakeCatalog {
	return &fakeCatalog{
		nodes:    make(map[string]*structs.Node),
		services: make(map[string]map[string]*structs.NodeService),
		checks:   make(map[string]map[string]*structs.HealthCheck),
	}
}

func roundTrip(in, out any) error {
	b, err := json.Marshal(in)
	if err != nil {
		return err
	}
	return json.Unmarshal(b, out)
}

func (c *fakeCatalog) RPC(ctx context.Context, method string, args, reply any) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	switch method {
	case structs.MethodCatalogRegister:
		var req structs.RegisterRequest
		if err := roundTrip(args, &req); err != nil {
			return err
		}
		return c.register(&req, reply.(*structs.WriteReply))
	case structs.MethodCatalogDeregister:
		var req structs.DeregisterRequest
		if err := roundTrip(args, &req); err != nil {
			return err
		}
		return c.deregister(&req, reply.(*structs.WriteReply))
	case structs.MethodCatalogNodeServices:
		req := args.(*structs.NodeSpecificRequest)
		var out structs.IndexedNodeServices
		out.Index = max(c.index, 1)
		if n := c.nodes[req.Node]; n != nil {
			out.NodeServices = &structs.NodeServices{Node: n, Services: c.services[req.Node]}
		}
		return roundTrip(&out, reply)
	case structs.MethodHealthNodeChecks:
		req := args.(*structs.NodeSpecificRequest)
		var out structs.IndexedHealthChecks
		out.Index = max(c.index, 1)
		for _, id := range slices.Sorted(maps.Keys(c.checks[req.Node])) {
			out.HealthChecks = append(out.HealthChecks, c.checks[req.Node][id])
		}
		return roundTrip(&out, reply)
	}
	return fmt.Errorf("%s: %w", method, structs.ErrUnknownMethod)
}

func (c *fakeCatalog) register(req *structs.RegisterRequest, reply *structs.WriteReply) error {
	if req.Node == "" {
		return structs.Invalid("Node", "empty")
	}
	if req.Service != nil {
		if err := req.Service.Validate(); err != nil {
			return err
		}
	}
	c.index++
	if n := c.nodes[req.Node]; n == nil || !req.SkipNodeUpdate {
		c.nodes[req.Node] = &structs.Node{ID: req.ID, Node: req.Node, Address: req.Address,
			Datacenter: "dc1", TaggedAddresses: req.TaggedAddresses, Meta: req.NodeMeta}
		if c.services[req.Node] == nil {
			c.services[req.Node] = make(map[string]*structs.NodeService)
			c.checks[req.Node] = make(map[string]*structs.HealthCheck)
		}
	}
	if req.Service != nil {
		c.services[req.Node][req.Service.ID] = req.Service
	}
	checks := req.Checks
	if req.Check != nil {
		checks = append(checks, req.Check)
	}
	for _, chk := range checks {
		if chk.ServiceID != "" && c.services[req.Node][chk.ServiceID] == nil {
			return fmt.Errorf("check %q: service %q: %w", chk.CheckID, chk.ServiceID, structs.ErrNotFound)
		}
		chk.Node = req.Node
		c.checks[req.Node][chk.CheckID] = chk
	}
	reply.Index = c.index
	return nil
}

func (c *fakeCatalog) deregister(req *structs.DeregisterRequest, reply *structs.WriteReply) error {
	if c.nodes[req.Node] == nil {
		return fmt.Errorf("node %q: %w", req.Node, structs.ErrNotFound)
	}
	c.index++
	switch {
	case req.ServiceID != "":
		if c.services[req.Node][req.ServiceID] == nil {
			return fmt.Errorf("service %q: %w", req.ServiceID, structs.ErrNotFound)
		}
		delete(c.services[req.Node], req.ServiceID)
		for id, chk := range c.checks[req.Node] {
			if chk.ServiceID == req.ServiceID {
				delete(c.checks[req.Node], id)
			}
		}
	case req.CheckID != "":
		if c.checks[req.Node][req.CheckID] == nil {
			return fmt.Errorf("check %q: %w", req.CheckID, structs.ErrNotFound)
		}
		delete(c.checks[req.Node], req.CheckID)
	default:
		delete(c.nodes, req.Node)
		delete(c.services, req.Node)
		delete(c.checks, req.Node)
	}
	reply.Index = c.index
	return nil
}

// recordingRPC wraps an RPC client, records the methods called and lets a
// test fail or intercept calls.
type recordingRPC struct {
	next rpcClient

	mu     sync.Mutex
	calls  []string                                    // guarded by mu
	before func(method string, args any) (error, bool) // guarded by mu; (err, true) answers the call with err
	after  func(method string, args any)               // guarded by mu
}

func (r *recordingRPC) RPC(ctx context.Context, method string, args, reply any) error {
	r.mu.Lock()
	r.calls = append(r.calls, method)
	before, after := r.before, r.after
	r.mu.Unlock()
	if before != nil {
		if err, answered := before(method, args); answered {
			return err
		}
	}
	err := r.next.RPC(ctx, method, args, reply)
	if after != nil {
		after(method, args)
	}
	return err
}

func (r *recordingRPC) setBefore(f func(method string, args any) (error, bool)) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.before = f
}

func (r *recordingRPC) setAfter(f func(method string, args any)) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.after = f
}

// takeCalls returns the methods called since the last takeCalls.
func (r *recordingRPC) takeCalls() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	c := r.calls
	r.calls = nil
	return c
}

// writes counts the writes among calls.
func writes(calls []string) int {
	n := 0
	for _, m := range calls {
		if m == structs.MethodCatalogRegister || m == structs.MethodCatalogDeregister {
			n++
		}
	}
	return n
}

// catalogView reads a node's services and checks through RPC.
func catalogView(t testing.TB, rpc rpcClient, node string) (*structs.NodeServices, map[string]*structs.HealthCheck) {
	t.Helper()
	req := structs.NodeSpecificRequest{Node: node}
	var svcs structs.IndexedNodeServices
	if err := rpc.RPC(context.Background(), structs.MethodCatalogNodeServices, &req, &svcs); err != nil {
		t.Fatalf("read services of %s: %v", node, err)
	}
	var chks structs.IndexedHealthChecks
	if err := rpc.RPC(context.Background(), structs.MethodHealthNodeChecks, &req, &chks); err != nil {
		t.Fatalf("read checks of %s: %v", node, err)
	}
	m := make(map[string]*structs.HealthCheck)
	for _, c := range chks.HealthChecks {
		m[c.CheckID] = c
	}
	return svcs.NodeServices, m
}
