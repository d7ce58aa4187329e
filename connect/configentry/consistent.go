package configentry

import (
	"fmt"
	"slices"
	"strings"

	"github.com/trellismesh/trellis/connect"
)

// Protocol returns the protocol of service: its service-defaults Protocol,
// else proxy-defaults' Config["protocol"], else tcp.
func Protocol(set Set, service string) string {
	p, _ := protocolOf(set, service)
	return p
}

// protocolOf returns the protocol of service and says where it comes from.
func protocolOf(set Set, service string) (proto, from string) {
	if sd, ok := set.Get(ServiceDefaults, service).(*ServiceConfigEntry); ok && sd != nil && sd.Protocol != "" {
		return strings.ToLower(sd.Protocol), Key{ServiceDefaults, service}.String()
	}
	if pd, ok := set.Get(ProxyDefaults, ProxyDefaultsName).(*ProxyConfigEntry); ok && pd != nil {
		if p, ok := pd.Config["protocol"].(string); ok && p != "" {
			return strings.ToLower(p), Key{ProxyDefaults, ProxyDefaultsName}.String()
		}
	}
	return ProtocolTCP, ""
}

// family groups protocols whose services can route to one another.
func family(p string) string {
	if p == ProtocolHTTP2 {
		return ProtocolHTTP
	}
	return p
}

// problem is an inconsistency between entries. holder is the entry where
// field is; involves lists every entry whose change could cause it.
type problem struct {
	holder   Key
	field    string
	altField string // the field named when the change is not to holder
	msg      string
	involves []Key
	// loop, for a loop, lists its entries' names (first == last); the
	// message shows it starting at the changed entry.
	loop []string
}

// Consistent checks the entries of set related to changed (set already holds
// the change; a deleted entry is absent). It refuses a router or splitter
// for a service whose protocol is not http, http2 or grpc (and a protocol
// change that would leave one), routes and splits to services of another
// protocol family, references to subsets no resolver defines, redirect loops
// and splitter cycles. Inconsistencies that changed has no part in are not
// reported. The error is a *FieldError.
func Consistent(set Set, changed Key) error {
	for _, p := range problems(set) {
		if !slices.Contains(p.involves, changed) {
			continue
		}
		if p.loop != nil {
			ring := p.loop[:len(p.loop)-1]
			i := max(slices.Index(ring, changed.Name), 0)
			l := append(slices.Clone(ring[i:]), ring[:i]...)
			l = append(l, l[0])
			return &FieldError{Field: p.field, Msg: "loop " + strings.Join(l, " -> ")}
		}
		if p.holder == changed {
			return &FieldError{Field: p.field, Msg: p.msg}
		}
		f := p.altField
		if f == "Protocol" && changed.Kind == ProxyDefaults {
			// proxy-defaults has its protocol in Config.
			f = `Config["protocol"]`
		}
		return &FieldError{Field: f, Msg: p.msg}
	}
	return nil
}

func sortedEntries(set Set, kind string) []Entry {
	es := set.List(kind)
	slices.SortFunc(es, func(a, b Entry) int { return strings.Compare(a.GetName(), b.GetName()) })
	return es
}

// protocolOrigin returns the protocol of service and, in words, what set
// it.
func protocolOrigin(set Set, service string) (proto, origin string) {
	proto, from := protocolOf(set, service)
	if from == "" {
		return proto, "the default, as neither service-defaults/" + service + " nor proxy-defaults/global sets one"
	}
	return proto, "set by " + from
}

// problems lists every inconsistency in set, in a stable order.
func problems(set Set) []problem {
	var out []problem
	protoKeys := func(services ...string) []Key {
		ks := []Key{{ProxyDefaults, ProxyDefaultsName}}
		for _, s := range services {
			ks = append(ks, Key{ServiceDefaults, s})
		}
		return ks
	}
	needsHTTP := func(k Key) {
		proto, src := protocolOrigin(set, k.Name)
		if IsHTTP(proto) {
			return
		}
		out = append(out, problem{
			holder: k, field: "Name", altField: "Protocol",
			msg:      fmt.Sprintf("service %q has a %s, which needs protocol http, http2 or grpc; its protocol is %s (%s)", k.Name, k.Kind, proto, src),
			involves: append(protoKeys(k.Name), k),
		})
	}
	// subsetRef checks that subset of service is defined by its resolver.
	subsetRef := func(holder Key, field, service, subset string) {
		if subset == "" {
			return
		}
		rk := Key{ServiceResolver, service}
		r, _ := set.Get(ServiceResolver, service).(*ServiceResolverConfigEntry)
		var why string
		switch {
		case r == nil:
			why = fmt.Sprintf("no service-resolver for %q defines subsets", service)
		case r.Subsets == nil:
			why = fmt.Sprintf("%s defines no subsets", rk)
		default:
			if _, ok := r.Subsets[subset]; ok {
				return
			}
			why = fmt.Sprintf("%s defines only %s", rk, strings.Join(sortedKeys(r.Subsets), ", "))
		}
		out = append(out, problem{
			holder: holder, field: field, altField: "Subsets",
			msg:      fmt.Sprintf("%s %s leads to subset %q of %q, but %s", holder, field, subset, service, why),
			involves: []Key{holder, rk},
		})
	}
	sameFamily := func(holder Key, field, target string) {
		if target == "" || target == holder.Name {
			return
		}
		p, _ := protocolOf(set, holder.Name)
		tp, _ := protocolOf(set, target)
		if family(p) == family(tp) {
			return
		}
		out = append(out, problem{
			holder: holder, field: field, altField: "Protocol",
			msg:      fmt.Sprintf("%s %s leads to %q, which speaks %s, but %q speaks %s: the protocols must match", holder, field, target, tp, holder.Name, p),
			involves: append(protoKeys(holder.Name, target), holder),
		})
	}

	for _, e := range sortedEntries(set, ServiceRouter) {
		r := e.(*ServiceRouterConfigEntry)
		k := KeyOf(r)
		needsHTTP(k)
		for i, rt := range r.Routes {
			d := rt.Destination
			if d == nil {
				continue
			}
			f := fmt.Sprintf("Routes[%d].Destination", i)
			svc := d.Service
			if svc == "" {
				svc = r.Name
			}
			sameFamily(k, f+".Service", d.Service)
			subsetRef(k, f+".ServiceSubset", svc, d.ServiceSubset)
		}
	}
	for _, e := range sortedEntries(set, ServiceSplitter) {
		s := e.(*ServiceSplitterConfigEntry)
		k := KeyOf(s)
		needsHTTP(k)
		for i, sp := range s.Splits {
			f := fmt.Sprintf("Splits[%d]", i)
			svc := sp.Service
			if svc == "" {
				svc = s.Name
			}
			sameFamily(k, f+".Service", sp.Service)
			subsetRef(k, f+".ServiceSubset", svc, sp.ServiceSubset)
		}
	}
	// L7 permissions are enforced by the L7 path: the destination must
	// speak HTTP (a wildcard destination cannot be checked).
	for _, e := range sortedEntries(set, ServiceIntentions) {
		ix := e.(*ServiceIntentionsConfigEntry)
		if ix.Name == connect.Wildcard {
			continue
		}
		k := KeyOf(ix)
		for i, src := range ix.Sources {
			if src == nil || len(src.Permissions) == 0 {
				continue
			}
			proto, origin := protocolOrigin(set, ix.Name)
			if IsHTTP(proto) {
				continue
			}
			out = append(out, problem{
				holder: k, field: fmt.Sprintf("Sources[%d].Permissions", i), altField: "Protocol",
				msg: fmt.Sprintf("source %q of service %q has L7 permissions, which need protocol http, http2 or grpc; its protocol is %s (%s): use an Action, or set the protocol",
					src.Name, ix.Name, proto, origin),
				involves: append(protoKeys(ix.Name), k),
			})
			break
		}
	}
	for _, e := range sortedEntries(set, ServiceResolver) {
		r := e.(*ServiceResolverConfigEntry)
		k := KeyOf(r)
		if rd := r.Redirect; rd != nil && rd.Datacenter == "" {
			svc := rd.Service
			if svc == "" {
				svc = r.Name
			}
			subsetRef(k, "Redirect.ServiceSubset", svc, rd.ServiceSubset)
		}
		for _, key := range sortedKeys(r.Failover) {
			fo := r.Failover[key]
			f := elemPath("Failover", key)
			if len(fo.Datacenters) == 0 {
				svc := fo.Service
				if svc == "" {
					svc = r.Name
				}
				subsetRef(k, f+".ServiceSubset", svc, fo.ServiceSubset)
			}
			for i, t := range fo.Targets {
				if t.Datacenter != "" {
					continue
				}
				svc := t.Service
				if svc == "" {
					svc = r.Name
				}
				subsetRef(k, fmt.Sprintf("%s.Targets[%d].ServiceSubset", f, i), svc, t.ServiceSubset)
			}
		}
	}
	out = append(out, redirectLoops(set)...)
	out = append(out, splitterCycles(set)...)
	return out
}

// redirectLoops finds resolvers whose redirects (within the datacenter)
// lead back to themselves.
func redirectLoops(set Set) []problem {
	next := func(name string) (string, bool) {
		r, _ := set.Get(ServiceResolver, name).(*ServiceResolverConfigEntry)
		if r == nil || r.Redirect == nil || r.Redirect.Datacenter != "" {
			return "", false
		}
		if r.Redirect.Service == "" {
			return name, false // a redirect to its own subset: Validate's business
		}
		return r.Redirect.Service, true
	}
	var out []problem
	reported := map[string]bool{}
	for _, e := range sortedEntries(set, ServiceResolver) {
		path := []string{e.GetName()}
		for {
			n, ok := next(path[len(path)-1])
			if !ok {
				break
			}
			if i := slices.Index(path, n); i >= 0 {
				loop := append(slices.Clone(path[i:]), n)
				id := canonicalLoop(loop)
				if !reported[id] {
					reported[id] = true
					out = append(out, loopProblem(ServiceResolver, "Redirect", loop))
				}
				break
			}
			path = append(path, n)
		}
	}
	return out
}

// splitterCycles finds splitters that split, through other services'
// splitters, back to themselves. A split to its own service goes to its
// resolver, so it is no cycle.
func splitterCycles(set Set) []problem {
	edges := func(name string) []string {
		s, _ := set.Get(ServiceSplitter, name).(*ServiceSplitterConfigEntry)
		if s == nil {
			return nil
		}
		var out []string
		for _, sp := range s.Splits {
			if sp.Service != "" && sp.Service != name && set.Get(ServiceSplitter, sp.Service) != nil && !slices.Contains(out, sp.Service) {
				out = append(out, sp.Service)
			}
		}
		return out
	}
	var out []problem
	reported := map[string]bool{}
	const (
		visiting = 1
		done     = 2
	)
	state := map[string]int{}
	var stack []string
	var visit func(string)
	visit = func(n string) {
		state[n] = visiting
		stack = append(stack, n)
		for _, m := range edges(n) {
			switch state[m] {
			case visiting:
				i := slices.Index(stack, m)
				loop := append(slices.Clone(stack[i:]), m)
				if id := canonicalLoop(loop); !reported[id] {
					reported[id] = true
					out = append(out, loopProblem(ServiceSplitter, "Splits", loop))
				}
			case 0:
				visit(m)
			}
		}
		stack = stack[:len(stack)-1]
		state[n] = done
	}
	for _, e := range sortedEntries(set, ServiceSplitter) {
		if state[e.GetName()] == 0 {
			visit(e.GetName())
		}
	}
	return out
}

// canonicalLoop names a loop (first == last) regardless of where it starts.
func canonicalLoop(loop []string) string {
	ring := loop[:len(loop)-1]
	best := 0
	for i := range ring {
		if ring[i] < ring[best] {
			best = i
		}
	}
	return strings.Join(append(slices.Clone(ring[best:]), ring[:best]...), "\x00")
}

func loopProblem(kind, field string, loop []string) problem {
	p := problem{field: field, altField: field, msg: "loop " + strings.Join(loop, " -> "), loop: loop}
	p.holder = Key{kind, loop[0]}
	for _, n := range loop[:len(loop)-1] {
		p.involves = append(p.involves, Key{kind, n})
	}
	return p
}
