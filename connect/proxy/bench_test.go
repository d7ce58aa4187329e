package proxy

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
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
	// Every bench server ends a connection the client half-closed.
	conn, err := net.Dial("tcp", cli.UpstreamAddr("db").String())
	if err != nil {
		b.Fatal(err)
	}
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	conn.Write([]byte{0})
	conn.(*net.TCPConn).CloseWrite()
	io.Copy(io.Discard, conn)
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
	bp := chunkBufs.Get().(*[]byte)
	defer chunkBufs.Put(bp)
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
	bp := chunkBufs.Get().(*[]byte)
	defer chunkBufs.Put(bp)
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
		cpu := cpuTime()
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
		reportCPU(b, cpu, "MiB")
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
		cpu := cpuTime()
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
		b.StopTimer()
		reportCPU(b, cpu, "MiB")
	})
}

// cpuTime returns the user and system CPU time the process has used.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// reportCPU reports the CPU time the process spent per op since start
// (applications and proxies together: the proxies' cost is the difference
// between mesh and direct), which the load of other processes on the
// machine does not skew as it does wall time.
func reportCPU(b *testing.B, start time.Duration, unit string) {
	b.ReportMetric(float64(cpuTime()-start)/float64(b.N)/1e3, "cpu-µs/"+unit)
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
		cpu := cpuTime()
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
		reportCPU(b, cpu, "conn")
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
		cpu := cpuTime()
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
		reportCPU(b, cpu, "req")
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
		cpu := cpuTime()
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
		reportCPU(b, cpu, "req")
		close(errs)
		for err := range errs {
			b.Fatal(err)
		}
		b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "req/s")
	})
}

// BenchmarkMemory100Proxies starts 100 proxies as one agent would run them
// (each with a public listener and one upstream: 99 lead to svc0, svc0's
// to svc1), sends one small request and answer through every upstream, so
// that each proxy holds a pooled tunnel, and reports the memory and
// goroutines they hold once idle, idle-proxy figures first.
func BenchmarkMemory100Proxies(b *testing.B) {
	for range b.N {
		b.StopTimer()
		app := newAppServer(b, httpLikeServer)
		c := newTestCA(b, "mem-root")
		bd := bundle(b, c)
		quiet := hclog.NewNullLogger()
		const n = 100
		certs := make([]*testCerts, n)
		for i := range certs {
			certs[i] = newTestCerts(c.leaf(fmt.Sprintf("svc%d", i), leafOpts{}), bd)
		}
		runtime.GC()
		debug.FreeOSMemory()
		var before runtime.MemStats
		runtime.ReadMemStats(&before)
		rssBefore := rss(b)
		g0 := runtime.NumGoroutine()
		b.StartTimer()

		ps := make([]*Proxy, n)
		for i := range ps {
			up := "svc0"
			if i == 0 {
				up = "svc1"
			}
			ps[i] = startProxy(b, Config{ProxyID: proxyID(b, fmt.Sprintf("svc%d", i)), Service: fmt.Sprintf("svc%d", i),
				LocalAppAddr: app.addr(), Logger: quiet, Certs: certs[i],
				Upstreams: []UpstreamConfig{{DestinationName: up}}})
		}
		b.StopTimer()
		report := func(what string) {
			runtime.GC()
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			b.ReportMetric(float64(ms.HeapInuse-before.HeapInuse)/(1<<20)/n*1024, "heap-KiB/proxy-"+what)
			b.ReportMetric(float64(rss(b)-rssBefore)/(1<<20), "rss-delta-MB-"+what)
			b.ReportMetric(float64(runtime.NumGoroutine()-g0)/n, "goroutines/proxy-"+what)
		}
		report("idle")
		b.StartTimer()
		for _, p := range ps {
			for name := range p.upstreams {
				target := ps[0]
				if name == "svc1" {
					target = ps[1]
				}
				p.SetInstances(name, []Instance{{Addr: target.PublicAddr().String()}})
				conn, err := net.Dial("tcp", p.UpstreamAddr(name).String())
				if err != nil {
					b.Fatal(err)
				}
				conn.SetDeadline(time.Now().Add(10 * time.Second))
				if _, err := conn.Write(benchRequest); err != nil {
					b.Fatal(err)
				}
				if _, err := io.ReadFull(conn, make([]byte, benchResponseLen)); err != nil {
					b.Fatal(err)
				}
				conn.Close()
			}
		}
		b.StopTimer()
		report("active")
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

// BenchmarkHTTPParallel is the request rate of a net/http client over 16
// kept-alive connections to a net/http server (closer to what a load
// generator and a real service cost than the bare byte exchanges above).
func BenchmarkHTTPParallel(b *testing.B) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		io.WriteString(w, "ok")
	})}
	go srv.Serve(ln)
	defer srv.Close()
	app := &appServer{ln: ln}
	mesh, direct := benchPair(b, app)
	run := func(b *testing.B, addr string) {
		const conns = 16
		tr := &http.Transport{MaxIdleConnsPerHost: conns, MaxConnsPerHost: conns}
		defer tr.CloseIdleConnections()
		client := &http.Client{Transport: tr}
		url := "http://" + addr + "/ping"
		b.SetParallelism(conns / runtime.GOMAXPROCS(0))
		start := time.Now()
		b.ResetTimer()
		cpu := cpuTime()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				resp, err := client.Get(url)
				if err != nil {
					b.Error(err)
					return
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		})
		b.StopTimer()
		reportCPU(b, cpu, "req")
		b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "req/s")
	}
	b.Run("direct", func(b *testing.B) { run(b, direct) })
	b.Run("mesh", func(b *testing.B) { run(b, mesh) })
}

// BenchmarkRequestLatencyAt1000 is the round trip of small requests at
// 1,000 requests/s in all over 16 kept-alive connections (a paced load, as
// a load generator's -qps gives): p50 and p99.
func BenchmarkRequestLatencyAt1000(b *testing.B) {
	paths(b, httpLikeServer, func(b *testing.B, addr string) {
		const conns = 16
		const interval = conns * time.Second / 1000 // per connection
		perConn := max(b.N/conns, 1)
		lat := make([][]time.Duration, conns)
		var wg sync.WaitGroup
		errs := make(chan error, conns)
		b.ResetTimer()
		for i := range conns {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			wg.Add(1)
			go func() {
				defer wg.Done()
				got := make([]byte, benchResponseLen)
				// Spread the connections over the interval.
				next := time.Now().Add(time.Duration(i) * interval / conns)
				for range perConn {
					time.Sleep(time.Until(next)) // pacing the load, not waiting for a condition
					next = next.Add(interval)
					start := time.Now()
					if _, err := c.Write(benchRequest); err != nil {
						errs <- err
						return
					}
					if _, err := io.ReadFull(c, got); err != nil {
						errs <- err
						return
					}
					lat[i] = append(lat[i], time.Since(start))
				}
			}()
		}
		wg.Wait()
		b.StopTimer()
		close(errs)
		for err := range errs {
			b.Fatal(err)
		}
		reportLatencies(b, slices.Concat(lat...), "req")
	})
}
