package connect

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Bundle is a trust bundle: the roots a proxy trusts, and the trust domain
// whose identities it accepts. It is immutable; a rotation makes a new one.
type Bundle struct {
	// TrustDomain is the cluster's trust domain ("<cluster-id>.trellis").
	TrustDomain string
	// ActiveRootID is the ID of the root that signs new leaves.
	ActiveRootID string
	// Roots are the trusted roots (more than one during a rotation).
	Roots []*x509.Certificate
	pool  *x509.CertPool
}

// NewBundle parses the PEM roots of a trust domain.
func NewBundle(trustDomain, activeRootID string, rootPEMs ...string) (*Bundle, error) {
	if trustDomain == "" {
		return nil, errors.New("trust bundle: no trust domain")
	}
	b := &Bundle{TrustDomain: strings.ToLower(trustDomain), ActiveRootID: activeRootID, pool: x509.NewCertPool()}
	for i, p := range rootPEMs {
		certs, err := ParseCerts(p)
		if err != nil {
			return nil, fmt.Errorf("trust bundle: root %d: %w", i, err)
		}
		for _, c := range certs {
			if !c.IsCA {
				return nil, fmt.Errorf("trust bundle: root %d (%s) is not a CA certificate", i, c.Subject)
			}
			b.Roots = append(b.Roots, c)
			b.pool.AddCert(c)
		}
	}
	if len(b.Roots) == 0 {
		return nil, errors.New("trust bundle: no roots")
	}
	return b, nil
}

// Pool returns the roots as a pool. The pool must not be modified.
func (b *Bundle) Pool() *x509.CertPool { return b.certPool() }

// certPool returns the pool NewBundle made, or for a Bundle made some other
// way one of exactly its Roots. It is never nil: a nil pool would make
// x509 verification trust the system's roots.
func (b *Bundle) certPool() *x509.CertPool {
	if b.pool != nil {
		return b.pool
	}
	p := x509.NewCertPool()
	for _, c := range b.Roots {
		p.AddCert(c)
	}
	return p
}

// Errors of peer verification; match them with errors.Is.
var (
	// ErrNoPeerCertificate means the peer sent no certificate.
	ErrNoPeerCertificate = errors.New("peer sent no certificate")
	// ErrUntrusted means the peer's chain does not lead to a trusted root
	// (another CA, expired, not yet valid, or malformed).
	ErrUntrusted = errors.New("certificate not trusted")
	// ErrWrongTrustDomain means the peer's identity is of another trust domain.
	ErrWrongTrustDomain = errors.New("identity of another trust domain")
	// ErrNoCertificate means this side has no leaf certificate yet.
	ErrNoCertificate = errors.New("no leaf certificate yet")
	// ErrNoRoots means this side has no trusted roots yet.
	ErrNoRoots = errors.New("no trusted roots yet")
)

// Verify checks a peer's chain (leaf first, then any intermediates, such as
// a cross-signed root during a rotation) against the bundle at time now, and
// returns the leaf's service identity. It accepts only leaves that are not
// CA certificates and whose one SPIFFE ID is a service of the bundle's trust
// domain, and trusts exactly b.Roots (never the system's roots).
func (b *Bundle) Verify(chain []*x509.Certificate, now time.Time) (ServiceID, error) {
	if len(chain) == 0 {
		return ServiceID{}, ErrNoPeerCertificate
	}
	if len(b.Roots) == 0 {
		return ServiceID{}, ErrNoRoots
	}
	leaf := chain[0]
	if leaf.IsCA {
		// An X.509-SVID leaf must not be a CA (SPIFFE X509-SVID, 4.1).
		return ServiceID{}, fmt.Errorf("%w: the peer's leaf %s is a CA certificate", ErrUntrusted, leaf.Subject)
	}
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	_, err := leaf.Verify(x509.VerifyOptions{
		Roots:         b.certPool(),
		Intermediates: inter,
		CurrentTime:   now,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	})
	if err != nil {
		return ServiceID{}, fmt.Errorf("%w: %v", ErrUntrusted, err)
	}
	id, err := ServiceIDFromCert(leaf)
	if err != nil {
		return ServiceID{}, fmt.Errorf("%w: %v", ErrUntrusted, err)
	}
	if !strings.EqualFold(id.TrustDomain, b.TrustDomain) {
		return id, fmt.Errorf("%w: %s is not of trust domain %s", ErrWrongTrustDomain, id, b.TrustDomain)
	}
	return id, nil
}

// CertSource supplies what a mesh TLS endpoint presents and trusts. Both may
// change at any moment (renewal, rotation); each handshake asks again. The
// methods must be safe for concurrent use and must not block.
type CertSource interface {
	// Certificate returns the current leaf with its chain and key, or nil.
	Certificate() *tls.Certificate
	// Bundle returns the current trust bundle, or nil.
	Bundle() *Bundle
}

// ALPN protocol of the proxy-to-proxy tunnel: HTTP/2, whose CONNECT streams
// carry the application connections.
const ALPNTunnel = "h2"

// ServerTLSConfig is the TLS of a proxy's public listener: TLS 1.3 only, a
// client certificate required and verified against src's current bundle, the
// server's own leaf from src. Authorization (intentions) is the caller's: it
// reads the identity with PeerIdentity once the handshake is done.
func ServerTLSConfig(src CertSource, nextProtos ...string) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		// Ask for a client certificate but let VerifyConnection refuse a
		// missing one: it fails the handshake with ErrNoPeerCertificate,
		// where RequireAnyClientCert would fail it with an error of
		// crypto/tls that callers cannot match.
		ClientAuth: tls.RequestClientCert,
		NextProtos: nextProtos,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			if c := src.Certificate(); c != nil {
				return c, nil
			}
			return nil, ErrNoCertificate
		},
		VerifyConnection: func(cs tls.ConnectionState) error {
			_, err := verifyPeer(src, cs)
			return err
		},
	}
}

// ClientTLSConfig is the TLS a proxy dials another's public listener with:
// TLS 1.3 only, its own leaf as client certificate, and the server's chain
// verified against src's bundle; expect then checks the server's identity
// (that it is the service dialled), and its error fails the handshake.
func ClientTLSConfig(src CertSource, expect func(ServiceID) error, nextProtos ...string) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		NextProtos: nextProtos,
		// Mesh identities are SPIFFE IDs, not host names: the chain and the
		// identity are checked in VerifyConnection instead.
		InsecureSkipVerify: true,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			if c := src.Certificate(); c != nil {
				return c, nil
			}
			return nil, ErrNoCertificate
		},
		VerifyConnection: func(cs tls.ConnectionState) error {
			id, err := verifyPeer(src, cs)
			if err != nil {
				return err
			}
			if expect != nil {
				return expect(id)
			}
			return nil
		},
	}
}

func verifyPeer(src CertSource, cs tls.ConnectionState) (ServiceID, error) {
	b := src.Bundle()
	if b == nil {
		return ServiceID{}, ErrNoRoots
	}
	return b.Verify(cs.PeerCertificates, time.Now())
}

// PeerIdentity returns the service identity of a verified connection's peer.
func PeerIdentity(cs tls.ConnectionState) (ServiceID, error) {
	if len(cs.PeerCertificates) == 0 {
		return ServiceID{}, ErrNoPeerCertificate
	}
	return ServiceIDFromCert(cs.PeerCertificates[0])
}

// ExpectService returns an expect function for ClientTLSConfig that accepts
// only the named service (of any datacenter of the trust domain).
func ExpectService(name string) func(ServiceID) error {
	return func(id ServiceID) error {
		if !strings.EqualFold(id.Service, name) {
			return fmt.Errorf("server is %s, want service %q", id, name)
		}
		return nil
	}
}

// TLSCertificate builds a tls.Certificate from a PEM leaf (followed by any
// intermediates) and its PEM private key, with the parsed leaf filled in.
func TLSCertificate(certPEM, keyPEM string) (*tls.Certificate, error) {
	c, err := tls.X509KeyPair([]byte(certPEM), []byte(keyPEM))
	if err != nil {
		return nil, fmt.Errorf("leaf certificate: %w", err)
	}
	if c.Leaf == nil {
		if c.Leaf, err = x509.ParseCertificate(c.Certificate[0]); err != nil {
			return nil, fmt.Errorf("leaf certificate: %w", err)
		}
	}
	return &c, nil
}
