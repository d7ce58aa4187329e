package raftstore

import (
	"context"
	"crypto/x509"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/trellismesh/trellis/connect"
	"github.com/trellismesh/trellis/connect/ca"
	"github.com/trellismesh/trellis/internal/retry"
	"github.com/trellismesh/trellis/raftstore/structs"
)

// caRoots waits for the leader to initialise the CA and returns the roots.
func caRoots(t *testing.T, s *Server) *structs.IndexedCARoots {
	t.Helper()
	var reply structs.IndexedCARoots
	retry.Run(t, func(r *retry.R) {
		reply = structs.IndexedCARoots{}
		if err := s.RPC(t.Context(), structs.MethodCARoots, &structs.DCSpecificRequest{}, &reply); err != nil {
			r.Fatal(err)
		}
		if len(reply.Roots) == 0 {
			r.Fatal("no roots yet")
		}
	})
	return &reply
}

// sign makes a key and CSR for service in the server's trust domain and
// has the leader sign it for node.
func sign(t *testing.T, s *Server, node, service string) (*structs.IssuedCert, error) {
	t.Helper()
	roots := caRoots(t, s)
	key, err := connect.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	csr, err := connect.CreateCSR(connect.NewServiceID(roots.TrustDomain, "dc1", service), key)
	if err != nil {
		t.Fatal(err)
	}
	var reply structs.IssuedCert
	err = s.RPC(t.Context(), structs.MethodCASign, &structs.CASignRequest{CSR: csr, Node: node}, &reply)
	return &reply, err
}

func bundleOf(t *testing.T, roots *structs.IndexedCARoots) *connect.Bundle {
	t.Helper()
	var pems []string
	for _, r := range roots.Roots {
		pems = append(pems, r.RootCert)
	}
	b, err := connect.NewBundle(roots.TrustDomain, roots.ActiveRootID, pems...)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestCA_InitialisedByLeader(t *testing.T) {
	t.Parallel()
	s := startServer(t, "")
	roots := caRoots(t, s)
	if len(roots.Roots) != 1 || !roots.Roots[0].Active || roots.ActiveRootID != roots.Roots[0].ID {
		t.Fatalf("roots = %+v", roots)
	}
	if !strings.HasSuffix(roots.TrustDomain, ".trellis") {
		t.Errorf("trust domain %q", roots.TrustDomain)
	}
	if roots.Roots[0].SigningKey != "" {
		t.Error("the roots answer carries the signing key")
	}
	root, err := connect.ParseCert(roots.Roots[0].RootCert)
	if err != nil {
		t.Fatal(err)
	}
	if !root.IsCA || root.PublicKeyAlgorithm != x509.ECDSA {
		t.Errorf("root: CA %v, key %v", root.IsCA, root.PublicKeyAlgorithm)
	}
	var cfg structs.CAConfiguration
	if err := s.RPC(t.Context(), structs.MethodCAConfigurationGet, &structs.DCSpecificRequest{}, &cfg); err != nil {
		t.Fatal(err)
	}
	if cfg.Config.LeafCertTTL != 72*time.Hour || cfg.Provider != structs.CAProviderBuiltin || cfg.TrustDomain() != roots.TrustDomain {
		t.Errorf("config = %+v", cfg)
	}
}

func TestCA_SignLeaf(t *testing.T) {
	t.Parallel()
	s := startServer(t, "")
	leaf, err := sign(t, s, "n1", "web")
	if err != nil {
		t.Fatal(err)
	}
	roots := caRoots(t, s)
	certs, err := connect.ParseCerts(leaf.CertPEM)
	if err != nil {
		t.Fatal(err)
	}
	id, err := bundleOf(t, roots).Verify(certs, time.Now())
	if err != nil {
		t.Fatalf("leaf does not verify: %v", err)
	}
	if id.Service != "web" || leaf.Service != "web" || leaf.ServiceURI != id.String() || leaf.RootID != roots.ActiveRootID {
		t.Errorf("leaf %+v, identity %s", leaf, id)
	}
	if d := leaf.ValidBefore.Sub(leaf.ValidAfter); d < 72*time.Hour || d > 73*time.Hour {
		t.Errorf("leaf valid for %s, want 72h", d)
	}
	_, recs, err := s.State().IssuedLeaves(nil)
	if err != nil || len(recs) != 1 || recs[0].Node != "n1" || recs[0].Service != "web" || recs[0].RootID != roots.ActiveRootID {
		t.Errorf("leaf records = %+v, %v", recs, err)
	}
}

func TestCA_SignRefusesBadCSRs(t *testing.T) {
	t.Parallel()
	s := startServer(t, "")
	roots := caRoots(t, s)
	key, _ := connect.GenerateKey()
	other, _ := connect.CreateCSR(connect.NewServiceID("other.trellis", "dc1", "web"), key)
	otherDC, _ := connect.CreateCSR(connect.NewServiceID(roots.TrustDomain, "dc9", "web"), key)
	for name, csr := range map[string]string{
		"not PEM":            "hello",
		"other trust domain": other,
		"other datacenter":   otherDC,
	} {
		var reply structs.IssuedCert
		err := s.RPC(t.Context(), structs.MethodCASign, &structs.CASignRequest{CSR: csr, Node: "n1"}, &reply)
		var ve *structs.ValidationError
		if !errors.As(err, &ve) || ve.Field != "CSR" {
			t.Errorf("%s: err = %v, want a validation error on CSR", name, err)
		}
	}
	if _, recs, _ := s.State().IssuedLeaves(nil); len(recs) != 0 {
		t.Errorf("refused CSRs left leaf records: %+v", recs)
	}
}

func TestCA_SetConfigRefusesBadKeys(t *testing.T) {
	t.Parallel()
	s := startServer(t, "")
	before := caRoots(t, s)
	root, err := ca.GenerateRoot("x.trellis", "op root", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	otherRoot, _ := ca.GenerateRoot("x.trellis", "other", time.Now())
	cases := map[string]structs.CAConfig{
		"key not PEM":           {RootCert: root.CertPEM, PrivateKey: "not a key"},
		"key of another root":   {RootCert: root.CertPEM, PrivateKey: otherRoot.KeyPEM},
		"cert without key":      {RootCert: root.CertPEM},
		"rsa key type":          {PrivateKeyType: "rsa"},
		"leaf TTL too short":    {LeafCertTTL: time.Second},
		"cert not a cert":       {RootCert: "junk", PrivateKey: root.KeyPEM},
		"unsupported key bits":  {PrivateKeyBits: 384},
		"leaf TTL beyond limit": {LeafCertTTL: 2 * 365 * 24 * time.Hour},
	}
	for name, c := range cases {
		err := s.RPC(t.Context(), structs.MethodCAConfigurationSet, &structs.CARequest{Config: &structs.CAConfiguration{Config: c}}, &structs.WriteReply{})
		var ve *structs.ValidationError
		if !errors.As(err, &ve) {
			t.Errorf("%s: err = %v, want a validation error", name, err)
		}
	}
	err = s.RPC(t.Context(), structs.MethodCAConfigurationSet, &structs.CARequest{Config: &structs.CAConfiguration{Provider: "vault"}}, &structs.WriteReply{})
	if ve := (*structs.ValidationError)(nil); !errors.As(err, &ve) || ve.Field != "Provider" {
		t.Errorf("vault provider: %v", err)
	}
	after := caRoots(t, s)
	if after.Index != before.Index || after.ActiveRootID != before.ActiveRootID {
		t.Errorf("refused configurations changed the roots: %d → %d", before.Index, after.Index)
	}
}

func TestCA_SetConfigWithOperatorRootAndTTL(t *testing.T) {
	t.Parallel()
	s := startServer(t, "")
	before := caRoots(t, s)
	root, err := ca.GenerateRoot(before.TrustDomain, "operator root", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	req := &structs.CARequest{Config: &structs.CAConfiguration{Provider: structs.CAProviderConsul, Config: structs.CAConfig{
		LeafCertTTL: 2 * time.Hour, RootCert: root.CertPEM, PrivateKey: root.KeyPEM,
	}}}
	if err := s.RPC(t.Context(), structs.MethodCAConfigurationSet, req, &structs.WriteReply{}); err != nil {
		t.Fatal(err)
	}
	after := caRoots(t, s)
	if after.ActiveRootID != root.ID() || len(after.Roots) != 2 {
		t.Fatalf("active %s (want the operator's %s), %d roots", after.ActiveRootID, root.ID(), len(after.Roots))
	}
	var cfg structs.CAConfiguration
	if err := s.RPC(t.Context(), structs.MethodCAConfigurationGet, &structs.DCSpecificRequest{}, &cfg); err != nil {
		t.Fatal(err)
	}
	if cfg.Config.LeafCertTTL != 2*time.Hour || cfg.Config.PrivateKey != "" || cfg.Provider != structs.CAProviderBuiltin {
		t.Errorf("config = %+v", cfg.Config)
	}
	leaf, err := sign(t, s, "n1", "web")
	if err != nil {
		t.Fatal(err)
	}
	if d := leaf.ValidBefore.Sub(leaf.ValidAfter); d > 2*time.Hour+2*time.Minute {
		t.Errorf("leaf valid for %s, want the new 2h", d)
	}
	// The same root again changes nothing.
	idx := after.Index
	if err := s.RPC(t.Context(), structs.MethodCAConfigurationSet, req, &structs.WriteReply{}); err != nil {
		t.Fatal(err)
	}
	if again := caRoots(t, s); again.Index != idx {
		t.Errorf("setting the same root moved the roots index %d → %d", idx, again.Index)
	}
}

// TestCA_RotationKeepsOldRootUntilLeavesResigned rotates the root while a
// node holds a leaf of the old one, and checks that the old root stays
// trusted (with the new root cross-signed by it) until that leaf is
// re-signed, then goes.
func TestCA_RotationKeepsOldRootUntilLeavesResigned(t *testing.T) {
	t.Parallel()
	s := startServer(t, "")
	register(t, s, &structs.RegisterRequest{Node: "n1", Address: "127.0.0.1", Service: &structs.NodeService{
		ID: "web-sidecar-proxy", Service: "web-sidecar-proxy", Kind: structs.ServiceKindConnectProxy, Port: 21000,
		Proxy: &structs.ConnectProxyConfig{DestinationServiceName: "web", DestinationServiceID: "web"},
	}})
	oldLeaf, err := sign(t, s, "n1", "web")
	if err != nil {
		t.Fatal(err)
	}
	before := caRoots(t, s)
	if err := s.RPC(t.Context(), structs.MethodCAConfigurationSet, &structs.CARequest{Rotate: true}, &structs.WriteReply{}); err != nil {
		t.Fatal(err)
	}
	after := caRoots(t, s)
	if after.ActiveRootID == before.ActiveRootID || len(after.Roots) != 2 {
		t.Fatalf("after rotate: active %s, %d roots", after.ActiveRootID, len(after.Roots))
	}
	active, old := after.Roots[0], after.Roots[1]
	if !active.Active || old.Active || old.ID != before.ActiveRootID || old.RotatedOutAt.IsZero() || len(active.IntermediateCerts) != 1 {
		t.Fatalf("roots after rotate: %+v", after.Roots)
	}
	newLeaf, err := sign(t, s, "n2", "api") // another node: n1 still holds the old leaf
	if err != nil {
		t.Fatal(err)
	}
	certs, err := connect.ParseCerts(newLeaf.CertPEM)
	if err != nil || len(certs) != 2 {
		t.Fatalf("new leaf chain: %d certs, %v", len(certs), err)
	}
	oldOnly, err := connect.NewBundle(after.TrustDomain, "", old.RootCert)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := oldOnly.Verify(certs, time.Now()); err != nil {
		t.Errorf("a new leaf does not verify against the old root through the cross-signed root: %v", err)
	}
	oldCerts, _ := connect.ParseCerts(oldLeaf.CertPEM)
	if _, err := bundleOf(t, after).Verify(oldCerts, time.Now()); err != nil {
		t.Errorf("an old leaf does not verify during the rotation: %v", err)
	}

	// Several prune rounds pass: n1's leaf keeps the old root.
	deadline := time.Now().Add(4 * s.cfg.CARootGrace)
	retry.RunWith(&retry.Timer{Timeout: 10 * time.Second, Wait: 50 * time.Millisecond}, t, func(r *retry.R) {
		if time.Now().Before(deadline) {
			r.Fatal("waiting for some prune rounds")
		}
	})
	if got := caRoots(t, s); len(got.Roots) != 2 {
		t.Fatalf("the old root was dropped while n1 still holds a leaf of it")
	}
	if _, err := sign(t, s, "n1", "web"); err != nil {
		t.Fatal(err)
	}
	retry.RunWith(&retry.Timer{Timeout: 10 * time.Second, Wait: 50 * time.Millisecond}, t, func(r *retry.R) {
		if got := caRoots(t, s); len(got.Roots) != 1 || got.ActiveRootID != active.ID {
			r.Fatalf("%d roots, want only the new one", len(got.Roots))
		}
	})
}

func intentionApply(t *testing.T, s *Server, op string, ixn *connect.Intention) (structs.IntentionApplyReply, error) {
	t.Helper()
	var reply structs.IntentionApplyReply
	err := s.RPC(t.Context(), structs.MethodIntentionApply, &structs.IntentionRequest{Op: op, Intention: ixn}, &reply)
	return reply, err
}

func TestIntentions_Apply(t *testing.T) {
	t.Parallel()
	s := startServer(t, "")
	created, err := intentionApply(t, s, structs.IntentionOpCreate, &connect.Intention{SourceName: "web", DestinationName: "db", Action: "allow", Description: "web reads"})
	if err != nil || created.ID == "" {
		t.Fatalf("create: %+v, %v", created, err)
	}
	if _, err := intentionApply(t, s, structs.IntentionOpCreate, &connect.Intention{SourceName: "web", DestinationName: "db", Action: "deny"}); !errors.Is(err, structs.ErrConflict) {
		t.Errorf("second create: %v, want a conflict", err)
	}
	up, err := intentionApply(t, s, structs.IntentionOpUpsert, &connect.Intention{SourceName: "web", DestinationName: "db", Action: "deny"})
	if err != nil || up.ID != created.ID {
		t.Fatalf("upsert: %+v, %v (want the same ID %s)", up, err, created.ID)
	}
	for _, ixn := range []*connect.Intention{
		{SourceName: "*", DestinationName: "db", Action: "deny"},
		{SourceName: "web", DestinationName: "*", Action: "allow"},
		{SourceName: "*", DestinationName: "*", Action: "deny"},
	} {
		if _, err := intentionApply(t, s, structs.IntentionOpCreate, ixn); err != nil {
			t.Fatal(err)
		}
	}
	var list structs.IndexedIntentions
	if err := s.RPC(t.Context(), structs.MethodIntentionList, &structs.DCSpecificRequest{}, &list); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, i := range list.Intentions {
		got = append(got, i.SourceName+">"+i.DestinationName)
	}
	if strings.Join(got, " ") != "web>db *>db web>* *>*" {
		t.Errorf("precedence order: %v", got)
	}
	if i := list.Intentions[0]; i.Action != "deny" || i.CreatedAt.IsZero() || i.UpdatedAt.Before(i.CreatedAt) || i.Precedence != connect.PrecedenceExactExact {
		t.Errorf("upserted intention: %+v", i)
	}

	var match structs.IndexedIntentionMatches
	if err := s.RPC(t.Context(), structs.MethodIntentionMatch, &structs.IntentionMatchRequest{By: "destination", Names: []string{"db", "api"}}, &match); err != nil {
		t.Fatal(err)
	}
	if len(match.Matches) != 2 || len(match.Matches[0]) != 4 || len(match.Matches[1]) != 2 {
		t.Errorf("match db/api: %d, %d intentions", len(match.Matches[0]), len(match.Matches[1]))
	}

	var get structs.IndexedIntentions
	if err := s.RPC(t.Context(), structs.MethodIntentionGet, &structs.IntentionQueryRequest{SourceName: "web", DestinationName: "db"}, &get); err != nil || len(get.Intentions) != 1 {
		t.Fatalf("get exact: %+v, %v", get, err)
	}
	if _, err := intentionApply(t, s, structs.IntentionOpDelete, &connect.Intention{SourceName: "web", DestinationName: "db"}); err != nil {
		t.Fatal(err)
	}
	if _, err := intentionApply(t, s, structs.IntentionOpDelete, &connect.Intention{SourceName: "web", DestinationName: "db"}); !errors.Is(err, structs.ErrNotFound) {
		t.Errorf("delete twice: %v, want not found", err)
	}
	if _, err := intentionApply(t, s, structs.IntentionOpUpdate, &connect.Intention{ID: "nope", SourceName: "a", DestinationName: "b", Action: "allow"}); !errors.Is(err, structs.ErrNotFound) {
		t.Errorf("update unknown: %v", err)
	}
}

// A create that carries its ID may be applied twice: the second finds the
// intention the first made and succeeds with it; any other conflict stays.
func TestIntentions_CreateWithItsIDIsSafeToSendAgain(t *testing.T) {
	t.Parallel()
	s := startServer(t, "")
	create := func(id, src string) (structs.IntentionApplyReply, error) {
		var reply structs.IntentionApplyReply
		err := s.RPC(t.Context(), structs.MethodIntentionApply, &structs.IntentionRequest{Op: structs.IntentionOpCreate, CreateID: id,
			Intention: &connect.Intention{SourceName: src, DestinationName: "db", Action: "allow"}}, &reply)
		return reply, err
	}
	id := structs.NewUUID()
	first, err := create(id, "web")
	if err != nil || first.ID != id {
		t.Fatalf("create with ID %s: %+v, %v", id, first, err)
	}
	again, err := create(id, "web")
	if err != nil || again.ID != id {
		t.Fatalf("the same create again: %+v, %v; want it to succeed with ID %s", again, err, id)
	}
	var list structs.IndexedIntentions
	if err := s.RPC(t.Context(), structs.MethodIntentionList, &structs.DCSpecificRequest{}, &list); err != nil || len(list.Intentions) != 1 {
		t.Fatalf("after two sends of one create: %d intentions, %v; want 1", len(list.Intentions), err)
	}
	if _, err := create(structs.NewUUID(), "web"); !errors.Is(err, structs.ErrConflict) {
		t.Errorf("another create of the pair: %v, want a conflict", err)
	}
	if _, err := create(id, "api"); !errors.Is(err, structs.ErrConflict) {
		t.Errorf("a create of another pair with a taken ID: %v, want a conflict", err)
	}
	var ve *structs.ValidationError
	if _, err := create("NOT-A-UUID", "cache"); !errors.As(err, &ve) || ve.Field != "CreateID" {
		t.Errorf("a malformed CreateID: %v, want a validation error on CreateID", err)
	}
}

func TestIntentions_RefuseMalformed(t *testing.T) {
	t.Parallel()
	s := startServer(t, "")
	for name, ixn := range map[string]*connect.Intention{
		"empty source":       {DestinationName: "db", Action: "allow"},
		"malformed dest":     {SourceName: "web", DestinationName: "db/../x", Action: "allow"},
		"bad action":         {SourceName: "web", DestinationName: "db", Action: "maybe"},
		"space in source":    {SourceName: "we b", DestinationName: "db", Action: "allow"},
		"description length": {SourceName: "web", DestinationName: "db", Action: "allow", Description: strings.Repeat("x", 600)},
	} {
		_, err := intentionApply(t, s, structs.IntentionOpCreate, ixn)
		var ve *structs.ValidationError
		if !errors.As(err, &ve) || !strings.HasPrefix(ve.Field, "Intention.") {
			t.Errorf("%s: %v, want a validation error naming the field", name, err)
		}
	}
	var list structs.IndexedIntentions
	if err := s.RPC(t.Context(), structs.MethodIntentionList, &structs.DCSpecificRequest{}, &list); err != nil || len(list.Intentions) != 0 {
		t.Errorf("malformed intentions were stored: %+v, %v", list.Intentions, err)
	}
}

// TestIntentions_BlockingList wakes a blocked list on a write.
func TestIntentions_BlockingList(t *testing.T) {
	t.Parallel()
	s := startServer(t, "")
	var first structs.IndexedIntentions
	if err := s.RPC(t.Context(), structs.MethodIntentionList, &structs.DCSpecificRequest{}, &first); err != nil {
		t.Fatal(err)
	}
	done := make(chan structs.IndexedIntentions, 1)
	go func() {
		var r structs.IndexedIntentions
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = s.RPC(ctx, structs.MethodIntentionList, &structs.DCSpecificRequest{QueryOptions: structs.QueryOptions{MinQueryIndex: first.Index, MaxQueryTime: 10 * time.Second}}, &r)
		done <- r
	}()
	if _, err := intentionApply(t, s, structs.IntentionOpCreate, &connect.Intention{SourceName: "web", DestinationName: "db", Action: "allow"}); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-done:
		if len(r.Intentions) != 1 || r.Index <= first.Index {
			t.Errorf("woken with %+v", r)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the blocking list was not woken")
	}
}

func TestConnectServiceNodes_FoldsDestinationChecks(t *testing.T) {
	t.Parallel()
	s := startServer(t, "")
	register(t, s, &structs.RegisterRequest{Node: "n1", Address: "10.0.0.1",
		Service: &structs.NodeService{ID: "api", Service: "api", Port: 8080},
		Check:   &structs.HealthCheck{CheckID: "api-alive", ServiceID: "api", Status: structs.HealthPassing}})
	register(t, s, &structs.RegisterRequest{Node: "n1", Address: "10.0.0.1", Service: &structs.NodeService{
		ID: "api-sidecar-proxy", Service: "api-sidecar-proxy", Kind: structs.ServiceKindConnectProxy, Port: 21000,
		Proxy: &structs.ConnectProxyConfig{DestinationServiceName: "api", DestinationServiceID: "api"},
	}})
	query := func(passing bool) structs.IndexedCheckServiceNodes {
		var reply structs.IndexedCheckServiceNodes
		if err := s.RPC(t.Context(), structs.MethodHealthServiceNodes, &structs.ServiceSpecificRequest{ServiceName: "api", Connect: true, PassingOnly: passing}, &reply); err != nil {
			t.Fatal(err)
		}
		return reply
	}
	r := query(true)
	if len(r.Nodes) != 1 || r.Nodes[0].Service.ID != "api-sidecar-proxy" || len(r.Nodes[0].Checks) != 1 || r.Nodes[0].Checks[0].CheckID != "api-alive" {
		t.Fatalf("connect endpoints of api: %+v", r.Nodes)
	}
	first := r.Index
	register(t, s, &structs.RegisterRequest{Node: "n1", Address: "10.0.0.1", SkipNodeUpdate: true,
		Check: &structs.HealthCheck{CheckID: "api-alive", ServiceID: "api", Status: structs.HealthCritical}})
	if r := query(true); len(r.Nodes) != 0 || r.Index <= first {
		t.Errorf("a proxy of a critical app is still passing (index %d → %d)", first, r.Index)
	}
	if r := query(false); len(r.Nodes) != 1 {
		t.Errorf("without ?passing the proxy is listed: %d", len(r.Nodes))
	}
}
