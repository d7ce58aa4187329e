package agent

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/trellismesh/trellis/agent/config"
	"github.com/trellismesh/trellis/api"
	"github.com/trellismesh/trellis/gossip"
	"github.com/trellismesh/trellis/raftstore"
	"github.com/trellismesh/trellis/raftstore/rpc"
	"github.com/trellismesh/trellis/raftstore/structs"
	"github.com/trellismesh/trellis/version"
)

// Gossip tags an agent publishes.
const (
	tagRole   = "role"
	tagDC     = "dc"
	tagID     = "id"
	tagPort   = "port" // the server port, on servers
	tagExpect = "expect"
	tagBuild  = "build"
)

// tags returns this agent's gossip tags; serverPort is the bound server port.
func (a *Agent) tags(serverPort int) map[string]string {
	t := map[string]string{tagRole: "client", tagDC: a.cfg.Datacenter, tagID: a.cfg.NodeID, tagBuild: version.Short()}
	if a.cfg.Server {
		t[tagRole] = "server"
		t[tagPort] = strconv.Itoa(serverPort)
		if a.cfg.BootstrapExpect > 0 {
			t[tagExpect] = strconv.Itoa(a.cfg.BootstrapExpect)
		}
	}
	return t
}

// gossipTiming returns the gossip timers: the -dev or production profile,
// with the gossip_lan keys and reconnect_timeout laid over it.
func gossipTiming(cfg config.RuntimeConfig) (gossip.Timing, error) {
	t := gossip.LANTiming()
	if cfg.DevMode {
		t = gossip.DevTiming()
	}
	t.ReconnectTimeout = cfg.ReconnectTimeout
	g := cfg.GossipLAN
	if g.ProbeInterval > 0 {
		t.ProbeInterval = g.ProbeInterval
	}
	if g.ProbeTimeout > 0 {
		t.ProbeTimeout = g.ProbeTimeout
	}
	if g.SuspicionMult > 0 {
		t.SuspicionMult = g.SuspicionMult
	}
	if g.GossipInterval > 0 {
		t.GossipInterval = g.GossipInterval
	}
	if t.ProbeTimeout > t.ProbeInterval {
		return t, fmt.Errorf("gossip_lan.probe_timeout %s: must be at most gossip_lan.probe_interval (%s)", t.ProbeTimeout, t.ProbeInterval)
	}
	return t, nil
}

// startGossip starts this agent's gossip pool.
func (a *Agent) startGossip() error {
	timing, err := gossipTiming(a.cfg)
	if err != nil {
		return err
	}
	gcfg := gossip.Config{
		NodeName: a.cfg.NodeName,
		BindAddr: a.cfg.BindAddr,
		BindPort: a.cfg.SerfLANPort,
		Tags:     a.tags(a.cfg.ServerPort),
		Timing:   timing,
		Logger:   a.logger,
	}
	if a.cfg.AdvertiseAddr != a.cfg.BindAddr {
		gcfg.AdvertiseAddr = a.cfg.AdvertiseAddr
		gcfg.AdvertisePort = a.cfg.SerfLANPort
	}
	if a.cfg.EncryptKey != "" {
		key, err := base64.StdEncoding.DecodeString(a.cfg.EncryptKey)
		if err != nil {
			return fmt.Errorf("encrypt: %w", err)
		}
		gcfg.Keys = [][]byte{key}
	}
	if a.cfg.DataDir != "" {
		gcfg.KeyringFile = filepath.Join(a.cfg.DataDir, "serf", "local.keyring")
	}
	p, err := gossip.New(gcfg)
	if err != nil {
		return err
	}
	a.gossip = p
	return nil
}

// membership adapts the gossip pool to what the Raft leader needs.
type membership struct{ p *gossip.Pool }

var _ raftstore.Membership = membership{}

func (m membership) ChangeCh() <-chan struct{} { return m.p.ChangeCh() }

func (m membership) Members() []raftstore.Member {
	gm := m.p.Members()
	out := make([]raftstore.Member, 0, len(gm))
	for _, g := range gm {
		rm := raftstore.Member{
			Name: g.Name, ID: g.Tags[tagID], Addr: g.Addr.String(), Datacenter: g.Tags[tagDC],
			Server: g.Tags[tagRole] == "server",
		}
		switch g.Status {
		case gossip.StatusAlive:
			rm.Status = raftstore.MemberAlive
		case gossip.StatusLeaving:
			rm.Status = raftstore.MemberLeaving
		case gossip.StatusLeft:
			rm.Status = raftstore.MemberLeft
		default:
			rm.Status = raftstore.MemberFailed
		}
		if rm.Server {
			rm.ServerAddr = net.JoinHostPort(g.Addr.String(), g.Tags[tagPort])
			rm.Expect, _ = strconv.Atoi(g.Tags[tagExpect])
		}
		out = append(out, rm)
	}
	return out
}

// Members lists the cluster members this agent knows through gossip.
func (a *Agent) Members() []api.AgentMember {
	var out []api.AgentMember
	for _, m := range a.gossip.Members() {
		out = append(out, toAPIMember(m))
	}
	return out
}

func toAPIMember(m gossip.Member) api.AgentMember {
	return api.AgentMember{
		Name: m.Name, Addr: m.Addr.String(), Port: uint16(m.Port), Tags: m.Tags, Status: int(m.Status),
		ProtocolMin: 1, ProtocolMax: 1, ProtocolCur: 1, DelegateMin: 1, DelegateMax: 1, DelegateCur: 1,
	}
}

// member is this agent as a cluster member.
func (a *Agent) member() api.AgentMember { return toAPIMember(a.gossip.LocalMember()) }

// Join joins the cluster through the agents at addrs.
func (a *Agent) Join(_ context.Context, addrs []string) (int, error) {
	return a.gossip.Join(addrs)
}

// ForceLeave forgets a failed member at once.
func (a *Agent) ForceLeave(_ context.Context, node string) error {
	if err := a.gossip.RemoveFailed(node); err != nil {
		return structs.Invalid("node", "%v", err)
	}
	return nil
}

// retryJoin joins the retry_join addresses, trying again every
// RetryInterval (jittered) until one answers or ctx ends.
func (a *Agent) retryJoin(ctx context.Context) {
	for attempt := 1; ; attempt++ {
		n, err := a.gossip.Join(a.cfg.RetryJoin)
		if err == nil {
			a.logger.Info("retry_join succeeded", "reached", n, "attempt", attempt)
			return
		}
		a.logger.Warn("retry_join failed; will retry", "attempt", attempt, "interval", a.cfg.RetryInterval, "error", err)
		wait := a.cfg.RetryInterval/2 + rand.N(a.cfg.RetryInterval)
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
	}
}

// servers returns the server-port addresses of the servers of this
// datacenter known through gossip: the alive ones, or, when gossip sees
// none alive, the failed ones (this agent's view may lag: a restarted server
// can be back before gossip says so).
func (a *Agent) servers() []string {
	var alive, failed []string
	for _, m := range a.gossip.Members() {
		if m.Tags[tagRole] != "server" || !strings.EqualFold(m.Tags[tagDC], a.cfg.Datacenter) || m.Tags[tagPort] == "" {
			continue
		}
		addr := net.JoinHostPort(m.Addr.String(), m.Tags[tagPort])
		switch m.Status {
		case gossip.StatusAlive:
			alive = append(alive, addr)
		case gossip.StatusFailed:
			failed = append(failed, addr)
		}
	}
	if len(alive) > 0 {
		return alive
	}
	return failed
}

// clientRPC sends a request to a server: the last one that answered, or
// another when it cannot be reached or has no leader, for up to
// performance.rpc_hold_timeout (no server known, or an election under way). A write whose outcome
// is unknown (the connection went after it was sent) is not sent again
// unless it is idempotent: raftstore.MayResend decides.
func (a *Agent) clientRPC(ctx context.Context, method string, args, reply any) error {
	deadline := time.Now().Add(a.cfg.RPCHoldTimeout)
	var lastErr error = fmt.Errorf("%w: no server known yet (is retry_join set?)", structs.ErrNoLeader)
	// Servers whose TLS handshake refused a certificate in this call: each
	// is tried once, and the call fails when all have refused (a
	// misconfigured agent must not hammer the servers with handshakes).
	var refused map[string]bool
	for attempt := 0; ; attempt++ {
		servers := slices.DeleteFunc(a.servers(), func(s string) bool { return refused[s] })
		if len(servers) == 0 && len(refused) > 0 {
			return lastErr
		}
		if len(servers) > 0 {
			addr := a.preferredServer(servers)
			leader, err := a.rpcClient.CallLeader(ctx, addr, method, args, reply)
			a.followLeader(addr, leader, servers)
			if !raftstore.MayResend(method, args, err) {
				return err
			}
			a.logger.Debug("server could not serve the request; trying another", "server", addr, "method", method, "error", err)
			a.rotateServer(addr)
			lastErr = err
			if errors.Is(err, rpc.ErrTLSRefused) {
				if refused == nil {
					refused = map[string]bool{}
				}
				refused[addr] = true
				continue // the next server at once; the loop ends when all have refused
			}
		}
		if time.Now().After(deadline) {
			return lastErr
		}
		wait := time.Duration(min(attempt+1, 10)) * 25 * time.Millisecond
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
	}
}

// preferredServer returns the server to use: the current one if still
// known, else a random one.
func (a *Agent) preferredServer(servers []string) string {
	a.serverMu.Lock()
	defer a.serverMu.Unlock()
	for _, s := range servers {
		if s == a.currentServer {
			return s
		}
	}
	a.currentServer = servers[rand.N(len(servers))]
	return a.currentServer
}

// followLeader makes the leader the current server when the server that
// answered named it: requests that need the leader then go there directly
// instead of through a follower.
func (a *Agent) followLeader(asked, leader string, servers []string) {
	if leader == "" || leader == asked || !slices.Contains(servers, leader) {
		return
	}
	a.serverMu.Lock()
	defer a.serverMu.Unlock()
	if a.currentServer == asked {
		a.currentServer = leader
	}
}

// rotateServer drops addr as the current server.
func (a *Agent) rotateServer(addr string) {
	a.serverMu.Lock()
	defer a.serverMu.Unlock()
	if a.currentServer == addr {
		a.currentServer = ""
	}
}

// Keyring performs a gossip keyring operation on every member.
func (a *Agent) Keyring(ctx context.Context, op, key string) (*api.KeyringResponse, error) {
	var k []byte
	if op != gossip.KeyringList {
		var err error
		if k, err = gossip.DecodeKey(key); err != nil {
			return nil, structs.Invalid("Key", "%v", err)
		}
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	resp, err := a.gossip.Keyring(ctx, op, k)
	if err != nil {
		return nil, err
	}
	return &api.KeyringResponse{
		Datacenter: a.cfg.Datacenter, Messages: resp.Errors, Keys: resp.Keys,
		PrimaryKeys: resp.PrimaryKeys, NumNodes: resp.NumNodes,
	}, nil
}

// Leave is the HTTP API's leave: it leaves the cluster, then shuts the
// agent down once the answer is on its way (the HTTP server waits for its
// handlers, so the shutdown cannot run inside one). ShutdownCh tells when
// it is done.
func (a *Agent) Leave(ctx context.Context) error {
	err := a.leaveCluster(ctx)
	go a.Shutdown(context.Background()) //nolint:errcheck // reported through ShutdownCh and the log
	return err
}
