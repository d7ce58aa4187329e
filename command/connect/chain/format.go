package chain

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/trellismesh/trellis/api"
)

// formatText writes the chain for people: a header, each node in the
// order evaluation reaches it from the start node, then the targets.
func formatText(ch *api.CompiledDiscoveryChain) string {
	var b strings.Builder
	w := tabwriter.NewWriter(&b, 0, 8, 2, ' ', 0)
	fmt.Fprintf(w, "Service:\t%s\n", ch.ServiceName)
	fmt.Fprintf(w, "Datacenter:\t%s\n", ch.Datacenter)
	fmt.Fprintf(w, "Protocol:\t%s\n", ch.Protocol)
	if ch.Default {
		fmt.Fprintf(w, "Default:\ttrue (no config entry shapes this chain)\n")
	}
	fmt.Fprintf(w, "Start node:\t%s\n", ch.StartNode)
	w.Flush()

	for _, name := range nodeOrder(ch) {
		n := ch.Nodes[name]
		fmt.Fprintf(&b, "\n%s\n", name)
		w := tabwriter.NewWriter(&b, 0, 8, 2, ' ', 0)
		switch {
		case len(n.Routes) > 0:
			for i, r := range n.Routes {
				// The labels are the proxies' metrics labels of the routes;
				// the last route is the implicit catch-all.
				label := fmt.Sprintf("route:%d", i)
				if i == len(n.Routes)-1 {
					label = "default"
				}
				fmt.Fprintf(w, "  %s\t%s\t-> %s\n", label, describeMatch(r.Definition), r.NextNode)
			}
		case len(n.Splits) > 0:
			for _, s := range n.Splits {
				fmt.Fprintf(w, "  %s%%\t-> %s\n", weight(s.Weight), s.NextNode)
			}
		case n.Resolver != nil:
			r := n.Resolver
			fmt.Fprintf(w, "  Target:\t%s\n", r.Target)
			if r.Failover != nil && len(r.Failover.Targets) > 0 {
				fmt.Fprintf(w, "  Failover:\t%s\n", strings.Join(r.Failover.Targets, ", "))
			}
			fmt.Fprintf(w, "  Connect timeout:\t%s\n", r.ConnectTimeout)
			if r.RequestTimeout > 0 {
				fmt.Fprintf(w, "  Request timeout:\t%s\n", r.RequestTimeout)
			}
			if r.DrainTimeout > 0 {
				fmt.Fprintf(w, "  Drain timeout:\t%s\n", r.DrainTimeout)
			}
			if lb := n.LoadBalancer; lb != nil && lb.Policy != "" {
				fmt.Fprintf(w, "  Load balancer:\t%s\n", lb.Policy)
			}
			if r.Default {
				fmt.Fprintf(w, "  (no service-resolver entry: defaults)\n")
			}
		}
		w.Flush()
	}

	if len(ch.Targets) > 0 {
		fmt.Fprintf(&b, "\nTargets\n")
		w := tabwriter.NewWriter(&b, 0, 8, 2, ' ', 0)
		for _, id := range slices.Sorted(maps.Keys(ch.Targets)) {
			t := ch.Targets[id]
			desc := "service " + t.Service
			if t.ServiceSubset != "" {
				desc += ", subset " + t.ServiceSubset
				if t.Subset.Filter != "" {
					desc += " (" + t.Subset.Filter + ")"
				}
				if t.Subset.OnlyPassing {
					desc += ", only passing"
				}
			}
			if t.Datacenter != ch.Datacenter {
				desc += ", datacenter " + t.Datacenter
			}
			desc += fmt.Sprintf(", connect timeout %s", t.ConnectTimeout)
			fmt.Fprintf(w, "  %s\t%s\n", id, desc)
		}
		w.Flush()
	}
	return b.String()
}

// nodeOrder lists the nodes breadth first from the start node, then any
// the start does not reach, by name.
func nodeOrder(ch *api.CompiledDiscoveryChain) []string {
	var order []string
	seen := map[string]bool{}
	queue := []string{ch.StartNode}
	for len(queue) > 0 {
		name := queue[0]
		queue = queue[1:]
		n := ch.Nodes[name]
		if n == nil || seen[name] {
			continue
		}
		seen[name] = true
		order = append(order, name)
		for _, r := range n.Routes {
			queue = append(queue, r.NextNode)
		}
		for _, s := range n.Splits {
			queue = append(queue, s.NextNode)
		}
	}
	for _, name := range slices.Sorted(maps.Keys(ch.Nodes)) {
		if !seen[name] {
			order = append(order, name)
		}
	}
	return order
}

func weight(w float32) string {
	return strings.TrimSuffix(strings.TrimRight(fmt.Sprintf("%.2f", w), "0"), ".")
}

// describeMatch says what a route matches, in one line.
func describeMatch(r *api.ServiceRoute) string {
	if r == nil || r.Match == nil || r.Match.HTTP == nil {
		return "everything"
	}
	h := r.Match.HTTP
	var parts []string
	switch {
	case h.PathExact != "":
		parts = append(parts, "path = "+h.PathExact)
	case h.PathPrefix != "":
		parts = append(parts, "path prefix "+h.PathPrefix)
	case h.PathRegex != "":
		parts = append(parts, "path ~ "+h.PathRegex)
	}
	for _, hd := range h.Header {
		not := ""
		if hd.Invert {
			not = "not "
		}
		var p string
		switch {
		case hd.Exact != "":
			p = "= " + hd.Exact
		case hd.Prefix != "":
			p = "prefix " + hd.Prefix
		case hd.Suffix != "":
			p = "suffix " + hd.Suffix
		case hd.Regex != "":
			p = "~ " + hd.Regex
		default:
			p = "present"
		}
		parts = append(parts, fmt.Sprintf("header %s %s%s", hd.Name, not, p))
	}
	for _, q := range h.QueryParam {
		var p string
		switch {
		case q.Exact != "":
			p = "= " + q.Exact
		case q.Regex != "":
			p = "~ " + q.Regex
		default:
			p = "present"
		}
		parts = append(parts, fmt.Sprintf("query %s %s", q.Name, p))
	}
	if len(h.Methods) > 0 {
		parts = append(parts, "method "+strings.Join(h.Methods, "|"))
	}
	if len(parts) == 0 {
		return "everything"
	}
	return strings.Join(parts, ", ")
}
