// Package proxyconfig holds `trellis connect proxy-config SERVICE-ID`, which
// shows what a sidecar proxy the agent runs does: its listeners, where each
// upstream leads, the intentions that decide who may connect, and the
// certificate it presents.
package proxyconfig

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/cli"

	"github.com/trellismesh/trellis/api"
	"github.com/trellismesh/trellis/command/flags"
)

const help = `
Usage: trellis connect proxy-config [options] SERVICE-ID

  Shows what the sidecar proxy with service ID SERVICE-ID, run by the agent
  asked, does: its public listener and the application it forwards to, its
  service's protocol, each upstream's local address, mode (tcp or l7), the
  discovery chain target and failovers it follows and their instances, the
  intentions that apply to its service in precedence order with the default
  policy, and the certificate it presents.

      $ trellis connect proxy-config web-sidecar-proxy
      $ trellis connect proxy-config -format json web-sidecar-proxy
`

type cmd struct {
	ui     cli.Ui
	fs     *flag.FlagSet
	http   flags.HTTPFlags
	format string
	help   string
	now    func() time.Time
}

// New returns `trellis connect proxy-config`.
func New(ui cli.Ui) cli.Command {
	c := &cmd{ui: ui, now: time.Now}
	own := flags.NewFlagSet("connect proxy-config")
	own.StringVar(&c.format, "format", "text", "The output `format`: text, or json (as /v1/agent/connect/proxy-config answers it).")
	c.fs, c.help = flags.CommandFlagSet(&c.http, "connect proxy-config", help, own, false)
	return c
}

func (c *cmd) Run(args []string) int {
	if ok, code := flags.Parse(c.ui, c.fs, args, c.help); !ok {
		return code
	}
	rest := c.fs.Args()
	if err := flags.LateFlag(rest, "the service ID"); err != nil {
		c.usageError(err.Error())
		return 1
	}
	if len(rest) != 1 || rest[0] == "" {
		c.usageError(fmt.Sprintf("connect proxy-config takes one argument, SERVICE-ID (got %d)", len(rest)))
		return 1
	}
	if c.format != "text" && c.format != "json" {
		c.usageError(fmt.Sprintf("-format %q: want text or json", c.format))
		return 1
	}
	id := rest[0]
	client, err := c.http.APIClient()
	if err != nil {
		c.ui.Error("Error: " + err.Error())
		return 1
	}
	pc, _, err := client.Agent().ProxyConfig(id, nil)
	if err != nil {
		var se *api.StatusError
		if errors.As(err, &se) && se.Code == http.StatusNotFound {
			c.ui.Error(fmt.Sprintf("Error: no proxy %q on this agent; %s", id, proxiesHere(client)))
			return 1
		}
		c.ui.Error(flags.ErrorMessage("reading the proxy "+id, err))
		return 1
	}
	if c.format == "json" {
		b, err := json.MarshalIndent(pc, "", "    ")
		if err != nil {
			c.ui.Error("Error: encoding the proxy: " + err.Error())
			return 1
		}
		c.ui.Output(string(b))
		return 0
	}
	c.ui.Output(strings.TrimRight(formatText(pc, c.now()), "\n"))
	return 0
}

func (c *cmd) usageError(msg string) {
	c.ui.Error("Error: " + msg)
	c.ui.Error("")
	c.ui.Error(c.help)
}

func (c *cmd) Synopsis() string { return "Shows what a sidecar proxy does" }

func (c *cmd) Help() string { return c.help }

// proxiesHere says which proxies the agent runs, for an error about an ID
// it does not know: "its proxies are a, b", "it runs no proxy", or nothing
// more when it cannot be asked.
func proxiesHere(client *api.Client) string {
	svcs, err := client.Agent().Services()
	if err != nil {
		return "give the service ID of a proxy it runs"
	}
	var ids []string
	for id, svc := range svcs {
		if svc.Kind == "connect-proxy" {
			ids = append(ids, id)
		}
	}
	if len(ids) == 0 {
		return "it runs no proxy"
	}
	slices.Sort(ids)
	return "its proxies are " + strings.Join(ids, ", ")
}
