package command

import (
	"strings"

	"github.com/hashicorp/cli"

	agentcmd "github.com/trellismesh/trellis/command/agent"
	catalognodes "github.com/trellismesh/trellis/command/catalog/nodes"
	catalogservices "github.com/trellismesh/trellis/command/catalog/services"
	configcmd "github.com/trellismesh/trellis/command/config"
	connectca "github.com/trellismesh/trellis/command/connect/ca"
	connectchain "github.com/trellismesh/trellis/command/connect/chain"
	connectmetrics "github.com/trellismesh/trellis/command/connect/metrics"
	connectproxy "github.com/trellismesh/trellis/command/connect/proxy"
	connectproxyconfig "github.com/trellismesh/trellis/command/connect/proxyconfig"
	"github.com/trellismesh/trellis/command/intention"
	"github.com/trellismesh/trellis/command/join"
	"github.com/trellismesh/trellis/command/keygen"
	"github.com/trellismesh/trellis/command/keyring"
	"github.com/trellismesh/trellis/command/leave"
	"github.com/trellismesh/trellis/command/members"
	"github.com/trellismesh/trellis/command/operator/raft/listpeers"
	"github.com/trellismesh/trellis/command/operator/raft/removepeer"
	servicesderegister "github.com/trellismesh/trellis/command/services/deregister"
	servicesregister "github.com/trellismesh/trellis/command/services/register"
	"github.com/trellismesh/trellis/command/tls/cacreate"
	"github.com/trellismesh/trellis/command/tls/certcreate"
	"github.com/trellismesh/trellis/command/validate"
)

// registryMore lists the commands beyond version.
func registryMore(ui cli.Ui) []entry {
	return []entry{
		{"agent", func() (cli.Command, error) { return agentcmd.New(ui), nil }},
		{"members", func() (cli.Command, error) { return members.New(ui), nil }},
		{"catalog", group("Lists what the catalog holds", `
Usage: trellis catalog <subcommand> [options]

  Reads the catalog: the nodes and services the cluster knows.

      $ trellis catalog services
      $ trellis catalog nodes -service=web
`)},
		{"catalog services", func() (cli.Command, error) { return catalogservices.New(ui), nil }},
		{"catalog nodes", func() (cli.Command, error) { return catalognodes.New(ui), nil }},
		{"services", group("Registers and deregisters services", `
Usage: trellis services <subcommand> [options]

  Registers services with the local agent, or deregisters them.

      $ trellis services register web.hcl
      $ trellis services deregister -id=web
`)},
		{"services register", func() (cli.Command, error) { return servicesregister.New(ui), nil }},
		{"services deregister", func() (cli.Command, error) { return servicesderegister.New(ui), nil }},
		{"validate", func() (cli.Command, error) { return validate.New(ui), nil }},
		{"operator", group("Operates the cluster's servers", `
Usage: trellis operator <subcommand> [options]

  Commands for the operators of the servers.

      $ trellis operator raft list-peers
`)},
		{"operator raft", group("Inspects the Raft servers", `
Usage: trellis operator raft <subcommand> [options]

  Inspects the Raft configuration of the servers.

      $ trellis operator raft list-peers
`)},
		{"operator raft list-peers", func() (cli.Command, error) { return listpeers.New(ui), nil }},
		{"operator raft remove-peer", func() (cli.Command, error) { return removepeer.New(ui), nil }},
		{"join", func() (cli.Command, error) { return join.New(ui), nil }},
		{"leave", func() (cli.Command, error) { return leave.New(ui), nil }},
		{"keygen", func() (cli.Command, error) { return keygen.New(ui), nil }},
		{"keyring", func() (cli.Command, error) { return keyring.New(ui), nil }},
		{"tls", group("Makes the CA and certificates for the cluster's TLS", `
Usage: trellis tls <subcommand> [options]

  Makes the files of the tls { defaults { ... } } block.

      $ trellis tls ca create
      $ trellis tls cert create -server -dc=dc1
`)},
		{"tls ca", group("Makes a certificate authority", "Usage: trellis tls ca create [options]")},
		{"tls ca create", func() (cli.Command, error) { return cacreate.New(ui), nil }},
		{"tls cert", group("Makes agent certificates", "Usage: trellis tls cert create [options] -server | -client")},
		{"tls cert create", func() (cli.Command, error) { return certcreate.New(ui), nil }},
		{"intention", group("Says which services may connect to which", `
Usage: trellis intention <subcommand> [options] [SRC DST]

  Intentions allow or deny connections from one service (SRC) to another
  (DST); either may be * for any service. The most precise intention that
  matches a connection decides it; when none does, the agent's default
  policy decides. The proxies apply changes at once.

      $ trellis intention create web db
      $ trellis intention create -deny '*' db
      $ trellis intention check web db
      $ trellis intention list
`)},
		{"intention create", func() (cli.Command, error) { return intention.NewCreate(ui), nil }},
		{"intention delete", func() (cli.Command, error) { return intention.NewDelete(ui), nil }},
		{"intention get", func() (cli.Command, error) { return intention.NewGet(ui), nil }},
		{"intention list", func() (cli.Command, error) { return intention.NewList(ui), nil }},
		{"intention check", func() (cli.Command, error) { return intention.NewCheck(ui), nil }},
		{"intention match", func() (cli.Command, error) { return intention.NewMatch(ui), nil }},
		{"config", group("Manages config entries: how mesh traffic is routed, split, resolved and authorized", `
Usage: trellis config <subcommand> [options]

  Config entries are cluster-wide settings kept by the servers:
  service-defaults (a service's protocol), service-router, service-splitter
  and service-resolver (where requests to a service go), service-intentions
  (who may call a service, with L7 permissions) and proxy-defaults. The
  proxies apply changes at once.

      $ trellis config write web-router.hcl
      $ trellis config read -kind service-router -name web
      $ trellis config list -kind service-resolver
      $ trellis config delete -kind service-router -name web
`)},
		{"config write", func() (cli.Command, error) { return configcmd.NewWrite(ui), nil }},
		{"config read", func() (cli.Command, error) { return configcmd.NewRead(ui), nil }},
		{"config list", func() (cli.Command, error) { return configcmd.NewList(ui), nil }},
		{"config delete", func() (cli.Command, error) { return configcmd.NewDelete(ui), nil }},
		{"connect", group("Runs and inspects the service mesh", `
Usage: trellis connect <subcommand> [options]

  Commands of the service mesh: its certificate authority, its sidecar
  proxies, the discovery chains they follow, and the traffic they carry.

      $ trellis connect ca roots
      $ trellis connect proxy -sidecar-for web
      $ trellis connect chain web
      $ trellis connect metrics web
`)},
		{"connect ca", group("Inspects and configures the mesh's certificate authority", `
Usage: trellis connect ca <subcommand> [options]

  The built-in CA signs the leaf certificate of every service in the mesh.
  These commands show its roots and configuration, change it, and rotate
  its root (cross-signed, so no connection breaks).

      $ trellis connect ca roots
      $ trellis connect ca get-config
      $ trellis connect ca set-config -config-file ca.json
      $ trellis connect ca rotate
`)},
		{"connect ca get-config", func() (cli.Command, error) { return connectca.NewGetConfig(ui), nil }},
		{"connect ca set-config", func() (cli.Command, error) { return connectca.NewSetConfig(ui), nil }},
		{"connect ca rotate", func() (cli.Command, error) { return connectca.NewRotate(ui), nil }},
		{"connect ca roots", func() (cli.Command, error) { return connectca.NewRoots(ui), nil }},
		{"connect proxy", func() (cli.Command, error) { return connectproxy.New(ui), nil }},
		{"connect chain", func() (cli.Command, error) { return connectchain.New(ui), nil }},
		{"connect proxy-config", func() (cli.Command, error) { return connectproxyconfig.New(ui), nil }},
		{"connect metrics", func() (cli.Command, error) { return connectmetrics.New(ui), nil }},
	}
}

// group returns the factory of a command that only groups subcommands: run
// alone, it prints its help and the list of subcommands.
func group(synopsis, help string) cli.CommandFactory {
	return func() (cli.Command, error) {
		return groupCommand{synopsis: synopsis, help: strings.TrimSpace(help)}, nil
	}
}

type groupCommand struct{ synopsis, help string }

func (g groupCommand) Run([]string) int { return cli.RunResultHelp }
func (g groupCommand) Synopsis() string { return g.synopsis }
func (g groupCommand) Help() string     { return g.help }
