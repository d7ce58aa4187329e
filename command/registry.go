// Package command builds the table of trellis CLI commands. Each command
// lives in its own package below this one and talks to an agent only through
// the api package (except `agent`, which runs one).
package command

import (
	"fmt"

	"github.com/hashicorp/cli"

	"github.com/trellismesh/trellis/command/version"
)

// entry is one command of the table.
type entry struct {
	name    string
	factory cli.CommandFactory
}

// Registry returns every command by its space-separated name ("catalog
// services"). It panics on a duplicate name: that is a programming error.
func Registry(ui cli.Ui) map[string]cli.CommandFactory {
	entries := []entry{
		{"version", func() (cli.Command, error) { return version.New(ui), nil }},
	}
	entries = append(entries, registryMore(ui)...)
	m := make(map[string]cli.CommandFactory, len(entries))
	for _, e := range entries {
		if _, dup := m[e.name]; dup {
			panic(fmt.Sprintf("command %q registered twice", e.name))
		}
		m[e.name] = e.factory
	}
	return m
}
