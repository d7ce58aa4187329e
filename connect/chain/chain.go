// Package chain compiles a service's config entries into its discovery
// chain: the graph of routers, splitters and resolvers that decides, for
// one request or connection to the service, which target (service, subset,
// datacenter) serves it. The outbound proxy evaluates the compiled chain;
// the JSON form is Consul's CompiledDiscoveryChain.
package chain

import (
	"github.com/trellismesh/trellis/connect/configentry"
)

// Node types.
const (
	NodeRouter   = "router"
	NodeSplitter = "splitter"
	NodeResolver = "resolver"
)

// Chain is a compiled discovery chain.
type Chain struct {
	ServiceName string
	Datacenter  string
	// Protocol is the service's protocol (tcp, http, http2, grpc).
	Protocol string
	// Default reports that no entry shaped the chain: it is the service
	// itself, resolved with defaults.
	Default bool
	// StartNode names the node evaluation begins at.
	StartNode string
	Nodes     map[string]*Node
	Targets   map[string]*Target

	// eval is what Route precomputes, once (see Prepare); never encoded.
	eval evalState
}

// Node is one step of the chain.
type Node struct {
	Type string
	Name string
	// Routes (router): tried in order; the last one matches everything and
	// leads to the service's default.
	Routes []*Route `json:",omitempty"`
	// Splits (splitter): weights sum to 100.
	Splits []*Split `json:",omitempty"`
	// Resolver (resolver): the target and its failover.
	Resolver     *Resolver                 `json:",omitempty"`
	LoadBalancer *configentry.LoadBalancer `json:",omitempty"`
}

// Route is one route of a router node.
type Route struct {
	Definition *configentry.ServiceRoute
	NextNode   string
}

// Split is one share of a splitter node.
type Split struct {
	Definition *configentry.ServiceSplit
	Weight     float32
	NextNode   string
}

// Resolver is a resolver node's decision.
type Resolver struct {
	// Default reports that no service-resolver entry exists for it.
	Default        bool
	ConnectTimeout configentry.Duration
	RequestTimeout configentry.Duration `json:",omitempty"`
	// DrainTimeout bounds established TCP connections to instances of
	// targets the chain no longer leads to; 0 waits for them to close.
	DrainTimeout configentry.Duration `json:",omitempty"`
	// Target is the ID of the target it resolves to.
	Target string
	// Failover, when set, lists targets to use in order when Target has no
	// healthy instance.
	Failover *Failover `json:",omitempty"`
}

// Failover lists failover target IDs in order.
type Failover struct {
	Targets []string
}

// Target is a set of instances: a service's, filtered by a subset.
type Target struct {
	// ID is "[subset.]service.default.default.datacenter" as Consul writes it.
	ID            string
	Service       string
	ServiceSubset string `json:",omitempty"`
	Datacenter    string
	// Subset is the filter that selects the target's instances among the
	// healthy instances of Service.
	Subset         configentry.ServiceResolverSubset
	ConnectTimeout configentry.Duration
	// Name is the identity the target's certificates carry (Service).
	Name string
}

// Request is what Compile needs.
type Request struct {
	ServiceName string
	Datacenter  string
	Entries     configentry.Set
}
