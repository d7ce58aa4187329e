package bench

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"strconv"
	"testing"
	"time"

	"github.com/trellismesh/trellis/internal/retry"
	"github.com/trellismesh/trellis/internal/testutil"
)

// BenchmarkRelayBaseline measures what the simplest proxies cost on this
// machine, to read BenchmarkMesh's and BenchmarkMeshL7's figures against: the
// same fortio runs and stream as theirs, direct and through two relays in a
// row (each its own process), as the mesh's path goes through two agents:
//
//	direct:  fortio ─────────────────────────────► fortio server
//	relayed: fortio ─► relay ─► relay ─► fortio server
//
// The relays do no TLS, no routing, no authorization and no metrics:
//
//	go-tcp   the test binary as a TCP relay: a goroutine per direction doing
//	         io.Copy (which the Go runtime turns into splice(2) on Linux)
//	socat    socat with fork, nodelay (C; a process per connection; skipped
//	         when socat is not installed: make bench installs it)
//	go-http  the test binary as an HTTP/1.1 reverse proxy, net/http's
//	         httputil.ReverseProxy with keep-alive to the next hop
//
// Sub-benchmarks: qps=1000 and qps=max (16 connections, keep-alive, as in
// BenchmarkMesh) for each, and tcp-stream for the TCP relays. The metrics
// have BenchmarkMesh's names, so benchstat can set them side by side; there
// "mesh" is the relayed path and "agents" are the relays (with the children
// socat forks, once they have ended; socat's system-call and sleep counts
// are its parent's only).
func BenchmarkRelayBaseline(b *testing.B) {
	fortio := fortioBinary(b)
	repeats := envInt(b, repeatsEnv, meshRepeats)
	dur := envDuration(b, durationEnv, loadDuration)
	app := startFortioServer(b, fortio)
	sink := startSink(b)
	appAddr := "127.0.0.1:" + strconv.Itoa(app.port)
	sinkAddr := "127.0.0.1:" + strconv.Itoa(sink.port)
	others := []int{app.cmd.Process.Pid, sink.cmd.Process.Pid, os.Getpid()}

	for _, kind := range []struct {
		name  string
		tcp   bool // carries the stream too
		start func(tb testing.TB, target string) *child
	}{
		{"go-tcp", true, func(tb testing.TB, target string) *child { return startHelper(tb, "tcp-relay", target) }},
		{"socat", true, startSocat},
		{"go-http", false, func(tb testing.TB, target string) *child { return startHelper(tb, "http-proxy", target) }},
	} {
		b.Run(kind.name, func(b *testing.B) {
			if kind.name == "socat" {
				if _, err := exec.LookPath("socat"); err != nil {
					b.Skip("socat is not installed (make bench installs it)")
				}
			}
			m := &mesh{directURL: "http://" + appAddr + "/", sinkAddr: sinkAddr, others: others}
			front, relays := relayChain(b, kind.start, appAddr)
			m.agents = append(m.agents, relays...)
			relayURL := "http://" + front + "/"
			waitHTTP200(b, relayURL, 30*time.Second)
			if kind.tcp {
				front, relays := relayChain(b, kind.start, sinkAddr)
				m.agents = append(m.agents, relays...)
				m.sinkUpstream = front
				retry.RunWith(&retry.Timer{Timeout: 30 * time.Second, Wait: 50 * time.Millisecond}, b, func(r *retry.R) {
					if err := pushBytes(front, 1); err != nil {
						r.Fatalf("through the relays to the sink: %v", err)
					}
				})
			}
			b.Run("qps=1000", func(b *testing.B) {
				comparePaths(b, m, fortio, relayURL, 1000, false, repeats, dur)
			})
			b.Run("qps=max", func(b *testing.B) {
				comparePaths(b, m, fortio, relayURL, 0, false, repeats, dur)
			})
			if kind.tcp {
				b.Run("tcp-stream", func(b *testing.B) {
					compareStreams(b, m, repeats)
				})
			}
		})
	}
}

// relayChain starts two relays in a row to target and returns the first's
// address and both, as the processes whose CPU is counted.
func relayChain(tb testing.TB, start func(testing.TB, string) *child, target string) (front string, relays []*proc) {
	tb.Helper()
	second := start(tb, target)
	first := start(tb, "127.0.0.1:"+strconv.Itoa(second.port))
	for i, c := range []*child{first, second} {
		relays = append(relays, &proc{name: fmt.Sprintf("relay%d", i+1), cmd: c.cmd})
	}
	return "127.0.0.1:" + strconv.Itoa(first.port), relays
}

// startSocat runs socat as a relay from a free loopback port to target.
func startSocat(tb testing.TB, target string) *child {
	tb.Helper()
	port := testutil.FreePorts(tb, 1)[0]
	c := startChild(tb, exec.Command("socat",
		fmt.Sprintf("TCP-LISTEN:%d,bind=127.0.0.1,fork,reuseaddr,nodelay", port), "TCP:"+target+",nodelay"))
	c.port = port
	retry.RunWith(&retry.Timer{Timeout: 10 * time.Second, Wait: 20 * time.Millisecond}, tb, func(r *retry.R) {
		if !listeningPorts(r)[port] {
			r.Fatalf("socat is not listening on %d yet", port)
		}
	})
	return c
}

// listenHelper opens a helper's listener on a free loopback port, prints
// its address for startHelper, and exits the process when stdin closes
// (the benchmark process has gone).
func listenHelper() (net.Listener, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	fmt.Println(ln.Addr().String())
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		os.Exit(0)
	}()
	return ln, nil
}

// runTCPRelay is the tcp-relay helper: each connection it accepts is
// joined to a new one to target, a goroutine copying each way; a side that
// ends its writes has the other's writes ended too (half close).
func runTCPRelay(target string) int {
	return serveHelper(func(c net.Conn) {
		d, err := net.Dial("tcp", target)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return
		}
		defer d.Close()
		done := make(chan struct{})
		go func() {
			defer close(done)
			_, _ = io.Copy(d, c)
			_ = d.(*net.TCPConn).CloseWrite()
		}()
		_, _ = io.Copy(c, d)
		_ = c.(*net.TCPConn).CloseWrite()
		<-done
	})
}

// serveHelper runs a helper's listener (listenHelper), handling each
// connection in a goroutine of its own, which closes it when handle
// returns. It returns the exit code once accepting fails.
func serveHelper(handle func(net.Conn)) int {
	ln, err := listenHelper()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	for {
		c, err := ln.Accept()
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		go func() {
			defer c.Close()
			handle(c)
		}()
	}
}

// runHTTPProxy is the http-proxy helper: net/http's reverse proxy to
// target, with enough idle connections kept for the benchmark's 16.
func runHTTPProxy(target string) int {
	ln, err := listenHelper()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	p := httputil.NewSingleHostReverseProxy(&url.URL{Scheme: "http", Host: target})
	p.Transport = &http.Transport{MaxIdleConnsPerHost: 4 * loadConns, DisableCompression: true}
	fmt.Fprintln(os.Stderr, http.Serve(ln, p))
	return 1
}
