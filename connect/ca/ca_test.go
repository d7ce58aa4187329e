package ca

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/trellismesh/trellis/connect"
)

const (
	testTD = "11111111-2222-3333-4444-555555555555.trellis"
	testDC = "dc1"
)

var testRSAKey = sync.OnceValue(func() *rsa.PrivateKey {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		panic(err) // only in tests: a broken crypto/rand
	}
	return k
})

func mustKey(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	k, err := connect.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func mustRoot(t *testing.T, td string, now time.Time) *Root {
	t.Helper()
	r, err := GenerateRoot(td, "Trellis CA", now)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func keyPEM(t *testing.T, k crypto.Signer) string {
	t.Helper()
	s, err := connect.EncodeKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// rootTemplate is an operator's root, as made by another tool.
func rootTemplate(now time.Time) *x509.Certificate {
	return &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "Operator Root", Organization: []string{"Example"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
}

// selfSign returns tmpl signed by key, as PEM.
func selfSign(t *testing.T, tmpl *x509.Certificate, key crypto.Signer) string {
	t.Helper()
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	return connect.EncodeCert(der)
}

// csrOf makes and parses a CSR from tmpl, signed by key.
func csrOf(t *testing.T, tmpl *x509.CertificateRequest, key crypto.Signer) *x509.CertificateRequest {
	t.Helper()
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := connect.ParseCSR(string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})))
	if err != nil {
		t.Fatal(err)
	}
	return csr
}

func mustURL(t *testing.T, s string) *url.URL {
	t.Helper()
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

func TestGenerateRoot(t *testing.T) {
	t.Parallel()
	now := time.Now()
	r, err := GenerateRoot(strings.ToUpper(testTD), "Trellis CA 1", now)
	if err != nil {
		t.Fatal(err)
	}
	c := r.Cert
	if !c.IsCA || !c.BasicConstraintsValid || c.MaxPathLen != -1 {
		t.Errorf("root: IsCA %v, basic constraints %v, MaxPathLen %d; want a CA with no path length limit", c.IsCA, c.BasicConstraintsValid, c.MaxPathLen)
	}
	if c.KeyUsage&x509.KeyUsageCertSign == 0 {
		t.Errorf("root key usage %b lacks cert sign", c.KeyUsage)
	}
	if c.Subject.CommonName != "Trellis CA 1" {
		t.Errorf("root common name %q", c.Subject.CommonName)
	}
	if len(c.URIs) != 1 || c.URIs[0].String() != "spiffe://"+testTD {
		t.Errorf("root URIs %v, want spiffe://%s", c.URIs, testTD)
	}
	skid, _ := connect.KeyID(r.Key.Public())
	if !bytes.Equal(c.SubjectKeyId, skid) || !bytes.Equal(c.AuthorityKeyId, skid) {
		t.Errorf("root SKID %x, AKID %x, want both %x", c.SubjectKeyId, c.AuthorityKeyId, skid)
	}
	if err := c.CheckSignatureFrom(c); err != nil {
		t.Errorf("root is not self-signed: %v", err)
	}
	if want := now.Add(-backdate).Truncate(time.Second); !c.NotBefore.Equal(want) {
		t.Errorf("root NotBefore %s, want %s", c.NotBefore, want)
	}
	if want := now.Add(RootTTL).Truncate(time.Second); !c.NotAfter.Equal(want) {
		t.Errorf("root NotAfter %s, want %s", c.NotAfter, want)
	}
	if err := connect.ValidateSigningKey(r.Key); err != nil {
		t.Error(err)
	}
	if !r.Key.Public().(*ecdsa.PublicKey).Equal(c.PublicKey) {
		t.Error("root key does not match its certificate")
	}
	if r.ID() != connect.Fingerprint(c) || r.SigningKeyID() != connect.HexString(skid) {
		t.Errorf("ID %s, SigningKeyID %s", r.ID(), r.SigningKeyID())
	}
	again, err := ParseRoot(r.CertPEM, r.KeyPEM)
	if err != nil || !again.Cert.Equal(c) || again.ID() != r.ID() {
		t.Errorf("ParseRoot of a generated root: %v", err)
	}
	if other := mustRoot(t, testTD, now); other.ID() == r.ID() || other.SigningKeyID() == r.SigningKeyID() {
		t.Error("two generated roots share an ID or key ID")
	}

	for _, td := range []string{"", "bad domain", "a/b", "x.trellis/path", "é.trellis", "user@x.trellis", "x.trellis:80"} {
		if r, err := GenerateRoot(td, "CA", now); err == nil {
			t.Errorf("GenerateRoot(%q) got a root with URIs %v, want an error", td, r.Cert.URIs)
		}
	}
}

func TestLoadRoot(t *testing.T) {
	t.Parallel()
	now := time.Now()
	key := mustKey(t)
	good := selfSign(t, rootTemplate(now), key)
	pkcs8, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	p384, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	_, edKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	with := func(edit func(*x509.Certificate)) string {
		tmpl := rootTemplate(now)
		edit(tmpl)
		return selfSign(t, tmpl, key)
	}
	generated := mustRoot(t, testTD, now)

	tests := []struct {
		name       string
		cert, key  string
		wantErrHas string // "" means accepted
	}{
		{"operator root", good, keyPEM(t, key), ""},
		{"PKCS #8 key", good, string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pkcs8})), ""},
		{"generated root", generated.CertPEM, generated.KeyPEM, ""},
		{"root followed by another certificate", good + generated.CertPEM, keyPEM(t, key), ""},
		{"key not PEM", good, "not a key", "PrivateKey"},
		{"no key", good, "", "PrivateKey"},
		{"certificate not PEM", "not a certificate", keyPEM(t, key), "RootCert"},
		{"certificate and key swapped", keyPEM(t, key), good, "PrivateKey"},
		{"RSA key", selfSign(t, rootTemplate(now), testRSAKey()), keyPEM(t, testRSAKey()), "P-256"},
		{"P-384 key", selfSign(t, rootTemplate(now), p384), keyPEM(t, p384), "P-256"},
		{"Ed25519 key", selfSign(t, rootTemplate(now), edKey), keyPEM(t, edKey), "P-256"},
		{"key of another root", good, generated.KeyPEM, "does not belong"},
		{"not a CA", with(func(c *x509.Certificate) { c.IsCA = false; c.KeyUsage = x509.KeyUsageDigitalSignature }), keyPEM(t, key), "not a CA"},
		{"no basic constraints", with(func(c *x509.Certificate) { c.IsCA, c.BasicConstraintsValid = false, false }), keyPEM(t, key), "not a CA"},
		{"cannot sign certificates", with(func(c *x509.Certificate) { c.KeyUsage = x509.KeyUsageDigitalSignature }), keyPEM(t, key), "certificate signing"},
		{"expired", with(func(c *x509.Certificate) { c.NotBefore, c.NotAfter = now.Add(-48*time.Hour), now.Add(-time.Hour) }), keyPEM(t, key), "not now"},
		{"not valid yet", with(func(c *x509.Certificate) { c.NotBefore = now.Add(time.Hour) }), keyPEM(t, key), "not now"},
	}
	for _, test := range tests {
		t.Run(test.name, func(t *testing.T) {
			t.Parallel()
			r, err := LoadRoot(test.cert, test.key, now)
			if test.wantErrHas != "" {
				if err == nil {
					t.Fatalf("LoadRoot got root %s, want an error", r.Cert.Subject)
				}
				if !strings.Contains(err.Error(), test.wantErrHas) {
					t.Errorf("LoadRoot error %q, want it to mention %q", err, test.wantErrHas)
				}
				// Callers name the field as their users write it.
				var re *RootError
				if !errors.As(err, &re) || (re.Field != FieldRootCert && re.Field != FieldPrivateKey) {
					t.Errorf("LoadRoot error %q is not a *RootError naming RootCert or PrivateKey", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("LoadRoot: %v", err)
			}
			want, _ := connect.ParseCert(test.cert)
			if !r.Cert.Equal(want) || connect.EncodeCert(want.Raw) != r.CertPEM {
				t.Error("LoadRoot's certificate is not the first one given")
			}
			back, err := connect.ParseSigner(r.KeyPEM)
			if err != nil || !back.Public().(*ecdsa.PublicKey).Equal(r.Cert.PublicKey) {
				t.Errorf("LoadRoot's KeyPEM does not parse to the root's key: %v", err)
			}
			// It can sign.
			leaf, err := r.SignLeaf(csrOf(t, &x509.CertificateRequest{URIs: []*url.URL{mustURL(t, "spiffe://"+testTD+"/ns/default/dc/dc1/svc/web")}}, mustKey(t)),
				LeafRequest{TrustDomain: testTD, Datacenter: testDC, Now: now})
			if err != nil {
				t.Fatalf("SignLeaf with a loaded root: %v", err)
			}
			if err := leaf.Cert.CheckSignatureFrom(r.Cert); err != nil {
				t.Error(err)
			}
		})
	}
}

func TestParseRoot(t *testing.T) {
	t.Parallel()
	r := mustRoot(t, testTD, time.Now())
	other := mustRoot(t, testTD, time.Now())
	got, err := ParseRoot(r.CertPEM, r.KeyPEM)
	if err != nil || got.ID() != r.ID() || got.CertPEM != r.CertPEM || got.KeyPEM != r.KeyPEM {
		t.Fatalf("ParseRoot: %v", err)
	}
	for name, in := range map[string][2]string{
		"no certificate":      {"", r.KeyPEM},
		"no key":              {r.CertPEM, ""},
		"key of another root": {r.CertPEM, other.KeyPEM},
	} {
		if _, err := ParseRoot(in[0], in[1]); err == nil {
			t.Errorf("ParseRoot with %s succeeded", name)
		}
	}
}

// TestSignLeaf_fromCSR is the round trip an agent and a server make:
// CreateCSR, ParseCSR, SignLeaf.
func TestSignLeaf_fromCSR(t *testing.T) {
	t.Parallel()
	now := time.Now()
	// A root with one hour left: the leaf's 72 hours are cut to it.
	root := mustRoot(t, testTD, now.Add(-RootTTL+time.Hour))
	key := mustKey(t)
	id := connect.NewServiceID(testTD, testDC, "web")
	csrPEM, err := connect.CreateCSR(id, key)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := connect.ParseCSR(csrPEM)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := root.SignLeaf(csr, LeafRequest{TrustDomain: testTD, Datacenter: testDC, TTL: DefaultLeafCertTTL, Now: now})
	if err != nil {
		t.Fatal(err)
	}
	c := leaf.Cert
	if leaf.ID != id {
		t.Errorf("leaf ID %v, want %v", leaf.ID, id)
	}
	if len(c.URIs) != 1 || c.URIs[0].String() != id.String() {
		t.Errorf("leaf URIs %v, want exactly %s", c.URIs, id)
	}
	if len(c.DNSNames)+len(c.IPAddresses)+len(c.EmailAddresses) != 0 {
		t.Errorf("leaf has other SANs: %v %v %v", c.DNSNames, c.IPAddresses, c.EmailAddresses)
	}
	if got := c.ExtKeyUsage; len(got) != 2 || got[0] != x509.ExtKeyUsageServerAuth || got[1] != x509.ExtKeyUsageClientAuth {
		t.Errorf("leaf EKUs %v, want server and client auth", got)
	}
	if c.IsCA || !c.BasicConstraintsValid {
		t.Errorf("leaf IsCA %v, basic constraints %v; want CA:FALSE", c.IsCA, c.BasicConstraintsValid)
	}
	if c.KeyUsage&x509.KeyUsageCertSign != 0 || c.KeyUsage&x509.KeyUsageDigitalSignature == 0 {
		t.Errorf("leaf key usage %b", c.KeyUsage)
	}
	if !c.NotAfter.Equal(root.Cert.NotAfter) {
		t.Errorf("leaf NotAfter %s, want the root's %s", c.NotAfter, root.Cert.NotAfter)
	}
	if want := now.Add(-backdate).Truncate(time.Second); !c.NotBefore.Equal(want) {
		t.Errorf("leaf NotBefore %s, want %s", c.NotBefore, want)
	}
	if !bytes.Equal(c.AuthorityKeyId, root.Cert.SubjectKeyId) {
		t.Errorf("leaf AKID %x, want the root's SKID %x", c.AuthorityKeyId, root.Cert.SubjectKeyId)
	}
	if skid, _ := connect.KeyID(key.Public()); !bytes.Equal(c.SubjectKeyId, skid) {
		t.Errorf("leaf SKID %x, want %x", c.SubjectKeyId, skid)
	}
	if !key.PublicKey.Equal(c.PublicKey) {
		t.Error("leaf key is not the CSR's")
	}
	if c.Subject.CommonName != "web" || !bytes.Equal(c.RawIssuer, root.Cert.RawSubject) {
		t.Errorf("leaf subject %s, issuer %s", c.Subject, c.Issuer)
	}
	if parsed, err := connect.ParseCert(leaf.CertPEM); err != nil || !parsed.Equal(c) {
		t.Errorf("CertPEM is not the leaf: %v", err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(root.Cert)
	for _, eku := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
		if _, err := c.Verify(x509.VerifyOptions{Roots: pool, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{eku}}); err != nil {
			t.Errorf("leaf does not verify for EKU %v: %v", eku, err)
		}
	}
	b, err := connect.NewBundle(testTD, root.ID(), root.CertPEM)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := b.Verify([]*x509.Certificate{c}, now); err != nil || got != id {
		t.Errorf("Bundle.Verify got %v, %v, want %v", got, err, id)
	}
}

func TestSignLeaf_TTL(t *testing.T) {
	t.Parallel()
	now := time.Now()
	root := mustRoot(t, testTD, now)
	csr := csrOf(t, &x509.CertificateRequest{URIs: []*url.URL{mustURL(t, "spiffe://"+testTD+"/ns/default/dc/dc1/svc/web")}}, mustKey(t))
	tests := []struct {
		name string
		ttl  time.Duration
		want time.Duration
	}{
		{"default", 0, DefaultLeafCertTTL},
		{"negative", -time.Hour, DefaultLeafCertTTL},
		{"one hour", time.Hour, time.Hour},
		{"a year", MaxLeafCertTTL, MaxLeafCertTTL},
	}
	for _, test := range tests {
		t.Run(test.name, func(t *testing.T) {
			t.Parallel()
			leaf, err := root.SignLeaf(csr, LeafRequest{TrustDomain: testTD, Datacenter: testDC, TTL: test.ttl, Now: now})
			if err != nil {
				t.Fatal(err)
			}
			if want := now.Add(test.want).Truncate(time.Second); !leaf.Cert.NotAfter.Equal(want) {
				t.Errorf("TTL %s: NotAfter %s, want %s", test.ttl, leaf.Cert.NotAfter, want)
			}
		})
	}

	t.Run("zero Now is the current time", func(t *testing.T) {
		t.Parallel()
		before := time.Now()
		leaf, err := root.SignLeaf(csr, LeafRequest{TrustDomain: testTD, Datacenter: testDC, TTL: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		if leaf.Cert.NotAfter.Before(before.Add(time.Hour).Truncate(time.Second)) {
			t.Errorf("NotAfter %s: the leaf was not signed at the current time", leaf.Cert.NotAfter)
		}
	})
	t.Run("expired root", func(t *testing.T) {
		t.Parallel()
		_, err := root.SignLeaf(csr, LeafRequest{TrustDomain: testTD, Datacenter: testDC, Now: root.Cert.NotAfter.Add(time.Second)})
		if err == nil || !strings.Contains(err.Error(), "expired") {
			t.Errorf("SignLeaf with an expired root got %v, want an error saying it expired", err)
		}
	})
}

func TestSignLeaf_refusals(t *testing.T) {
	t.Parallel()
	now := time.Now()
	root := mustRoot(t, testTD, now)
	svc := func(path string) *url.URL { return mustURL(t, "spiffe://"+testTD+path) }
	web := svc("/ns/default/dc/dc1/svc/web")
	p384, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	_, edKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	req := LeafRequest{TrustDomain: testTD, Datacenter: testDC, Now: now}
	tests := []struct {
		name    string
		csr     *x509.CertificateRequest
		key     crypto.Signer // P-256 when nil
		req     *LeafRequest  // req when nil
		wantHas string
	}{
		{name: "no URI SAN", csr: &x509.CertificateRequest{Subject: pkix.Name{CommonName: "web"}}, wantHas: "0 URI SANs"},
		{name: "two URI SANs", csr: &x509.CertificateRequest{URIs: []*url.URL{web, svc("/ns/default/dc/dc1/svc/db")}}, wantHas: "2 URI SANs"},
		{name: "DNS SAN", csr: &x509.CertificateRequest{URIs: []*url.URL{web}, DNSNames: []string{"web.example.com"}}, wantHas: "DNS"},
		{name: "IP SAN", csr: &x509.CertificateRequest{URIs: []*url.URL{web}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}}, wantHas: "IP"},
		{name: "email SAN", csr: &x509.CertificateRequest{URIs: []*url.URL{web}, EmailAddresses: []string{"web@example.com"}}, wantHas: "email"},
		{name: "not SPIFFE", csr: &x509.CertificateRequest{URIs: []*url.URL{mustURL(t, "https://web.example.com/")}}, wantHas: "SPIFFE"},
		{name: "not a service ID", csr: &x509.CertificateRequest{URIs: []*url.URL{svc("/agent/client/dc/dc1/id/x")}}, wantHas: "not a Trellis service"},
		{name: "trust domain only", csr: &x509.CertificateRequest{URIs: []*url.URL{svc("")}}, wantHas: "not a Trellis service"},
		{name: "another trust domain", csr: &x509.CertificateRequest{URIs: []*url.URL{mustURL(t, "spiffe://other.trellis/ns/default/dc/dc1/svc/web")}}, wantHas: "trust domain"},
		{name: "another datacenter", csr: &x509.CertificateRequest{URIs: []*url.URL{svc("/ns/default/dc/dc2/svc/web")}}, wantHas: "datacenter"},
		{name: "another namespace", csr: &x509.CertificateRequest{URIs: []*url.URL{svc("/ns/team/dc/dc1/svc/web")}}, wantHas: "namespace"},
		{name: "service name starts with a dash", csr: &x509.CertificateRequest{URIs: []*url.URL{svc("/ns/default/dc/dc1/svc/-web")}}, wantHas: "service name"},
		{name: "service name ends with an underscore", csr: &x509.CertificateRequest{URIs: []*url.URL{svc("/ns/default/dc/dc1/svc/web_")}}, wantHas: "service name"},
		{name: "service name too long", csr: &x509.CertificateRequest{URIs: []*url.URL{svc("/ns/default/dc/dc1/svc/" + strings.Repeat("w", 256))}}, wantHas: "service name"},
		{name: "P-384 key", csr: &x509.CertificateRequest{URIs: []*url.URL{web}}, key: p384, wantHas: "P-256"},
		{name: "RSA key", csr: &x509.CertificateRequest{URIs: []*url.URL{web}}, key: testRSAKey(), wantHas: "P-256"},
		{name: "Ed25519 key", csr: &x509.CertificateRequest{URIs: []*url.URL{web}}, key: edKey, wantHas: "P-256"},
		{name: "request without trust domain", csr: &x509.CertificateRequest{URIs: []*url.URL{web}}, req: &LeafRequest{Datacenter: testDC, Now: now}, wantHas: "trust domain"},
		{name: "request without datacenter", csr: &x509.CertificateRequest{URIs: []*url.URL{web}}, req: &LeafRequest{TrustDomain: testTD, Now: now}, wantHas: "datacenter"},
	}
	for _, test := range tests {
		t.Run(test.name, func(t *testing.T) {
			t.Parallel()
			key := test.key
			if key == nil {
				key = mustKey(t)
			}
			r := req
			if test.req != nil {
				r = *test.req
			}
			leaf, err := root.SignLeaf(csrOf(t, test.csr, key), r)
			if err == nil {
				t.Fatalf("SignLeaf signed %v, want an error", leaf.Cert.URIs)
			}
			if !strings.Contains(err.Error(), test.wantHas) {
				t.Errorf("SignLeaf error %q, want it to mention %q", err, test.wantHas)
			}
		})
	}

	t.Run("CSR signature not checked", func(t *testing.T) {
		t.Parallel()
		csr := csrOf(t, &x509.CertificateRequest{URIs: []*url.URL{web}}, mustKey(t))
		forged := *csr
		forged.PublicKey = &mustKey(t).PublicKey // another key than the one that signed
		if _, err := root.SignLeaf(&forged, req); err == nil {
			t.Error("SignLeaf signed a CSR whose signature is not by its key")
		}
	})
	t.Run("mixed-case names", func(t *testing.T) {
		t.Parallel()
		csr := csrOf(t, &x509.CertificateRequest{URIs: []*url.URL{svc("/ns/default/dc/DC1/svc/Web")}}, mustKey(t))
		leaf, err := root.SignLeaf(csr, LeafRequest{TrustDomain: strings.ToUpper(testTD), Datacenter: "dc1", Now: now})
		if err != nil {
			t.Fatalf("SignLeaf: %v", err)
		}
		if leaf.ID.Service != "Web" || leaf.Cert.Subject.CommonName != "Web" {
			t.Errorf("leaf %v, CN %q", leaf.ID, leaf.Cert.Subject.CommonName)
		}
	})
}

// TestCrossSign: a leaf of the next root, served with next cross-signed by
// the current root, verifies against the current root alone.
func TestCrossSign(t *testing.T) {
	t.Parallel()
	now := time.Now()
	old := mustRoot(t, testTD, now.Add(-time.Hour))
	next := mustRoot(t, testTD, now)

	crossPEM, err := old.CrossSign(next.Cert, now)
	if err != nil {
		t.Fatal(err)
	}
	cross, err := connect.ParseCert(crossPEM)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(cross.RawSubject, next.Cert.RawSubject) || !bytes.Equal(cross.RawIssuer, old.Cert.RawSubject) {
		t.Errorf("cross-signed subject %s, issuer %s; want next's subject, old's subject", cross.Subject, cross.Issuer)
	}
	if !bytes.Equal(cross.SubjectKeyId, next.Cert.SubjectKeyId) || !bytes.Equal(cross.AuthorityKeyId, old.Cert.SubjectKeyId) {
		t.Errorf("cross-signed SKID %x AKID %x", cross.SubjectKeyId, cross.AuthorityKeyId)
	}
	if !next.Cert.PublicKey.(*ecdsa.PublicKey).Equal(cross.PublicKey) {
		t.Error("cross-signed certificate does not carry next's key")
	}
	if !cross.IsCA || cross.MaxPathLen != 0 || !cross.MaxPathLenZero {
		t.Errorf("cross-signed IsCA %v MaxPathLen %d zero %v; want a CA for leaves only", cross.IsCA, cross.MaxPathLen, cross.MaxPathLenZero)
	}
	if !cross.NotAfter.Equal(old.Cert.NotAfter) {
		t.Errorf("cross-signed NotAfter %s, want the old root's %s (it ends first)", cross.NotAfter, old.Cert.NotAfter)
	}
	if err := cross.CheckSignatureFrom(old.Cert); err != nil {
		t.Errorf("cross-signed certificate not signed by old: %v", err)
	}
	verifyAgainst(t, old, next, crossPEM, now)

	t.Run("not a CA", func(t *testing.T) {
		t.Parallel()
		leaf, err := next.SignLeaf(csrOf(t, &x509.CertificateRequest{URIs: []*url.URL{mustURL(t, "spiffe://"+testTD+"/ns/default/dc/dc1/svc/web")}}, mustKey(t)),
			LeafRequest{TrustDomain: testTD, Datacenter: testDC, Now: now})
		if err != nil {
			t.Fatal(err)
		}
		if pemOut, err := old.CrossSign(leaf.Cert, now); err == nil {
			c, _ := connect.ParseCert(pemOut)
			t.Errorf("CrossSign of a leaf made a certificate with IsCA %v, want an error", c.IsCA)
		}
	})

	t.Run("expired signing root", func(t *testing.T) {
		t.Parallel()
		if _, err := old.CrossSign(next.Cert, old.Cert.NotAfter.Add(time.Second)); err == nil {
			t.Error("CrossSign by an expired root succeeded")
		}
	})

	// An operator's root from another tool may encode its subject in a form
	// Go would not (here the common name as UTF8String, where Go writes
	// PrintableString). The cross-signed certificate must keep the bytes, or
	// leaves of that root, whose issuer holds them, find no parent in it.
	t.Run("subject encoding kept", func(t *testing.T) {
		t.Parallel()
		key := mustKey(t)
		rawSubject, err := asn1.Marshal(pkix.RDNSequence{{{
			Type:  asn1.ObjectIdentifier{2, 5, 4, 3},
			Value: asn1.RawValue{Tag: asn1.TagUTF8String, Bytes: []byte("Operator Root")},
		}}})
		if err != nil {
			t.Fatal(err)
		}
		tmpl := rootTemplate(now)
		tmpl.RawSubject = rawSubject
		opRoot, err := LoadRoot(selfSign(t, tmpl, key), keyPEM(t, key), now)
		if err != nil {
			t.Fatal(err)
		}
		if reencoded, _ := asn1.Marshal(opRoot.Cert.Subject.ToRDNSequence()); bytes.Equal(reencoded, opRoot.Cert.RawSubject) {
			t.Fatal("test root's subject is in Go's own encoding; the test would prove nothing")
		}
		crossPEM, err := old.CrossSign(opRoot.Cert, now)
		if err != nil {
			t.Fatal(err)
		}
		verifyAgainst(t, old, opRoot, crossPEM, now)
	})
}

// verifyAgainst checks that a leaf of next with crossPEM as intermediate
// verifies with a bundle of old alone, and of next alone.
func verifyAgainst(t *testing.T, old, next *Root, crossPEM string, now time.Time) {
	t.Helper()
	leaf, err := next.SignLeaf(csrOf(t, &x509.CertificateRequest{URIs: []*url.URL{mustURL(t, "spiffe://"+testTD+"/ns/default/dc/dc1/svc/web")}}, mustKey(t)),
		LeafRequest{TrustDomain: testTD, Datacenter: testDC, Now: now})
	if err != nil {
		t.Fatal(err)
	}
	cross, err := connect.ParseCert(crossPEM)
	if err != nil {
		t.Fatal(err)
	}
	for name, root := range map[string]*Root{"old": old, "next": next} {
		b, err := connect.NewBundle(testTD, root.ID(), root.CertPEM)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := b.Verify([]*x509.Certificate{leaf.Cert, cross}, now); err != nil {
			t.Errorf("leaf of next with the cross-signed intermediate, bundle of %s only: %v", name, err)
		}
	}
}
