package chain

import (
	"fmt"
	"strings"
	"time"

	"github.com/trellismesh/trellis/connect/configentry"
)

// DefaultConnectTimeout is a resolver's ConnectTimeout when its entry sets
// none (or there is no entry).
const DefaultConnectTimeout = configentry.Duration(5 * time.Second)

// DefaultRouteName is the RouteName of the implicit final route of a router
// and of every request to a chain without one.
const DefaultRouteName = "default"

// Compile builds the chain of req.ServiceName from req.Entries. It refuses
// (with an error naming the entry and field) a graph that validation should
// already have refused: a redirect loop, a subset that does not exist, a
// loop of splitters.
//
// Evaluation starts at the service's router when it has a service-router,
// else at its splitter, else at its resolver. Every router ends with an
// implicit route that matches everything and leads to the service itself.
// A route or split leads to the splitter of its service when it names no
// subset and that service has one (a splitter reached from a split is
// flattened into it, weights multiplied), else to the resolver of
// (service, subset). A resolver follows its entry's Redirect, applies its
// DefaultSubset when no subset was asked for, and lists its Failover.
//
// A service whose protocol is not an HTTP one (tcp) is compiled to its
// resolver alone: routers and splitters need per-request decisions, so any
// that remain in the set (written before the protocol changed) are left out
// of its chain.
func Compile(req Request) (*Chain, error) {
	if req.ServiceName == "" {
		return nil, fmt.Errorf("compile: no service name")
	}
	if req.Datacenter == "" {
		return nil, fmt.Errorf("compile %s: no datacenter", req.ServiceName)
	}
	set := req.Entries
	if set == nil {
		set = configentry.MapSet{}
	}
	c := &compiler{
		set: set,
		dc:  req.Datacenter,
		chain: &Chain{
			ServiceName: req.ServiceName,
			Datacenter:  req.Datacenter,
			Protocol:    configentry.Protocol(set, req.ServiceName),
			Nodes:       map[string]*Node{},
			Targets:     map[string]*Target{},
		},
	}
	start, err := c.start(req.ServiceName)
	if err != nil {
		return nil, err
	}
	c.chain.StartNode = start
	c.chain.Default = c.isDefault()
	return c.chain, nil
}

type compiler struct {
	set   configentry.Set
	dc    string
	chain *Chain
	// flat holds each nested splitter's splits, flattened once at 100%:
	// splitters that reach one another by many paths cost their number of
	// splits, not the number of paths.
	flat map[string][]*Split
}

func (c *compiler) start(svc string) (string, error) {
	if configentry.IsHTTP(c.chain.Protocol) {
		if r := c.router(svc); r != nil {
			return c.routerNode(r)
		}
		if s := c.splitter(svc); s != nil {
			return c.splitterNode(s)
		}
	}
	return c.resolverNode(svc, "", c.dc)
}

func (c *compiler) router(svc string) *configentry.ServiceRouterConfigEntry {
	e, _ := c.set.Get(configentry.ServiceRouter, svc).(*configentry.ServiceRouterConfigEntry)
	return e
}

func (c *compiler) splitter(svc string) *configentry.ServiceSplitterConfigEntry {
	e, _ := c.set.Get(configentry.ServiceSplitter, svc).(*configentry.ServiceSplitterConfigEntry)
	return e
}

func (c *compiler) resolver(svc string) *configentry.ServiceResolverConfigEntry {
	e, _ := c.set.Get(configentry.ServiceResolver, svc).(*configentry.ServiceResolverConfigEntry)
	return e
}

// localName is the name of a router or splitter node's service.
func localName(svc string) string { return svc + ".default.default" }

// TargetID returns the ID of the target (service, subset, datacenter), in
// Consul's form "[subset.]service.default.default.datacenter".
func TargetID(service, subset, dc string) string {
	id := service + ".default.default." + dc
	if subset != "" {
		id = subset + "." + id
	}
	return id
}

func (c *compiler) routerNode(r *configentry.ServiceRouterConfigEntry) (string, error) {
	name := NodeRouter + ":" + localName(r.Name)
	if _, ok := c.chain.Nodes[name]; ok {
		return name, nil
	}
	node := &Node{Type: NodeRouter, Name: localName(r.Name)}
	c.chain.Nodes[name] = node
	for i := range r.Routes {
		// A shallow copy (the chain is read-only, like the entries), whose
		// Destination always names its service.
		def := r.Routes[i]
		if def.Destination == nil {
			def.Destination = &configentry.ServiceRouteDestination{Service: r.Name}
		} else if def.Destination.Service == "" {
			d := *def.Destination
			d.Service = r.Name
			def.Destination = &d
		}
		svc, subset := def.Destination.Service, def.Destination.ServiceSubset
		next, err := c.destination(svc, subset)
		if err != nil {
			return "", fmt.Errorf("%s/%s: Routes[%d].Destination: %w", configentry.ServiceRouter, r.Name, i, err)
		}
		node.Routes = append(node.Routes, &Route{Definition: &def, NextNode: next})
	}
	next, err := c.destination(r.Name, "")
	if err != nil {
		return "", fmt.Errorf("%s/%s: default route: %w", configentry.ServiceRouter, r.Name, err)
	}
	node.Routes = append(node.Routes, &Route{
		Definition: &configentry.ServiceRoute{
			Match:       &configentry.ServiceRouteMatch{HTTP: &configentry.ServiceRouteHTTPMatch{PathPrefix: "/"}},
			Destination: &configentry.ServiceRouteDestination{Service: r.Name},
		},
		NextNode: next,
	})
	return name, nil
}

// destination returns the node a route to (svc, subset) leads to: the
// splitter of svc when no subset is named and svc has one, else the
// resolver.
func (c *compiler) destination(svc, subset string) (string, error) {
	if subset == "" {
		if s := c.splitter(svc); s != nil {
			return c.splitterNode(s)
		}
	}
	return c.resolverNode(svc, subset, c.dc)
}

func (c *compiler) splitterNode(s *configentry.ServiceSplitterConfigEntry) (string, error) {
	name := NodeSplitter + ":" + localName(s.Name)
	if _, ok := c.chain.Nodes[name]; ok {
		return name, nil
	}
	splits, err := c.flatten(s, 100, []string{s.Name})
	if err != nil {
		return "", err
	}
	c.chain.Nodes[name] = &Node{Type: NodeSplitter, Name: localName(s.Name), Splits: splits}
	return name, nil
}

// flatten returns the splits of s, each scaled by share percent; a split to
// another service that has its own splitter is replaced by that splitter's
// splits. stack holds the splitters being expanded, to refuse loops.
func (c *compiler) flatten(s *configentry.ServiceSplitterConfigEntry, share float64, stack []string) ([]*Split, error) {
	var out []*Split
	for i := range s.Splits {
		def := s.Splits[i]
		if def.Service == "" {
			def.Service = s.Name
		}
		svc := def.Service
		weight := float64(def.Weight) * share / 100
		if def.ServiceSubset == "" && svc != s.Name {
			if nested := c.splitter(svc); nested != nil {
				for _, seen := range stack {
					if seen == svc {
						return nil, fmt.Errorf("%s/%s: Splits[%d].Service: splitter loop: %s -> %s",
							configentry.ServiceSplitter, s.Name, i, strings.Join(stack, " -> "), svc)
					}
				}
				inner, ok := c.flat[svc]
				if !ok {
					var err error
					if inner, err = c.flatten(nested, 100, append(stack[:len(stack):len(stack)], svc)); err != nil {
						return nil, err
					}
					if c.flat == nil {
						c.flat = make(map[string][]*Split)
					}
					c.flat[svc] = inner
				}
				for _, x := range inner {
					out = append(out, &Split{Definition: x.Definition, Weight: x.Weight * float32(weight) / 100, NextNode: x.NextNode})
				}
				continue
			}
		}
		next, err := c.resolverNode(svc, def.ServiceSubset, c.dc)
		if err != nil {
			return nil, fmt.Errorf("%s/%s: Splits[%d]: %w", configentry.ServiceSplitter, s.Name, i, err)
		}
		out = append(out, &Split{Definition: &def, Weight: float32(weight), NextNode: next})
	}
	return mergeSplits(out), nil
}

// mergeSplits adds up the splits that are one split of a nested splitter
// reached by several paths (the same definition and next node), keeping the
// order of their first appearance.
func mergeSplits(splits []*Split) []*Split {
	type key struct {
		def  *configentry.ServiceSplit
		next string
	}
	seen := make(map[key]*Split, len(splits))
	out := splits[:0]
	for _, sp := range splits {
		k := key{sp.Definition, sp.NextNode}
		if first := seen[k]; first != nil {
			first.Weight += sp.Weight
			continue
		}
		seen[k] = sp
		out = append(out, sp)
	}
	return out
}

// resolved is a target after redirects and the default subset.
type resolved struct {
	service, subset, dc string
	entry               *configentry.ServiceResolverConfigEntry // nil: no entry
	// drain is the DrainTimeout of the first redirecting entry that sets
	// one: a redirect is what moves connections, so its entry says how long
	// the old ones may stay.
	drain configentry.Duration
}

func (r resolved) id() string { return TargetID(r.service, r.subset, r.dc) }

// resolve follows the resolver entries from (svc, subset, dc): redirects
// until one leads nowhere new, then the default subset when no subset was
// asked for. It refuses a redirect loop, naming it.
func (c *compiler) resolve(svc, subset, dc string) (resolved, error) {
	cur := resolved{service: svc, subset: subset, dc: dc}
	path := []string{cur.id()}
	for {
		cur.entry = c.resolver(cur.service)
		if cur.entry == nil || cur.entry.Redirect == nil {
			break
		}
		rd := cur.entry.Redirect
		next := resolved{service: cur.service, subset: rd.ServiceSubset, dc: cur.dc, drain: cur.drain}
		if next.drain == 0 {
			next.drain = cur.entry.DrainTimeout
		}
		if rd.Service != "" && rd.Service != cur.service {
			next.service = rd.Service
		}
		if rd.Datacenter != "" {
			next.dc = rd.Datacenter
		}
		if next.id() == cur.id() {
			break // a redirect to itself (a subset of its own service) settles
		}
		for _, seen := range path {
			if seen == next.id() {
				return resolved{}, fmt.Errorf("%s/%s: Redirect: redirect loop: %s -> %s",
					configentry.ServiceResolver, cur.service, strings.Join(path, " -> "), next.id())
			}
		}
		path = append(path, next.id())
		cur = next
	}
	if cur.subset == "" && cur.entry != nil {
		cur.subset = cur.entry.DefaultSubset
	}
	return cur, nil
}

// target records the target r and returns its ID.
func (c *compiler) target(r resolved) (string, error) {
	id := r.id()
	if _, ok := c.chain.Targets[id]; ok {
		return id, nil
	}
	t := &Target{
		ID:             id,
		Service:        r.service,
		ServiceSubset:  r.subset,
		Datacenter:     r.dc,
		ConnectTimeout: DefaultConnectTimeout,
		Name:           r.service,
	}
	if r.entry != nil {
		if r.entry.ConnectTimeout > 0 {
			t.ConnectTimeout = r.entry.ConnectTimeout
		}
	}
	if r.subset != "" {
		var def configentry.ServiceResolverSubset
		ok := false
		if r.entry != nil {
			def, ok = r.entry.Subsets[r.subset]
		}
		if !ok {
			return "", fmt.Errorf("%s/%s: Subsets: no subset %q", configentry.ServiceResolver, r.service, r.subset)
		}
		t.Subset = def
	}
	c.chain.Targets[id] = t
	return id, nil
}

// resolverNode returns the name of the resolver node of (svc, subset, dc),
// recording it and its targets.
func (c *compiler) resolverNode(svc, subset, dc string) (string, error) {
	r, err := c.resolve(svc, subset, dc)
	if err != nil {
		return "", err
	}
	id, err := c.target(r)
	if err != nil {
		return "", err
	}
	name := NodeResolver + ":" + id
	if _, ok := c.chain.Nodes[name]; ok {
		return name, nil
	}
	res := &Resolver{Default: r.entry == nil, ConnectTimeout: DefaultConnectTimeout, Target: id, DrainTimeout: r.drain}
	node := &Node{Type: NodeResolver, Name: id, Resolver: res}
	if e := r.entry; e != nil {
		if e.ConnectTimeout > 0 {
			res.ConnectTimeout = e.ConnectTimeout
		}
		res.RequestTimeout = e.RequestTimeout
		if r.drain == 0 {
			res.DrainTimeout = e.DrainTimeout
		}
		if e.LoadBalancer != nil {
			lb := *e.LoadBalancer
			node.LoadBalancer = &lb
		}
		failover, err := c.failover(r, id)
		if err != nil {
			return "", err
		}
		if len(failover) > 0 {
			res.Failover = &Failover{Targets: failover}
		}
	}
	c.chain.Nodes[name] = node
	return name, nil
}

// failover returns the failover target IDs of the resolved target r (whose
// ID is primary), in order, without the primary and without repeats.
func (c *compiler) failover(r resolved, primary string) ([]string, error) {
	fo, ok := r.entry.Failover[r.subset]
	key := r.subset
	if !ok {
		fo, ok = r.entry.Failover["*"]
		key = "*"
	}
	if !ok {
		return nil, nil
	}
	field := fmt.Sprintf("%s/%s: Failover[%q]", configentry.ServiceResolver, r.entry.Name, key)
	var want []configentry.ServiceResolverFailoverTarget
	switch {
	case len(fo.Targets) > 0:
		want = fo.Targets
	case len(fo.Datacenters) > 0:
		for _, dc := range fo.Datacenters {
			want = append(want, configentry.ServiceResolverFailoverTarget{Service: fo.Service, ServiceSubset: fo.ServiceSubset, Datacenter: dc})
		}
	default:
		want = []configentry.ServiceResolverFailoverTarget{{Service: fo.Service, ServiceSubset: fo.ServiceSubset}}
	}
	var out []string
	for i, ft := range want {
		svc, subset, dc := ft.Service, ft.ServiceSubset, ft.Datacenter
		if svc == "" {
			svc = r.service
		}
		if subset == "" && svc == r.service {
			subset = r.subset
		}
		if dc == "" {
			dc = r.dc
		}
		fr, err := c.resolve(svc, subset, dc)
		if err != nil {
			return nil, fmt.Errorf("%s.Targets[%d]: %w", field, i, err)
		}
		id, err := c.target(fr)
		if err != nil {
			return nil, fmt.Errorf("%s.Targets[%d]: %w", field, i, err)
		}
		if id == primary || contains(out, id) {
			continue
		}
		out = append(out, id)
	}
	return out, nil
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// isDefault reports whether no entry shaped the chain: it starts at the
// service's own default resolver.
func (c *compiler) isDefault() bool {
	n := c.chain.Nodes[c.chain.StartNode]
	return n != nil && n.Type == NodeResolver && n.Resolver.Default &&
		n.Resolver.Target == TargetID(c.chain.ServiceName, "", c.dc)
}
