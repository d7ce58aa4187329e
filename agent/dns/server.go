// Package dns is the agent's DNS interface (miekg/dns, UDP and TCP):
//
//	NAME.service[.DC].DOMAIN        A/AAAA/SRV of the passing instances of NAME
//	TAG.NAME.service[.DC].DOMAIN    the same, with tag TAG
//	_NAME._TAG.service[.DC].DOMAIN  RFC 2782 form (_tcp means any tag)
//	NODE.node[.DC].DOMAIN           A/AAAA of a node
//	HEX.addr[.DC].DOMAIN            the address HEX encodes (SRV targets)
//
// Only instances whose checks all pass are answered (an instance without
// checks passes). Names are case-insensitive and answers are shuffled on
// every query. An unknown name, or a service with no passing instance, is
// NXDOMAIN with the domain's SOA in the authority section; a name outside the
// domain is REFUSED (there is no recursion).
//
// Over UDP an answer is cut to UDPAnswerLimit records, and to the client's
// EDNS0 buffer size (512 bytes without EDNS0), setting the TC bit when it had
// to drop records so the client retries over TCP, which answers in full.
//
// The data comes through the small Source interface; the agent implements it
// over the catalog.
package dns

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/miekg/dns"

	"github.com/trellismesh/trellis/internal/authz"
	"github.com/trellismesh/trellis/raftstore/structs"
)

// Source is where answers come from. Methods are called concurrently and
// must honour ctx.
type Source interface {
	// ServiceNodes returns the instances of a service (with tag, when not
	// empty) with their checks. The server filters out those not passing.
	ServiceNodes(ctx context.Context, name, tag string) ([]structs.CheckServiceNode, error)
	// Node returns a node, or nil (and no error) when it is not known.
	Node(ctx context.Context, name string) (*structs.Node, error)
}

// Config configures a Server.
type Config struct {
	// Addrs are the host:port addresses to serve on, UDP and TCP each. A
	// port of 0 picks a free port (the same for UDP and TCP).
	Addrs []string
	// Domain is the domain answered, default "trellis.".
	Domain string
	// Datacenter is this agent's datacenter; a name for another is NXDOMAIN.
	Datacenter string
	// NodeTTL and ServiceTTL are the TTLs of node and service records (default 0).
	NodeTTL    time.Duration
	ServiceTTL time.Duration
	// UDPAnswerLimit caps the records of a UDP answer; 0 means as many as fit.
	UDPAnswerLimit int
	// LookupTimeout bounds one query's calls to the Source (default 2s).
	LookupTimeout time.Duration
	// Authorizer decides each lookup (service:read or node:read of the
	// name, with no token: DNS carries none); a refusal is answered
	// REFUSED. Nil allows all.
	Authorizer authz.Authorizer
	// Logger is named "dns"; nil means hclog.Default().
	Logger hclog.Logger
}

// DefaultConfig returns the defaults of every field but Addrs and Datacenter.
func DefaultConfig() Config {
	return Config{Domain: "trellis.", Datacenter: "dc1", UDPAnswerLimit: 3, LookupTimeout: 2 * time.Second}
}

// Server is the DNS server.
type Server struct {
	cfg    Config
	src    Source
	logger hclog.Logger
	domain string

	mu       sync.Mutex
	servers  []*dns.Server // guarded by mu
	udpAddrs []net.Addr    // guarded by mu
	tcpAddrs []net.Addr    // guarded by mu
	wg       sync.WaitGroup
	stopped  bool // guarded by mu
}

// New returns a server over src; Start binds it.
func New(cfg Config, src Source) (*Server, error) {
	if cfg.Domain == "" {
		cfg.Domain = "trellis."
	}
	domain := dns.CanonicalName(cfg.Domain)
	if _, ok := dns.IsDomainName(domain); !ok {
		return nil, fmt.Errorf("dns: domain %q is not a domain name", cfg.Domain)
	}
	if cfg.LookupTimeout <= 0 {
		cfg.LookupTimeout = 2 * time.Second
	}
	if cfg.Authorizer == nil {
		cfg.Authorizer = authz.AllowAll{}
	}
	if cfg.UDPAnswerLimit < 0 {
		return nil, fmt.Errorf("dns: UDPAnswerLimit %d is negative", cfg.UDPAnswerLimit)
	}
	logger := cfg.Logger
	if logger == nil {
		logger = hclog.Default()
	}
	return &Server{cfg: cfg, src: src, logger: logger.Named("dns"), domain: domain}, nil
}

// Start binds every address over UDP and TCP and serves in the background.
func (s *Server) Start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return errors.New("dns: server was shut down")
	}
	for _, addr := range s.cfg.Addrs {
		pc, ln, err := listenBoth(addr)
		if err != nil {
			s.closeLocked()
			return fmt.Errorf("listen for DNS on %s: %w", addr, err)
		}
		s.udpAddrs = append(s.udpAddrs, pc.LocalAddr())
		s.tcpAddrs = append(s.tcpAddrs, ln.Addr())
		for _, srv := range []*dns.Server{
			{PacketConn: pc, Handler: dns.HandlerFunc(s.serveUDP)},
			{Listener: ln, Handler: dns.HandlerFunc(s.serveTCP)},
		} {
			started := make(chan struct{})
			failed := make(chan error, 1)
			srv.NotifyStartedFunc = func() { close(started) }
			s.servers = append(s.servers, srv)
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				if err := srv.ActivateAndServe(); err != nil {
					failed <- err
					s.logger.Error("DNS server stopped", "error", err)
				}
			}()
			select {
			case <-started:
			case err := <-failed:
				s.closeLocked()
				return fmt.Errorf("serve DNS on %s: %w", addr, err)
			}
		}
		s.logger.Info("DNS listening", "address", pc.LocalAddr(), "domain", s.domain)
	}
	return nil
}

// listenBoth binds addr over UDP and TCP on one port; with port 0 it picks a
// port free for both, retrying a few times.
func listenBoth(addr string) (net.PacketConn, net.Listener, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, nil, err
	}
	var lastErr error
	for range 10 {
		pc, err := net.ListenPacket("udp", addr)
		if err != nil {
			return nil, nil, err
		}
		p := strconv.Itoa(pc.LocalAddr().(*net.UDPAddr).Port)
		ln, err := net.Listen("tcp", net.JoinHostPort(host, p))
		if err == nil {
			return pc, ln, nil
		}
		pc.Close()
		lastErr = err
		if port != "0" {
			break
		}
	}
	return nil, nil, lastErr
}

// Addrs returns the bound UDP and TCP addresses.
func (s *Server) Addrs() (udp, tcp []net.Addr) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]net.Addr(nil), s.udpAddrs...), append([]net.Addr(nil), s.tcpAddrs...)
}

// Shutdown stops serving and returns once the serving goroutines are gone.
// It is idempotent.
func (s *Server) Shutdown() error {
	s.mu.Lock()
	s.stopped = true
	s.closeLocked()
	s.mu.Unlock()
	s.wg.Wait()
	return nil
}

// closeLocked stops every server; s.mu must be held.
func (s *Server) closeLocked() {
	for _, srv := range s.servers {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if err := srv.ShutdownContext(ctx); err != nil {
			s.logger.Debug("DNS server shutdown", "error", err)
		}
		cancel()
	}
	s.servers = nil
}
