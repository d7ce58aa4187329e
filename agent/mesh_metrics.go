package agent

import (
	"context"
	"time"

	"github.com/hashicorp/go-metrics"

	"github.com/trellismesh/trellis/connect/golden"
	"github.com/trellismesh/trellis/raftstore"
	"github.com/trellismesh/trellis/raftstore/structs"
)

// reportMeshMetrics sends what the proxies counted to the servers every
// telemetry.mesh_metrics_interval, until ctx ends. Once a proxy has seen
// traffic, the agent reports every interval, an empty report included, so
// the leader knows how long it covered (and a quiet edge reads as quiet,
// not as stale), until it has been quiet for as long as the leader keeps
// reports. A report that fails is dropped: the next one carries only its
// own interval.
func (a *Agent) reportMeshMetrics(ctx context.Context) {
	logger := a.logger.Named("mesh-metrics")
	t := time.NewTicker(a.cfg.MeshMetricsInterval)
	defer t.Stop()
	last := time.Now()
	failing := false
	// Empty reports keep a quiet edge reading as quiet; once the leader has
	// forgotten the last traffic (raftstore.MetricsRetain), they say nothing
	// more, and an idle agent stops sending them.
	quiet, maxQuiet := 0, int(raftstore.MetricsRetain/a.cfg.MeshMetricsInterval)+1
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			if !a.golden.Active() {
				last = now
				continue
			}
			req := &structs.MetricsReportRequest{
				Datacenter: a.cfg.Datacenter, Node: a.cfg.NodeName,
				IntervalMs: max(now.Sub(last).Milliseconds(), 1), Samples: a.golden.Collect(),
			}
			last = now
			a.goldenTotals.Add(req.Samples)
			if len(req.Samples) == 0 {
				if quiet++; quiet > maxQuiet {
					continue
				}
			} else {
				quiet = 0
			}
			if len(req.Samples) > golden.MaxEdges {
				req.Samples = req.Samples[:golden.MaxEdges]
			}
			rctx, cancel := context.WithTimeout(ctx, a.cfg.MeshMetricsInterval)
			err := a.RPC(rctx, structs.MethodMetricsReport, req, &struct{}{})
			cancel()
			switch {
			case err != nil && ctx.Err() == nil:
				metrics.IncrCounter([]string{"trellis", "mesh_metrics", "report_failures"}, 1)
				if !failing {
					logger.Warn("could not send the proxies' golden signals to the servers; dropping them until a report succeeds", "error", err)
				}
				failing = true
			case err == nil && failing:
				logger.Info("golden signals reach the servers again")
				failing = false
			}
		}
	}
}
