package proxy

import (
	"bytes"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/trellismesh/trellis/connect"
	"github.com/trellismesh/trellis/connect/proxy/rawsock"
	"github.com/trellismesh/trellis/internal/retry"
)

// countingConn counts the writes made to a connection. It is no
// syscall.Conn, so rawsock leaves it as it is and every write the tunnel
// makes is one call here.
type countingConn struct {
	net.Conn
	writes atomic.Int64
}

func (c *countingConn) Write(p []byte) (int, error) {
	c.writes.Add(1)
	return c.Conn.Write(p)
}

// tunnelPair is a client tunnel and the server tunnel it reached, over
// mutual TLS on 127.0.0.1, with the writes of each side counted.
type tunnelPair struct {
	client, server       *tunnel
	clientRaw, serverRaw *countingConn
}

// newTunnelPair connects a pair; serve serves the server's accepted
// streams, whose answers wait up to answerDelay for company. It returns once the prefaces have been exchanged and
// acknowledged, so that no write is left to come but the test's.
func newTunnelPair(t *testing.T, answerDelay time.Duration, serve func(s *stream)) *tunnelPair {
	t.Helper()
	ca := newTestCA(t, "root-1")
	b := bundle(t, ca)
	clientCerts := newTestCerts(ca.leaf("web", leafOpts{}), b)
	serverCerts := newTestCerts(ca.leaf("db", leafOpts{}), b)

	craw, sraw := tcpPair(t)
	craw.SetDeadline(time.Time{})
	sraw.SetDeadline(time.Time{})
	pr := &tunnelPair{clientRaw: &countingConn{Conn: craw}, serverRaw: &countingConn{Conn: sraw}}
	cb, sb := newBatchConn(pr.clientRaw), newBatchConn(pr.serverRaw)
	ctc := tls.Client(cb, connect.ClientTLSConfig(clientCerts, connect.ExpectService("db"), connect.ALPNTunnel))
	stc := tls.Server(sb, newServerTLS(serverCerts))
	herr := make(chan error, 1)
	go func() { herr <- stc.Handshake() }()
	if err := ctc.Handshake(); err != nil {
		t.Fatalf("client handshake: %v", err)
	}
	if err := <-herr; err != nil {
		t.Fatalf("server handshake: %v", err)
	}

	var err error
	var wg sync.WaitGroup
	spawn := func(f func()) bool {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f()
		}()
		return true
	}
	cw, sw := pr.clientRaw.writes.Load(), pr.serverRaw.writes.Load()
	pr.server, err = newTunnel(true, stc, sb, "web", tunnelHooks{
		spawn:  spawn,
		accept: func(*stream, string) (int, string) { return 0, "" },
		serve:  serve,
		closed: func(*tunnel) {},
	})
	if err != nil {
		t.Fatal(err)
	}
	pr.server.answerDelay = answerDelay
	pr.client, err = newTunnel(false, ctc, cb, "db", tunnelHooks{spawn: spawn, closed: func(*tunnel) {}})
	if err != nil {
		t.Fatal(err)
	}
	spawn(pr.server.run)
	spawn(pr.client.run)
	t.Cleanup(func() {
		pr.client.close(nil)
		pr.server.close(nil)
		craw.Close()
		sraw.Close()
		wg.Wait()
	})
	// Each side writes its preface, then acknowledges the other's
	// settings: two writes each.
	retry.RunWith(&retry.Timer{Timeout: 10 * time.Second, Wait: time.Millisecond}, t, func(r *retry.R) {
		c, s := pr.clientRaw.writes.Load()-cw, pr.serverRaw.writes.Load()-sw
		if c < 2 || s < 2 {
			r.Fatalf("prefaces not yet acknowledged: client wrote %d times, server %d", c, s)
		}
	})
	if c, s := pr.clientRaw.writes.Load()-cw, pr.serverRaw.writes.Load()-sw; c != 2 || s != 2 {
		t.Fatalf("the prefaces took %d writes of the client and %d of the server; want 2 each", c, s)
	}
	return pr
}

// A request and its response cost one tunnel write each way: the client's
// first bytes leave with the CONNECT, and the destination's answer leaves
// with the application's first bytes. (Before, each was a write of its own,
// and a wake-up of the other side.)
func TestTunnel_connectAndAnswerTravelWithTheFirstBytes(t *testing.T) {
	t.Parallel()
	// The destination's application, and the end the test plays it from.
	destApp, destPeer := tcpPair(t)
	served := make(chan *stream, 1)
	// The answer waits for the application.
	pr := newTunnelPair(t, time.Minute, func(s *stream) {
		served <- s
		s.accepted(destApp)
		pump(s, destApp, &counter{})
	})

	cw := pr.clientRaw.writes.Load()
	st, sent, err := pr.client.open("db", nil, []byte("ping"))
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	if sent != 4 {
		t.Errorf("open sent %d of the 4 first bytes", sent)
	}
	if n := pr.clientRaw.writes.Load() - cw; n != 1 {
		t.Errorf("the CONNECT and its first bytes took %d writes; want 1", n)
	}
	<-served
	destPeer.SetDeadline(time.Now().Add(10 * time.Second))
	got := make([]byte, 4)
	if _, err := io.ReadFull(destPeer, got); err != nil || string(got) != "ping" {
		t.Fatalf("the destination's application read %q, %v; want ping", got, err)
	}

	sw := pr.serverRaw.writes.Load()
	if _, err := destPeer.Write([]byte("pong")); err != nil {
		t.Fatal(err)
	}
	waitAnswer200(t, st)
	srcApp, srcPeer := tcpPair(t)
	st.setApp(srcApp)
	srcPeer.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(srcPeer, got); err != nil || string(got) != "pong" {
		t.Fatalf("the source's application read %q, %v; want pong", got, err)
	}
	if n := pr.serverRaw.writes.Load() - sw; n != 1 {
		t.Errorf("the answer and the first response bytes took %d writes; want 1", n)
	}
}

// An application that answers and ends its direction (a server that
// closes after its response) costs the destination one tunnel write: its
// bytes and END_STREAM go in one frame, with the answer, and the source's
// application reads both at once. (Before, the end was a write of its own,
// and a wake-up of the source.)
func TestTunnel_lastBytesAndTheEndTravelTogether(t *testing.T) {
	t.Parallel()
	destApp, destPeer := tcpPair(t)
	// The application has answered and closed its side before the stream
	// is served, so that the pump's first read finds both.
	if _, err := destPeer.Write([]byte("pong")); err != nil {
		t.Fatal(err)
	}
	if err := destPeer.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	pr := newTunnelPair(t, time.Minute, serveApp(rawsock.Wrap(destApp)))
	sw := pr.serverRaw.writes.Load()
	st, _, err := pr.client.open("db", nil, []byte("ping"))
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	waitAnswer200(t, st)
	srcApp, srcPeer := tcpPair(t)
	segs := segmentsOut(t, srcApp)
	st.setApp(srcApp)
	srcPeer.SetDeadline(time.Now().Add(10 * time.Second))
	got, err := io.ReadAll(srcPeer)
	if err != nil || string(got) != "pong" {
		t.Fatalf("the source's application read %q, %v; want pong and the end", got, err)
	}
	if n := pr.serverRaw.writes.Load() - sw; n != 1 {
		t.Errorf("the answer, the response and its end took %d writes of the destination; want 1", n)
	}
	if n := segmentsOut(t, srcApp) - segs; n != 1 {
		t.Errorf("the response and its end reached the source's application in %d TCP segments; want 1", n)
	}
}

// When a stream's first bytes do not all fit the flow-control window,
// open sends what fits with the CONNECT and reports it; the rest is the
// caller's to send.
func TestTunnel_openSendsWhatTheWindowTakes(t *testing.T) {
	t.Parallel()
	destApp, destPeer := tcpPair(t)
	pr := newTunnelPair(t, answerDelay, serveApp(destApp))
	first := bytes.Repeat([]byte("x"), 2*maxFrameSize) // more than a frame takes
	st, sent, err := pr.client.open("db", nil, first)
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	if sent <= 0 || sent >= len(first) {
		t.Fatalf("open sent %d of %d bytes; want one frame's worth", sent, len(first))
	}
	buf := make([]byte, frameHeaderLen+len(first)-sent)
	copy(buf[frameHeaderLen:], first[sent:])
	if err := st.send(buf, false); err != nil {
		t.Fatalf("send the rest: %v", err)
	}
	destPeer.SetDeadline(time.Now().Add(10 * time.Second))
	got := make([]byte, len(first))
	if _, err := io.ReadFull(destPeer, got); err != nil || !bytes.Equal(got, first) {
		t.Fatalf("the application read %d bytes (%v), not the %d sent", len(got), err, len(first))
	}
}

// An application that never speaks still gets all its client's bytes:
// the answer goes alone after a moment, and the client, which stops at
// maxEarly without one, goes on.
func TestUpstream_silentApplicationIsAnswered(t *testing.T) {
	t.Parallel()
	received := make(chan int64, 1)
	app := newAppServer(t, func(c net.Conn) {
		n, _ := io.Copy(io.Discard, c)
		received <- n
	})
	pr := newPair(t, app)
	c := dialUpstream(t, pr.client, "db")
	payload := bytes.Repeat([]byte("s"), 4*maxEarly)
	if _, err := c.Write(payload); err != nil {
		t.Fatalf("write %d bytes to a silent application: %v", len(payload), err)
	}
	c.(*net.TCPConn).CloseWrite()
	select {
	case n := <-received:
		if n != int64(len(payload)) {
			t.Fatalf("the application read %d bytes; want %d", n, len(payload))
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the application did not get all the bytes within 10 s")
	}
}

// An application that reads a request and resets the connection, without
// a byte of answer, has seen the request: the client must not replay it on
// another instance. The owed answer goes ahead of the reset.
func TestUpstream_resetAfterTheRequestIsNotRetried(t *testing.T) {
	t.Parallel()
	reset := func(c net.Conn) {
		buf := make([]byte, 3)
		if _, err := io.ReadFull(c, buf); err != nil {
			return
		}
		c.(*net.TCPConn).SetLinger(0)
		c.Close()
	}
	first := newAppServer(t, reset)
	second := newAppServer(t, reset)
	pr := newPair(t, first)
	other := startProxy(t, Config{ProxyID: proxyID(t, "db-2"), Service: "db", LocalAppAddr: second.addr(),
		Certs: pr.serverCerts, Authorizer: pr.authz})
	for _, p := range []*Proxy{pr.server, other} {
		p.answerDelay.Store(int64(time.Minute)) // only the reset can carry the answer
	}
	pr.client.SetInstances("db", []Instance{
		{Node: "one", Addr: pr.server.PublicAddr().String()},
		{Node: "two", Addr: other.PublicAddr().String()},
	})
	const conns = 10
	for i := range conns {
		c := dialUpstream(t, pr.client, "db")
		if _, err := c.Write([]byte("req")); err != nil {
			t.Fatalf("connection %d: write: %v", i, err)
		}
		if n, err := c.Read(make([]byte, 1)); err == nil {
			t.Fatalf("connection %d: read %d bytes from an application that sends none", i, n)
		}
		c.Close()
	}
	if n := first.count.Load() + second.count.Load(); n != conns {
		t.Fatalf("the applications saw %d connections for %d of the client's: requests were replayed", n, conns)
	}
}

// An application that reads a large upload before it says a word (a bulk
// load, a PUT) is not left waiting for its bytes: the client stops at
// maxEarly without an answer, so the destination answers once answerAfter
// bytes have reached the application, without waiting for answerDelay.
func TestUpstream_uploadIsNotHeldForItsAnswer(t *testing.T) {
	t.Parallel()
	app := newAppServer(t, func(c net.Conn) {
		n, _ := io.Copy(io.Discard, c)
		fmt.Fprintf(c, "%d", n)
	})
	pr := newPair(t, app)
	pr.server.answerDelay.Store(int64(time.Minute)) // only the bytes can press for the answer
	c := dialUpstream(t, pr.client, "db")
	payload := bytes.Repeat([]byte("u"), 16*maxEarly)
	if _, err := c.Write(payload); err != nil {
		t.Fatalf("upload %d bytes to an application that answers at the end: %v", len(payload), err)
	}
	c.(*net.TCPConn).CloseWrite()
	got, err := io.ReadAll(c)
	if err != nil || string(got) != strconv.Itoa(len(payload)) {
		t.Fatalf("the application answered %q (%v); want %d", got, err, len(payload))
	}
}

// The pressing counts what reached the application, one stream at a time:
// a stream under answerAfter keeps its answer for the application's first
// bytes, while one past it is answered alone.
func TestTunnel_answerGoesOnceTheClientPressesForIt(t *testing.T) {
	t.Parallel()
	type accepted struct {
		s    *stream
		peer net.Conn
	}
	served := make(chan accepted, 2)
	pr := newTunnelPair(t, time.Minute, func(s *stream) {
		app, peer := tcpPair(t)
		served <- accepted{s, peer}
		s.accepted(app)
		pump(s, app, &counter{})
	})
	open := func(first []byte) (*stream, net.Conn) {
		st, sent, err := pr.client.open("db", nil, first)
		if err != nil || sent != len(first) {
			t.Fatalf("open with %d bytes: sent %d, %v", len(first), sent, err)
		}
		a := <-served
		a.peer.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.ReadFull(a.peer, make([]byte, len(first))); err != nil {
			t.Fatalf("the application read: %v", err)
		}
		return st, a.peer
	}
	small, smallPeer := open([]byte("short"))
	big, _ := open(bytes.Repeat([]byte("b"), answerAfter))
	waitAnswer200(t, big)
	select {
	case a := <-small.answerCh:
		t.Fatalf("the stream under answerAfter was answered alone (%d, %v)", a.status, a.err)
	default:
	}
	// Its answer still comes with the application's first bytes.
	if _, err := smallPeer.Write([]byte("reply")); err != nil {
		t.Fatal(err)
	}
	waitAnswer200(t, small)
}

// A silent application's stream is answered alone after answerDelay.
func TestTunnel_silentApplicationIsAnsweredAfterTheDelay(t *testing.T) {
	t.Parallel()
	app, _ := tcpPair(t)
	pr := newTunnelPair(t, 20*time.Millisecond, serveApp(app))
	st, _, err := pr.client.open("db", nil, []byte("hello?"))
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	waitAnswer200(t, st)
}

// serveApp returns a serve function for newTunnelPair that accepts each
// stream to app and pumps app's bytes to it, as the public listener does.
func serveApp(app net.Conn) func(*stream) {
	return func(s *stream) {
		s.accepted(app)
		pump(s, app, &counter{})
	}
}

// waitAnswer200 waits for the destination's answer to st and fails the
// test unless it is 200.
func waitAnswer200(t *testing.T, st *stream) {
	t.Helper()
	select {
	case a := <-st.answerCh:
		if a.status != 200 || a.err != nil {
			t.Fatalf("answer %d, %v; want 200", a.status, a.err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no answer")
	}
}
