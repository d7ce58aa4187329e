package proxy

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"maps"
	"math/rand/v2"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/trellismesh/trellis/api"
	"github.com/trellismesh/trellis/connect"
	"github.com/trellismesh/trellis/connect/golden"
	"github.com/trellismesh/trellis/connect/intentions"
	meshproxy "github.com/trellismesh/trellis/connect/proxy"
)

// Defaults of runConfig.
const (
	// defaultQueryWait is the wait of each blocking query.
	defaultQueryWait = 5 * time.Minute
	// defaultMinBackoff and defaultMaxBackoff bound the delay before a
	// failed query is retried; it doubles from the one to the other.
	defaultMinBackoff = 250 * time.Millisecond
	defaultMaxBackoff = 10 * time.Second
	// waitingLogEvery is how often the start logs what it still waits for.
	waitingLogEvery = 10 * time.Second
	// defaultMetricsInterval is how often the proxy hands its golden
	// signals to its agent.
	defaultMetricsInterval = 5 * time.Second
)

// Names of the watches, in logs.
const (
	watchLeaf       = "leaf certificate"
	watchRoots      = "CA roots"
	watchIntentions = "intentions"
)

// runConfig configures run.
type runConfig struct {
	Client *api.Client
	Spec   spec
	Logger hclog.Logger
	// QueryWait is the wait of each blocking query; defaultQueryWait when 0.
	QueryWait time.Duration
	// MinBackoff and MaxBackoff bound the retry delays; the defaults when 0.
	MinBackoff, MaxBackoff time.Duration
	// OnStop, when set, is called once the proxy begins to stop.
	OnStop func()
	// MetricsInterval is how often the proxy's golden signals go to the
	// agent; defaultMetricsInterval when 0.
	MetricsInterval time.Duration
}

// run starts the watches, waits for the leaf, the roots and the
// intentions, then runs the proxy until ctx ends. It returns nil when ctx
// ended (whether or not the proxy had started), or why the proxy could not
// start.
func run(ctx context.Context, cfg runConfig) error {
	return newRunner(cfg).run(ctx)
}

func newRunner(cfg runConfig) *runner {
	if cfg.QueryWait <= 0 {
		cfg.QueryWait = defaultQueryWait
	}
	if cfg.MinBackoff <= 0 {
		cfg.MinBackoff = defaultMinBackoff
	}
	if cfg.MetricsInterval <= 0 {
		cfg.MetricsInterval = defaultMetricsInterval
	}
	if cfg.MaxBackoff < cfg.MinBackoff {
		cfg.MaxBackoff = max(defaultMaxBackoff, cfg.MinBackoff)
	}
	r := &runner{
		cfg:       cfg,
		logger:    cfg.Logger,
		certs:     &certSource{},
		instances: map[string][]meshproxy.Instance{},
		outage:    &outage{logger: cfg.Logger, agent: cfg.Client.Address(), failing: map[string]bool{}},
		ready:     newReadiness(watchLeaf, watchRoots, watchIntentions),
		started:   make(chan struct{}),
		golden:    golden.NewRecorder(),
	}
	r.authz = &authorizer{service: cfg.Spec.Service, defaultAllow: cfg.Spec.DefaultAllow, certs: r.certs}
	return r
}

func (r *runner) run(ctx context.Context) error {
	cfg := r.cfg
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() {
		cancel()
		wg.Wait()
	}()
	goWatch := func(f func(context.Context)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f(ctx)
		}()
	}
	goWatch(r.watchLeaf)
	goWatch(r.watchRoots)
	goWatch(r.watchIntentions)
	for _, u := range cfg.Spec.Upstreams {
		goWatch(func(ctx context.Context) { r.watchEndpoints(ctx, u) })
	}

	if !r.waitReady(ctx) {
		r.logger.Info("stopped before the proxy started")
		return nil
	}
	pcfg := meshproxy.Config{
		ProxyID: cfg.Spec.ProxyID, Service: cfg.Spec.Service,
		PublicAddr: cfg.Spec.PublicAddr, LocalAppAddr: cfg.Spec.LocalAppAddr,
		Certs: r.certs, Authorizer: r.authz, Golden: r.golden, Logger: r.logger,
	}
	for _, u := range cfg.Spec.Upstreams {
		pcfg.Upstreams = append(pcfg.Upstreams, meshproxy.UpstreamConfig{
			DestinationName: u.DestinationName, LocalBindAddress: u.LocalBindAddress, LocalBindPort: u.LocalBindPort,
		})
	}
	p, err := meshproxy.New(pcfg)
	if err != nil {
		return fmt.Errorf("start the proxy of sidecar %q: %w", cfg.Spec.ProxyID, err)
	}
	r.attach(p)
	up := make([]string, 0, len(cfg.Spec.Upstreams))
	for _, u := range cfg.Spec.Upstreams {
		if a := p.UpstreamAddr(u.DestinationName); a != nil {
			up = append(up, u.DestinationName+"="+a.String())
		}
	}
	r.logger.Info("proxy started", "proxy", cfg.Spec.ProxyID, "service", cfg.Spec.Service,
		"public", p.PublicAddr().String(), "app", cfg.Spec.LocalAppAddr, "upstreams", up)
	close(r.started)
	goWatch(r.reportMetrics)

	<-ctx.Done()
	if cfg.OnStop != nil {
		cfg.OnStop()
	}
	r.logger.Info("stopping the proxy")
	cancel()
	if err := p.Close(); err != nil {
		r.logger.Warn("close the proxy", "error", err)
	}
	wg.Wait()
	// What the last interval counted, if the agent is still there.
	r.sendMetrics(context.Background(), time.Second)
	r.logger.Info("proxy stopped")
	return nil
}

// reportMetrics hands the proxy's golden signals to the agent every
// MetricsInterval until ctx ends; the agent reports them to the servers
// with its own proxies'. What fails to go is dropped.
func (r *runner) reportMetrics(ctx context.Context) {
	t := time.NewTicker(r.cfg.MetricsInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			r.sendMetrics(ctx, r.cfg.MetricsInterval)
		}
	}
}

// sendMetrics sends what the proxy counted since the last call.
func (r *runner) sendMetrics(ctx context.Context, timeout time.Duration) {
	samples := r.golden.Collect()
	if len(samples) == 0 {
		return
	}
	out := make([]api.MeshSample, len(samples))
	for i, s := range samples {
		out[i] = api.MeshSample{Side: string(s.Side), Source: s.Source, Destination: s.Destination, Protocol: s.Protocol,
			Requests: s.Requests, Failures: s.Failures, Latency: s.Latency}
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if err := r.cfg.Client.Agent().ConnectProxyMetrics(out, (&api.WriteOptions{}).WithContext(ctx)); err != nil {
		r.logger.Debug("could not hand the golden signals to the agent; dropped", "samples", len(out), "error", err)
	}
}

// runner holds the state the watches feed and the proxy reads.
type runner struct {
	cfg    runConfig
	logger hclog.Logger
	certs  *certSource
	authz  *authorizer
	outage *outage
	ready  *readiness
	// started is closed once the proxy serves.
	started chan struct{}
	// golden holds the proxy's golden signals until they go to the agent.
	golden *golden.Recorder

	mu        sync.Mutex
	p         *meshproxy.Proxy                // guarded by mu; nil until started
	instances map[string][]meshproxy.Instance // guarded by mu; the last known, by upstream
}

// attach hands the proxy the endpoints known so far; from then on the
// watches reach it directly.
func (r *runner) attach(p *meshproxy.Proxy) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.p = p
	for dest, in := range r.instances {
		p.SetInstances(dest, in)
	}
}

func (r *runner) proxy() *meshproxy.Proxy {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.p
}

func (r *runner) setInstances(dest string, in []meshproxy.Instance) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.instances[dest] = in
	if r.p != nil {
		r.p.SetInstances(dest, in)
	}
}

// waitReady waits until the leaf, the roots and the intentions are known;
// false when ctx ended first.
func (r *runner) waitReady(ctx context.Context) bool {
	tick := time.NewTicker(waitingLogEvery)
	defer tick.Stop()
	for {
		select {
		case <-r.ready.done:
			return true
		case <-ctx.Done():
			return false
		case <-tick.C:
			r.logger.Info("waiting for the agent before starting the proxy", "missing", strings.Join(r.ready.missing(), ", "))
		}
	}
}

func (r *runner) watchLeaf(ctx context.Context) {
	service := r.cfg.Spec.Service
	watchLoop(ctx, r, watchLeaf,
		func(q *api.QueryOptions) (*api.LeafCert, *api.QueryMeta, error) {
			return r.cfg.Client.Agent().ConnectCALeaf(service, q)
		},
		func(l *api.LeafCert) error {
			c, err := connect.TLSCertificate(l.CertPEM, l.PrivateKeyPEM)
			if err != nil {
				return fmt.Errorf("leaf certificate of %s: %w", service, err)
			}
			if prev := r.certs.leaf.Load(); prev != nil && bytes.Equal(prev.Certificate[0], c.Certificate[0]) {
				return nil // the same leaf again
			}
			r.certs.leaf.Store(c)
			r.logger.Info("leaf certificate", "service", service, "serial", l.SerialNumber, "valid_before", l.ValidBefore.UTC().Format(time.RFC3339))
			return nil
		})
}

func (r *runner) watchRoots(ctx context.Context) {
	watchLoop(ctx, r, watchRoots,
		func(q *api.QueryOptions) (*api.CARootList, *api.QueryMeta, error) {
			return r.cfg.Client.Agent().ConnectCARoots(q)
		},
		func(l *api.CARootList) error {
			b, err := bundleOf(l)
			if err != nil {
				return err
			}
			prev := r.certs.bundle.Swap(b)
			if prev == nil || prev.ActiveRootID != b.ActiveRootID || len(prev.Roots) != len(b.Roots) {
				r.logger.Info("CA roots", "active", b.ActiveRootID, "roots", len(l.Roots))
			}
			if p := r.proxy(); p != nil {
				p.Reverify()
			}
			return nil
		})
}

func (r *runner) watchIntentions(ctx context.Context) {
	service := r.cfg.Spec.Service
	watchLoop(ctx, r, watchIntentions,
		func(q *api.QueryOptions) (map[string][]*api.Intention, *api.QueryMeta, error) {
			q.AllowStale = true
			return r.cfg.Client.Connect().IntentionMatch(&api.IntentionMatch{By: api.IntentionMatchDestination, Names: []string{service}}, q)
		},
		func(m map[string][]*api.Intention) error {
			list, ok := m[service]
			if !ok && len(m) > 0 {
				return fmt.Errorf("the intention match answered %d lists, none for %q", len(m), service)
			}
			set := intentions.NewSet(toConnectIntentions(list))
			r.authz.set.Store(set)
			r.logger.Debug("intentions", "destination", service, "count", set.Len())
			if p := r.proxy(); p != nil {
				p.Reauthorize()
			}
			return nil
		})
}

func (r *runner) watchEndpoints(ctx context.Context, u api.Upstream) {
	dest := u.DestinationName
	watchLoop(ctx, r, "endpoints of "+dest,
		func(q *api.QueryOptions) ([]*api.ServiceEntry, *api.QueryMeta, error) {
			q.AllowStale = true
			q.Datacenter = u.Datacenter
			return r.cfg.Client.Health().Connect(dest, "", true, q)
		},
		func(entries []*api.ServiceEntry) error {
			in := instancesOf(dest, entries)
			r.logger.Debug("upstream endpoints", "upstream", dest, "instances", len(in))
			r.setInstances(dest, in)
			return nil
		})
}

// watchLoop runs a blocking query until ctx ends: it fetches with the index
// of the last answer and applies every answer with a new index. A failed
// query is retried with backoff; what was applied last stays in use. An
// answer apply refuses is logged and skipped.
func watchLoop[T any](ctx context.Context, r *runner, name string, fetch func(*api.QueryOptions) (T, *api.QueryMeta, error), apply func(T) error) {
	var index uint64
	bo := backoff{min: r.cfg.MinBackoff, max: r.cfg.MaxBackoff}
	for {
		// The agent answers by QueryWait (plus up to 1/16 of jitter); the
		// deadline guards against a connection that went silent.
		qctx, cancel := context.WithTimeout(ctx, r.cfg.QueryWait+r.cfg.QueryWait/16+10*time.Second)
		q := (&api.QueryOptions{WaitIndex: index, WaitTime: r.cfg.QueryWait}).WithContext(qctx)
		v, meta, err := fetch(q)
		cancel()
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			r.outage.failed(name, err)
			if !sleep(ctx, bo.next()) {
				return
			}
			continue
		}
		r.outage.ok(name)
		bo.reset()
		switch {
		case meta.LastIndex == 0:
			// Not a blocking answer (no index): poll instead of spinning.
			if !sleep(ctx, r.cfg.MaxBackoff) {
				return
			}
		case meta.LastIndex == index:
			continue // the wait ended without a change
		}
		index = meta.LastIndex
		if err := apply(v); err != nil {
			r.logger.Error("unusable answer from the agent; keeping the previous values", "query", name, "error", err)
			continue
		}
		r.ready.set(name)
	}
}

// sleep waits d or until ctx ends; false when ctx ended.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// backoff is an exponential delay with jitter: each next is about twice
// the last, between min and max.
type backoff struct {
	min, max, cur time.Duration
}

func (b *backoff) next() time.Duration {
	if b.cur == 0 {
		b.cur = b.min
	} else {
		b.cur = min(2*b.cur, b.max)
	}
	return b.cur/2 + jitter(b.cur/2)
}

func (b *backoff) reset() { b.cur = 0 }

// jitter returns a random duration in [0, d).
func jitter(d time.Duration) time.Duration {
	if d <= 0 {
		return 0
	}
	return rand.N(d)
}

// outage logs once when queries to the agent begin to fail, and once when
// every failing one answers again. Its methods are safe for concurrent use.
type outage struct {
	logger hclog.Logger
	agent  string

	mu      sync.Mutex
	failing map[string]bool // guarded by mu; the watches failing now
	since   time.Time       // guarded by mu; when the first began to fail
}

func (o *outage) failed(name string, err error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if len(o.failing) == 0 {
		o.since = time.Now()
		o.logger.Warn("cannot get the mesh state from the agent; the proxy keeps the last known values and retries",
			"agent", o.agent, "query", name, "error", err)
	} else {
		o.logger.Debug("query failed", "query", name, "error", err)
	}
	o.failing[name] = true
}

func (o *outage) ok(name string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if !o.failing[name] {
		return
	}
	delete(o.failing, name)
	if len(o.failing) == 0 {
		o.logger.Info("the agent answers again", "agent", o.agent, "outage", time.Since(o.since).Round(time.Millisecond).String())
	}
}

// readiness tracks the watches the proxy waits for before it starts.
type readiness struct {
	mu      sync.Mutex
	waiting map[string]bool // guarded by mu
	done    chan struct{}   // closed when waiting is empty
}

func newReadiness(names ...string) *readiness {
	r := &readiness{waiting: map[string]bool{}, done: make(chan struct{})}
	for _, n := range names {
		r.waiting[n] = true
	}
	return r
}

// set marks a watch as having applied an answer.
func (r *readiness) set(name string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.waiting[name] {
		return
	}
	delete(r.waiting, name)
	if len(r.waiting) == 0 {
		close(r.done)
	}
}

func (r *readiness) missing() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Sorted(maps.Keys(r.waiting))
}

// certSource is the proxy's connect.CertSource: the leaf and bundle the
// watches last stored, swapped atomically.
type certSource struct {
	leaf   atomic.Pointer[tls.Certificate]
	bundle atomic.Pointer[connect.Bundle]
}

var _ connect.CertSource = (*certSource)(nil)

// Certificate returns the current leaf, or nil.
func (c *certSource) Certificate() *tls.Certificate { return c.leaf.Load() }

// Bundle returns the current trust bundle, or nil.
func (c *certSource) Bundle() *connect.Bundle { return c.bundle.Load() }

// authorizer decides inbound connections with the intentions held in
// memory and the agent's default policy, as the agent's own proxies do.
type authorizer struct {
	service      string
	defaultAllow bool
	certs        *certSource
	set          atomic.Pointer[intentions.Set]
}

var _ meshproxy.Authorizer = (*authorizer)(nil)

// Authorize decides whether source may connect to the proxy's service. A
// source of another trust domain is denied, and so is every source before
// the intentions are known.
func (a *authorizer) Authorize(source connect.ServiceID) intentions.Decision {
	if b := a.certs.Bundle(); b != nil && !strings.EqualFold(source.TrustDomain, b.TrustDomain) {
		return intentions.Decision{Reason: fmt.Sprintf("identity %s is of another trust domain than %s", source, b.TrustDomain)}
	}
	set := a.set.Load()
	if set == nil {
		return intentions.Decision{Reason: "the intentions are not known yet"}
	}
	return set.Decide(source.Service, a.service, a.defaultAllow)
}

// bundleOf builds the trust bundle of a roots answer: every root and the
// intermediates it carries (its cross-signed forms after a rotation).
func bundleOf(l *api.CARootList) (*connect.Bundle, error) {
	if len(l.Roots) == 0 {
		return nil, fmt.Errorf("the agent has no CA roots yet")
	}
	var pems []string
	for _, root := range l.Roots {
		pems = append(pems, root.RootCertPEM)
		pems = append(pems, root.IntermediateCerts...)
	}
	b, err := connect.NewBundle(l.TrustDomain, l.ActiveRootID, pems...)
	if err != nil {
		return nil, fmt.Errorf("CA roots: %w", err)
	}
	return b, nil
}

// toConnectIntentions converts the API's intentions for evaluation.
func toConnectIntentions(in []*api.Intention) []*connect.Intention {
	out := make([]*connect.Intention, 0, len(in))
	for _, i := range in {
		if i == nil {
			continue
		}
		out = append(out, &connect.Intention{
			ID: i.ID, SourceName: i.SourceName, DestinationName: i.DestinationName, Action: i.Action,
			Description: i.Description, Meta: maps.Clone(i.Meta), Precedence: i.Precedence,
			CreatedAt: i.CreatedAt, UpdatedAt: i.UpdatedAt, CreateIndex: i.CreateIndex, ModifyIndex: i.ModifyIndex,
		})
	}
	return out
}

// instancesOf turns the mesh endpoints of an upstream into the proxy's
// instances: the service address (the node's when empty) and port, with
// the destination's identity.
func instancesOf(dest string, entries []*api.ServiceEntry) []meshproxy.Instance {
	out := make([]meshproxy.Instance, 0, len(entries))
	for _, e := range entries {
		if e == nil || e.Service == nil || e.Node == nil || e.Service.Port <= 0 {
			continue
		}
		addr := e.Service.Address
		if addr == "" {
			addr = e.Node.Address
		}
		if addr == "" {
			continue
		}
		out = append(out, meshproxy.Instance{Node: e.Node.Node, Addr: net.JoinHostPort(addr, strconv.Itoa(e.Service.Port)), Service: dest})
	}
	return out
}
