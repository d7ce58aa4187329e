package raftstore

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"

	"github.com/trellismesh/trellis/connect/ca"
	"github.com/trellismesh/trellis/connect/golden"
	"github.com/trellismesh/trellis/raftstore/fsm"
	"github.com/trellismesh/trellis/raftstore/rpc"
	"github.com/trellismesh/trellis/raftstore/state"
	"github.com/trellismesh/trellis/raftstore/structs"
)

// Server is a Raft server holding the cluster state.
type Server struct {
	cfg    Config
	logger hclog.Logger

	fsm       *fsm.FSM
	raft      *raft.Raft
	transport *raft.NetworkTransport
	mux       *mux
	bolt      *raftboltdb.BoltStore // nil in memory
	// rpcClient forwards requests to the leader and asks other servers.
	rpcClient *rpc.Client
	// writes queues catalog writes for the batch workers.
	writes chan *pendingWrite

	// caMu orders CA changes: signing holds it for reading, configuration
	// changes and root pruning for writing.
	caMu sync.RWMutex
	// signerCache is the parsed active root, by its ID.
	signerCache atomic.Pointer[ca.Root]
	// logStore is Raft's log (for tests that check what reaches it).
	logStore raft.LogStore
	// golden keeps the agents' reports of the mesh's golden signals while
	// this server leads (metrics_endpoints.go).
	golden *golden.Window
	// meshWriteMu serialises config entry writes with intention writes, so
	// that "is this destination managed by a service-intentions entry or by
	// legacy intentions?" and the cross-entry checks are decided on the state
	// the write applies to. Only a leader takes it, and always before
	// intentionMu.
	meshWriteMu sync.Mutex
	// intentionMu serialises intention writes.
	intentionMu sync.Mutex

	// applyMu is held for reading while an entry is handed to Raft and
	// answered, and for writing by Shutdown before it stops Raft: Raft
	// never answers entries still queued when it stops.
	applyMu sync.RWMutex
	closing bool // guarded by applyMu

	// leaderReady is true while this server is the leader and has applied
	// every entry of earlier terms (a barrier after winning the election),
	// so its state is current. Reads and writes wait for it.
	leaderReady atomic.Bool
	// left is set once this server has left the Raft configuration (a
	// graceful leave, before its drain): it no longer hears from the
	// leader, and forwards through the other servers.
	left     atomic.Bool
	leaderCh chan bool // raft's NotifyCh
	wg       sync.WaitGroup

	shutdownOnce sync.Once
	shutdownErr  error
	shutdownCh   chan struct{}
	// started is closed once start has set up Raft and the write workers;
	// connections accepted before then wait for it.
	started chan struct{}
}

// NewServer starts a server: it binds the server port, opens (or creates)
// the Raft state under cfg.DataDir and starts Raft. With cfg.Bootstrap and no
// existing state it forms a single-server cluster.
func NewServer(cfg Config) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("server config: %w", err)
	}
	logger := cfg.Logger
	if logger == nil {
		logger = hclog.Default()
	}
	s := &Server{cfg: cfg, logger: logger.Named("server"), shutdownCh: make(chan struct{}), started: make(chan struct{}),
		golden: golden.NewWindow(MetricsRetain)}
	if cfg.NodeID == "" {
		s.cfg.NodeID = cfg.NodeName
	}
	if err := s.start(); err != nil {
		s.Shutdown()
		return nil, err
	}
	return s, nil
}

func (s *Server) start() error {
	ln, err := net.Listen("tcp", s.cfg.BindAddr)
	if err != nil {
		return fmt.Errorf("listen on server port %s: %w", s.cfg.BindAddr, err)
	}
	advertise, err := advertiseAddr(s.cfg.AdvertiseAddr, ln.Addr())
	if err != nil {
		ln.Close()
		return err
	}
	var (
		dialer     rpc.Dialer
		serverTLS  *tls.Config
		requireTLS bool
	)
	if t := s.cfg.TLS; t != nil {
		dialer.TLS, serverTLS, requireTLS = t.Outgoing, t.Incoming, t.RequireIncoming
	}
	if host, _, err := net.SplitHostPort(s.cfg.BindAddr); err == nil {
		if ip := net.ParseIP(host); ip != nil && !ip.IsUnspecified() {
			dialer.LocalIP = ip
		}
	}
	s.rpcClient = rpc.NewClient(dialer, s.logger.Named("rpc"))
	s.mux = newMux(ln, advertise, dialer, serverTLS, requireTLS, s.serveRPCConn, s.logger.Named("mux"))
	s.transport = raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
		Stream:  s.mux.raft,
		MaxPool: 3,
		Timeout: 10 * time.Second,
		Logger:  s.logger.Named("raft-net"),
	})

	var (
		logs   raft.LogStore
		stable raft.StableStore
		snaps  raft.SnapshotStore
	)
	if s.cfg.DataDir == "" {
		mem := raft.NewInmemStore()
		logs, stable, snaps = mem, mem, raft.NewInmemSnapshotStore()
	} else {
		dir := filepath.Join(s.cfg.DataDir, "raft")
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return fmt.Errorf("create raft directory %s: %w", dir, err)
		}
		s.bolt, err = raftboltdb.New(raftboltdb.Options{Path: filepath.Join(dir, "raft.db")})
		if err != nil {
			return fmt.Errorf("open raft log %s: %w", filepath.Join(dir, "raft.db"), err)
		}
		logs, stable = s.bolt, s.bolt
		snaps, err = raft.NewFileSnapshotStoreWithLogger(dir, 2, s.logger.Named("snapshot"))
		if err != nil {
			return fmt.Errorf("open snapshot store in %s: %w", dir, err)
		}
	}

	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(s.cfg.NodeID)
	rc.Logger = s.logger.Named("raft")
	rc.HeartbeatTimeout = s.cfg.Timing.HeartbeatTimeout
	rc.ElectionTimeout = s.cfg.Timing.ElectionTimeout
	rc.LeaderLeaseTimeout = s.cfg.Timing.LeaderLeaseTimeout
	rc.CommitTimeout = s.cfg.Timing.CommitTimeout
	rc.SnapshotInterval = s.cfg.Timing.SnapshotInterval
	rc.SnapshotThreshold = s.cfg.Timing.SnapshotThreshold
	// Writes that arrive together go to disk and to followers together.
	rc.BatchApplyCh = true
	rc.MaxAppendEntries = 256
	s.leaderCh = make(chan bool, 1)
	rc.NotifyCh = s.leaderCh
	if err := raft.ValidateConfig(rc); err != nil {
		return fmt.Errorf("raft config: %w", err)
	}

	s.logStore = logs
	s.fsm = fsm.New(s.logger)
	if s.cfg.Bootstrap {
		has, err := raft.HasExistingState(logs, stable, snaps)
		if err != nil {
			return fmt.Errorf("read raft state: %w", err)
		}
		if !has {
			conf := raft.Configuration{Servers: []raft.Server{{
				ID: rc.LocalID, Address: s.transport.LocalAddr(), Suffrage: raft.Voter,
			}}}
			if err := raft.BootstrapCluster(rc, logs, stable, snaps, noPipelineTransport{s.transport}, conf); err != nil {
				return fmt.Errorf("bootstrap raft: %w", err)
			}
			s.logger.Info("bootstrapped a single-server cluster", "id", rc.LocalID, "address", s.transport.LocalAddr())
		}
	}
	s.raft, err = raft.NewRaft(rc, s.fsm, logs, stable, snaps, noPipelineTransport{s.transport})
	if err != nil {
		return fmt.Errorf("start raft: %w", err)
	}
	s.wg.Add(1)
	go s.leaderLoop()
	s.writes = make(chan *pendingWrite, maxBatch*batchWorkers)
	for range batchWorkers {
		s.wg.Add(1)
		go s.batchWorker()
	}
	if s.cfg.BootstrapExpect > 0 && s.cfg.Membership != nil {
		s.wg.Add(1)
		go s.bootstrapWatcher()
	}
	close(s.started)
	return nil
}

// leaderLoop follows leadership changes: on winning an election it waits for
// a barrier, so that every entry of earlier terms is applied, before it
// serves; on losing it stops at once.
func (s *Server) leaderLoop() {
	defer s.wg.Done()
	stop := func() {} // stops the current establishLeadership and waits for it
	defer func() { stop() }()
	for {
		select {
		case <-s.shutdownCh:
			return
		case isLeader := <-s.leaderCh:
			stop()
			s.leaderReady.Store(false)
			if !isLeader {
				s.logger.Info("lost leadership")
				// The agents report to the next leader now: what this one
				// kept would have a gap if it led again.
				s.golden.Reset()
				continue
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan struct{})
			go func() {
				defer close(done)
				if !s.establishLeadership(ctx) {
					return
				}
				var duties sync.WaitGroup
				duties.Add(1)
				go func() {
					defer duties.Done()
					s.caDuties(ctx)
				}()
				s.leaderDuties(ctx)
				duties.Wait()
			}()
			stop = func() { cancel(); <-done }
		}
	}
}

// establishLeadership makes a new leader ready to serve; it reports
// whether it did.
func (s *Server) establishLeadership(ctx context.Context) bool {
	for ctx.Err() == nil {
		err := s.barrier()
		if err == nil {
			s.leaderReady.Store(true)
			s.logger.Info("leader ready", "index", s.raft.AppliedIndex())
			return true
		}
		if errors.Is(err, raft.ErrNotLeader) || errors.Is(err, raft.ErrLeadershipLost) || errors.Is(err, raft.ErrRaftShutdown) {
			return false
		}
		s.logger.Error("barrier after election failed; retrying", "error", err)
		select {
		case <-ctx.Done():
		case <-time.After(100 * time.Millisecond):
		}
	}
	return false
}

// barrier waits until every entry before it is applied; see applyEntry
// for why it holds applyMu.
func (s *Server) barrier() error {
	s.applyMu.RLock()
	defer s.applyMu.RUnlock()
	if s.closing {
		return raft.ErrRaftShutdown
	}
	return s.raft.Barrier(s.cfg.ApplyTimeout).Error()
}

// advertiseAddr picks the address other servers dial.
func advertiseAddr(configured string, bound net.Addr) (net.Addr, error) {
	if configured == "" {
		tcp := bound.(*net.TCPAddr)
		if tcp.IP.IsUnspecified() {
			return nil, fmt.Errorf("server port bound to %s: set an advertise address other servers can reach", bound)
		}
		return tcp, nil
	}
	a, err := net.ResolveTCPAddr("tcp", configured)
	if err != nil {
		return nil, fmt.Errorf("advertise address %q: %w", configured, err)
	}
	if a.Port == 0 {
		a.Port = bound.(*net.TCPAddr).Port
	}
	return a, nil
}

// Addr returns the address of the server port that other servers dial.
func (s *Server) Addr() string { return string(s.transport.LocalAddr()) }

// State returns the current state store, for in-process readers that need
// more than RPC (tests, stats). It changes on snapshot restore.
func (s *Server) State() *state.Store { return s.fsm.State() }

// IsLeader reports whether this server is the Raft leader and ready: its
// state holds every entry committed before it won the election.
func (s *Server) IsLeader() bool { return s.leaderReady.Load() && s.raft.State() == raft.Leader }

// Leader returns the server-port address of the leader, or "" when none is known.
func (s *Server) Leader() string {
	addr, _ := s.raft.LeaderWithID()
	return string(addr)
}

// Peers returns the server-port addresses of the voters.
func (s *Server) Peers() ([]string, error) {
	f := s.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return nil, fmt.Errorf("read raft configuration: %w", err)
	}
	var out []string
	for _, srv := range f.Configuration().Servers {
		if srv.Suffrage == raft.Voter {
			out = append(out, string(srv.Address))
		}
	}
	return out, nil
}

// Stats returns Raft's statistics (state, term, indexes, …) for /v1/agent/self.
func (s *Server) Stats() map[string]string { return s.raft.Stats() }

// WaitForLeader returns once a leader is known (and, when that is this
// server, ready to serve), or ctx's error.
func (s *Server) WaitForLeader(ctx context.Context) error {
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		if l := s.Leader(); l != "" && (l != s.Addr() || s.IsLeader()) {
			return nil
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			return ctx.Err()
		case <-s.shutdownCh:
			return structs.ErrShutdown
		}
	}
}

// lastContact returns how long ago this server heard from the leader; 0 on
// the leader.
func (s *Server) lastContact() time.Duration {
	if s.IsLeader() {
		return 0
	}
	last := s.raft.LastContact()
	if last.IsZero() {
		return 0
	}
	return time.Since(last)
}

// apply writes a catalog write through the batcher and returns its index.
// Requests are validated before they get here.
func (s *Server) apply(ctx context.Context, t structs.MessageType, msg any) (uint64, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	var op state.Op
	switch m := msg.(type) {
	case *structs.RegisterRequest:
		op.Register = m
	case *structs.DeregisterRequest:
		op.Deregister = m
	default:
		idx, _, err := s.applyEntry(t, msg)
		return idx, err
	}
	return s.submit(ctx, op)
}

// raftError turns an error of raft.Apply into ours.
func (s *Server) raftError(t structs.MessageType, err error) error {
	return s.raftFutureError("apply "+t.String(), err)
}

// raftFutureError turns the error of a Raft future (an entry applied, a
// configuration change) into ours; what names the operation.
func (s *Server) raftFutureError(what string, err error) error {
	switch {
	case errors.Is(err, raft.ErrNotLeader), errors.Is(err, raft.ErrLeadershipTransferInProgress):
		// Refused before it was appended: the leader may take it.
		return s.notLeaderError()
	case errors.Is(err, raft.ErrLeadershipLost):
		// Appended, then leadership went: it may yet be committed.
		return fmt.Errorf("%s: %w", what, structs.ErrLeadershipLost)
	case errors.Is(err, raft.ErrRaftShutdown):
		return structs.ErrShutdown
	}
	return fmt.Errorf("%s: %w", what, err)
}

// Shutdown stops Raft, closes the server port and the stores, and returns
// once every goroutine of the server has exited. It is idempotent.
func (s *Server) Shutdown() error {
	s.shutdownOnce.Do(func() {
		close(s.shutdownCh)
		var errs []error
		// RPC first: requests in flight are cancelled, none arrive.
		if s.rpcClient != nil {
			s.rpcClient.Close()
		}
		// Entries in flight are answered while Raft still runs; none start
		// after this.
		s.applyMu.Lock()
		s.closing = true
		s.applyMu.Unlock()
		// Then Raft: it stops using the transport and the stores, and
		// leadership ends, so the leader loop can end.
		if s.raft != nil {
			if err := s.raft.Shutdown().Error(); err != nil {
				errs = append(errs, fmt.Errorf("shut down raft: %w", err))
			}
		}
		s.wg.Wait() // the leader loop and the bootstrap watcher
		if s.transport != nil {
			if err := s.transport.Close(); err != nil {
				errs = append(errs, fmt.Errorf("close raft transport: %w", err))
			}
			// Its pooled connections to the other servers too: their
			// handlers wait on them until they close.
			s.transport.CloseStreams()
		}
		if s.mux != nil {
			s.mux.Close()
		}
		if s.bolt != nil {
			if err := s.bolt.Close(); err != nil {
				errs = append(errs, fmt.Errorf("close raft log: %w", err))
			}
		}
		s.shutdownErr = errors.Join(errs...)
	})
	return s.shutdownErr
}
