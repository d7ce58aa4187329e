package proxy

import (
	"crypto/x509"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/trellismesh/trellis/connect/configentry"
)

// Description is a snapshot of what a proxy does: its listeners, the
// configuration of its service, where each upstream leads and the
// certificate it presents. It is meant for people (trellis connect
// proxy-config) and is not a stable wire format beyond its JSON field names.
type Description struct {
	ProxyID       string                   `json:"ProxyID"`
	Service       string                   `json:"Service"`
	PublicAddr    string                   `json:"PublicAddr"`
	LocalAppAddr  string                   `json:"LocalAppAddr"`
	ServiceConfig ServiceConfigDescription `json:"ServiceConfig"`
	Upstreams     []UpstreamDescription    `json:"Upstreams"`
	// Certificate is the leaf in use; nil while the proxy has none.
	Certificate *CertificateDescription `json:"Certificate"`
	// TrustBundle is the roots the proxy trusts; nil while it has none.
	TrustBundle *TrustBundleDescription `json:"TrustBundle"`
}

// ServiceConfigDescription is the proxy's ServiceConfig.
type ServiceConfigDescription struct {
	// Protocol is the service's protocol; "tcp" when unset.
	Protocol              string               `json:"Protocol"`
	LocalConnectTimeout   configentry.Duration `json:"LocalConnectTimeout"`
	LocalRequestTimeout   configentry.Duration `json:"LocalRequestTimeout"`
	MaxInboundConnections int                  `json:"MaxInboundConnections"`
}

// Modes of an upstream (UpstreamDescription.Mode).
const (
	// ModeTCP forwards connections (L4).
	ModeTCP = "tcp"
	// ModeL7 forwards HTTP requests: the destination's chain says http,
	// http2 or grpc.
	ModeL7 = "l7"
)

// UpstreamDescription is one upstream listener and where it leads.
type UpstreamDescription struct {
	DestinationName string `json:"DestinationName"`
	// LocalAddr is the address of the local listener.
	LocalAddr string `json:"LocalAddr"`
	// Protocol is the chain's protocol; "tcp" without a chain.
	Protocol string `json:"Protocol"`
	// Mode is ModeTCP or ModeL7.
	Mode string `json:"Mode"`
	// Chain is the discovery chain the upstream follows; nil when it has
	// none (its instances are then Instances).
	Chain *ChainDescription `json:"Chain"`
	// Targets are the chain's targets with their instances: for tcp the
	// primary target then the failovers in order; for l7 every target of
	// the chain, by ID.
	Targets []TargetDescription `json:"Targets"`
	// Instances are the upstream's instances when it follows no chain.
	Instances []InstanceDescription `json:"Instances"`
	// ActiveConnections is the number of application connections open on
	// the tcp path.
	ActiveConnections int64 `json:"ActiveConnections"`
	// Config is the upstream's limits, passive health checks and retry
	// budget (SetUpstreamConfig); nil: the defaults.
	Config *configentry.UpstreamConfig `json:"Config"`
}

// ChainDescription is the part of a discovery chain an upstream follows.
type ChainDescription struct {
	ServiceName string `json:"ServiceName"`
	Protocol    string `json:"Protocol"`
	// Default reports that no config entry shaped the chain.
	Default   bool   `json:"Default"`
	StartNode string `json:"StartNode"`
	// Target is the ID of the tcp target (the primary); Failover the IDs
	// of its failover targets, in order.
	Target       string               `json:"Target"`
	Failover     []string             `json:"Failover"`
	DrainTimeout configentry.Duration `json:"DrainTimeout"`
}

// Roles of a target (TargetDescription.Role).
const (
	// RolePrimary is the chain's tcp target.
	RolePrimary = "primary"
	// RoleFailover is one of its failover targets.
	RoleFailover = "failover"
	// RoleRoute is a target reached by a route or split of an l7 chain.
	RoleRoute = "route"
)

// TargetDescription is one target of an upstream's chain.
type TargetDescription struct {
	ID string `json:"ID"`
	// Identity is the service name the target's certificates carry.
	Identity string `json:"Identity"`
	// Role is RolePrimary, RoleFailover or RoleRoute.
	Role      string                `json:"Role"`
	Instances []InstanceDescription `json:"Instances"`
}

// InstanceDescription is one instance an upstream may dial.
type InstanceDescription struct {
	Addr     string `json:"Addr"`
	Node     string `json:"Node"`
	Identity string `json:"Identity"`
	// ActiveConnections counts application connections using it (tcp).
	ActiveConnections int64 `json:"ActiveConnections"`
	// BackedOff reports that it failed recently and is avoided until
	// BackoffUntil (tcp only).
	BackedOff    bool      `json:"BackedOff"`
	BackoffUntil time.Time `json:"BackoffUntil,omitzero"`
	// ActiveRequests counts the requests to it in flight (l7).
	ActiveRequests int64 `json:"ActiveRequests,omitempty"`
	// ConsecutiveFailures counts its 5xx answers and failed connections
	// since its last success (l7).
	ConsecutiveFailures uint32 `json:"ConsecutiveFailures,omitempty"`
	// Ejected reports that passive health checks took it out of the
	// balancing until EjectedUntil (l7).
	Ejected      bool      `json:"Ejected,omitempty"`
	EjectedUntil time.Time `json:"EjectedUntil,omitzero"`
}

// CertificateDescription is the proxy's leaf certificate.
type CertificateDescription struct {
	// SpiffeID is the certificate's URI SAN.
	SpiffeID  string    `json:"SpiffeID"`
	Serial    string    `json:"Serial"`
	NotBefore time.Time `json:"NotBefore"`
	NotAfter  time.Time `json:"NotAfter"`
	// Error is set when the certificate cannot be parsed.
	Error string `json:"Error,omitempty"`
}

// TrustBundleDescription is the proxy's trust bundle.
type TrustBundleDescription struct {
	TrustDomain  string `json:"TrustDomain"`
	ActiveRootID string `json:"ActiveRootID"`
	Roots        int    `json:"Roots"`
}

// Describe returns a snapshot of the proxy. It takes each upstream's lock
// only long enough to copy what it shows; it is safe to call at any time,
// also after Close.
func (p *Proxy) Describe() Description {
	d := Description{
		ProxyID:      p.cfg.ProxyID,
		Service:      p.cfg.Service,
		PublicAddr:   p.public.Addr().String(),
		LocalAppAddr: p.cfg.LocalAppAddr,
		Upstreams:    []UpstreamDescription{},
	}
	p.http.mu.Lock()
	sc := p.http.sc
	p.http.mu.Unlock()
	d.ServiceConfig = ServiceConfigDescription{
		Protocol:              sc.Protocol,
		LocalConnectTimeout:   configentry.Duration(sc.LocalConnectTimeout),
		LocalRequestTimeout:   configentry.Duration(sc.LocalRequestTimeout),
		MaxInboundConnections: sc.MaxInboundConnections,
	}
	if d.ServiceConfig.Protocol == "" {
		d.ServiceConfig.Protocol = configentry.ProtocolTCP
	}
	now := time.Now()
	for _, uc := range p.cfg.Upstreams {
		if u := p.upstreams[uc.DestinationName]; u != nil {
			d.Upstreams = append(d.Upstreams, u.describe(now))
		}
	}
	if c := p.cfg.Certs.Certificate(); c != nil {
		leaf := c.Leaf
		cd := &CertificateDescription{}
		if leaf == nil && len(c.Certificate) > 0 {
			var err error
			if leaf, err = x509.ParseCertificate(c.Certificate[0]); err != nil {
				cd.Error = err.Error()
			}
		}
		if leaf != nil {
			if len(leaf.URIs) > 0 {
				cd.SpiffeID = leaf.URIs[0].String()
			}
			cd.Serial = serialString(leaf)
			cd.NotBefore, cd.NotAfter = leaf.NotBefore, leaf.NotAfter
		} else if cd.Error == "" {
			cd.Error = "no certificate in the chain"
		}
		d.Certificate = cd
	}
	if b := p.cfg.Certs.Bundle(); b != nil {
		d.TrustBundle = &TrustBundleDescription{TrustDomain: b.TrustDomain, ActiveRootID: b.ActiveRootID, Roots: len(b.Roots)}
	}
	return d
}

// serialString writes a serial number as colon-separated hex bytes.
func serialString(c *x509.Certificate) string {
	if c.SerialNumber == nil {
		return ""
	}
	b := c.SerialNumber.Bytes()
	parts := make([]string, len(b))
	for i, x := range b {
		parts[i] = fmt.Sprintf("%02x", x)
	}
	return strings.Join(parts, ":")
}

// describe copies what the upstream shows, under u.mu.
func (u *upstream) describe(now time.Time) UpstreamDescription {
	d := UpstreamDescription{
		DestinationName:   u.name,
		LocalAddr:         u.ln.Addr().String(),
		Protocol:          configentry.ProtocolTCP,
		Mode:              ModeTCP,
		ActiveConnections: u.active.n.Load(),
		Targets:           []TargetDescription{},
		Instances:         []InstanceDescription{},
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	if uc := u.http.upcfg; uc != nil {
		cp := *uc
		d.Config = &cp
	}
	if u.http.out.Load() != nil {
		d.Mode = ModeL7
	}
	r := u.route
	if r == nil {
		for _, ep := range u.endpoints {
			d.Instances = append(d.Instances, describeEndpoint(ep, now))
		}
		return d
	}
	c := r.chain
	d.Protocol = c.Protocol
	if d.Protocol == "" {
		d.Protocol = configentry.ProtocolTCP
	}
	d.Chain = &ChainDescription{
		ServiceName:  c.ServiceName,
		Protocol:     d.Protocol,
		Default:      c.Default,
		StartNode:    c.StartNode,
		Target:       r.primary(),
		Failover:     slices.Clone(r.order[1:]),
		DrainTimeout: configentry.Duration(r.drain),
	}
	role := func(id string) string {
		switch {
		case id == r.primary():
			return RolePrimary
		case r.references(id):
			return RoleFailover
		}
		return RoleRoute
	}
	if d.Mode == ModeL7 && u.http.chain != nil {
		// The L7 side balances by itself; what it was given is shown.
		hc := u.http.chain
		ids := make([]string, 0, len(hc.Targets))
		for id := range hc.Targets {
			ids = append(ids, id)
		}
		slices.Sort(ids)
		out := u.http.out.Load()
		for _, id := range ids {
			t := hc.Targets[id]
			td := TargetDescription{ID: id, Identity: t.Name, Role: role(id), Instances: []InstanceDescription{}}
			if out != nil {
				// What the L7 balancer holds: requests in flight, failures,
				// ejections.
				for _, st := range out.TargetEndpoints(id) {
					identity := st.Service
					if identity == "" {
						identity = t.Name
					}
					td.Instances = append(td.Instances, InstanceDescription{Addr: st.Addr, Node: st.Node, Identity: identity,
						ActiveRequests: st.ActiveRequests, ConsecutiveFailures: st.ConsecutiveFailures,
						Ejected: !st.EjectedUntil.IsZero(), EjectedUntil: st.EjectedUntil})
				}
				d.Targets = append(d.Targets, td)
				continue
			}
			for _, in := range u.http.insts[id] {
				if in.Addr == "" {
					continue
				}
				td.Instances = append(td.Instances, InstanceDescription{Addr: in.Addr, Node: in.Node, Identity: t.Name})
			}
			d.Targets = append(d.Targets, td)
		}
		return d
	}
	for _, id := range r.order {
		td := TargetDescription{ID: id, Identity: r.names[id], Role: role(id), Instances: []InstanceDescription{}}
		if ts := u.targets[id]; ts != nil {
			for _, ep := range ts.endpoints {
				td.Instances = append(td.Instances, describeEndpoint(ep, now))
			}
		}
		d.Targets = append(d.Targets, td)
	}
	return d
}

// describeEndpoint copies ep; its upstream's mu is held.
func describeEndpoint(ep *endpoint, now time.Time) InstanceDescription {
	in := InstanceDescription{
		Addr:              ep.inst.Addr,
		Node:              ep.nodeName(),
		Identity:          ep.inst.Service,
		ActiveConnections: ep.active.Load(),
	}
	if now.Before(ep.backoffUntil) {
		in.BackedOff, in.BackoffUntil = true, ep.backoffUntil
	}
	return in
}
