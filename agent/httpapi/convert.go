package httpapi

import (
	"fmt"
	"slices"
	"unicode/utf8"

	"github.com/trellismesh/trellis/api"
	"github.com/trellismesh/trellis/raftstore/structs"
)

// --- structs → API shapes ---

func toAPINode(n *structs.Node) *api.Node {
	if n == nil {
		return nil
	}
	return &api.Node{
		ID: n.ID, Node: n.Node, Address: n.Address, Datacenter: n.Datacenter,
		TaggedAddresses: nonNilMap(n.TaggedAddresses), Meta: nonNilMap(n.Meta),
		CreateIndex: n.CreateIndex, ModifyIndex: n.ModifyIndex,
	}
}

func nonNilMap[V any](m map[string]V) map[string]V {
	if m == nil {
		return map[string]V{}
	}
	return m
}

func nonNilSlice[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

func weights(w *structs.Weights) api.AgentWeights {
	if w == nil {
		return api.AgentWeights{Passing: 1, Warning: 1}
	}
	return api.AgentWeights{Passing: w.Passing, Warning: w.Warning}
}

func toAPIProxy(p *structs.ConnectProxyConfig) *api.AgentServiceConnectProxyConfig {
	if p == nil {
		return nil
	}
	out := &api.AgentServiceConnectProxyConfig{
		DestinationServiceName: p.DestinationServiceName, DestinationServiceID: p.DestinationServiceID,
		LocalServiceAddress: p.LocalServiceAddress, LocalServicePort: p.LocalServicePort,
	}
	if len(p.Config) > 0 {
		out.Config = make(map[string]any, len(p.Config))
		for k, v := range p.Config {
			out.Config[k] = v
		}
	}
	for _, u := range p.Upstreams {
		out.Upstreams = append(out.Upstreams, api.Upstream{DestinationName: u.DestinationName, Datacenter: u.Datacenter, LocalBindAddress: u.LocalBindAddress, LocalBindPort: u.LocalBindPort})
	}
	return out
}

func toAPITaggedAddresses(m map[string]structs.ServiceAddress) map[string]api.ServiceAddress {
	if len(m) == 0 {
		return nil
	}
	out := make(map[string]api.ServiceAddress, len(m))
	for k, v := range m {
		out[k] = api.ServiceAddress{Address: v.Address, Port: v.Port}
	}
	return out
}

func toAPIService(s *structs.NodeService, dc string) *api.AgentService {
	if s == nil {
		return nil
	}
	out := &api.AgentService{
		Kind: string(s.Kind), ID: s.ID, Service: s.Service,
		Tags: nonNilSlice(s.Tags), Meta: nonNilMap(s.Meta), Port: s.Port, Address: s.Address,
		TaggedAddresses: toAPITaggedAddresses(s.TaggedAddresses), Weights: weights(s.Weights),
		EnableTagOverride: s.EnableTagOverride, CreateIndex: s.CreateIndex, ModifyIndex: s.ModifyIndex,
		Proxy: toAPIProxy(s.Proxy), Datacenter: dc,
	}
	if s.Connect != nil {
		out.Connect = &api.AgentServiceConnect{Native: s.Connect.Native}
	}
	return out
}

func toAPIDefinition(d structs.HealthCheckDefinition) api.HealthCheckDefinition {
	return api.HealthCheckDefinition{
		HTTP: d.HTTP, Header: d.Header, Method: d.Method, TLSSkipVerify: d.TLSSkipVerify, TCP: d.TCP,
		Interval: api.ReadableDuration(d.Interval), Timeout: api.ReadableDuration(d.Timeout),
		TTL: api.ReadableDuration(d.TTL), DeregisterCriticalServiceAfter: api.ReadableDuration(d.DeregisterCriticalServiceAfter),
	}
}

func toAPICheck(c *structs.HealthCheck) *api.HealthCheck {
	return &api.HealthCheck{
		Node: c.Node, CheckID: c.CheckID, Name: c.Name, Status: c.Status, Notes: c.Notes, Output: c.Output,
		ServiceID: c.ServiceID, ServiceName: c.ServiceName, ServiceTags: nonNilSlice(c.ServiceTags), Type: c.Type,
		Definition: toAPIDefinition(c.Definition), CreateIndex: c.CreateIndex, ModifyIndex: c.ModifyIndex,
	}
}

func toAPIChecks(cs structs.HealthChecks) api.HealthChecks {
	out := make(api.HealthChecks, 0, len(cs))
	for _, c := range cs {
		out = append(out, toAPICheck(c))
	}
	return out
}

func toAPIAgentCheck(c *structs.HealthCheck) *api.AgentCheck {
	return &api.AgentCheck{
		Node: c.Node, CheckID: c.CheckID, Name: c.Name, Status: c.Status, Notes: c.Notes, Output: c.Output,
		ServiceID: c.ServiceID, ServiceName: c.ServiceName, ServiceTags: nonNilSlice(c.ServiceTags), Type: c.Type,
		Definition: toAPIDefinition(c.Definition),
	}
}

func toCatalogService(sn structs.ServiceNode) *api.CatalogService {
	n, s := sn.Node, sn.Service
	return &api.CatalogService{
		ID: n.ID, Node: n.Node, Address: n.Address, Datacenter: n.Datacenter,
		TaggedAddresses: nonNilMap(n.TaggedAddresses), NodeMeta: nonNilMap(n.Meta),
		ServiceID: s.ID, ServiceName: s.Service, ServiceAddress: s.Address,
		ServiceTaggedAddresses: toAPITaggedAddresses(s.TaggedAddresses),
		ServiceTags:            nonNilSlice(s.Tags), ServiceMeta: nonNilMap(s.Meta), ServicePort: s.Port,
		ServiceWeights: weights(s.Weights), ServiceEnableTagOverride: s.EnableTagOverride,
		ServiceProxy: toAPIProxy(s.Proxy), CreateIndex: s.CreateIndex, ModifyIndex: s.ModifyIndex,
	}
}

// --- request bodies → structs ---

// checkBody is a check as registration bodies carry it: the fields of
// Consul's AgentServiceCheck and AgentCheckRegistration. Durations are
// strings ("10s") or nanoseconds.
type checkBody struct {
	ID                             string
	CheckID                        string
	Name                           string
	Notes                          string
	ServiceID                      string
	Status                         string
	HTTP                           string
	Method                         string
	Header                         map[string][]string
	Body                           string
	TLSSkipVerify                  bool
	TCP                            string
	Interval                       api.ReadableDuration
	Timeout                        api.ReadableDuration
	TTL                            api.ReadableDuration
	DeregisterCriticalServiceAfter api.ReadableDuration
	SuccessBeforePassing           int
	FailuresBeforeCritical         int

	// Check kinds Trellis does not run; a body that sets one is refused.
	Args              []string
	ScriptArgs        []string
	Script            string
	DockerContainerID string
	GRPC              string
	H2PING            string
	UDP               string
	OSService         string
	AliasService      string
	AliasNode         string
}

// unsupported names a check kind the body asks for that Trellis does not run.
func (c *checkBody) unsupported() string {
	switch {
	case len(c.Args) > 0 || len(c.ScriptArgs) > 0 || c.Script != "" || c.DockerContainerID != "":
		return "script checks are not supported"
	case c.GRPC != "":
		return "gRPC checks are not supported yet"
	case c.H2PING != "":
		return "H2PING checks are not supported yet"
	case c.UDP != "":
		return "UDP checks are not supported yet"
	case c.OSService != "":
		return "OS service checks are not supported"
	case c.AliasService != "" || c.AliasNode != "":
		return "alias checks are not supported yet"
	}
	return ""
}

func (c *checkBody) id() string {
	if c.CheckID != "" {
		return c.CheckID
	}
	return c.ID
}

// checkType converts and validates a check; field names it in errors.
func (c *checkBody) checkType(field string) (*structs.CheckType, error) {
	if msg := c.unsupported(); msg != "" {
		return nil, structs.Invalid(field, "%s", msg)
	}
	ct := &structs.CheckType{
		CheckID: c.id(), Name: c.Name, Status: c.Status, Notes: c.Notes, ServiceID: c.ServiceID,
		HTTP: c.HTTP, Method: c.Method, Header: c.Header, Body: c.Body, TLSSkipVerify: c.TLSSkipVerify, TCP: c.TCP,
		TTL: c.TTL.Duration(), Interval: c.Interval.Duration(), Timeout: c.Timeout.Duration(),
		DeregisterCriticalServiceAfter: c.DeregisterCriticalServiceAfter.Duration(),
		SuccessBeforePassing:           c.SuccessBeforePassing, FailuresBeforeCritical: c.FailuresBeforeCritical,
	}
	if err := ct.Validate(field); err != nil {
		return nil, err
	}
	return ct, nil
}

// serviceBody is the body of PUT /v1/agent/service/register.
type serviceBody struct {
	Kind              string
	ID                string
	Name              string
	Tags              []string
	Port              int
	Address           string
	TaggedAddresses   map[string]api.ServiceAddress
	EnableTagOverride bool
	Meta              map[string]string
	Weights           *api.AgentWeights
	Check             *checkBody
	Checks            []*checkBody
	Proxy             *api.AgentServiceConnectProxyConfig
	Connect           *api.AgentServiceConnect
}

// nodeService converts the service part, defaulting the ID to the name,
// without validating.
func (b *serviceBody) nodeService() *structs.NodeService {
	svc := &structs.NodeService{
		Kind: structs.ServiceKind(b.Kind), ID: b.ID, Service: b.Name, Tags: b.Tags, Port: b.Port,
		Address: b.Address, EnableTagOverride: b.EnableTagOverride, Meta: b.Meta,
	}
	if svc.ID == "" {
		svc.ID = svc.Service
	}
	if len(b.TaggedAddresses) > 0 {
		svc.TaggedAddresses = make(map[string]structs.ServiceAddress, len(b.TaggedAddresses))
		for k, v := range b.TaggedAddresses {
			svc.TaggedAddresses[k] = structs.ServiceAddress{Address: v.Address, Port: v.Port}
		}
	}
	if b.Weights != nil && (b.Weights.Passing != 0 || b.Weights.Warning != 0) {
		svc.Weights = &structs.Weights{Passing: b.Weights.Passing, Warning: b.Weights.Warning}
	}
	svc.Proxy = proxyFromAPI(b.Proxy)
	if b.Connect != nil {
		svc.Connect = &structs.ServiceConnect{Native: b.Connect.Native}
		if sc := b.Connect.SidecarService; sc != nil {
			svc.Connect.SidecarService = &structs.SidecarService{
				ID: sc.ID, Service: sc.Name, Address: sc.Address, Port: sc.Port, Tags: sc.Tags, Meta: sc.Meta,
				Proxy: proxyFromAPI(sc.Proxy),
			}
		}
	}
	return svc
}

// proxyFromAPI converts a proxy configuration of a registration.
func proxyFromAPI(in *api.AgentServiceConnectProxyConfig) *structs.ConnectProxyConfig {
	if in == nil {
		return nil
	}
	p := &structs.ConnectProxyConfig{
		DestinationServiceName: in.DestinationServiceName, DestinationServiceID: in.DestinationServiceID,
		LocalServiceAddress: in.LocalServiceAddress, LocalServicePort: in.LocalServicePort,
	}
	for k, v := range in.Config {
		if p.Config == nil {
			p.Config = make(map[string]string)
		}
		p.Config[k] = fmt.Sprint(v)
	}
	for _, u := range in.Upstreams {
		p.Upstreams = append(p.Upstreams, structs.Upstream{DestinationName: u.DestinationName, Datacenter: u.Datacenter, LocalBindAddress: u.LocalBindAddress, LocalBindPort: u.LocalBindPort})
	}
	return p
}

// toStructs converts and validates a service registration, filling defaults
// as Consul does: the ID is the name; a lone check is "service:<id>", several
// are "service:<id>:1", "service:<id>:2", …; a check's name is
// "Service '<name>' check"; its initial status critical.
func (b *serviceBody) toStructs() (*structs.NodeService, []*structs.CheckType, error) {
	svc := b.nodeService()
	if err := svc.Validate(); err != nil {
		return nil, nil, err
	}

	bodies := slices.Clone(b.Checks)
	if b.Check != nil {
		bodies = append([]*checkBody{b.Check}, bodies...)
	}
	var checks []*structs.CheckType
	seen := make(map[string]bool)
	for i, cb := range bodies {
		field := "Checks[" + fmt.Sprint(i) + "]"
		if b.Check != nil && i == 0 {
			field = "Check"
		}
		if cb == nil {
			return nil, nil, structs.Invalid(field, "null check")
		}
		ct, err := cb.checkType(field)
		if err != nil {
			return nil, nil, err
		}
		if ct.CheckID == "" {
			ct.CheckID = "service:" + svc.ID
			if len(bodies) > 1 {
				ct.CheckID += ":" + fmt.Sprint(i+1)
			}
		}
		if seen[ct.CheckID] {
			return nil, nil, structs.Invalid(field+".CheckID", "%q appears twice", ct.CheckID)
		}
		seen[ct.CheckID] = true
		if ct.Name == "" {
			ct.Name = fmt.Sprintf("Service '%s' check", svc.Service)
		}
		ct.ServiceID = svc.ID
		checks = append(checks, ct)
	}
	return svc, checks, nil
}

// catalogServiceBody is the Service of a catalog registration (Consul's
// AgentService shape).
type catalogServiceBody struct {
	Kind              string
	ID                string
	Service           string
	Tags              []string
	Meta              map[string]string
	Port              int
	Address           string
	TaggedAddresses   map[string]api.ServiceAddress
	Weights           *api.AgentWeights
	EnableTagOverride bool
	Proxy             *api.AgentServiceConnectProxyConfig
	Connect           *api.AgentServiceConnect
}

// catalogCheckBody is a check of a catalog registration.
type catalogCheckBody struct {
	Node        string
	CheckID     string
	Name        string
	Status      string
	Notes       string
	Output      string
	ServiceID   string
	ServiceName string
	ServiceTags []string
	Type        string
	Definition  api.HealthCheckDefinition
}

// catalogRegisterBody is the body of PUT /v1/catalog/register.
type catalogRegisterBody struct {
	ID              string
	Node            string
	Address         string
	Datacenter      string
	TaggedAddresses map[string]string
	NodeMeta        map[string]string
	Service         *catalogServiceBody
	Check           *catalogCheckBody
	Checks          []*catalogCheckBody
	SkipNodeUpdate  bool
}

func (c *catalogCheckBody) toStructs() *structs.HealthCheck {
	d := c.Definition
	return &structs.HealthCheck{
		Node: c.Node, CheckID: c.CheckID, Name: c.Name, Status: c.Status, Notes: c.Notes, Output: c.Output,
		ServiceID: c.ServiceID, Type: c.Type,
		Definition: structs.HealthCheckDefinition{
			HTTP: d.HTTP, Method: d.Method, Header: d.Header, TLSSkipVerify: d.TLSSkipVerify, TCP: d.TCP,
			Interval: d.Interval.Duration(), Timeout: d.Timeout.Duration(), TTL: d.TTL.Duration(),
			DeregisterCriticalServiceAfter: d.DeregisterCriticalServiceAfter.Duration(),
		},
	}
}

// toStructs converts a catalog registration; the server validates it.
func (b *catalogRegisterBody) toStructs() *structs.RegisterRequest {
	req := &structs.RegisterRequest{
		Datacenter: b.Datacenter, ID: b.ID, Node: b.Node, Address: b.Address,
		TaggedAddresses: b.TaggedAddresses, NodeMeta: b.NodeMeta, SkipNodeUpdate: b.SkipNodeUpdate,
	}
	if s := b.Service; s != nil {
		sb := serviceBody{Kind: s.Kind, ID: s.ID, Name: s.Service, Tags: s.Tags, Port: s.Port, Address: s.Address,
			TaggedAddresses: s.TaggedAddresses, EnableTagOverride: s.EnableTagOverride, Meta: s.Meta,
			Weights: s.Weights, Proxy: s.Proxy, Connect: s.Connect}
		req.Service = sb.nodeService()
	}
	if b.Check != nil {
		req.Check = b.Check.toStructs()
	}
	for _, c := range b.Checks {
		if c != nil {
			req.Checks = append(req.Checks, c.toStructs())
		}
	}
	return req
}

// checkStatusFromVerb maps /v1/agent/check/{pass,warn,fail}.
var checkStatusFromVerb = map[string]string{
	"pass": structs.HealthPassing,
	"warn": structs.HealthWarning,
	"fail": structs.HealthCritical,
}

// maxCheckOutput caps the output set through the TTL endpoints.
const maxCheckOutput = 4096

// capOutput cuts s to maxCheckOutput bytes at a UTF-8 boundary.
func capOutput(s string) string {
	if len(s) <= maxCheckOutput {
		return s
	}
	cut := maxCheckOutput
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut]
}
