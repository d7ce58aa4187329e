package structs

import (
	"maps"
	"slices"
	"time"
)

// Health states of a check, with Consul's spelling.
const (
	HealthPassing  = "passing"
	HealthWarning  = "warning"
	HealthCritical = "critical"
	// HealthMaint is the status of a maintenance-mode check.
	HealthMaint = "maintenance"
	// HealthAny matches every state in ChecksInState.
	HealthAny = "any"
)

// ValidHealthState reports whether s is one of passing, warning or critical
// (or maintenance), the states a check may hold.
func ValidHealthState(s string) bool {
	switch s {
	case HealthPassing, HealthWarning, HealthCritical, HealthMaint:
		return true
	}
	return false
}

// RaftIndex is the pair of Raft indexes carried by every stored row: the index
// of the log entry that created it and of the last one that changed it.
type RaftIndex struct {
	CreateIndex uint64
	ModifyIndex uint64
}

// Node is a host in the catalog.
type Node struct {
	// ID is the node's UUID; may be empty for nodes registered through the catalog API.
	ID string
	// Node is the node's name, unique in the datacenter (compared case-insensitively).
	Node            string
	Address         string
	Datacenter      string
	TaggedAddresses map[string]string
	Meta            map[string]string
	RaftIndex
}

// Clone returns a deep copy of n.
func (n *Node) Clone() *Node {
	if n == nil {
		return nil
	}
	c := *n
	c.TaggedAddresses = maps.Clone(n.TaggedAddresses)
	c.Meta = maps.Clone(n.Meta)
	return &c
}

// ServiceKind says what kind of service an entry is. The zero value is a
// plain service; later kinds (connect-proxy, …) keep Consul's names.
type ServiceKind string

// ServiceKindTypical is an ordinary service.
const ServiceKindTypical ServiceKind = ""

// ServiceKindConnectProxy is a mesh sidecar proxy.
const ServiceKindConnectProxy ServiceKind = "connect-proxy"

// ServiceAddress is an address and port, used for a service's tagged addresses.
type ServiceAddress struct {
	Address string
	Port    int
}

// Weights are the DNS SRV weights of an instance by its health.
type Weights struct {
	Passing int
	Warning int
}

// NodeService is one service instance on a node.
type NodeService struct {
	Kind ServiceKind `json:",omitempty"`
	// ID is unique on its node; it defaults to Service.
	ID      string
	Service string
	Tags    []string
	// Address overrides the node's address when not empty.
	Address           string
	TaggedAddresses   map[string]ServiceAddress `json:",omitempty"`
	Meta              map[string]string
	Port              int
	Weights           *Weights `json:",omitempty"`
	EnableTagOverride bool
	// Proxy holds the sidecar configuration when Kind is connect-proxy (issue: mesh).
	Proxy *ConnectProxyConfig `json:",omitempty"`
	// Connect holds the mesh settings of a service (issue: mesh).
	Connect *ServiceConnect `json:",omitempty"`
	RaftIndex
}

// ConnectProxyConfig is the configuration of a sidecar proxy service.
// It is filled in by the mesh work; the catalog stores it as given.
type ConnectProxyConfig struct {
	DestinationServiceName string            `json:",omitempty"`
	DestinationServiceID   string            `json:",omitempty"`
	LocalServiceAddress    string            `json:",omitempty"`
	LocalServicePort       int               `json:",omitempty"`
	Config                 map[string]string `json:",omitempty"`
	Upstreams              []Upstream        `json:",omitempty"`
}

// Upstream is a service a proxied service dials through a local listener.
type Upstream struct {
	DestinationName  string
	Datacenter       string `json:",omitempty"`
	LocalBindAddress string `json:",omitempty"`
	LocalBindPort    int
}

// ServiceConnect holds a service's mesh settings.
type ServiceConnect struct {
	// Native marks a service that speaks the mesh's mTLS itself.
	Native bool `json:",omitempty"`
	// SidecarService asks the agent to register (and run) a sidecar proxy
	// for the service. It is part of a registration only: the agent turns
	// it into a connect-proxy service of its own and clears it, so the
	// catalog never holds it.
	SidecarService *SidecarService `json:",omitempty"`
}

// SidecarService is a sidecar proxy asked for in a service's registration.
// Empty fields take defaults from the service: ID and name get the suffix
// "-sidecar-proxy", the port is picked from the agent's sidecar range, the
// proxy forwards to the service's own port on 127.0.0.1.
type SidecarService struct {
	ID      string            `json:",omitempty"`
	Service string            `json:",omitempty"`
	Address string            `json:",omitempty"`
	Port    int               `json:",omitempty"`
	Tags    []string          `json:",omitempty"`
	Meta    map[string]string `json:",omitempty"`
	// Proxy holds the upstreams and the local service address; its
	// destination fields are set by the agent.
	Proxy *ConnectProxyConfig `json:",omitempty"`
}

// SidecarSuffix ends the ID and name of a sidecar proxy by default.
const SidecarSuffix = "-sidecar-proxy"

// Clone returns a deep copy of s.
func (s *NodeService) Clone() *NodeService {
	if s == nil {
		return nil
	}
	c := *s
	c.Tags = slices.Clone(s.Tags)
	c.TaggedAddresses = maps.Clone(s.TaggedAddresses)
	c.Meta = maps.Clone(s.Meta)
	if s.Weights != nil {
		w := *s.Weights
		c.Weights = &w
	}
	if s.Proxy != nil {
		p := *s.Proxy
		p.Config = maps.Clone(s.Proxy.Config)
		p.Upstreams = slices.Clone(s.Proxy.Upstreams)
		c.Proxy = &p
	}
	if s.Connect != nil {
		cn := *s.Connect
		if sc := s.Connect.SidecarService; sc != nil {
			scc := *sc
			scc.Tags = slices.Clone(sc.Tags)
			scc.Meta = maps.Clone(sc.Meta)
			if sc.Proxy != nil {
				p := *sc.Proxy
				p.Config = maps.Clone(sc.Proxy.Config)
				p.Upstreams = slices.Clone(sc.Proxy.Upstreams)
				scc.Proxy = &p
			}
			cn.SidecarService = &scc
		}
		c.Connect = &cn
	}
	return &c
}

// HealthCheckDefinition is what a check runs, as shown by the catalog.
type HealthCheckDefinition struct {
	HTTP                           string              `json:",omitempty"`
	Method                         string              `json:",omitempty"`
	Header                         map[string][]string `json:",omitempty"`
	TLSSkipVerify                  bool                `json:",omitempty"`
	TCP                            string              `json:",omitempty"`
	Interval                       time.Duration       `json:",omitempty"`
	Timeout                        time.Duration       `json:",omitempty"`
	TTL                            time.Duration       `json:",omitempty"`
	DeregisterCriticalServiceAfter time.Duration       `json:",omitempty"`
}

// HealthCheck is the state of one check in the catalog. A check with an empty
// ServiceID is a node check: it applies to every service on the node.
type HealthCheck struct {
	Node        string
	CheckID     string
	Name        string
	Status      string
	Notes       string
	Output      string
	ServiceID   string
	ServiceName string
	ServiceTags []string
	// Type is ttl, http, tcp, or empty for checks registered through the catalog.
	Type       string
	Definition HealthCheckDefinition
	RaftIndex
}

// Clone returns a deep copy of c.
func (c *HealthCheck) Clone() *HealthCheck {
	if c == nil {
		return nil
	}
	cc := *c
	cc.ServiceTags = slices.Clone(c.ServiceTags)
	cc.Definition.Header = maps.Clone(c.Definition.Header)
	return &cc
}

// IsSame reports whether two checks have the same content, ignoring Raft
// indexes. Anti-entropy uses it to skip writes that change nothing.
func (c *HealthCheck) IsSame(o *HealthCheck) bool {
	if c == nil || o == nil {
		return c == o
	}
	return c.Node == o.Node && c.CheckID == o.CheckID && c.Name == o.Name &&
		c.Status == o.Status && c.Notes == o.Notes && c.Output == o.Output &&
		c.ServiceID == o.ServiceID && c.ServiceName == o.ServiceName &&
		slices.Equal(c.ServiceTags, o.ServiceTags) && c.Type == o.Type &&
		c.Definition.HTTP == o.Definition.HTTP && c.Definition.TCP == o.Definition.TCP &&
		c.Definition.Method == o.Definition.Method && c.Definition.Interval == o.Definition.Interval &&
		c.Definition.Timeout == o.Definition.Timeout && c.Definition.TTL == o.Definition.TTL &&
		c.Definition.DeregisterCriticalServiceAfter == o.Definition.DeregisterCriticalServiceAfter &&
		c.Definition.TLSSkipVerify == o.Definition.TLSSkipVerify
}

// IsSame reports whether two service instances have the same content,
// ignoring Raft indexes.
func (s *NodeService) IsSame(o *NodeService) bool {
	if s == nil || o == nil {
		return s == o
	}
	if s.Kind != o.Kind || s.ID != o.ID || s.Service != o.Service || s.Address != o.Address ||
		s.Port != o.Port || s.EnableTagOverride != o.EnableTagOverride ||
		!slices.Equal(s.Tags, o.Tags) || !maps.Equal(s.Meta, o.Meta) ||
		!maps.Equal(s.TaggedAddresses, o.TaggedAddresses) {
		return false
	}
	if (s.Weights == nil) != (o.Weights == nil) || (s.Weights != nil && *s.Weights != *o.Weights) {
		return false
	}
	if (s.Connect == nil) != (o.Connect == nil) || (s.Connect != nil && (s.Connect.Native != o.Connect.Native ||
		(s.Connect.SidecarService == nil) != (o.Connect.SidecarService == nil))) {
		return false
	}
	if (s.Proxy == nil) != (o.Proxy == nil) {
		return false
	}
	if s.Proxy != nil {
		a, b := s.Proxy, o.Proxy
		if a.DestinationServiceName != b.DestinationServiceName || a.DestinationServiceID != b.DestinationServiceID ||
			a.LocalServiceAddress != b.LocalServiceAddress || a.LocalServicePort != b.LocalServicePort ||
			!maps.Equal(a.Config, b.Config) || !slices.Equal(a.Upstreams, b.Upstreams) {
			return false
		}
	}
	return true
}

// HealthChecks is a list of checks.
type HealthChecks []*HealthCheck

// AggregatedStatus returns the worst status of the checks: critical (or
// maintenance) over warning over passing; passing for no checks.
func (hc HealthChecks) AggregatedStatus() string {
	status := HealthPassing
	for _, c := range hc {
		switch c.Status {
		case HealthCritical, HealthMaint:
			return HealthCritical
		case HealthWarning:
			status = HealthWarning
		}
	}
	return status
}

// Nodes is a list of nodes.
type Nodes []*Node

// NodeServices is a node and the services registered on it.
type NodeServices struct {
	Node     *Node
	Services map[string]*NodeService
}

// ServiceNode is one instance of a service with the node it runs on.
type ServiceNode struct {
	Node    *Node
	Service *NodeService
}

// CheckServiceNode is one instance of a service with its node and every check
// that applies to it (its own and the node's).
type CheckServiceNode struct {
	Node    *Node
	Service *NodeService
	Checks  HealthChecks
}

// CheckType is the definition of a check an agent runs: what to probe, how
// often, and how its result maps to a status. It lives in the agent's local
// state; the catalog sees the resulting HealthCheck.
type CheckType struct {
	CheckID string
	Name    string
	// Status is the initial status; critical when empty.
	Status    string
	Notes     string
	ServiceID string

	// Exactly one of HTTP, TCP or TTL says the check's type.
	HTTP          string
	Method        string
	Header        map[string][]string
	Body          string
	TLSSkipVerify bool
	TCP           string
	TTL           time.Duration

	Interval time.Duration
	Timeout  time.Duration
	// DeregisterCriticalServiceAfter, when set on a service check, removes the
	// service once the check has been critical that long.
	DeregisterCriticalServiceAfter time.Duration
	// SuccessBeforePassing and FailuresBeforeCritical damp flapping.
	SuccessBeforePassing   int
	FailuresBeforeCritical int
	// OutputMaxSize caps the stored output in bytes (default 4 KiB).
	OutputMaxSize int
}

// Check types as reported in HealthCheck.Type.
const (
	CheckTypeTTL  = "ttl"
	CheckTypeHTTP = "http"
	CheckTypeTCP  = "tcp"
)

// Type returns ttl, http or tcp, or "" when the definition names none.
func (c *CheckType) Type() string {
	switch {
	case c.TTL > 0:
		return CheckTypeTTL
	case c.HTTP != "":
		return CheckTypeHTTP
	case c.TCP != "":
		return CheckTypeTCP
	}
	return ""
}

// Definition returns the catalog view of what the check runs.
func (c *CheckType) Definition() HealthCheckDefinition {
	return HealthCheckDefinition{
		HTTP: c.HTTP, Method: c.Method, Header: maps.Clone(c.Header), TLSSkipVerify: c.TLSSkipVerify,
		TCP: c.TCP, Interval: c.Interval, Timeout: c.Timeout, TTL: c.TTL,
		DeregisterCriticalServiceAfter: c.DeregisterCriticalServiceAfter,
	}
}
