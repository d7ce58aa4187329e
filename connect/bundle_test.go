package connect_test

import (
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/trellismesh/trellis/connect"
	"github.com/trellismesh/trellis/connect/ca"
)

// chainOf returns the parsed chain of a tls.Certificate, leaf first.
func chainOf(t *testing.T, c *tls.Certificate) []*x509.Certificate {
	t.Helper()
	var out []*x509.Certificate
	for _, der := range c.Certificate {
		x, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, x)
	}
	return out
}

// signDirect signs tmpl for a new key with root, bypassing SignLeaf's checks.
func signDirect(t *testing.T, root *ca.Root, tmpl *x509.Certificate) *x509.Certificate {
	t.Helper()
	key, err := connect.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	if tmpl.SerialNumber == nil {
		if tmpl.SerialNumber, err = connect.RandomSerial(); err != nil {
			t.Fatal(err)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, root.Cert, key.Public(), root.Key)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestNewBundle(t *testing.T) {
	t.Parallel()
	now := time.Now()
	r1, r2 := newRoot(t, testTD, now), newRoot(t, testTD, now)
	leaf := issue(t, r1, connect.NewServiceID(testTD, testDC, "web"), leafOpts{})
	leafPEM := connect.EncodeCert(leaf.Certificate[0])

	b, err := connect.NewBundle(strings.ToUpper(testTD), r1.ID(), r1.CertPEM+r2.CertPEM)
	if err != nil {
		t.Fatal(err)
	}
	if b.TrustDomain != testTD || b.ActiveRootID != r1.ID() || len(b.Roots) != 2 {
		t.Errorf("NewBundle got trust domain %q, active %q, %d roots", b.TrustDomain, b.ActiveRootID, len(b.Roots))
	}
	if _, err := leaf.Leaf.Verify(x509.VerifyOptions{Roots: b.Pool()}); err != nil {
		t.Errorf("Pool() does not verify a leaf of a root: %v", err)
	}

	tests := []struct {
		name  string
		td    string
		roots []string
	}{
		{"no trust domain", "", []string{r1.CertPEM}},
		{"no roots", testTD, nil},
		{"empty root", testTD, []string{""}},
		{"not PEM", testTD, []string{r1.CertPEM, "root"}},
		{"leaf as root", testTD, []string{r1.CertPEM, leafPEM}},
		{"key as root", testTD, []string{r1.KeyPEM}},
	}
	for _, test := range tests {
		t.Run(test.name, func(t *testing.T) {
			t.Parallel()
			if b, err := connect.NewBundle(test.td, "", test.roots...); err == nil {
				t.Errorf("NewBundle(%q, %d roots) got %d roots, want an error", test.td, len(test.roots), len(b.Roots))
			}
		})
	}
}

func TestBundle_Verify(t *testing.T) {
	t.Parallel()
	now := time.Now()
	root := newRoot(t, testTD, now)
	bundle := bundleOf(t, testTD, root)
	web := connect.NewServiceID(testTD, testDC, "web")
	webURI, err := web.URI()
	if err != nil {
		t.Fatal(err)
	}
	good := chainOf(t, issue(t, root, web, leafOpts{now: now, ttl: time.Hour}))
	leafTmpl := func(uris ...*url.URL) *x509.Certificate {
		return &x509.Certificate{
			Subject:     pkix.Name{CommonName: "web"},
			URIs:        uris,
			NotBefore:   now.Add(-time.Minute),
			NotAfter:    now.Add(time.Hour),
			KeyUsage:    x509.KeyUsageDigitalSignature,
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		}
	}
	caLeafTmpl := leafTmpl(webURI)
	caLeafTmpl.IsCA, caLeafTmpl.BasicConstraintsValid = true, true
	caLeafTmpl.KeyUsage |= x509.KeyUsageCertSign
	foreignURI, _ := connect.NewServiceID("other.trellis", testDC, "web").URI()
	dbURI, _ := connect.NewServiceID(testTD, testDC, "db").URI()
	rootURI, _ := url.Parse("spiffe://" + testTD)

	tests := []struct {
		name   string
		bundle *connect.Bundle
		chain  []*x509.Certificate
		at     time.Time
		want   error // nil: accepted as web
	}{
		{"leaf", bundle, good, now, nil},
		{"leaf with its root after it", bundle, append(good[:1:1], root.Cert), now, nil},
		{"upper-case trust domain in the bundle", bundleOf(t, strings.ToUpper(testTD), root), good, now, nil},
		{"no chain", bundle, nil, now, connect.ErrNoPeerCertificate},
		{"expired", bundle, good, now.Add(2 * time.Hour), connect.ErrUntrusted},
		{"not valid yet", bundle, good, now.Add(-time.Hour), connect.ErrUntrusted},
		{"another CA", bundleOf(t, testTD, newRoot(t, testTD, now)), good, now, connect.ErrUntrusted},
		{"the root itself", bundle, []*x509.Certificate{root.Cert}, now, connect.ErrUntrusted},
		{"a CA certificate with a service ID", bundle, []*x509.Certificate{signDirect(t, root, caLeafTmpl)}, now, connect.ErrUntrusted},
		{"no URI SAN", bundle, []*x509.Certificate{signDirect(t, root, leafTmpl())}, now, connect.ErrUntrusted},
		{"two URI SANs", bundle, []*x509.Certificate{signDirect(t, root, leafTmpl(webURI, dbURI))}, now, connect.ErrUntrusted},
		{"trust domain URI only", bundle, []*x509.Certificate{signDirect(t, root, leafTmpl(rootURI))}, now, connect.ErrUntrusted},
		{"another trust domain", bundle, []*x509.Certificate{signDirect(t, root, leafTmpl(foreignURI))}, now, connect.ErrWrongTrustDomain},
		// A Bundle made without NewBundle has no pool: it must still trust
		// exactly its Roots (and never the system's).
		{"literal bundle", &connect.Bundle{TrustDomain: testTD, Roots: []*x509.Certificate{root.Cert}}, good, now, nil},
		{"literal bundle without roots", &connect.Bundle{TrustDomain: testTD}, good, now, connect.ErrNoRoots},
	}
	for _, test := range tests {
		t.Run(test.name, func(t *testing.T) {
			t.Parallel()
			got, err := test.bundle.Verify(test.chain, test.at)
			if test.want == nil {
				if err != nil || got != web {
					t.Errorf("Verify got %v, %v, want %v", got, err, web)
				}
				return
			}
			if !errors.Is(err, test.want) {
				t.Errorf("Verify got %v, %v, want %v", got, err, test.want)
			}
		})
	}
}

// TestBundle_Verify_rotation: a leaf of a new root, served with the new root
// cross-signed by the old one, verifies whichever of the two roots a peer
// trusts, and not with an unrelated root.
func TestBundle_Verify_rotation(t *testing.T) {
	t.Parallel()
	now := time.Now()
	oldRoot, nextRoot, unrelated := newRoot(t, testTD, now.Add(-24*time.Hour)), newRoot(t, testTD, now), newRoot(t, testTD, now)
	cross, err := oldRoot.CrossSign(nextRoot.Cert, now)
	if err != nil {
		t.Fatal(err)
	}
	web := connect.NewServiceID(testTD, testDC, "web")
	newLeaf := chainOf(t, issue(t, nextRoot, web, leafOpts{intermediates: []string{cross}}))
	bareNewLeaf := newLeaf[:1]
	oldLeaf := chainOf(t, issue(t, oldRoot, web, leafOpts{}))

	tests := []struct {
		name   string
		bundle *connect.Bundle
		chain  []*x509.Certificate
		want   error
	}{
		{"old root only", bundleOf(t, testTD, oldRoot), newLeaf, nil},
		{"new root only", bundleOf(t, testTD, nextRoot), newLeaf, nil},
		{"both roots", bundleOf(t, testTD, nextRoot, oldRoot), newLeaf, nil},
		{"unrelated root", bundleOf(t, testTD, unrelated), newLeaf, connect.ErrUntrusted},
		{"old root only, no cross-signed intermediate", bundleOf(t, testTD, oldRoot), bareNewLeaf, connect.ErrUntrusted},
		{"new root only, no cross-signed intermediate", bundleOf(t, testTD, nextRoot), bareNewLeaf, nil},
		{"old leaf, both roots", bundleOf(t, testTD, nextRoot, oldRoot), oldLeaf, nil},
		{"old leaf, new root only", bundleOf(t, testTD, nextRoot), oldLeaf, connect.ErrUntrusted},
	}
	for _, test := range tests {
		t.Run(test.name, func(t *testing.T) {
			t.Parallel()
			got, err := test.bundle.Verify(test.chain, now)
			if test.want == nil {
				if err != nil || got != web {
					t.Errorf("Verify got %v, %v, want %v", got, err, web)
				}
				return
			}
			if !errors.Is(err, test.want) {
				t.Errorf("Verify got %v, %v, want %v", got, err, test.want)
			}
		})
	}

	// The same over TLS: a server on the new root, a client that trusts
	// only the old one, and the other way round.
	t.Run("handshake", func(t *testing.T) {
		t.Parallel()
		db := connect.NewServiceID(testTD, testDC, "db")
		server := connect.ServerTLSConfig(staticSource{issue(t, nextRoot, db, leafOpts{intermediates: []string{cross}}), bundleOf(t, testTD, nextRoot, oldRoot)})
		client := connect.ClientTLSConfig(staticSource{issue(t, oldRoot, web, leafOpts{}), bundleOf(t, testTD, oldRoot)}, connect.ExpectService("db"))
		cli, srv := handshake(t, server, client)
		if cli.err != nil || srv.err != nil {
			t.Fatalf("handshake across a rotation: client %v, server %v", cli.err, srv.err)
		}
		if srv.peer != web {
			t.Errorf("server: peer %v, want %v", srv.peer, web)
		}
	})
}

// rotatingSource is a CertSource whose leaf and bundle change at run time.
type rotatingSource struct {
	cert   atomic.Pointer[tls.Certificate]
	bundle atomic.Pointer[connect.Bundle]
}

func (s *rotatingSource) Certificate() *tls.Certificate { return s.cert.Load() }
func (s *rotatingSource) Bundle() *connect.Bundle       { return s.bundle.Load() }

// TestTLS_sourceAskedEachHandshake: a renewed leaf or a new bundle is used
// from the next handshake on, with no new tls.Config.
func TestTLS_sourceAskedEachHandshake(t *testing.T) {
	t.Parallel()
	now := time.Now()
	r1, r2 := newRoot(t, testTD, now), newRoot(t, testTD, now)
	web, db := connect.NewServiceID(testTD, testDC, "web"), connect.NewServiceID(testTD, testDC, "db")
	srcSrv, srcCli := &rotatingSource{}, &rotatingSource{}
	srcSrv.cert.Store(issue(t, r1, db, leafOpts{}))
	srcSrv.bundle.Store(bundleOf(t, testTD, r1))
	srcCli.cert.Store(issue(t, r1, web, leafOpts{}))
	srcCli.bundle.Store(bundleOf(t, testTD, r1))
	server := connect.ServerTLSConfig(srcSrv)
	client := connect.ClientTLSConfig(srcCli, nil)

	if cli, srv := handshake(t, server, client); cli.err != nil || srv.err != nil {
		t.Fatalf("first handshake: client %v, server %v", cli.err, srv.err)
	}
	// The client moves to r2 before the server trusts it: refused.
	srcCli.cert.Store(issue(t, r2, web, leafOpts{}))
	srcCli.bundle.Store(bundleOf(t, testTD, r2, r1))
	if _, srv := handshake(t, server, client); !errors.Is(srv.err, connect.ErrUntrusted) {
		t.Fatalf("leaf of a root the server does not trust yet: server %v, want ErrUntrusted", srv.err)
	}
	// The server learns r2: accepted.
	srcSrv.bundle.Store(bundleOf(t, testTD, r1, r2))
	cli, srv := handshake(t, server, client)
	if cli.err != nil || srv.err != nil {
		t.Fatalf("after the bundle update: client %v, server %v", cli.err, srv.err)
	}
	if got := srv.state.PeerCertificates[0].Raw; string(got) != string(srcCli.cert.Load().Certificate[0]) {
		t.Error("the server did not see the client's new leaf")
	}
}

func TestTLSCertificate(t *testing.T) {
	t.Parallel()
	now := time.Now()
	oldRoot, next := newRoot(t, testTD, now), newRoot(t, testTD, now)
	cross, err := oldRoot.CrossSign(next.Cert, now)
	if err != nil {
		t.Fatal(err)
	}
	key, err := connect.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	keyPEM, _ := connect.EncodeKey(key)
	csrPEM, _ := connect.CreateCSR(connect.NewServiceID(testTD, testDC, "web"), key)
	csr, err := connect.ParseCSR(csrPEM)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := next.SignLeaf(csr, ca.LeafRequest{TrustDomain: testTD, Datacenter: testDC, Now: now})
	if err != nil {
		t.Fatal(err)
	}
	otherKey, _ := connect.GenerateKey()
	otherKeyPEM, _ := connect.EncodeKey(otherKey)

	c, err := connect.TLSCertificate(leaf.CertPEM+cross, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Certificate) != 2 || c.Leaf == nil || !c.Leaf.Equal(leaf.Cert) {
		t.Errorf("TLSCertificate: %d certificates, leaf %v; want the leaf then the intermediate, Leaf filled", len(c.Certificate), c.Leaf)
	}
	for name, in := range map[string][2]string{
		"key of another leaf": {leaf.CertPEM, otherKeyPEM},
		"no certificate":      {"", keyPEM},
		"no key":              {leaf.CertPEM, ""},
		"key first":           {keyPEM, leaf.CertPEM},
	} {
		if _, err := connect.TLSCertificate(in[0], in[1]); err == nil {
			t.Errorf("TLSCertificate with %s succeeded", name)
		}
	}
}

func TestExpectService(t *testing.T) {
	t.Parallel()
	tests := []struct {
		want string
		id   connect.ServiceID
		ok   bool
	}{
		{"web", connect.NewServiceID(testTD, testDC, "web"), true},
		{"web", connect.NewServiceID(testTD, "dc2", "web"), true},
		{"Web", connect.NewServiceID(testTD, testDC, "wEB"), true},
		{"web", connect.NewServiceID(testTD, testDC, "db"), false},
		{"web", connect.NewServiceID(testTD, testDC, "web2"), false},
		{"web", connect.NewServiceID(testTD, testDC, "we"), false},
	}
	for _, test := range tests {
		err := connect.ExpectService(test.want)(test.id)
		if test.ok != (err == nil) {
			t.Errorf("ExpectService(%q)(%v) got %v, want ok=%v", test.want, test.id, err, test.ok)
		}
	}
}

func TestPeerIdentity_noCertificate(t *testing.T) {
	t.Parallel()
	if _, err := connect.PeerIdentity(tls.ConnectionState{}); !errors.Is(err, connect.ErrNoPeerCertificate) {
		t.Errorf("PeerIdentity of a state without certificates got %v, want ErrNoPeerCertificate", err)
	}
}

// TestTLS_resumptionRechecked: a resumed session (TLS 1.3 tickets) is checked
// against the bundle of the moment, so a root dropped from the bundle is
// refused even to a client holding a ticket.
func TestTLS_resumptionRechecked(t *testing.T) {
	t.Parallel()
	now := time.Now()
	r1, r2 := newRoot(t, testTD, now), newRoot(t, testTD, now)
	web, db := connect.NewServiceID(testTD, testDC, "web"), connect.NewServiceID(testTD, testDC, "db")
	srcSrv := &rotatingSource{}
	srcSrv.cert.Store(issue(t, r1, db, leafOpts{}))
	srcSrv.bundle.Store(bundleOf(t, testTD, r1))
	server := connect.ServerTLSConfig(srcSrv)
	client := connect.ClientTLSConfig(staticSource{issue(t, r1, web, leafOpts{}), bundleOf(t, testTD, r1)}, connect.ExpectService("db"))
	client.ClientSessionCache = tls.NewLRUClientSessionCache(4)
	client.ServerName = "db" // the cache key; without it, the address, new for every handshake here

	if cli, srv := handshake(t, server, client); cli.err != nil || srv.err != nil || cli.state.DidResume {
		t.Fatalf("first handshake: client %v, server %v, resumed %v", cli.err, srv.err, cli.state.DidResume)
	}
	cli, srv := handshake(t, server, client)
	if cli.err != nil || srv.err != nil {
		t.Fatalf("second handshake: client %v, server %v", cli.err, srv.err)
	}
	if !cli.state.DidResume || srv.peer != web {
		t.Fatalf("second handshake: resumed %v, peer %v; want a resumption that still knows the client", cli.state.DidResume, srv.peer)
	}
	srcSrv.bundle.Store(bundleOf(t, testTD, r2))
	if _, srv := handshake(t, server, client); !errors.Is(srv.err, connect.ErrUntrusted) {
		t.Errorf("resumption after the client's root left the bundle: server %v, want ErrUntrusted", srv.err)
	}
}
