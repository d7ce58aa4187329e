package api

import (
	"encoding/json"
	"errors"
	"net/url"
	"time"
)

// ProxyConfig is the answer of GET /v1/agent/connect/proxy-config/{id} (a
// Trellis path; Consul has none): what a sidecar proxy the agent runs does.
type ProxyConfig struct {
	Proxy ProxyDescription
	// Intentions apply to the proxy's service, in precedence order.
	Intentions []*Intention
	// DefaultIntentionPolicy is "allow" or "deny".
	DefaultIntentionPolicy string
}

// ProxyDescription is a snapshot of a running proxy.
type ProxyDescription struct {
	ProxyID       string
	Service       string
	PublicAddr    string
	LocalAppAddr  string
	ServiceConfig ProxyServiceConfig
	Upstreams     []ProxyUpstream
	// Certificate is the leaf in use; nil while the proxy has none.
	Certificate *ProxyCertificate
	// TrustBundle is what the proxy trusts; nil while it has none.
	TrustBundle *ProxyTrustBundle
}

// ProxyServiceConfig is what config entries say of the proxy's service.
// Durations are Go duration strings ("5s").
type ProxyServiceConfig struct {
	Protocol              string
	LocalConnectTimeout   string
	LocalRequestTimeout   string
	MaxInboundConnections int
}

// ProxyUpstream is one upstream listener and where it leads.
type ProxyUpstream struct {
	DestinationName string
	LocalAddr       string
	Protocol        string
	// Mode is "tcp" (connections) or "l7" (HTTP requests).
	Mode string
	// Chain is the discovery chain followed; nil when none.
	Chain *ProxyChain
	// Targets are the chain's targets with their instances.
	Targets []ProxyTarget
	// Instances are the upstream's instances when it follows no chain.
	Instances         []ProxyInstance
	ActiveConnections int64
	// Config is the upstream config (limits, passive health checks, retry
	// budget) as the agent encodes it; null for the defaults.
	Config json.RawMessage
}

// ProxyChain is the part of a discovery chain an upstream follows.
type ProxyChain struct {
	ServiceName  string
	Protocol     string
	Default      bool
	StartNode    string
	Target       string
	Failover     []string
	DrainTimeout string
}

// ProxyTarget is a target of an upstream's chain.
type ProxyTarget struct {
	ID       string
	Identity string
	// Role is "primary", "failover" or "route".
	Role      string
	Instances []ProxyInstance
}

// ProxyInstance is an instance an upstream may dial.
type ProxyInstance struct {
	Addr              string
	Node              string
	Identity          string
	ActiveConnections int64
	BackedOff         bool
	BackoffUntil      time.Time
	// ActiveRequests, ConsecutiveFailures and Ejected (until EjectedUntil,
	// by passive health checks) are the L7 balancer's view.
	ActiveRequests      int64
	ConsecutiveFailures uint32
	Ejected             bool
	EjectedUntil        time.Time
}

// ProxyCertificate is the proxy's leaf certificate.
type ProxyCertificate struct {
	SpiffeID  string
	Serial    string
	NotBefore time.Time
	NotAfter  time.Time
	Error     string
}

// ProxyTrustBundle is the proxy's trust bundle.
type ProxyTrustBundle struct {
	TrustDomain  string
	ActiveRootID string
	Roots        int
}

// ProxyConfig describes the sidecar proxy with service ID id that the agent
// runs. An ID the agent runs no proxy for is an error with status 404.
func (a *Agent) ProxyConfig(id string, q *QueryOptions) (*ProxyConfig, *QueryMeta, error) {
	if id == "" {
		return nil, nil, errors.New("proxy ID is empty")
	}
	var out ProxyConfig
	meta, err := a.c.query("/v1/agent/connect/proxy-config/"+url.PathEscape(id), &out, q, nil)
	if err != nil {
		return nil, nil, err
	}
	return &out, meta, nil
}
