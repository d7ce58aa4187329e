package mesh

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/trellismesh/trellis/connect/chain"
	"github.com/trellismesh/trellis/connect/configentry"
	"github.com/trellismesh/trellis/connect/proxy"
	"github.com/trellismesh/trellis/raftstore/structs"
)

// oldServerRecheck is how often a chain watch asks again, while the servers
// do not serve DiscoveryChain.Get (an older version), whether they do now.
const oldServerRecheck = 30 * time.Second

// shared is a watch shared by subscribers, stopped when the last one
// releases it.
type shared[T any] struct {
	w    *watch[T]
	refs int // guarded by Cache.mu
}

// acquire subscribes fn (when not nil) to the watch of key in m (guarded by
// c.mu), starting it with fetch when there is none. The release function
// unsubscribes, and stops the watch with its last subscriber.
func acquire[T any](c *Cache, m map[string]*shared[T], key, name string, fetch fetchFn[T], fn func(T)) (func(), error) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil, errWatchStopped
	}
	sh := m[key]
	if sh == nil {
		sh = &shared[T]{w: startWatch(name, c.logger, fetch, nil)}
		m[key] = sh
	}
	sh.refs++
	c.mu.Unlock()
	unsub := func() {}
	if fn != nil {
		unsub = sh.w.subscribeNow(fn)
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			unsub()
			c.mu.Lock()
			sh.refs--
			last := sh.refs == 0 && m[key] == sh
			if last {
				delete(m, key)
			}
			c.mu.Unlock()
			if last {
				sh.w.stop()
			}
		})
	}, nil
}

// --- Discovery chains ---

// SubscribeChain calls fn with the compiled discovery chain of service now
// (if known) and after every change, until the returned release function is
// called. fn must return quickly and must not modify the chain (subscribers
// share it). One blocking query per service, however many proxies dial it;
// while the servers are unreachable the last chain is kept. Servers that do
// not serve discovery chains yet (an older version) get the default chain:
// the service itself, resolved with defaults.
func (c *Cache) SubscribeChain(service string, fn func(*chain.Chain)) (release func(), err error) {
	return acquire(c, c.chains, strings.ToLower(service), "discovery chain of "+service, c.fetchChain(service), fn)
}

// Chain returns the discovery chain of service, asking the servers directly
// (for tests and the CLI; the proxies watch).
func (c *Cache) Chain(ctx context.Context, service string) (*chain.Chain, error) {
	ch, _, err := c.fetchChain(service)(ctx, 0)
	return ch, err
}

// defaultChain is the chain of a service no config entry shapes.
func (c *Cache) defaultChain(service string) (*chain.Chain, error) {
	return chain.Compile(chain.Request{ServiceName: service, Datacenter: c.cfg.Datacenter, Entries: configentry.MapSet{}})
}

// fetchChain runs the blocking query of service's chain. A server that does
// not know the method gets the default chain, asked again every
// oldServerRecheck, unless a server once answered with a chain: then it is
// an error (a rolling upgrade, say), and the watch keeps that chain.
func (c *Cache) fetchChain(service string) fetchFn[*chain.Chain] {
	answered := false // only the watch's goroutine calls the function
	return func(ctx context.Context, minIndex uint64) (*chain.Chain, uint64, error) {
		var reply structs.DiscoveryChainResponse
		req := &structs.DiscoveryChainRequest{Datacenter: c.cfg.Datacenter, Name: service, QueryOptions: c.query(minIndex)}
		err := c.cfg.RPC.RPC(ctx, structs.MethodDiscoveryChainGet, req, &reply)
		if errors.Is(err, structs.ErrUnknownMethod) && !answered {
			if minIndex > 0 {
				t := time.NewTimer(min(oldServerRecheck, c.cfg.QueryWait))
				defer t.Stop()
				select {
				case <-ctx.Done():
					return nil, 0, ctx.Err()
				case <-t.C:
				}
			}
			ch, err := c.defaultChain(service)
			return ch, 1, err
		}
		if err != nil {
			return nil, 0, err
		}
		answered = true
		if reply.Chain == nil {
			ch, err := c.defaultChain(service)
			return ch, reply.Index, err
		}
		return reply.Chain, reply.Index, nil
	}
}

// --- Endpoints of targets ---

// SubscribeTarget calls fn with the healthy mesh endpoints of target t of a
// chain now (if known) and after every change, until the returned release
// function is called; fn must return quickly. The endpoints are those of
// t.Service (in t.Datacenter) that t.Subset selects: its Filter matched
// against each instance's node name and service ID, name, tags, meta and
// port (of the instance a sidecar proxies: its ID and name, the tags and
// meta the sidecar carries, which it inherits, and the application's port),
// and its health — passing only with OnlyPassing, else passing or warning.
// Each endpoint's Service is t.Name, the identity its certificate must
// carry. One blocking query per service, however many targets and proxies
// use it. A filter that does not compile is an error.
func (c *Cache) SubscribeTarget(t *chain.Target, fn func([]proxy.Instance)) (release func(), err error) {
	f, err := configentry.CompileFilter(t.Subset.Filter)
	if err != nil {
		return nil, fmt.Errorf("target %s: subset filter %q: %w", t.ID, t.Subset.Filter, err)
	}
	dc := t.Datacenter
	if dc == "" {
		dc = c.cfg.Datacenter
	}
	name := t.Name
	if name == "" {
		name = t.Service
	}
	only := t.Subset.OnlyPassing
	var sub func([]structs.CheckServiceNode)
	if fn != nil {
		sub = func(nodes []structs.CheckServiceNode) { fn(targetInstances(nodes, f, only, name)) }
	}
	key := strings.ToLower(dc + "/" + t.Service)
	return acquire(c, c.nodes, key, "endpoints of "+t.Service+" in "+dc, c.fetchNodes(dc, t.Service), sub)
}

// fetchNodes runs the blocking query of the mesh endpoints of service, all
// of them whatever their health (targets choose).
func (c *Cache) fetchNodes(dc, service string) fetchFn[[]structs.CheckServiceNode] {
	return func(ctx context.Context, minIndex uint64) ([]structs.CheckServiceNode, uint64, error) {
		var reply structs.IndexedCheckServiceNodes
		req := &structs.ServiceSpecificRequest{Datacenter: dc, ServiceName: service, Connect: true, QueryOptions: c.query(minIndex)}
		if err := c.cfg.RPC.RPC(ctx, structs.MethodHealthServiceNodes, req, &reply); err != nil {
			return nil, 0, err
		}
		return reply.Nodes, reply.Index, nil
	}
}

// targetInstances selects the endpoints of a target among nodes.
func targetInstances(nodes []structs.CheckServiceNode, f *configentry.Filter, onlyPassing bool, name string) []proxy.Instance {
	out := make([]proxy.Instance, 0, len(nodes))
	for _, n := range nodes {
		if n.Node == nil || n.Service == nil {
			continue
		}
		switch n.Checks.AggregatedStatus() {
		case structs.HealthPassing:
		case structs.HealthWarning:
			if onlyPassing {
				continue
			}
		default:
			continue
		}
		if !f.Match(filterInstance(n)) {
			continue
		}
		addr := n.Service.Address
		if addr == "" {
			addr = n.Node.Address
		}
		out = append(out, proxy.Instance{Node: n.Node.Node, Addr: net.JoinHostPort(addr, strconv.Itoa(n.Service.Port)), Service: name})
	}
	return out
}

// filterInstance is what a subset filter sees of a mesh endpoint: the
// instance of the service, which for a sidecar is the one it proxies.
func filterInstance(n structs.CheckServiceNode) configentry.FilterInstance {
	s := n.Service
	fs := configentry.FilterService{ID: s.ID, Service: s.Service, Tags: s.Tags, Meta: s.Meta, Port: s.Port}
	if p := s.Proxy; s.Kind == structs.ServiceKindConnectProxy && p != nil {
		fs.Service = p.DestinationServiceName
		if p.DestinationServiceID != "" {
			fs.ID = p.DestinationServiceID
		}
		if p.LocalServicePort != 0 {
			fs.Port = p.LocalServicePort
		}
	}
	return configentry.FilterInstance{Node: n.Node.Node, Service: fs}
}
