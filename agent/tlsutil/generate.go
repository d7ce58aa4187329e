package tlsutil

import (
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
	"net"
	"time"
)

// CAOptions shape a new CA.
type CAOptions struct {
	// Domain is put in the CA's name and its name constraints (default trellis).
	Domain string
	// CommonName defaults to "Trellis Agent CA <serial>".
	CommonName string
	// Days of validity (default 1825).
	Days int
}

// GenerateCA makes a self-signed ECDSA P-256 CA; it returns the certificate
// and the key, PEM-encoded.
func GenerateCA(o CAOptions) (certPEM, keyPEM []byte, err error) {
	if o.Domain == "" {
		o.Domain = DefaultDomain
	}
	if o.Days <= 0 {
		o.Days = 1825
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	serial, err := serialNumber()
	if err != nil {
		return nil, nil, err
	}
	if o.CommonName == "" {
		o.CommonName = fmt.Sprintf("Trellis Agent CA %d", serial)
	}
	id, err := keyID(&key.PublicKey)
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: o.CommonName, Organization: []string{"Trellis"}},
		NotBefore:             time.Now().Add(-time.Minute),
		NotAfter:              time.Now().AddDate(0, 0, o.Days),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		SubjectKeyId:          id,
		AuthorityKeyId:        id,
		PermittedDNSDomains:   []string{o.Domain, "localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, fmt.Errorf("create CA certificate: %w", err)
	}
	return encode(der, key)
}

// CertOptions shape a new agent certificate.
type CertOptions struct {
	// CACert and CAKey are the PEM of the signing CA.
	CACert, CAKey []byte
	// Server makes a server certificate (server.<dc>.<domain>, usable as
	// server and client); otherwise a client one (client.<dc>.<domain>).
	Server bool
	// Datacenter (default dc1) and Domain (default trellis).
	Datacenter, Domain string
	// DNSNames and IPs are added to the certificate's names.
	DNSNames []string
	IPs      []net.IP
	// Days of validity (default 365).
	Days int
}

// GenerateCert makes an ECDSA P-256 certificate signed by the CA.
func GenerateCert(o CertOptions) (certPEM, keyPEM []byte, err error) {
	if o.Datacenter == "" {
		o.Datacenter = "dc1"
	}
	if o.Domain == "" {
		o.Domain = DefaultDomain
	}
	if o.Days <= 0 {
		o.Days = 365
	}
	caCert, caKey, err := parseCA(o.CACert, o.CAKey)
	if err != nil {
		return nil, nil, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	serial, err := serialNumber()
	if err != nil {
		return nil, nil, err
	}
	id, err := keyID(&key.PublicKey)
	if err != nil {
		return nil, nil, err
	}
	role := "client"
	usages := []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	names := []string{}
	ips := append([]net.IP(nil), o.IPs...)
	if o.Server {
		role = "server"
		usages = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
		names = append(names, "localhost")
		ips = append(ips, net.IPv4(127, 0, 0, 1))
	}
	name := fmt.Sprintf("%s.%s.%s", role, o.Datacenter, o.Domain)
	names = append([]string{name}, append(names, o.DNSNames...)...)
	tmpl := &x509.Certificate{
		SerialNumber:   serial,
		Subject:        pkix.Name{CommonName: name},
		DNSNames:       names,
		IPAddresses:    ips,
		NotBefore:      time.Now().Add(-time.Minute),
		NotAfter:       time.Now().AddDate(0, 0, o.Days),
		KeyUsage:       x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:    usages,
		SubjectKeyId:   id,
		AuthorityKeyId: caCert.SubjectKeyId,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
	if err != nil {
		return nil, nil, fmt.Errorf("create certificate: %w", err)
	}
	return encode(der, key)
}

func parseCA(certPEM, keyPEM []byte) (*x509.Certificate, any, error) {
	cb, _ := pem.Decode(certPEM)
	if cb == nil || cb.Type != "CERTIFICATE" {
		return nil, nil, errors.New("the CA file holds no PEM certificate")
	}
	cert, err := x509.ParseCertificate(cb.Bytes)
	if err != nil {
		return nil, nil, fmt.Errorf("CA certificate: %w", err)
	}
	if !cert.IsCA {
		return nil, nil, errors.New("the CA certificate is not a CA")
	}
	kb, _ := pem.Decode(keyPEM)
	if kb == nil {
		return nil, nil, errors.New("the CA key file holds no PEM key")
	}
	key, err := x509.ParseECPrivateKey(kb.Bytes)
	if err != nil {
		k, err2 := x509.ParsePKCS8PrivateKey(kb.Bytes)
		if err2 != nil {
			return nil, nil, fmt.Errorf("CA key: %w", err)
		}
		return cert, k, nil
	}
	return cert, key, nil
}

func encode(der []byte, key *ecdsa.PrivateKey) ([]byte, []byte, error) {
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), nil
}

func serialNumber() (*big.Int, error) {
	return rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
}

func keyID(pub *ecdsa.PublicKey) ([]byte, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(der)
	return sum[:20], nil
}
