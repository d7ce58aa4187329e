package connectmetrics

import (
	"cmp"
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/trellismesh/trellis/api"
)

// query is what the table was asked for, for the line an empty answer gets.
type query struct {
	service string
	filter  string
	window  time.Duration
}

// formatTable writes m for people: one row per edge, by source then
// destination, with the outbound side's figures when it reported and the
// inbound side's otherwise. An answer without edges is one line that says
// so and when figures arrive.
func formatTable(m *api.MeshMetrics, q query) string {
	window := shortDuration(q.window)
	if m != nil && m.Window != "" {
		// The window the leader used (it clamps to what it keeps).
		if d, err := time.ParseDuration(m.Window); err == nil {
			window = shortDuration(d)
		} else {
			window = m.Window
		}
	}
	if m == nil || len(m.Edges) == 0 {
		where := "through the mesh"
		if q.service != "" {
			where = "to or from " + q.service
		}
		if q.filter != "" {
			where += " matching the filter"
		}
		return fmt.Sprintf("No traffic %s in the last %s (figures arrive every telemetry.mesh_metrics_interval, 5s by default).\n", where, window)
	}

	edges := slices.Clone(m.Edges)
	slices.SortStableFunc(edges, func(a, b api.MeshEdge) int {
		return cmp.Or(cmp.Compare(a.Source, b.Source), cmp.Compare(a.Destination, b.Destination), cmp.Compare(a.Protocol, b.Protocol))
	})
	var b strings.Builder
	w := tabwriter.NewWriter(&b, 0, 8, 2, ' ', 0)
	fmt.Fprintln(w, "SOURCE\tDESTINATION\tPROTO\tRATE\tSUCCESS\tP50\tP99\tSEEN BY")
	for _, e := range edges {
		side, seenBy := e.Outbound, "outbound"
		if side == nil {
			side, seenBy = e.Inbound, "inbound"
		}
		if side == nil {
			fmt.Fprintf(w, "%s\t%s\t%s\t-\t-\t-\t-\t-\n", e.Source, e.Destination, e.Protocol)
			continue
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", e.Source, e.Destination, e.Protocol,
			rate(side.RequestsPerSecond, e.Unit, e.Protocol), success(side), latency(side, side.P50Ms), latency(side, side.P99Ms), seenBy)
	}
	w.Flush()
	return b.String()
}

// rate is the per-second rate in the edge's unit: "12.3 req/s", "4.0
// conn/s"; below 0.1 it keeps three decimals, so that a trickle does not
// read as nothing.
func rate(perSec float64, unit, protocol string) string {
	var u string
	switch {
	case unit == "requests":
		u = "req/s"
	case unit == "connections":
		u = "conn/s"
	case unit != "":
		u = unit + "/s"
	case protocol == "tcp":
		u = "conn/s"
	default:
		u = "req/s"
	}
	if perSec > 0 && perSec < 0.1 {
		return fmt.Sprintf("%.3f %s", perSec, u)
	}
	return fmt.Sprintf("%.1f %s", perSec, u)
}

// success is the share of requests that succeeded with one decimal,
// rounded down so that a failure never reads 100%; "100%" when none
// failed, "-" when there were no requests.
func success(s *api.MeshEdgeSide) string {
	if s.Requests == 0 {
		return "-"
	}
	if s.Failures == 0 {
		return "100%"
	}
	// The nudge keeps 0.998 (stored as 0.99799…) at 99.8.
	pct := math.Floor(s.SuccessRate*1000+1e-6) / 10
	pct = min(pct, 99.9)
	return fmt.Sprintf("%.1f%%", max(pct, 0))
}

// latency is a quantile with three significant digits: 0.420ms, 1.23ms,
// 12.3ms, 123ms, then seconds (1.23s); "-" when there were no requests.
func latency(s *api.MeshEdgeSide, ms float64) string {
	if s.Requests == 0 {
		return "-"
	}
	// Each bound is where the rounding would carry into one more digit.
	switch {
	case ms < 0.9995:
		return fmt.Sprintf("%.3fms", ms)
	case ms < 9.995:
		return fmt.Sprintf("%.2fms", ms)
	case ms < 99.95:
		return fmt.Sprintf("%.1fms", ms)
	case ms < 999.5:
		return fmt.Sprintf("%.0fms", ms)
	case ms < 9995:
		return fmt.Sprintf("%.2fs", ms/1000)
	default:
		return fmt.Sprintf("%.1fs", ms/1000)
	}
}

// shortDuration is d without trailing zero units: 5m, not 5m0s.
func shortDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// formatJSON is the answer as the API gave it, indented.
func formatJSON(m *api.MeshMetrics) (string, error) {
	b, err := json.MarshalIndent(m, "", "    ")
	return string(b), err
}
