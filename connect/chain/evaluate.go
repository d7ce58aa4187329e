package chain

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"sync"

	"github.com/trellismesh/trellis/connect/configentry"
)

// maxHops bounds how many nodes one evaluation passes through, so that a
// malformed chain (decoded from elsewhere) cannot loop.
const maxHops = 16

// ErrNoRoute is returned by Route when no route of a router matches, which
// happens only with a chain that lacks the implicit final route.
var ErrNoRoute = errors.New("chain: no route matches the request")

// RouteDecision is where one HTTP request goes.
type RouteDecision struct {
	// Target is the ID of the target that serves the request.
	Target string
	// Failover lists the targets to try, in order, when Target has no
	// healthy instance. It is shared with the chain: do not modify it.
	Failover []string
	// Destination is the matched route's destination (timeouts, retries,
	// rewrites, headers; Service always set); nil when the request took the
	// router's implicit default route or the chain has no router.
	Destination *configentry.ServiceRouteDestination
	// Split is the share of a splitter the request was picked for (its
	// header modifiers); nil when no splitter decided.
	Split *configentry.ServiceSplit
	// RouteName labels the route for metrics: "route:N" for the router's
	// Nth route (from 0), "default" otherwise.
	RouteName string
	// Resolver is the resolver node's decision (timeouts, failover).
	Resolver *Resolver
	// LoadBalancer is the resolver's policy; nil for the proxies' default.
	LoadBalancer *configentry.LoadBalancer
}

// prepared holds what evaluation precomputes once per chain.
type prepared struct {
	// routers maps a router node's name to the matchers of its routes.
	routers map[string][]*matcher
	// names holds "route:N" labels, so evaluating allocates none.
	names []string
}

type matcher struct {
	always  bool
	exact   string
	prefix  string
	path    *regexp.Regexp
	methods []string
	headers []headerMatcher
	query   []queryMatcher
}

type headerMatcher struct {
	def configentry.ServiceRouteHTTPMatchHeader
	key string // the canonical form of def.Name
	re  *regexp.Regexp
}

type queryMatcher struct {
	def configentry.ServiceRouteHTTPMatchQueryParam
	re  *regexp.Regexp
}

// evalState is the lazily prepared state of a Chain.
type evalState struct {
	once sync.Once
	prep *prepared
	err  error
}

// Prepare compiles the chain's regular expressions and matchers, once; Route
// calls it itself, so calling it is needed only to learn of a bad regular
// expression early. It is safe for concurrent use.
func (c *Chain) Prepare() error {
	c.eval.once.Do(func() { c.eval.prep, c.eval.err = c.prepare() })
	return c.eval.err
}

func (c *Chain) prepare() (*prepared, error) {
	p := &prepared{routers: map[string][]*matcher{}}
	maxRoutes := 0
	for name, n := range c.Nodes {
		if n.Type != NodeRouter {
			continue
		}
		ms := make([]*matcher, len(n.Routes))
		for i, r := range n.Routes {
			m, err := newMatcher(r.Definition)
			if err != nil {
				return nil, fmt.Errorf("%s: Routes[%d]: %w", name, i, err)
			}
			ms[i] = m
		}
		p.routers[name] = ms
		maxRoutes = max(maxRoutes, len(n.Routes))
	}
	for i := range maxRoutes {
		p.names = append(p.names, fmt.Sprintf("route:%d", i))
	}
	return p, nil
}

// anchored compiles re to match a whole value, as Envoy's safe_regex does.
func anchored(field, re string) (*regexp.Regexp, error) {
	x, err := regexp.Compile("^(?:" + re + ")$")
	if err != nil {
		return nil, fmt.Errorf("%s: %w", field, err)
	}
	return x, nil
}

func newMatcher(def *configentry.ServiceRoute) (*matcher, error) {
	if def == nil || def.Match == nil || def.Match.HTTP == nil {
		return &matcher{always: true}, nil
	}
	h := def.Match.HTTP
	m := &matcher{exact: h.PathExact, prefix: h.PathPrefix, methods: h.Methods}
	if h.PathRegex != "" {
		re, err := anchored("PathRegex", h.PathRegex)
		if err != nil {
			return nil, err
		}
		m.path = re
	}
	for i, hd := range h.Header {
		hm := headerMatcher{def: hd, key: http.CanonicalHeaderKey(hd.Name)}
		if hd.Regex != "" {
			re, err := anchored(fmt.Sprintf("Header[%d].Regex", i), hd.Regex)
			if err != nil {
				return nil, err
			}
			hm.re = re
		}
		m.headers = append(m.headers, hm)
	}
	for i, q := range h.QueryParam {
		qm := queryMatcher{def: q}
		if q.Regex != "" {
			re, err := anchored(fmt.Sprintf("QueryParam[%d].Regex", i), q.Regex)
			if err != nil {
				return nil, err
			}
			qm.re = re
		}
		m.query = append(m.query, qm)
	}
	return m, nil
}

func (m *matcher) match(req *http.Request) bool {
	if m.always {
		return true
	}
	path := req.URL.Path
	switch {
	case m.exact != "" && path != m.exact:
		return false
	case m.prefix != "" && !strings.HasPrefix(path, m.prefix):
		return false
	case m.path != nil && !m.path.MatchString(path):
		return false
	}
	if len(m.methods) > 0 {
		ok := false
		for _, meth := range m.methods {
			if strings.EqualFold(meth, req.Method) {
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
	}
	for i := range m.headers {
		if !m.headers[i].match(req) {
			return false
		}
	}
	for i := range m.query {
		if !m.query[i].match(req.URL.RawQuery) {
			return false
		}
	}
	return true
}

func (h *headerMatcher) match(req *http.Request) bool {
	var v string
	var present bool
	if strings.EqualFold(h.def.Name, "Host") || h.def.Name == ":authority" {
		v, present = req.Host, req.Host != ""
	} else {
		vs := req.Header[h.key]
		present = len(vs) > 0
		if present {
			v = vs[0]
		}
	}
	var ok bool
	switch {
	case h.re != nil:
		ok = present && h.re.MatchString(v)
	case h.def.Exact != "":
		ok = present && v == h.def.Exact
	case h.def.Prefix != "":
		ok = present && strings.HasPrefix(v, h.def.Prefix)
	case h.def.Suffix != "":
		ok = present && strings.HasSuffix(v, h.def.Suffix)
	default: // Present
		ok = present
	}
	return ok != h.def.Invert
}

func (q *queryMatcher) match(raw string) bool {
	v, present := queryValue(raw, q.def.Name)
	switch {
	case q.re != nil:
		return present && q.re.MatchString(v)
	case q.def.Exact != "":
		return present && v == q.def.Exact
	default:
		return present
	}
}

// queryValue returns the first value of the query parameter name in the raw
// query, unescaping only when it has to.
func queryValue(raw, name string) (string, bool) {
	for raw != "" {
		var part string
		part, raw, _ = strings.Cut(raw, "&")
		if part == "" {
			continue
		}
		k, v, _ := strings.Cut(part, "=")
		if strings.ContainsAny(k, "%+") {
			uk, err := url.QueryUnescape(k)
			if err != nil {
				continue
			}
			k = uk
		}
		if k != name {
			continue
		}
		if strings.ContainsAny(v, "%+") {
			uv, err := url.QueryUnescape(v)
			if err != nil {
				continue
			}
			v = uv
		}
		return v, true
	}
	return "", false
}

// Route decides where req goes: the first matching route of the router (if
// any), then the split that pick, in [0, 100), falls in (if a splitter is
// reached), then the resolver's target and failover. It reads the request's
// path, method, headers and query; it changes nothing.
func (c *Chain) Route(req *http.Request, pick float64) (*RouteDecision, error) {
	if err := c.Prepare(); err != nil {
		return nil, err
	}
	d := &RouteDecision{RouteName: DefaultRouteName}
	name := c.StartNode
	for range maxHops {
		n := c.Nodes[name]
		if n == nil {
			return nil, fmt.Errorf("chain %s: no node %q", c.ServiceName, name)
		}
		switch n.Type {
		case NodeRouter:
			ms := c.eval.prep.routers[name]
			i := -1
			for j, m := range ms {
				if m.match(req) {
					i = j
					break
				}
			}
			if i < 0 {
				return nil, ErrNoRoute
			}
			// The last route is the implicit one a router always ends with.
			if i < len(n.Routes)-1 {
				d.RouteName = c.eval.prep.names[i]
				d.Destination = n.Routes[i].Definition.Destination
			}
			name = n.Routes[i].NextNode
		case NodeSplitter:
			s := pickSplit(n.Splits, pick)
			if s == nil {
				return nil, fmt.Errorf("chain %s: splitter %s has no splits", c.ServiceName, name)
			}
			d.Split = s.Definition
			name = s.NextNode
		case NodeResolver:
			d.Resolver = n.Resolver
			d.Target = n.Resolver.Target
			if n.Resolver.Failover != nil {
				d.Failover = n.Resolver.Failover.Targets
			}
			d.LoadBalancer = n.LoadBalancer
			return d, nil
		default:
			return nil, fmt.Errorf("chain %s: node %s has unknown type %q", c.ServiceName, name, n.Type)
		}
	}
	return nil, fmt.Errorf("chain %s: more than %d nodes from %s", c.ServiceName, maxHops, c.StartNode)
}

// pickSplit returns the split whose share of [0, 100) holds pick; the last
// one when rounding leaves pick beyond the sum of the weights.
func pickSplit(splits []*Split, pick float64) *Split {
	if len(splits) == 0 {
		return nil
	}
	var sum float64
	for _, s := range splits {
		sum += float64(s.Weight)
		if pick < sum {
			return s
		}
	}
	for i := len(splits) - 1; i >= 0; i-- {
		if splits[i].Weight > 0 {
			return splits[i]
		}
	}
	return splits[len(splits)-1]
}

// TCPTarget returns the target a connection (not a request) to the service
// uses, and its failover targets in order (shared with the chain: do not
// modify). For a tcp service it is the start node's resolver. A chain that
// starts at a router or splitter (an HTTP service dialled as tcp) is
// followed through the router's default route and the splitter's heaviest
// split. primary is "" when the chain is malformed.
func (c *Chain) TCPTarget() (primary string, failover []string) {
	name := c.StartNode
	for range maxHops {
		n := c.Nodes[name]
		if n == nil {
			return "", nil
		}
		switch n.Type {
		case NodeRouter:
			if len(n.Routes) == 0 {
				return "", nil
			}
			name = n.Routes[len(n.Routes)-1].NextNode
		case NodeSplitter:
			var best *Split
			for _, s := range n.Splits {
				if best == nil || s.Weight > best.Weight {
					best = s
				}
			}
			if best == nil {
				return "", nil
			}
			name = best.NextNode
		case NodeResolver:
			if n.Resolver == nil {
				return "", nil
			}
			if n.Resolver.Failover != nil {
				failover = n.Resolver.Failover.Targets
			}
			return n.Resolver.Target, failover
		default:
			return "", nil
		}
	}
	return "", nil
}
