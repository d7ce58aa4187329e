// Package certcreate is the `trellis tls cert create` command.
package certcreate

import (
	"errors"
	"flag"
	"fmt"
	"net"
	"os"

	"github.com/hashicorp/cli"

	"github.com/trellismesh/trellis/agent/tlsutil"
	"github.com/trellismesh/trellis/command/flags"
)

const synopsis = "Makes a certificate for a server or client agent"

const help = `
Usage: trellis tls cert create [options] -server | -client

  Makes an agent certificate signed by the CA of trellis tls ca create, and
  writes <dc>-<server|client>-<domain>-<n>.pem and its -key.pem (n counts up
  from 0 to keep existing files). A server certificate names
  server.<dc>.<domain>, localhost and 127.0.0.1, and is accepted as a server
  and as a client; a client certificate names client.<dc>.<domain> and is
  only accepted as a client.

      $ trellis tls cert create -server -dc=dc1
      $ trellis tls cert create -client -dc=dc1
      $ trellis tls cert create -server -additional-ipaddress=10.0.0.5
`

type cmd struct {
	ui             cli.Ui
	fs             *flag.FlagSet
	help           string
	server, client bool
	dc, domain     string
	ca, key        string
	days           int
	dnsNames, ips  flags.StringSlice
}

// New returns the command.
func New(ui cli.Ui) cli.Command {
	c := &cmd{ui: ui}
	fs := flags.NewFlagSet("tls cert create")
	fs.BoolVar(&c.server, "server", false, "Make a server certificate.")
	fs.BoolVar(&c.client, "client", false, "Make a client certificate.")
	fs.StringVar(&c.dc, "dc", "dc1", "The `datacenter` of the agent.")
	fs.StringVar(&c.domain, "domain", tlsutil.DefaultDomain, "The `domain` of the names (as given to tls ca create).")
	fs.StringVar(&c.ca, "ca", "", "The CA certificate `file` (default <domain>-agent-ca.pem).")
	fs.StringVar(&c.key, "key", "", "The CA key `file` (default <domain>-agent-ca-key.pem).")
	fs.IntVar(&c.days, "days", 365, "How many `days` the certificate is valid.")
	fs.Var(&c.dnsNames, "additional-dnsname", "An extra DNS `name` for the certificate; may be repeated.")
	fs.Var(&c.ips, "additional-ipaddress", "An extra IP `address` for the certificate; may be repeated.")
	c.fs = fs
	c.help = flags.Usage(help, flags.Group{Title: "Command Options", Flags: fs})
	return c
}

func (c *cmd) Run(args []string) int {
	if ok, code := flags.Parse(c.ui, c.fs, args, c.help); !ok {
		return code
	}
	if c.server == c.client || c.fs.NArg() > 0 {
		c.ui.Error("Error: give exactly one of -server or -client")
		return 1
	}
	if c.ca == "" {
		c.ca = c.domain + "-agent-ca.pem"
	}
	if c.key == "" {
		c.key = c.domain + "-agent-ca-key.pem"
	}
	caCert, err := os.ReadFile(c.ca)
	if err != nil {
		c.ui.Error(fmt.Sprintf("Error reading the CA (-ca): %v (make one with trellis tls ca create)", err))
		return 1
	}
	caKey, err := os.ReadFile(c.key)
	if err != nil {
		c.ui.Error(fmt.Sprintf("Error reading the CA key (-key): %v", err))
		return 1
	}
	var ips []net.IP
	for _, s := range c.ips {
		ip := net.ParseIP(s)
		if ip == nil {
			c.ui.Error(fmt.Sprintf("Error: -additional-ipaddress %q is not an IP address", s))
			return 1
		}
		ips = append(ips, ip)
	}
	cert, key, err := tlsutil.GenerateCert(tlsutil.CertOptions{CACert: caCert, CAKey: caKey, Server: c.server,
		Datacenter: c.dc, Domain: c.domain, DNSNames: c.dnsNames, IPs: ips, Days: c.days})
	if err != nil {
		c.ui.Error("Error making the certificate: " + err.Error())
		return 1
	}
	role := "client"
	if c.server {
		role = "server"
	}
	for n := 0; ; n++ {
		certFile := fmt.Sprintf("%s-%s-%s-%d.pem", c.dc, role, c.domain, n)
		keyFile := fmt.Sprintf("%s-%s-%s-%d-key.pem", c.dc, role, c.domain, n)
		if exists(certFile) || exists(keyFile) {
			continue
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
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil || !errors.Is(err, os.ErrNotExist)
}

func (c *cmd) Synopsis() string { return synopsis }
func (c *cmd) Help() string     { return c.help }
