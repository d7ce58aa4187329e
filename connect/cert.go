package connect

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net/url"
	"strings"
)

// GenerateKey returns a new ECDSA P-256 private key, the only key type the
// mesh uses.
func GenerateKey() (*ecdsa.PrivateKey, error) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate ECDSA P-256 key: %w", err)
	}
	return k, nil
}

// EncodeKey returns a private key as PEM ("EC PRIVATE KEY" for ECDSA keys,
// "PRIVATE KEY" (PKCS #8) otherwise).
func EncodeKey(k crypto.Signer) (string, error) {
	if ec, ok := k.(*ecdsa.PrivateKey); ok {
		der, err := x509.MarshalECPrivateKey(ec)
		if err != nil {
			return "", fmt.Errorf("encode private key: %w", err)
		}
		return string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der})), nil
	}
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return "", fmt.Errorf("encode private key: %w", err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})), nil
}

// ErrNotPEM means a value that should hold PEM holds none.
var ErrNotPEM = errors.New("no PEM block found")

// ParseSigner parses a PEM private key (EC, PKCS #1 or PKCS #8).
func ParseSigner(s string) (crypto.Signer, error) {
	block, _ := pem.Decode([]byte(strings.TrimSpace(s)))
	if block == nil {
		return nil, fmt.Errorf("parse private key: %w", ErrNotPEM)
	}
	switch block.Type {
	case "EC PRIVATE KEY":
		k, err := x509.ParseECPrivateKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parse EC private key: %w", err)
		}
		return k, nil
	case "RSA PRIVATE KEY":
		k, err := x509.ParsePKCS1PrivateKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parse RSA private key: %w", err)
		}
		return k, nil
	case "PRIVATE KEY":
		k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parse PKCS #8 private key: %w", err)
		}
		signer, ok := k.(crypto.Signer)
		if !ok {
			return nil, fmt.Errorf("parse PKCS #8 private key: %T cannot sign", k)
		}
		return signer, nil
	}
	return nil, fmt.Errorf("parse private key: PEM block of type %q is not a private key", block.Type)
}

// ValidateSigningKey checks that k is an ECDSA P-256 key, the only kind the
// built-in CA signs with.
func ValidateSigningKey(k crypto.Signer) error {
	ec, ok := k.Public().(*ecdsa.PublicKey)
	if !ok || ec == nil {
		return fmt.Errorf("key of type %T: want ECDSA P-256", k.Public())
	}
	if ec.Curve == nil {
		return errors.New("ECDSA key without a curve: want P-256")
	}
	if ec.Curve != elliptic.P256() {
		return fmt.Errorf("ECDSA key on curve %s: want P-256", ec.Curve.Params().Name)
	}
	return nil
}

// EncodeCert returns a DER certificate as PEM.
func EncodeCert(der []byte) string {
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
}

// ParseCert parses the first certificate of a PEM string.
func ParseCert(s string) (*x509.Certificate, error) {
	certs, err := ParseCerts(s)
	if err != nil {
		return nil, err
	}
	return certs[0], nil
}

// ParseCerts parses every certificate of a PEM string, in order; it fails
// on none or on a block that is not a certificate.
func ParseCerts(s string) ([]*x509.Certificate, error) {
	rest := []byte(strings.TrimSpace(s))
	var out []*x509.Certificate
	for len(rest) > 0 {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("parse certificate: PEM block of type %q is not a certificate", block.Type)
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parse certificate: %w", err)
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("parse certificate: %w", ErrNotPEM)
	}
	return out, nil
}

// CreateCSR returns a PEM certificate request for id's leaf, signed by key:
// the SPIFFE ID as its one URI SAN, the service name as common name.
func CreateCSR(id ServiceID, key crypto.Signer) (string, error) {
	uri, err := id.URI()
	if err != nil {
		return "", fmt.Errorf("create CSR: %w", err)
	}
	tmpl := &x509.CertificateRequest{
		Subject:            pkix.Name{CommonName: id.Service},
		SignatureAlgorithm: x509.ECDSAWithSHA256,
		URIs:               []*url.URL{uri},
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		return "", fmt.Errorf("create CSR for %s: %w", id, err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})), nil
}

// ParseCSR parses a PEM certificate request and checks its signature.
func ParseCSR(s string) (*x509.CertificateRequest, error) {
	block, _ := pem.Decode([]byte(strings.TrimSpace(s)))
	if block == nil {
		return nil, fmt.Errorf("parse CSR: %w", ErrNotPEM)
	}
	if block.Type != "CERTIFICATE REQUEST" {
		return nil, fmt.Errorf("parse CSR: PEM block of type %q is not a certificate request", block.Type)
	}
	csr, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("parse CSR: %w", err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("CSR signature: %w", err)
	}
	return csr, nil
}

// KeyID returns the subject key ID of a public key: the first 20 bytes of
// the SHA-256 of its PKIX encoding.
func KeyID(pub crypto.PublicKey) ([]byte, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("key ID: %w", err)
	}
	sum := sha256.Sum256(der)
	return sum[:20], nil
}

// HexString returns b as lower-case hex pairs joined by colons, the form
// Consul shows key IDs and fingerprints in.
func HexString(b []byte) string {
	const digits = "0123456789abcdef"
	var sb strings.Builder
	for i, x := range b {
		if i > 0 {
			sb.WriteByte(':')
		}
		sb.WriteByte(digits[x>>4])
		sb.WriteByte(digits[x&0xf])
	}
	return sb.String()
}

// Fingerprint returns the SHA-256 fingerprint of a certificate in colon hex.
func Fingerprint(c *x509.Certificate) string {
	sum := sha256.Sum256(c.Raw)
	return HexString(sum[:])
}

// RandomSerial returns a random positive 128-bit certificate serial number.
func RandomSerial() (*big.Int, error) {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("serial number: %w", err)
	}
	return n.Add(n, big.NewInt(1)), nil
}
