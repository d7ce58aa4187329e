package raftstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/go-memdb"
	"github.com/hashicorp/raft"

	"github.com/trellismesh/trellis/raftstore/blocking"
	"github.com/trellismesh/trellis/raftstore/rpc"
	"github.com/trellismesh/trellis/raftstore/state"
	"github.com/trellismesh/trellis/raftstore/structs"
)

// endpoint is one RPC method: how to make empty args and reply (for the
// network RPC, which decodes into them) and how to serve it.
type endpoint struct {
	newArgs  func() any
	newReply func() any
	call     func(s *Server, ctx context.Context, args, reply any) error
}

// typed makes an endpoint from a function over concrete types.
func typed[A, R any](f func(s *Server, ctx context.Context, args *A, reply *R) error) endpoint {
	return endpoint{
		newArgs:  func() any { return new(A) },
		newReply: func() any { return new(R) },
		call: func(s *Server, ctx context.Context, args, reply any) error {
			a, ok := args.(*A)
			if !ok {
				return fmt.Errorf("args of type %T, want %T", args, (*A)(nil))
			}
			r, ok := reply.(*R)
			if !ok {
				return fmt.Errorf("reply of type %T, want %T", reply, (*R)(nil))
			}
			return f(s, ctx, a, r)
		},
	}
}

// idempotent reports whether the write args of method leaves the state as
// it found it when applied twice: one whose leadership was lost while it was
// being committed, or whose reply was lost, is sent again, as one refused
// before it reached Raft is. Any other write then fails with
// ErrLeadershipLost or ErrReplyLost (its outcome is unknown). Idempotent:
//   - catalog registrations (upserts) and deregistrations (removing what is
//     gone is a no-op);
//   - config entry writes and deletes without check-and-set (an upsert, and
//     deleting what is gone succeeds); with cas, the second would be refused
//     for the index the first moved;
//   - intention upserts (by source and destination) and updates (by ID), and
//     creates that carry the new intention's ID (CreateID: the second finds
//     the intention the first made). A create without it is not (the second
//     finds the first: a conflict), nor is a delete (the second finds
//     nothing: not found).
//
// As with any write sent again, a write made by someone else in between is
// overwritten by the second copy: the last one applied wins.
func idempotent(method string, args any) bool {
	switch method {
	case structs.MethodCatalogRegister, structs.MethodCatalogDeregister:
		return true
	case structs.MethodConfigEntryApply, structs.MethodConfigEntryDelete:
		req, ok := args.(*structs.ConfigEntryRequest)
		return ok && !req.CAS
	case structs.MethodIntentionApply:
		req, ok := args.(*structs.IntentionRequest)
		return ok && (req.Op == structs.IntentionOpUpsert || req.Op == structs.IntentionOpUpdate ||
			req.Op == structs.IntentionOpCreate && req.CreateID != "")
	}
	return false
}

// resendable reports whether a write that failed with err because its
// leadership was lost while it was being committed may be sent to the next
// leader: only an idempotent one.
func resendable(method string, args any, err error) bool {
	return errors.Is(err, structs.ErrLeadershipLost) && idempotent(method, args)
}

// MayResend reports whether the request args for method that failed with err may
// be sent again, to the same server or another, with no risk of applying a
// write twice: it was refused before it reached Raft (no leader, not the
// leader, shutting down), or it never reached the server, or it is a read
// or an idempotent write. A write whose outcome is unknown (its connection
// was lost after it was sent, or its leadership while it was committed) is
// not, unless applying it twice does no harm.
func MayResend(method string, args any, err error) bool {
	switch {
	case err == nil:
		return false
	case errors.Is(err, structs.ErrReplyLost):
		return !writeMethods[method] || idempotent(method, args)
	case errors.Is(err, structs.ErrLeadershipLost):
		return resendable(method, args, err)
	}
	return errors.Is(err, rpc.ErrUnavailable) || errors.Is(err, structs.ErrNoLeader) ||
		errors.Is(err, structs.ErrNotLeader) || errors.Is(err, structs.ErrShutdown)
}

// endpoints is the table of RPC methods.
var endpoints = map[string]endpoint{
	structs.MethodCatalogRegister:        typed((*Server).catalogRegister),
	structs.MethodCatalogDeregister:      typed((*Server).catalogDeregister),
	structs.MethodCatalogListDatacenters: typed((*Server).catalogListDatacenters),
	structs.MethodCatalogListNodes:       typed((*Server).catalogListNodes),
	structs.MethodCatalogListServices:    typed((*Server).catalogListServices),
	structs.MethodCatalogServiceNodes:    typed((*Server).catalogServiceNodes),
	structs.MethodCatalogNodeServices:    typed((*Server).catalogNodeServices),
	structs.MethodHealthChecksInState:    typed((*Server).healthChecksInState),
	structs.MethodHealthNodeChecks:       typed((*Server).healthNodeChecks),
	structs.MethodHealthServiceChecks:    typed((*Server).healthServiceChecks),
	structs.MethodHealthServiceNodes:     typed((*Server).healthServiceNodes),
	structs.MethodStatusLeader:           typed((*Server).statusLeader),
	structs.MethodStatusPeers:            typed((*Server).statusPeers),
	structs.MethodOperatorRaftConfig:     typed((*Server).operatorRaftConfig),
	structs.MethodOperatorRaftRemovePeer: typed((*Server).operatorRaftRemovePeer),
	structs.MethodStatusRaftStats:        typed((*Server).statusRaftStats),
	structs.MethodCARoots:                typed((*Server).caRoots),
	structs.MethodCAConfigurationGet:     typed((*Server).caConfigGet),
	structs.MethodCAConfigurationSet:     typed((*Server).caConfigSet),
	structs.MethodCASign:                 typed((*Server).caSign),
	structs.MethodCALeaves:               typed((*Server).caLeaves),
	// The intention methods see service-intentions entries too
	// (config_entry_endpoints.go).
	structs.MethodIntentionApply:    typed((*Server).intentionApplyChecked),
	structs.MethodIntentionList:     typed((*Server).intentionListAll),
	structs.MethodIntentionGet:      typed((*Server).intentionGetAll),
	structs.MethodIntentionMatch:    typed((*Server).intentionMatchAll),
	structs.MethodConfigEntryApply:  typed((*Server).configEntryApply),
	structs.MethodConfigEntryDelete: typed((*Server).configEntryDelete),
	structs.MethodConfigEntryGet:    typed((*Server).configEntryGet),
	structs.MethodConfigEntryList:   typed((*Server).configEntryList),
	structs.MethodDiscoveryChainGet: typed((*Server).discoveryChainGet),
	structs.MethodMetricsReport:     typed((*Server).metricsReport),
	structs.MethodMetricsEdges:      typed((*Server).metricsEdges),
}

// writeMethods always run on the leader.
var writeMethods = map[string]bool{
	structs.MethodCatalogRegister:        true,
	structs.MethodCatalogDeregister:      true,
	structs.MethodOperatorRaftRemovePeer: true,
	structs.MethodCAConfigurationSet:     true,
	structs.MethodCASign:                 true,
	structs.MethodIntentionApply:         true,
	structs.MethodConfigEntryApply:       true,
	structs.MethodConfigEntryDelete:      true,
	structs.MethodMetricsReport:          true,
	structs.MethodMetricsEdges:           true, // the leader holds the reports
}

// needsLeader reports whether a request must be served by the leader:
// writes, and reads that do not allow a stale answer.
func needsLeader(method string, args any) bool {
	if writeMethods[method] {
		return true
	}
	if q, ok := args.(interface{ QueryOpts() *structs.QueryOptions }); ok {
		return !q.QueryOpts().AllowStale
	}
	return false
}

// RPC serves one request. args and reply are pointers to the types named
// beside the method constant in raftstore/structs. A request that needs the
// leader is forwarded to it when this server does not lead, waiting up to
// RPCHoldTimeout for one during an election.
func (s *Server) RPC(ctx context.Context, method string, args, reply any) error {
	ep, ok := endpoints[method]
	if !ok {
		return fmt.Errorf("%w: %q", structs.ErrUnknownMethod, method)
	}
	select {
	case <-s.shutdownCh:
		return structs.ErrShutdown
	default:
	}
	if err := s.authorizeRPC(ctx, method, args); err != nil {
		return err
	}
	if !needsLeader(method, args) {
		return s.serve(ctx, ep, args, reply)
	}
	if s.IsLeader() {
		if moved, err := s.serveLeading(ctx, ep, method, args, reply); !moved {
			return err
		}
	}
	return s.forward(ctx, ep, method, args, reply)
}

// serveLeading serves a request that needs the leader here, where the
// caller found the leader. Leadership can move between that look and the
// request's own check, or its raft.Apply: moved reports a refusal made
// then, before anything of the request reached Raft (a notLeader error),
// and the request is left as it came (with its token) for the caller to
// send to the new leader. A write whose leadership was lost while it was
// being committed is moved only if it is idempotent: others may have
// been applied.
func (s *Server) serveLeading(ctx context.Context, ep endpoint, method string, args, reply any) (moved bool, err error) {
	var token string
	if t, ok := args.(interface{ RequestToken() string }); ok {
		token = t.RequestToken() // serve clears it; the leader needs it
	}
	err = s.serve(ctx, ep, args, reply)
	var nl notLeader
	if !errors.As(err, &nl) && !resendable(method, args, err) {
		return false, err
	}
	if t, ok := args.(interface{ SetRequestToken(string) }); ok {
		t.SetRequestToken(token)
	}
	return true, err
}

// notLeader is the refusal of a request that needs the leader by a server
// that does not lead (any more), made before anything of the request
// reached Raft. It unwraps to structs.ErrNoLeader or structs.ErrNotLeader.
type notLeader struct{ err error }

func (e notLeader) Error() string { return e.err.Error() }
func (e notLeader) Unwrap() error { return e.err }

// notLeaderError returns the notLeader refusal for this server's view of
// the leader: ErrNoLeader when it knows none, ErrNotLeader otherwise.
func (s *Server) notLeaderError() error {
	if s.Leader() == "" {
		return notLeader{structs.ErrNoLeader}
	}
	return notLeader{structs.ErrNotLeader}
}

// serve serves a request here, once it is authorized: the caller's token
// has done its job and is cleared, so that no write carries it into the
// Raft log (or a later error message).
func (s *Server) serve(ctx context.Context, ep endpoint, args, reply any) error {
	if t, ok := args.(interface{ ClearRequestToken() }); ok {
		t.ClearRequestToken()
	}
	return ep.call(s, ctx, args, reply)
}

// forward sends a request to the leader, retrying while there is none or
// it cannot be reached, for up to RPCHoldTimeout. A server that has left
// the Raft configuration (draining) knows no leader: it sends the request
// to another server instead, which forwards it.
func (s *Server) forward(ctx context.Context, ep endpoint, method string, args, reply any) error {
	deadline := time.Now().Add(s.cfg.RPCHoldTimeout)
	lastErr := structs.ErrNoLeader
	for attempt := 0; ; attempt++ {
		leader := s.Leader()
		if s.left.Load() {
			leader = s.otherServer(attempt)
		}
		switch {
		case s.IsLeader():
			moved, err := s.serveLeading(ctx, ep, method, args, reply)
			if !moved {
				return err
			}
			lastErr = err
		case leader != "" && leader != s.Addr():
			err := s.rpcClient.Call(ctx, leader, method, args, reply)
			if !MayResend(method, args, err) || errors.Is(err, rpc.ErrTLSRefused) {
				// A certificate refused by (or of) the leader is
				// configuration: trying again would only repeat it.
				return err
			}
			lastErr = err
		}
		if time.Now().After(deadline) {
			if errors.Is(lastErr, rpc.ErrUnavailable) {
				return fmt.Errorf("%w (last attempt: %v)", structs.ErrNoLeader, lastErr)
			}
			return lastErr
		}
		wait := time.Duration(min(attempt+1, 10)) * 20 * time.Millisecond
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-s.shutdownCh:
			return structs.ErrShutdown
		case <-time.After(wait):
		}
	}
}

// otherServer returns the server-port address of an alive server other
// than this one, a different one as attempt grows; "" when none is known.
func (s *Server) otherServer(attempt int) string {
	if s.cfg.Membership == nil {
		return ""
	}
	var addrs []string
	for _, m := range s.cfg.Membership.Members() {
		if m.Server && m.Status == MemberAlive && m.ServerAddr != "" && m.ServerAddr != s.Addr() && m.Datacenter == s.cfg.Datacenter {
			addrs = append(addrs, m.ServerAddr)
		}
	}
	if len(addrs) == 0 {
		return ""
	}
	slices.Sort(addrs)
	return addrs[attempt%len(addrs)]
}

// serveRPCConn serves the internal RPC on one connection.
func (s *Server) serveRPCConn(ctx context.Context, conn net.Conn) {
	// The listener accepts before Raft exists; a peer that dials that early
	// waits for it rather than reaching a half-built server.
	select {
	case <-s.started:
	case <-s.shutdownCh:
		conn.Close()
		return
	case <-ctx.Done():
		conn.Close()
		return
	}
	rpc.ServeConn(ctx, conn, s.handleRPC, s.Leader, s.logger)
}

// handleRPC decodes a request from the network and serves it.
func (s *Server) handleRPC(ctx context.Context, method string, body json.RawMessage) (any, error) {
	ep, ok := endpoints[method]
	if !ok {
		return nil, fmt.Errorf("%w: %q", structs.ErrUnknownMethod, method)
	}
	args, reply := ep.newArgs(), ep.newReply()
	if err := json.Unmarshal(body, args); err != nil {
		return nil, structs.Invalid("", "decode %s arguments: %v", method, err)
	}
	if err := s.RPC(ctx, method, args, reply); err != nil {
		return nil, err
	}
	return reply, nil
}

func (s *Server) checkDC(dc string) error {
	if dc != "" && !strings.EqualFold(dc, s.cfg.Datacenter) {
		return fmt.Errorf("%w %q (this cluster serves %q)", structs.ErrUnknownDatacenter, dc, s.cfg.Datacenter)
	}
	return nil
}

func (s *Server) checkWrite(dc string) error {
	if err := s.checkDC(dc); err != nil {
		return err
	}
	if !s.IsLeader() {
		return s.notLeaderError()
	}
	return nil
}

// read runs a (possibly blocking) read with the consistency opts asks for.
func (s *Server) read(ctx context.Context, dc string, opts *structs.QueryOptions, meta *structs.QueryMeta, fn blocking.QueryFn) error {
	if err := s.checkDC(dc); err != nil {
		return err
	}
	if opts.AllowStale && opts.RequireConsistent {
		return structs.Invalid("consistency", "stale and consistent are mutually exclusive")
	}
	if !opts.AllowStale {
		if !s.IsLeader() {
			return s.notLeaderError()
		}
		if opts.RequireConsistent {
			if err := s.raft.VerifyLeader().Error(); err != nil {
				return s.notLeaderError()
			}
		}
	}
	err := blocking.Query(ctx, s.fsm.State, opts, meta, fn)
	meta.KnownLeader = s.Leader() != ""
	meta.LastContact = s.lastContact()
	return err
}

// --- Catalog writes ---

// validateRegister checks a registration and fills its defaults (service ID
// from its name, check IDs from their names, check status critical).
func (s *Server) validateRegister(req *structs.RegisterRequest) error {
	if strings.TrimSpace(req.Node) == "" {
		return structs.Invalid("Node", "required")
	}
	if req.Address == "" {
		return structs.Invalid("Address", "required")
	}
	if err := structs.ValidateMeta("NodeMeta", req.NodeMeta); err != nil {
		return err
	}
	if req.Service != nil {
		if req.Service.ID == "" {
			req.Service.ID = req.Service.Service
		}
		if err := req.Service.Validate(); err != nil {
			return prefixField("Service", err)
		}
	}
	checks := slices.Clone(req.Checks)
	if req.Check != nil {
		checks = append(checks, req.Check)
	}
	seen := make(map[string]bool)
	for i, c := range checks {
		field := fmt.Sprintf("Checks[%d]", i)
		if req.Check != nil && i == len(checks)-1 {
			field = "Check"
		}
		if c == nil {
			return structs.Invalid(field, "null check")
		}
		if c.CheckID == "" {
			c.CheckID = c.Name
		}
		if c.CheckID == "" {
			return structs.Invalid(field+".CheckID", "required (or a Name)")
		}
		if seen[c.CheckID] {
			return structs.Invalid(field+".CheckID", "%q appears twice", c.CheckID)
		}
		seen[c.CheckID] = true
		if c.Name == "" {
			c.Name = c.CheckID
		}
		if c.Status == "" {
			c.Status = structs.HealthCritical
		}
		if !structs.ValidHealthState(c.Status) {
			return structs.Invalid(field+".Status", "%q is not one of passing, warning, critical", c.Status)
		}
		if c.Node != "" && !strings.EqualFold(c.Node, req.Node) {
			return structs.Invalid(field+".Node", "%q differs from the registration's node %q", c.Node, req.Node)
		}
		if c.ServiceID != "" && (req.Service == nil || req.Service.ID != c.ServiceID) &&
			!s.fsm.State().ServiceExists(req.Node, c.ServiceID) {
			return structs.Invalid(field+".ServiceID", "service %q is not registered on node %q", c.ServiceID, req.Node)
		}
	}
	return nil
}

func prefixField(prefix string, err error) error {
	if ve, ok := err.(*structs.ValidationError); ok {
		f := prefix
		if ve.Field != "" {
			f += "." + ve.Field
		}
		return &structs.ValidationError{Field: f, Reason: ve.Reason}
	}
	return err
}

func (s *Server) catalogRegister(ctx context.Context, req *structs.RegisterRequest, reply *structs.WriteReply) error {
	if err := s.checkWrite(req.Datacenter); err != nil {
		return err
	}
	// Defaults are filled on a copy: the caller's request stays as given.
	r := *req
	r.Service = req.Service.Clone()
	r.Check = req.Check.Clone()
	r.Checks = nil
	for _, c := range req.Checks {
		r.Checks = append(r.Checks, c.Clone())
	}
	r.TaggedAddresses = maps.Clone(req.TaggedAddresses)
	r.NodeMeta = maps.Clone(req.NodeMeta)
	if err := s.validateRegister(&r); err != nil {
		return err
	}
	r.Datacenter = s.cfg.Datacenter
	idx, err := s.apply(ctx, structs.RegisterRequestType, &r)
	if err != nil {
		return err
	}
	reply.Index = idx
	return nil
}

func (s *Server) catalogDeregister(ctx context.Context, req *structs.DeregisterRequest, reply *structs.WriteReply) error {
	if err := s.checkWrite(req.Datacenter); err != nil {
		return err
	}
	if strings.TrimSpace(req.Node) == "" {
		return structs.Invalid("Node", "required")
	}
	if req.ServiceID != "" && req.CheckID != "" {
		return structs.Invalid("CheckID", "give ServiceID or CheckID, not both")
	}
	idx, err := s.apply(ctx, structs.DeregisterRequestType, req)
	if err != nil {
		return err
	}
	reply.Index = idx
	return nil
}

// --- Catalog reads ---

func (s *Server) catalogListDatacenters(_ context.Context, _ *structs.DCSpecificRequest, reply *[]string) error {
	*reply = []string{s.cfg.Datacenter}
	return nil
}

func nodeMetaMatches(n *structs.Node, filters map[string]string) bool {
	for k, v := range filters {
		if got, ok := n.Meta[k]; !ok || got != v {
			return false
		}
	}
	return true
}

func (s *Server) catalogListNodes(ctx context.Context, req *structs.DCSpecificRequest, reply *structs.IndexedNodes) error {
	return s.read(ctx, req.Datacenter, &req.QueryOptions, &reply.QueryMeta, func(ws memdb.WatchSet, st *state.Store) (uint64, error) {
		idx, nodes, err := st.Nodes(ws)
		if len(req.NodeMetaFilters) > 0 {
			nodes = slices.DeleteFunc(slices.Clone(nodes), func(n *structs.Node) bool { return !nodeMetaMatches(n, req.NodeMetaFilters) })
		}
		reply.Nodes = nodes
		return idx, err
	})
}

func (s *Server) catalogListServices(ctx context.Context, req *structs.DCSpecificRequest, reply *structs.IndexedServices) error {
	return s.read(ctx, req.Datacenter, &req.QueryOptions, &reply.QueryMeta, func(ws memdb.WatchSet, st *state.Store) (uint64, error) {
		idx, services, err := st.Services(ws)
		reply.Services = services
		return idx, err
	})
}

func (s *Server) catalogServiceNodes(ctx context.Context, req *structs.ServiceSpecificRequest, reply *structs.IndexedServiceNodes) error {
	if req.ServiceName == "" {
		return structs.Invalid("ServiceName", "required")
	}
	return s.read(ctx, req.Datacenter, &req.QueryOptions, &reply.QueryMeta, func(ws memdb.WatchSet, st *state.Store) (uint64, error) {
		var (
			idx  uint64
			rows []structs.ServiceNode
			err  error
		)
		if req.Connect {
			var full []structs.CheckServiceNode
			idx, full, err = st.ConnectServiceNodes(ws, req.ServiceName, tagsOf(req))
			for _, r := range full {
				rows = append(rows, structs.ServiceNode{Node: r.Node, Service: r.Service})
			}
		} else {
			idx, rows, err = st.ServiceNodes(ws, req.ServiceName, tagsOf(req))
		}
		if len(req.NodeMetaFilters) > 0 {
			rows = slices.DeleteFunc(rows, func(r structs.ServiceNode) bool { return !nodeMetaMatches(r.Node, req.NodeMetaFilters) })
		}
		reply.ServiceNodes = rows
		return idx, err
	})
}

func tagsOf(req *structs.ServiceSpecificRequest) []string {
	if req.TagFilter {
		return req.ServiceTags
	}
	return nil
}

func (s *Server) catalogNodeServices(ctx context.Context, req *structs.NodeSpecificRequest, reply *structs.IndexedNodeServices) error {
	if req.Node == "" {
		return structs.Invalid("Node", "required")
	}
	return s.read(ctx, req.Datacenter, &req.QueryOptions, &reply.QueryMeta, func(ws memdb.WatchSet, st *state.Store) (uint64, error) {
		idx, ns, err := st.NodeServices(ws, req.Node)
		reply.NodeServices = ns
		return idx, err
	})
}

// --- Health reads ---

func (s *Server) healthChecksInState(ctx context.Context, req *structs.ChecksInStateRequest, reply *structs.IndexedHealthChecks) error {
	if req.State != structs.HealthAny && !structs.ValidHealthState(req.State) {
		return structs.Invalid("State", "%q is not one of any, passing, warning, critical", req.State)
	}
	return s.read(ctx, req.Datacenter, &req.QueryOptions, &reply.QueryMeta, func(ws memdb.WatchSet, st *state.Store) (uint64, error) {
		idx, checks, err := st.ChecksInState(ws, req.State)
		reply.HealthChecks = checks
		return idx, err
	})
}

func (s *Server) healthNodeChecks(ctx context.Context, req *structs.NodeSpecificRequest, reply *structs.IndexedHealthChecks) error {
	if req.Node == "" {
		return structs.Invalid("Node", "required")
	}
	return s.read(ctx, req.Datacenter, &req.QueryOptions, &reply.QueryMeta, func(ws memdb.WatchSet, st *state.Store) (uint64, error) {
		idx, checks, err := st.NodeChecks(ws, req.Node)
		reply.HealthChecks = checks
		return idx, err
	})
}

func (s *Server) healthServiceChecks(ctx context.Context, req *structs.ServiceSpecificRequest, reply *structs.IndexedHealthChecks) error {
	if req.ServiceName == "" {
		return structs.Invalid("ServiceName", "required")
	}
	return s.read(ctx, req.Datacenter, &req.QueryOptions, &reply.QueryMeta, func(ws memdb.WatchSet, st *state.Store) (uint64, error) {
		idx, checks, err := st.ServiceChecks(ws, req.ServiceName)
		reply.HealthChecks = checks
		return idx, err
	})
}

func (s *Server) healthServiceNodes(ctx context.Context, req *structs.ServiceSpecificRequest, reply *structs.IndexedCheckServiceNodes) error {
	if req.ServiceName == "" {
		return structs.Invalid("ServiceName", "required")
	}
	return s.read(ctx, req.Datacenter, &req.QueryOptions, &reply.QueryMeta, func(ws memdb.WatchSet, st *state.Store) (uint64, error) {
		var (
			idx  uint64
			rows []structs.CheckServiceNode
			err  error
		)
		if req.Connect {
			idx, rows, err = st.ConnectServiceNodes(ws, req.ServiceName, tagsOf(req))
		} else {
			idx, rows, err = st.CheckServiceNodes(ws, req.ServiceName, tagsOf(req))
		}
		rows = slices.DeleteFunc(rows, func(r structs.CheckServiceNode) bool {
			return (req.PassingOnly && r.Checks.AggregatedStatus() != structs.HealthPassing) ||
				(len(req.NodeMetaFilters) > 0 && !nodeMetaMatches(r.Node, req.NodeMetaFilters))
		})
		reply.Nodes = rows
		return idx, err
	})
}

// --- Status ---

func (s *Server) statusLeader(_ context.Context, _ *struct{}, reply *string) error {
	*reply = s.Leader()
	return nil
}

func (s *Server) statusPeers(_ context.Context, _ *struct{}, reply *[]string) error {
	peers, err := s.Peers()
	*reply = peers
	return err
}

// --- Operator ---

func (s *Server) operatorRaftConfig(_ context.Context, req *structs.DCSpecificRequest, reply *structs.RaftConfigurationResponse) error {
	if err := s.checkDC(req.Datacenter); err != nil {
		return err
	}
	f := s.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return fmt.Errorf("read raft configuration: %w", err)
	}
	leader := s.Leader()
	names := map[string]string{s.cfg.NodeID: s.cfg.NodeName}
	if s.cfg.Membership != nil {
		for _, m := range s.cfg.Membership.Members() {
			if m.Server && m.ID != "" {
				names[m.ID] = m.Name
			}
		}
	}
	for _, srv := range f.Configuration().Servers {
		node := names[string(srv.ID)]
		if node == "" {
			node = "(unknown)"
		}
		reply.Servers = append(reply.Servers, &structs.RaftServer{
			ID: string(srv.ID), Node: node, Address: string(srv.Address),
			Leader: string(srv.Address) == leader, Voter: srv.Suffrage == raft.Voter,
		})
	}
	reply.Index = f.Index()
	return nil
}

func (s *Server) operatorRaftRemovePeer(_ context.Context, req *structs.RaftRemovePeerRequest, _ *struct{}) error {
	if err := s.checkWrite(req.Datacenter); err != nil {
		return err
	}
	if (req.ID == "") == (req.Address == "") {
		return structs.Invalid("ID", "give the server's ID or its address, not both")
	}
	f := s.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return fmt.Errorf("read raft configuration: %w", err)
	}
	for _, srv := range f.Configuration().Servers {
		if (req.ID != "" && string(srv.ID) == req.ID) || (req.Address != "" && string(srv.Address) == req.Address) {
			if err := s.removeServer(srv.ID); err != nil {
				return s.raftFutureError(fmt.Sprintf("remove server %s", srv.ID), err)
			}
			s.logger.Info("removed a server from the raft configuration", "id", srv.ID, "address", srv.Address)
			return nil
		}
	}
	if req.ID != "" {
		return fmt.Errorf("no server with ID %q in the raft configuration: %w", req.ID, structs.ErrNotFound)
	}
	return fmt.Errorf("no server at %q in the raft configuration: %w", req.Address, structs.ErrNotFound)
}

// removeServer takes a server out of the Raft configuration. Like
// applyEntry, it holds Shutdown off until Raft has answered, so that a
// shutdown never leaves the change's outcome unknown.
func (s *Server) removeServer(id raft.ServerID) error {
	s.applyMu.RLock()
	defer s.applyMu.RUnlock()
	if s.closing {
		return structs.ErrShutdown
	}
	return s.raft.RemoveServer(id, 0, 0).Error()
}

func (s *Server) statusRaftStats(_ context.Context, _ *struct{}, reply *structs.RaftStats) error {
	*reply = structs.RaftStats{
		LastIndex: s.raft.LastIndex(), AppliedIndex: s.raft.AppliedIndex(),
		LastContact: s.lastContact(), State: s.raft.State().String(),
	}
	if t, err := strconv.ParseUint(s.raft.Stats()["term"], 10, 64); err == nil {
		reply.Term = t
	}
	return nil
}
