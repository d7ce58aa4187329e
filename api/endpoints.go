package api

import (
	"io"
	"net/http"
	"net/url"
	"strings"
)

// Agent returns the client of the agent endpoints.
func (c *Client) Agent() *Agent { return &Agent{c: c} }

// Catalog returns the client of the catalog endpoints.
func (c *Client) Catalog() *Catalog { return &Catalog{c: c} }

// Health returns the client of the health endpoints.
func (c *Client) Health() *Health { return &Health{c: c} }

// Status returns the client of the status endpoints.
func (c *Client) Status() *Status { return &Status{c: c} }

// Agent is the client of /v1/agent: the agent the client talks to.
type Agent struct{ c *Client }

// Self returns the agent's configuration and member information.
func (a *Agent) Self() (map[string]map[string]any, error) {
	var out map[string]map[string]any
	_, err := a.c.query("/v1/agent/self", &out, nil, nil)
	return out, err
}

// NodeName returns the agent's node name.
func (a *Agent) NodeName() (string, error) {
	self, err := a.Self()
	if err != nil {
		return "", err
	}
	name, _ := self["Config"]["NodeName"].(string)
	return name, nil
}

// Members returns the cluster members this agent knows.
func (a *Agent) Members() ([]*AgentMember, error) {
	var out []*AgentMember
	_, err := a.c.query("/v1/agent/members", &out, nil, nil)
	return out, err
}

// Services returns the services registered on this agent, by ID.
func (a *Agent) Services() (map[string]*AgentService, error) {
	return a.ServicesWithFilter("")
}

// ServicesWithFilter returns the agent's services that match filter.
func (a *Agent) ServicesWithFilter(filter string) (map[string]*AgentService, error) {
	var out map[string]*AgentService
	_, err := a.c.query("/v1/agent/services", &out, &QueryOptions{Filter: filter}, nil)
	return out, err
}

// Service returns one service registered on this agent.
func (a *Agent) Service(id string, q *QueryOptions) (*AgentService, *QueryMeta, error) {
	var out AgentService
	meta, err := a.c.query("/v1/agent/service/"+url.PathEscape(id), &out, q, nil)
	if err != nil {
		return nil, nil, err
	}
	return &out, meta, nil
}

// Checks returns the checks registered on this agent, by ID.
func (a *Agent) Checks() (map[string]*AgentCheck, error) {
	var out map[string]*AgentCheck
	_, err := a.c.query("/v1/agent/checks", &out, nil, nil)
	return out, err
}

// ServiceRegister registers a service on this agent.
func (a *Agent) ServiceRegister(reg *AgentServiceRegistration) error {
	_, err := a.c.write("/v1/agent/service/register", reg, nil, nil, nil)
	return err
}

// ServiceRegisterReplaceChecks registers a service and removes the checks
// the new definition no longer has.
func (a *Agent) ServiceRegisterReplaceChecks(reg *AgentServiceRegistration) error {
	_, err := a.c.write("/v1/agent/service/register", reg, nil, nil, url.Values{"replace-existing-checks": {"true"}})
	return err
}

// ServiceDeregister removes a service from this agent.
func (a *Agent) ServiceDeregister(id string) error {
	_, err := a.c.write("/v1/agent/service/deregister/"+url.PathEscape(id), nil, nil, nil, nil)
	return err
}

// CheckRegister registers a check on this agent.
func (a *Agent) CheckRegister(reg *AgentCheckRegistration) error {
	_, err := a.c.write("/v1/agent/check/register", reg, nil, nil, nil)
	return err
}

// CheckDeregister removes a check from this agent.
func (a *Agent) CheckDeregister(id string) error {
	_, err := a.c.write("/v1/agent/check/deregister/"+url.PathEscape(id), nil, nil, nil, nil)
	return err
}

// PassTTL marks a TTL check passing, with an optional note as output.
func (a *Agent) PassTTL(id, note string) error { return a.ttl("pass", id, note) }

// WarnTTL marks a TTL check warning.
func (a *Agent) WarnTTL(id, note string) error { return a.ttl("warn", id, note) }

// FailTTL marks a TTL check critical.
func (a *Agent) FailTTL(id, note string) error { return a.ttl("fail", id, note) }

func (a *Agent) ttl(verb, id, note string) error {
	var extra url.Values
	if note != "" {
		extra = url.Values{"note": {note}}
	}
	_, err := a.c.write("/v1/agent/check/"+verb+"/"+url.PathEscape(id), nil, nil, nil, extra)
	return err
}

// UpdateTTL sets a TTL check's status (passing, warning, critical) and output.
func (a *Agent) UpdateTTL(id, output, status string) error {
	body := struct{ Status, Output string }{status, output}
	_, err := a.c.write("/v1/agent/check/update/"+url.PathEscape(id), body, nil, nil, nil)
	return err
}

// Join asks the agent to join the cluster through the agent at addr.
func (a *Agent) Join(addr string) error {
	_, err := a.c.write("/v1/agent/join/"+url.PathEscape(addr), nil, nil, nil, nil)
	return err
}

// Leave asks the agent to leave the cluster gracefully and stop.
func (a *Agent) Leave() error {
	_, err := a.c.write("/v1/agent/leave", nil, nil, nil, nil)
	return err
}

// ForceLeave asks the agent to forget a failed member at once.
func (a *Agent) ForceLeave(node string) error {
	_, err := a.c.write("/v1/agent/force-leave/"+url.PathEscape(node), nil, nil, nil, nil)
	return err
}

// Metrics returns the agent's metrics as JSON, decoded generically.
func (a *Agent) Metrics() (map[string]any, error) {
	var out map[string]any
	_, err := a.c.query("/v1/agent/metrics", &out, nil, nil)
	return out, err
}

// MetricsPrometheus returns the agent's metrics in Prometheus text format.
func (a *Agent) MetricsPrometheus() (string, error) {
	r := a.c.newRequest(http.MethodGet, "/v1/agent/metrics")
	r.params.Set("format", "prometheus")
	resp, _, err := a.c.do(r)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	var b strings.Builder
	_, err = io.Copy(&b, resp.Body)
	return b.String(), err
}

// Catalog is the client of /v1/catalog.
type Catalog struct{ c *Client }

// Datacenters returns the known datacenters.
func (cat *Catalog) Datacenters() ([]string, error) {
	var out []string
	_, err := cat.c.query("/v1/catalog/datacenters", &out, nil, nil)
	return out, err
}

// Nodes returns every node in the catalog.
func (cat *Catalog) Nodes(q *QueryOptions) ([]*Node, *QueryMeta, error) {
	var out []*Node
	meta, err := cat.c.query("/v1/catalog/nodes", &out, q, nil)
	return out, meta, err
}

// Services returns every service name with its tags.
func (cat *Catalog) Services(q *QueryOptions) (map[string][]string, *QueryMeta, error) {
	var out map[string][]string
	meta, err := cat.c.query("/v1/catalog/services", &out, q, nil)
	return out, meta, err
}

// Service returns the instances of a service, optionally with a tag.
func (cat *Catalog) Service(name, tag string, q *QueryOptions) ([]*CatalogService, *QueryMeta, error) {
	var tags []string
	if tag != "" {
		tags = []string{tag}
	}
	return cat.ServiceMultipleTags(name, tags, q)
}

// ServiceMultipleTags returns the instances of a service that have every tag.
func (cat *Catalog) ServiceMultipleTags(name string, tags []string, q *QueryOptions) ([]*CatalogService, *QueryMeta, error) {
	var out []*CatalogService
	meta, err := cat.c.query("/v1/catalog/service/"+url.PathEscape(name), &out, q, url.Values{"tag": tags})
	return out, meta, err
}

// Connect returns the mesh endpoints of a service: the sidecar proxies
// whose destination it is, and its mesh-native instances; tag, when set,
// keeps those with the tag. It blocks with q.WaitIndex.
func (cat *Catalog) Connect(service, tag string, q *QueryOptions) ([]*CatalogService, *QueryMeta, error) {
	var extra url.Values
	if tag != "" {
		extra = url.Values{"tag": {tag}}
	}
	var out []*CatalogService
	meta, err := cat.c.query("/v1/catalog/connect/"+url.PathEscape(service), &out, q, extra)
	return out, meta, err
}

// Node returns a node and its services; nil when the node is unknown.
func (cat *Catalog) Node(node string, q *QueryOptions) (*CatalogNode, *QueryMeta, error) {
	var out *CatalogNode
	meta, err := cat.c.query("/v1/catalog/node/"+url.PathEscape(node), &out, q, nil)
	return out, meta, err
}

// Register writes a registration to the catalog.
func (cat *Catalog) Register(reg *CatalogRegistration, w *WriteOptions) (*WriteMeta, error) {
	return cat.c.write("/v1/catalog/register", reg, nil, w, nil)
}

// Deregister removes a node, service or check from the catalog.
func (cat *Catalog) Deregister(dereg *CatalogDeregistration, w *WriteOptions) (*WriteMeta, error) {
	return cat.c.write("/v1/catalog/deregister", dereg, nil, w, nil)
}

// Health is the client of /v1/health.
type Health struct{ c *Client }

// Service returns the instances of a service with their checks; passingOnly
// keeps those whose checks all pass.
func (h *Health) Service(name, tag string, passingOnly bool, q *QueryOptions) ([]*ServiceEntry, *QueryMeta, error) {
	extra := url.Values{}
	if tag != "" {
		extra.Set("tag", tag)
	}
	if passingOnly {
		extra.Set("passing", "1")
	}
	var out []*ServiceEntry
	meta, err := h.c.query("/v1/health/service/"+url.PathEscape(name), &out, q, extra)
	return out, meta, err
}

// Connect returns the mesh endpoints of a service with their checks: the
// sidecar proxies whose destination it is (each with the checks of the
// instance it fronts folded in) and its mesh-native instances.
// passingOnly keeps those whose checks all pass. It blocks with
// q.WaitIndex.
func (h *Health) Connect(service, tag string, passingOnly bool, q *QueryOptions) ([]*ServiceEntry, *QueryMeta, error) {
	extra := url.Values{}
	if tag != "" {
		extra.Set("tag", tag)
	}
	if passingOnly {
		extra.Set("passing", "1")
	}
	var out []*ServiceEntry
	meta, err := h.c.query("/v1/health/connect/"+url.PathEscape(service), &out, q, extra)
	return out, meta, err
}

// Node returns the checks of a node.
func (h *Health) Node(node string, q *QueryOptions) (HealthChecks, *QueryMeta, error) {
	var out HealthChecks
	meta, err := h.c.query("/v1/health/node/"+url.PathEscape(node), &out, q, nil)
	return out, meta, err
}

// Checks returns the checks of a service.
func (h *Health) Checks(service string, q *QueryOptions) (HealthChecks, *QueryMeta, error) {
	var out HealthChecks
	meta, err := h.c.query("/v1/health/checks/"+url.PathEscape(service), &out, q, nil)
	return out, meta, err
}

// State returns the checks in a state (passing, warning, critical or any).
func (h *Health) State(state string, q *QueryOptions) (HealthChecks, *QueryMeta, error) {
	var out HealthChecks
	meta, err := h.c.query("/v1/health/state/"+url.PathEscape(state), &out, q, nil)
	return out, meta, err
}

// Status is the client of /v1/status.
type Status struct{ c *Client }

// Leader returns the server-port address of the leader, "" when none.
func (s *Status) Leader() (string, error) {
	var out string
	_, err := s.c.query("/v1/status/leader", &out, nil, nil)
	return out, err
}

// Peers returns the server-port addresses of the Raft voters.
func (s *Status) Peers() ([]string, error) {
	var out []string
	_, err := s.c.query("/v1/status/peers", &out, nil, nil)
	return out, err
}

// Operator returns the client of the operator endpoints.
func (c *Client) Operator() *Operator { return &Operator{c: c} }

// Operator is the client of /v1/operator.
type Operator struct{ c *Client }

// RaftGetConfiguration returns the servers of the Raft configuration.
func (o *Operator) RaftGetConfiguration(q *QueryOptions) (*RaftConfiguration, error) {
	var out RaftConfiguration
	if _, err := o.c.query("/v1/operator/raft/configuration", &out, q, nil); err != nil {
		return nil, err
	}
	return &out, nil
}

// RaftRemovePeerByID removes a server from the Raft configuration.
func (o *Operator) RaftRemovePeerByID(id string) error {
	return o.raftRemove(url.Values{"id": {id}})
}

// RaftRemovePeerByAddress removes the server at addr from the Raft configuration.
func (o *Operator) RaftRemovePeerByAddress(addr string) error {
	return o.raftRemove(url.Values{"address": {addr}})
}

func (o *Operator) raftRemove(params url.Values) error {
	r := o.c.newRequest(http.MethodDelete, "/v1/operator/raft/peer")
	for k, v := range params {
		r.params[k] = v
	}
	resp, _, err := o.c.do(r)
	if err != nil {
		return err
	}
	resp.Body.Close()
	return nil
}

// KeyringList lists the gossip keys of every member.
func (o *Operator) KeyringList() ([]*KeyringResponse, error) {
	var out []*KeyringResponse
	_, err := o.c.query("/v1/operator/keyring", &out, nil, nil)
	return out, err
}

// KeyringInstall installs a gossip key on every member.
func (o *Operator) KeyringInstall(key string) error { return o.keyring(http.MethodPost, key) }

// KeyringUse makes a key the primary (encrypting) key on every member.
func (o *Operator) KeyringUse(key string) error { return o.keyring(http.MethodPut, key) }

// KeyringRemove removes a key from every member.
func (o *Operator) KeyringRemove(key string) error { return o.keyring(http.MethodDelete, key) }

func (o *Operator) keyring(method, key string) error {
	r := o.c.newRequest(method, "/v1/operator/keyring")
	r.body = &KeyringRequest{Key: key}
	resp, _, err := o.c.do(r)
	if err != nil {
		return err
	}
	resp.Body.Close()
	return nil
}
