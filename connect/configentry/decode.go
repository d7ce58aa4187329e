package configentry

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode"

	"github.com/trellismesh/trellis/internal/suggest"
)

// DecodeError is an error in an entry's source text: where it is (Filename,
// Line and Column, 1-based; Line is 0 when unknown), which field (a path in
// the entry's JSON form, such as "Routes[0].Match.HTTP.PathPrefix"; empty
// for a syntax error) and what is wrong.
type DecodeError struct {
	Filename string
	Line     int
	Column   int
	Field    string
	Msg      string
}

// Error returns "file:line:col: Field: msg", leaving out what is unknown.
func (e *DecodeError) Error() string {
	var b strings.Builder
	if e.Line > 0 {
		if e.Filename != "" {
			b.WriteString(e.Filename)
			b.WriteByte(':')
		}
		fmt.Fprintf(&b, "%d:%d: ", e.Line, e.Column)
	} else if e.Filename != "" {
		b.WriteString(e.Filename + ": ")
	}
	if e.Field != "" {
		b.WriteString(e.Field + ": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// pos is a position in a source, 1-based; line 0 is unknown.
type pos struct{ line, col int }

type nodeKind int

const (
	nNull nodeKind = iota
	nString
	nNumber
	nBool
	nObject
	nList
)

func (k nodeKind) String() string {
	return [...]string{"null", "a string", "a number", "a bool", "an object", "a list"}[k]
}

// node is a value of the source, JSON or HCL, before it meets the Go type
// it decodes into. Objects keep their members in source order.
type node struct {
	kind   nodeKind
	str    string // string value, or a number's text
	b      bool
	keys   []string
	keyPos []pos
	vals   []*node
	list   []*node
	pos    pos
	// block marks an object or list made from HCL blocks: a single block
	// decodes into a list field as a list of one.
	block bool
}

// raw converts n into the plain values encoding/json produces for an
// `any`: map[string]any, []any, string, float64, bool, nil.
func (n *node) raw(path string, d *decoder) (any, error) {
	switch n.kind {
	case nString:
		return n.str, nil
	case nNumber:
		f, err := strconv.ParseFloat(n.str, 64)
		if err != nil || math.IsInf(f, 0) {
			return nil, d.errAt(n.pos, path, "number %s out of range", n.str)
		}
		return f, nil
	case nBool:
		return n.b, nil
	case nObject:
		m := make(map[string]any, len(n.keys))
		for i, k := range n.keys {
			if _, dup := m[k]; dup {
				return nil, d.errAt(n.keyPos[i], elemPath(path, k), "duplicate key")
			}
			v, err := n.vals[i].raw(elemPath(path, k), d)
			if err != nil {
				return nil, err
			}
			m[k] = v
		}
		return m, nil
	case nList:
		l := make([]any, 0, len(n.list))
		for i, e := range n.list {
			v, err := e.raw(indexPath(path, i), d)
			if err != nil {
				return nil, err
			}
			l = append(l, v)
		}
		return l, nil
	}
	return nil, nil
}

func fieldPath(parent, name string) string {
	if parent == "" {
		return name
	}
	return parent + "." + name
}

func indexPath(parent string, i int) string { return fmt.Sprintf("%s[%d]", parent, i) }

func elemPath(parent, key string) string { return parent + "[" + strconv.Quote(key) + "]" }

// DecodeJSON reads one entry from JSON (CamelCase or snake_case keys, at
// every level; CamelCase matched without regard to case), choosing its type
// by Kind. Keys that are data (Meta, Subsets, Failover, header maps,
// proxy-defaults Config) are kept as written. Unknown fields are refused
// with a *DecodeError naming the field's path.
func DecodeJSON(b []byte) (Entry, error) {
	e, err := decodeJSON(b, "")
	if err != nil {
		var de *DecodeError
		if errors.As(err, &de) {
			de.Line, de.Column = 0, 0
		}
		return nil, err
	}
	return e, nil
}

// Decode reads one entry from src: JSON when its first non-space byte is
// '{' (or '[', to refuse an array of entries clearly), HCL otherwise. A
// leading UTF-8 byte order mark is ignored. Errors name filename:line:col.
func Decode(src []byte, filename string) (Entry, error) {
	if looksJSON(src) {
		return decodeJSON(src, filename)
	}
	return DecodeHCL(src, filename)
}

// utf8BOM is the byte order mark some editors write at the start of a file.
var utf8BOM = []byte("\ufeff")

// looksJSON reports whether src, past a byte order mark and spaces, starts
// as a JSON object or array. An HCL body starts with neither.
func looksJSON(src []byte) bool {
	t := bytes.TrimLeftFunc(bytes.TrimPrefix(src, utf8BOM), unicode.IsSpace)
	return len(t) > 0 && (t[0] == '{' || t[0] == '[')
}

func decodeJSON(b []byte, filename string) (Entry, error) {
	return decodeJSONWith(b, &decoder{filename: filename})
}

func decodeJSONWith(b []byte, d *decoder) (Entry, error) {
	b = bytes.TrimPrefix(b, utf8BOM)
	p := &jsonParser{src: b, dec: json.NewDecoder(bytes.NewReader(b)), filename: d.filename}
	p.dec.UseNumber()
	n, err := p.value()
	if err != nil {
		return nil, err
	}
	if _, err := p.dec.Token(); err != io.EOF {
		return nil, p.syntaxErr(fmt.Errorf("unexpected data after the entry"))
	}
	return decodeNode(n, d)
}

// jsonParser builds a node tree from JSON tokens, noting where each value
// and key begins.
type jsonParser struct {
	src      []byte
	dec      *json.Decoder
	filename string
	depth    int
}

// next returns the next token and the position where it starts.
func (p *jsonParser) next() (json.Token, pos, error) {
	off := int(p.dec.InputOffset())
	for off < len(p.src) {
		c := p.src[off]
		if c != ' ' && c != '\t' && c != '\n' && c != '\r' && c != ',' && c != ':' {
			break
		}
		off++
	}
	t, err := p.dec.Token()
	if err != nil {
		return nil, pos{}, p.syntaxErr(err)
	}
	return t, offsetPos(p.src, off), nil
}

func offsetPos(src []byte, off int) pos {
	if off > len(src) {
		off = len(src)
	}
	line := 1 + bytes.Count(src[:off], []byte("\n"))
	col := off - bytes.LastIndexByte(src[:off], '\n')
	return pos{line, col}
}

func (p *jsonParser) syntaxErr(err error) error {
	at := pos{}
	var se *json.SyntaxError
	if errors.As(err, &se) {
		at = offsetPos(p.src, int(se.Offset))
	} else if err == io.EOF || errors.Is(err, io.ErrUnexpectedEOF) {
		at = offsetPos(p.src, len(p.src))
		err = errors.New("unexpected end of JSON")
	} else {
		at = offsetPos(p.src, int(p.dec.InputOffset()))
	}
	return &DecodeError{Filename: p.filename, Line: at.line, Column: at.col, Msg: "invalid JSON: " + err.Error()}
}

const maxDepth = 64

func (p *jsonParser) value() (*node, error) {
	t, at, err := p.next()
	if err != nil {
		return nil, err
	}
	return p.valueFrom(t, at)
}

func (p *jsonParser) valueFrom(t json.Token, at pos) (*node, error) {
	switch v := t.(type) {
	case nil:
		return &node{kind: nNull, pos: at}, nil
	case string:
		return &node{kind: nString, str: v, pos: at}, nil
	case json.Number:
		return &node{kind: nNumber, str: v.String(), pos: at}, nil
	case bool:
		return &node{kind: nBool, b: v, pos: at}, nil
	case json.Delim:
		p.depth++
		defer func() { p.depth-- }()
		if p.depth > maxDepth {
			return nil, &DecodeError{Filename: p.filename, Line: at.line, Column: at.col, Msg: "nested too deeply"}
		}
		switch v {
		case '{':
			n := &node{kind: nObject, pos: at}
			for {
				t, kat, err := p.next()
				if err != nil {
					return nil, err
				}
				if t == json.Delim('}') {
					return n, nil
				}
				k, _ := t.(string)
				val, err := p.value()
				if err != nil {
					return nil, err
				}
				n.keys = append(n.keys, k)
				n.keyPos = append(n.keyPos, kat)
				n.vals = append(n.vals, val)
			}
		case '[':
			n := &node{kind: nList, pos: at}
			for {
				t, eat, err := p.next()
				if err != nil {
					return nil, err
				}
				if t == json.Delim(']') {
					return n, nil
				}
				e, err := p.valueFrom(t, eat)
				if err != nil {
					return nil, err
				}
				n.list = append(n.list, e)
			}
		}
	}
	return nil, &DecodeError{Filename: p.filename, Line: at.line, Column: at.col, Msg: fmt.Sprintf("invalid JSON: unexpected %v", t)}
}

// decoder decodes a node tree into an entry by reflection.
type decoder struct {
	filename string
	hcl      bool // fields tagged hcl:"-" are unknown
	// at, when not nil, collects where each field path was written: its
	// key's position, or its value's for list elements.
	at map[string]pos
}

// note records where path was written, unless it is known already.
func (d *decoder) note(path string, at pos) {
	if d.at == nil || at.line == 0 {
		return
	}
	if _, ok := d.at[path]; !ok {
		d.at[path] = at
	}
}

func (d *decoder) errAt(at pos, field, format string, args ...any) error {
	return &DecodeError{Filename: d.filename, Line: at.line, Column: at.col, Field: field, Msg: fmt.Sprintf(format, args...)}
}

// decodeNode picks the entry's type by its Kind member and decodes n into
// it.
func decodeNode(n *node, d *decoder) (Entry, error) {
	if n.kind == nList {
		return nil, d.errAt(n.pos, "", "a config entry must be an object, not a list: write one entry per file (an array of entries is not accepted)")
	}
	if n.kind != nObject {
		return nil, d.errAt(n.pos, "", "a config entry must be an object, not %v", n.kind)
	}
	var kind *node
	kindAt := n.pos
	for i, k := range n.keys {
		if strings.EqualFold(k, "Kind") {
			if kind != nil {
				return nil, d.errAt(n.keyPos[i], "Kind", "duplicate field")
			}
			kind, kindAt = n.vals[i], n.keyPos[i]
		}
	}
	if kind == nil {
		return nil, d.errAt(n.pos, "Kind", "missing: say which kind of entry this is (one of %s)", strings.Join(Kinds, ", "))
	}
	if kind.kind != nString {
		return nil, d.errAt(kind.pos, "Kind", "must be a string, not %v", kind.kind)
	}
	k := strings.ToLower(strings.TrimSpace(kind.str))
	e, err := New(k)
	if err != nil {
		return nil, d.errAt(kindAt, "Kind", "unknown kind %q (want one of %s)", kind.str, strings.Join(Kinds, ", "))
	}
	kind.str = k
	if err := d.value(n, reflect.ValueOf(e).Elem(), ""); err != nil {
		return nil, err
	}
	return e, nil
}

var (
	durationType = reflect.TypeFor[Duration]()
	anyType      = reflect.TypeFor[any]()
)

// value decodes n into v (settable) at path.
func (d *decoder) value(n *node, v reflect.Value, path string) error {
	d.note(path, n.pos)
	t := v.Type()
	if n.kind == nNull {
		v.SetZero()
		return nil
	}
	if t == durationType {
		switch n.kind {
		case nString:
			if n.str == "" {
				v.SetInt(0)
				return nil
			}
			dur, err := time.ParseDuration(n.str)
			if err != nil {
				return d.errAt(n.pos, path, "%q is not a duration (want a number and a unit, like \"10s\" or \"1m30s\")", n.str)
			}
			v.SetInt(int64(dur))
			return nil
		case nNumber:
			i, err := strconv.ParseInt(n.str, 10, 64)
			if err != nil {
				return d.errAt(n.pos, path, "%s is not a duration (want a string like \"10s\", or whole nanoseconds)", n.str)
			}
			v.SetInt(i)
			return nil
		}
		return d.errAt(n.pos, path, "must be a duration like \"10s\", not %v", n.kind)
	}
	switch t.Kind() {
	case reflect.Pointer:
		p := reflect.New(t.Elem())
		if err := d.value(n, p.Elem(), path); err != nil {
			return err
		}
		v.Set(p)
		return nil
	case reflect.Interface:
		if t != anyType {
			break
		}
		r, err := n.raw(path, d)
		if err != nil {
			return err
		}
		if r != nil {
			v.Set(reflect.ValueOf(r))
		}
		return nil
	case reflect.Struct:
		if n.kind != nObject {
			return d.typeErr(n, path, "an object")
		}
		return d.object(n, v, path)
	case reflect.Map:
		if n.kind != nObject {
			return d.typeErr(n, path, "an object")
		}
		if t.Key().Kind() != reflect.String {
			break
		}
		if len(n.keys) == 0 {
			v.SetZero()
			return nil
		}
		m := reflect.MakeMapWithSize(t, len(n.keys))
		for i, k := range n.keys {
			p := elemPath(path, k)
			d.note(p, n.keyPos[i])
			kv := reflect.ValueOf(k).Convert(t.Key())
			if m.MapIndex(kv).IsValid() {
				return d.errAt(n.keyPos[i], p, "duplicate key")
			}
			ev := reflect.New(t.Elem()).Elem()
			if err := d.value(n.vals[i], ev, p); err != nil {
				return err
			}
			m.SetMapIndex(kv, ev)
		}
		v.Set(m)
		return nil
	case reflect.Slice:
		items := n.list
		switch {
		case n.kind == nList:
		case n.kind == nObject && n.block:
			items = []*node{n}
		default:
			return d.typeErr(n, path, "a list")
		}
		if len(items) == 0 {
			v.SetZero()
			return nil
		}
		s := reflect.MakeSlice(t, len(items), len(items))
		for i, e := range items {
			if err := d.value(e, s.Index(i), indexPath(path, i)); err != nil {
				return err
			}
		}
		v.Set(s)
		return nil
	case reflect.String:
		if n.kind != nString {
			return d.typeErr(n, path, "a string")
		}
		v.SetString(n.str)
		return nil
	case reflect.Bool:
		if n.kind != nBool {
			return d.typeErr(n, path, "true or false")
		}
		v.SetBool(n.b)
		return nil
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		if n.kind != nNumber {
			return d.typeErr(n, path, "a whole number")
		}
		i, err := strconv.ParseInt(n.str, 10, 64)
		if err != nil || v.OverflowInt(i) {
			return d.errAt(n.pos, path, "%s is not a whole number in range", n.str)
		}
		v.SetInt(i)
		return nil
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		if n.kind != nNumber {
			return d.typeErr(n, path, "a whole number")
		}
		u, err := strconv.ParseUint(n.str, 10, 64)
		if err != nil || v.OverflowUint(u) {
			return d.errAt(n.pos, path, "%s is not a whole number from 0 to %d", n.str, uint64(1)<<(t.Bits())-1)
		}
		v.SetUint(u)
		return nil
	case reflect.Float32, reflect.Float64:
		if n.kind != nNumber {
			return d.typeErr(n, path, "a number")
		}
		f, err := strconv.ParseFloat(n.str, t.Bits())
		if err != nil || math.IsInf(f, 0) {
			return d.errAt(n.pos, path, "number %s out of range", n.str)
		}
		v.SetFloat(f)
		return nil
	}
	return d.errAt(n.pos, path, "cannot decode into %s", t)
}

func (d *decoder) typeErr(n *node, path, want string) error {
	if n.kind == nList && n.block && want == "an object" {
		return d.errAt(n.list[1].pos, path, "given as %d blocks: only one is allowed", len(n.list))
	}
	return d.errAt(n.pos, path, "must be %s, not %v", want, n.kind)
}

// fieldInfo is a struct field a source key may name.
type fieldInfo struct {
	name  string // the JSON name
	snake string
	index []int
	noHCL bool
}

var fieldCache sync.Map // reflect.Type → []fieldInfo

// structFields lists t's decodable fields, embedded structs flattened.
func structFields(t reflect.Type) []fieldInfo {
	if v, ok := fieldCache.Load(t); ok {
		return v.([]fieldInfo)
	}
	var out []fieldInfo
	for _, f := range reflect.VisibleFields(t) {
		if !f.IsExported() || f.Anonymous {
			continue
		}
		name := f.Name
		tag := f.Tag.Get("json")
		if tag == "-" {
			continue
		}
		if n, _, _ := strings.Cut(tag, ","); n != "" {
			name = n
		}
		out = append(out, fieldInfo{name: name, snake: snakeCase(name), index: f.Index, noHCL: f.Tag.Get("hcl") == "-"})
	}
	fieldCache.Store(t, out)
	return out
}

// snakeCase turns a Go field name into its snake_case key: PathPrefix →
// path_prefix, HTTP → http, EnforcingConsecutive5xx →
// enforcing_consecutive_5xx, LegacyID → legacy_id.
func snakeCase(s string) string {
	r := []rune(s)
	var b strings.Builder
	for i, c := range r {
		if i > 0 {
			prev := r[i-1]
			upper := unicode.IsUpper(c)
			switch {
			case upper && (unicode.IsLower(prev) || unicode.IsDigit(prev)):
				b.WriteByte('_')
			case upper && unicode.IsUpper(prev) && i+1 < len(r) && unicode.IsLower(r[i+1]):
				b.WriteByte('_')
			case unicode.IsDigit(c) && unicode.IsLetter(prev):
				b.WriteByte('_')
			}
		}
		b.WriteRune(unicode.ToLower(c))
	}
	return b.String()
}

func (d *decoder) object(n *node, v reflect.Value, path string) error {
	fields := structFields(v.Type())
	seen := make(map[string]bool, len(n.keys))
	for i, k := range n.keys {
		var f *fieldInfo
		for j := range fields {
			if strings.EqualFold(k, fields[j].name) || strings.EqualFold(k, fields[j].snake) {
				f = &fields[j]
				break
			}
		}
		if f != nil && d.hcl && f.noHCL {
			// CreateIndex, ModifyIndex: the servers set them; a file
			// that names them was probably copied from `config read`.
			return d.errAt(n.keyPos[i], fieldPath(path, k), "set by the servers, not written in a file; remove it")
		}
		if f == nil {
			return d.errAt(n.keyPos[i], fieldPath(path, k), "unknown field%s", suggestField(k, fields, d.hcl))
		}
		p := fieldPath(path, f.name)
		d.note(p, n.keyPos[i])
		if seen[f.name] {
			return d.errAt(n.keyPos[i], p, "duplicate field (given as %q too)", k)
		}
		seen[f.name] = true
		if err := d.value(n.vals[i], v.FieldByIndex(f.index), p); err != nil {
			return err
		}
	}
	return nil
}

// suggestField names the field k was probably meant to be, among the fields
// a source may set (in HCL, not those tagged hcl:"-").
func suggestField(k string, fields []fieldInfo, hcl bool) string {
	lk := strings.ToLower(strings.ReplaceAll(k, "_", ""))
	best, bestD := "", 3
	var names []string
	for _, f := range fields {
		if hcl && f.noHCL {
			continue
		}
		names = append(names, f.name)
		if dd := suggest.Distance(lk, strings.ToLower(f.name)); dd < bestD {
			best, bestD = f.name, dd
		}
	}
	if best == "" {
		slices.Sort(names)
		return " (known: " + strings.Join(names, ", ") + ")"
	}
	return " (did you mean " + best + "?)"
}
