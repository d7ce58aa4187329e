package ca

import (
	"encoding/json"

	"github.com/hashicorp/cli"

	"github.com/trellismesh/trellis/command/flags"
)

const getConfigHelp = `
Usage: trellis connect ca get-config [options]

  Prints the configuration of the mesh's certificate authority as JSON, in
  the shape set-config takes. The private key is never shown.

      $ trellis connect ca get-config
`

type getConfigCmd struct{ base }

// NewGetConfig returns `trellis connect ca get-config`.
func NewGetConfig(ui cli.Ui) cli.Command {
	c := &getConfigCmd{}
	c.init(ui, "connect ca get-config", getConfigHelp, nil, true)
	return c
}

func (c *getConfigCmd) Run(args []string) int {
	client, ok, code := c.start(args, "connect ca get-config")
	if !ok {
		return code
	}
	conf, _, err := client.Connect().CAGetConfig(c.http.QueryOptions())
	if err != nil {
		c.ui.Error(flags.ErrorMessage("reading the CA configuration", err))
		return 1
	}
	b, err := json.MarshalIndent(conf, "", "    ")
	if err != nil {
		c.ui.Error("Error: encoding the CA configuration: " + err.Error())
		return 1
	}
	c.ui.Output(string(b))
	return 0
}

func (c *getConfigCmd) Synopsis() string { return "Prints the CA's configuration" }
