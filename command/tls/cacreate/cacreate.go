// Package cacreate is the `trellis tls ca create` command.
package cacreate

import (
	"errors"
	"flag"
	"fmt"
	"os"

	"github.com/hashicorp/cli"

	"github.com/trellismesh/trellis/agent/tlsutil"
	"github.com/trellismesh/trellis/command/flags"
)

const synopsis = "Makes a certificate authority for the cluster's TLS"

const help = `
Usage: trellis tls ca create [options]

  Makes a CA (ECDSA P-256) for the TLS of the cluster's own traffic and
  writes <domain>-agent-ca.pem and <domain>-agent-ca-key.pem in the current
  directory. Keep the key safe: whoever has it can make agent certificates.

      $ trellis tls ca create
      $ trellis tls cert create -server -dc=dc1
`

type cmd struct {
	ui     cli.Ui
	fs     *flag.FlagSet
	help   string
	domain string
	days   int
	cn     string
}

// New returns the command.
func New(ui cli.Ui) cli.Command {
	c := &cmd{ui: ui}
	c.fs = flags.NewFlagSet("tls ca create")
	c.fs.StringVar(&c.domain, "domain", tlsutil.DefaultDomain, "The `domain` of the agents' certificate names.")
	c.fs.IntVar(&c.days, "days", 1825, "How many `days` the CA is valid.")
	c.fs.StringVar(&c.cn, "common-name", "", "The `name` of the CA; a name with a serial number by default.")
	c.help = flags.Usage(help, flags.Group{Title: "Command Options", Flags: c.fs})
	return c
}

func (c *cmd) Run(args []string) int {
	if ok, code := flags.Parse(c.ui, c.fs, args, c.help); !ok {
		return code
	}
	if c.fs.NArg() > 0 || c.days <= 0 {
		c.ui.Error("Error: tls ca create takes no arguments, and -days must be positive")
		return 1
	}
	certFile, keyFile := c.domain+"-agent-ca.pem", c.domain+"-agent-ca-key.pem"
	for _, f := range []string{certFile, keyFile} {
		if _, err := os.Stat(f); err == nil {
			c.ui.Error(fmt.Sprintf("Error: %s exists; remove it or work in another directory", f))
			return 1
		} else if !errors.Is(err, os.ErrNotExist) {
			c.ui.Error("Error: " + err.Error())
			return 1
		}
	}
	cert, key, err := tlsutil.GenerateCA(tlsutil.CAOptions{Domain: c.domain, Days: c.days, CommonName: c.cn})
	if err != nil {
		c.ui.Error("Error making the CA: " + err.Error())
		return 1
	}
	if err := os.WriteFile(certFile, cert, 0o644); err != nil {
		c.ui.Error("Error: " + err.Error())
		return 1
	}
	if err := os.WriteFile(keyFile, key, 0o600); err != nil {
		c.ui.Error("Error: " + err.Error())
		return 1
	}
	c.ui.Output("==> Saved " + certFile)
	c.ui.Output("==> Saved " + keyFile)
	return 0
}

func (c *cmd) Synopsis() string { return synopsis }
func (c *cmd) Help() string     { return c.help }
