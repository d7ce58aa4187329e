package dns

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"

	"github.com/miekg/dns"
	"go.uber.org/goleak"

	"github.com/trellismesh/trellis/internal/authz"
	"github.com/trellismesh/trellis/internal/testutil"
	"github.com/trellismesh/trellis/raftstore/structs"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fixedSource is an in-test catalog: our own seam, filled with fixed records.
type fixedSource struct {
	services map[string][]structs.CheckServiceNode
	nodes    map[string]*structs.Node
	fail     bool
}

func (f *fixedSource) ServiceNodes(_ context.Context, name, tag string) ([]structs.CheckServiceNode, error) {
	if f.fail {
		return nil, errors.New("catalog unavailable")
	}
	var out []structs.CheckServiceNode
	for _, in := range f.services[strings.ToLower(name)] {
		if tag == "" || containsFold(in.Service.Tags, tag) {
			out = append(out, in)
		}
	}
	return out, nil
}

func containsFold(tags []string, t string) bool {
	for _, x := range tags {
		if strings.EqualFold(x, t) {
			return true
		}
	}
	return false
}

func (f *fixedSource) Node(_ context.Context, name string) (*structs.Node, error) {
	return f.nodes[strings.ToLower(name)], nil
}

func instance(node, addr, svcAddr string, port int, status string, tags ...string) structs.CheckServiceNode {
	n := &structs.Node{Node: node, Address: addr}
	in := structs.CheckServiceNode{Node: n, Service: &structs.NodeService{ID: "web-" + node, Service: "web", Address: svcAddr, Port: port, Tags: tags}}
	if status != "" {
		in.Checks = structs.HealthChecks{{CheckID: "c", Status: status}}
	}
	return in
}

func startDNS(t *testing.T, src Source, mutate ...func(*Config)) (udp, tcp string) {
	t.Helper()
	cfg := DefaultConfig()
	cfg.Addrs = []string{"127.0.0.1:0"}
	cfg.Logger = testutil.Logger(t)
	for _, m := range mutate {
		m(&cfg)
	}
	s, err := New(cfg, src)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Shutdown() })
	u, tc := s.Addrs()
	return u[0].String(), tc[0].String()
}

func query(t *testing.T, addr, net, name string, qtype uint16, edns uint16) *dns.Msg {
	t.Helper()
	c := &dns.Client{Net: net}
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	if edns > 0 {
		m.SetEdns0(edns, false)
	}
	r, _, err := c.Exchange(m, addr)
	if err != nil {
		t.Fatalf("query %s %s over %s: %v", name, dns.TypeToString[qtype], net, err)
	}
	return r
}

func testSource() *fixedSource {
	return &fixedSource{
		services: map[string][]structs.CheckServiceNode{
			"web": {
				instance("n1", "10.0.0.1", "", 8080, structs.HealthPassing, "v1"),
				instance("n2", "10.0.0.2", "10.1.1.2", 8081, "", "v2"),
				instance("n3", "10.0.0.3", "", 8082, structs.HealthCritical, "v1"),
				instance("n4", "fd00::4", "", 8083, structs.HealthWarning),
				instance("n5", "fd00::5", "", 8084, structs.HealthPassing, "v2"),
			},
			"down": {instance("n3", "10.0.0.3", "", 1, structs.HealthCritical)},
		},
		nodes: map[string]*structs.Node{"n1": {Node: "n1", Address: "10.0.0.1"}, "n5": {Node: "n5", Address: "fd00::5"}},
	}
}

func answers(m *dns.Msg) []string {
	var out []string
	for _, rr := range m.Answer {
		switch r := rr.(type) {
		case *dns.A:
			out = append(out, r.A.String())
		case *dns.AAAA:
			out = append(out, r.AAAA.String())
		case *dns.SRV:
			out = append(out, fmt.Sprintf("%s:%d", r.Target, r.Port))
		default:
			out = append(out, rr.String())
		}
	}
	return out
}

func sameSet(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	seen := map[string]int{}
	for _, x := range a {
		seen[x]++
	}
	for _, x := range b {
		seen[x]--
	}
	for _, v := range seen {
		if v != 0 {
			return false
		}
	}
	return true
}

func TestDNS_Names(t *testing.T) {
	t.Parallel()
	_, tcp := startDNS(t, testSource(), func(c *Config) { c.UDPAnswerLimit = 0 })
	cases := []struct {
		name  string
		qtype uint16
		want  []string
		rcode int
	}{
		{"web.service.trellis.", dns.TypeA, []string{"10.0.0.1", "10.1.1.2"}, dns.RcodeSuccess},
		{"WEB.Service.Trellis.", dns.TypeA, []string{"10.0.0.1", "10.1.1.2"}, dns.RcodeSuccess},
		{"web.service.dc1.trellis.", dns.TypeAAAA, []string{"fd00::5"}, dns.RcodeSuccess},
		{"web.service.trellis.", dns.TypeANY, []string{"10.0.0.1", "10.1.1.2", "fd00::5"}, dns.RcodeSuccess},
		{"v1.web.service.trellis.", dns.TypeA, []string{"10.0.0.1"}, dns.RcodeSuccess},
		{"_web._v2.service.trellis.", dns.TypeA, []string{"10.1.1.2"}, dns.RcodeSuccess},
		{"_web._tcp.service.trellis.", dns.TypeA, []string{"10.0.0.1", "10.1.1.2"}, dns.RcodeSuccess},
		{"web.service.trellis.", dns.TypeSRV, []string{"n1.node.dc1.trellis.:8080", "0a010102.addr.dc1.trellis.:8081", "n5.node.dc1.trellis.:8084"}, dns.RcodeSuccess},
		{"n1.node.trellis.", dns.TypeA, []string{"10.0.0.1"}, dns.RcodeSuccess},
		{"n5.node.dc1.trellis.", dns.TypeAAAA, []string{"fd00::5"}, dns.RcodeSuccess},
		{"0a010102.addr.dc1.trellis.", dns.TypeA, []string{"10.1.1.2"}, dns.RcodeSuccess},
		{"down.service.trellis.", dns.TypeA, nil, dns.RcodeNameError},
		{"nope.service.trellis.", dns.TypeA, nil, dns.RcodeNameError},
		{"nope.node.trellis.", dns.TypeA, nil, dns.RcodeNameError},
		{"web.service.dc2.trellis.", dns.TypeA, nil, dns.RcodeNameError},
		{"web.weird.trellis.", dns.TypeA, nil, dns.RcodeNameError},
		{"service.trellis.", dns.TypeA, nil, dns.RcodeNameError},
		{"example.com.", dns.TypeA, nil, dns.RcodeRefused},
		{"web.service.trellis.", dns.TypeTXT, nil, dns.RcodeSuccess},
	}
	for _, tc := range cases {
		r := query(t, tcp, "tcp", tc.name, tc.qtype, 0)
		if r.Rcode != tc.rcode || !sameSet(answers(r), tc.want) {
			t.Errorf("%s %s: rcode %s answers %v, want %s %v", tc.name, dns.TypeToString[tc.qtype], dns.RcodeToString[r.Rcode], answers(r), dns.RcodeToString[tc.rcode], tc.want)
		}
		if tc.rcode == dns.RcodeNameError && (len(r.Ns) != 1 || r.Ns[0].Header().Rrtype != dns.TypeSOA) {
			t.Errorf("%s: NXDOMAIN without SOA in authority: %v", tc.name, r.Ns)
		}
		if tc.rcode == dns.RcodeSuccess && !r.Authoritative {
			t.Errorf("%s: answer not authoritative", tc.name)
		}
	}
	// SRV answers carry the targets' addresses.
	r := query(t, tcp, "tcp", "web.service.trellis.", dns.TypeSRV, 0)
	var extra []string
	for _, rr := range r.Extra {
		extra = append(extra, rr.Header().Name)
	}
	if len(r.Extra) != 3 {
		t.Errorf("SRV additional section = %v", extra)
	}
	// The apex.
	if r := query(t, tcp, "tcp", "trellis.", dns.TypeSOA, 0); len(r.Answer) != 1 {
		t.Errorf("SOA query = %v", r.Answer)
	}
	if r := query(t, tcp, "tcp", "trellis.", dns.TypeNS, 0); len(r.Answer) != 1 {
		t.Errorf("NS query = %v", r.Answer)
	}
}

func TestDNS_UDPTruncation(t *testing.T) {
	t.Parallel()
	src := &fixedSource{services: map[string][]structs.CheckServiceNode{}}
	for i := range 60 {
		src.services["big"] = append(src.services["big"], instance(fmt.Sprintf("node-with-a-long-name-%02d", i), fmt.Sprintf("10.0.1.%d", i+1), "", 9000+i, structs.HealthPassing))
	}
	udp, tcp := startDNS(t, src, func(c *Config) { c.UDPAnswerLimit = 0 })
	r := query(t, udp, "udp", "big.service.trellis.", dns.TypeSRV, 0)
	if !r.Truncated || len(r.Answer) >= 60 {
		t.Errorf("UDP SRV of 60 instances: truncated %v with %d answers", r.Truncated, len(r.Answer))
	}
	r.Compress = true // as sent
	if r.Len() > dns.MinMsgSize {
		t.Errorf("UDP answer of %d bytes exceeds 512", r.Len())
	}
	r = query(t, udp, "udp", "big.service.trellis.", dns.TypeA, 4096)
	if r.Truncated || len(r.Answer) != 60 {
		t.Errorf("UDP A with EDNS0 4096: truncated %v, %d answers; want all 60", r.Truncated, len(r.Answer))
	}
	r = query(t, tcp, "tcp", "big.service.trellis.", dns.TypeSRV, 0)
	if r.Truncated || len(r.Answer) != 60 {
		t.Errorf("TCP SRV: truncated %v, %d answers; want all 60", r.Truncated, len(r.Answer))
	}

	// The answer limit trims UDP answers (shuffled), not TCP ones.
	udp2, tcp2 := startDNS(t, src)
	if r := query(t, udp2, "udp", "big.service.trellis.", dns.TypeA, 0); len(r.Answer) != 3 {
		t.Errorf("UDP with limit 3: %d answers", len(r.Answer))
	}
	if r := query(t, tcp2, "tcp", "big.service.trellis.", dns.TypeA, 0); len(r.Answer) != 60 {
		t.Errorf("TCP with limit 3: %d answers", len(r.Answer))
	}
}

func TestDNS_SourceFailure(t *testing.T) {
	t.Parallel()
	_, tcp := startDNS(t, &fixedSource{fail: true})
	if r := query(t, tcp, "tcp", "web.service.trellis.", dns.TypeA, 0); r.Rcode != dns.RcodeServerFailure {
		t.Errorf("rcode = %s, want SERVFAIL", dns.RcodeToString[r.Rcode])
	}
}

func TestDNS_MalformedQueries(t *testing.T) {
	t.Parallel()
	udp, tcp := startDNS(t, testSource())
	conn, err := net.Dial("udp", udp)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	for _, junk := range [][]byte{{}, {0}, {1, 2, 3}, []byte(strings.Repeat("\xff", 600))} {
		_, _ = conn.Write(junk)
	}
	// Two questions: FORMERR. The server is still up afterwards.
	m := new(dns.Msg)
	m.SetQuestion("web.service.trellis.", dns.TypeA)
	m.Question = append(m.Question, m.Question[0])
	r, _, err := (&dns.Client{Net: "tcp"}).Exchange(m, tcp)
	if err != nil || r.Rcode != dns.RcodeFormatError {
		t.Errorf("two questions: %v, %v", r, err)
	}
	if r := query(t, udp, "udp", "n1.node.trellis.", dns.TypeA, 0); len(r.Answer) != 1 {
		t.Errorf("after junk: %v", r)
	}
}

func TestNew_BadConfig(t *testing.T) {
	t.Parallel()
	if _, err := New(Config{Domain: "bad..domain"}, testSource()); err == nil {
		t.Error("bad domain accepted")
	}
	if _, err := New(Config{UDPAnswerLimit: -1}, testSource()); err == nil {
		t.Error("negative limit accepted")
	}
}

// FuzzHandler feeds arbitrary bytes as DNS messages to the handler.
func FuzzHandler(f *testing.F) {
	for _, q := range []string{"web.service.trellis.", "_web._tcp.service.dc1.trellis.", "n1.node.trellis.", "0a010102.addr.trellis.", "x."} {
		m := new(dns.Msg)
		m.SetQuestion(q, dns.TypeSRV)
		m.SetEdns0(1232, false)
		b, _ := m.Pack()
		f.Add(b)
	}
	s, err := New(DefaultConfig(), testSource())
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		req := new(dns.Msg)
		if err := req.Unpack(data); err != nil {
			return
		}
		w := &recorder{}
		s.serve(w, req, true)
		if w.msg == nil {
			t.Fatal("no answer written")
		}
	})
}

// recorder is a dns.ResponseWriter that keeps the answer.
type recorder struct {
	dns.ResponseWriter
	msg *dns.Msg
}

func (r *recorder) WriteMsg(m *dns.Msg) error { r.msg = m; return nil }
func (r *recorder) LocalAddr() net.Addr       { return &net.UDPAddr{} }
func (r *recorder) RemoteAddr() net.Addr      { return &net.UDPAddr{} }

// onlyWeb allows service:read web and nothing else.
type onlyWeb struct{}

func (onlyWeb) Authorize(_ context.Context, req authz.Request) error {
	if req.Resource == authz.Service && req.Name == "web" && req.Access == authz.Read {
		return nil
	}
	return authz.Denied(req)
}

// Every lookup asks the Authorizer; a refusal is REFUSED, not an answer.
func TestDNS_Authorizer(t *testing.T) {
	t.Parallel()
	_, tcp := startDNS(t, testSource(), func(c *Config) { c.Authorizer = onlyWeb{} })
	if r := query(t, tcp, "tcp", "web.service.trellis.", dns.TypeA, 0); r.Rcode != dns.RcodeSuccess || len(r.Answer) == 0 {
		t.Errorf("web.service: rcode %s, %d answers", dns.RcodeToString[r.Rcode], len(r.Answer))
	}
	for _, name := range []string{"down.service.trellis.", "n1.node.trellis."} {
		if r := query(t, tcp, "tcp", name, dns.TypeA, 0); r.Rcode != dns.RcodeRefused || len(r.Answer) != 0 {
			t.Errorf("%s: rcode %s, %d answers; want REFUSED", name, dns.RcodeToString[r.Rcode], len(r.Answer))
		}
	}
}
