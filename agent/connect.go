package agent

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/trellismesh/trellis/agent/mesh"
	"github.com/trellismesh/trellis/agent/proxymgr"
	"github.com/trellismesh/trellis/connect"
	"github.com/trellismesh/trellis/connect/golden"
	"github.com/trellismesh/trellis/connect/intentions"
	"github.com/trellismesh/trellis/connect/proxy"
	"github.com/trellismesh/trellis/raftstore/structs"
)

// errConnectDisabled answers mesh requests on an agent without the mesh.
var errConnectDisabled = structs.Invalid("", "the mesh is disabled on this agent (connect { enabled = false })")

// startMesh starts the mesh cache and the proxy manager.
func (a *Agent) startMesh() {
	if !a.cfg.ConnectEnabled {
		return
	}
	a.mesh = mesh.New(mesh.Config{
		RPC: a, NodeName: a.cfg.NodeName, Datacenter: a.cfg.Datacenter,
		DefaultAllow: a.cfg.DefaultIntentionAllow, Logger: a.logger,
	})
	a.golden = golden.NewRecorder()
	a.goldenTotals = golden.NewTotals()
	a.proxies = proxymgr.New(proxymgr.Config{
		Mesh: a.mesh, BindAddr: a.cfg.BindAddr, MinPort: a.cfg.SidecarMinPort, MaxPort: a.cfg.SidecarMaxPort,
		Golden: a.golden, Logger: a.logger,
	})
}

// runProxies keeps the leaves the mesh cache holds for local services in
// step with the local services until ctx ends. (The proxies follow the
// registrations themselves: see registerService.)
func (a *Agent) runProxies(ctx context.Context) {
	for {
		changed := a.state.WatchCh()
		a.mesh.SetLocalServices(a.LocalServices())
		select {
		case <-ctx.Done():
			return
		case <-changed:
		}
	}
}

// Proxies describes the proxies this agent runs, by sidecar ID (for tests
// and the benchmarks).
func (a *Agent) Proxies() map[string]proxymgr.Info {
	if a.proxies == nil {
		return nil
	}
	return a.proxies.Proxies()
}

// expandSidecar turns the sidecar a registration asks for into a
// connect-proxy service of its own, with its public port reserved, and
// returns the service without the request. runMu must be held.
func (a *Agent) expandSidecar(svc *structs.NodeService) (parent, sidecar *structs.NodeService, err error) {
	if svc.Connect == nil || svc.Connect.SidecarService == nil {
		return svc, nil, nil
	}
	if a.proxies == nil {
		return nil, nil, structs.Invalid("Connect.SidecarService", "service %q asks for a sidecar, but the mesh is disabled on this agent", svc.ID)
	}
	parent = svc.Clone()
	sc := parent.Connect.SidecarService
	parent.Connect.SidecarService = nil
	if !parent.Connect.Native {
		parent.Connect = nil
	}
	p := structs.ConnectProxyConfig{}
	if sc.Proxy != nil {
		p = *sc.Proxy
	}
	p.DestinationServiceName, p.DestinationServiceID = parent.Service, parent.ID
	if p.LocalServiceAddress == "" {
		p.LocalServiceAddress = "127.0.0.1"
	}
	if p.LocalServicePort == 0 {
		p.LocalServicePort = parent.Port
	}
	if p.LocalServicePort == 0 {
		return nil, nil, structs.Invalid("Connect.SidecarService.Proxy.LocalServicePort", "service %q has no port for its sidecar to forward to: set the service's port or local_service_port", parent.ID)
	}
	sidecar = &structs.NodeService{
		Kind: structs.ServiceKindConnectProxy, ID: sc.ID, Service: sc.Service, Address: sc.Address,
		Tags: sc.Tags, Meta: sc.Meta, Port: sc.Port, Proxy: &p,
	}
	if sidecar.ID == "" {
		sidecar.ID = parent.ID + structs.SidecarSuffix
	}
	if sidecar.Service == "" {
		sidecar.Service = parent.Service + structs.SidecarSuffix
	}
	if sidecar.Tags == nil {
		sidecar.Tags = parent.Tags
	}
	if sidecar.Meta == nil {
		sidecar.Meta = parent.Meta
	}
	if sidecar.Port == 0 {
		if prev := a.state.Service(sidecar.ID); prev != nil && prev.Kind == structs.ServiceKindConnectProxy {
			sidecar.Port = prev.Port // a re-registration keeps its port
		}
	}
	if sidecar.Port, err = a.proxies.ReservePort(sidecar.ID, sidecar.Address, sidecar.Port, !proxymgr.Managed(sidecar)); err != nil {
		return nil, nil, err
	}
	if err := sidecar.Validate(); err != nil {
		a.proxies.ReleasePort(sidecar.ID)
		return nil, nil, err
	}
	return parent, sidecar.Clone(), nil
}

// sidecarOf returns the ID of the sidecar registered for service id with
// sidecar_service, or "".
func (a *Agent) sidecarOf(id string) string {
	sid := id + structs.SidecarSuffix
	if s := a.state.Service(sid); s != nil && s.Kind == structs.ServiceKindConnectProxy && s.Proxy != nil && s.Proxy.DestinationServiceID == id {
		return sid
	}
	return ""
}

// ConnectRoots returns the trusted roots this agent holds.
func (a *Agent) ConnectRoots(ctx context.Context, minIndex uint64, wait time.Duration) (*structs.IndexedCARoots, error) {
	if a.mesh == nil {
		return nil, errConnectDisabled
	}
	return a.mesh.Roots(ctx, minIndex, wait)
}

// ConnectLeaf returns the leaf of a service with its private key.
func (a *Agent) ConnectLeaf(ctx context.Context, service string, minIndex uint64, wait time.Duration) (*structs.IssuedCert, error) {
	if a.mesh == nil {
		return nil, errConnectDisabled
	}
	return a.mesh.Leaf(ctx, service, minIndex, wait)
}

// ConnectAuthorize decides a connection with the agent's intentions.
func (a *Agent) ConnectAuthorize(_ context.Context, target, clientCertURI string) (intentions.Decision, error) {
	if a.mesh == nil {
		return intentions.Decision{}, errConnectDisabled
	}
	if err := connect.ValidateServiceName("Target", target); err != nil || target == connect.Wildcard {
		return intentions.Decision{}, structs.Invalid("Target", "%q is not a service name", target)
	}
	id, err := connect.ParseServiceID(clientCertURI)
	if err != nil {
		return intentions.Decision{}, structs.Invalid("ClientCertURI", "%v", err)
	}
	return a.mesh.Authorize(target, id), nil
}

// DefaultIntentionAllow reports the default intention policy.
func (a *Agent) DefaultIntentionAllow() bool { return a.cfg.DefaultIntentionAllow }

// AddMeshSamples adds the counts of a proxy run by trellis connect proxy to
// what the agent reports to the servers. The proxy's side of each sample
// must be a service with a sidecar on this agent, and the other side a
// service name: made-up edges would fill the recorder, and the servers'
// window, with nothing real. Nothing is added when one sample is refused.
func (a *Agent) AddMeshSamples(samples []golden.Sample) error {
	if a.golden == nil {
		return structs.Invalid("", "the mesh is disabled on this agent (connect { enabled = false })")
	}
	local := map[string]bool{}
	for _, svc := range a.LocalServices() {
		if svc.Kind == structs.ServiceKindConnectProxy && svc.Proxy != nil {
			local[strings.ToLower(svc.Proxy.DestinationServiceName)] = true
		}
	}
	for i, s := range samples {
		own, peer := s.Source, s.Destination
		if s.Side == golden.Inbound {
			own, peer = s.Destination, s.Source
		}
		if !local[strings.ToLower(own)] {
			return structs.Invalid(fmt.Sprintf("Samples[%d]", i), "%q is not a service with a sidecar on this agent", own)
		}
		if peer != golden.OtherService {
			field := "Destination"
			if s.Side == golden.Inbound {
				field = "Source"
			}
			if err := connect.ValidateServiceName(field, peer); err != nil {
				return structs.Invalid(fmt.Sprintf("Samples[%d]", i), "%v", err)
			}
		}
	}
	a.golden.Add(samples)
	return nil
}

// DescribeProxy implements httpapi.ConnectAgent's DescribeProxy: the proxy of local
// sidecar id and the intentions that apply to the service it fronts.
func (a *Agent) DescribeProxy(id string) (proxy.Description, []*connect.Intention, bool) {
	if a.proxies == nil {
		return proxy.Description{}, nil, false
	}
	d, ok := a.proxies.Describe(id)
	if !ok {
		return d, nil, false
	}
	return d, a.mesh.IntentionsFor(d.Service), true
}

// MeshStatus describes the mesh settings in a line, for the start-up banner.
func (a *Agent) MeshStatus() string {
	if !a.cfg.ConnectEnabled {
		return "disabled"
	}
	policy := "deny"
	if a.cfg.DefaultIntentionAllow {
		policy = "allow"
	}
	return fmt.Sprintf("enabled, default intention policy %s, sidecar ports %d-%d", policy, a.cfg.SidecarMinPort, a.cfg.SidecarMaxPort)
}
