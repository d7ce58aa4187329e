package configentry

import (
	"github.com/trellismesh/trellis/connect"
)

// The protocols a service may speak, set by service-defaults (or
// proxy-defaults' Config["protocol"]). tcp when none is set.
const (
	ProtocolTCP   = "tcp"
	ProtocolHTTP  = "http"
	ProtocolHTTP2 = "http2"
	ProtocolGRPC  = "grpc"
)

// IsHTTP reports whether protocol is one the proxies handle per request.
func IsHTTP(protocol string) bool {
	return protocol == ProtocolHTTP || protocol == ProtocolHTTP2 || protocol == ProtocolGRPC
}

// ProxyConfigEntry (kind proxy-defaults, name "global") sets defaults for
// every proxy. Config["protocol"] is the default protocol of every service.
type ProxyConfigEntry struct {
	Kind   string
	Name   string
	Config map[string]any    `json:",omitempty"`
	Meta   map[string]string `json:",omitempty"`
	RaftIndex
}

// ServiceConfigEntry (kind service-defaults) sets what a service speaks and
// how its proxies treat connections to and from it.
type ServiceConfigEntry struct {
	Kind     string
	Name     string
	Protocol string `json:",omitempty"`
	// MaxInboundConnections caps concurrent connections (tcp) or requests
	// (http) to one instance's proxy; 0 means no cap.
	MaxInboundConnections int `json:",omitempty"`
	// LocalConnectTimeoutMs bounds the destination proxy's dial of its
	// application; LocalRequestTimeoutMs a request to it (http).
	LocalConnectTimeoutMs int `json:",omitempty"`
	LocalRequestTimeoutMs int `json:",omitempty"`
	// UpstreamConfig sets how this service's proxies call their upstreams:
	// Defaults for all, Overrides per upstream name.
	UpstreamConfig *UpstreamConfiguration `json:",omitempty"`
	Meta           map[string]string      `json:",omitempty"`
	RaftIndex
}

// UpstreamConfiguration holds per-upstream settings of a calling service.
type UpstreamConfiguration struct {
	Overrides []*UpstreamConfig `json:",omitempty"`
	Defaults  *UpstreamConfig   `json:",omitempty"`
}

// UpstreamConfig is how a proxy treats one upstream (Name, in Overrides) or
// all of them (Defaults, Name empty).
type UpstreamConfig struct {
	Name               string              `json:",omitempty"`
	ConnectTimeoutMs   int                 `json:",omitempty"`
	Limits             *UpstreamLimits     `json:",omitempty"`
	PassiveHealthCheck *PassiveHealthCheck `json:",omitempty"`
	// RetryBudget (a Trellis extension) caps retries to this upstream.
	RetryBudget *RetryBudget `json:",omitempty"`
}

// UpstreamLimits is circuit breaking: beyond a limit the proxy answers 503
// (http) or refuses the connection (tcp) and counts it. nil means no limit.
type UpstreamLimits struct {
	MaxConnections        *int `json:",omitempty"`
	MaxPendingRequests    *int `json:",omitempty"`
	MaxConcurrentRequests *int `json:",omitempty"`
}

// PassiveHealthCheck is outlier detection: an instance with MaxFailures
// consecutive 5xx responses or connect failures is ejected for
// BaseEjectionTime times the number of times it was ejected, never more
// than MaxEjectionPercent of the instances at once.
type PassiveHealthCheck struct {
	// Interval between ejection sweeps (default 10s).
	Interval Duration `json:",omitempty"`
	// MaxFailures consecutive failures eject (default 5).
	MaxFailures uint32 `json:",omitempty"`
	// EnforcingConsecutive5xx is the percent chance an ejection by 5xx is
	// enforced (default 100).
	EnforcingConsecutive5xx *uint32 `json:",omitempty"`
	// MaxEjectionPercent of instances may be ejected at once (default 10,
	// at least one instance).
	MaxEjectionPercent *uint32 `json:",omitempty"`
	// BaseEjectionTime is the first ejection's length (default 30s).
	BaseEjectionTime *Duration `json:",omitempty"`
}

// RetryBudget caps retries to a share of the requests in flight, so that
// retries cannot multiply load on a failing upstream.
type RetryBudget struct {
	// Percent of active requests that may be retries (default 20).
	Percent float64 `json:",omitempty"`
	// MinRetryConcurrency retries are always allowed (default 3).
	MinRetryConcurrency int `json:",omitempty"`
}

// ServiceRouterConfigEntry (kind service-router) routes HTTP requests for a
// service by path, header, query parameter and method. The first route that
// matches decides; a request no route matches goes to the service itself.
type ServiceRouterConfigEntry struct {
	Kind   string
	Name   string
	Routes []ServiceRoute    `json:",omitempty"`
	Meta   map[string]string `json:",omitempty"`
	RaftIndex
}

// ServiceRoute is one route: a match and where it leads.
type ServiceRoute struct {
	Match       *ServiceRouteMatch       `json:",omitempty"`
	Destination *ServiceRouteDestination `json:",omitempty"`
}

// ServiceRouteMatch matches requests; nil matches all.
type ServiceRouteMatch struct {
	HTTP *ServiceRouteHTTPMatch `json:",omitempty"`
}

// ServiceRouteHTTPMatch matches an HTTP request: every field set must match,
// at most one path field is set.
type ServiceRouteHTTPMatch struct {
	PathExact  string                            `json:",omitempty"`
	PathPrefix string                            `json:",omitempty"`
	PathRegex  string                            `json:",omitempty"`
	Header     []ServiceRouteHTTPMatchHeader     `json:",omitempty"`
	QueryParam []ServiceRouteHTTPMatchQueryParam `json:",omitempty"`
	Methods    []string                          `json:",omitempty"`
}

// ServiceRouteHTTPMatchHeader matches one header: exactly one of Present,
// Exact, Prefix, Suffix, Regex; Invert negates.
type ServiceRouteHTTPMatchHeader struct {
	Name    string
	Present bool   `json:",omitempty"`
	Exact   string `json:",omitempty"`
	Prefix  string `json:",omitempty"`
	Suffix  string `json:",omitempty"`
	Regex   string `json:",omitempty"`
	Invert  bool   `json:",omitempty"`
}

// ServiceRouteHTTPMatchQueryParam matches one query parameter: exactly one
// of Present, Exact, Regex.
type ServiceRouteHTTPMatchQueryParam struct {
	Name    string
	Present bool   `json:",omitempty"`
	Exact   string `json:",omitempty"`
	Regex   string `json:",omitempty"`
}

// ServiceRouteDestination is where a matched request goes, and how.
type ServiceRouteDestination struct {
	// Service defaults to the router's service; ServiceSubset to the
	// resolver's default subset.
	Service       string `json:",omitempty"`
	ServiceSubset string `json:",omitempty"`
	// PrefixRewrite replaces the matched PathExact or PathPrefix.
	PrefixRewrite  string   `json:",omitempty"`
	RequestTimeout Duration `json:",omitempty"`
	IdleTimeout    Duration `json:",omitempty"`
	NumRetries     uint32   `json:",omitempty"`
	// RetryOnConnectFailure retries a request whose connection failed.
	RetryOnConnectFailure bool `json:",omitempty"`
	// RetryOnStatusCodes retries a request answered with one of these.
	RetryOnStatusCodes []uint32 `json:",omitempty"`
	// RetryOn names Envoy-style conditions; Trellis honours "5xx",
	// "gateway-error", "reset", "connect-failure", "retriable-status-codes".
	RetryOn         []string             `json:",omitempty"`
	RequestHeaders  *HTTPHeaderModifiers `json:",omitempty"`
	ResponseHeaders *HTTPHeaderModifiers `json:",omitempty"`
}

// HTTPHeaderModifiers change headers: Add appends, Set replaces, Remove
// deletes.
type HTTPHeaderModifiers struct {
	Add    map[string]string `json:",omitempty"`
	Set    map[string]string `json:",omitempty"`
	Remove []string          `json:",omitempty"`
}

// ServiceSplitterConfigEntry (kind service-splitter) splits a service's
// requests (http) or connections (tcp is refused: splitting needs http) by
// weight. Weights sum to 100.
type ServiceSplitterConfigEntry struct {
	Kind   string
	Name   string
	Splits []ServiceSplit    `json:",omitempty"`
	Meta   map[string]string `json:",omitempty"`
	RaftIndex
}

// ServiceSplit is one share of a split.
type ServiceSplit struct {
	// Weight in percent, at most two decimals.
	Weight float32
	// Service defaults to the splitter's service.
	Service         string               `json:",omitempty"`
	ServiceSubset   string               `json:",omitempty"`
	RequestHeaders  *HTTPHeaderModifiers `json:",omitempty"`
	ResponseHeaders *HTTPHeaderModifiers `json:",omitempty"`
}

// ServiceResolverConfigEntry (kind service-resolver) says which instances
// of a service serve it: subsets, a redirect to another service, failover
// when none is healthy, timeouts and the load-balancing policy.
type ServiceResolverConfigEntry struct {
	Kind          string
	Name          string
	DefaultSubset string                           `json:",omitempty"`
	Subsets       map[string]ServiceResolverSubset `json:",omitempty"`
	Redirect      *ServiceResolverRedirect         `json:",omitempty"`
	// Failover by subset name ("*" for any).
	Failover       map[string]ServiceResolverFailover `json:",omitempty"`
	ConnectTimeout Duration                           `json:",omitempty"`
	RequestTimeout Duration                           `json:",omitempty"`
	// DrainTimeout (a Trellis extension) bounds how long established TCP
	// connections to instances no longer chosen (after a redirect, say) are
	// kept; 0 keeps them until they close.
	DrainTimeout Duration          `json:",omitempty"`
	LoadBalancer *LoadBalancer     `json:",omitempty"`
	Meta         map[string]string `json:",omitempty"`
	RaftIndex
}

// ServiceResolverSubset selects instances by a go-bexpr filter over
// {Node, Service{ID, Service, Tags, Meta, Port}} (for example
// `Service.Meta.version == v1`).
type ServiceResolverSubset struct {
	Filter      string `json:",omitempty"`
	OnlyPassing bool   `json:",omitempty"`
}

// ServiceResolverRedirect sends the whole service elsewhere.
type ServiceResolverRedirect struct {
	Service       string `json:",omitempty"`
	ServiceSubset string `json:",omitempty"`
	Datacenter    string `json:",omitempty"`
}

// ServiceResolverFailover lists where to go when a target has no healthy
// instance: Service/ServiceSubset, or Targets in order.
type ServiceResolverFailover struct {
	Service       string                          `json:",omitempty"`
	ServiceSubset string                          `json:",omitempty"`
	Datacenters   []string                        `json:",omitempty"`
	Targets       []ServiceResolverFailoverTarget `json:",omitempty"`
}

// ServiceResolverFailoverTarget is one failover target.
type ServiceResolverFailoverTarget struct {
	Service       string `json:",omitempty"`
	ServiceSubset string `json:",omitempty"`
	Datacenter    string `json:",omitempty"`
}

// Load-balancing policies.
const (
	LBRoundRobin   = "round_robin"
	LBLeastRequest = "least_request"
	LBRingHash     = "ring_hash"
	LBMaglev       = "maglev"
	LBRandom       = "random"
)

// LoadBalancer picks among a target's instances. An empty Policy is the
// proxies' default (power of two choices on active requests, which is
// least_request with ChoiceCount 2).
type LoadBalancer struct {
	Policy             string              `json:",omitempty"`
	RingHashConfig     *RingHashConfig     `json:",omitempty"`
	LeastRequestConfig *LeastRequestConfig `json:",omitempty"`
	HashPolicies       []HashPolicy        `json:",omitempty"`
}

// RingHashConfig sizes the ring of ring_hash.
type RingHashConfig struct {
	MinimumRingSize uint64 `json:",omitempty"`
	MaximumRingSize uint64 `json:",omitempty"`
}

// LeastRequestConfig sets how many instances least_request compares.
type LeastRequestConfig struct {
	ChoiceCount uint32 `json:",omitempty"`
}

// HashPolicy says what ring_hash and maglev hash: Field ("header",
// "cookie", "query_parameter") named by FieldValue, or SourceIP.
type HashPolicy struct {
	Field      string `json:",omitempty"`
	FieldValue string `json:",omitempty"`
	SourceIP   bool   `json:",omitempty"`
	Terminal   bool   `json:",omitempty"`
}

// ServiceIntentionsConfigEntry (kind service-intentions) holds every
// intention whose destination is Name ("*" for all), with L7 permissions.
type ServiceIntentionsConfigEntry struct {
	Kind    string
	Name    string
	Sources []*SourceIntention `json:",omitempty"`
	Meta    map[string]string  `json:",omitempty"`
	RaftIndex
}

// SourceIntention is one source's intention: an Action (allow, deny) or
// Permissions evaluated in order, never both.
type SourceIntention struct {
	Name        string
	Action      string                         `json:",omitempty"`
	Permissions []*connect.IntentionPermission `json:",omitempty"`
	Precedence  int                            `json:",omitempty"`
	Type        string                         `json:",omitempty"`
	Description string                         `json:",omitempty"`
	// LegacyID is the ID of the intention this source came from when it was
	// written through /v1/connect/intentions.
	LegacyID   string            `json:",omitempty"`
	LegacyMeta map[string]string `json:",omitempty"`
}

// GetKind returns the kind.
func (e *ProxyConfigEntry) GetKind() string { return ProxyDefaults }

// GetName returns the name.
func (e *ProxyConfigEntry) GetName() string { return e.Name }

// GetMeta returns the metadata.
func (e *ProxyConfigEntry) GetMeta() map[string]string { return e.Meta }

// GetKind returns the kind.
func (e *ServiceConfigEntry) GetKind() string { return ServiceDefaults }

// GetName returns the name.
func (e *ServiceConfigEntry) GetName() string { return e.Name }

// GetMeta returns the metadata.
func (e *ServiceConfigEntry) GetMeta() map[string]string { return e.Meta }

// GetKind returns the kind.
func (e *ServiceRouterConfigEntry) GetKind() string { return ServiceRouter }

// GetName returns the name.
func (e *ServiceRouterConfigEntry) GetName() string { return e.Name }

// GetMeta returns the metadata.
func (e *ServiceRouterConfigEntry) GetMeta() map[string]string { return e.Meta }

// GetKind returns the kind.
func (e *ServiceSplitterConfigEntry) GetKind() string { return ServiceSplitter }

// GetName returns the name.
func (e *ServiceSplitterConfigEntry) GetName() string { return e.Name }

// GetMeta returns the metadata.
func (e *ServiceSplitterConfigEntry) GetMeta() map[string]string { return e.Meta }

// GetKind returns the kind.
func (e *ServiceResolverConfigEntry) GetKind() string { return ServiceResolver }

// GetName returns the name.
func (e *ServiceResolverConfigEntry) GetName() string { return e.Name }

// GetMeta returns the metadata.
func (e *ServiceResolverConfigEntry) GetMeta() map[string]string { return e.Meta }

// GetKind returns the kind.
func (e *ServiceIntentionsConfigEntry) GetKind() string { return ServiceIntentions }

// GetName returns the name.
func (e *ServiceIntentionsConfigEntry) GetName() string { return e.Name }

// GetMeta returns the metadata.
func (e *ServiceIntentionsConfigEntry) GetMeta() map[string]string { return e.Meta }
