package l7

import (
	"maps"
	"math/rand/v2"
	"net"
	"net/http"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/trellismesh/trellis/connect/configentry"
)

// Endpoint is one instance of a target: the public listener of a proxy of
// the target's service.
type Endpoint struct {
	// Addr is the host:port of the proxy's public listener.
	Addr string
	// Service is the identity its certificate must carry; the target's
	// service name when empty.
	Service string
	// Node is the node it runs on, for logs.
	Node string
}

// Passive health checking defaults, Envoy's (which Consul keeps).
const (
	defaultMaxFailures         = 5
	defaultBaseEjectionTime    = 30 * time.Second
	defaultMaxEjectionPercent  = 10
	defaultEjectionInterval    = 10 * time.Second
	defaultMaxEjectionTime     = 300 * time.Second
	defaultLeastRequestChoices = 2
)

// instance is an endpoint of one target, with its balancing and outlier
// state. The same endpoint in two targets is two instances (as Envoy keeps
// a host per cluster) that share the connections to it.
type instance struct {
	ep    Endpoint
	hosts *hostConns
	// inflight counts requests to it, for least-request balancing.
	inflight atomic.Int64
	// consecutive failures (5xx answers, connect failures) since the last
	// success.
	failures atomic.Uint32
	// ejectedUntil is when an ejection ends (Unix nanoseconds); 0 when it
	// never was ejected.
	ejectedUntil atomic.Int64
	// ejections is how many times it was ejected, less one per healthy
	// interval since; it multiplies the base ejection time.
	ejections atomic.Uint32
}

func (i *instance) ejected(now int64) bool { return i.ejectedUntil.Load() > now }

// instanceSet is a target's instances at one moment; replaced whole.
type instanceSet struct {
	list []*instance
	// hashers holds the ring_hash or maglev tables built for a policy's
	// parameters, on first use: a map replaced whole (under hashMu, which
	// also keeps two requests from building the same table), read without
	// a lock by every request.
	hashMu  sync.Mutex
	hashers atomic.Pointer[map[hashKey]hashTable]
}

// target is the balancer of one chain target.
type target struct {
	id  string
	set atomic.Pointer[instanceSet]
	rr  atomic.Uint64
	// ejectMu serialises ejection decisions (to respect MaxEjectionPercent).
	ejectMu sync.Mutex
}

// pickOpts says how pick may choose.
type pickOpts struct {
	lb  *configentry.LoadBalancer
	req *http.Request
	// tried are instances an earlier attempt of the request used; avoided
	// unless they are all that is left.
	tried []*instance
	// panic allows ejected instances (when no target has another).
	panic bool
	// fresh refuses the tried instances even when nothing else is left.
	fresh bool
	now   int64
}

func (o *pickOpts) usable(i *instance) bool {
	if !o.panic && i.ejected(o.now) {
		return false
	}
	for _, t := range o.tried {
		if t == i {
			return false
		}
	}
	return true
}

// pick chooses an instance by the policy, or nil when none is usable.
func (t *target) pick(o *pickOpts) *instance {
	s := t.set.Load()
	if s == nil || len(s.list) == 0 {
		return nil
	}
	if i := t.pickFrom(s, o); i != nil {
		return i
	}
	if len(o.tried) > 0 && !o.fresh {
		// Every usable instance was tried: try one again rather than fail.
		saved := o.tried
		o.tried = nil
		i := t.pickFrom(s, o)
		o.tried = saved
		return i
	}
	return nil
}

func (t *target) pickFrom(s *instanceSet, o *pickOpts) *instance {
	var buf [16]*instance
	cands := buf[:0]
	for _, i := range s.list {
		if o.usable(i) {
			cands = append(cands, i)
		}
	}
	if len(cands) == 0 {
		return nil
	}
	if len(cands) == 1 {
		return cands[0]
	}
	policy := ""
	if o.lb != nil {
		policy = o.lb.Policy
	}
	switch policy {
	case configentry.LBRoundRobin:
		return cands[t.rr.Add(1)%uint64(len(cands))]
	case configentry.LBRandom:
		return cands[rand.IntN(len(cands))]
	case configentry.LBRingHash, configentry.LBMaglev:
		if h, ok := requestHash(o.lb.HashPolicies, o.req); ok {
			if i := s.table(o.lb).lookup(h, o.usable); i != nil {
				return i
			}
		}
		return cands[rand.IntN(len(cands))]
	case configentry.LBLeastRequest:
		n := defaultLeastRequestChoices
		if c := o.lb.LeastRequestConfig; c != nil && c.ChoiceCount > 0 {
			n = int(c.ChoiceCount)
		}
		return leastOf(cands, n)
	}
	return leastOf(cands, defaultLeastRequestChoices)
}

// leastOf samples n candidates at random (the power of n choices) and
// returns the one with the fewest requests in flight; with n = 2 the first
// two are distinct.
func leastOf(cands []*instance, n int) *instance {
	if n >= len(cands) {
		// Compare them all, from a random one so that ties spread.
		off := rand.IntN(len(cands))
		best := cands[off]
		for k := 1; k < len(cands); k++ {
			if c := cands[(off+k)%len(cands)]; c.inflight.Load() < best.inflight.Load() {
				best = c
			}
		}
		return best
	}
	a := rand.IntN(len(cands))
	best := cands[a]
	if n == 2 {
		b := rand.IntN(len(cands) - 1)
		if b >= a {
			b++
		}
		if c := cands[b]; c.inflight.Load() < best.inflight.Load() {
			best = c
		}
		return best
	}
	for k := 1; k < n; k++ {
		if c := cands[rand.IntN(len(cands))]; c.inflight.Load() < best.inflight.Load() {
			best = c
		}
	}
	return best
}

// outlierParams are a PassiveHealthCheck with its defaults filled in.
type outlierParams struct {
	maxFailures uint32
	enforcing   uint32 // percent
	maxPercent  uint32
	base        time.Duration
	interval    time.Duration
}

func outlierOf(p *configentry.PassiveHealthCheck) outlierParams {
	o := outlierParams{
		maxFailures: defaultMaxFailures, enforcing: 100, maxPercent: defaultMaxEjectionPercent,
		base: defaultBaseEjectionTime, interval: defaultEjectionInterval,
	}
	if p == nil {
		return o
	}
	if p.MaxFailures > 0 {
		o.maxFailures = p.MaxFailures
	}
	if p.EnforcingConsecutive5xx != nil {
		o.enforcing = *p.EnforcingConsecutive5xx
	}
	if p.MaxEjectionPercent != nil {
		o.maxPercent = *p.MaxEjectionPercent
	}
	if p.BaseEjectionTime != nil && *p.BaseEjectionTime > 0 {
		o.base = p.BaseEjectionTime.D()
	}
	if p.Interval > 0 {
		o.interval = p.Interval.D()
	}
	return o
}

// succeeded records an answer that was not a failure.
func (t *target) succeeded(i *instance, p *outlierParams, now int64) {
	if i.failures.Load() != 0 {
		i.failures.Store(0)
	}
	// A healthy interval after an ejection ended lowers the multiplier.
	if n := i.ejections.Load(); n > 0 {
		if until := i.ejectedUntil.Load(); now-until > int64(p.interval) {
			if i.ejections.CompareAndSwap(n, n-1) {
				i.ejectedUntil.Store(now)
			}
		}
	}
}

// failed records a 5xx answer or a connect failure, and reports whether it
// ejected the instance: after maxFailures consecutive failures, if fewer
// than maxPercent of the target's instances are ejected (one may always
// be), for base × the number of times it was ejected (at most 300s or the
// base, whichever is longer).
func (t *target) failed(i *instance, p *outlierParams, now int64) bool {
	if i.failures.Add(1) < p.maxFailures {
		return false
	}
	if p.enforcing < 100 && rand.Uint32N(100) >= p.enforcing {
		i.failures.Store(0)
		return false
	}
	t.ejectMu.Lock()
	defer t.ejectMu.Unlock()
	if i.ejected(now) {
		return false
	}
	s := t.set.Load()
	if s == nil {
		return false
	}
	ejected := 0
	for _, x := range s.list {
		if x.ejected(now) {
			ejected++
		}
	}
	allowed := max(1, len(s.list)*int(p.maxPercent)/100)
	if ejected >= allowed {
		return false
	}
	n := i.ejections.Add(1)
	d := p.base * time.Duration(n)
	if limit := max(defaultMaxEjectionTime, p.base); d > limit {
		d = limit
	}
	i.failures.Store(0)
	i.ejectedUntil.Store(now + int64(d))
	return true
}

// hashKey identifies a hash table's parameters.
type hashKey struct {
	policy  string
	minSize uint64
	maxSize uint64
}

// hashTable maps a hash to an instance.
type hashTable interface {
	lookup(h uint64, usable func(*instance) bool) *instance
}

// table returns (building on first use) the hash table of lb's policy over
// the set's instances.
func (s *instanceSet) table(lb *configentry.LoadBalancer) hashTable {
	k := hashKey{policy: lb.Policy}
	if c := lb.RingHashConfig; c != nil && lb.Policy == configentry.LBRingHash {
		k.minSize, k.maxSize = c.MinimumRingSize, c.MaximumRingSize
	}
	if m := s.hashers.Load(); m != nil {
		if t := (*m)[k]; t != nil {
			return t
		}
	}
	s.hashMu.Lock()
	defer s.hashMu.Unlock()
	old := s.hashers.Load()
	if old != nil {
		if t := (*old)[k]; t != nil {
			return t // built by a request that held hashMu before this one
		}
	}
	var t hashTable
	if k.policy == configentry.LBMaglev {
		t = newMaglev(s.list)
	} else {
		t = newRing(s.list, k.minSize, k.maxSize)
	}
	m := make(map[hashKey]hashTable, 1)
	if old != nil {
		maps.Copy(m, *old)
	}
	m[k] = t
	s.hashers.Store(&m)
	return t
}

// requestHash hashes what the policies name: each policy that finds its
// value mixes it in; a Terminal one that does ends the list. ok is false
// when none found a value (the pick is then random).
func requestHash(policies []configentry.HashPolicy, r *http.Request) (h uint64, ok bool) {
	h = fnvOffset
	for _, p := range policies {
		v, found := hashInput(p, r)
		if !found {
			continue
		}
		h = fnvString(h, v)
		h = fnvString(h, "\x00")
		ok = true
		if p.Terminal {
			break
		}
	}
	return h, ok
}

func hashInput(p configentry.HashPolicy, r *http.Request) (string, bool) {
	if r == nil {
		return "", false
	}
	if p.SourceIP {
		host, _, err := net.SplitHostPort(r.RemoteAddr)
		if err != nil {
			host = r.RemoteAddr
		}
		return host, host != ""
	}
	switch p.Field {
	case "header":
		v := r.Header.Get(p.FieldValue)
		return v, v != ""
	case "cookie":
		c, err := r.Cookie(p.FieldValue)
		if err != nil {
			return "", false
		}
		return c.Value, true
	case "query_parameter":
		if !r.URL.Query().Has(p.FieldValue) {
			return "", false
		}
		return r.URL.Query().Get(p.FieldValue), true
	}
	return "", false
}

const (
	fnvOffset = 14695981039346656037
	fnvPrime  = 1099511628211
)

func fnvString(h uint64, s string) uint64 {
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= fnvPrime
	}
	return h
}

// mix64 finalises a hash so that near inputs spread (splitmix64).
func mix64(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}

// ring is a consistent-hash ring (ring_hash): each instance has
// ringSize/len points; a hash goes to the first point at or after it.
type ring struct {
	points []ringPoint
}

type ringPoint struct {
	hash uint64
	inst *instance
}

// maxRingPoints bounds a ring whatever its entry asks (as the L4 side
// does): 65,536 points spread hashes as well as millions would, in 1 MB.
const maxRingPoints = 1 << 16

func newRing(list []*instance, minSize, maxSize uint64) *ring {
	if minSize == 0 {
		minSize = 1024
	}
	if maxSize == 0 {
		maxSize = maxRingPoints
	}
	size := max(minSize, uint64(len(list)))
	size = min(size, maxSize, maxRingPoints)
	per := max(1, int(size)/max(1, len(list)))
	r := &ring{points: make([]ringPoint, 0, per*len(list))}
	for _, i := range list {
		base := fnvString(fnvOffset, i.ep.Addr)
		for k := range per {
			r.points = append(r.points, ringPoint{hash: mix64(fnvString(base, "_"+strconv.Itoa(k))), inst: i})
		}
	}
	sort.Slice(r.points, func(a, b int) bool { return r.points[a].hash < r.points[b].hash })
	return r
}

func (r *ring) lookup(h uint64, usable func(*instance) bool) *instance {
	if len(r.points) == 0 {
		return nil
	}
	h = mix64(h)
	start := sort.Search(len(r.points), func(k int) bool { return r.points[k].hash >= h })
	for k := range r.points {
		p := r.points[(start+k)%len(r.points)]
		if usable(p.inst) {
			return p.inst
		}
	}
	return nil
}

// maglev is a Maglev lookup table (Eisenbud et al., 2016) of a prime size:
// each instance fills entries in the order of its own permutation, in
// turn, so each gets an equal share and a change of instances moves few
// entries.
type maglev struct {
	table []*instance
}

const maglevSize = 65537

func newMaglev(list []*instance) *maglev {
	m := &maglev{table: make([]*instance, maglevSize)}
	if len(list) == 0 {
		return m
	}
	offset := make([]uint64, len(list))
	skip := make([]uint64, len(list))
	next := make([]uint64, len(list))
	for k, i := range list {
		h := fnvString(fnvOffset, i.ep.Addr)
		offset[k] = mix64(h) % maglevSize
		skip[k] = mix64(h^0x9e3779b97f4a7c15)%(maglevSize-1) + 1
	}
	filled := 0
	for filled < maglevSize {
		for k := range list {
			for {
				c := (offset[k] + next[k]*skip[k]) % maglevSize
				next[k]++
				if m.table[c] == nil {
					m.table[c] = list[k]
					filled++
					break
				}
			}
			if filled == maglevSize {
				break
			}
		}
	}
	return m
}

func (m *maglev) lookup(h uint64, usable func(*instance) bool) *instance {
	start := mix64(h) % maglevSize
	// An unusable instance's entries go to the next usable ones.
	for k := uint64(0); k < maglevSize; k++ {
		if i := m.table[(start+k)%maglevSize]; usable(i) {
			return i
		}
	}
	return nil
}

// EndpointState is what the balancer knows of one endpoint of a target,
// for descriptions.
type EndpointState struct {
	Endpoint
	// ActiveRequests are the requests to it in flight.
	ActiveRequests int64
	// ConsecutiveFailures are its 5xx answers and failed connections since
	// its last success.
	ConsecutiveFailures uint32
	// EjectedUntil is when its ejection by passive health checks ends;
	// zero when it is not ejected.
	EjectedUntil time.Time
}

// TargetEndpoints returns the endpoints of targetID with their balancing
// and passive health state, in the order SetTargetEndpoints gave them.
func (o *Outbound) TargetEndpoints(targetID string) []EndpointState {
	t := (*o.tgts.Load())[targetID]
	if t == nil {
		return nil
	}
	s := t.set.Load()
	if s == nil {
		return nil
	}
	now := time.Now().UnixNano()
	out := make([]EndpointState, 0, len(s.list))
	for _, i := range s.list {
		st := EndpointState{Endpoint: i.ep, ActiveRequests: i.inflight.Load(), ConsecutiveFailures: i.failures.Load()}
		if until := i.ejectedUntil.Load(); until > now {
			st.EjectedUntil = time.Unix(0, until)
		}
		out = append(out, st)
	}
	return out
}
