package structs

import "time"

// RPC method names. A method is addressed the same way whether it runs in
// process (a server agent) or is forwarded over the internal RPC (a client
// agent, or a follower forwarding a write to the leader).
const (
	MethodCatalogRegister        = "Catalog.Register"              // RegisterRequest → WriteReply
	MethodCatalogDeregister      = "Catalog.Deregister"            // DeregisterRequest → WriteReply
	MethodCatalogListDatacenters = "Catalog.ListDatacenters"       // DCSpecificRequest → []string
	MethodCatalogListNodes       = "Catalog.ListNodes"             // DCSpecificRequest → IndexedNodes
	MethodCatalogListServices    = "Catalog.ListServices"          // DCSpecificRequest → IndexedServices
	MethodCatalogServiceNodes    = "Catalog.ServiceNodes"          // ServiceSpecificRequest → IndexedServiceNodes
	MethodCatalogNodeServices    = "Catalog.NodeServices"          // NodeSpecificRequest → IndexedNodeServices
	MethodHealthChecksInState    = "Health.ChecksInState"          // ChecksInStateRequest → IndexedHealthChecks
	MethodHealthNodeChecks       = "Health.NodeChecks"             // NodeSpecificRequest → IndexedHealthChecks
	MethodHealthServiceChecks    = "Health.ServiceChecks"          // ServiceSpecificRequest → IndexedHealthChecks
	MethodHealthServiceNodes     = "Health.ServiceNodes"           // ServiceSpecificRequest → IndexedCheckServiceNodes
	MethodStatusLeader           = "Status.Leader"                 // struct{} → string (the leader's RPC address, "" when none)
	MethodStatusPeers            = "Status.Peers"                  // struct{} → []string (voters' RPC addresses)
	MethodOperatorRaftConfig     = "Operator.RaftGetConfiguration" // DCSpecificRequest → RaftConfigurationResponse
	MethodOperatorRaftRemovePeer = "Operator.RaftRemovePeer"       // RaftRemovePeerRequest → struct{}
	MethodStatusRaftStats        = "Status.RaftStats"              // struct{} → RaftStats (of the server asked)
)

// RaftRemovePeerRequest removes a server from the Raft configuration, named
// by its ID or its server address.
type RaftRemovePeerRequest struct {
	Datacenter string
	ID         string
	Address    string
	WriteRequest
}

// RaftStats is a server's view of its own Raft log, for the leader's health
// checks of other servers.
type RaftStats struct {
	// LastIndex and AppliedIndex are the server's last log entry and the
	// last it applied.
	LastIndex, AppliedIndex uint64
	// LastContact is the time since it heard from the leader (0 on the leader).
	LastContact time.Duration
	// Term is its current term; State "Leader", "Follower" or "Candidate".
	Term  uint64
	State string
}

// RaftServer is one server of the Raft configuration.
type RaftServer struct {
	// ID is the server's Raft ID (its node ID, or its name).
	ID string
	// Node is the server's node name.
	Node string
	// Address is the server-port address other servers dial.
	Address string
	// Leader reports whether this server is the leader.
	Leader bool
	// Voter reports whether it votes (a non-voter only replicates).
	Voter bool
}

// RaftConfigurationResponse is the Raft configuration as the leader knows it.
type RaftConfigurationResponse struct {
	Servers []*RaftServer
	// Index is the log index of the configuration.
	Index uint64
}

// QueryOptions are the read options every query carries.
type QueryOptions struct {
	// MinQueryIndex, when above 0, makes the query blocking: it returns once
	// the result's index is above it, or when MaxQueryTime has passed.
	MinQueryIndex uint64
	// MaxQueryTime bounds a blocking query. The server caps it (10 min) and
	// applies its default (5 min) when zero.
	MaxQueryTime time.Duration
	// AllowStale lets any server answer from its own state (?stale).
	AllowStale bool
	// RequireConsistent makes the leader confirm its leadership first (?consistent).
	RequireConsistent bool
	// Token is the caller's ACL token; never logged.
	Token string `json:",omitempty"`
}

// RequestToken returns the caller's ACL token, for the Authorizer.
func (q *QueryOptions) RequestToken() string { return q.Token }

// SetRequestToken sets the caller's token when the request has none.
func (q *QueryOptions) SetRequestToken(t string) {
	if q.Token == "" {
		q.Token = t
	}
}

// ClearRequestToken forgets the token, once the request is authorized.
func (q *QueryOptions) ClearRequestToken() { q.Token = "" }

// QueryMeta is what every query reply says about the answer.
type QueryMeta struct {
	// Index is the Raft index of the result: it moves only when the result
	// may have changed. Never 0.
	Index uint64
	// LastContact is the time since the answering server last heard from the
	// leader; 0 on the leader.
	LastContact time.Duration
	// KnownLeader reports whether the answering server knows a leader.
	KnownLeader bool
}

// QueryOpts returns the options; it lets generic code reach them.
func (q *QueryOptions) QueryOpts() *QueryOptions { return q }

// QueryMetaPtr returns the meta; it lets generic code fill it.
func (m *QueryMeta) QueryMetaPtr() *QueryMeta { return m }

// WriteRequest carries what every write carries (the caller's token, later).
type WriteRequest struct {
	// Token is the caller's ACL token; unused until ACLs exist, never logged.
	Token string `json:",omitempty"`
}

// RequestToken returns the caller's ACL token, for the Authorizer.
func (w *WriteRequest) RequestToken() string { return w.Token }

// SetRequestToken sets the caller's token when the request has none.
func (w *WriteRequest) SetRequestToken(t string) {
	if w.Token == "" {
		w.Token = t
	}
}

// ClearRequestToken forgets the token, once the request is authorized, so
// that it never reaches the Raft log.
func (w *WriteRequest) ClearRequestToken() { w.Token = "" }

// WriteReply is the reply of a write: the Raft index it was applied at.
type WriteReply struct {
	Index uint64
}

// RegisterRequest registers or updates a node and, optionally, one service
// and its checks on it. It is the body of Catalog.Register and of the
// RegisterRequestType log entry.
type RegisterRequest struct {
	Datacenter      string
	ID              string
	Node            string
	Address         string
	TaggedAddresses map[string]string
	NodeMeta        map[string]string
	Service         *NodeService
	Check           *HealthCheck
	Checks          HealthChecks
	// SkipNodeUpdate leaves an existing node's fields as they are.
	SkipNodeUpdate bool
	WriteRequest
}

// DeregisterRequest removes a node (when ServiceID and CheckID are empty), a
// service instance with its checks, or one check.
type DeregisterRequest struct {
	Datacenter string
	Node       string
	ServiceID  string
	CheckID    string
	WriteRequest
}

// DCSpecificRequest is a query over a whole datacenter.
type DCSpecificRequest struct {
	Datacenter      string
	NodeMetaFilters map[string]string
	QueryOptions
}

// ServiceSpecificRequest is a query about one service by name.
type ServiceSpecificRequest struct {
	Datacenter  string
	ServiceName string
	// ServiceTags keeps instances that carry every one of these tags (when TagFilter).
	ServiceTags []string
	TagFilter   bool
	// PassingOnly keeps instances whose checks are all passing (Health.ServiceNodes).
	PassingOnly bool
	// Connect asks for the mesh endpoints of the service instead of its
	// instances: the sidecar proxies whose destination is ServiceName (with
	// the checks of the instance each proxies folded in) and instances that
	// are mesh-native.
	Connect         bool
	NodeMetaFilters map[string]string
	QueryOptions
}

// NodeSpecificRequest is a query about one node by name.
type NodeSpecificRequest struct {
	Datacenter string
	Node       string
	QueryOptions
}

// ChecksInStateRequest asks for the checks in one state (or HealthAny).
type ChecksInStateRequest struct {
	Datacenter string
	State      string
	QueryOptions
}

// IndexedNodes is the reply of Catalog.ListNodes, sorted by node name.
type IndexedNodes struct {
	Nodes Nodes
	QueryMeta
}

// IndexedServices is the reply of Catalog.ListServices: each service name with
// the union of its instances' tags (sorted, without duplicates).
type IndexedServices struct {
	Services map[string][]string
	QueryMeta
}

// IndexedServiceNodes is the reply of Catalog.ServiceNodes, in the same order
// as Health.ServiceNodes for the same service (by node name, then service ID).
type IndexedServiceNodes struct {
	ServiceNodes []ServiceNode
	QueryMeta
}

// IndexedNodeServices is the reply of Catalog.NodeServices; NodeServices is
// nil when the node is not known.
type IndexedNodeServices struct {
	NodeServices *NodeServices
	QueryMeta
}

// IndexedHealthChecks is a list of checks, sorted by node then check ID.
type IndexedHealthChecks struct {
	HealthChecks HealthChecks
	QueryMeta
}

// IndexedCheckServiceNodes is the reply of Health.ServiceNodes, in the same
// order as Catalog.ServiceNodes (by node name, then service ID).
type IndexedCheckServiceNodes struct {
	Nodes []CheckServiceNode
	QueryMeta
}
