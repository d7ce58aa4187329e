package command

import "github.com/hashicorp/cli"

// registryMore lists the commands beyond version.
func registryMore(ui cli.Ui) []entry {
	return nil
}
