// Package validate is the `trellis validate` command.
package validate

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/hashicorp/cli"
	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"

	"github.com/trellismesh/trellis/agent/config"
	"github.com/trellismesh/trellis/command/flags"
)

const synopsis = "Checks config files and service definitions"

const help = `
Usage: trellis validate [options] PATH...

  Checks agent config files and service definition files (HCL or JSON), or
  every *.hcl and *.json file of a directory: syntax, keys, types and values,
  then the configuration they make together. Nothing is started or changed.
  Errors name the file, line and column.

      $ trellis validate /etc/trellis.d
      $ trellis validate agent.hcl web.json
`

type cmd struct {
	ui    cli.Ui
	fs    *flag.FlagSet
	help  string
	quiet bool
}

// New returns the command.
func New(ui cli.Ui) cli.Command {
	c := &cmd{ui: ui}
	c.fs = flags.NewFlagSet("validate")
	c.fs.BoolVar(&c.quiet, "quiet", false, "Print nothing when the configuration is valid.")
	c.help = flags.Usage(help, flags.Group{Title: "Command Options", Flags: c.fs})
	return c
}

func (c *cmd) Run(args []string) int {
	paths, ok, code := flags.ParseArgs(c.ui, c.fs, args, c.help, "the paths")
	if !ok {
		return code
	}
	if len(paths) == 0 {
		c.ui.Error("Error: give at least one file or directory to validate")
		c.ui.Error("")
		c.ui.Error(c.help)
		return 1
	}
	for _, p := range paths {
		if _, err := os.Stat(p); errors.Is(err, fs.ErrNotExist) {
			c.ui.Error(fmt.Sprintf("Error: %s: no such file or directory", p))
			return 1
		}
	}
	if err := config.ValidateFiles(paths...); err != nil {
		c.ui.Error("Configuration is invalid:\n" + strings.TrimSpace(err.Error()))
		for _, f := range configEntryFiles(paths) {
			c.ui.Error(fmt.Sprintf("Hint: %s looks like a config entry (it has a top-level Kind), not agent configuration: write it with trellis config write %s", f, f))
		}
		return 1
	}
	if !c.quiet {
		c.ui.Output("Configuration is valid!")
	}
	return 0
}

func (c *cmd) Synopsis() string { return synopsis }
func (c *cmd) Help() string     { return c.help }

// configEntryFiles returns the files among paths (and the *.hcl and *.json
// files of directories among them) that look like a config entry rather
// than agent configuration: a top-level Kind, which no agent key is.
func configEntryFiles(paths []string) []string {
	var out []string
	for _, p := range paths {
		fi, err := os.Stat(p)
		if err != nil {
			continue
		}
		if !fi.IsDir() {
			if looksLikeConfigEntry(p) {
				out = append(out, p)
			}
			continue
		}
		des, err := os.ReadDir(p)
		if err != nil {
			continue
		}
		for _, de := range des {
			ext := strings.ToLower(filepath.Ext(de.Name()))
			f := filepath.Join(p, de.Name())
			if !de.IsDir() && (ext == ".hcl" || ext == ".json") && looksLikeConfigEntry(f) {
				out = append(out, f)
			}
		}
	}
	return out
}

// looksLikeConfigEntry reports whether file, JSON or HCL, has a top-level
// Kind (or kind).
func looksLikeConfigEntry(file string) bool {
	src, err := os.ReadFile(file)
	if err != nil || len(src) > 4<<20 {
		return false
	}
	src = bytes.TrimPrefix(src, []byte("\ufeff"))
	if t := bytes.TrimSpace(src); len(t) > 0 && t[0] == '{' {
		var m map[string]json.RawMessage
		if json.Unmarshal(t, &m) != nil {
			return false
		}
		for k := range m {
			if strings.EqualFold(k, "kind") {
				return true
			}
		}
		return false
	}
	f, diags := hclsyntax.ParseConfig(src, file, hcl.InitialPos)
	if diags.HasErrors() {
		return false
	}
	body, ok := f.Body.(*hclsyntax.Body)
	if !ok {
		return false
	}
	_, camel := body.Attributes["Kind"]
	_, snake := body.Attributes["kind"]
	return camel || snake
}
