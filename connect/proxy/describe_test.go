package proxy

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/trellismesh/trellis/connect/chain"
	"github.com/trellismesh/trellis/connect/configentry"
)

// Describe shows the listeners, the chain an upstream follows with its
// targets and their instances, the upstream config and the certificate.
func TestProxy_Describe(t *testing.T) {
	t.Parallel()
	m := newMesh(t)
	d := m.client.Describe()
	if d.ProxyID != m.clientID || d.Service != "web" || d.PublicAddr != m.client.PublicAddr().String() {
		t.Errorf("proxy %q service %q public %q", d.ProxyID, d.Service, d.PublicAddr)
	}
	if d.ServiceConfig.Protocol != "tcp" {
		t.Errorf("protocol %q, want tcp", d.ServiceConfig.Protocol)
	}
	if len(d.Upstreams) != 1 {
		t.Fatalf("%d upstreams, want 1", len(d.Upstreams))
	}
	u := d.Upstreams[0]
	if u.DestinationName != "db" || u.LocalAddr != m.client.UpstreamAddr("db").String() || u.Mode != ModeTCP || u.Chain != nil {
		t.Errorf("upstream before a chain: %+v", u)
	}

	// Without a chain: the instances of SetInstances.
	m.client.SetInstances("db", []Instance{{Node: "n0", Addr: "127.0.0.1:1"}})
	if got := m.client.Describe().Upstreams[0].Instances; len(got) != 1 || got[0].Addr != "127.0.0.1:1" || got[0].Identity != "db" || got[0].Node != "n0" {
		t.Errorf("instances without a chain: %+v", got)
	}

	m.client.SetServiceConfig(ServiceConfig{Protocol: "http", LocalRequestTimeout: 3 * time.Second, MaxInboundConnections: 7})
	m.client.SetChain("db", testChain(chain.Resolver{DrainTimeout: configentry.Duration(time.Second)}, nil, "db", "db-v2"))
	m.client.SetTargetInstances("db", targetID("", "db"), []Instance{{Node: "n1", Addr: "127.0.0.1:2"}})
	m.client.SetTargetInstances("db", targetID("", "db-v2"), []Instance{{Node: "n2", Addr: "127.0.0.1:3"}})
	maxConns := 5
	m.client.SetUpstreamConfig("db", &configentry.UpstreamConfig{Limits: &configentry.UpstreamLimits{MaxConnections: &maxConns}})

	d = m.client.Describe()
	if sc := d.ServiceConfig; sc.Protocol != "http" || sc.LocalRequestTimeout.D() != 3*time.Second || sc.MaxInboundConnections != 7 {
		t.Errorf("service config %+v", sc)
	}
	u = d.Upstreams[0]
	if u.Chain == nil {
		t.Fatal("no chain in the description")
	}
	if c := u.Chain; c.ServiceName != "db" || c.Target != targetID("", "db") || len(c.Failover) != 1 || c.Failover[0] != targetID("", "db-v2") || c.DrainTimeout.D() != time.Second {
		t.Errorf("chain %+v", c)
	}
	if len(u.Targets) != 2 {
		t.Fatalf("targets %+v, want 2", u.Targets)
	}
	for i, want := range []struct{ id, role, addr, node, identity string }{
		{targetID("", "db"), RolePrimary, "127.0.0.1:2", "n1", "db"},
		{targetID("", "db-v2"), RoleFailover, "127.0.0.1:3", "n2", "db-v2"},
	} {
		tg := u.Targets[i]
		if tg.ID != want.id || tg.Role != want.role || len(tg.Instances) != 1 {
			t.Errorf("target %d: %+v, want %s (%s) with one instance", i, tg, want.id, want.role)
			continue
		}
		if in := tg.Instances[0]; in.Addr != want.addr || in.Node != want.node || in.Identity != want.identity || in.BackedOff {
			t.Errorf("instance of %s: %+v", want.id, in)
		}
	}
	if u.Config == nil || u.Config.Limits == nil || *u.Config.Limits.MaxConnections != 5 {
		t.Errorf("upstream config %+v", u.Config)
	}

	c := d.Certificate
	if c == nil || c.Error != "" {
		t.Fatalf("certificate %+v", c)
	}
	if !strings.HasPrefix(c.SpiffeID, "spiffe://") || !strings.HasSuffix(c.SpiffeID, "/svc/web") {
		t.Errorf("SPIFFE ID %q", c.SpiffeID)
	}
	if c.Serial == "" || !c.NotAfter.After(time.Now()) || !c.NotBefore.Before(c.NotAfter) {
		t.Errorf("certificate %+v", c)
	}
	if b := d.TrustBundle; b == nil || b.TrustDomain != testTrustDomain || b.Roots != 1 {
		t.Errorf("trust bundle %+v", b)
	}
	if _, err := json.Marshal(d); err != nil {
		t.Errorf("marshal: %v", err)
	}

	// An http chain puts the upstream on the L7 path.
	hc := testChain(chain.Resolver{}, nil, "db")
	hc.Protocol = configentry.ProtocolHTTP
	m.client.SetChain("db", hc)
	m.client.SetTargetInstances("db", targetID("", "db"), []Instance{{Node: "n1", Addr: "127.0.0.1:4"}})
	u = m.client.Describe().Upstreams[0]
	if u.Mode != ModeL7 || u.Protocol != "http" || len(u.Targets) != 1 || len(u.Targets[0].Instances) != 1 || u.Targets[0].Instances[0].Addr != "127.0.0.1:4" {
		t.Errorf("l7 upstream %+v", u)
	}
}
