package mesh

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/trellismesh/trellis/internal/retry"
	"github.com/trellismesh/trellis/internal/testutil"
	"github.com/trellismesh/trellis/raftstore"
	"github.com/trellismesh/trellis/raftstore/structs"
)

// testLeafIdle is the LeafIdleTimeout of the release tests: short, but
// long against one signing, so a leaf is not released between its signing
// and the test's first look at it.
const testLeafIdle = 300 * time.Millisecond

// newIdleCache is a cache of server s whose leaves are released after
// testLeafIdle unused.
func newIdleCache(t *testing.T, s *raftstore.Server, maxLeaves int) *Cache {
	t.Helper()
	c := New(Config{RPC: s, NodeName: "n1", Datacenter: "dc1", MaxLeaves: maxLeaves, LeafIdleTimeout: testLeafIdle, Logger: testutil.Logger(t)})
	t.Cleanup(c.Close)
	return c
}

// heldLeaf returns the leaf c holds for service, or nil.
func heldLeaf(c *Cache, service string) *leaf {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.leaves[strings.ToLower(service)]
}

// waitReleased waits until l is released and its goroutine has ended.
func waitReleased(t *testing.T, c *Cache, l *leaf) {
	t.Helper()
	select {
	case <-l.done:
	case <-time.After(10 * time.Second):
		t.Fatalf("the leaf of %q was not released", l.service)
	}
	if !l.released.Load() {
		t.Fatalf("the goroutine of the leaf of %q ended without releasing it", l.service)
	}
	if h := heldLeaf(c, l.service); h == l {
		t.Fatalf("the released leaf of %q is still in the cache", l.service)
	}
}

// inUse reports a failure if the leaf of service was released.
func inUse(t *testing.T, c *Cache, l *leaf) {
	t.Helper()
	select {
	case <-l.done:
		t.Errorf("the leaf of %q was released while in use", l.service)
	default:
	}
	if heldLeaf(c, l.service) != l {
		t.Errorf("the leaf of %q left the cache while in use", l.service)
	}
}

// sidecarFor is the local sidecar of service, as the agent registers it.
func sidecarFor(service string) *structs.NodeService {
	return &structs.NodeService{ID: service + "-sidecar-proxy", Service: service + "-sidecar-proxy", Kind: structs.ServiceKindConnectProxy,
		Port: 21000, Proxy: &structs.ConnectProxyConfig{DestinationServiceName: service, DestinationServiceID: service}}
}

// leaderRecord returns the leader's record of node n1's leaf of service.
func leaderRecord(t *testing.T, s *raftstore.Server, service string) *structs.IssuedLeaf {
	t.Helper()
	var reply structs.IndexedIssuedLeaves
	if err := s.RPC(t.Context(), structs.MethodCALeaves, &structs.DCSpecificRequest{Datacenter: "dc1"}, &reply); err != nil {
		t.Fatal(err)
	}
	for _, l := range reply.Leaves {
		if l.Node == "n1" && l.Service == service {
			return l
		}
	}
	return nil
}

// TestCache_LeafReleasedWhenIdle: a leaf fetched once and never again is
// released after LeafIdleTimeout, its goroutine ends, and a later fetch
// signs a new one.
func TestCache_LeafReleasedWhenIdle(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	c := newIdleCache(t, s, 0)
	ctx := t.Context()
	first, err := c.Leaf(ctx, "notregistered", 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	l := heldLeaf(c, "notregistered")
	if l == nil {
		t.Fatal("no leaf held after a fetch")
	}
	waitReleased(t, c, l)

	again, err := c.Leaf(ctx, "notregistered", 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if again.SerialNumber == first.SerialNumber || again.PrivateKeyPEM == first.PrivateKeyPEM {
		t.Errorf("a fetch after the release answered the released leaf (serial %s)", again.SerialNumber)
	}
	if h := heldLeaf(c, "notregistered"); h == nil || h == l {
		t.Errorf("a fetch after the release holds %p, want a new leaf", h)
	}
}

// TestCache_LeafKeptWhileUsed: a leaf is not released while a blocking
// watcher waits on it, while its service is local (a sidecar fronts it),
// or while a proxy presents it; each is released once that ends.
func TestCache_LeafKeptWhileUsed(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	c := newIdleCache(t, s, 0)
	ctx := t.Context()

	// watched: a client blocks on it, as trellis connect proxy does.
	cur, err := c.Leaf(ctx, "watched", 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	watchCtx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	watchDone := make(chan error, 1)
	go func() {
		_, err := c.Leaf(watchCtx, "watched", cur.ModifyIndex, 5*time.Minute)
		watchDone <- err
	}()
	// local: the agent declared a sidecar for it; its proxy's cert source
	// is never asked for a certificate (no traffic).
	c.SetLocalServices([]*structs.NodeService{sidecarFor("local")})
	localSrc, err := c.CertSource("local")
	if err != nil {
		t.Fatal(err)
	}
	retry.Run(t, func(r *retry.R) {
		if localSrc.Certificate() == nil {
			r.Fatal("no leaf for the local service")
		}
	})
	// presented: a proxy of a service not declared local, with traffic.
	presented, err := c.CertSource("presented")
	if err != nil {
		t.Fatal(err)
	}
	watched, local, pres := heldLeaf(c, "watched"), heldLeaf(c, "local"), heldLeaf(c, "presented")

	// control is fetched last and never again: once it is released, the
	// others have been unused for longer, had nothing held them.
	if _, err := c.Leaf(ctx, "control", 0, 0); err != nil {
		t.Fatal(err)
	}
	control := heldLeaf(c, "control")
	retry.Run(t, func(r *retry.R) {
		presented.Certificate() // a handshake
		select {
		case <-control.done:
		default:
			r.Fatal("the control leaf is not released yet")
		}
	})
	inUse(t, c, watched)
	inUse(t, c, local)
	inUse(t, c, pres)

	stopWatch()
	if err := <-watchDone; !errors.Is(err, context.Canceled) {
		t.Errorf("the watch ended with %v, want it canceled", err)
	}
	waitReleased(t, c, watched)
	waitReleased(t, c, pres) // no more handshakes
	inUse(t, c, local)
	c.SetLocalServices(nil) // the sidecar is deregistered
	waitReleased(t, c, local)
}

// TestCache_CertSourceAfterRelease: a proxy whose leaf was released (its
// service not declared local, no handshake for LeafIdleTimeout) goes on
// presenting it, and has a new one signed at its next handshake.
func TestCache_CertSourceAfterRelease(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	c := newIdleCache(t, s, 0)
	src, err := c.CertSource("quiet")
	if err != nil {
		t.Fatal(err)
	}
	var old string
	retry.Run(t, func(r *retry.R) {
		tc := src.Certificate()
		if tc == nil {
			r.Fatal("no leaf yet")
		}
		old = tc.Leaf.SerialNumber.String()
	})
	waitReleased(t, c, heldLeaf(c, "quiet"))
	if tc := src.Certificate(); tc == nil {
		t.Fatal("a released leaf is no longer presented")
	}
	retry.Run(t, func(r *retry.R) {
		tc := src.Certificate()
		if tc == nil || tc.Leaf.SerialNumber.String() == old {
			r.Fatal("no new leaf after the release")
		}
	})
}

// TestCache_LeafCapFreesIdleNames is the tester's churn: more distinct names
// than MaxLeaves, each fetched once, and then a new service's leaf. The cap
// bounds the names in use at once, not every name ever asked for.
func TestCache_LeafCapFreesIdleNames(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	const maxLeaves = 50
	c := newIdleCache(t, s, maxLeaves)
	ctx := t.Context()
	fetch := func(name string) *structs.IssuedCert {
		t.Helper()
		var cert *structs.IssuedCert
		retry.Run(t, func(r *retry.R) {
			var err error
			cert, err = c.Leaf(ctx, name, 0, 0)
			if errors.Is(err, errTooManyLeaves) {
				r.Fatalf("leaf for %q refused and no slot freed: %v", name, err)
			}
			r.Check(err)
		})
		return cert
	}

	// Fill the cap with names clients watch: the next name is refused,
	// saying the leaves are in use.
	watchCtx, stopWatches := context.WithCancel(ctx)
	defer stopWatches()
	watches := make(chan error, maxLeaves)
	for i := range maxLeaves {
		cert := fetch(fmt.Sprintf("churn%d", i))
		go func() {
			_, err := c.Leaf(watchCtx, cert.Service, cert.ModifyIndex, 5*time.Minute)
			watches <- err
		}()
	}
	if _, err := c.Leaf(ctx, "newsvc", 0, 0); !errors.Is(err, errTooManyLeaves) || !strings.Contains(err.Error(), "used in the last") {
		t.Errorf("beyond the cap: %v, want errTooManyLeaves naming the idle time", err)
	}
	stopWatches()
	for range maxLeaves {
		if err := <-watches; !errors.Is(err, context.Canceled) {
			t.Errorf("a watch ended with %v", err)
		}
	}
	fetch("newsvc") // once the watched names are idle

	// Go on churning well past the cap, each name fetched once: every one
	// is signed once earlier ones are idle.
	for i := maxLeaves; i < 1010; i++ {
		fetch(fmt.Sprintf("churn%d", i))
	}
	fetch("newsvc2")
}

// TestCache_LocalLeafNotCapped: a full cap never refuses the leaf of a
// service with a local sidecar, nor a proxy's.
func TestCache_LocalLeafNotCapped(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	c := New(Config{RPC: s, NodeName: "n1", Datacenter: "dc1", MaxLeaves: 1, Logger: testutil.Logger(t)})
	t.Cleanup(c.Close)
	ctx := t.Context()
	if _, err := c.Leaf(ctx, "churn", 0, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Leaf(ctx, "newsvc", 0, 0); !errors.Is(err, errTooManyLeaves) {
		t.Fatalf("a second, non-local leaf: %v, want errTooManyLeaves", err)
	}
	// A proxy starting before the agent declares its sidecar local.
	if _, err := c.CertSource("proxied"); err != nil {
		t.Errorf("cert source with the cap full: %v", err)
	}
	c.SetLocalServices([]*structs.NodeService{sidecarFor("newsvc"), {ID: "native", Service: "native", Port: 8080, Connect: &structs.ServiceConnect{Native: true}}})
	for _, svc := range []string{"newsvc", "native"} {
		if _, err := c.Leaf(ctx, svc, 0, 0); err != nil {
			t.Errorf("leaf of local %q with the cap full: %v", svc, err)
		}
	}
}

// TestCache_ReleasedLeafNotResigned: after a root rotation the leaves in
// use are re-signed and a released one is not (the leader's record of it
// still names the old root).
func TestCache_ReleasedLeafNotResigned(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	c := newIdleCache(t, s, 0)
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	// The node is in the catalog, or the leader drops its records.
	if err := s.RPC(ctx, structs.MethodCatalogRegister, &structs.RegisterRequest{Node: "n1", Address: "10.0.0.1", Service: sidecarFor("kept")}, &structs.WriteReply{}); err != nil {
		t.Fatal(err)
	}
	gone, err := c.Leaf(ctx, "gone", 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	c.SetLocalServices([]*structs.NodeService{sidecarFor("kept")})
	kept, err := c.Leaf(ctx, "kept", 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	waitReleased(t, c, heldLeaf(c, "gone"))

	if err := s.RPC(ctx, structs.MethodCAConfigurationSet, &structs.CARequest{Rotate: true}, &structs.WriteReply{}); err != nil {
		t.Fatal(err)
	}
	next, err := c.Leaf(ctx, "kept", kept.ModifyIndex, 20*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if next.RootID == kept.RootID {
		t.Fatalf("the leaf in use was not re-signed after the rotation: %+v", next)
	}
	if h := heldLeaf(c, "gone"); h != nil {
		t.Errorf("the rotation brought back the released leaf")
	}
	if rec := leaderRecord(t, s, "gone"); rec == nil || rec.SerialNumber != gone.SerialNumber || rec.RootID != gone.RootID {
		t.Errorf("the leader's record of the released leaf is %+v, want serial %s of root %s", rec, gone.SerialNumber, gone.RootID)
	}
}
