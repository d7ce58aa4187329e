// Command trellis is the Trellis service mesh: the agent, its servers and the
// CLI in one binary. Run `trellis -h` for the list of commands.
package main

import (
	"fmt"
	"os"

	"github.com/hashicorp/cli"

	"github.com/trellismesh/trellis/command"
	"github.com/trellismesh/trellis/version"
)

func main() {
	os.Exit(realMain(os.Args[1:]))
}

func realMain(args []string) int {
	ui := &cli.BasicUi{Reader: os.Stdin, Writer: os.Stdout, ErrorWriter: os.Stderr}
	// -v and --version anywhere before "--" mean the version command.
	for _, a := range args {
		if a == "--" {
			break
		}
		if a == "-v" || a == "--version" || a == "-version" {
			args = []string{"version"}
			break
		}
	}
	c := &cli.CLI{
		Name:         "trellis",
		Version:      version.String(),
		Args:         args,
		Commands:     command.Registry(ui),
		Autocomplete: false,
		HelpWriter:   os.Stdout,
		ErrorWriter:  os.Stderr,
	}
	code, err := c.Run()
	if err != nil {
		fmt.Fprintf(os.Stderr, "Error: %v\n", err)
		return 1
	}
	return code
}
