// Package connectmetrics holds `trellis connect metrics [SERVICE]`, which
// shows the golden signals of the mesh's edges (rate, success, latency of
// each caller → destination pair) as the sidecar proxies reported them to
// the leader.
package connectmetrics

import (
	"flag"
	"fmt"
	"strings"
	"time"

	"github.com/hashicorp/cli"

	"github.com/trellismesh/trellis/api"
	"github.com/trellismesh/trellis/command/flags"
)

// maxWindow is the longest window: the leader keeps five minutes of reports.
const maxWindow = 5 * time.Minute

const help = `
Usage: trellis connect metrics [options] [SERVICE]

  Shows the golden signals of the mesh's edges, one row per caller ->
  destination pair, over the last -window: the rate of requests (or of
  connections, for tcp), the share that succeeded, and the 50th and 99th
  percentile latencies. The figures are those the callers' proxies saw
  (SEEN BY outbound), or the destination's when only it reported (SEEN BY
  inbound). With SERVICE (or -service), only the edges to or from it.

  Agents report their proxies' figures to the leader every
  telemetry.mesh_metrics_interval (5s by default), so the newest traffic
  shows up that much later.

      $ trellis connect metrics
      $ trellis connect metrics -window 5m web
      $ trellis connect metrics -filter 'Protocol == http' -format json
`

type cmd struct {
	ui      cli.Ui
	fs      *flag.FlagSet
	http    flags.HTTPFlags
	service string
	window  string
	filter  string
	format  string
	help    string
}

// New returns `trellis connect metrics`.
func New(ui cli.Ui) cli.Command {
	c := &cmd{ui: ui}
	own := flags.NewFlagSet("connect metrics")
	own.StringVar(&c.service, "service", "", "Only the edges to or from the service `name`; every edge when empty. The service may also be given as the argument.")
	own.StringVar(&c.window, "window", "30s", "The `duration` the figures cover, back from now: more than 0, at most 5m.")
	own.StringVar(&c.filter, "filter", "", "A filter `expression` that selects edges by their fields, e.g. 'Protocol == http' or 'Source == web'.")
	own.StringVar(&c.format, "format", "table", "The output `format`: table, or json (as /v1/connect/metrics answers it).")
	c.fs, c.help = flags.CommandFlagSet(&c.http, "connect metrics", help, own, false)
	return c
}

func (c *cmd) Run(args []string) int {
	if ok, code := flags.Parse(c.ui, c.fs, args, c.help); !ok {
		return code
	}
	rest := c.fs.Args()
	if err := flags.LateFlag(rest, "the service name"); err != nil {
		c.usageError(err.Error())
		return 1
	}
	service := c.service
	switch {
	case len(rest) > 1:
		c.usageError(fmt.Sprintf("connect metrics takes at most one argument, SERVICE (got %d)", len(rest)))
		return 1
	case len(rest) == 1 && service != "" && !strings.EqualFold(rest[0], service):
		c.usageError(fmt.Sprintf("-service %q and the argument %q name different services: give one", service, rest[0]))
		return 1
	case len(rest) == 1:
		service = rest[0]
	}
	window, err := parseWindow(c.window)
	if err != nil {
		c.usageError(err.Error())
		return 1
	}
	if c.format != "table" && c.format != "json" {
		c.usageError(fmt.Sprintf("-format %q: want table or json", c.format))
		return 1
	}
	if err := checkFilter(c.filter); err != nil {
		c.ui.Error("Error: " + err.Error())
		return 1
	}
	client, err := c.http.APIClient()
	if err != nil {
		c.ui.Error("Error: " + err.Error())
		return 1
	}
	m, err := client.Connect().Metrics(service, window, &api.QueryOptions{Filter: c.filter})
	if err != nil {
		c.ui.Error(flags.ErrorMessage("reading the mesh metrics", err))
		return 1
	}
	if c.format == "json" {
		out, err := formatJSON(m)
		if err != nil {
			c.ui.Error("Error: encoding the mesh metrics: " + err.Error())
			return 1
		}
		c.ui.Output(out)
		return 0
	}
	c.ui.Output(strings.TrimRight(formatTable(m, query{service: service, filter: c.filter, window: window}), "\n"))
	return 0
}

// parseWindow checks -window: a Go duration, more than 0, at most maxWindow.
func parseWindow(s string) (time.Duration, error) {
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("-window %q: want a duration such as 30s or 5m", s)
	}
	if d <= 0 {
		return 0, fmt.Errorf("-window %s: want more than 0", s)
	}
	if d < time.Millisecond {
		return 0, fmt.Errorf("-window %s: want at least 1ms", s)
	}
	if d > maxWindow {
		return 0, fmt.Errorf("-window %s: at most 5m (the leader keeps five minutes of reports)", s)
	}
	return d, nil
}

func (c *cmd) usageError(msg string) {
	c.ui.Error("Error: " + msg)
	c.ui.Error("")
	c.ui.Error(c.help)
}

func (c *cmd) Synopsis() string { return "Shows the rate, success and latency of the mesh's edges" }

func (c *cmd) Help() string { return c.help }
