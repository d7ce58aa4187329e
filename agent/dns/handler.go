package dns

import (
	"context"
	"encoding/hex"
	"math/rand/v2"
	"net"
	"strings"
	"time"

	"github.com/hashicorp/go-metrics"
	"github.com/miekg/dns"

	"github.com/trellismesh/trellis/internal/authz"
	"github.com/trellismesh/trellis/raftstore/structs"
)

func (s *Server) serveUDP(w dns.ResponseWriter, r *dns.Msg) { s.serve(w, r, true) }
func (s *Server) serveTCP(w dns.ResponseWriter, r *dns.Msg) { s.serve(w, r, false) }

func (s *Server) serve(w dns.ResponseWriter, req *dns.Msg, udp bool) {
	start := time.Now()
	qtype := "none"
	defer func() {
		if p := recover(); p != nil {
			s.logger.Error("DNS handler panicked", "panic", p)
			m := new(dns.Msg)
			m.SetRcode(req, dns.RcodeServerFailure)
			_ = w.WriteMsg(m)
		}
		metrics.MeasureSinceWithLabels([]string{"trellis", "dns", "query"}, start, []metrics.Label{{Name: "type", Value: qtype}})
	}()
	m := new(dns.Msg)
	switch {
	case req.Opcode != dns.OpcodeQuery:
		m.SetRcode(req, dns.RcodeNotImplemented)
	case len(req.Question) != 1:
		m.SetRcode(req, dns.RcodeFormatError)
	default:
		q := req.Question[0]
		qtype = dns.TypeToString[q.Qtype]
		m.SetReply(req)
		m.Authoritative = true
		m.RecursionAvailable = false
		ctx, cancel := context.WithTimeout(context.Background(), s.cfg.LookupTimeout)
		s.answer(ctx, m, q)
		cancel()
	}
	m.Compress = true
	if opt := req.IsEdns0(); opt != nil {
		size := opt.UDPSize()
		if size < dns.MinMsgSize {
			size = dns.MinMsgSize
		}
		m.SetEdns0(size, false)
	}
	if udp {
		s.trimUDP(req, m)
	}
	if err := w.WriteMsg(m); err != nil {
		s.logger.Debug("write DNS answer", "error", err)
	}
}

// trimUDP applies the answer limit and the client's buffer size.
func (s *Server) trimUDP(req, m *dns.Msg) {
	if limit := s.cfg.UDPAnswerLimit; limit > 0 && len(m.Answer) > limit {
		m.Answer = m.Answer[:limit]
		m.Extra = keepExtraFor(m.Extra, m.Answer)
	}
	size := dns.MinMsgSize
	if opt := req.IsEdns0(); opt != nil && int(opt.UDPSize()) > size {
		size = int(opt.UDPSize())
	}
	m.Truncate(size)
}

// keepExtraFor keeps the additional records that serve answers (SRV
// targets), and the OPT record.
func keepExtraFor(extra, answers []dns.RR) []dns.RR {
	targets := map[string]bool{}
	for _, a := range answers {
		if srv, ok := a.(*dns.SRV); ok {
			targets[strings.ToLower(srv.Target)] = true
		}
	}
	var out []dns.RR
	for _, rr := range extra {
		if rr.Header().Rrtype == dns.TypeOPT || targets[strings.ToLower(rr.Header().Name)] {
			out = append(out, rr)
		}
	}
	return out
}

// answer fills m for question q.
func (s *Server) answer(ctx context.Context, m *dns.Msg, q dns.Question) {
	name := strings.ToLower(dns.CanonicalName(q.Name))
	if !dns.IsSubDomain(s.domain, name) {
		m.Rcode = dns.RcodeRefused
		return
	}
	labels := dns.SplitDomainName(strings.TrimSuffix(name, s.domain))
	if len(labels) == 0 {
		s.answerApex(m, q)
		return
	}
	// The kind label is last, or last but one when a datacenter follows.
	isKind := func(l string) bool { return l == "service" || l == "node" || l == "addr" }
	kindIdx := len(labels) - 1
	if !isKind(labels[kindIdx]) {
		kindIdx--
		if kindIdx < 0 || !isKind(labels[kindIdx]) {
			s.nxdomain(m)
			return
		}
		if labels[len(labels)-1] != strings.ToLower(s.cfg.Datacenter) {
			s.nxdomain(m) // another datacenter
			return
		}
	}
	if kindIdx == 0 {
		s.nxdomain(m)
		return
	}
	parts := labels[:kindIdx]
	switch labels[kindIdx] {
	case "service":
		s.answerService(ctx, m, q, parts)
	case "node":
		s.answerNode(ctx, m, q, strings.Join(parts, "."))
	case "addr":
		s.answerAddr(m, q, parts)
	}
}

func (s *Server) soa() *dns.SOA {
	return &dns.SOA{
		Hdr:     dns.RR_Header{Name: s.domain, Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: 0},
		Ns:      "ns." + s.domain,
		Mbox:    "hostmaster." + s.domain,
		Serial:  uint32(time.Now().Unix()),
		Refresh: 3600, Retry: 600, Expire: 86400, Minttl: 0,
	}
}

func (s *Server) nxdomain(m *dns.Msg) {
	m.Rcode = dns.RcodeNameError
	m.Answer = nil
	m.Ns = []dns.RR{s.soa()}
}

// nodata is an empty NOERROR answer: the name exists, the type does not.
func (s *Server) nodata(m *dns.Msg) {
	m.Ns = []dns.RR{s.soa()}
}

func (s *Server) answerApex(m *dns.Msg, q dns.Question) {
	switch q.Qtype {
	case dns.TypeSOA, dns.TypeANY:
		m.Answer = append(m.Answer, s.soa())
	case dns.TypeNS:
		m.Answer = append(m.Answer, &dns.NS{Hdr: dns.RR_Header{Name: s.domain, Rrtype: dns.TypeNS, Class: dns.ClassINET}, Ns: "ns." + s.domain})
	default:
		s.nodata(m)
	}
}

func (s *Server) fail(m *dns.Msg, what string, err error) {
	s.logger.Warn("DNS lookup failed", "name", what, "error", err)
	metrics.IncrCounter([]string{"trellis", "dns", "errors"}, 1)
	m.Rcode = dns.RcodeServerFailure
}

// allowed asks the Authorizer whether the lookup of name may be answered;
// when not, m is REFUSED.
func (s *Server) allowed(ctx context.Context, m *dns.Msg, res authz.Resource, name string) bool {
	if err := s.cfg.Authorizer.Authorize(ctx, authz.Request{Resource: res, Name: name, Access: authz.Read}); err != nil {
		s.logger.Debug("DNS lookup refused", "name", name, "error", err)
		m.Rcode = dns.RcodeRefused
		return false
	}
	return true
}

func (s *Server) answerService(ctx context.Context, m *dns.Msg, q dns.Question, parts []string) {
	var name, tag string
	switch {
	case len(parts) == 1:
		name = parts[0]
	case len(parts) == 2 && strings.HasPrefix(parts[0], "_") && strings.HasPrefix(parts[1], "_"):
		name, tag = parts[0][1:], parts[1][1:]
		if tag == "tcp" {
			tag = ""
		}
	case len(parts) == 2:
		tag, name = parts[0], parts[1]
	default:
		s.nxdomain(m)
		return
	}
	if !s.allowed(ctx, m, authz.Service, name) {
		return
	}
	instances, err := s.src.ServiceNodes(ctx, name, tag)
	if err != nil {
		s.fail(m, q.Name, err)
		return
	}
	passing := instances[:0:0]
	for _, in := range instances {
		if in.Checks.AggregatedStatus() == structs.HealthPassing {
			passing = append(passing, in)
		}
	}
	if len(passing) == 0 {
		s.nxdomain(m)
		return
	}
	rand.Shuffle(len(passing), func(i, j int) { passing[i], passing[j] = passing[j], passing[i] })
	ttl := uint32(s.cfg.ServiceTTL / time.Second)
	for _, in := range passing {
		addr := in.Node.Address
		if in.Service.Address != "" {
			addr = in.Service.Address
		}
		switch q.Qtype {
		case dns.TypeSRV:
			target, extra := s.srvTarget(in, addr, ttl)
			weight := 1
			if in.Service.Weights != nil && in.Service.Weights.Passing > 0 {
				weight = in.Service.Weights.Passing
			}
			m.Answer = append(m.Answer, &dns.SRV{
				Hdr:      dns.RR_Header{Name: q.Name, Rrtype: dns.TypeSRV, Class: dns.ClassINET, Ttl: ttl},
				Priority: 1, Weight: uint16(min(weight, 65535)), Port: uint16(in.Service.Port), Target: target,
			})
			m.Extra = append(m.Extra, extra...)
		default:
			m.Answer = append(m.Answer, addressRecords(q.Name, addr, q.Qtype, ttl)...)
		}
	}
	if len(m.Answer) == 0 {
		s.nodata(m)
	}
}

// srvTarget returns the target of an SRV record and the records that resolve
// it: the node's name when the instance uses the node's address, else a name
// under .addr that encodes the address.
func (s *Server) srvTarget(in structs.CheckServiceNode, addr string, ttl uint32) (string, []dns.RR) {
	dc := strings.ToLower(s.cfg.Datacenter)
	var target string
	if addr == in.Node.Address {
		target = dns.Fqdn(strings.ToLower(in.Node.Node) + ".node." + dc + "." + s.domain)
		ttl = uint32(s.cfg.NodeTTL / time.Second)
	} else if ip := net.ParseIP(addr); ip != nil {
		b := ip.To4()
		if b == nil {
			b = ip.To16()
		}
		target = hex.EncodeToString(b) + ".addr." + dc + "." + s.domain
	} else {
		// A host name: the SRV points at it; its resolution is elsewhere.
		return dns.Fqdn(addr), nil
	}
	return target, addressRecords(target, addr, dns.TypeANY, ttl)
}

// addressRecords returns the A or AAAA record for addr, as qtype asks (ANY
// gives whichever the address is); a host name gives a CNAME.
func addressRecords(name, addr string, qtype uint16, ttl uint32) []dns.RR {
	ip := net.ParseIP(addr)
	if ip == nil {
		if addr == "" {
			return nil
		}
		return []dns.RR{&dns.CNAME{Hdr: dns.RR_Header{Name: name, Rrtype: dns.TypeCNAME, Class: dns.ClassINET, Ttl: ttl}, Target: dns.Fqdn(addr)}}
	}
	if v4 := ip.To4(); v4 != nil {
		if qtype == dns.TypeA || qtype == dns.TypeANY {
			return []dns.RR{&dns.A{Hdr: dns.RR_Header{Name: name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: ttl}, A: v4}}
		}
		return nil
	}
	if qtype == dns.TypeAAAA || qtype == dns.TypeANY {
		return []dns.RR{&dns.AAAA{Hdr: dns.RR_Header{Name: name, Rrtype: dns.TypeAAAA, Class: dns.ClassINET, Ttl: ttl}, AAAA: ip}}
	}
	return nil
}

func (s *Server) answerNode(ctx context.Context, m *dns.Msg, q dns.Question, name string) {
	if !s.allowed(ctx, m, authz.Node, name) {
		return
	}
	n, err := s.src.Node(ctx, name)
	if err != nil {
		s.fail(m, q.Name, err)
		return
	}
	if n == nil {
		s.nxdomain(m)
		return
	}
	m.Answer = addressRecords(q.Name, n.Address, q.Qtype, uint32(s.cfg.NodeTTL/time.Second))
	if len(m.Answer) == 0 {
		s.nodata(m)
	}
}

func (s *Server) answerAddr(m *dns.Msg, q dns.Question, parts []string) {
	if len(parts) != 1 {
		s.nxdomain(m)
		return
	}
	b, err := hex.DecodeString(parts[0])
	if err != nil || (len(b) != net.IPv4len && len(b) != net.IPv6len) {
		s.nxdomain(m)
		return
	}
	m.Answer = addressRecords(q.Name, net.IP(b).String(), q.Qtype, uint32(s.cfg.ServiceTTL/time.Second))
	if len(m.Answer) == 0 {
		s.nodata(m)
	}
}
