package mesh

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
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
type leaf struct {
	service string

	mu      sync.Mutex
	cert    *structs.IssuedCert // with PrivateKeyPEM; nil before the first
	tls     *tls.Certificate
	changed chan struct{} // closed at the next new leaf
	lastErr error
}

// errTooManyLeaves refuses a leaf beyond Config.MaxLeaves.
var errTooManyLeaves = errors.New("too many services with leaf certificates on this agent")

// leafFor returns the leaf of service, starting its signing goroutine the
// first time.
func (c *Cache) leafFor(service string) (*leaf, error) {
	if err := connect.ValidateServiceName("service", service); err != nil || service == connect.Wildcard {
		return nil, structs.Invalid("service", "%q is not a service name", service)
	}
	key := strings.ToLower(service)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, errWatchStopped
	}
	if l := c.leaves[key]; l != nil {
		return l, nil
	}
	if len(c.leaves) >= c.cfg.MaxLeaves {
		return nil, fmt.Errorf("leaf for %q: %w (%d)", service, errTooManyLeaves, c.cfg.MaxLeaves)
	}
	l := &leaf{service: service, changed: make(chan struct{})}
	c.leaves[key] = l
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		c.runLeaf(c.ctx, l)
	}()
	return l, nil
}

// Leaf returns the current leaf of service with its private key, signing
// one first if there is none. With minIndex above 0 it waits up to wait
// for a newer one (ModifyIndex above minIndex).
func (c *Cache) Leaf(ctx context.Context, service string, minIndex uint64, wait time.Duration) (*structs.IssuedCert, error) {
	l, err := c.leafFor(service)
	if err != nil {
		return nil, err
	}
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
// trusted roots.
func (c *Cache) CertSource(service string) (connect.CertSource, error) {
	l, err := c.leafFor(service)
	if err != nil {
		return nil, err
	}
	return certSource{c: c, l: l}, nil
}

type certSource struct {
	c *Cache
	l *leaf
}

func (s certSource) Certificate() *tls.Certificate {
	s.l.mu.Lock()
	defer s.l.mu.Unlock()
	return s.l.tls
}

func (s certSource) Bundle() *connect.Bundle { return s.c.Bundle() }

// runLeaf signs the leaf, then renews it before it expires and re-signs it
// when the active root changes, until ctx ends. Failures are retried with
// backoff; the current leaf stays in use meanwhile.
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
		var (
			timer *time.Timer
			fire  <-chan time.Time
		)
		if haveRoots {
			timer = time.NewTimer(time.Until(renewAt))
			fire = timer.C
		}
		select {
		case <-ctx.Done():
		case <-rootsChanged:
		case <-fire:
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
