package proxy

import (
	"errors"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"net"
	"slices"
	"time"

	"github.com/trellismesh/trellis/connect/chain"
	"github.com/trellismesh/trellis/connect/configentry"
)

// An upstream with a discovery chain (SetChain) sends each new application
// connection to the chain's tcp target: its primary target, or when that has
// no instance left to try, its failover targets in order. The instances of
// each target come from SetTargetInstances. What the chain changes applies to
// new connections only; established ones are reviewed after every change and
// drained (closed DrainTimeout after they went stale) when the resolver asks
// for it.

// Ring sizes of ring_hash (and maglev, which shares its ring): the defaults
// of configentry.RingHashConfig, and a cap on what an entry may ask for.
const (
	defaultRingSize = 1024
	maxRingSize     = 1 << 16
)

// Metric keys of chains (the package doc lists them with the others).
var (
	keyUpstreamDrained           = []string{"trellis", "proxy", "upstream", "drained"}
	keyUpstreamTargetConnections = []string{"trellis", "proxy", "upstream", "target_connections"}
)

// errDrained ends a connection whose target the chain no longer leads to,
// once the resolver's DrainTimeout has passed.
var errDrained = errors.New("drained: the discovery chain no longer leads to this instance")

// route is an upstream's view of its discovery chain, for tcp: where new
// connections go, in order, and how they are balanced. Immutable.
type route struct {
	chain *chain.Chain
	// order is the primary target ID, then the failover target IDs.
	order    []string
	names    map[string]string        // target ID -> identity its certificates carry
	timeouts map[string]time.Duration // target ID -> dial bound; 0: Config.DialTimeout
	drain    time.Duration
	lb       balancer
}

func (r *route) primary() string { return r.order[0] }

func (r *route) references(id string) bool { return slices.Contains(r.order, id) }

// tcpTargets returns the tcp target of c (chain.Chain.TCPTarget: the
// resolver that a connection reaches from the start node, through a
// router's default route and a splitter's heaviest split), its failover
// targets in order, and the resolver node.
func tcpTargets(c *chain.Chain) (resolver *chain.Node, primary string, failover []string, err error) {
	primary, failover = c.TCPTarget()
	if primary == "" {
		return nil, "", nil, fmt.Errorf("discovery chain of %s: no resolver can be reached from the start node %q", c.ServiceName, c.StartNode)
	}
	for _, n := range c.Nodes {
		if n.Type == chain.NodeResolver && n.Resolver != nil && n.Resolver.Target == primary {
			return n, primary, failover, nil
		}
	}
	return nil, "", nil, fmt.Errorf("discovery chain of %s: no resolver node of target %q", c.ServiceName, primary)
}

// newRoute compiles c for an upstream's tcp connections.
func newRoute(c *chain.Chain) (*route, error) {
	res, primary, failover, err := tcpTargets(c)
	if err != nil {
		return nil, err
	}
	r := &route{chain: c, names: map[string]string{}, timeouts: map[string]time.Duration{}, drain: res.Resolver.DrainTimeout.D()}
	for i, id := range append([]string{primary}, failover...) {
		t := c.Targets[id]
		if t == nil {
			if i == 0 {
				return nil, fmt.Errorf("discovery chain of %s: target %q does not exist", c.ServiceName, id)
			}
			continue // a failover target that is not there: skipped
		}
		if r.references(id) {
			continue
		}
		r.order = append(r.order, id)
		r.names[id] = t.Name
		if r.names[id] == "" {
			r.names[id] = t.Service
		}
		r.timeouts[id] = t.ConnectTimeout.D()
		if r.timeouts[id] <= 0 {
			r.timeouts[id] = res.Resolver.ConnectTimeout.D()
		}
	}
	r.lb = newBalancer(res.LoadBalancer)
	return r, nil
}

// targetSet is the instances of one target of an upstream's chain.
type targetSet struct {
	id        string
	name      string      // identity of the instances
	endpoints []*endpoint // replaced whole by SetTargetInstances
	byKey     map[string]*endpoint
	ring      []ringPoint // of ring_hash; built on first use after a change
	next      uint64      // round_robin position
	conns     *counter    // upstream.target_connections of the target
}

// balancer picks one of a target's eligible instances, by the resolver's
// LoadBalancer.
type balancer struct {
	policy   string // "" (least_request), round_robin, random, ring_hash (maglev too)
	choices  int    // least_request: how many instances to compare
	sourceIP bool   // ring_hash: hash the client's IP
	ringSize int
}

func newBalancer(lb *configentry.LoadBalancer) balancer {
	b := balancer{choices: 2, ringSize: defaultRingSize}
	if lb == nil {
		return b
	}
	switch lb.Policy {
	case configentry.LBRoundRobin, configentry.LBRandom:
		b.policy = lb.Policy
	case configentry.LBRingHash, configentry.LBMaglev:
		b.policy = configentry.LBRingHash
		for _, h := range lb.HashPolicies {
			// Header, cookie and query parameter hashing need a request:
			// they apply to http upstreams only.
			if h.SourceIP {
				b.sourceIP = true
			}
		}
		if rc := lb.RingHashConfig; rc != nil {
			size := uint64(defaultRingSize)
			if rc.MinimumRingSize > 0 {
				size = rc.MinimumRingSize
			}
			if rc.MaximumRingSize > 0 && rc.MaximumRingSize < size {
				size = rc.MaximumRingSize
			}
			b.ringSize = int(min(size, maxRingSize))
		}
	}
	if lc := lb.LeastRequestConfig; lc != nil && lc.ChoiceCount >= 2 {
		b.choices = int(min(lc.ChoiceCount, 64))
	}
	return b
}

// choose picks among eligible (not empty), instances of ts; client is the
// application's address, for ring_hash with a source IP hash policy.
func (b balancer) choose(ts *targetSet, eligible []*endpoint, client net.Addr) *endpoint {
	if len(eligible) == 1 {
		return eligible[0]
	}
	switch b.policy {
	case configentry.LBRoundRobin:
		ep := eligible[ts.next%uint64(len(eligible))]
		ts.next++
		return ep
	case configentry.LBRandom:
		return eligible[rand.IntN(len(eligible))]
	case configentry.LBRingHash:
		if !b.sourceIP || client == nil {
			return eligible[rand.IntN(len(eligible))]
		}
		return b.ringPick(ts, eligible, clientIP(client))
	}
	return leastRequest(eligible, b.choices)
}

// leastRequest compares choices instances taken at random (all of them when
// there are no more) and returns the one with the fewest active connections.
func leastRequest(eligible []*endpoint, choices int) *endpoint {
	n := len(eligible)
	if choices == 2 || n == 2 {
		i := rand.IntN(n)
		j := rand.IntN(n - 1)
		if j >= i {
			j++
		}
		a, b := eligible[i], eligible[j]
		if b.active.Load() < a.active.Load() {
			return b
		}
		return a
	}
	var best *endpoint
	for k, i := range rand.Perm(n) {
		if k == choices {
			break
		}
		if ep := eligible[i]; best == nil || ep.active.Load() < best.active.Load() {
			best = ep
		}
	}
	return best
}

func clientIP(a net.Addr) string {
	if ta, ok := a.(*net.TCPAddr); ok {
		return ta.IP.String()
	}
	host, _, err := net.SplitHostPort(a.String())
	if err != nil {
		return a.String()
	}
	return host
}

// ringPoint is one point of a consistent-hash ring.
type ringPoint struct {
	hash uint64
	ep   *endpoint
}

// hash64 hashes s (FNV-1a, then a finalizer that spreads similar inputs).
func hash64(s string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(s))
	x := h.Sum64()
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}

// ringPick returns the first eligible instance at or after the hash of key
// on ts's ring: a client keeps its instance while that instance stays, and
// only the clients of an instance that goes move.
func (b balancer) ringPick(ts *targetSet, eligible []*endpoint, key string) *endpoint {
	if ts.ring == nil {
		per := max(1, (b.ringSize+len(ts.endpoints)-1)/max(1, len(ts.endpoints)))
		ring := make([]ringPoint, 0, per*len(ts.endpoints))
		for _, ep := range ts.endpoints {
			for i := range per {
				ring = append(ring, ringPoint{hash: hash64(fmt.Sprintf("%s#%d", ep.key, i)), ep: ep})
			}
		}
		slices.SortFunc(ring, func(x, y ringPoint) int {
			switch {
			case x.hash < y.hash:
				return -1
			case x.hash > y.hash:
				return 1
			}
			return 0
		})
		ts.ring = ring
	}
	if len(ts.ring) == 0 {
		return eligible[0]
	}
	ok := func(ep *endpoint) bool { return slices.Contains(eligible, ep) }
	h := hash64(key)
	start, _ := slices.BinarySearchFunc(ts.ring, h, func(p ringPoint, h uint64) int {
		switch {
		case p.hash < h:
			return -1
		case p.hash > h:
			return 1
		}
		return 0
	})
	for i := range len(ts.ring) {
		if p := ts.ring[(start+i)%len(ts.ring)]; ok(p.ep) {
			return p.ep
		}
	}
	return eligible[0]
}

// SetChain makes the upstream to destination follow c, the compiled
// discovery chain of destination: new connections go to its tcp target
// (primary, then failover targets in order), to the instances that
// SetTargetInstances gives for each target, balanced by the resolver's
// LoadBalancer (for tcp: least_request, the default, with its ChoiceCount;
// round_robin; random; ring_hash and maglev with a SourceIP hash policy hash
// the client's IP onto a ring of the instances — header, cookie and query
// parameter hash policies apply to http only, without SourceIP a ring picks
// at random). Each dial of a tunnel is bounded by the target's
// ConnectTimeout (or the resolver's) in place of Config.DialTimeout, be it
// longer or shorter; a connection on a pooled tunnel makes no dial.
//
// Established connections are not cut by the change. When the chain's
// resolver has a DrainTimeout, a connection whose target is no longer the
// primary (or no longer referenced, for one made to a failover target), or
// whose instance left its target, is closed DrainTimeout after it went so;
// it is kept if it becomes current again before.
//
// Instances of targets c does not reference are dropped. A nil c returns the
// upstream to the instances of SetInstances. A chain with no tcp target is
// logged and ignored. Unknown destinations are ignored.
func (p *Proxy) SetChain(destination string, c *chain.Chain) {
	u := p.upstreams[destination]
	if u == nil {
		p.logger.Debug("discovery chain for an unknown upstream ignored", "upstream", destination)
		return
	}
	var r *route
	if c != nil {
		var err error
		if r, err = newRoute(c); err != nil {
			p.logger.Warn("discovery chain ignored; the upstream keeps its previous one", "upstream", destination, "error", err)
			return
		}
	}
	u.mu.Lock()
	stopped := u.setChainHTTPLocked(c)
	prev := u.route
	u.route = r
	for id, ts := range u.targets {
		if r == nil || r.names[id] != ts.name {
			delete(u.targets, id)
		}
	}
	if r != nil && (prev == nil || !slices.Equal(prev.order, r.order)) {
		p.logger.Info("upstream follows its discovery chain", "upstream", destination, "target", r.primary(), "failover", r.order[1:])
	} else if r == nil && prev != nil {
		p.logger.Info("upstream no longer follows a discovery chain", "upstream", destination)
	}
	// The stopped L7 side's requests in flight finish or fail, and closing
	// waits for them: never under u.mu, which every new connection and
	// every change of instances takes. A goroutine of the proxy closes it,
	// or, once Close has begun, Close itself: it has not reached this
	// upstream's L7 side yet (out was still set) and takes u.mu to.
	if stopped != nil && !p.goFunc(func() { stopped.Close() }) {
		u.http.retired = stopped
	}
	u.reviewLocked()
	u.mu.Unlock()
}

// SetTargetInstances replaces the healthy instances of target targetID of
// the chain of the upstream to destination; insts is copied. Each instance's
// Service is set to the target's identity (chain.Target.Name): its
// certificate must carry it. An instance that stays keeps its balancing
// state. Targets the current chain does not reference, and unknown
// destinations, are ignored: call SetChain first.
func (p *Proxy) SetTargetInstances(destination, targetID string, insts []Instance) {
	u := p.upstreams[destination]
	if u == nil {
		p.logger.Debug("target instances for an unknown upstream ignored", "upstream", destination)
		return
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	u.setTargetHTTPLocked(targetID, insts)
	r := u.route
	if r == nil || !r.references(targetID) {
		p.logger.Debug("instances of a target the chain does not lead to ignored", "upstream", destination, "target", targetID)
		return
	}
	ts := u.targets[targetID]
	if ts == nil {
		ts = &targetSet{id: targetID, name: r.names[targetID]}
		if u.targets == nil {
			u.targets = map[string]*targetSet{}
		}
		u.targets[targetID] = ts
	}
	next := make([]*endpoint, 0, len(insts))
	byKey := make(map[string]*endpoint, len(insts))
	for _, inst := range insts {
		if inst.Addr == "" {
			continue
		}
		inst.Service = ts.name
		key := endpointKey(inst)
		if byKey[key] != nil {
			continue
		}
		ep := ts.byKey[key]
		if ep == nil {
			ep = &endpoint{key: key, inst: inst}
		}
		ep.node.Store(&inst.Node)
		byKey[key] = ep
		next = append(next, ep)
	}
	ts.endpoints, ts.byKey, ts.ring = next, byKey, nil
	u.reviewLocked()
}

// choice is where one attempt of an application connection goes.
type choice struct {
	ep      *endpoint
	target  string        // target ID; "" without a chain
	primary bool          // target is the chain's primary
	counted *counter      // upstream.target_connections of the target; nil without a chain
	timeout time.Duration // dial bound; 0: Config.DialTimeout
	drain   time.Duration // the DrainTimeout of the chain it follows
}

// choose picks where the next attempt of a connection goes, skipping the
// instances in tried: with a chain, the first target in order (primary,
// failovers) with an instance not backed off, else the first with one
// backed off; without, an instance of the destination (pick).
func (u *upstream) choose(tried []*endpoint, client net.Addr) choice {
	u.mu.Lock()
	defer u.mu.Unlock()
	r := u.route
	if r == nil {
		return choice{ep: u.pickLocked(tried, time.Now())}
	}
	now := time.Now()
	var buf [8]*endpoint
	for _, backedOffToo := range []bool{false, true} {
		for i, id := range r.order {
			ts := u.targets[id]
			if ts == nil {
				continue
			}
			eligible := buf[:0]
			for _, ep := range ts.endpoints {
				if !triedKey(tried, ep.key) && (backedOffToo || !now.Before(ep.backoffUntil)) {
					eligible = append(eligible, ep)
				}
			}
			if len(eligible) == 0 {
				continue
			}
			if ts.conns == nil {
				ts.conns = u.p.reg.withExtra(keyUpstreamTargetConnections, u.labels, "target", id)
			}
			return choice{ep: r.lb.choose(ts, eligible, client), target: id, primary: i == 0, counted: ts.conns,
				timeout: r.timeouts[id], drain: r.drain}
		}
	}
	return choice{}
}

func triedKey(tried []*endpoint, key string) bool {
	for _, t := range tried {
		if t.key == key {
			return true
		}
	}
	return false
}

// upConn is an established application connection of an upstream, as the
// drain review sees it.
type upConn struct {
	st      *stream
	key     string // endpoint key
	target  string // target ID; "" when made without a chain
	primary bool
	drain   time.Duration // DrainTimeout of the chain it was made under

	// guarded by upstream.mu:
	timer *time.Timer // running while the connection drains
	gen   int         // of timer: a stopped timer's late callback does nothing
}

// track registers an established connection and reviews it at once (the
// chain may have changed while it was being opened).
func (u *upstream) track(c *upConn) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.conns == nil {
		u.conns = map[*upConn]struct{}{}
	}
	u.conns[c] = struct{}{}
	u.reviewConnLocked(c)
}

// untrack forgets a connection that ended, stopping its drain.
func (u *upstream) untrack(c *upConn) {
	u.mu.Lock()
	defer u.mu.Unlock()
	delete(u.conns, c)
	if c.timer != nil {
		c.timer.Stop()
		c.timer = nil
	}
}

func (u *upstream) reviewLocked() {
	for c := range u.conns {
		u.reviewConnLocked(c)
	}
}

// reviewConnLocked starts the drain of c when it went stale and a drain
// timeout applies (the current chain's, else that of the chain it was made
// under), and stops it when c is current again.
func (u *upstream) reviewConnLocked(c *upConn) {
	stale := u.staleLocked(c)
	d := c.drain
	if u.route != nil && u.route.drain > 0 {
		d = u.route.drain
	}
	switch {
	case stale && d > 0 && c.timer == nil:
		c.gen++
		gen := c.gen
		c.timer = time.AfterFunc(d, func() { u.drainExpired(c, gen) })
		u.p.logger.Debug("draining an upstream connection", "upstream", u.name, "target", c.target, "drain_timeout", d)
	case !stale && c.timer != nil:
		c.timer.Stop()
		c.timer = nil
	}
}

// staleLocked reports whether the upstream would no longer send c where it
// went: for a connection made to the chain's primary target, the primary
// changed or its instance left the target; for one made to a failover
// target, the chain no longer references the target or the instance left
// it; for one made without a chain, its instance is not one of the
// destination's (no chain) or of the primary target's.
func (u *upstream) staleLocked(c *upConn) bool {
	r := u.route
	in := func(id string) bool {
		ts := u.targets[id]
		return ts != nil && ts.byKey[c.key] != nil
	}
	switch {
	case r == nil:
		return !slices.ContainsFunc(u.endpoints, func(ep *endpoint) bool { return ep.key == c.key })
	case c.target == "":
		return !in(r.primary())
	case c.primary:
		return c.target != r.primary() || !in(c.target)
	default:
		return !r.references(c.target) || !in(c.target)
	}
}

// drainExpired closes c, unless its drain was stopped since (gen).
func (u *upstream) drainExpired(c *upConn, gen int) {
	p := u.p
	if !p.enter() {
		return // closing: Close closes every connection
	}
	defer p.goroutines.Done()
	u.mu.Lock()
	_, live := u.conns[c]
	current := live && c.timer != nil && c.gen == gen
	if current {
		c.timer = nil
	}
	u.mu.Unlock()
	if !current {
		return
	}
	u.drained.inc()
	p.logger.Info("closed an upstream connection after its drain timeout: the discovery chain no longer leads to its instance",
		"upstream", u.name, "target", c.target)
	c.st.abort(errDrained, true)
}
