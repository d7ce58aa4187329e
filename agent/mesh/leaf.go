package mesh

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/trellismesh/trellis/connect"
	"github.com/trellismesh/trellis/raftstore/structs"
)

// Leaf renewal: a leaf is renewed at a random point between these shares
// of its lifetime, so the agents of a cluster do not all renew at once;
// after a root rotation it is re-signed within rotationJitter.
const (
	renewMin       = 0.6
	renewMax       = 0.85
	rotationJitter = 2 * time.Second
)

// renewShare picks when to renew, as a share of a leaf's lifetime.
func renewShare() float64 { return renewMin + rand.Float64()*(renewMax-renewMin) }

// leaf is the leaf certificate of one service on this agent, with the
// goroutine that signs and renews it.
//
// # Lifetime
//
// A leaf is made the first time it is asked for and is released (dropped
// from the cache, its goroutine ended, never renewed or re-signed again)
// once nobody uses it: no Leaf call is in progress (a blocking watcher
// holds it for as long as it waits), its service is not one of the local
// services the agent declared with SetLocalServices, and it has not been
// fetched, nor its CertSource presented, for Config.LeafIdleTimeout. A leaf
// asked for after its release is signed anew.
type leaf struct {
	service string
	key     string // lower-case service name, its key in Cache.leaves

	users int // Leaf calls in progress; guarded by Cache.mu

	// lastUsed is when it was last fetched or presented, as time since
	// Cache.epoch (a monotonic clock). Written without Cache.mu.
	lastUsed atomic.Int64
	// released is set, under Cache.mu, when it leaves Cache.leaves.
	released atomic.Bool
	// wake tells the goroutine that the leaf may have become unused.
	wake chan struct{}
	// done is closed when the goroutine ends.
	done chan struct{}

	mu      sync.Mutex
	cert    *structs.IssuedCert // with PrivateKeyPEM; nil before the first
	tls     *tls.Certificate
	changed chan struct{} // closed at the next new leaf
	lastErr error
}

// tlsCert returns the current tls.Certificate, nil before the first.
func (l *leaf) tlsCert() *tls.Certificate {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.tls
}

// poke wakes the leaf's goroutine without waiting.
func (l *leaf) poke() {
	select {
	case l.wake <- struct{}{}:
	default:
	}
}

// errTooManyLeaves refuses a leaf beyond Config.MaxLeaves.
var errTooManyLeaves = errors.New("too many services with leaf certificates in use on this agent")

// touch records a use of l now.
func (c *Cache) touch(l *leaf) { l.lastUsed.Store(int64(time.Since(c.epoch))) }

// leafFor returns the leaf of service, starting its signing goroutine the
// first time, and records a use of it. For a Leaf call (proxy false) it
// counts a user, which the caller ends with unhold, and a new leaf of a
// service not declared local is refused beyond MaxLeaves. A proxy the agent
// runs (proxy true) is never refused: the agent runs proxies only for
// registered sidecars, and may start one before SetLocalServices hears of
// it.
func (c *Cache) leafFor(service string, proxy bool) (*leaf, error) {
	if err := connect.ValidateServiceName("service", service); err != nil || service == connect.Wildcard {
		return nil, structs.Invalid("service", "%q is not a service name", service)
	}
	key := strings.ToLower(service)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, errWatchStopped
	}
	l := c.leaves[key]
	if l == nil {
		if !proxy && !c.local[key] && c.otherLeavesLocked() >= c.cfg.MaxLeaves {
			return nil, fmt.Errorf("leaf for %q: %w: %d leaves of services not registered here were used in the last %s",
				service, errTooManyLeaves, c.cfg.MaxLeaves, c.cfg.LeafIdleTimeout)
		}
		l = &leaf{service: service, key: key, wake: make(chan struct{}, 1), done: make(chan struct{}), changed: make(chan struct{})}
		c.leaves[key] = l
		c.wg.Add(1)
		go func() {
			defer c.wg.Done()
			defer close(l.done)
			c.runLeaf(c.ctx, l)
		}()
	}
	c.touch(l)
	if !proxy {
		l.users++
	}
	return l, nil
}

// unhold ends a user counted by leafFor.
func (c *Cache) unhold(l *leaf) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.touch(l)
	l.users--
	if l.users == 0 {
		l.poke()
	}
}

// otherLeavesLocked counts the leaves of services not declared local: the
// ones MaxLeaves bounds. c.mu must be held.
func (c *Cache) otherLeavesLocked() int {
	n := 0
	for key := range c.leaves {
		if !c.local[key] {
			n++
		}
	}
	return n
}

// idleAtLocked returns when l becomes releasable, and false while it is in
// use (held, or of a local service). c.mu must be held.
func (c *Cache) idleAtLocked(l *leaf) (time.Time, bool) {
	if l.users > 0 || c.local[l.key] {
		return time.Time{}, false
	}
	return c.epoch.Add(time.Duration(l.lastUsed.Load()) + c.cfg.LeafIdleTimeout), true
}

// idleAt is idleAtLocked taking c.mu.
func (c *Cache) idleAt(l *leaf) (time.Time, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.idleAtLocked(l)
}

// releaseIfIdle releases l if nobody has used it for LeafIdleTimeout, and
// reports whether it did; its goroutine must then end.
func (c *Cache) releaseIfIdle(l *leaf) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	at, ok := c.idleAtLocked(l)
	if !ok || time.Now().Before(at) {
		return false
	}
	if c.leaves[l.key] == l {
		delete(c.leaves, l.key)
	}
	l.released.Store(true)
	c.logger.Debug("leaf certificate released: unused", "service", l.service, "idle", c.cfg.LeafIdleTimeout)
	return true
}

// SetLocalServices tells the cache which services are registered on this
// agent; the agent calls it whenever they change. The leaf of a service
// that a local sidecar (a connect-proxy service) fronts, or of a local
// Connect-native service, is kept and renewed for as long as the service is
// registered, and MaxLeaves neither counts nor refuses it. Once the service
// is gone its leaf is released LeafIdleTimeout later, unless it is used
// meanwhile.
// SetLocalServices makes no leaf: a leaf is signed the first time it is
// asked for.
func (c *Cache) SetLocalServices(svcs []*structs.NodeService) {
	next := map[string]bool{}
	for _, s := range svcs {
		switch {
		case s.Kind == structs.ServiceKindConnectProxy && s.Proxy != nil && s.Proxy.DestinationServiceName != "":
			next[strings.ToLower(s.Proxy.DestinationServiceName)] = true
		case s.Connect != nil && s.Connect.Native:
			next[strings.ToLower(s.Service)] = true
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for key := range c.local {
		if l := c.leaves[key]; l != nil && !next[key] {
			// Its proxy used it until now.
			c.touch(l)
			l.poke()
		}
	}
	c.local = next
}

// Leaf returns the current leaf of service with its private key, signing
// one first if there is none. With minIndex above 0 it waits up to wait
// for a newer one (ModifyIndex above minIndex). The leaf is not released
// while a call waits.
func (c *Cache) Leaf(ctx context.Context, service string, minIndex uint64, wait time.Duration) (*structs.IssuedCert, error) {
	l, err := c.leafFor(service, false)
	if err != nil {
		return nil, err
	}
	defer c.unhold(l)
	timer := time.NewTimer(c.waitOrDefault(wait))
	defer timer.Stop()
	for {
		l.mu.Lock()
		cert, ch, lastErr := l.cert, l.changed, l.lastErr
		l.mu.Unlock()
		if cert != nil && (minIndex == 0 || cert.ModifyIndex > minIndex) {
			out := *cert
			return &out, nil
		}
		if cert == nil && lastErr != nil && minIndex == 0 {
			// Do not hold a first request while signing fails: say why.
			return nil, fmt.Errorf("sign a leaf for %q: %w", service, lastErr)
		}
		select {
		case <-ch:
		case <-timer.C:
			if cert == nil {
				return nil, fmt.Errorf("no leaf for %q yet: %w", service, context.DeadlineExceeded)
			}
			out := *cert
			return &out, nil
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-c.ctx.Done():
			return nil, errWatchStopped
		}
	}
}

// CertSource returns the connect.CertSource of a service's proxy: its
// current leaf (signed in the background; nil until the first) and the
// trusted roots. MaxLeaves never refuses it. Each Certificate call counts
// as a use of the leaf; should
// the leaf have been released all the same (a proxy of a service not
// declared local, idle for LeafIdleTimeout), the next call asks for it
// again and presents the released one until the new one is signed.
func (c *Cache) CertSource(service string) (connect.CertSource, error) {
	l, err := c.leafFor(service, true)
	if err != nil {
		return nil, err
	}
	s := &certSource{c: c}
	s.l.Store(l)
	return s, nil
}

type certSource struct {
	c *Cache
	l atomic.Pointer[leaf]
}

func (s *certSource) Certificate() *tls.Certificate {
	l := s.l.Load()
	s.c.touch(l)
	if l.released.Load() {
		if next, err := s.c.leafFor(l.service, true); err == nil {
			s.l.CompareAndSwap(l, next)
			if tc := next.tlsCert(); tc != nil {
				return tc
			}
		}
	}
	return l.tlsCert()
}

func (s *certSource) Bundle() *connect.Bundle { return s.c.Bundle() }

// runLeaf signs the leaf, then renews it before it expires and re-signs it
// when the active root changes, until ctx ends or the leaf is released
// (checked before every signing, so neither a renewal nor a rotation signs
// a leaf nobody uses, and when the idle time is up). Failures are retried
// with backoff; the current leaf stays in use meanwhile.
func (c *Cache) runLeaf(ctx context.Context, l *leaf) {
	rootsChanged := make(chan struct{}, 1)
	unsub := c.roots.subscribe(func(*structs.IndexedCARoots) {
		select {
		case rootsChanged <- struct{}{}:
		default:
		}
	})
	defer unsub()
	failures := 0
	var renewAt time.Time
	for ctx.Err() == nil {
		if c.releaseIfIdle(l) {
			return
		}
		l.mu.Lock()
		cur := l.cert
		l.mu.Unlock()
		roots, _, haveRoots := c.roots.get()
		due := haveRoots && (cur == nil || !time.Now().Before(renewAt) || cur.RootID != roots.ActiveRootID)
		if due {
			if cur != nil && cur.RootID != roots.ActiveRootID {
				// Spread the re-signing of every leaf after a rotation.
				select {
				case <-ctx.Done():
					return
				case <-time.After(rand.N(rotationJitter)):
				}
				if c.releaseIfIdle(l) {
					return
				}
			}
			next, err := c.sign(ctx, l.service, roots.TrustDomain)
			if err != nil {
				if ctx.Err() != nil {
					return
				}
				failures++
				l.mu.Lock()
				l.lastErr = err
				close(l.changed)
				l.changed = make(chan struct{})
				l.mu.Unlock()
				if failures == 1 || failures%10 == 0 {
					c.logger.Warn("sign a leaf certificate; retrying", "service", l.service, "error", err)
				}
				wait := min(maxBackoff, minBackoff<<min(failures-1, 8))
				renewAt = time.Now().Add(wait + rand.N(wait/2+1))
			} else {
				failures = 0
				life := next.ValidBefore.Sub(next.ValidAfter)
				renewAt = next.ValidAfter.Add(time.Duration(float64(life) * renewShare()))
				l.mu.Lock()
				l.cert, l.tls, l.lastErr = next, nil, nil
				if tc, err := tlsOf(next); err == nil {
					l.tls = tc
				} else {
					c.logger.Error("a signed leaf does not load", "service", l.service, "error", err)
				}
				close(l.changed)
				l.changed = make(chan struct{})
				l.mu.Unlock()
				c.logger.Debug("leaf certificate signed", "service", l.service, "serial", next.SerialNumber, "root", next.RootID, "renew_at", renewAt)
			}
			continue
		}
		// Wait for the renewal, a root change, or the leaf going unused.
		var wakeAt time.Time
		if haveRoots {
			wakeAt = renewAt
		}
		if at, ok := c.idleAt(l); ok && (wakeAt.IsZero() || at.Before(wakeAt)) {
			wakeAt = at
		}
		var (
			timer *time.Timer
			fire  <-chan time.Time
		)
		if !wakeAt.IsZero() {
			timer = time.NewTimer(time.Until(wakeAt))
			fire = timer.C
		}
		select {
		case <-ctx.Done():
		case <-rootsChanged:
		case <-fire:
		case <-l.wake:
		}
		if timer != nil {
			timer.Stop()
		}
	}
}

// sign makes a new key and CSR for service and has the leader sign it.
func (c *Cache) sign(ctx context.Context, service, trustDomain string) (*structs.IssuedCert, error) {
	key, err := connect.GenerateKey()
	if err != nil {
		return nil, err
	}
	csr, err := connect.CreateCSR(connect.NewServiceID(trustDomain, c.cfg.Datacenter, service), key)
	if err != nil {
		return nil, err
	}
	keyPEM, err := connect.EncodeKey(key)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var reply structs.IssuedCert
	if err := c.cfg.RPC.RPC(ctx, structs.MethodCASign, &structs.CASignRequest{Datacenter: c.cfg.Datacenter, CSR: csr, Node: c.cfg.NodeName}, &reply); err != nil {
		return nil, err
	}
	reply.PrivateKeyPEM = keyPEM
	return &reply, nil
}
