package proxyconfig

import (
	"fmt"
	"strings"
	"time"

	"github.com/trellismesh/trellis/api"
)

// formatText writes pc for people, as of now.
func formatText(pc *api.ProxyConfig, now time.Time) string {
	var b strings.Builder
	p := pc.Proxy
	fmt.Fprintf(&b, "Proxy %s (service %s)\n", p.ProxyID, p.Service)
	fmt.Fprintf(&b, "  Public listener: %s -> application %s\n", p.PublicAddr, p.LocalAppAddr)
	sc := p.ServiceConfig
	fmt.Fprintf(&b, "  Protocol:        %s", sc.Protocol)
	var extra []string
	if sc.LocalConnectTimeout != "" && sc.LocalConnectTimeout != "0s" {
		extra = append(extra, "local connect timeout "+sc.LocalConnectTimeout)
	}
	if sc.LocalRequestTimeout != "" && sc.LocalRequestTimeout != "0s" {
		extra = append(extra, "local request timeout "+sc.LocalRequestTimeout)
	}
	if sc.MaxInboundConnections > 0 {
		extra = append(extra, fmt.Sprintf("max inbound %d", sc.MaxInboundConnections))
	}
	if len(extra) > 0 {
		fmt.Fprintf(&b, " (%s)", strings.Join(extra, ", "))
	}
	b.WriteString("\n\n")

	if len(p.Upstreams) == 0 {
		b.WriteString("Upstreams: none\n")
	} else {
		b.WriteString("Upstreams:\n")
	}
	for _, u := range p.Upstreams {
		fmt.Fprintf(&b, "  %s on %s, mode %s, protocol %s, %d active\n", u.DestinationName, u.LocalAddr, u.Mode, u.Protocol, u.ActiveConnections)
		if u.Chain == nil {
			b.WriteString("    no discovery chain; instances:\n")
			writeInstances(&b, u.Instances, now)
		} else {
			ch := u.Chain
			fmt.Fprintf(&b, "    chain of %s: target %s", ch.ServiceName, ch.Target)
			if len(ch.Failover) > 0 {
				fmt.Fprintf(&b, ", failover %s", strings.Join(ch.Failover, ", "))
			}
			if ch.DrainTimeout != "" && ch.DrainTimeout != "0s" {
				fmt.Fprintf(&b, ", drain timeout %s", ch.DrainTimeout)
			}
			b.WriteString("\n")
			for _, t := range u.Targets {
				fmt.Fprintf(&b, "    target %s (%s, identity %s):\n", t.ID, t.Role, t.Identity)
				writeInstances(&b, t.Instances, now)
			}
		}
		if len(u.Config) > 0 && string(u.Config) != "null" {
			fmt.Fprintf(&b, "    upstream config: %s\n", u.Config)
		}
	}
	b.WriteString("\n")

	fmt.Fprintf(&b, "Intentions for %s (precedence order; default policy %s):\n", p.Service, pc.DefaultIntentionPolicy)
	if len(pc.Intentions) == 0 {
		b.WriteString("  none\n")
	}
	for _, ixn := range pc.Intentions {
		action := ixn.Action
		if action == "" && len(ixn.Permissions) > 0 {
			action = fmt.Sprintf("%d L7 permissions", len(ixn.Permissions))
		}
		fmt.Fprintf(&b, "  %s => %s %s (precedence %d)\n", ixn.SourceName, ixn.DestinationName, action, ixn.Precedence)
	}
	b.WriteString("\n")

	if c := p.Certificate; c == nil {
		b.WriteString("Certificate: none yet\n")
	} else if c.Error != "" {
		fmt.Fprintf(&b, "Certificate: cannot be read: %s\n", c.Error)
	} else {
		fmt.Fprintf(&b, "Certificate: %s\n", c.SpiffeID)
		fmt.Fprintf(&b, "  Serial:  %s\n", c.Serial)
		left := c.NotAfter.Sub(now).Round(time.Second)
		state := left.String() + " left"
		if left <= 0 {
			state = "expired"
		}
		fmt.Fprintf(&b, "  Valid:   %s to %s (%s)\n", c.NotBefore.UTC().Format(time.RFC3339), c.NotAfter.UTC().Format(time.RFC3339), state)
	}
	if tb := p.TrustBundle; tb != nil {
		fmt.Fprintf(&b, "  Trust:   %s, %d root(s), active %s\n", tb.TrustDomain, tb.Roots, tb.ActiveRootID)
	}
	return b.String()
}

func writeInstances(b *strings.Builder, insts []api.ProxyInstance, now time.Time) {
	if len(insts) == 0 {
		b.WriteString("      (no instances)\n")
	}
	for _, in := range insts {
		fmt.Fprintf(b, "      %s node %s identity %s, %d active", in.Addr, in.Node, in.Identity, in.ActiveConnections+in.ActiveRequests)
		if in.BackedOff {
			fmt.Fprintf(b, ", backed off for %s", in.BackoffUntil.Sub(now).Round(time.Millisecond))
		}
		if in.ConsecutiveFailures > 0 {
			fmt.Fprintf(b, ", %d failures in a row", in.ConsecutiveFailures)
		}
		if in.Ejected {
			fmt.Fprintf(b, ", ejected for %s", in.EjectedUntil.Sub(now).Round(time.Millisecond))
		}
		b.WriteString("\n")
	}
}
