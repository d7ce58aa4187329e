package httpapi

import (
	"context"
	"io"
	"time"

	"github.com/trellismesh/trellis/api"
	"github.com/trellismesh/trellis/connect"
	"github.com/trellismesh/trellis/connect/golden"
	"github.com/trellismesh/trellis/connect/intentions"
	"github.com/trellismesh/trellis/connect/proxy"
	"github.com/trellismesh/trellis/raftstore/structs"
)

// Agent is what the HTTP API needs from the agent it serves. The agent
// package implements it; every method is safe for concurrent use.
type Agent interface {
	// RPC reads or writes cluster state: the structs.Method* methods with
	// their request and reply types.
	RPC(ctx context.Context, method string, args, reply any) error

	// Self describes this agent for /v1/agent/self.
	Self() Self
	// Members lists the cluster members this agent knows.
	Members() []api.AgentMember

	// LocalServices returns the services registered on this agent, sorted by
	// ID. The values are copies.
	LocalServices() []*structs.NodeService
	// LocalChecks returns the checks registered on this agent, sorted by ID,
	// with their latest status and output. The values are copies.
	LocalChecks() []*structs.HealthCheck
	// AddService registers (or replaces) a validated service with its
	// checks, whose IDs are set. With replaceExistingChecks, checks of the
	// service that are not in checks are removed.
	AddService(ctx context.Context, svc *structs.NodeService, checks []*structs.CheckType, replaceExistingChecks bool) error
	// RemoveService deregisters a local service and its checks; an unknown
	// ID is an error wrapping structs.ErrNotFound.
	RemoveService(ctx context.Context, id string) error
	// AddCheck registers (or replaces) a validated check; chk.ServiceID, when
	// set, names a local service (else an error wrapping structs.ErrNotFound).
	AddCheck(ctx context.Context, chk *structs.HealthCheck, def *structs.CheckType) error
	// RemoveCheck deregisters a local check; unknown → structs.ErrNotFound.
	RemoveCheck(ctx context.Context, id string) error
	// UpdateTTLCheck sets the status and output of a local TTL check;
	// unknown → structs.ErrNotFound, not a TTL check → *structs.ValidationError.
	UpdateTTLCheck(ctx context.Context, id, status, output string) error

	// Join joins the cluster through the agents at addrs and returns how
	// many answered.
	Join(ctx context.Context, addrs []string) (int, error)
	// Leave leaves the cluster gracefully; the agent shuts down once the
	// answer is sent.
	Leave(ctx context.Context) error
	// ForceLeave forgets a failed member at once.
	ForceLeave(ctx context.Context, node string) error
	// Keyring runs a gossip keyring operation ("list", "install", "use",
	// "remove") on every member; key is base64 (empty for list).
	Keyring(ctx context.Context, op, key string) (*api.KeyringResponse, error)

	// MetricsJSON returns the metrics summary served as JSON.
	MetricsJSON() (any, error)
	// WritePrometheus writes the metrics in Prometheus text format.
	WritePrometheus(w io.Writer) error

	ConnectAgent
}

// ConnectAgent is the mesh side of the agent: what it caches and decides
// for the proxies it runs, served to others too.
type ConnectAgent interface {
	// ConnectRoots returns the trusted roots as this agent holds them
	// (without signing keys). With minIndex above 0 it blocks until they are
	// newer than minIndex or wait has passed (blocking.DefaultWait when 0).
	ConnectRoots(ctx context.Context, minIndex uint64, wait time.Duration) (*structs.IndexedCARoots, error)
	// ConnectLeaf returns the current leaf of service with its private key
	// (PrivateKeyPEM set), signing one first if this agent has none. With
	// minIndex above 0 it blocks until a newer leaf (ModifyIndex above
	// minIndex) replaces it, or wait has passed.
	ConnectLeaf(ctx context.Context, service string, minIndex uint64, wait time.Duration) (*structs.IssuedCert, error)
	// ConnectAuthorize decides whether the holder of a certificate with
	// clientCertURI (a SPIFFE ID) may connect to target, with the
	// intentions this agent holds and its default policy. A URI that is not
	// a service identity of this cluster is a *structs.ValidationError.
	ConnectAuthorize(ctx context.Context, target, clientCertURI string) (intentions.Decision, error)
	// DefaultIntentionAllow reports this agent's default intention policy
	// (connect { default_intention_policy }): true for allow.
	DefaultIntentionAllow() bool
	// DescribeProxy returns a snapshot of the proxy of the local sidecar
	// with service ID id, and the intentions that apply to the service it
	// fronts, in precedence order; false when the agent runs no such proxy.
	DescribeProxy(id string) (proxy.Description, []*connect.Intention, bool)
	// AddMeshSamples adds golden signals a proxy in another process
	// (trellis connect proxy) counted to what this agent reports; the
	// samples are validated. An error when the mesh is disabled.
	AddMeshSamples(samples []golden.Sample) error
}

// Self is the body of /v1/agent/self. Consul's clients read Config.NodeName
// and Config.Datacenter from it.
type Self struct {
	Config SelfConfig
	Member api.AgentMember
	Stats  map[string]map[string]string
	Meta   map[string]string
}

// SelfConfig is the part of the agent's configuration /v1/agent/self shows.
type SelfConfig struct {
	Datacenter        string
	PrimaryDatacenter string
	NodeName          string
	NodeID            string
	Server            bool
	Revision          string
	Version           string
	BuildDate         string `json:",omitempty"`
}
