package connect_test

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"net"
	"net/url"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/trellismesh/trellis/connect"
	"github.com/trellismesh/trellis/connect/ca"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const (
	testTD = "11111111-2222-3333-4444-555555555555.trellis"
	testDC = "dc1"
)

// staticSource is a CertSource with a fixed leaf and bundle.
type staticSource struct {
	cert   *tls.Certificate
	bundle *connect.Bundle
}

func (s staticSource) Certificate() *tls.Certificate { return s.cert }
func (s staticSource) Bundle() *connect.Bundle       { return s.bundle }

func newRoot(t *testing.T, td string, now time.Time) *ca.Root {
	t.Helper()
	r, err := ca.GenerateRoot(td, "Trellis CA "+td, now)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func bundleOf(t *testing.T, td string, roots ...*ca.Root) *connect.Bundle {
	t.Helper()
	var pems []string
	for _, r := range roots {
		pems = append(pems, r.CertPEM)
	}
	b, err := connect.NewBundle(td, roots[0].ID(), pems...)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// leafOpts says how to issue a test leaf.
type leafOpts struct {
	now           time.Time     // signing time; time.Now() when zero
	ttl           time.Duration // ca.DefaultLeafCertTTL when zero
	intermediates []string      // PEM, served after the leaf
}

// issue signs a leaf for id with root through the real path: a new key, a
// CSR, ParseCSR, SignLeaf, TLSCertificate.
func issue(t *testing.T, root *ca.Root, id connect.ServiceID, o leafOpts) *tls.Certificate {
	t.Helper()
	if o.now.IsZero() {
		o.now = time.Now()
	}
	key, err := connect.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	csrPEM, err := connect.CreateCSR(id, key)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := connect.ParseCSR(csrPEM)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := root.SignLeaf(csr, ca.LeafRequest{TrustDomain: id.TrustDomain, Datacenter: id.Datacenter, TTL: o.ttl, Now: o.now})
	if err != nil {
		t.Fatal(err)
	}
	return tlsCert(t, leaf.CertPEM+strings.Join(o.intermediates, ""), key)
}

// tlsCert pairs a PEM chain with its key through TLSCertificate.
func tlsCert(t *testing.T, certPEM string, key crypto.Signer) *tls.Certificate {
	t.Helper()
	keyPEM, err := connect.EncodeKey(key)
	if err != nil {
		t.Fatal(err)
	}
	c, err := connect.TLSCertificate(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// handshakeResult is what one side of a handshake saw.
type handshakeResult struct {
	state tls.ConnectionState
	err   error
	peer  connect.ServiceID // the server side: PeerIdentity after the handshake
}

// handshake runs one TLS connection over loopback between the two configs.
// The server answers "ok" after its handshake, so that the client learns of
// a refusal of its certificate (in TLS 1.3 the client's handshake ends
// before the server has checked it) by reading.
func handshake(t *testing.T, server, client *tls.Config) (cli, srv handshakeResult) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	srvCh := make(chan handshakeResult, 1)
	go func() {
		var r handshakeResult
		defer func() { srvCh <- r }()
		c, err := ln.Accept()
		if err != nil {
			r.err = err
			return
		}
		defer c.Close()
		deadline, _ := ctx.Deadline()
		_ = c.SetDeadline(deadline)
		tc := tls.Server(c, server)
		if r.err = tc.HandshakeContext(ctx); r.err != nil {
			return
		}
		r.state = tc.ConnectionState()
		if r.peer, r.err = connect.PeerIdentity(r.state); r.err != nil {
			return
		}
		_, r.err = tc.Write([]byte("ok"))
	}()

	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	deadline, _ := ctx.Deadline()
	_ = c.SetDeadline(deadline)
	tc := tls.Client(c, client)
	cli.err = tc.HandshakeContext(ctx)
	if cli.err == nil {
		cli.state = tc.ConnectionState()
		buf := make([]byte, 2)
		if _, err := io.ReadFull(tc, buf); err != nil {
			cli.err = err
		} else if string(buf) != "ok" {
			cli.err = errors.New("server said " + string(buf))
		}
	}
	c.Close() // unblock the server if the client gave up
	return cli, <-srvCh
}

func TestTLS_MutualHandshake(t *testing.T) {
	t.Parallel()
	root := newRoot(t, testTD, time.Now())
	bundle := bundleOf(t, testTD, root)
	webID := connect.NewServiceID(testTD, testDC, "web")
	dbID := connect.NewServiceID(testTD, "dc2", "db")
	server := connect.ServerTLSConfig(staticSource{issue(t, root, dbID, leafOpts{}), bundle}, connect.ALPNTunnel)
	client := connect.ClientTLSConfig(staticSource{issue(t, root, webID, leafOpts{}), bundle}, connect.ExpectService("DB"), connect.ALPNTunnel)

	cli, srv := handshake(t, server, client)
	if cli.err != nil || srv.err != nil {
		t.Fatalf("handshake: client %v, server %v", cli.err, srv.err)
	}
	for side, st := range map[string]tls.ConnectionState{"client": cli.state, "server": srv.state} {
		if st.Version != tls.VersionTLS13 {
			t.Errorf("%s: version %s, want TLS 1.3", side, tls.VersionName(st.Version))
		}
		if st.CurveID != tls.X25519MLKEM768 {
			t.Errorf("%s: key exchange %s, want X25519MLKEM768 (is the go line of go.mod current?)", side, st.CurveID)
		}
		if st.NegotiatedProtocol != connect.ALPNTunnel {
			t.Errorf("%s: ALPN %q, want %q", side, st.NegotiatedProtocol, connect.ALPNTunnel)
		}
	}
	if srv.peer != webID {
		t.Errorf("server: PeerIdentity got %v, want %v", srv.peer, webID)
	}
	got, err := connect.PeerIdentity(cli.state)
	if err != nil || got != dbID {
		t.Errorf("client: PeerIdentity got %v, %v, want %v", got, err, dbID)
	}
}

// foreignLeaf returns a leaf for another trust domain's service, signed by
// root directly (SignLeaf refuses to).
func foreignLeaf(t *testing.T, root *ca.Root, td string) *tls.Certificate {
	t.Helper()
	key, err := connect.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	u, err := connect.NewServiceID(td, testDC, "web").URI()
	if err != nil {
		t.Fatal(err)
	}
	serial, err := connect.RandomSerial()
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: "web"},
		URIs:         []*url.URL{u},
		NotBefore:    time.Now().Add(-time.Minute),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, root.Cert, key.Public(), root.Key)
	if err != nil {
		t.Fatal(err)
	}
	return tlsCert(t, connect.EncodeCert(der), key)
}

func TestTLS_Refusals(t *testing.T) {
	t.Parallel()
	now := time.Now()
	root := newRoot(t, testTD, now)
	other := newRoot(t, testTD, now) // same trust domain, another CA
	bundle := bundleOf(t, testTD, root)
	webID := connect.NewServiceID(testTD, testDC, "web")
	dbID := connect.NewServiceID(testTD, testDC, "db")
	good := func(id connect.ServiceID) *tls.Certificate { return issue(t, root, id, leafOpts{}) }
	expired := func(id connect.ServiceID) *tls.Certificate {
		return issue(t, root, id, leafOpts{now: now.Add(-2 * time.Hour), ttl: time.Hour})
	}

	tests := []struct {
		name       string
		serverCert *tls.Certificate
		serverRoot *connect.Bundle
		clientCert *tls.Certificate
		clientRoot *connect.Bundle
		expect     string      // service the client expects; "" for any
		plain      *tls.Config // a client config of its own instead of ClientTLSConfig
		wantSrv    error       // sentinel the server's error must match; nil: none
		wantCli    error       // sentinel the client's error must match; nil: none
		wantCliMsg string      // text the client's error must hold
	}{
		{name: "client from another CA", serverCert: good(dbID), serverRoot: bundle, clientCert: issue(t, other, webID, leafOpts{}), clientRoot: bundle, wantSrv: connect.ErrUntrusted},
		{name: "client leaf expired", serverCert: good(dbID), serverRoot: bundle, clientCert: expired(webID), clientRoot: bundle, wantSrv: connect.ErrUntrusted},
		{name: "client leaf not valid yet", serverCert: good(dbID), serverRoot: bundle, clientCert: issue(t, root, webID, leafOpts{now: now.Add(time.Hour)}), clientRoot: bundle, wantSrv: connect.ErrUntrusted},
		{name: "client of another trust domain", serverCert: good(dbID), serverRoot: bundle, clientCert: foreignLeaf(t, root, "other.trellis"), clientRoot: bundle, wantSrv: connect.ErrWrongTrustDomain},
		{name: "client without certificate", serverCert: good(dbID), serverRoot: bundle,
			plain: &tls.Config{MinVersion: tls.VersionTLS13, InsecureSkipVerify: true}, wantSrv: connect.ErrNoPeerCertificate},
		{name: "client with no leaf yet", serverCert: good(dbID), serverRoot: bundle, clientRoot: bundle, wantCli: connect.ErrNoCertificate},
		{name: "client speaks TLS 1.2", serverCert: good(dbID), serverRoot: bundle,
			plain: &tls.Config{MaxVersion: tls.VersionTLS12, InsecureSkipVerify: true, Certificates: []tls.Certificate{*good(webID)}}, wantCliMsg: "protocol version"},
		{name: "server is another service", serverCert: good(connect.NewServiceID(testTD, testDC, "api")), serverRoot: bundle, clientCert: good(webID), clientRoot: bundle, expect: "db", wantCliMsg: `want service "db"`},
		{name: "server from another CA", serverCert: issue(t, other, dbID, leafOpts{}), serverRoot: bundle, clientCert: good(webID), clientRoot: bundle, wantCli: connect.ErrUntrusted},
		{name: "server leaf expired", serverCert: expired(dbID), serverRoot: bundle, clientCert: good(webID), clientRoot: bundle, wantCli: connect.ErrUntrusted},
		{name: "server of another trust domain", serverCert: foreignLeaf(t, root, "other.trellis"), serverRoot: bundle, clientCert: good(webID), clientRoot: bundle, wantCli: connect.ErrWrongTrustDomain},
		{name: "server with no leaf yet", serverRoot: bundle, clientCert: good(webID), clientRoot: bundle, wantSrv: connect.ErrNoCertificate},
		{name: "server with no roots yet", serverCert: good(dbID), clientCert: good(webID), clientRoot: bundle, wantSrv: connect.ErrNoRoots},
		{name: "client with no roots yet", serverCert: good(dbID), serverRoot: bundle, clientCert: good(webID), wantCli: connect.ErrNoRoots},
	}
	for _, test := range tests {
		t.Run(test.name, func(t *testing.T) {
			t.Parallel()
			server := connect.ServerTLSConfig(staticSource{test.serverCert, test.serverRoot})
			client := test.plain
			if client == nil {
				var expect func(connect.ServiceID) error
				if test.expect != "" {
					expect = connect.ExpectService(test.expect)
				}
				client = connect.ClientTLSConfig(staticSource{test.clientCert, test.clientRoot}, expect)
			}
			cli, srv := handshake(t, server, client)
			if cli.err == nil || srv.err == nil {
				t.Fatalf("handshake succeeded on one side: client %v, server %v; want both to fail", cli.err, srv.err)
			}
			if test.wantSrv != nil && !errors.Is(srv.err, test.wantSrv) {
				t.Errorf("server error %v, want %v", srv.err, test.wantSrv)
			}
			if test.wantCli != nil && !errors.Is(cli.err, test.wantCli) {
				t.Errorf("client error %v, want %v", cli.err, test.wantCli)
			}
			if test.wantCliMsg != "" && !strings.Contains(cli.err.Error(), test.wantCliMsg) {
				t.Errorf("client error %q, want it to say %q", cli.err, test.wantCliMsg)
			}
		})
	}
}
