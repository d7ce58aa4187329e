package configentry

import (
	"strconv"
	"strings"
)

// Positions says where each field of a decoded entry was written, so that
// an error found later (by Validate, or by the servers against the other
// entries) can name the file, line and column as a decoding error does.
type Positions struct {
	filename string
	at       map[string]pos
}

// DecodeWithPositions is Decode (JSON when src starts with '{' or '[',
// HCL otherwise; hcl forces HCL) that also returns where each field was
// written.
func DecodeWithPositions(src []byte, filename string, hcl bool) (Entry, *Positions, error) {
	d := &decoder{filename: filename, at: make(map[string]pos)}
	var e Entry
	var err error
	if !hcl && looksJSON(src) {
		e, err = decodeJSONWith(src, d)
	} else {
		d.hcl = true
		e, err = decodeHCLWith(src, d)
	}
	if err != nil {
		return nil, nil, err
	}
	return e, &Positions{filename: filename, at: d.at}, nil
}

// Locate returns where field (a path such as "Routes[0].Destination.Service",
// as errors name fields) was written: the field itself, or the nearest
// enclosing field that was (a required field left out is located at its
// parent), or the entry's start. ok is false when nothing is known.
func (p *Positions) Locate(field string) (line, col int, ok bool) {
	if p == nil {
		return 0, 0, false
	}
	for f := field; ; {
		if at, found := p.at[f]; found {
			return at.line, at.col, true
		}
		if f == "" {
			return 0, 0, false
		}
		f = parentPath(f)
	}
}

// Prefix returns "file:line:col" for field ("line:col" without a file
// name), or "" when its position is unknown.
func (p *Positions) Prefix(field string) string {
	line, col, ok := p.Locate(field)
	if !ok {
		return ""
	}
	var b strings.Builder
	if p.filename != "" {
		b.WriteString(p.filename + ":")
	}
	b.WriteString(strconv.Itoa(line) + ":" + strconv.Itoa(col))
	return b.String()
}

// parentPath drops the last segment of a field path: a ".Name" or an
// index ("[0]", `["key"]`).
func parentPath(f string) string {
	if strings.HasSuffix(f, "]") {
		if i := strings.LastIndexByte(f, '['); i >= 0 {
			return f[:i]
		}
	}
	if i := strings.LastIndexAny(f, ".["); i >= 0 {
		return f[:i]
	}
	return ""
}
