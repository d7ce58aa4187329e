package ca

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"reflect"
	"strings"

	"github.com/hashicorp/cli"

	"github.com/trellismesh/trellis/api"
	"github.com/trellismesh/trellis/command/flags"
)

const setConfigHelp = `
Usage: trellis connect ca set-config -config-file FILE [options]

  Changes the configuration of the mesh's certificate authority from a JSON
  file in the shape get-config prints:

      {
        "Provider": "trellis",
        "Config": {
          "LeafCertTTL": "24h"
        }
      }

  The keys of Config are LeafCertTTL (a duration such as "72h", or seconds),
  PrivateKeyType ("ec"), PrivateKeyBits (256), and RootCert with PrivateKey
  (PEM) to make the CA sign with a root of your own. Keys left out keep
  their values. A new root is cross-signed by the current one, so no
  connection breaks while leaves are re-signed.

      $ trellis connect ca set-config -config-file ca.json
`

type setConfigCmd struct {
	base
	file string
}

// NewSetConfig returns `trellis connect ca set-config`.
func NewSetConfig(ui cli.Ui) cli.Command {
	c := &setConfigCmd{}
	own := flags.NewFlagSet("connect ca set-config")
	own.StringVar(&c.file, "config-file", "", "The JSON `file` with the new configuration. Required.")
	c.init(ui, "connect ca set-config", setConfigHelp, own, false)
	return c
}

func (c *setConfigCmd) Run(args []string) int {
	client, ok, code := c.start(args, "connect ca set-config")
	if !ok {
		return code
	}
	if c.file == "" {
		c.ui.Error("Error: -config-file is required: the JSON file with the new configuration")
		c.ui.Error("")
		c.ui.Error(c.help)
		return 1
	}
	conf, err := readConfig(c.file)
	if err != nil {
		c.ui.Error("Error: -config-file " + err.Error())
		return 1
	}
	if _, err := client.Connect().CASetConfig(conf, nil); err != nil {
		c.ui.Error(flags.ErrorMessage("setting the CA configuration from "+c.file, err))
		return 1
	}
	c.ui.Output("Configuration updated")
	return 0
}

// readConfig reads a configuration file; errors start with the file's name
// (and line:column for malformed JSON).
func readConfig(path string) (*api.CAConfig, error) {
	b, err := os.ReadFile(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("%s: no such file", path)
	case errors.Is(err, fs.ErrPermission):
		return nil, fmt.Errorf("%s: permission denied", path)
	case err != nil:
		var pe *fs.PathError
		if errors.As(err, &pe) && pe.Err != nil {
			if fi, serr := os.Stat(path); serr == nil && fi.IsDir() {
				return nil, fmt.Errorf("%s is a directory, not a JSON file", path)
			}
			return nil, fmt.Errorf("%s: %v", path, pe.Err)
		}
		return nil, err
	}
	if len(bytes.TrimSpace(b)) == 0 {
		return nil, fmt.Errorf("%s: the file is empty; it should hold a JSON object such as {\"Config\": {\"LeafCertTTL\": \"24h\"}}", path)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var conf api.CAConfig
	if err := dec.Decode(&conf); err != nil {
		var se *json.SyntaxError
		var te *json.UnmarshalTypeError
		switch {
		case errors.As(err, &se):
			line, col := position(b, se.Offset)
			return nil, fmt.Errorf("%s:%d:%d: %v", path, line, col, err)
		case errors.As(err, &te):
			line, col := position(b, te.Offset)
			if te.Field == "" {
				return nil, fmt.Errorf("%s:%d:%d: want a CA configuration object, not %s", path, line, col, jsonKind(te.Value))
			}
			return nil, fmt.Errorf("%s:%d:%d: %s: want %s, not %s", path, line, col, te.Field, goKind(te.Type), jsonKind(te.Value))
		case errors.Is(err, io.ErrUnexpectedEOF):
			return nil, fmt.Errorf("%s: the JSON ends early", path)
		}
		return nil, fmt.Errorf("%s: %v", path, err)
	}
	if dec.More() {
		return nil, fmt.Errorf("%s: more than one JSON value; the file should hold one object", path)
	}
	return &conf, nil
}

// jsonKind names a JSON value kind as encoding/json reports it ("array",
// "number", "string", "bool", "object") with its article.
func jsonKind(v string) string {
	switch {
	case v == "array" || v == "object":
		return "an " + v
	case v == "bool":
		return "true or false"
	case strings.HasPrefix(v, "number"):
		return "a number"
	case v == "":
		return "this value"
	}
	return "a " + v
}

// goKind says in JSON words what a Go type decodes from.
func goKind(t reflect.Type) string {
	if t == nil {
		return "another value"
	}
	switch t.Kind() {
	case reflect.Struct, reflect.Map:
		return "an object"
	case reflect.Slice, reflect.Array:
		return "a list"
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "true or false"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "a whole number"
	case reflect.Float32, reflect.Float64:
		return "a number"
	}
	return "another value"
}

// position returns the 1-based line and column of a byte offset.
func position(b []byte, offset int64) (line, col int) {
	if offset > int64(len(b)) {
		offset = int64(len(b))
	}
	before := b[:offset]
	line = bytes.Count(before, []byte("\n")) + 1
	col = int(offset) - bytes.LastIndexByte(before, '\n')
	return line, col
}

func (c *setConfigCmd) Synopsis() string { return "Changes the CA's configuration" }
