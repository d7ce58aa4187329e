// Package tlsutil builds the TLS configurations of the cluster's own
// traffic (Raft and the internal RPC between agents) from the files of the
// tls { defaults { ... } } block, and makes the CA and certificates that
// `trellis tls ca create` and `trellis tls cert create` write.
//
// Servers present a certificate for server.<dc>.<domain>; agents dialing a
// server check that name, so a client certificate cannot pose as a server
// and a server of another datacenter is refused. With verify_incoming a
// server requires a certificate signed by the CA from every connection.
package tlsutil

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"sync"

	"github.com/hashicorp/go-hclog"
)

// DefaultDomain is the domain of certificate names.
const DefaultDomain = "trellis"

// Config names the files and the checks.
type Config struct {
	CAFile, CertFile, KeyFile string
	// VerifyIncoming: servers require and verify client certificates.
	VerifyIncoming bool
	// VerifyOutgoing: agents verify the server's certificate and name.
	VerifyOutgoing bool
	// Datacenter and Domain make the server name: server.<dc>.<domain>.
	Datacenter, Domain string
}

// ServerName is the name a server's certificate must hold.
func (c Config) ServerName() string {
	d := c.Domain
	if d == "" {
		d = DefaultDomain
	}
	return "server." + c.Datacenter + "." + d
}

// Configurator holds the loaded certificates; it is safe for concurrent use.
type Configurator struct {
	cfg    Config
	logger hclog.Logger

	mu   sync.RWMutex
	cert *tls.Certificate // guarded by mu
	pool *x509.CertPool   // guarded by mu
}

// NewConfigurator loads the files of cfg. Errors name the config key.
func NewConfigurator(cfg Config, logger hclog.Logger) (*Configurator, error) {
	if logger == nil {
		logger = hclog.NewNullLogger()
	}
	c := &Configurator{cfg: cfg, logger: logger.Named("tls")}
	if err := c.Reload(); err != nil {
		return nil, err
	}
	return c, nil
}

// Reload reads the files again (after a rotation).
func (c *Configurator) Reload() error {
	if c.cfg.CAFile == "" || c.cfg.CertFile == "" || c.cfg.KeyFile == "" {
		return errors.New("tls.defaults: ca_file, cert_file and key_file are all required")
	}
	caPEM, err := os.ReadFile(c.cfg.CAFile)
	if err != nil {
		return fmt.Errorf("tls.defaults.ca_file: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return fmt.Errorf("tls.defaults.ca_file: %s holds no PEM certificate", c.cfg.CAFile)
	}
	if fi, err := os.Stat(c.cfg.KeyFile); err == nil && fi.Mode().Perm()&0o077 != 0 {
		c.logger.Warn("the TLS key file is readable by others; it should be mode 0600", "file", c.cfg.KeyFile, "mode", fi.Mode().Perm())
	}
	cert, err := tls.LoadX509KeyPair(c.cfg.CertFile, c.cfg.KeyFile)
	if err != nil {
		return fmt.Errorf("tls.defaults.cert_file and key_file (%s, %s): %w", c.cfg.CertFile, c.cfg.KeyFile, err)
	}
	leaf, err := x509.ParseCertificate(cert.Certificate[0])
	if err != nil {
		return fmt.Errorf("tls.defaults.cert_file: %w", err)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		return fmt.Errorf("tls.defaults.cert_file %s is not signed by the CA of ca_file %s: %w", c.cfg.CertFile, c.cfg.CAFile, err)
	}
	cert.Leaf = leaf
	c.mu.Lock()
	c.cert, c.pool = &cert, pool
	c.mu.Unlock()
	return nil
}

func (c *Configurator) current() (*tls.Certificate, *x509.CertPool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.cert, c.pool
}

// IncomingConfig is the server side: it shows this agent's certificate and,
// with VerifyIncoming, requires a client certificate signed by the CA.
func (c *Configurator) IncomingConfig() *tls.Config {
	cfg := &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			cert, _ := c.current()
			return cert, nil
		},
	}
	_, pool := c.current()
	cfg.ClientCAs = pool
	if c.cfg.VerifyIncoming {
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
	} else {
		cfg.ClientAuth = tls.VerifyClientCertIfGiven
	}
	return cfg
}

// OutgoingConfig is the client side for dialing a server: it presents this
// agent's certificate and, with VerifyOutgoing, checks the server's against
// the CA and the name server.<dc>.<domain>.
func (c *Configurator) OutgoingConfig() *tls.Config {
	_, pool := c.current()
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		RootCAs:    pool,
		ServerName: c.cfg.ServerName(),
		// Without verify_outgoing the connection is encrypted but the
		// server is not checked (as Consul does).
		InsecureSkipVerify: !c.cfg.VerifyOutgoing,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			cert, _ := c.current()
			return cert, nil
		},
	}
}
