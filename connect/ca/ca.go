// Package ca is the built-in certificate authority of the mesh: it makes
// ECDSA P-256 roots, signs service leaves from CSRs (the private keys stay
// with the agents), and cross-signs a new root with the old one so that a
// rotation drops no connection. It holds no state: the servers keep roots
// and configuration in Raft and hand them to these functions.
package ca

import (
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"net/url"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/trellismesh/trellis/connect"
)

// Defaults and limits of the built-in CA.
const (
	// DefaultLeafCertTTL is how long a leaf is valid unless configured.
	DefaultLeafCertTTL = 72 * time.Hour
	// MinLeafCertTTL and MaxLeafCertTTL bound leaf_cert_ttl.
	MinLeafCertTTL = time.Minute
	MaxLeafCertTTL = 365 * 24 * time.Hour
	// RootTTL is how long a generated root is valid.
	RootTTL = 10 * 365 * 24 * time.Hour
	// backdate makes new certificates valid a little before now, so that
	// clocks a little behind accept them.
	backdate = time.Minute
)

// Root is a CA root: its certificate and the key that signs with it.
type Root struct {
	Cert    *x509.Certificate
	CertPEM string
	Key     crypto.Signer
	KeyPEM  string
}

// ID returns the root's ID: its SHA-256 fingerprint.
func (r *Root) ID() string { return connect.Fingerprint(r.Cert) }

// SigningKeyID returns the root's subject key ID in colon hex.
func (r *Root) SigningKeyID() string { return connect.HexString(r.Cert.SubjectKeyId) }

// GenerateRoot makes a new self-signed root for trustDomain with a new
// ECDSA P-256 key. name becomes its common name.
func GenerateRoot(trustDomain, name string, now time.Time) (*Root, error) {
	key, err := connect.GenerateKey()
	if err != nil {
		return nil, err
	}
	serial, err := connect.RandomSerial()
	if err != nil {
		return nil, err
	}
	skid, err := connect.KeyID(key.Public())
	if err != nil {
		return nil, err
	}
	td, err := trustDomainURI(trustDomain)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: name, Organization: []string{"Trellis"}},
		URIs:                  td,
		NotBefore:             now.Add(-backdate),
		NotAfter:              now.Add(RootTTL),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLen:            -1, // a cross-signed successor may sit below it
		SubjectKeyId:          skid,
		AuthorityKeyId:        skid,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("create root certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parse new root certificate: %w", err)
	}
	keyPEM, err := connect.EncodeKey(key)
	if err != nil {
		return nil, err
	}
	return &Root{Cert: cert, CertPEM: connect.EncodeCert(der), Key: key, KeyPEM: keyPEM}, nil
}

// trustDomainURI returns the URI SAN of a root: spiffe://<trust domain>.
// The name must be a bare SPIFFE trust domain (no scheme, path, user or port).
func trustDomainURI(trustDomain string) ([]*url.URL, error) {
	name := strings.ToLower(trustDomain)
	td, err := spiffeid.TrustDomainFromString(name)
	if err != nil {
		return nil, fmt.Errorf("trust domain %q: %w", trustDomain, err)
	}
	if td.Name() != name {
		// TrustDomainFromString also takes a whole SPIFFE ID.
		return nil, fmt.Errorf("trust domain %q: not a bare trust domain name", trustDomain)
	}
	return []*url.URL{td.ID().URL()}, nil
}

// Fields of a CA configuration that a RootError names, as the HTTP API's
// configuration calls them.
const (
	FieldRootCert   = "RootCert"
	FieldPrivateKey = "PrivateKey"
)

// A RootError is why LoadRoot refused a root: Field (FieldRootCert or
// FieldPrivateKey) is the part at fault, so that each caller can name it as
// its users write it.
type RootError struct {
	Field string
	Err   error
}

func (e *RootError) Error() string { return e.Field + ": " + e.Err.Error() }

// Unwrap returns the reason.
func (e *RootError) Unwrap() error { return e.Err }

func rootErr(field string, err error) error { return &RootError{Field: field, Err: err} }

// LoadRoot reads a root given by an operator (a CA configuration with
// RootCert and PrivateKey) and checks it: a CA certificate, valid at now,
// whose public key is the ECDSA P-256 key given. A refusal is a *RootError.
func LoadRoot(certPEM, keyPEM string, now time.Time) (*Root, error) {
	key, err := connect.ParseSigner(keyPEM)
	if err != nil {
		return nil, rootErr(FieldPrivateKey, err)
	}
	if err := connect.ValidateSigningKey(key); err != nil {
		return nil, rootErr(FieldPrivateKey, err)
	}
	cert, err := connect.ParseCert(certPEM)
	if err != nil {
		return nil, rootErr(FieldRootCert, err)
	}
	if !cert.IsCA || !cert.BasicConstraintsValid {
		return nil, rootErr(FieldRootCert, errors.New("not a CA certificate (basic constraints CA:TRUE missing)"))
	}
	if cert.KeyUsage != 0 && cert.KeyUsage&x509.KeyUsageCertSign == 0 {
		// Go's verifier ignores key usage on CAs, but other TLS stacks refuse
		// chains through a CA that may not sign certificates.
		return nil, rootErr(FieldRootCert, errors.New("key usage does not allow certificate signing (keyCertSign)"))
	}
	if now.After(cert.NotAfter) || now.Before(cert.NotBefore) {
		return nil, rootErr(FieldRootCert, fmt.Errorf("valid from %s to %s, not now", cert.NotBefore.Format(time.RFC3339), cert.NotAfter.Format(time.RFC3339)))
	}
	if !publicKeysEqual(cert.PublicKey, key.Public()) {
		return nil, rootErr(FieldPrivateKey, errors.New("does not belong to the root certificate"))
	}
	if len(cert.SubjectKeyId) == 0 {
		return nil, rootErr(FieldRootCert, errors.New("no subject key ID"))
	}
	keyOut, err := connect.EncodeKey(key)
	if err != nil {
		return nil, err
	}
	return &Root{Cert: cert, CertPEM: connect.EncodeCert(cert.Raw), Key: key, KeyPEM: keyOut}, nil
}

// ParseRoot reads a stored root (certificate and signing key PEM), checking
// only that the key is the certificate's.
func ParseRoot(certPEM, keyPEM string) (*Root, error) {
	cert, err := connect.ParseCert(certPEM)
	if err != nil {
		return nil, err
	}
	key, err := connect.ParseSigner(keyPEM)
	if err != nil {
		return nil, err
	}
	if !publicKeysEqual(cert.PublicKey, key.Public()) {
		return nil, errors.New("root signing key does not belong to its certificate")
	}
	return &Root{Cert: cert, CertPEM: certPEM, Key: key, KeyPEM: keyPEM}, nil
}

func publicKeysEqual(a, b crypto.PublicKey) bool {
	type equaler interface{ Equal(crypto.PublicKey) bool }
	e, ok := a.(equaler)
	return ok && e.Equal(b)
}

// LeafRequest is what SignLeaf needs besides the CSR.
type LeafRequest struct {
	// TrustDomain and Datacenter are the cluster's: a CSR for another is refused.
	TrustDomain string
	Datacenter  string
	// TTL is how long the leaf is valid (capped by the root's own expiry).
	TTL time.Duration
	// Now is the signing time; the current time when zero.
	Now time.Time
}

// Leaf is a signed leaf certificate.
type Leaf struct {
	Cert    *x509.Certificate
	CertPEM string
	ID      connect.ServiceID
}

// SignLeaf signs a service leaf from a parsed CSR (its signature is checked
// again here): the CSR must carry exactly one URI SAN, the SPIFFE ID of a
// service of the default namespace of this trust domain and datacenter, and
// an ECDSA P-256 key. The leaf may serve and dial (server and client auth)
// and is valid for req.TTL, but never beyond the root.
func (r *Root) SignLeaf(csr *x509.CertificateRequest, req LeafRequest) (*Leaf, error) {
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("CSR signature: %w", err)
	}
	if len(csr.URIs) != 1 {
		return nil, fmt.Errorf("CSR has %d URI SANs, want one SPIFFE ID", len(csr.URIs))
	}
	if len(csr.DNSNames) > 0 || len(csr.IPAddresses) > 0 || len(csr.EmailAddresses) > 0 {
		return nil, errors.New("CSR carries DNS, IP or email SANs; a service leaf has only its SPIFFE ID")
	}
	id, err := connect.ParseServiceID(csr.URIs[0].String())
	if err != nil {
		return nil, fmt.Errorf("CSR: %w", err)
	}
	if !strings.EqualFold(id.TrustDomain, req.TrustDomain) {
		return nil, fmt.Errorf("CSR for %s: trust domain %q is not this cluster's %q", id, id.TrustDomain, req.TrustDomain)
	}
	if !strings.EqualFold(id.Datacenter, req.Datacenter) {
		return nil, fmt.Errorf("CSR for %s: datacenter %q is not %q", id, id.Datacenter, req.Datacenter)
	}
	if id.Namespace != connect.DefaultNamespace {
		return nil, fmt.Errorf("CSR for %s: namespace %q is not %q, the only one", id, id.Namespace, connect.DefaultNamespace)
	}
	if err := connect.ValidateServiceName("service", id.Service); err != nil || id.Service == connect.Wildcard {
		return nil, fmt.Errorf("CSR for %s: not a valid service name", id)
	}
	if err := connect.ValidateSigningKey(cryptoSigner{csr.PublicKey}); err != nil {
		return nil, fmt.Errorf("CSR public key: %w", err)
	}
	if req.TTL <= 0 {
		req.TTL = DefaultLeafCertTTL
	}
	if req.Now.IsZero() {
		req.Now = time.Now()
	}
	if !req.Now.Before(r.Cert.NotAfter) {
		return nil, fmt.Errorf("sign leaf for %s: the root expired at %s", id, r.Cert.NotAfter.Format(time.RFC3339))
	}
	serial, err := connect.RandomSerial()
	if err != nil {
		return nil, err
	}
	skid, err := connect.KeyID(csr.PublicKey)
	if err != nil {
		return nil, err
	}
	notAfter := req.Now.Add(req.TTL)
	if notAfter.After(r.Cert.NotAfter) {
		notAfter = r.Cert.NotAfter
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: id.Service},
		URIs:                  csr.URIs,
		NotBefore:             req.Now.Add(-backdate),
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageKeyAgreement,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
		IsCA:                  false,
		SubjectKeyId:          skid,
		AuthorityKeyId:        r.Cert.SubjectKeyId,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, r.Cert, csr.PublicKey, r.Key)
	if err != nil {
		return nil, fmt.Errorf("sign leaf for %s: %w", id, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parse new leaf: %w", err)
	}
	return &Leaf{Cert: cert, CertPEM: connect.EncodeCert(der), ID: id}, nil
}

// cryptoSigner lets ValidateSigningKey look at a bare public key.
type cryptoSigner struct{ pub crypto.PublicKey }

func (c cryptoSigner) Public() crypto.PublicKey { return c.pub }
func (c cryptoSigner) Sign(_ io.Reader, _ []byte, _ crypto.SignerOpts) ([]byte, error) {
	return nil, errors.New("public key only")
}

// CrossSign returns next's certificate signed by r: the same subject, key
// and key ID as next, issued by r. A leaf signed by next, presented with
// this certificate as intermediate, verifies against r alone, so peers that
// do not trust next yet still accept it.
//
// next must be a CA certificate. Its subject is copied byte for byte: the
// leaves of next name it as their issuer in next's own encoding, which need
// not be the one Go would write (a root from another tool).
func (r *Root) CrossSign(next *x509.Certificate, now time.Time) (string, error) {
	if !next.IsCA || !next.BasicConstraintsValid {
		return "", fmt.Errorf("cross-sign %s: not a CA certificate", next.Subject)
	}
	if !now.Before(r.Cert.NotAfter) {
		return "", fmt.Errorf("cross-sign %s: the signing root expired at %s", next.Subject, r.Cert.NotAfter.Format(time.RFC3339))
	}
	serial, err := connect.RandomSerial()
	if err != nil {
		return "", err
	}
	notAfter := next.NotAfter
	if notAfter.After(r.Cert.NotAfter) {
		notAfter = r.Cert.NotAfter
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		RawSubject:            next.RawSubject,
		Subject:               next.Subject,
		URIs:                  next.URIs,
		NotBefore:             now.Add(-backdate),
		NotAfter:              notAfter,
		KeyUsage:              next.KeyUsage,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLen:            0,
		MaxPathLenZero:        true, // only leaves below it
		SubjectKeyId:          next.SubjectKeyId,
		AuthorityKeyId:        r.Cert.SubjectKeyId,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, r.Cert, next.PublicKey, r.Key)
	if err != nil {
		return "", fmt.Errorf("cross-sign %s with %s: %w", next.Subject.CommonName, r.Cert.Subject.CommonName, err)
	}
	return connect.EncodeCert(der), nil
}
