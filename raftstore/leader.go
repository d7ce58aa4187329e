package raftstore

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/hashicorp/go-metrics"
	"github.com/hashicorp/raft"

	"github.com/trellismesh/trellis/raftstore/structs"
)

// The gossip health check the leader keeps on every member's node.
const (
	SerfCheckID   = "serfHealth"
	SerfCheckName = "Serf Health Status"
)

// leaderDuties runs while this server leads and is ready: it reconciles
// membership into the catalog and the Raft configuration on every change and
// every ReconcileInterval, until ctx ends (leadership lost).
func (s *Server) leaderDuties(ctx context.Context) {
	if s.cfg.Membership == nil {
		return
	}
	promote := map[raft.ServerID]time.Time{} // non-voters healthy since
	missing := map[string]time.Time{}        // nodes and servers absent from membership, since
	ticker := time.NewTicker(s.cfg.ReconcileInterval)
	defer ticker.Stop()
	step := max(s.cfg.ServerStabilizationTime/4, 50*time.Millisecond)
	for {
		changed := s.cfg.Membership.ChangeCh()
		members := s.cfg.Membership.Members()
		if err := s.reconcile(ctx, members, missing); err != nil && ctx.Err() == nil {
			s.logger.Warn("reconcile membership into the catalog", "error", err)
		}
		// While a non-voter waits for promotion, or an absent member for
		// its grace to end, look again soon.
		var soon <-chan time.Time
		if pending := s.autopilot(ctx, members, promote, missing); pending || len(missing) > 0 {
			soon = time.After(step)
		}
		select {
		case <-ctx.Done():
			return
		case <-changed:
		case <-ticker.C:
		case <-soon:
		}
	}
}

// absentLongEnough records that key is absent from membership and reports
// whether it has been for MissingGrace. A member can be absent for a moment
// without being gone: a leader that has just restarted learns the members
// again within seconds, and must not deregister them meanwhile.
func (s *Server) absentLongEnough(missing map[string]time.Time, key string) bool {
	since, ok := missing[key]
	if !ok {
		missing[key] = time.Now()
		return false
	}
	return time.Since(since) >= s.cfg.MissingGrace
}

// reconcile makes the catalog follow membership: each member of this
// datacenter has a node with a serfHealth check, passing while it is alive and
// critical once it failed; a member that left is deregistered, and so is a
// node whose member was reaped (one that has a serfHealth check but no
// member, for MissingGrace).
func (s *Server) reconcile(ctx context.Context, members []Member, missing map[string]time.Time) error {
	defer metrics.MeasureSince([]string{"trellis", "leader", "reconcile"}, time.Now())
	st := s.fsm.State()
	known := map[string]bool{}
	var errs []error
	for _, m := range members {
		if !strings.EqualFold(m.Datacenter, s.cfg.Datacenter) {
			continue
		}
		known[strings.ToLower(m.Name)] = true
		_, checks, err := st.NodeChecks(nil, m.Name)
		if err != nil {
			return err
		}
		var serf *structs.HealthCheck
		for _, c := range checks {
			if c.CheckID == SerfCheckID {
				serf = c
			}
		}
		_, ns, err := st.NodeServices(nil, m.Name)
		if err != nil {
			return err
		}
		switch m.Status {
		case MemberAlive, MemberLeaving:
			if ns != nil && serf != nil && serf.Status == structs.HealthPassing {
				continue
			}
			errs = append(errs, s.writeSerfCheck(ctx, m, ns != nil, structs.HealthPassing, "Agent alive and reachable"))
		case MemberFailed:
			if ns != nil && serf != nil && serf.Status == structs.HealthCritical {
				continue
			}
			errs = append(errs, s.writeSerfCheck(ctx, m, ns != nil, structs.HealthCritical, "Agent not live or unreachable"))
		case MemberLeft:
			if ns == nil {
				continue
			}
			s.logger.Info("deregistering a member that left", "member", m.Name)
			errs = append(errs, s.RPC(ctx, structs.MethodCatalogDeregister, &structs.DeregisterRequest{Node: m.Name}, &structs.WriteReply{}))
		}
	}
	// Nodes whose member was reaped.
	_, all, err := st.ChecksInState(nil, structs.HealthAny)
	if err != nil {
		return err
	}
	absent := map[string]bool{}
	for _, c := range all {
		key := "node:" + strings.ToLower(c.Node)
		if c.CheckID != SerfCheckID || known[strings.ToLower(c.Node)] {
			continue
		}
		absent[key] = true
		if !s.absentLongEnough(missing, key) {
			continue
		}
		s.logger.Info("deregistering a node that is no longer a member", "node", c.Node)
		errs = append(errs, s.RPC(ctx, structs.MethodCatalogDeregister, &structs.DeregisterRequest{Node: c.Node}, &structs.WriteReply{}))
		delete(missing, key)
	}
	for key := range missing {
		if strings.HasPrefix(key, "node:") && !absent[key] {
			delete(missing, key) // back, or gone from the catalog
		}
	}
	return errors.Join(errs...)
}

func (s *Server) writeSerfCheck(ctx context.Context, m Member, nodeExists bool, status, output string) error {
	req := &structs.RegisterRequest{
		Node: m.Name, ID: m.ID, Address: m.Addr, SkipNodeUpdate: nodeExists,
		Check: &structs.HealthCheck{Node: m.Name, CheckID: SerfCheckID, Name: SerfCheckName, Status: status, Output: output},
	}
	if err := s.RPC(ctx, structs.MethodCatalogRegister, req, &structs.WriteReply{}); err != nil {
		return fmt.Errorf("gossip health of %q: %w", m.Name, err)
	}
	if status != structs.HealthPassing {
		s.logger.Info("member failed; its services are critical", "member", m.Name)
	}
	return nil
}

// autopilot keeps the Raft configuration in line with the servers in
// membership: a new server joins as a non-voter and becomes a voter once it
// has kept up for ServerStabilizationTime; a server that left, or was reaped,
// is removed. It reports whether a non-voter waits for promotion.
func (s *Server) autopilot(ctx context.Context, members []Member, promote map[raft.ServerID]time.Time, missing map[string]time.Time) (pending bool) {
	f := s.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		s.logger.Warn("autopilot: read raft configuration", "error", err)
		return false
	}
	inRaft := map[raft.ServerID]raft.Server{}
	for _, srv := range f.Configuration().Servers {
		inRaft[srv.ID] = srv
	}
	self := raft.ServerID(s.cfg.NodeID)
	seen := map[raft.ServerID]bool{}
	for _, m := range members {
		if !m.Server || !strings.EqualFold(m.Datacenter, s.cfg.Datacenter) || m.ID == "" {
			continue
		}
		id := raft.ServerID(m.ID)
		seen[id] = true
		cur, ok := inRaft[id]
		switch {
		case m.Status == MemberLeft && ok && id != self:
			s.logger.Info("autopilot: removing a server that left", "server", m.Name)
			if err := s.raft.RemoveServer(id, 0, 0).Error(); err != nil {
				s.logger.Warn("autopilot: remove server", "server", m.Name, "error", err)
			}
			delete(promote, id)
		case m.Status != MemberAlive:
		case !ok:
			s.logger.Info("autopilot: adding a new server as a non-voter", "server", m.Name, "address", m.ServerAddr)
			if err := s.raft.AddNonvoter(id, raft.ServerAddress(m.ServerAddr), 0, 0).Error(); err != nil {
				s.logger.Warn("autopilot: add non-voter", "server", m.Name, "error", err)
			}
			delete(promote, id)
			pending = true
		case cur.Suffrage == raft.Nonvoter:
			pending = true
			if !s.serverHealthy(ctx, m) {
				delete(promote, id)
				continue
			}
			since, waiting := promote[id]
			if !waiting {
				promote[id] = time.Now()
				continue
			}
			if time.Since(since) >= s.cfg.ServerStabilizationTime {
				s.logger.Info("autopilot: promoting a stable server to voter", "server", m.Name)
				if err := s.raft.AddVoter(id, raft.ServerAddress(m.ServerAddr), 0, 0).Error(); err != nil {
					s.logger.Warn("autopilot: promote", "server", m.Name, "error", err)
				}
				delete(promote, id)
			}
		case string(cur.Address) != m.ServerAddr && id != self:
			s.logger.Info("autopilot: a server's address changed", "server", m.Name, "address", m.ServerAddr)
			if err := s.raft.AddVoter(id, raft.ServerAddress(m.ServerAddr), 0, 0).Error(); err != nil {
				s.logger.Warn("autopilot: update address", "server", m.Name, "error", err)
			}
		}
	}
	// Servers reaped from membership (absent for MissingGrace) leave the
	// configuration.
	for id, srv := range inRaft {
		key := "server:" + string(id)
		if seen[id] || id == self {
			delete(missing, key)
			continue
		}
		if !s.absentLongEnough(missing, key) {
			continue
		}
		s.logger.Info("autopilot: removing a server that is no longer a member", "id", id, "address", srv.Address)
		if err := s.raft.RemoveServer(id, 0, 0).Error(); err != nil {
			s.logger.Warn("autopilot: remove server", "id", id, "error", err)
		}
		delete(missing, key)
	}
	return pending
}

// serverHealthy asks a server for its Raft stats: healthy when it hears
// from the leader and has applied nearly everything.
func (s *Server) serverHealthy(ctx context.Context, m Member) bool {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	var st structs.RaftStats
	if err := s.rpcClient.Call(ctx, m.ServerAddr, structs.MethodStatusRaftStats, struct{}{}, &st); err != nil {
		s.logger.Debug("autopilot: server stats", "server", m.Name, "error", err)
		return false
	}
	const maxLag = 256
	last := s.raft.LastIndex()
	return st.LastContact < 4*s.cfg.Timing.HeartbeatTimeout && st.AppliedIndex+maxLag >= last
}

// bootstrapWatcher forms the cluster once BootstrapExpect servers are alive
// and none has Raft state: every one of them bootstraps the same
// configuration (all of them, as voters).
func (s *Server) bootstrapWatcher() {
	defer s.wg.Done()
	ticker := time.NewTicker(time.Second)
	defer ticker.Stop()
	for {
		changed := s.cfg.Membership.ChangeCh()
		done, err := s.maybeBootstrap()
		if err != nil {
			s.logger.Warn("bootstrap", "error", err)
		}
		if done {
			return
		}
		select {
		case <-s.shutdownCh:
			return
		case <-changed:
		case <-ticker.C:
		}
	}
}

// maybeBootstrap reports true once bootstrapping is settled (done by this
// server, or by others).
func (s *Server) maybeBootstrap() (bool, error) {
	f := s.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return false, err
	}
	if len(f.Configuration().Servers) > 0 {
		return true, nil // bootstrapped, or joined an existing cluster
	}
	var servers []Member
	for _, m := range s.cfg.Membership.Members() {
		if m.Server && m.Status == MemberAlive && strings.EqualFold(m.Datacenter, s.cfg.Datacenter) && m.ID != "" {
			if m.Expect != 0 && m.Expect != s.cfg.BootstrapExpect {
				return false, fmt.Errorf("server %s expects %d servers, this one %d: fix bootstrap_expect", m.Name, m.Expect, s.cfg.BootstrapExpect)
			}
			servers = append(servers, m)
		}
	}
	if len(servers) < s.cfg.BootstrapExpect {
		s.logger.Debug("waiting for servers to bootstrap", "alive", len(servers), "expect", s.cfg.BootstrapExpect)
		return false, nil
	}
	// If any server already has peers, a cluster exists: the leader will
	// add this one.
	for _, m := range servers {
		if m.ServerAddr == s.Addr() {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		var peers []string
		err := s.rpcClient.Call(ctx, m.ServerAddr, structs.MethodStatusPeers, struct{}{}, &peers)
		cancel()
		if err != nil {
			return false, fmt.Errorf("ask %s for its peers before bootstrapping: %w", m.Name, err)
		}
		if len(peers) > 0 {
			s.logger.Info("a cluster exists already; waiting to be added", "server", m.Name)
			return true, nil
		}
	}
	var conf raft.Configuration
	for _, m := range servers {
		conf.Servers = append(conf.Servers, raft.Server{ID: raft.ServerID(m.ID), Address: raft.ServerAddress(m.ServerAddr), Suffrage: raft.Voter})
	}
	if err := s.raft.BootstrapCluster(conf).Error(); err != nil && !errors.Is(err, raft.ErrCantBootstrap) {
		return false, fmt.Errorf("bootstrap raft with %d servers: %w", len(servers), err)
	}
	s.logger.Info("bootstrapped the cluster", "servers", len(servers))
	return true, nil
}

// Leave takes this server out of the Raft configuration before the agent
// leaves gossip: a leader hands leadership over first, then the (new)
// leader removes this server. It waits up to ctx. left reports whether
// there was a configuration to leave: the last voter has none.
func (s *Server) Leave(ctx context.Context) (left bool, err error) {
	f := s.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return false, err
	}
	others := 0
	for _, srv := range f.Configuration().Servers {
		if srv.ID != raft.ServerID(s.cfg.NodeID) && srv.Suffrage == raft.Voter {
			others++
		}
	}
	if others == 0 {
		return false, nil // the last server: nothing to leave
	}
	if s.raft.State() == raft.Leader {
		if err := s.raft.LeadershipTransfer().Error(); err != nil {
			s.logger.Warn("leadership transfer before leaving", "error", err)
		}
	}
	req := &structs.RaftRemovePeerRequest{ID: s.cfg.NodeID}
	for {
		err := s.RPC(ctx, structs.MethodOperatorRaftRemovePeer, req, &struct{}{})
		if err == nil || errors.Is(err, structs.ErrNotFound) {
			s.left.Store(true)
			s.logger.Info("left the raft configuration")
			return true, nil
		}
		if ctx.Err() != nil {
			return false, fmt.Errorf("leave the raft configuration: %w", err)
		}
		select {
		case <-ctx.Done():
			return false, fmt.Errorf("leave the raft configuration: %w", err)
		case <-time.After(200 * time.Millisecond):
		}
	}
}
