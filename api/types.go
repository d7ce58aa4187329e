package api

import (
	"encoding/json"
	"fmt"
	"strconv"
	"time"
)

// Health states of a check.
const (
	HealthPassing  = "passing"
	HealthWarning  = "warning"
	HealthCritical = "critical"
	HealthMaint    = "maintenance"
	HealthAny      = "any"
)

// ReadableDuration is a duration written in JSON as a Go duration string
// ("10s"). It reads strings and, as Consul does, plain numbers of nanoseconds.
type ReadableDuration time.Duration

// Duration returns d as a time.Duration.
func (d ReadableDuration) Duration() time.Duration { return time.Duration(d) }

// MarshalJSON writes d as a string such as "1m30s".
func (d ReadableDuration) MarshalJSON() ([]byte, error) {
	return json.Marshal(time.Duration(d).String())
}

// UnmarshalJSON reads a duration string or a number of nanoseconds.
func (d *ReadableDuration) UnmarshalJSON(b []byte) error {
	if len(b) > 0 && b[0] == '"' {
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		if s == "" {
			*d = 0
			return nil
		}
		v, err := time.ParseDuration(s)
		if err != nil {
			return fmt.Errorf("invalid duration %q", s)
		}
		*d = ReadableDuration(v)
		return nil
	}
	n, err := strconv.ParseInt(string(b), 10, 64)
	if err != nil {
		return fmt.Errorf("invalid duration %s: want a string like \"10s\"", b)
	}
	*d = ReadableDuration(n)
	return nil
}

// AgentWeights are the DNS SRV weights of an instance by its health.
type AgentWeights struct {
	Passing int
	Warning int
}

// ServiceAddress is an address and port.
type ServiceAddress struct {
	Address string
	Port    int
}

// Upstream is a service a proxied service dials through a local listener.
type Upstream struct {
	DestinationName  string
	Datacenter       string `json:",omitempty"`
	LocalBindAddress string `json:",omitempty"`
	LocalBindPort    int    `json:",omitempty"`
}

// AgentServiceConnectProxyConfig is the configuration of a sidecar proxy.
type AgentServiceConnectProxyConfig struct {
	DestinationServiceName string         `json:",omitempty"`
	DestinationServiceID   string         `json:",omitempty"`
	LocalServiceAddress    string         `json:",omitempty"`
	LocalServicePort       int            `json:",omitempty"`
	Config                 map[string]any `json:",omitempty"`
	Upstreams              []Upstream     `json:",omitempty"`
}

// AgentServiceConnect holds a service's mesh settings.
type AgentServiceConnect struct {
	Native bool `json:",omitempty"`
	// SidecarService, in a registration, asks the agent to register and
	// run a sidecar proxy for the service.
	SidecarService *AgentServiceRegistration `json:",omitempty"`
}

// AgentService is a service instance as an agent or the catalog shows it.
type AgentService struct {
	Kind              string `json:",omitempty"`
	ID                string
	Service           string
	Tags              []string
	Meta              map[string]string
	Port              int
	Address           string
	TaggedAddresses   map[string]ServiceAddress `json:",omitempty"`
	Weights           AgentWeights
	EnableTagOverride bool
	CreateIndex       uint64                          `json:",omitempty"`
	ModifyIndex       uint64                          `json:",omitempty"`
	ContentHash       string                          `json:",omitempty"`
	Proxy             *AgentServiceConnectProxyConfig `json:",omitempty"`
	Connect           *AgentServiceConnect            `json:",omitempty"`
	Datacenter        string                          `json:",omitempty"`
}

// HealthCheckDefinition is what a check runs.
type HealthCheckDefinition struct {
	HTTP                           string              `json:",omitempty"`
	Header                         map[string][]string `json:",omitempty"`
	Method                         string              `json:",omitempty"`
	Body                           string              `json:",omitempty"`
	TLSSkipVerify                  bool                `json:",omitempty"`
	TCP                            string              `json:",omitempty"`
	Interval                       ReadableDuration    `json:",omitempty"`
	Timeout                        ReadableDuration    `json:",omitempty"`
	TTL                            ReadableDuration    `json:",omitempty"`
	DeregisterCriticalServiceAfter ReadableDuration    `json:",omitempty"`
}

// AgentCheck is a check as an agent shows it (GET /v1/agent/checks).
type AgentCheck struct {
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
	Definition  HealthCheckDefinition
	CreateIndex uint64 `json:",omitempty"`
	ModifyIndex uint64 `json:",omitempty"`
}

// HealthCheck is a check as the catalog shows it (the health endpoints).
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
	Type        string
	Definition  HealthCheckDefinition
	CreateIndex uint64
	ModifyIndex uint64
}

// HealthChecks is a list of checks.
type HealthChecks []*HealthCheck

// AggregatedStatus returns the worst status of the checks: critical (or
// maintenance) over warning over passing; passing for none.
func (c HealthChecks) AggregatedStatus() string {
	status := HealthPassing
	for _, chk := range c {
		switch chk.Status {
		case HealthCritical, HealthMaint:
			return HealthCritical
		case HealthWarning:
			status = HealthWarning
		}
	}
	return status
}

// AgentServiceCheck is a check in a service registration. Durations are
// strings such as "10s".
type AgentServiceCheck struct {
	CheckID                        string              `json:",omitempty"`
	Name                           string              `json:",omitempty"`
	Interval                       string              `json:",omitempty"`
	Timeout                        string              `json:",omitempty"`
	TTL                            string              `json:",omitempty"`
	HTTP                           string              `json:",omitempty"`
	Header                         map[string][]string `json:",omitempty"`
	Method                         string              `json:",omitempty"`
	Body                           string              `json:",omitempty"`
	TCP                            string              `json:",omitempty"`
	Status                         string              `json:",omitempty"`
	Notes                          string              `json:",omitempty"`
	TLSSkipVerify                  bool                `json:",omitempty"`
	SuccessBeforePassing           int                 `json:",omitempty"`
	FailuresBeforeCritical         int                 `json:",omitempty"`
	DeregisterCriticalServiceAfter string              `json:",omitempty"`
}

// AgentServiceChecks is a list of checks in a registration.
type AgentServiceChecks []*AgentServiceCheck

// AgentServiceRegistration is the body of PUT /v1/agent/service/register.
type AgentServiceRegistration struct {
	Kind              string                          `json:",omitempty"`
	ID                string                          `json:",omitempty"`
	Name              string                          `json:",omitempty"`
	Tags              []string                        `json:",omitempty"`
	Port              int                             `json:",omitempty"`
	Address           string                          `json:",omitempty"`
	TaggedAddresses   map[string]ServiceAddress       `json:",omitempty"`
	EnableTagOverride bool                            `json:",omitempty"`
	Meta              map[string]string               `json:",omitempty"`
	Weights           *AgentWeights                   `json:",omitempty"`
	Check             *AgentServiceCheck              `json:",omitempty"`
	Checks            AgentServiceChecks              `json:",omitempty"`
	Proxy             *AgentServiceConnectProxyConfig `json:",omitempty"`
	Connect           *AgentServiceConnect            `json:",omitempty"`
}

// AgentCheckRegistration is the body of PUT /v1/agent/check/register.
type AgentCheckRegistration struct {
	ID        string `json:",omitempty"`
	Name      string `json:",omitempty"`
	Notes     string `json:",omitempty"`
	ServiceID string `json:",omitempty"`
	AgentServiceCheck
}

// AgentMember is a member of the cluster as an agent knows it. Status is the
// gossip status: 1 alive, 2 leaving, 3 left, 4 failed.
type AgentMember struct {
	Name        string
	Addr        string
	Port        uint16
	Tags        map[string]string
	Status      int
	ProtocolMin uint8
	ProtocolMax uint8
	ProtocolCur uint8
	DelegateMin uint8
	DelegateMax uint8
	DelegateCur uint8
}

// Member statuses.
const (
	MemberStatusNone    = 0
	MemberStatusAlive   = 1
	MemberStatusLeaving = 2
	MemberStatusLeft    = 3
	MemberStatusFailed  = 4
)

// AgentServiceChecksInfo is an entry of /v1/agent/health/service/...: a
// local service with its aggregated status.
type AgentServiceChecksInfo struct {
	AggregatedStatus string
	Service          *AgentService
	Checks           HealthChecks
}

// Node is a node of the catalog.
type Node struct {
	ID              string
	Node            string
	Address         string
	Datacenter      string
	TaggedAddresses map[string]string
	Meta            map[string]string
	CreateIndex     uint64
	ModifyIndex     uint64
}

// CatalogService is one instance of a service with its node, flattened, as
// GET /v1/catalog/service/:name returns it.
type CatalogService struct {
	ID                       string
	Node                     string
	Address                  string
	Datacenter               string
	TaggedAddresses          map[string]string
	NodeMeta                 map[string]string
	ServiceID                string
	ServiceName              string
	ServiceAddress           string
	ServiceTaggedAddresses   map[string]ServiceAddress `json:",omitempty"`
	ServiceTags              []string
	ServiceMeta              map[string]string
	ServicePort              int
	ServiceWeights           AgentWeights
	ServiceEnableTagOverride bool
	ServiceProxy             *AgentServiceConnectProxyConfig `json:",omitempty"`
	CreateIndex              uint64
	ModifyIndex              uint64
}

// CatalogNode is a node with its services (GET /v1/catalog/node/:node).
type CatalogNode struct {
	Node     *Node
	Services map[string]*AgentService
}

// ServiceEntry is one instance of a service with its node and checks
// (GET /v1/health/service/:name).
type ServiceEntry struct {
	Node    *Node
	Service *AgentService
	Checks  HealthChecks
}

// CatalogRegistration is the body of PUT /v1/catalog/register.
type CatalogRegistration struct {
	ID              string
	Node            string
	Address         string
	TaggedAddresses map[string]string
	NodeMeta        map[string]string
	Datacenter      string
	Service         *AgentService
	Check           *AgentCheck
	Checks          HealthChecks
	SkipNodeUpdate  bool
}

// CatalogDeregistration is the body of PUT /v1/catalog/deregister.
type CatalogDeregistration struct {
	Node       string
	Datacenter string
	ServiceID  string
	CheckID    string
}

// RaftServer is one server of the Raft configuration.
type RaftServer struct {
	ID              string
	Node            string
	Address         string
	Leader          bool
	ProtocolVersion string
	Voter           bool
}

// RaftConfiguration is the body of GET /v1/operator/raft/configuration.
type RaftConfiguration struct {
	Servers []*RaftServer
	Index   uint64
}

// KeyringResponse is one answer of /v1/operator/keyring: the keys of the
// members of one pool (Trellis has one, the LAN).
type KeyringResponse struct {
	WAN        bool
	Datacenter string
	Segment    string
	// Messages holds each member's error, by member name.
	Messages map[string]string
	// Keys counts the members holding each key; PrimaryKeys those using it.
	Keys        map[string]int
	PrimaryKeys map[string]int
	// NumNodes is the number of members asked.
	NumNodes int
}

// KeyringRequest is the body of the keyring write operations.
type KeyringRequest struct {
	Key string
}
