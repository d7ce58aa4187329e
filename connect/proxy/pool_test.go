package proxy

import (
	"context"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/trellismesh/trellis/internal/testutil"
)

// deadlineCounter is a context that counts the calls of its Deadline
// method: deriving a context with a timeout or a deadline from it calls it.
type deadlineCounter struct {
	context.Context
	n atomic.Int64
}

func (c *deadlineCounter) Deadline() (time.Time, bool) {
	c.n.Add(1)
	return c.Context.Deadline()
}

// tcpPair returns both ends of a TCP connection on 127.0.0.1, closed at
// cleanup.
func tcpPair(t *testing.T) (net.Conn, net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := testutil.AcceptOne(ln)
	a, err := net.DialTimeout("tcp", ln.Addr().String(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	b, ok := <-accepted
	if !ok {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { b.Close() })
	a.SetDeadline(time.Now().Add(10 * time.Second))
	b.SetDeadline(time.Now().Add(10 * time.Second))
	return a, b
}

// An application connection that rides on an open pooled tunnel derives no
// timeout from the proxy's context: a connect timeout bounds the dial of a
// tunnel, and there is none to bound.
func TestUpstream_reusedTunnelDerivesNoTimeout(t *testing.T) {
	t.Parallel()
	pr := newPair(t, nil)
	u := pr.client.upstreams["db"]
	ep := u.pick(nil)
	if ep == nil {
		t.Fatal("no instance of db")
	}
	// conn forwards one application connection as serve does, with a
	// chain's connect timeout, and ends it.
	conn := func(ctx context.Context) {
		t.Helper()
		app, peer := tcpPair(t)
		out := newOutbound(app, u.bytesSent)
		out.received = u.bytesReceived
		st, err := u.open(ctx, ep, out, time.Minute)
		if err != nil {
			t.Fatalf("open a stream to db: %v", err)
		}
		st.setApp(app)
		if err := roundTrip(peer, []byte("ping")); err != nil {
			t.Fatal(err)
		}
		peer.Close()
		select {
		case <-st.done:
		case <-time.After(10 * time.Second):
			t.Fatal("the stream did not end after the application closed")
		}
		out.wait()
		app.Close()
	}

	dialing := &deadlineCounter{Context: pr.client.ctx}
	conn(dialing)
	if dialing.n.Load() == 0 {
		t.Fatal("the dial of the tunnel derived no timeout from the context; the test cannot tell")
	}
	reusing := &deadlineCounter{Context: pr.client.ctx}
	conn(reusing)
	if n := len(pr.client.pool.all()); n != 1 {
		t.Fatalf("%d tunnels to db, want the first one reused", n)
	}
	if n := reusing.n.Load(); n != 0 {
		t.Errorf("a connection on a pooled tunnel derived a timeout from the context (%d calls of Deadline)", n)
	}
}
