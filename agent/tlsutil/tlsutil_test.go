package tlsutil

import (
	"crypto/tls"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

type pki struct{ caCert, caKey []byte }

func newPKI(t *testing.T) pki {
	t.Helper()
	c, k, err := GenerateCA(CAOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return pki{c, k}
}

// configurator writes a certificate of the PKI and loads it.
func (p pki) configurator(t *testing.T, server bool, dc string, trust []byte) *Configurator {
	t.Helper()
	cert, key, err := GenerateCert(CertOptions{CACert: p.caCert, CAKey: p.caKey, Server: server, Datacenter: dc})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	paths := map[string][]byte{"ca.pem": trust, "cert.pem": cert, "key.pem": key}
	for name, b := range paths {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	c, err := NewConfigurator(Config{
		CAFile: filepath.Join(dir, "ca.pem"), CertFile: filepath.Join(dir, "cert.pem"), KeyFile: filepath.Join(dir, "key.pem"),
		VerifyIncoming: true, VerifyOutgoing: true, Datacenter: "dc1",
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// handshake runs one TLS handshake over loopback and returns the client's
// state and each side's error.
func handshake(t *testing.T, server, client *Configurator) (tls.ConnectionState, error, error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	srvErr := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			srvErr <- err
			return
		}
		defer c.Close()
		tc := tls.Server(c, server.IncomingConfig())
		srvErr <- tc.Handshake()
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	tc := tls.Client(c, client.OutgoingConfig())
	cliErr := tc.Handshake()
	if cliErr != nil {
		c.Close() // unblock the server side
	}
	return tc.ConnectionState(), cliErr, <-srvErr
}

func TestConfigurator_MutualTLS(t *testing.T) {
	t.Parallel()
	p := newPKI(t)
	server := p.configurator(t, true, "dc1", p.caCert)
	client := p.configurator(t, false, "dc1", p.caCert)
	st, cerr, serr := handshake(t, server, client)
	if cerr != nil || serr != nil {
		t.Fatalf("handshake: client %v, server %v", cerr, serr)
	}
	if st.Version != tls.VersionTLS13 {
		t.Errorf("negotiated %x, want TLS 1.3", st.Version)
	}
}

func TestConfigurator_Refusals(t *testing.T) {
	t.Parallel()
	p, other := newPKI(t), newPKI(t)
	server := p.configurator(t, true, "dc1", p.caCert)
	cases := []struct {
		name   string
		server *Configurator
		client *Configurator
	}{
		// A client whose certificate comes from another CA (it trusts that CA).
		{"untrusted client", server, other.configurator(t, false, "dc1", other.caCert)},
		// A "server" holding a client certificate is not a server.
		{"client cert as server", p.configurator(t, false, "dc1", p.caCert), p.configurator(t, false, "dc1", p.caCert)},
		// A server of another datacenter.
		{"wrong datacenter", p.configurator(t, true, "dc2", p.caCert), p.configurator(t, false, "dc1", p.caCert)},
	}
	for _, tc := range cases {
		_, cerr, serr := handshake(t, tc.server, tc.client)
		if cerr == nil && serr == nil {
			t.Errorf("%s: handshake succeeded", tc.name)
		}
	}
}

func TestNewConfigurator_Errors(t *testing.T) {
	t.Parallel()
	p, other := newPKI(t), newPKI(t)
	dir := t.TempDir()
	cert, key, _ := GenerateCert(CertOptions{CACert: p.caCert, CAKey: p.caKey, Server: true})
	os.WriteFile(filepath.Join(dir, "ca.pem"), p.caCert, 0o600)
	os.WriteFile(filepath.Join(dir, "other-ca.pem"), other.caCert, 0o600)
	os.WriteFile(filepath.Join(dir, "cert.pem"), cert, 0o600)
	os.WriteFile(filepath.Join(dir, "key.pem"), key, 0o600)
	_, otherKey, _ := GenerateCert(CertOptions{CACert: p.caCert, CAKey: p.caKey, Server: true})
	os.WriteFile(filepath.Join(dir, "other-key.pem"), otherKey, 0o600)
	path := func(n string) string { return filepath.Join(dir, n) }
	for name, tc := range map[string]struct {
		cfg  Config
		want string
	}{
		"missing ca":      {Config{CAFile: path("nope.pem"), CertFile: path("cert.pem"), KeyFile: path("key.pem")}, "ca_file"},
		"key mismatch":    {Config{CAFile: path("ca.pem"), CertFile: path("cert.pem"), KeyFile: path("other-key.pem")}, "key_file"},
		"signed by other": {Config{CAFile: path("other-ca.pem"), CertFile: path("cert.pem"), KeyFile: path("key.pem")}, "not signed by the CA"},
		"incomplete":      {Config{CAFile: path("ca.pem")}, "all required"},
	} {
		if _, err := NewConfigurator(tc.cfg, nil); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error with %q", name, err, tc.want)
		}
	}
}
