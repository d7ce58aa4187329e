package proxy

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/trellismesh/trellis/internal/retry"
)

// A connection whose application stops reading holds up no other
// connection on the same tunnel: what it does not take is queued (within
// its flow-control window), and the others go on.
func TestTunnel_slowReaderDoesNotBlockOthers(t *testing.T) {
	t.Parallel()
	// The app answers "flood" with endless data, anything else by echo.
	var flooded atomic.Int64
	app := newAppServer(t, func(c net.Conn) {
		buf := make([]byte, 5)
		if _, err := io.ReadFull(c, buf); err != nil {
			return
		}
		if string(buf) == "flood" {
			chunk := bytes.Repeat([]byte("x"), 64<<10)
			for {
				n, err := c.Write(chunk)
				flooded.Add(int64(n))
				if err != nil {
					return
				}
			}
		}
		c.Write(buf)
		io.Copy(c, c)
	})
	pr := newPair(t, app)
	stuck := dialUpstream(t, pr.client, "db")
	if _, err := stuck.Write([]byte("flood")); err != nil {
		t.Fatal(err)
	}
	// Let the flood fill every buffer, the stream's queue and window
	// included, until it stalls: stuck reads none of it.
	var last int64 = -1
	retry.RunWith(&retry.Timer{Timeout: 20 * time.Second, Wait: 200 * time.Millisecond}, t, func(r *retry.R) {
		n := flooded.Load()
		if n < 1<<20 || n != last {
			last = n
			r.Fatalf("%d bytes flooded so far, still moving", n)
		}
	})
	other := dialUpstream(t, pr.client, "db")
	defer other.Close()
	for i := range 20 {
		if err := roundTrip(other, []byte("hello")); err != nil {
			t.Fatalf("round trip %d beside a stuck connection: %v", i, err)
		}
	}
	if n := len(pr.client.pool.all()); n != 1 {
		t.Errorf("%d tunnels, want both connections on one", n)
	}
	// The stuck one still gets its bytes once it reads.
	stuck.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 1<<20)
	if _, err := io.ReadFull(stuck, buf); err != nil {
		t.Fatalf("the stuck connection, reading at last: %v", err)
	}
	stuck.Close()
}

// Either side may half-close first; the other direction goes on.
func TestTunnel_halfCloseFromTheServer(t *testing.T) {
	t.Parallel()
	// The app sends a greeting and closes its write side, then reads
	// until EOF and answers with what it read.
	app := newAppServer(t, func(c net.Conn) {
		io.WriteString(c, "hello")
		c.(*net.TCPConn).CloseWrite()
		got, _ := io.ReadAll(c)
		c.Write(got) // after its CloseWrite: fails, and that is fine
	})
	pr := newPair(t, app)
	c := dialUpstream(t, pr.client, "db")
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	greeting, err := io.ReadAll(c)
	if err != nil || string(greeting) != "hello" {
		t.Fatalf("greeting %q, %v (want hello, then EOF)", greeting, err)
	}
	// Our direction is still open.
	if _, err := io.WriteString(c, "still sending"); err != nil {
		t.Fatalf("write after the server half-closed: %v", err)
	}
}

// An application's first bytes go out with the CONNECT; when the instance
// cannot take the connection (its application is down: 502), they are sent
// again to the next instance, and nothing is lost.
func TestUpstream_earlyDataReplayedOnTheNextInstance(t *testing.T) {
	t.Parallel()
	pr := newPair(t, nil)
	// A second instance of db whose application is down.
	broken := startProxy(t, Config{ProxyID: proxyID(t, "db-broken"), Service: "db", LocalAppAddr: deadAddr(t),
		Certs: pr.serverCerts, Authorizer: pr.authz})
	pr.client.SetInstances("db", []Instance{
		{Node: "broken", Addr: broken.PublicAddr().String()},
		{Node: "good", Addr: pr.server.PublicAddr().String()},
	})
	for i := range 20 {
		c := dialUpstream(t, pr.client, "db")
		msg := bytes.Repeat([]byte{byte('a' + i%26)}, 1000+i)
		if err := roundTrip(c, msg); err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
		c.Close()
	}
	if n := metricOf(pr.clientID, "upstream.dial_failures"); n == 0 {
		t.Error("no connection tried the broken instance first; the test proved nothing")
	}
}

// Many connections at full speed share a tunnel; when they close, new ones
// still work (streams are all cleaned up, windows all returned).
func TestTunnel_loadThenNewConnections(t *testing.T) {
	if testing.Short() {
		t.Skip("a few seconds of load")
	}
	t.Parallel()
	pr := newPair(t, nil)
	load := func(conns int, d time.Duration) {
		t.Helper()
		errs := make(chan error, conns)
		deadline := time.Now().Add(d)
		for range conns {
			go func() {
				c, err := net.DialTimeout("tcp", pr.client.UpstreamAddr("db").String(), 5*time.Second)
				if err != nil {
					errs <- err
					return
				}
				defer c.Close()
				msg := bytes.Repeat([]byte("r"), 120)
				buf := make([]byte, len(msg))
				for n := 0; time.Now().Before(deadline); n++ {
					c.SetDeadline(time.Now().Add(5 * time.Second))
					if _, err := c.Write(msg); err != nil {
						errs <- fmt.Errorf("write %d: %w", n, err)
						return
					}
					if _, err := io.ReadFull(c, buf); err != nil {
						errs <- fmt.Errorf("read %d: %w", n, err)
						return
					}
				}
				errs <- nil
			}()
		}
		for range conns {
			if err := <-errs; err != nil {
				t.Fatal(err)
			}
		}
	}
	load(16, 2*time.Second)
	load(16, 500*time.Millisecond)
	retry.Run(t, func(r *retry.R) {
		for _, ot := range pr.client.pool.all() {
			if n := ot.activeStreams(); n != 0 {
				r.Fatalf("%d streams left on a tunnel after every connection closed", n)
			}
		}
	})
}
