package proxy

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
)

// The benchmarks stand up a proxy pair in the process (app -> upstream
// listener -> mTLS HTTP/2 tunnel -> public listener -> server) and measure
// each thing both through the mesh and on a direct TCP connection to the
// same server:
//
//	go test -run XXX -bench . -benchtime 2s ./connect/proxy/

// benchPair is a pair of proxies in front of server, with logs off.
func benchPair(b *testing.B, server *appServer) (mesh, direct string) {
	b.Helper()
	c := newTestCA(b, "bench-root")
	bd := bundle(b, c)
	quiet := hclog.NewNullLogger()
	srv := startProxy(b, Config{ProxyID: proxyID(b, "db"), Service: "db", LocalAppAddr: server.addr(),
		Certs: newTestCerts(c.leaf("db", leafOpts{}), bd), Logger: quiet})
	cli := startProxy(b, Config{ProxyID: proxyID(b, "web"), Service: "web", Logger: quiet,
		Certs: newTestCerts(c.leaf("web", leafOpts{}), bd), Upstreams: []UpstreamConfig{{DestinationName: "db"}}})
	cli.SetInstances("db", []Instance{{Addr: srv.PublicAddr().String()}})
	// Warm the pool: the first connection pays the tunnel's handshake.
	conn, err := net.Dial("tcp", cli.UpstreamAddr("db").String())
	if err != nil {
		b.Fatal(err)
	}
	conn.Write([]byte{0})
	conn.Read(make([]byte, 1))
	conn.Close()
	return cli.UpstreamAddr("db").String(), server.addr()
}

// paths runs f against the direct address, then through the mesh.
func paths(b *testing.B, server func(net.Conn), f func(b *testing.B, addr string)) {
	srv := newAppServer(b, server)
	mesh, direct := benchPair(b, srv)
	b.Run("direct", func(b *testing.B) { f(b, direct) })
	b.Run("mesh", func(b *testing.B) { f(b, mesh) })
}

// sinkServer reads and discards until EOF, then writes the count of bytes
// it read (8 bytes, big endian).
func sinkServer(c net.Conn) {
	bp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bp)
	var n int64
	for {
		m, err := c.Read(*bp)
		n += int64(m)
		if err != nil {
			break
		}
	}
	binary.Write(c, binary.BigEndian, n)
}

// sourceServer reads an 8-byte count, then writes that many bytes.
func sourceServer(c net.Conn) {
	var n int64
	if err := binary.Read(c, binary.BigEndian, &n); err != nil {
		return
	}
	bp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bp)
	for n > 0 {
		m := min(n, int64(len(*bp)))
		if _, err := c.Write((*bp)[:m]); err != nil {
			return
		}
		n -= m
	}
}

const benchChunk = 1 << 20

// BenchmarkThroughputUpload is one TCP stream from the client application
// to the server: MB/s.
func BenchmarkThroughputUpload(b *testing.B) {
	paths(b, sinkServer, func(b *testing.B, addr string) {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		buf := make([]byte, benchChunk)
		b.SetBytes(benchChunk)
		b.ResetTimer()
		for range b.N {
			if _, err := c.Write(buf); err != nil {
				b.Fatal(err)
			}
		}
		c.(*net.TCPConn).CloseWrite()
		var n int64
		if err := binary.Read(c, binary.BigEndian, &n); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		if want := int64(b.N) * benchChunk; n != want {
			b.Fatalf("server read %d bytes, want %d", n, want)
		}
	})
}

// BenchmarkThroughputDownload is one TCP stream from the server to the
// client application: MB/s.
func BenchmarkThroughputDownload(b *testing.B) {
	paths(b, sourceServer, func(b *testing.B, addr string) {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		buf := make([]byte, 256<<10)
		b.SetBytes(benchChunk)
		b.ResetTimer()
		want := int64(b.N) * benchChunk
		binary.Write(c, binary.BigEndian, want)
		var n int64
		for n < want {
			m, err := c.Read(buf)
			n += int64(m)
			if err != nil {
				b.Fatalf("read after %d of %d bytes: %v", n, want, err)
			}
		}
	})
}

// reportLatencies reports the median and 99th percentile of ds in µs.
func reportLatencies(b *testing.B, ds []time.Duration, what string) {
	if len(ds) == 0 {
		return
	}
	slices.Sort(ds)
	q := func(f float64) float64 { return float64(ds[int(f*float64(len(ds)-1))]) / 1e3 }
	b.ReportMetric(q(0.5), "p50-µs/"+what)
	b.ReportMetric(q(0.99), "p99-µs/"+what)
}

// BenchmarkNewConnection is the cost of a new application connection: dial,
// one byte there and back, close.
func BenchmarkNewConnection(b *testing.B) {
	paths(b, echo, func(b *testing.B, addr string) {
		ds := make([]time.Duration, 0, b.N)
		one := []byte{1}
		got := make([]byte, 1)
		b.ResetTimer()
		for range b.N {
			start := time.Now()
			c, err := net.Dial("tcp", addr)
			if err != nil {
				b.Fatal(err)
			}
			if _, err := c.Write(one); err != nil {
				b.Fatal(err)
			}
			if _, err := io.ReadFull(c, got); err != nil {
				b.Fatal(err)
			}
			ds = append(ds, time.Since(start))
			c.Close()
		}
		b.StopTimer()
		reportLatencies(b, ds, "conn")
	})
}

// httpLikeServer answers each request line with a small response, like an
// HTTP/1.1 keep-alive server.
func httpLikeServer(c net.Conn) {
	r := bufio.NewReader(c)
	resp := []byte("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
	for {
		if _, err := r.ReadSlice('\n'); err != nil {
			return
		}
		if _, err := c.Write(resp); err != nil {
			return
		}
	}
}

var benchRequest = []byte("GET /ping HTTP/1.1 Host: db\n")

const benchResponseLen = len("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

// BenchmarkRequestLatency is the round trip of a small request and response
// on a kept-alive connection, one at a time.
func BenchmarkRequestLatency(b *testing.B) {
	paths(b, httpLikeServer, func(b *testing.B, addr string) {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		got := make([]byte, benchResponseLen)
		ds := make([]time.Duration, 0, b.N)
		b.ResetTimer()
		for range b.N {
			start := time.Now()
			if _, err := c.Write(benchRequest); err != nil {
				b.Fatal(err)
			}
			if _, err := io.ReadFull(c, got); err != nil {
				b.Fatal(err)
			}
			ds = append(ds, time.Since(start))
		}
		b.StopTimer()
		reportLatencies(b, ds, "req")
	})
}

// BenchmarkRequestsParallel is the request rate of 16 kept-alive
// connections sending requests as fast as answers come.
func BenchmarkRequestsParallel(b *testing.B) {
	paths(b, httpLikeServer, func(b *testing.B, addr string) {
		const conns = 16
		var cs []net.Conn
		for range conns {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			cs = append(cs, c)
		}
		var wg sync.WaitGroup
		errs := make(chan error, conns)
		b.ResetTimer()
		start := time.Now()
		for i, c := range cs {
			n := b.N / conns
			if i < b.N%conns {
				n++
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				got := make([]byte, benchResponseLen)
				for range n {
					if _, err := c.Write(benchRequest); err != nil {
						errs <- err
						return
					}
					if _, err := io.ReadFull(c, got); err != nil {
						errs <- err
						return
					}
				}
			}()
		}
		wg.Wait()
		b.StopTimer()
		close(errs)
		for err := range errs {
			b.Fatal(err)
		}
		b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "req/s")
	})
}

// BenchmarkMemory100Proxies starts 100 proxies (each with a public listener
// and one upstream leading to the next, in a ring), sends one connection
// through each, and reports the memory they hold while idle.
func BenchmarkMemory100Proxies(b *testing.B) {
	for range b.N {
		b.StopTimer()
		runtime.GC()
		debug.FreeOSMemory()
		var before runtime.MemStats
		runtime.ReadMemStats(&before)
		rssBefore := rss(b)
		g0 := runtime.NumGoroutine()
		b.StartTimer()

		const n = 100
		app := newEchoServer(b)
		c := newTestCA(b, "mem-root")
		bd := bundle(b, c)
		quiet := hclog.NewNullLogger()
		ps := make([]*Proxy, n)
		for i := range ps {
			name := fmt.Sprintf("svc%d", i)
			ps[i] = startProxy(b, Config{ProxyID: proxyID(b, name), Service: name, LocalAppAddr: app.addr(), Logger: quiet,
				Certs:     newTestCerts(c.leaf(name, leafOpts{}), bd),
				Upstreams: []UpstreamConfig{{DestinationName: fmt.Sprintf("svc%d", (i+1)%n)}}})
		}
		idleGoroutines := runtime.NumGoroutine() - g0
		for i, p := range ps {
			next := ps[(i+1)%n]
			p.SetInstances(next.cfg.Service, []Instance{{Addr: next.PublicAddr().String()}})
		}
		for i, p := range ps {
			conn, err := net.Dial("tcp", p.UpstreamAddr(fmt.Sprintf("svc%d", (i+1)%n)).String())
			if err != nil {
				b.Fatal(err)
			}
			if err := roundTrip(conn, bytes.Repeat([]byte("x"), 100<<10)); err != nil {
				b.Fatal(err)
			}
			conn.Close()
		}
		b.StopTimer()
		runtime.GC()
		var after runtime.MemStats
		runtime.ReadMemStats(&after)
		b.ReportMetric(float64(after.HeapInuse-before.HeapInuse)/(1<<20), "heap-MB")
		b.ReportMetric(float64(rss(b)-rssBefore)/(1<<20), "rss-delta-MB")
		b.ReportMetric(float64(idleGoroutines)/n, "goroutines/idle-proxy")
		b.ReportMetric(float64(runtime.NumGoroutine()-g0), "goroutines-after-traffic")
		for _, p := range ps {
			p.Close()
		}
	}
}

// rss returns the resident set size of the process, from /proc.
func rss(b *testing.B) int64 {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		b.Skip("no /proc/self/status:", err)
	}
	for line := range strings.SplitSeq(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10
		}
	}
	return 0
}
