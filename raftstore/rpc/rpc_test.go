package rpc

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"net"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/trellismesh/trellis/agent/tlsutil"
	"github.com/trellismesh/trellis/internal/testutil"
	"github.com/trellismesh/trellis/raftstore/structs"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// serve listens on loopback and serves h on every connection that
// announces ProtoRPC, until the test ends.
func serve(t *testing.T, h Handler) string { return serveTLS(t, nil, h) }

// serveTLS is serve for connections that announce ProtoTLS, complete (or
// fail) a TLS handshake with cfg, then announce ProtoRPC inside; with a
// nil cfg it is plain serve.
func serveTLS(t *testing.T, cfg *tls.Config, h Handler) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				conn := c
				defer func() { conn.Close() }()
				var b [1]byte
				if cfg != nil {
					if _, err := c.Read(b[:]); err != nil || b[0] != ProtoTLS {
						return
					}
					tc := tls.Server(c, cfg)
					if tc.HandshakeContext(ctx) != nil {
						return
					}
					conn = tc
				}
				if _, err := conn.Read(b[:]); err != nil || b[0] != ProtoRPC {
					return
				}
				ServeConn(ctx, conn, h, func() string { return "leader:1" }, testutil.Logger(t))
			})
		}
	})
	t.Cleanup(func() {
		cancel()
		ln.Close()
		wg.Wait()
	})
	return ln.Addr().String()
}

type echoArgs struct {
	N     int
	Delay time.Duration
	Fail  bool
}

func echo(started chan<- struct{}, cancelled chan<- struct{}) Handler {
	return func(ctx context.Context, method string, body json.RawMessage) (any, error) {
		var a echoArgs
		if err := json.Unmarshal(body, &a); err != nil {
			return nil, err
		}
		if a.Fail {
			return nil, structs.ErrNotFound
		}
		if started != nil {
			started <- struct{}{}
		}
		select {
		case <-time.After(a.Delay):
		case <-ctx.Done():
			if cancelled != nil {
				cancelled <- struct{}{}
			}
			return nil, ctx.Err()
		}
		return a.N * 2, nil
	}
}

func TestRPC_ConcurrentCallsShareAConnection(t *testing.T) {
	t.Parallel()
	addr := serve(t, echo(nil, nil))
	c := NewClient(Dialer{}, nil)
	defer c.Close()
	var wg sync.WaitGroup
	errs := make(chan error, 50)
	for i := range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var out int
			// Slow calls first in flight do not hold back the fast ones.
			leader, err := c.CallLeader(t.Context(), addr, "Echo", echoArgs{N: i, Delay: time.Duration(50-i) * time.Millisecond}, &out)
			if err == nil && (out != i*2 || leader != "leader:1") {
				err = errors.New("wrong answer")
			}
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	c.mu.Lock()
	conns := len(c.conns)
	c.mu.Unlock()
	if conns != 1 {
		t.Errorf("%d connections for one server, want 1", conns)
	}
}

func TestRPC_RemoteErrorsKeepTheirSentinel(t *testing.T) {
	t.Parallel()
	addr := serve(t, echo(nil, nil))
	c := NewClient(Dialer{}, nil)
	defer c.Close()
	err := c.Call(t.Context(), addr, "Echo", echoArgs{Fail: true}, nil)
	if !errors.Is(err, structs.ErrNotFound) {
		t.Errorf("error %v does not unwrap to ErrNotFound", err)
	}
}

func TestRPC_CancelReachesTheServer(t *testing.T) {
	t.Parallel()
	started, cancelled := make(chan struct{}, 1), make(chan struct{}, 1)
	addr := serve(t, echo(started, cancelled))
	c := NewClient(Dialer{}, nil)
	defer c.Close()
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- c.Call(ctx, addr, "Echo", echoArgs{Delay: time.Hour}, nil) }()
	<-started
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled call = %v", err)
	}
	select {
	case <-cancelled:
	case <-time.After(5 * time.Second):
		t.Fatal("the server's request was not cancelled")
	}
}

func TestRPC_Unavailable(t *testing.T) {
	t.Parallel()
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := ln.Addr().String()
	ln.Close()
	c := NewClient(Dialer{Timeout: time.Second}, nil)
	defer c.Close()
	if err := c.Call(t.Context(), addr, "Echo", echoArgs{}, nil); !errors.Is(err, ErrUnavailable) || errors.Is(err, structs.ErrReplyLost) {
		t.Errorf("call to a closed port = %v, want ErrUnavailable alone (the request never left)", err)
	}
}

// A connection lost after the request was sent says that the request may
// have run: the caller must not send a write again on its own.
func TestRPC_ReplyLostAfterTheRequestWasSent(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	received := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			received <- err
			return
		}
		defer c.Close()
		var proto [1]byte
		var req request
		if _, err := c.Read(proto[:]); err != nil {
			received <- err
			return
		}
		// The whole request arrives; the server goes before it answers.
		received <- readFrame(c, &req)
	}()
	c := NewClient(Dialer{Timeout: time.Second}, nil)
	defer c.Close()
	err = c.Call(t.Context(), ln.Addr().String(), "Echo", echoArgs{N: 1}, nil)
	if rerr := <-received; rerr != nil {
		t.Fatalf("the server did not receive the request: %v", rerr)
	}
	if !errors.Is(err, ErrUnavailable) || !errors.Is(err, structs.ErrReplyLost) {
		t.Errorf("call whose connection was lost before the reply = %v, want ErrUnavailable and structs.ErrReplyLost", err)
	}
}

func TestFrame_TooLarge(t *testing.T) {
	t.Parallel()
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	go func() {
		// A header announcing more than MaxFrame.
		a.Write([]byte{0xff, 0xff, 0xff, 0xff})
	}()
	var r request
	if err := readFrame(b, &r); err == nil {
		t.Error("an oversized frame was accepted")
	}
}

// pki is a CA and one certificate from it, as a tls.Certificate and pool.
type pki struct {
	pool *x509.CertPool
	cert tls.Certificate
}

func newPKI(t *testing.T, server bool) pki {
	t.Helper()
	caPEM, caKey, err := tlsutil.GenerateCA(tlsutil.CAOptions{})
	if err != nil {
		t.Fatal(err)
	}
	certPEM, keyPEM, err := tlsutil.GenerateCert(tlsutil.CertOptions{CACert: caPEM, CAKey: caKey, Server: server})
	if err != nil {
		t.Fatal(err)
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	return pki{pool: pool, cert: cert}
}

// A server certificate this client does not trust is ErrTLSRefused. A
// client certificate the server refuses is refused too, and never served;
// under TLS 1.3 that refusal comes after the client's handshake, as an
// alert on the first read, or as a reset when the write comes first, so
// only an alert that arrives says ErrTLSRefused. A server that is merely
// gone is no refusal.
func TestRPC_TLSRefusals(t *testing.T) {
	t.Parallel()
	srv, cli, other := newPKI(t, true), newPKI(t, false), newPKI(t, false)
	served := make(chan struct{}, 8)
	addr := serveTLS(t, &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{srv.cert},
		ClientCAs: srv.pool, ClientAuth: tls.RequireAndVerifyClientCert}, echo(served, nil))
	// cli's CA is not the server's: the server's certificate is untrusted.
	untrusting := &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: cli.pool, ServerName: "server.dc1.trellis", Certificates: []tls.Certificate{cli.cert}}
	cl := NewClient(Dialer{TLS: untrusting, Timeout: 5 * time.Second}, nil)
	err := cl.Call(t.Context(), addr, "Echo", echoArgs{N: 1}, nil)
	cl.Close()
	if !errors.Is(err, ErrUnavailable) || !errors.Is(err, ErrTLSRefused) || errors.Is(err, structs.ErrReplyLost) {
		t.Errorf("the server's certificate refused: %v; want ErrUnavailable and ErrTLSRefused, not a lost reply", err)
	}
	// The server is trusted, but it does not trust the client's CA.
	untrusted := &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: srv.pool, ServerName: "server.dc1.trellis", Certificates: []tls.Certificate{other.cert}}
	cl = NewClient(Dialer{TLS: untrusted, Timeout: 5 * time.Second}, nil)
	err = cl.Call(t.Context(), addr, "Echo", echoArgs{N: 1}, nil)
	cl.Close()
	if !errors.Is(err, ErrUnavailable) || len(served) != 0 {
		t.Errorf("the client's certificate refused: %v (served %d); want ErrUnavailable, never served", err, len(served))
	}
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	gone := ln.Addr().String()
	ln.Close()
	cl = NewClient(Dialer{TLS: untrusting, Timeout: time.Second}, nil)
	defer cl.Close()
	if err := cl.Call(t.Context(), gone, "Echo", echoArgs{}, nil); errors.Is(err, ErrTLSRefused) {
		t.Errorf("a closed port: %v; want no TLS refusal", err)
	}
}
