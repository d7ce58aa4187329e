package raftstore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/trellismesh/trellis/internal/retry"
	"github.com/trellismesh/trellis/internal/testutil"
	"github.com/trellismesh/trellis/raftstore/rpc"
	"github.com/trellismesh/trellis/raftstore/structs"
)

// staticMembership is a fixed member list, the servers of a test cluster,
// set once they have all bound their ports.
type staticMembership struct {
	mu      sync.Mutex
	members []Member
	changed chan struct{}
}

func newStaticMembership() *staticMembership {
	return &staticMembership{changed: make(chan struct{})}
}

func (m *staticMembership) Members() []Member {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.members)
}

func (m *staticMembership) ChangeCh() <-chan struct{} {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.changed
}

func (m *staticMembership) set(members []Member) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.members = members
	close(m.changed)
	m.changed = make(chan struct{})
}

// startServers starts n servers that bootstrap a cluster together and
// returns them once one of them leads.
func startServers(t *testing.T, n int) []*Server {
	t.Helper()
	ms := newStaticMembership()
	servers := make([]*Server, n)
	members := make([]Member, n)
	for i := range n {
		cfg := TestConfig(fmt.Sprintf("s%d", i), "")
		cfg.Bootstrap = false
		cfg.BootstrapExpect = n
		cfg.Membership = ms
		cfg.Logger = testutil.Logger(t).Named(cfg.NodeName)
		s, err := NewServer(cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Shutdown() })
		servers[i] = s
		members[i] = Member{Name: cfg.NodeName, ID: cfg.NodeName, Addr: "127.0.0.1", Datacenter: cfg.Datacenter,
			Status: MemberAlive, Server: true, ServerAddr: s.Addr(), Expect: n}
	}
	ms.set(members)
	retry.RunWith(&retry.Timer{Timeout: 30 * time.Second, Wait: 20 * time.Millisecond}, t, func(r *retry.R) {
		for _, s := range servers {
			if s.IsLeader() {
				return
			}
		}
		r.Fatal("no leader yet")
	})
	return servers
}

// A write that its server took for the leader's, but whose own check (or
// raft.Apply) finds leadership gone, is refused before anything of it
// reached Raft: it goes on to the leader, with its token, instead of
// failing with "no cluster leader". Here a follower plays the server whose
// leadership moved between RPC's look and the write's check.
func TestServer_writeRefusedForLostLeadershipGoesToTheLeader(t *testing.T) {
	t.Parallel()
	servers := startServers(t, 3)
	var follower, leader *Server
	// A follower that knows the leader: one that does not yet (it has not
	// heard from it) refuses with ErrNoLeader instead.
	retry.Run(t, func(r *retry.R) {
		follower, leader = nil, nil
		for _, s := range servers {
			if s.IsLeader() {
				leader = s
			} else {
				follower = s
			}
		}
		if leader == nil || follower == nil || follower.Leader() != leader.Addr() {
			r.Fatalf("no leader known to a follower yet")
		}
	})
	ep := endpoints[structs.MethodCatalogRegister]
	args := &structs.RegisterRequest{Node: "ext", Address: "10.0.0.1", Service: &structs.NodeService{Service: "moved"},
		WriteRequest: structs.WriteRequest{Token: "the-callers-token"}}

	moved, err := follower.serveLeading(t.Context(), ep, structs.MethodCatalogRegister, args, &structs.WriteReply{})
	if !moved || !errors.Is(err, structs.ErrNotLeader) {
		t.Fatalf("serveLeading on a follower: moved %v, %v; want moved, not the leader", moved, err)
	}
	if args.Token != "the-callers-token" {
		t.Errorf("the moved request's token is %q; want the caller's, for the leader", args.Token)
	}

	// What RPC then does: the follower's forward reaches the leader.
	var reply structs.WriteReply
	if err := follower.forward(t.Context(), ep, structs.MethodCatalogRegister, args, &reply); err != nil {
		t.Fatalf("forward the moved write: %v", err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	var nodes structs.IndexedServiceNodes
	if err := follower.RPC(ctx, structs.MethodCatalogServiceNodes, &structs.ServiceSpecificRequest{ServiceName: "moved"}, &nodes); err != nil || len(nodes.ServiceNodes) != 1 {
		t.Fatalf("the moved write at the leader: %v, %v", nodes.ServiceNodes, err)
	}

	// A refusal for another reason stays where it is.
	bad := &structs.RegisterRequest{Address: "10.0.0.1"}
	if moved, err := leader.serveLeading(t.Context(), ep, structs.MethodCatalogRegister, bad, &structs.WriteReply{}); moved || err == nil {
		t.Errorf("an invalid write: moved %v, %v; want refused, not moved", moved, err)
	}
}

// raft.Apply's refusals before the entry was appended move the request to
// the leader; a leadership lost after it was appended does not (the entry
// may yet be committed), and says so.
func TestServer_raftErrorsSayWhetherTheWriteMayHaveBeenApplied(t *testing.T) {
	t.Parallel()
	s := startServer(t, "")
	create := &structs.IntentionRequest{Op: structs.IntentionOpCreate}
	for _, refused := range []error{raft.ErrNotLeader, raft.ErrLeadershipTransferInProgress} {
		err := s.raftError(structs.RegisterRequestType, refused)
		var nl notLeader
		if !errors.As(err, &nl) || !MayResend(structs.MethodIntentionApply, create, err) {
			t.Errorf("raft's %q: %v; want a notLeader refusal, retryable", refused, err)
		}
	}
	err := s.raftError(structs.RegisterRequestType, raft.ErrLeadershipLost)
	var nl notLeader
	if errors.As(err, &nl) || MayResend(structs.MethodIntentionApply, create, err) || !errors.Is(err, structs.ErrLeadershipLost) {
		t.Errorf("raft's %q: %v; want ErrLeadershipLost, neither moved nor retried", raft.ErrLeadershipLost, err)
	}
	// Only an idempotent write is sent again after it.
	if !resendable(structs.MethodCatalogRegister, &structs.RegisterRequest{}, err) || resendable(structs.MethodIntentionApply, create, err) {
		t.Errorf("resendable after a lost leadership: catalog register %v, intention apply %v; want true, false",
			resendable(structs.MethodCatalogRegister, &structs.RegisterRequest{}, err), resendable(structs.MethodIntentionApply, create, err))
	}
	// It keeps its meaning across the internal RPC.
	remote := &structs.RemoteError{Code: structs.CodeOf(err), Message: err.Error()}
	if !errors.Is(remote, structs.ErrLeadershipLost) || MayResend(structs.MethodIntentionApply, create, remote) {
		t.Errorf("over RPC: %v (code %q); want ErrLeadershipLost, not retried", remote, remote.Code)
	}
}

// Shutdown ends the server port's connections wherever they are: one that
// has not sent its protocol byte yet (Shutdown waited for its handshake
// timeout) and a Raft connection whose peer keeps it open (its handler
// outlived the server).
func TestServer_shutdownEndsItsConnections(t *testing.T) {
	t.Parallel()
	s := startServer(t, "")
	silent, err := net.Dial("tcp", s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	peer, err := net.Dial("tcp", s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	if _, err := peer.Write([]byte{rpc.ProtoRaft}); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Shutdown() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("shutdown: %v", err)
		}
	case <-time.After(handshakeTimeout - time.Second):
		t.Fatalf("Shutdown still waits %s on a connection that has not spoken", handshakeTimeout-time.Second)
	}
	for name, c := range map[string]net.Conn{"silent": silent, "raft": peer} {
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		// Closed by the server: EOF, or a reset when the close found
		// bytes unread.
		_, err := c.Read(make([]byte, 1))
		if !errors.Is(err, io.EOF) && !errors.Is(err, syscall.ECONNRESET) {
			t.Errorf("the %s connection after Shutdown: %v; want it closed by the server", name, err)
		}
	}
}

// A request is sent again only when that cannot apply a write twice.
func TestMayResend(t *testing.T) {
	t.Parallel()
	unreachable := fmt.Errorf("%w: dial 127.0.0.1:1: connection refused", rpc.ErrUnavailable)
	replyLost := fmt.Errorf("%w: %s: %w", rpc.ErrUnavailable, "x", structs.ErrReplyLost)
	lost := fmt.Errorf("apply: %w", structs.ErrLeadershipLost)
	remote := func(err error) error { return &structs.RemoteError{Code: structs.CodeOf(err), Message: err.Error()} }
	type call struct {
		method string
		args   any
	}
	var (
		read       = call{structs.MethodCatalogServiceNodes, &structs.ServiceSpecificRequest{}}
		idempotent = call{structs.MethodCatalogRegister, &structs.RegisterRequest{}}
		write      = call{structs.MethodIntentionApply, &structs.IntentionRequest{Op: structs.IntentionOpCreate}}
		ixnDelete  = call{structs.MethodIntentionApply, &structs.IntentionRequest{Op: structs.IntentionOpDelete}}
		ixnCreate  = call{structs.MethodIntentionApply, &structs.IntentionRequest{Op: structs.IntentionOpCreate, CreateID: structs.NewUUID()}}
		ixnUpsert  = call{structs.MethodIntentionApply, &structs.IntentionRequest{Op: structs.IntentionOpUpsert}}
		ixnUpdate  = call{structs.MethodIntentionApply, &structs.IntentionRequest{Op: structs.IntentionOpUpdate}}
		entrySet   = call{structs.MethodConfigEntryApply, &structs.ConfigEntryRequest{Op: structs.ConfigEntryOpUpsert}}
		entryCAS   = call{structs.MethodConfigEntryApply, &structs.ConfigEntryRequest{Op: structs.ConfigEntryOpUpsert, CAS: true, Index: 7}}
		entryDel   = call{structs.MethodConfigEntryDelete, &structs.ConfigEntryRequest{Op: structs.ConfigEntryOpDelete}}
		entryDelCS = call{structs.MethodConfigEntryDelete, &structs.ConfigEntryRequest{Op: structs.ConfigEntryOpDelete, CAS: true, Index: 7}}
		caSet      = call{structs.MethodCAConfigurationSet, &structs.CARequest{}}
	)
	for _, c := range []struct {
		call
		err  error
		want bool
	}{
		{write, nil, false},
		{write, unreachable, true},
		{write, replyLost, false},
		{read, replyLost, true},
		{idempotent, replyLost, true},
		{write, remote(replyLost), false},
		{read, remote(replyLost), true},
		{write, lost, false},
		{write, remote(lost), false},
		{idempotent, remote(lost), true},
		{write, remote(structs.ErrNoLeader), true},
		{write, remote(structs.ErrNotLeader), true},
		{write, remote(structs.ErrShutdown), true},
		{write, notLeader{structs.ErrNoLeader}, true},
		{write, remote(structs.Invalid("Name", "empty")), false},
		{write, remote(errors.New("boom")), false},
		{read, context.Canceled, false},
		// Writes that are idempotent by their contents.
		{ixnUpsert, replyLost, true},
		{ixnUpdate, remote(lost), true},
		{ixnDelete, replyLost, false},
		{ixnCreate, replyLost, true},
		{ixnCreate, remote(lost), true},
		{entrySet, replyLost, true},
		{entrySet, remote(lost), true},
		{entryDel, replyLost, true},
		{entryCAS, replyLost, false},
		{entryDelCS, remote(lost), false},
		{caSet, replyLost, false},
		{entrySet, remote(structs.Invalid("Kind", "unknown")), false},
	} {
		if got := MayResend(c.method, c.args, c.err); got != c.want {
			t.Errorf("MayResend(%s, %+v, %v) = %v, want %v", c.method, c.args, c.err, got, c.want)
		}
	}
}
