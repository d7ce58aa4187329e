package mesh

import (
	"context"
	"crypto/x509"
	"errors"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/trellismesh/trellis/connect"
	"github.com/trellismesh/trellis/connect/proxy"
	"github.com/trellismesh/trellis/internal/retry"
	"github.com/trellismesh/trellis/internal/testutil"
	"github.com/trellismesh/trellis/raftstore"
	"github.com/trellismesh/trellis/raftstore/structs"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// startServer runs a real single-node Raft server (with its CA).
func startServer(t *testing.T) *raftstore.Server {
	t.Helper()
	cfg := raftstore.TestConfig("s1", "")
	cfg.Logger = testutil.Logger(t)
	s, err := raftstore.NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Shutdown() })
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if err := s.WaitForLeader(ctx); err != nil {
		t.Fatal(err)
	}
	return s
}

func newCache(t *testing.T, s *raftstore.Server, defaultAllow bool) *Cache {
	t.Helper()
	c := New(Config{RPC: s, NodeName: "n1", Datacenter: "dc1", DefaultAllow: defaultAllow, Logger: testutil.Logger(t)})
	t.Cleanup(c.Close)
	return c
}

func TestCache_RootsAndLeaf(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	c := newCache(t, s, false)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	roots, err := c.Roots(ctx, 0, 0)
	if err != nil || len(roots.Roots) != 1 {
		t.Fatalf("roots: %+v, %v", roots, err)
	}
	if c.Bundle() == nil || c.Bundle().TrustDomain != roots.TrustDomain {
		t.Fatalf("bundle %+v", c.Bundle())
	}
	leaf, err := c.Leaf(ctx, "web", 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if leaf.PrivateKeyPEM == "" || leaf.Service != "web" || leaf.RootID != roots.ActiveRootID {
		t.Fatalf("leaf %+v", leaf)
	}
	tc, err := connect.TLSCertificate(leaf.CertPEM, leaf.PrivateKeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Bundle().Verify([]*x509.Certificate{tc.Leaf}, time.Now()); err != nil {
		t.Fatalf("the leaf does not verify against the bundle: %v", err)
	}
	src, err := c.CertSource("web")
	if err != nil || src.Certificate() == nil {
		t.Fatalf("cert source: %v", err)
	}

	// A blocking leaf request returns when the root rotates and the leaf
	// is re-signed.
	got := make(chan *structs.IssuedCert, 1)
	go func() {
		l, err := c.Leaf(ctx, "web", leaf.ModifyIndex, 20*time.Second)
		if err != nil {
			t.Error(err)
		}
		got <- l
	}()
	if err := s.RPC(ctx, structs.MethodCAConfigurationSet, &structs.CARequest{Rotate: true}, &structs.WriteReply{}); err != nil {
		t.Fatal(err)
	}
	select {
	case next := <-got:
		if next.ModifyIndex <= leaf.ModifyIndex || next.RootID == leaf.RootID || next.SerialNumber == leaf.SerialNumber {
			t.Errorf("after the rotation: %+v (was %+v)", next, leaf)
		}
	case <-ctx.Done():
		t.Fatal("the leaf was not re-signed after the rotation")
	}
	retry.Run(t, func(r *retry.R) {
		if b := c.Bundle(); len(b.Roots) < 2 && b.ActiveRootID == roots.ActiveRootID {
			r.Fatal("the bundle did not follow the rotation")
		}
	})
}

func TestCache_LeafRefusals(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	c := New(Config{RPC: s, NodeName: "n1", Datacenter: "dc1", MaxLeaves: 1, Logger: testutil.Logger(t)})
	t.Cleanup(c.Close)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	var ve *structs.ValidationError
	if _, err := c.Leaf(ctx, "not/a name", 0, 0); !errors.As(err, &ve) {
		t.Errorf("bad name: %v", err)
	}
	if _, err := c.Leaf(ctx, "*", 0, 0); !errors.As(err, &ve) {
		t.Errorf("wildcard: %v", err)
	}
	if _, err := c.Leaf(ctx, "one", 0, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Leaf(ctx, "two", 0, 0); !errors.Is(err, errTooManyLeaves) {
		t.Errorf("beyond MaxLeaves: %v", err)
	}
}

func TestCache_Authorize(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	c := newCache(t, s, false)
	ctx := t.Context()
	roots, err := c.Roots(ctx, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	web := connect.NewServiceID(roots.TrustDomain, "dc1", "web")
	retry.Run(t, func(r *retry.R) {
		if d := c.Authorize("api", web); d.Allowed || d.Matched != nil {
			r.Fatalf("default deny: %+v", d)
		}
	})
	var reply structs.IntentionApplyReply
	if err := s.RPC(ctx, structs.MethodIntentionApply, &structs.IntentionRequest{Op: structs.IntentionOpCreate,
		Intention: &connect.Intention{SourceName: "web", DestinationName: "api", Action: "allow"}}, &reply); err != nil {
		t.Fatal(err)
	}
	retry.Run(t, func(r *retry.R) {
		if d := c.Authorize("api", web); !d.Allowed || d.Matched == nil || d.Matched.ID != reply.ID {
			r.Fatalf("after the allow: %+v", d)
		}
	})
	foreign := connect.NewServiceID("other.trellis", "dc1", "web")
	if d := c.Authorize("api", foreign); d.Allowed {
		t.Errorf("a foreign trust domain was allowed: %+v", d)
	}
}

// TestCache_KeepsLastKnownWhenServersGo stops the server: the cache goes on
// answering with what it had.
func TestCache_KeepsLastKnownWhenServersGo(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	c := newCache(t, s, true)
	ctx := t.Context()
	if err := s.RPC(ctx, structs.MethodCatalogRegister, &structs.RegisterRequest{Node: "n2", Address: "10.0.0.2", Service: &structs.NodeService{
		ID: "api-sidecar-proxy", Service: "api-sidecar-proxy", Kind: structs.ServiceKindConnectProxy, Port: 21000,
		Proxy: &structs.ConnectProxyConfig{DestinationServiceName: "api", DestinationServiceID: "api"},
	}}, &structs.WriteReply{}); err != nil {
		t.Fatal(err)
	}
	got := make(chan []proxy.Instance, 10)
	release, err := c.SubscribeEndpoints("api", func(in []proxy.Instance) { got <- in })
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	var first []proxy.Instance
	select {
	case first = <-got:
	case <-time.After(10 * time.Second):
		t.Fatal("no endpoints")
	}
	if len(first) != 1 || first[0].Addr != "10.0.0.2:21000" || first[0].Service != "api" || first[0].Node != "n2" {
		t.Fatalf("endpoints %+v", first)
	}
	if _, err := c.Leaf(ctx, "web", 0, 0); err != nil {
		t.Fatal(err)
	}
	s.Shutdown()
	if c.Bundle() == nil {
		t.Fatal("the bundle is gone with the server")
	}
	src, _ := c.CertSource("web")
	if src.Certificate() == nil {
		t.Error("the leaf is gone with the server")
	}
	if d := c.Authorize("api", connect.NewServiceID(c.Bundle().TrustDomain, "dc1", "web")); !d.Allowed {
		t.Errorf("decisions stopped with the server: %+v", d)
	}
	select {
	case in := <-got:
		t.Errorf("endpoints changed to %+v with the server gone; want the last known kept", in)
	default:
	}
}

func TestRenewalPoint(t *testing.T) {
	t.Parallel()
	// The renewal schedule picks a point between 60% and 85% of the
	// lifetime: never after expiry, never in the first half.
	for range 1000 {
		share := renewShare()
		if share < renewMin || share >= renewMax {
			t.Fatalf("renewal share %f outside [%f, %f)", share, renewMin, renewMax)
		}
	}
}
