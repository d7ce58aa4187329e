package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"path"
	"strconv"
	"strings"
)

// The kinds of config entry.
const (
	ProxyDefaults     = "proxy-defaults"
	ServiceDefaults   = "service-defaults"
	ServiceRouter     = "service-router"
	ServiceSplitter   = "service-splitter"
	ServiceResolver   = "service-resolver"
	ServiceIntentions = "service-intentions"
)

// ProxyConfigGlobal is the only name of a proxy-defaults entry.
const ProxyConfigGlobal = "global"

// ConfigEntry is a config entry of any kind: one of the *...ConfigEntry
// types of this package.
type ConfigEntry interface {
	GetKind() string
	GetName() string
	GetMeta() map[string]string
	GetCreateIndex() uint64
	GetModifyIndex() uint64
}

// MakeConfigEntry returns an empty entry of kind named name.
func MakeConfigEntry(kind, name string) (ConfigEntry, error) {
	switch kind {
	case ProxyDefaults:
		return &ProxyConfigEntry{Kind: kind, Name: name}, nil
	case ServiceDefaults:
		return &ServiceConfigEntry{Kind: kind, Name: name}, nil
	case ServiceRouter:
		return &ServiceRouterConfigEntry{Kind: kind, Name: name}, nil
	case ServiceSplitter:
		return &ServiceSplitterConfigEntry{Kind: kind, Name: name}, nil
	case ServiceResolver:
		return &ServiceResolverConfigEntry{Kind: kind, Name: name}, nil
	case ServiceIntentions:
		return &ServiceIntentionsConfigEntry{Kind: kind, Name: name}, nil
	}
	return nil, fmt.Errorf("invalid config entry kind %q", kind)
}

// DecodeConfigEntry decodes an entry from its JSON form read into a map
// (json.Unmarshal into map[string]any), choosing the type by its Kind.
func DecodeConfigEntry(raw map[string]any) (ConfigEntry, error) {
	kind, _ := raw["Kind"].(string)
	if kind == "" {
		kind, _ = raw["kind"].(string)
	}
	if kind == "" {
		return nil, errors.New("config entry has no Kind")
	}
	b, err := json.Marshal(raw)
	if err != nil {
		return nil, fmt.Errorf("config entry of kind %s: %w", kind, err)
	}
	return decodeEntryJSON(kind, b)
}

// DecodeConfigEntryFromJSON decodes an entry from JSON, choosing the type
// by its Kind.
func DecodeConfigEntryFromJSON(data []byte) (ConfigEntry, error) {
	var raw map[string]any
	if err := json.Unmarshal(data, &raw); err != nil {
		return nil, fmt.Errorf("config entry: %w", err)
	}
	return DecodeConfigEntry(raw)
}

func decodeEntryJSON(kind string, b []byte) (ConfigEntry, error) {
	e, err := MakeConfigEntry(kind, "")
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(b, e); err != nil {
		return nil, fmt.Errorf("config entry of kind %s: %w", kind, err)
	}
	return e, nil
}

// ConfigEntries returns the client of the config entry endpoints.
func (c *Client) ConfigEntries() *ConfigEntries { return &ConfigEntries{c: c} }

// ConfigEntries is the client of /v1/config.
type ConfigEntries struct{ c *Client }

// Set creates or replaces an entry. It reports whether it was written.
func (h *ConfigEntries) Set(entry ConfigEntry, w *WriteOptions) (bool, *WriteMeta, error) {
	return h.set(entry, nil, w)
}

// CAS writes an entry only when the stored one's ModifyIndex is index (0:
// only when there is none). It reports false, without an error, when the
// index did not match.
func (h *ConfigEntries) CAS(entry ConfigEntry, index uint64, w *WriteOptions) (bool, *WriteMeta, error) {
	return h.set(entry, url.Values{"cas": {strconv.FormatUint(index, 10)}}, w)
}

func (h *ConfigEntries) set(entry ConfigEntry, extra url.Values, w *WriteOptions) (bool, *WriteMeta, error) {
	if entry == nil {
		return false, nil, errors.New("config entry is nil")
	}
	var ok bool
	meta, err := h.c.send(http.MethodPut, "/v1/config", entry, &ok, w, extra)
	if err != nil {
		return false, nil, err
	}
	return ok, meta, nil
}

// WriteSource writes the entry in src, HCL or JSON as written in a file,
// which the agent decodes, naming filename:line:col in its errors (a
// Trellis addition to Consul's API). The format comes from filename's
// extension (.hcl, .json), else from src: JSON when it starts with '{'.
// With cas, it writes only when the stored entry's ModifyIndex is index.
func (h *ConfigEntries) WriteSource(src []byte, filename string, cas bool, index uint64, w *WriteOptions) (bool, *WriteMeta, error) {
	format := "hcl"
	switch strings.ToLower(path.Ext(filename)) {
	case ".json":
		format = "json"
	case ".hcl":
	default:
		if t := bytes.TrimSpace(src); len(t) > 0 && t[0] == '{' {
			format = "json"
		}
	}
	extra := url.Values{"format": {format}, "filename": {filename}}
	if cas {
		extra.Set("cas", strconv.FormatUint(index, 10))
	}
	var ok bool
	meta, err := h.c.send(http.MethodPut, "/v1/config", bytes.NewReader(src), &ok, w, extra)
	if err != nil {
		return false, nil, err
	}
	return ok, meta, nil
}

// Get returns the entry of kind and name. An entry that does not exist is
// a *StatusError with Code 404.
func (h *ConfigEntries) Get(kind, name string, q *QueryOptions) (ConfigEntry, *QueryMeta, error) {
	if kind == "" || name == "" {
		return nil, nil, errors.New("config entry kind and name must not be empty")
	}
	e, err := MakeConfigEntry(kind, name)
	if err != nil {
		return nil, nil, err
	}
	meta, err := h.c.query("/v1/config/"+url.PathEscape(kind)+"/"+url.PathEscape(name), e, q, nil)
	if err != nil {
		return nil, nil, err
	}
	return e, meta, nil
}

// List returns the entries of kind, by name. It blocks with q.WaitIndex.
func (h *ConfigEntries) List(kind string, q *QueryOptions) ([]ConfigEntry, *QueryMeta, error) {
	if kind == "" {
		return nil, nil, errors.New("config entry kind must not be empty")
	}
	var raw []json.RawMessage
	meta, err := h.c.query("/v1/config/"+url.PathEscape(kind), &raw, q, nil)
	if err != nil {
		return nil, nil, err
	}
	out := make([]ConfigEntry, 0, len(raw))
	for _, b := range raw {
		var k struct{ Kind string }
		if err := json.Unmarshal(b, &k); err != nil {
			return nil, nil, fmt.Errorf("config entry list: %w", err)
		}
		e, err := decodeEntryJSON(k.Kind, b)
		if err != nil {
			return nil, nil, err
		}
		out = append(out, e)
	}
	return out, meta, nil
}

// Delete deletes the entry of kind and name; deleting one that does not
// exist is not an error.
func (h *ConfigEntries) Delete(kind, name string, w *WriteOptions) (*WriteMeta, error) {
	_, meta, err := h.delete(kind, name, nil, w)
	return meta, err
}

// DeleteCAS deletes the entry only when its ModifyIndex is index, and
// reports whether it did.
func (h *ConfigEntries) DeleteCAS(kind, name string, index uint64, w *WriteOptions) (bool, *WriteMeta, error) {
	return h.delete(kind, name, url.Values{"cas": {strconv.FormatUint(index, 10)}}, w)
}

func (h *ConfigEntries) delete(kind, name string, extra url.Values, w *WriteOptions) (bool, *WriteMeta, error) {
	if kind == "" || name == "" {
		return false, nil, errors.New("config entry kind and name must not be empty")
	}
	var out struct{ Deleted bool }
	meta, err := h.c.send(http.MethodDelete, "/v1/config/"+url.PathEscape(kind)+"/"+url.PathEscape(name), nil, &out, w, extra)
	if err != nil {
		return false, nil, err
	}
	return out.Deleted, meta, nil
}

// DiscoveryChain returns the client of /v1/discovery-chain.
func (c *Client) DiscoveryChain() *DiscoveryChain { return &DiscoveryChain{c: c} }

// DiscoveryChain is the client of /v1/discovery-chain.
type DiscoveryChain struct{ c *Client }

// Get returns the compiled discovery chain of service. It blocks with
// q.WaitIndex until a config entry changes.
func (h *DiscoveryChain) Get(service string, q *QueryOptions) (*DiscoveryChainResponse, *QueryMeta, error) {
	if service == "" {
		return nil, nil, errors.New("service name must not be empty")
	}
	var out DiscoveryChainResponse
	meta, err := h.c.query("/v1/discovery-chain/"+url.PathEscape(service), &out, q, nil)
	if err != nil {
		return nil, nil, err
	}
	return &out, meta, nil
}

// DiscoveryChainResponse is the answer of /v1/discovery-chain.
type DiscoveryChainResponse struct {
	Chain *CompiledDiscoveryChain
}

// CompiledDiscoveryChain is the graph of routers, splitters and resolvers
// that decides which target serves a request to a service.
type CompiledDiscoveryChain struct {
	ServiceName string
	Datacenter  string
	// Protocol is the service's protocol (tcp, http, http2, grpc).
	Protocol string
	// Default reports that no entry shaped the chain.
	Default bool
	// StartNode names the node evaluation begins at.
	StartNode string
	Nodes     map[string]*DiscoveryGraphNode
	Targets   map[string]*DiscoveryTarget
}

// The types of DiscoveryGraphNode.
const (
	DiscoveryGraphNodeTypeRouter   = "router"
	DiscoveryGraphNodeTypeSplitter = "splitter"
	DiscoveryGraphNodeTypeResolver = "resolver"
)

// DiscoveryGraphNode is one step of a chain.
type DiscoveryGraphNode struct {
	Type         string
	Name         string
	Routes       []*DiscoveryRoute  `json:",omitempty"`
	Splits       []*DiscoverySplit  `json:",omitempty"`
	Resolver     *DiscoveryResolver `json:",omitempty"`
	LoadBalancer *LoadBalancer      `json:",omitempty"`
}

// DiscoveryRoute is one route of a router node.
type DiscoveryRoute struct {
	Definition *ServiceRoute
	NextNode   string
}

// DiscoverySplit is one share of a splitter node.
type DiscoverySplit struct {
	Definition *ServiceSplit
	Weight     float32
	NextNode   string
}

// DiscoveryResolver is a resolver node's decision.
type DiscoveryResolver struct {
	Default        bool
	ConnectTimeout ReadableDuration
	RequestTimeout ReadableDuration `json:",omitempty"`
	DrainTimeout   ReadableDuration `json:",omitempty"`
	Target         string
	Failover       *DiscoveryFailover `json:",omitempty"`
}

// DiscoveryFailover lists failover target IDs in order.
type DiscoveryFailover struct {
	Targets []string
}

// DiscoveryTarget is a set of instances: a service's, filtered by a subset.
type DiscoveryTarget struct {
	ID             string
	Service        string
	ServiceSubset  string `json:",omitempty"`
	Datacenter     string
	Subset         ServiceResolverSubset
	ConnectTimeout ReadableDuration
	Name           string
}

// IntentionPermission is one L7 permission of a service-intentions source:
// an Action for the HTTP requests HTTP matches.
type IntentionPermission struct {
	Action string
	HTTP   *IntentionHTTPPermission `json:",omitempty"`
}

// IntentionHTTPPermission matches HTTP requests; every field set must match.
type IntentionHTTPPermission struct {
	PathExact  string                          `json:",omitempty"`
	PathPrefix string                          `json:",omitempty"`
	PathRegex  string                          `json:",omitempty"`
	Header     []IntentionHTTPHeaderPermission `json:",omitempty"`
	Methods    []string                        `json:",omitempty"`
}

// IntentionHTTPHeaderPermission matches one request header.
type IntentionHTTPHeaderPermission struct {
	Name    string
	Present bool   `json:",omitempty"`
	Exact   string `json:",omitempty"`
	Prefix  string `json:",omitempty"`
	Suffix  string `json:",omitempty"`
	Regex   string `json:",omitempty"`
	Invert  bool   `json:",omitempty"`
}

// ProxyConfigEntry (kind proxy-defaults, name "global") sets defaults for
// every proxy. Config["protocol"] is the default protocol of every service.
type ProxyConfigEntry struct {
	Kind        string
	Name        string
	Config      map[string]any    `json:",omitempty"`
	Meta        map[string]string `json:",omitempty"`
	CreateIndex uint64            `json:",omitempty"`
	ModifyIndex uint64            `json:",omitempty"`
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
	CreateIndex    uint64                 `json:",omitempty"`
	ModifyIndex    uint64                 `json:",omitempty"`
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
	Interval ReadableDuration `json:",omitempty"`
	// MaxFailures consecutive failures eject (default 5).
	MaxFailures uint32 `json:",omitempty"`
	// EnforcingConsecutive5xx is the percent chance an ejection by 5xx is
	// enforced (default 100).
	EnforcingConsecutive5xx *uint32 `json:",omitempty"`
	// MaxEjectionPercent of instances may be ejected at once (default 10,
	// at least one instance).
	MaxEjectionPercent *uint32 `json:",omitempty"`
	// BaseEjectionTime is the first ejection's length (default 30s).
	BaseEjectionTime *ReadableDuration `json:",omitempty"`
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
	Kind        string
	Name        string
	Routes      []ServiceRoute    `json:",omitempty"`
	Meta        map[string]string `json:",omitempty"`
	CreateIndex uint64            `json:",omitempty"`
	ModifyIndex uint64            `json:",omitempty"`
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
	PrefixRewrite  string           `json:",omitempty"`
	RequestTimeout ReadableDuration `json:",omitempty"`
	IdleTimeout    ReadableDuration `json:",omitempty"`
	NumRetries     uint32           `json:",omitempty"`
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
	Kind        string
	Name        string
	Splits      []ServiceSplit    `json:",omitempty"`
	Meta        map[string]string `json:",omitempty"`
	CreateIndex uint64            `json:",omitempty"`
	ModifyIndex uint64            `json:",omitempty"`
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
	ConnectTimeout ReadableDuration                   `json:",omitempty"`
	RequestTimeout ReadableDuration                   `json:",omitempty"`
	// DrainTimeout (a Trellis extension) bounds how long established TCP
	// connections to instances no longer chosen (after a redirect, say) are
	// kept; 0 keeps them until they close.
	DrainTimeout ReadableDuration  `json:",omitempty"`
	LoadBalancer *LoadBalancer     `json:",omitempty"`
	Meta         map[string]string `json:",omitempty"`
	CreateIndex  uint64            `json:",omitempty"`
	ModifyIndex  uint64            `json:",omitempty"`
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
	Kind        string
	Name        string
	Sources     []*SourceIntention `json:",omitempty"`
	Meta        map[string]string  `json:",omitempty"`
	CreateIndex uint64             `json:",omitempty"`
	ModifyIndex uint64             `json:",omitempty"`
}

// SourceIntention is one source's intention: an Action (allow, deny) or
// Permissions evaluated in order, never both.
type SourceIntention struct {
	Name        string
	Action      string                 `json:",omitempty"`
	Permissions []*IntentionPermission `json:",omitempty"`
	Precedence  int                    `json:",omitempty"`
	Type        string                 `json:",omitempty"`
	Description string                 `json:",omitempty"`
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

// GetCreateIndex returns the Raft index that created the entry.
func (e *ProxyConfigEntry) GetCreateIndex() uint64 { return e.CreateIndex }

// GetModifyIndex returns the Raft index that last changed the entry.
func (e *ProxyConfigEntry) GetModifyIndex() uint64 { return e.ModifyIndex }

// GetKind returns the kind.
func (e *ServiceConfigEntry) GetKind() string { return ServiceDefaults }

// GetName returns the name.
func (e *ServiceConfigEntry) GetName() string { return e.Name }

// GetMeta returns the metadata.
func (e *ServiceConfigEntry) GetMeta() map[string]string { return e.Meta }

// GetCreateIndex returns the Raft index that created the entry.
func (e *ServiceConfigEntry) GetCreateIndex() uint64 { return e.CreateIndex }

// GetModifyIndex returns the Raft index that last changed the entry.
func (e *ServiceConfigEntry) GetModifyIndex() uint64 { return e.ModifyIndex }

// GetKind returns the kind.
func (e *ServiceRouterConfigEntry) GetKind() string { return ServiceRouter }

// GetName returns the name.
func (e *ServiceRouterConfigEntry) GetName() string { return e.Name }

// GetMeta returns the metadata.
func (e *ServiceRouterConfigEntry) GetMeta() map[string]string { return e.Meta }

// GetCreateIndex returns the Raft index that created the entry.
func (e *ServiceRouterConfigEntry) GetCreateIndex() uint64 { return e.CreateIndex }

// GetModifyIndex returns the Raft index that last changed the entry.
func (e *ServiceRouterConfigEntry) GetModifyIndex() uint64 { return e.ModifyIndex }

// GetKind returns the kind.
func (e *ServiceSplitterConfigEntry) GetKind() string { return ServiceSplitter }

// GetName returns the name.
func (e *ServiceSplitterConfigEntry) GetName() string { return e.Name }

// GetMeta returns the metadata.
func (e *ServiceSplitterConfigEntry) GetMeta() map[string]string { return e.Meta }

// GetCreateIndex returns the Raft index that created the entry.
func (e *ServiceSplitterConfigEntry) GetCreateIndex() uint64 { return e.CreateIndex }

// GetModifyIndex returns the Raft index that last changed the entry.
func (e *ServiceSplitterConfigEntry) GetModifyIndex() uint64 { return e.ModifyIndex }

// GetKind returns the kind.
func (e *ServiceResolverConfigEntry) GetKind() string { return ServiceResolver }

// GetName returns the name.
func (e *ServiceResolverConfigEntry) GetName() string { return e.Name }

// GetMeta returns the metadata.
func (e *ServiceResolverConfigEntry) GetMeta() map[string]string { return e.Meta }

// GetCreateIndex returns the Raft index that created the entry.
func (e *ServiceResolverConfigEntry) GetCreateIndex() uint64 { return e.CreateIndex }

// GetModifyIndex returns the Raft index that last changed the entry.
func (e *ServiceResolverConfigEntry) GetModifyIndex() uint64 { return e.ModifyIndex }

// GetKind returns the kind.
func (e *ServiceIntentionsConfigEntry) GetKind() string { return ServiceIntentions }

// GetName returns the name.
func (e *ServiceIntentionsConfigEntry) GetName() string { return e.Name }

// GetMeta returns the metadata.
func (e *ServiceIntentionsConfigEntry) GetMeta() map[string]string { return e.Meta }

// GetCreateIndex returns the Raft index that created the entry.
func (e *ServiceIntentionsConfigEntry) GetCreateIndex() uint64 { return e.CreateIndex }

// GetModifyIndex returns the Raft index that last changed the entry.
func (e *ServiceIntentionsConfigEntry) GetModifyIndex() uint64 { return e.ModifyIndex }

// String writes d as a Go duration ("1m30s"), as its JSON form does.
func (d ReadableDuration) String() string { return d.Duration().String() }
