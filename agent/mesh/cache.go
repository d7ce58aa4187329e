// Package mesh is the agent's view of the mesh, kept current by blocking
// queries to the servers: the trusted roots, the intentions, a leaf
// certificate per service the agent's proxies front or its clients use
// (renewed before expiry and re-signed after a root rotation while in use,
// released when unused), the discovery chains of the
// services they dial and the healthy endpoints of the chains' targets. The proxies, the agent's connect endpoints and the CLI
// all read from it; when the servers are unreachable it keeps serving what
// it last had.
package mesh

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/trellismesh/trellis/connect"
	"github.com/trellismesh/trellis/connect/chain"
	"github.com/trellismesh/trellis/connect/configentry"
	"github.com/trellismesh/trellis/connect/intentions"
	"github.com/trellismesh/trellis/connect/proxy"
	"github.com/trellismesh/trellis/raftstore/structs"
)

// RPC reads and writes cluster state (in process on a server agent, over
// the internal RPC on a client agent).
type RPC interface {
	RPC(ctx context.Context, method string, args, reply any) error
}

// Config configures a Cache.
type Config struct {
	RPC RPC
	// NodeName is this agent's node (leaf requests name it).
	NodeName   string
	Datacenter string
	// DefaultAllow is the intention policy when none matches.
	DefaultAllow bool
	// MaxLeaves caps how many leaves of services not declared with
	// SetLocalServices this agent holds at once (1000 when 0): each has a
	// renewal goroutine and a record on the leader. A Leaf call (any local
	// process can make one over HTTP) that would make one more is refused;
	// leaves of local services do not count, and a CertSource (a proxy the
	// agent runs) is never refused. A leaf counts until it is released,
	// LeafIdleTimeout after its last use, so the cap bounds the names in
	// use within that time, not every name ever asked for.
	MaxLeaves int
	// LeafIdleTimeout is how long a leaf nobody uses is kept (and renewed,
	// or re-signed after a rotation) before it is released (1h when 0). A
	// blocking watcher, a local service (SetLocalServices) or a proxy
	// presenting it keeps a leaf in use; each fetch restarts the time. An
	// hour is well under the default 72h TTL, so a leaf fetched once is
	// released before its renewal is due (at 60-85% of its life) and is
	// signed only once; a client polling every few minutes keeps its key;
	// and a name fetched once (a churned service, a typo, a client filling
	// MaxLeaves) frees its slot within the hour. Consul's agent cache keeps
	// a leaf 3 days, but has no cap to free.
	LeafIdleTimeout time.Duration
	// QueryWait is the wait of the blocking queries (5m when 0).
	QueryWait time.Duration
	// Logger is named "mesh"; nil means hclog.Default().
	Logger hclog.Logger
}

// Cache holds the mesh state an agent needs. Its methods are safe for
// concurrent use.
type Cache struct {
	cfg    Config
	logger hclog.Logger

	roots      *watch[*structs.IndexedCARoots]
	bundle     atomic.Pointer[connect.Bundle]
	intentions *watch[*intentions.Set]

	mu        sync.Mutex
	leaves    map[string]*leaf                               // by lower-case service name; guarded by mu
	local     map[string]bool                                // lower-case services whose leaves are kept (SetLocalServices); guarded by mu
	epoch     time.Time                                      // origin of leaf.lastUsed
	endpoints map[string]*endpoints                          // by lower-case service name; guarded by mu
	chains    map[string]*shared[*chain.Chain]               // by lower-case service name; guarded by mu
	entries   map[string]*shared[configentry.Entry]          // by kind/lower-case name; guarded by mu
	nodes     map[string]*shared[[]structs.CheckServiceNode] // by datacenter/service, lower case; guarded by mu
	closed    bool                                           // guarded by mu
	wg        sync.WaitGroup                                 // leaf goroutines
	ctx       context.Context
	cancel    context.CancelFunc
}

// New starts the roots and intentions watches.
func New(cfg Config) *Cache {
	if cfg.Logger == nil {
		cfg.Logger = hclog.Default()
	}
	if cfg.MaxLeaves <= 0 {
		cfg.MaxLeaves = 1000
	}
	if cfg.LeafIdleTimeout <= 0 {
		cfg.LeafIdleTimeout = time.Hour
	}
	if cfg.QueryWait <= 0 {
		cfg.QueryWait = 5 * time.Minute
	}
	c := &Cache{cfg: cfg, logger: cfg.Logger.Named("mesh"), leaves: map[string]*leaf{}, local: map[string]bool{}, epoch: time.Now(), endpoints: map[string]*endpoints{},
		chains: map[string]*shared[*chain.Chain]{}, entries: map[string]*shared[configentry.Entry]{}, nodes: map[string]*shared[[]structs.CheckServiceNode]{}}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	c.roots = startWatch("roots", c.logger, func(ctx context.Context, minIndex uint64) (*structs.IndexedCARoots, uint64, error) {
		var reply structs.IndexedCARoots
		err := cfg.RPC.RPC(ctx, structs.MethodCARoots, &structs.DCSpecificRequest{Datacenter: cfg.Datacenter, QueryOptions: c.query(minIndex)}, &reply)
		if err == nil && len(reply.Roots) == 0 {
			err = errors.New("the servers have no CA roots yet")
		}
		return &reply, reply.Index, err
	}, c.setBundle)
	c.intentions = startWatch("intentions", c.logger, func(ctx context.Context, minIndex uint64) (*intentions.Set, uint64, error) {
		var reply structs.IndexedIntentions
		err := cfg.RPC.RPC(ctx, structs.MethodIntentionList, &structs.DCSpecificRequest{Datacenter: cfg.Datacenter, QueryOptions: c.query(minIndex)}, &reply)
		return intentions.NewSet(reply.Intentions), reply.Index, err
	}, nil)
	return c
}

// query returns the options of a blocking query from this cache: any
// server may answer (the proxies keep working through an election).
func (c *Cache) query(minIndex uint64) structs.QueryOptions {
	return structs.QueryOptions{MinQueryIndex: minIndex, MaxQueryTime: c.cfg.QueryWait, AllowStale: true}
}

func (c *Cache) setBundle(r *structs.IndexedCARoots) {
	var pems []string
	for _, root := range r.Roots {
		pems = append(pems, root.RootCert)
		pems = append(pems, root.IntermediateCerts...)
	}
	b, err := connect.NewBundle(r.TrustDomain, r.ActiveRootID, pems...)
	if err != nil {
		c.logger.Error("the servers' CA roots do not parse; keeping the previous ones", "error", err)
		return
	}
	c.bundle.Store(b)
}

// Close stops every watch and leaf renewal and waits for their goroutines.
func (c *Cache) Close() {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	c.closed = true
	eps := make([]*endpoints, 0, len(c.endpoints))
	for _, e := range c.endpoints {
		eps = append(eps, e)
	}
	var stops []func()
	for _, sh := range c.chains {
		stops = append(stops, sh.w.stop)
	}
	for _, sh := range c.entries {
		stops = append(stops, sh.w.stop)
	}
	for _, sh := range c.nodes {
		stops = append(stops, sh.w.stop)
	}
	c.mu.Unlock()
	c.cancel()
	c.wg.Wait()
	for _, e := range eps {
		e.w.stop()
	}
	for _, stop := range stops {
		stop()
	}
	c.roots.stop()
	c.intentions.stop()
}

// --- Roots ---

// Roots returns the trusted roots; with minIndex above 0 it waits up to wait
// for newer ones.
func (c *Cache) Roots(ctx context.Context, minIndex uint64, wait time.Duration) (*structs.IndexedCARoots, error) {
	r, _, err := c.roots.wait(ctx, minIndex, c.waitOrDefault(wait))
	return r, err
}

func (c *Cache) waitOrDefault(d time.Duration) time.Duration {
	if d <= 0 {
		return 5 * time.Minute
	}
	return min(d, 10*time.Minute)
}

// Bundle returns the current trust bundle (nil before the roots are known).
func (c *Cache) Bundle() *connect.Bundle { return c.bundle.Load() }

// OnRootsChange calls fn after every change of the roots; fn must return
// quickly. The returned function stops the calls.
func (c *Cache) OnRootsChange(fn func()) func() {
	return c.roots.subscribe(func(*structs.IndexedCARoots) { fn() })
}

// --- Intentions ---

// Authorize decides whether source may connect to target, with the
// intentions held and the default policy. A source of another trust domain
// is denied.
func (c *Cache) Authorize(target string, source connect.ServiceID) intentions.Decision {
	if b := c.Bundle(); b != nil && !strings.EqualFold(source.TrustDomain, b.TrustDomain) {
		return intentions.Decision{Reason: fmt.Sprintf("identity %s is of another trust domain than %s", source, b.TrustDomain)}
	}
	set, _, ok := c.intentions.get()
	if !ok {
		return intentions.Decision{Reason: "the intentions are not known yet"}
	}
	return set.Decide(source.Service, target, c.cfg.DefaultAllow)
}

// DefaultAllow reports the default intention policy.
func (c *Cache) DefaultAllow() bool { return c.cfg.DefaultAllow }

// OnIntentionsChange calls fn after every change of the intentions; fn
// must return quickly.
func (c *Cache) OnIntentionsChange(fn func()) func() {
	return c.intentions.subscribe(func(*intentions.Set) { fn() })
}

// Authorizer returns the proxy.Authorizer of a service's public listener.
func (c *Cache) Authorizer(target string) proxy.Authorizer { return authorizer{c, target} }

type authorizer struct {
	c      *Cache
	target string
}

func (a authorizer) Authorize(source connect.ServiceID) intentions.Decision {
	return a.c.Authorize(a.target, source)
}

// --- Endpoints of upstreams ---

// endpoints watches the healthy mesh endpoints of one service, shared by
// every proxy that dials it.
type endpoints struct {
	w    *watch[[]proxy.Instance]
	refs int // guarded by Cache.mu
}

// SubscribeEndpoints calls fn with the healthy mesh endpoints of service
// now (if known) and after every change, until the returned release
// function is called. fn must return quickly. Watches are shared: one
// blocking query per service, however many proxies dial it.
func (c *Cache) SubscribeEndpoints(service string, fn func([]proxy.Instance)) (release func(), err error) {
	return c.watchEndpoints(service, fn)
}

func (c *Cache) watchEndpoints(service string, fn func([]proxy.Instance)) (func(), error) {
	key := strings.ToLower(service)
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil, errWatchStopped
	}
	e := c.endpoints[key]
	if e == nil {
		e = &endpoints{w: startWatch("endpoints of "+service, c.logger, c.fetchEndpoints(service), nil)}
		c.endpoints[key] = e
	}
	e.refs++
	c.mu.Unlock()
	unsub := func() {}
	if fn != nil {
		unsub = e.w.subscribeNow(fn)
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			unsub()
			c.mu.Lock()
			e.refs--
			last := e.refs == 0 && c.endpoints[key] == e
			if last {
				delete(c.endpoints, key)
			}
			c.mu.Unlock()
			if last {
				e.w.stop()
			}
		})
	}, nil
}

func (c *Cache) fetchEndpoints(service string) fetchFn[[]proxy.Instance] {
	return func(ctx context.Context, minIndex uint64) ([]proxy.Instance, uint64, error) {
		var reply structs.IndexedCheckServiceNodes
		req := &structs.ServiceSpecificRequest{Datacenter: c.cfg.Datacenter, ServiceName: service, Connect: true, PassingOnly: true, QueryOptions: c.query(minIndex)}
		if err := c.cfg.RPC.RPC(ctx, structs.MethodHealthServiceNodes, req, &reply); err != nil {
			return nil, 0, err
		}
		out := make([]proxy.Instance, 0, len(reply.Nodes))
		for _, n := range reply.Nodes {
			addr := n.Service.Address
			if addr == "" {
				addr = n.Node.Address
			}
			out = append(out, proxy.Instance{Node: n.Node.Node, Addr: net.JoinHostPort(addr, strconv.Itoa(n.Service.Port)), Service: service})
		}
		return out, reply.Index, nil
	}
}

// Endpoints returns the healthy mesh endpoints of service, asking the
// servers directly (for tests and the CLI; the proxies watch).
func (c *Cache) Endpoints(ctx context.Context, service string) ([]proxy.Instance, error) {
	v, _, err := c.fetchEndpoints(service)(ctx, 0)
	return v, err
}

// tlsOf builds the tls.Certificate of an issued leaf and its key.
func tlsOf(cert *structs.IssuedCert) (*tls.Certificate, error) {
	return connect.TLSCertificate(cert.CertPEM, cert.PrivateKeyPEM)
}
