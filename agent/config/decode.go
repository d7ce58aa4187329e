package config

import (
	"fmt"
	"math/big"
	"path/filepath"
	"strings"
	"time"
	"unicode"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	hcljson "github.com/hashicorp/hcl/v2/json"
	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/convert"

	"github.com/trellismesh/trellis/internal/suggest"
)

// This file is a small decoder over HCL's syntax trees. HCL native syntax
// and JSON reach it the same way: a node is a set of named fields, each a
// value expression or (native syntax) a nested block. Decoding by hand,
// instead of through gohcl, lets a key be written either as a block
// (check { }) or as a list of objects (checks = [{ }]), accepts the CamelCase
// keys of Consul's JSON, and keeps a file:line:col for every error.

// node is an object: a native block body, or an object expression (an HCL
// object constructor or a JSON object).
type node struct {
	body *hclsyntax.Body
	expr hcl.Expression
	rng  hcl.Range
	// what names the node in errors, e.g. `service "web"`.
	what string
}

// field is one key of a node.
type field struct {
	// name is the key as written; key is its normalised form (snake_case).
	name, key string
	rng       hcl.Range
	expr      hcl.Expression   // set for attributes and object members
	block     *hclsyntax.Block // set for native blocks
}

// errs collects positioned errors.
type errs struct{ list []error }

func (e *errs) add(rng hcl.Range, format string, args ...any) {
	e.list = append(e.list, fmt.Errorf("%s: %s", position(rng), fmt.Sprintf(format, args...)))
}

func (e *errs) addDiags(diags hcl.Diagnostics) {
	for _, d := range diags {
		if d.Severity != hcl.DiagError {
			continue
		}
		msg := d.Summary
		if d.Detail != "" {
			msg += ": " + d.Detail
		}
		if d.Subject != nil {
			e.add(*d.Subject, "%s", msg)
		} else {
			e.list = append(e.list, fmt.Errorf("%s", msg))
		}
	}
}

func (e *errs) err() error {
	switch len(e.list) {
	case 0:
		return nil
	case 1:
		return e.list[0]
	}
	var b strings.Builder
	for i, err := range e.list {
		if i > 0 {
			b.WriteString("\n")
		}
		b.WriteString(err.Error())
	}
	return &multiError{msg: b.String(), errs: e.list}
}

// multiError is several configuration errors, one a line.
type multiError struct {
	msg  string
	errs []error
}

func (m *multiError) Error() string   { return m.msg }
func (m *multiError) Unwrap() []error { return m.errs }

// position formats a range as file:line:col.
func position(rng hcl.Range) string {
	return fmt.Sprintf("%s:%d:%d", rng.Filename, rng.Start.Line, rng.Start.Column)
}

// parseFile parses HCL or JSON (by the file name's extension) into a root node.
func parseFile(src []byte, filename string, e *errs) (node, bool) {
	var (
		f     *hcl.File
		diags hcl.Diagnostics
	)
	switch strings.ToLower(filepath.Ext(filename)) {
	case ".json":
		f, diags = hcljson.Parse(src, filename)
	case ".hcl":
		f, diags = hclsyntax.ParseConfig(src, filename, hcl.Pos{Line: 1, Column: 1, Byte: 0})
	default:
		e.add(hcl.Range{Filename: filename, Start: hcl.Pos{Line: 1, Column: 1}}, "unknown file type %q: config files end in .hcl or .json", filepath.Ext(filename))
		return node{}, false
	}
	if diags.HasErrors() {
		e.addDiags(diags)
		return node{}, false
	}
	if b, ok := f.Body.(*hclsyntax.Body); ok {
		return node{body: b, rng: b.SrcRange}, true
	}
	// A JSON file: its root object's members are the attributes.
	expr, diags := hcljson.ParseExpression(src, filename)
	if diags.HasErrors() {
		e.addDiags(diags)
		return node{}, false
	}
	if _, isObj := expr.(interface{ ExprMap() []hcl.KeyValuePair }); !isObj {
		e.add(expr.Range(), "a JSON config file must hold one object")
		return node{}, false
	}
	return node{expr: expr, rng: expr.Range()}, true
}

// fields lists the keys of n in source order.
func (n node) fields(e *errs) []field {
	var out []field
	if n.body != nil {
		for _, a := range n.body.Attributes {
			out = append(out, field{name: a.Name, key: normalizeKey(a.Name), rng: a.NameRange, expr: a.Expr})
		}
		for _, b := range n.body.Blocks {
			if len(b.Labels) > 0 {
				e.add(b.LabelRanges[0], "%s: block %q takes no labels", n.what, b.Type)
				continue
			}
			out = append(out, field{name: b.Type, key: normalizeKey(b.Type), rng: b.TypeRange, block: b})
		}
		sortFields(out)
		return out
	}
	pairs, diags := hcl.ExprMap(n.expr)
	if diags.HasErrors() {
		e.add(n.expr.Range(), "%s: expected an object", n.what)
		return nil
	}
	for _, kv := range pairs {
		name, ok := keyString(kv.Key)
		if !ok {
			e.add(kv.Key.Range(), "%s: a key must be a name or a string", n.what)
			continue
		}
		out = append(out, field{name: name, key: normalizeKey(name), rng: kv.Key.Range(), expr: kv.Value})
	}
	return out
}

func sortFields(fs []field) {
	// Attributes come from a map: put everything in source order.
	for i := 1; i < len(fs); i++ {
		for j := i; j > 0 && before(fs[j].rng, fs[j-1].rng); j-- {
			fs[j], fs[j-1] = fs[j-1], fs[j]
		}
	}
}

func before(a, b hcl.Range) bool { return a.Start.Byte < b.Start.Byte }

func keyString(k hcl.Expression) (string, bool) {
	if kw := hcl.ExprAsKeyword(k); kw != "" {
		return kw, true
	}
	v, diags := k.Value(nil)
	if diags.HasErrors() || !v.Type().Equals(cty.String) || v.IsNull() || !v.IsKnown() {
		return "", false
	}
	return v.AsString(), true
}

// normalizeKey turns CamelCase keys (Consul's JSON) into snake_case:
// "DeregisterCriticalServiceAfter" → "deregister_critical_service_after",
// "TLSSkipVerify" → "tls_skip_verify", "CheckID" → "check_id".
func normalizeKey(s string) string {
	if strings.ToLower(s) == s {
		return s
	}
	r := []rune(s)
	var b strings.Builder
	for i, c := range r {
		if unicode.IsUpper(c) && i > 0 {
			prevLower := unicode.IsLower(r[i-1]) || unicode.IsDigit(r[i-1])
			nextLower := i+1 < len(r) && unicode.IsLower(r[i+1])
			if prevLower || (unicode.IsUpper(r[i-1]) && nextLower) {
				b.WriteByte('_')
			}
		}
		b.WriteRune(unicode.ToLower(c))
	}
	return b.String()
}

// value evaluates a field's expression; blocks are not values.
func (e *errs) value(f field, what string) (cty.Value, bool) {
	if f.block != nil {
		e.add(f.rng, "%s: %s: expected a value (%s = ...), not a block", what, f.name, f.name)
		return cty.NilVal, false
	}
	v, diags := f.expr.Value(nil)
	if diags.HasErrors() {
		e.addDiags(diags)
		return cty.NilVal, false
	}
	if v.IsNull() || !v.IsKnown() {
		e.add(f.expr.Range(), "%s: %s: a value is required", what, f.name)
		return cty.NilVal, false
	}
	return v, true
}

func (e *errs) convert(f field, what string, want cty.Type, kind string) (cty.Value, bool) {
	v, ok := e.value(f, what)
	if !ok {
		return v, false
	}
	c, err := convert.Convert(v, want)
	if err != nil {
		e.add(f.expr.Range(), "%s: %s: expected %s, got %s", what, f.name, kind, v.Type().FriendlyName())
		return cty.NilVal, false
	}
	return c, true
}

func (e *errs) str(f field, what string) (string, bool) {
	v, ok := e.convert(f, what, cty.String, "a string")
	if !ok {
		return "", false
	}
	return v.AsString(), true
}

func (e *errs) boolean(f field, what string) (bool, bool) {
	v, ok := e.value(f, what)
	if !ok {
		return false, false
	}
	if !v.Type().Equals(cty.Bool) {
		// Accept "true"/"false" strings as Consul's JSON sometimes has them.
		if v.Type().Equals(cty.String) && (v.AsString() == "true" || v.AsString() == "false") {
			return v.AsString() == "true", true
		}
		e.add(f.expr.Range(), "%s: %s: expected true or false, got %s", what, f.name, v.Type().FriendlyName())
		return false, false
	}
	return v.True(), true
}

func (e *errs) integer(f field, what string) (int, bool) {
	v, ok := e.value(f, what)
	if !ok {
		return 0, false
	}
	if !v.Type().Equals(cty.Number) {
		e.add(f.expr.Range(), "%s: %s: expected a whole number, got %s", what, f.name, v.Type().FriendlyName())
		return 0, false
	}
	bf := v.AsBigFloat()
	i, acc := bf.Int64()
	if acc != big.Exact || i < -1<<31 || i > 1<<31-1 {
		e.add(f.expr.Range(), "%s: %s: expected a whole number, got %s", what, f.name, bf.String())
		return 0, false
	}
	return int(i), true
}

func (e *errs) duration(f field, what string) (time.Duration, bool) {
	s, ok := e.str(f, what)
	if !ok {
		return 0, false
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		e.add(f.expr.Range(), "%s: %s: %q is not a duration (write it like \"10s\", \"1m30s\" or \"500ms\")", what, f.name, s)
		return 0, false
	}
	if d < 0 {
		e.add(f.expr.Range(), "%s: %s: %q is negative", what, f.name, s)
		return 0, false
	}
	return d, true
}

func (e *errs) strings(f field, what string) ([]string, bool) {
	v, ok := e.convert(f, what, cty.List(cty.String), "a list of strings")
	if !ok {
		return nil, false
	}
	out := []string{}
	for _, el := range v.AsValueSlice() {
		if el.IsNull() {
			e.add(f.expr.Range(), "%s: %s: a list item is null", what, f.name)
			return nil, false
		}
		out = append(out, el.AsString())
	}
	return out, true
}

func (e *errs) stringMap(f field, what string) (map[string]string, bool) {
	n, ok := e.object(f, what+": "+f.name)
	if !ok {
		return nil, false
	}
	out := map[string]string{}
	for _, kf := range n.fields(e) {
		s, ok := e.str(kf, n.what)
		if !ok {
			return nil, false
		}
		out[kf.name] = s
	}
	return out, true
}

func (e *errs) headerMap(f field, what string) (map[string][]string, bool) {
	n, ok := e.object(f, what+": "+f.name)
	if !ok {
		return nil, false
	}
	out := map[string][]string{}
	for _, kf := range n.fields(e) {
		// A header value is a list of strings, or one string.
		v, ok := e.value(kf, n.what)
		if !ok {
			return nil, false
		}
		if v.Type().Equals(cty.String) {
			out[kf.name] = []string{v.AsString()}
			continue
		}
		vals, ok := e.strings(kf, n.what)
		if !ok {
			return nil, false
		}
		out[kf.name] = vals
	}
	return out, true
}

// object returns the node a field holds: a block, or an object value.
func (e *errs) object(f field, what string) (node, bool) {
	if f.block != nil {
		return node{body: f.block.Body, rng: f.block.DefRange(), what: what}, true
	}
	if _, diags := hcl.ExprMap(f.expr); diags.HasErrors() {
		e.add(f.expr.Range(), "%s: expected an object { ... }", what)
		return node{}, false
	}
	return node{expr: f.expr, rng: f.expr.Range(), what: what}, true
}

// objects returns the nodes a field holds: a block (one node), an object
// value (one node) or a list of objects.
func (e *errs) objects(f field, what string) ([]node, bool) {
	if f.block != nil {
		return []node{{body: f.block.Body, rng: f.block.DefRange(), what: what}}, true
	}
	if _, diags := hcl.ExprMap(f.expr); !diags.HasErrors() {
		if v, d := f.expr.Value(nil); !d.HasErrors() && (v.Type().IsObjectType() || v.Type().IsMapType()) {
			return []node{{expr: f.expr, rng: f.expr.Range(), what: what}}, true
		}
	}
	items, diags := hcl.ExprList(f.expr)
	if diags.HasErrors() {
		e.add(f.expr.Range(), "%s: %s: expected an object or a list of objects", what, f.name)
		return nil, false
	}
	var out []node
	for _, it := range items {
		if _, d := hcl.ExprMap(it); d.HasErrors() {
			e.add(it.Range(), "%s: %s: expected an object { ... }", what, f.name)
			return nil, false
		}
		out = append(out, node{expr: it, rng: it.Range(), what: what})
	}
	return out, true
}

// unknown reports a key that does not belong in a node.
func (e *errs) unknown(f field, what string, known []string) {
	hint := ""
	for _, k := range known {
		if closeEnough(f.key, k) {
			hint = fmt.Sprintf(" (did you mean %q?)", k)
			break
		}
	}
	e.add(f.rng, "%s: unknown key %q%s", what, f.name, hint)
}

// closeEnough reports whether b is a likely intended spelling of a: at
// most one edit away, or two for longer keys.
func closeEnough(a, b string) bool {
	if a == b {
		return false
	}
	limit := 1
	if len(b) >= 6 {
		limit = 2
	}
	return suggest.Distance(a, b) <= limit
}
