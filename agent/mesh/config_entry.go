package mesh

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/trellismesh/trellis/connect/configentry"
	"github.com/trellismesh/trellis/raftstore/structs"
)

// SubscribeConfigEntry calls fn with the config entry kind/name now (if
// known; nil when there is none) and after every change, until the returned
// release function is called. fn must return quickly and must not modify
// the entry (subscribers share it). One blocking query per entry, however
// many proxies use it; while the servers are unreachable the last answer is
// kept. Servers that do not serve config entries (an older version) answer
// nil, asked again every oldServerRecheck.
func (c *Cache) SubscribeConfigEntry(kind, name string, fn func(configentry.Entry)) (release func(), err error) {
	key := kind + "/" + strings.ToLower(name)
	return acquire(c, c.entries, key, "config entry "+key, c.fetchConfigEntry(kind, name), fn)
}

func (c *Cache) fetchConfigEntry(kind, name string) fetchFn[configentry.Entry] {
	return func(ctx context.Context, minIndex uint64) (configentry.Entry, uint64, error) {
		var reply structs.ConfigEntryResponse
		req := &structs.ConfigEntryQuery{Datacenter: c.cfg.Datacenter, Kind: kind, Name: name, QueryOptions: c.query(minIndex)}
		err := c.cfg.RPC.RPC(ctx, structs.MethodConfigEntryGet, req, &reply)
		if errors.Is(err, structs.ErrUnknownMethod) {
			if minIndex > 0 {
				t := time.NewTimer(min(oldServerRecheck, c.cfg.QueryWait))
				defer t.Stop()
				select {
				case <-ctx.Done():
					return nil, 0, ctx.Err()
				case <-t.C:
				}
			}
			return nil, 1, nil
		}
		if err != nil {
			return nil, 0, err
		}
		if reply.Entry == nil {
			return nil, reply.Index, nil
		}
		return reply.Entry.Entry, reply.Index, nil
	}
}
