// Command trellis is the Trellis service mesh: the agent, its servers and the
// CLI in one binary. Run `trellis -h` for the list of commands.
package main

import (
	"fmt"
	"maps"
	"os"
	"slices"

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
	commands := command.Registry(ui)
	if err := command.UnknownCommand(slices.Collect(maps.Keys(commands)), args); err != nil {
		fmt.Fprintf(os.Stderr, "Error: %v\n", err)
		return 1
	}
	c := &cli.CLI{
		Name:         "trellis",
		Version:      version.String(),
		Args:         args,
		Commands:     commands,
		Autocomplete: false,
		HelpWriter:   os.Stdout,
		ErrorWriter:  os.Stderr,
	}
	code, err := c.Run()
	if err != nil {
		fmt.Fprintf(os.Stderr, "Error: %v\n", err)
		return 1
	}
	if code == 127 {
		// The library's code for "no command given" (it printed the list
		// of commands); every failure of the CLI exits 1 (cli.md).
		return 1
	}
	return code
}
