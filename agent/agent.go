// Package agent wires a Trellis agent together: the server (Raft and the
// catalog), the local state of the services registered here, their health
// checks, anti-entropy, the HTTP API and DNS. It is the one place that knows
// every component; only command/agent (and test harnesses) import it.
package agent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/trellismesh/trellis/agent/ae"
	"github.com/trellismesh/trellis/agent/checks"
	"github.com/trellismesh/trellis/agent/config"
	"github.com/trellismesh/trellis/agent/dns"
	"github.com/trellismesh/trellis/agent/httpapi"
	"github.com/trellismesh/trellis/agent/local"
	"github.com/trellismesh/trellis/agent/mesh"
	"github.com/trellismesh/trellis/agent/proxymgr"
	"github.com/trellismesh/trellis/agent/telemetry"
	"github.com/trellismesh/trellis/connect/golden"
	"github.com/trellismesh/trellis/gossip"
	"github.com/trellismesh/trellis/internal/authz"
	"github.com/trellismesh/trellis/raftstore"
	"github.com/trellismesh/trellis/raftstore/rpc"
	"github.com/trellismesh/trellis/raftstore/structs"
	"github.com/trellismesh/trellis/ui"
)

// Agent is a running Trellis agent.
type Agent struct {
	cfg    config.RuntimeConfig
	logger hclog.Logger
	// authz decides every HTTP request, DNS lookup and RPC; AllowAll until
	// ACL tokens exist (SetAuthorizer, before Start, replaces it).
	authz authz.Authorizer

	tel       *telemetry.Telemetry
	tls       *tlsConfigs
	gossip    *gossip.Pool
	server    *raftstore.Server // nil on a client agent
	rpcClient *rpc.Client       // client agents' link to the servers
	persist   *persister        // nil without a data directory
	state     *local.State
	syncer    *ae.StateSyncer
	reaper    *local.Reaper
	http      *httpapi.Server
	dns       *dns.Server
	mesh      *mesh.Cache       // nil when connect is disabled
	proxies   *proxymgr.Manager // nil when connect is disabled
	golden    *golden.Recorder  // the proxies' golden signals; nil when connect is disabled
	// goldenTotals are the running totals of what golden reported, for
	// Prometheus; nil when connect is disabled.
	goldenTotals *golden.Totals

	// runMu serialises changes to the registered services and checks, so a
	// check's runner and its state change together.
	runMu   sync.Mutex
	runners map[string]checks.Check // by check ID; guarded by runMu

	serverMu      sync.Mutex
	currentServer string // guarded by serverMu

	cancel       context.CancelFunc
	wg           sync.WaitGroup
	shutdownOnce sync.Once
	shutdownErr  error
	shutdownCh   chan struct{} // closed when Shutdown has finished
}

// New checks cfg and returns an agent; Start runs it.
func New(cfg config.RuntimeConfig, logger hclog.Logger) (*Agent, error) {
	if !cfg.Server && len(cfg.RetryJoin) == 0 {
		logger.Warn("client agent without retry_join: it serves nothing until joined to a cluster with trellis join")
	}
	if logger == nil {
		logger = hclog.Default()
	}
	return &Agent{cfg: cfg, logger: logger, runners: make(map[string]checks.Check), shutdownCh: make(chan struct{})}, nil
}

// Start starts every component. On error, what was started is shut down.
// ctx bounds the start itself (a signal during start cancels it).
func (a *Agent) Start(ctx context.Context) (err error) {
	defer func() {
		if err != nil {
			a.Shutdown(context.Background())
		}
	}()
	runCtx, cancel := context.WithCancel(context.Background())
	a.cancel = cancel

	if a.tel, err = telemetry.Setup(telemetry.DefaultConfig()); err != nil {
		return err
	}
	if a.tls, err = newTLSConfigs(a.cfg.TLS, a.cfg.Datacenter, a.logger); err != nil {
		return err
	}
	if err := a.startGossip(); err != nil {
		return err
	}
	if a.cfg.Server {
		if err := a.startServer(); err != nil {
			return err
		}
		// The server port is known now (it may have been 0): publish it.
		_, port, _ := net.SplitHostPort(a.server.Addr())
		p, _ := strconv.Atoi(port)
		if err := a.gossip.SetTags(a.tags(p)); err != nil {
			return fmt.Errorf("publish the server port: %w", err)
		}
	} else {
		d := rpc.Dialer{TLS: a.tls.outgoing()}
		if ip := net.ParseIP(a.cfg.BindAddr); ip != nil && !ip.IsUnspecified() {
			d.LocalIP = ip
		}
		a.rpcClient = rpc.NewClient(d, a.logger.Named("rpc"))
	}

	trigger := ae.NewTrigger()
	a.state, err = local.New(local.Config{
		NodeName:            a.cfg.NodeName,
		NodeID:              a.cfg.NodeID,
		Datacenter:          a.cfg.Datacenter,
		Address:             a.cfg.AdvertiseAddr,
		TaggedAddresses:     map[string]string{"lan": a.cfg.AdvertiseAddr, "wan": a.cfg.AdvertiseAddr},
		ServerOwnedCheckIDs: []string{raftstore.SerfCheckID},
		OnChange:            trigger.Fire,
		Logger:              a.logger,
	}, a)
	if err != nil {
		return fmt.Errorf("local state: %w", err)
	}
	a.startMesh()
	if a.cfg.DataDir != "" {
		a.persist = newPersister(filepath.Join(a.cfg.DataDir, "local", "state.json"), a.logger)
		if err := a.restoreLocal(ctx); err != nil {
			return err
		}
	}
	for _, def := range a.cfg.Services {
		if err := a.addService(ctx, def.NodeService(), def.CheckTypes(), false, false); err != nil {
			return fmt.Errorf("register service %q from %s: %w", def.ID, def.Source, err)
		}
	}
	if len(a.cfg.RetryJoin) > 0 {
		a.wg.Add(1)
		go func() {
			defer a.wg.Done()
			a.retryJoin(runCtx)
		}()
	}
	if a.persist != nil {
		a.wg.Add(1)
		go func() {
			defer a.wg.Done()
			a.persistLoop(runCtx)
		}()
	}
	if a.proxies != nil {
		a.wg.Add(1)
		go func() {
			defer a.wg.Done()
			a.runProxies(runCtx)
		}()
		a.wg.Add(1)
		go func() {
			defer a.wg.Done()
			a.reportMeshMetrics(runCtx)
		}()
	}

	// A bootstrapping server leads within moments; waiting for that keeps
	// the first sync from failing (and backing off) for want of a leader.
	if a.cfg.Bootstrap && a.cfg.Server {
		wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := a.server.WaitForLeader(wctx)
		cancel()
		if err != nil && ctx.Err() != nil {
			return ctx.Err()
		}
	}
	a.syncer, err = ae.NewStateSyncer(ae.Config{State: a.state, Trigger: trigger, Logger: a.logger, ClusterSize: a.gossip.NumAlive})
	if err != nil {
		return fmt.Errorf("anti-entropy: %w", err)
	}
	a.reaper, err = local.NewReaper(local.ReaperConfig{State: a.state, Remove: a.reapService, Logger: a.logger})
	if err != nil {
		return fmt.Errorf("reaper: %w", err)
	}
	a.wg.Add(2)
	go func() {
		defer a.wg.Done()
		if err := a.syncer.Run(runCtx); err != nil {
			a.logger.Error("anti-entropy stopped", "error", err)
		}
	}()
	go func() {
		defer a.wg.Done()
		a.reaper.Run(runCtx)
	}()

	if err := a.startDNS(); err != nil {
		return err
	}
	if err := a.startHTTP(); err != nil {
		return err
	}
	return ctx.Err()
}

func (a *Agent) startServer() error {
	scfg := raftstore.DefaultConfig()
	scfg.NodeName = a.cfg.NodeName
	scfg.NodeID = a.cfg.NodeID
	scfg.Datacenter = a.cfg.Datacenter
	scfg.DataDir = a.cfg.DataDir
	scfg.BindAddr = net.JoinHostPort(a.cfg.BindAddr, strconv.Itoa(a.cfg.ServerPort))
	scfg.AdvertiseAddr = net.JoinHostPort(a.cfg.AdvertiseAddr, strconv.Itoa(a.cfg.ServerPort))
	scfg.Bootstrap = a.cfg.Bootstrap
	scfg.BootstrapExpect = a.cfg.BootstrapExpect
	scfg.Membership = membership{a.gossip}
	scfg.ServerStabilizationTime = a.cfg.ServerStabilizationTime
	scfg.TLS = a.tls.server()
	scfg.ConnectDisabled = !a.cfg.ConnectEnabled
	scfg.CA = a.cfg.ConnectCA
	scfg.Authorizer = a.authorizer()
	scfg.RPCHoldTimeout = a.cfg.RPCHoldTimeout
	scfg.Timing = serverTiming(a.cfg)
	if a.cfg.DevMode {
		scfg.ReconcileInterval = 5 * time.Second
		scfg.MissingGrace = 2 * time.Second
		scfg.CAPruneInterval = time.Second
		scfg.CARootGrace = 3 * time.Second
	}
	scfg.Logger = a.logger
	s, err := raftstore.NewServer(scfg)
	if err != nil {
		return fmt.Errorf("start server: %w", err)
	}
	a.server = s
	return nil
}

// serverTiming returns the Raft timers of a server agent: the production
// or -dev ones, scaled by performance.raft_multiplier.
func serverTiming(cfg config.RuntimeConfig) raftstore.Timing {
	t := raftstore.DefaultTiming()
	if cfg.DevMode {
		t = raftstore.DevTiming()
	}
	return t.Scaled(cfg.RaftMultiplier)
}

// clientAddrs returns host:port for each client address.
func (a *Agent) clientAddrs(port int) []string {
	var out []string
	for _, ip := range a.cfg.ClientAddrs {
		out = append(out, net.JoinHostPort(ip, strconv.Itoa(port)))
	}
	return out
}

func (a *Agent) startDNS() error {
	if a.cfg.DNSPort < 0 {
		return nil
	}
	d, err := dns.New(dns.Config{
		Addrs:          a.clientAddrs(a.cfg.DNSPort),
		Domain:         a.cfg.DNSDomain,
		Datacenter:     a.cfg.Datacenter,
		NodeTTL:        a.cfg.DNSNodeTTL,
		ServiceTTL:     a.cfg.DNSServiceTTL,
		UDPAnswerLimit: a.cfg.DNSUDPAnswerLimit,
		Authorizer:     a.authorizer(),
		Logger:         a.logger,
	}, dnsSource{a})
	if err != nil {
		return err
	}
	if err := d.Start(); err != nil {
		return err
	}
	a.dns = d
	return nil
}

func (a *Agent) startHTTP() error {
	if a.cfg.HTTPPort < 0 {
		return nil
	}
	var uiHandler http.Handler
	if a.cfg.UIEnabled {
		var err error
		if uiHandler, err = httpapi.UIHandler(ui.FS); err != nil {
			return err
		}
	}
	h := httpapi.New(httpapi.Config{Addrs: a.clientAddrs(a.cfg.HTTPPort), UI: uiHandler, EnableDebug: a.cfg.EnableDebug,
		Authorizer: a.authorizer(), Logger: a.logger}, a)
	if err := h.Start(); err != nil {
		return err
	}
	a.http = h
	return nil
}

// HTTPAddr returns the first address of the HTTP API ("" when disabled).
func (a *Agent) HTTPAddr() string {
	if a.http == nil || len(a.http.Addrs()) == 0 {
		return ""
	}
	return a.http.Addrs()[0].String()
}

// DNSAddr returns the first UDP address of the DNS interface ("" when disabled).
func (a *Agent) DNSAddr() string {
	if a.dns == nil {
		return ""
	}
	udp, _ := a.dns.Addrs()
	if len(udp) == 0 {
		return ""
	}
	return udp[0].String()
}

// ServerAddr returns the address of the server port ("" on a client).
func (a *Agent) ServerAddr() string {
	if a.server == nil {
		return ""
	}
	return a.server.Addr()
}

// GossipAddr returns the advertised address of the gossip port.
func (a *Agent) GossipAddr() string { return a.gossip.LocalAddr() }

// IsServer reports whether this agent is a server.
func (a *Agent) IsServer() bool { return a.server != nil }

// IsLeader reports whether this agent is the Raft leader.
func (a *Agent) IsLeader() bool { return a.server != nil && a.server.IsLeader() }

// WaitForLeader returns once the cluster has a leader (as this agent can
// tell), or ctx's error.
func (a *Agent) WaitForLeader(ctx context.Context) error {
	if a.server != nil {
		return a.server.WaitForLeader(ctx)
	}
	for {
		var leader string
		if err := a.RPC(ctx, structs.MethodStatusLeader, &struct{}{}, &leader); err == nil && leader != "" {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// ShutdownCh is closed once the agent has shut down (after a leave through
// the API, for instance).
func (a *Agent) ShutdownCh() <-chan struct{} { return a.shutdownCh }

// LeaveAndShutdown leaves the cluster gracefully, then shuts the agent
// down: a server first leaves the Raft configuration (handing leadership
// over if it leads); then the agent tells the other members it leaves.
func (a *Agent) LeaveAndShutdown(ctx context.Context) error {
	err := a.leaveCluster(ctx)
	return errors.Join(err, a.Shutdown(ctx))
}

// leaveCluster is the graceful leave, without the shutdown.
func (a *Agent) leaveCluster(ctx context.Context) error {
	var errs []error
	leftRaft := false
	if a.server != nil {
		lctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		var err error
		if leftRaft, err = a.server.Leave(lctx); err != nil {
			errs = append(errs, err)
		}
		cancel()
	}
	if err := a.gossip.Leave(5 * time.Second); err != nil {
		errs = append(errs, err)
	}
	a.logger.Info("left the cluster")
	if leftRaft && a.cfg.LeaveDrainTime > 0 {
		a.drain(ctx, a.cfg.LeaveDrainTime)
	}
	return errors.Join(errs...)
}

// drain keeps a server that has left serving for d (or until ctx ends):
// requests already on their way to it are answered (forwarded to the
// leader), while the other agents, told it left, send it no more.
// performance.leave_drain_time sets d.
func (a *Agent) drain(ctx context.Context, d time.Duration) {
	a.logger.Info("draining: answering requests still sent here before shutting down", "leave_drain_time", d)
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	case <-a.shutdownCh:
	}
}

// Shutdown stops the agent: the HTTP API and DNS first (no new requests),
// then anti-entropy and the checks, then the server. It returns once every
// goroutine of the agent is gone; ctx bounds how long requests in flight may
// finish. It is idempotent.
func (a *Agent) Shutdown(ctx context.Context) error {
	a.shutdownOnce.Do(func() {
		var errs []error
		if a.http != nil {
			if err := a.http.Shutdown(ctx); err != nil {
				errs = append(errs, fmt.Errorf("stop HTTP API: %w", err))
			}
		}
		if a.dns != nil {
			_ = a.dns.Shutdown()
		}
		if a.cancel != nil {
			a.cancel()
		}
		a.wg.Wait()
		a.runMu.Lock()
		for id, r := range a.runners {
			r.Stop()
			delete(a.runners, id)
		}
		a.runMu.Unlock()
		// The proxies before the state they follow, the mesh cache after
		// the proxies that read it.
		if a.proxies != nil {
			a.proxies.Close()
		}
		if a.mesh != nil {
			a.mesh.Close()
		}
		if a.state != nil {
			a.state.Close()
		}
		if a.persist != nil {
			if err := a.persist.save(a.state); err != nil {
				errs = append(errs, err)
			}
		}
		if a.rpcClient != nil {
			a.rpcClient.Close()
		}
		if a.server != nil {
			if err := a.server.Shutdown(); err != nil {
				errs = append(errs, err)
			}
		}
		// Gossip last, without leaving: to the others this agent fails
		// (Leave says goodbye first).
		if a.gossip != nil {
			if err := a.gossip.Shutdown(); err != nil {
				errs = append(errs, fmt.Errorf("stop gossip: %w", err))
			}
		}
		if a.tel != nil {
			a.tel.Close()
		}
		a.shutdownErr = errors.Join(errs...)
		close(a.shutdownCh)
	})
	return a.shutdownErr
}

// SetAuthorizer replaces the Authorizer that decides every HTTP request,
// DNS lookup and RPC of the agent (AllowAll until ACL tokens exist). Call
// it before Start.
func (a *Agent) SetAuthorizer(az authz.Authorizer) { a.authz = az }

func (a *Agent) authorizer() authz.Authorizer {
	if a.authz == nil {
		return authz.AllowAll{}
	}
	return a.authz
}

// RPC serves a catalog read or write (in process on a server agent).
func (a *Agent) RPC(ctx context.Context, method string, args, reply any) error {
	defer func(start time.Time) {
		a.logger.Trace("rpc", "method", method, "duration", time.Since(start))
	}(time.Now())
	// A call made for an HTTP request carries its caller's token.
	if t := authz.TokenFrom(ctx); t != "" {
		if r, ok := args.(interface{ SetRequestToken(string) }); ok {
			r.SetRequestToken(t)
		}
	}
	if a.server != nil {
		return a.server.RPC(ctx, method, args, reply)
	}
	return a.clientRPC(ctx, method, args, reply)
}

// dnsSource answers DNS from the catalog. DNS reads may be served by any
// server (stale), as DNS answers are cached anyway.
type dnsSource struct{ a *Agent }

func (d dnsSource) ServiceNodes(ctx context.Context, name, tag string) ([]structs.CheckServiceNode, error) {
	req := &structs.ServiceSpecificRequest{ServiceName: name, QueryOptions: structs.QueryOptions{AllowStale: true}}
	if tag != "" {
		req.ServiceTags, req.TagFilter = []string{tag}, true
	}
	var reply structs.IndexedCheckServiceNodes
	if err := d.a.RPC(ctx, structs.MethodHealthServiceNodes, req, &reply); err != nil {
		return nil, err
	}
	return reply.Nodes, nil
}

func (d dnsSource) Node(ctx context.Context, name string) (*structs.Node, error) {
	req := &structs.NodeSpecificRequest{Node: name, QueryOptions: structs.QueryOptions{AllowStale: true}}
	var reply structs.IndexedNodeServices
	if err := d.a.RPC(ctx, structs.MethodCatalogNodeServices, req, &reply); err != nil {
		return nil, err
	}
	if reply.NodeServices == nil {
		return nil, nil
	}
	return reply.NodeServices.Node, nil
}

// TriggerFullSync asks anti-entropy for a full sync now.
func (a *Agent) TriggerFullSync() {
	if a.syncer != nil {
		a.syncer.TriggerFull()
	}
}
