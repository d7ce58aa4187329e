package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"

	"github.com/hashicorp/cli"

	"github.com/trellismesh/trellis/command/flags"
)

const writeHelp = `
Usage: trellis config write [options] FILE

  Creates or replaces the config entry described in FILE, HCL or JSON
  (Consul's keys, in CamelCase or snake_case). FILE "-" reads stdin. The
  agent decodes and validates it: errors name the file, line and column, and
  the field at fault. An entry that would contradict the others (a router to
  a service of another protocol, a redirect loop) is refused.

      $ trellis config write web-defaults.hcl
      $ trellis config write -cas -modify-index 42 web-router.json
      $ cat web-splitter.hcl | trellis config write -
`

// maxFile caps what is read from FILE; the agent takes up to 4 MiB.
const maxFile = 4 << 20

type writeCmd struct {
	base
	cas         bool
	modifyIndex uint64
}

// NewWrite returns `trellis config write`.
func NewWrite(ui cli.Ui) cli.Command {
	c := &writeCmd{}
	own := flags.NewFlagSet("config write")
	own.BoolVar(&c.cas, "cas", false, "Write only if the stored entry's ModifyIndex is -modify-index (0: only if there is none).")
	own.Uint64Var(&c.modifyIndex, "modify-index", 0, "The `index` a -cas write expects: the ModifyIndex of the entry as last read.")
	c.init(ui, "config write", writeHelp, own, false)
	return c
}

func (c *writeCmd) Run(args []string) int {
	rest, ok, code := flags.ParseArgs(c.ui, c.fs, args, c.help, "FILE")
	if !ok {
		return code
	}
	if len(rest) != 1 {
		c.argsError(usagef("config write takes one argument, FILE or - (got %d)", len(rest)))
		return 1
	}
	if !c.cas && c.modifyIndex != 0 {
		c.argsError(usagef("-modify-index goes with -cas"))
		return 1
	}
	file := rest[0]
	src, name, err := readSource(file)
	if err != nil {
		c.ui.Error("Error: " + err.Error())
		return 1
	}
	client, ok := c.client()
	if !ok {
		return 1
	}
	written, _, err := client.ConfigEntries().WriteSource(src, name, c.cas, c.modifyIndex, nil)
	if err != nil {
		c.ui.Error(flags.ErrorMessage("writing the config entry of "+name, err))
		return 1
	}
	if !written {
		c.ui.Error(fmt.Sprintf("Error: config entry of %s not written: its ModifyIndex is not %d (-cas); read it again and retry", name, c.modifyIndex))
		return 1
	}
	c.ui.Output("Config entry written: " + name)
	return 0
}

// readSource reads FILE, or stdin for "-"; name is what errors call it. It
// refuses locally what cannot be an entry (a directory, an empty file, a
// JSON array of entries) and drops a leading UTF-8 byte order mark.
func readSource(file string) (src []byte, name string, err error) {
	var r io.Reader
	name = file
	if file == "-" {
		r, name = os.Stdin, "stdin"
	} else {
		f, err := os.Open(file)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			return nil, "", fmt.Errorf("%s: no such file", file)
		case errors.Is(err, fs.ErrPermission):
			return nil, "", fmt.Errorf("%s: permission denied", file)
		case err != nil:
			return nil, "", fmt.Errorf("read the config entry: %w", err)
		}
		defer f.Close()
		if fi, err := f.Stat(); err == nil && fi.IsDir() {
			return nil, "", fmt.Errorf("%s is a directory, not a config entry file", file)
		}
		r = f
	}
	src, err = io.ReadAll(io.LimitReader(r, maxFile+1))
	if err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err // the path is in name already
		}
		return nil, "", fmt.Errorf("read %s: %w", name, err)
	}
	if len(src) > maxFile {
		return nil, "", fmt.Errorf("%s is larger than %d bytes", name, maxFile)
	}
	src = bytes.TrimPrefix(src, utf8BOM)
	t := bytes.TrimSpace(src)
	switch {
	case len(t) == 0:
		return nil, "", fmt.Errorf("%s is empty: it should hold one config entry", name)
	case t[0] == '[':
		return nil, "", fmt.Errorf("%s holds a JSON array: config write takes one entry per file, a JSON object with its Kind and Name (write each entry on its own)", name)
	}
	return src, name, nil
}

// utf8BOM is the byte order mark some editors put at the start of a file.
var utf8BOM = []byte("\ufeff")

func (c *writeCmd) Synopsis() string { return "Creates or replaces a config entry" }
