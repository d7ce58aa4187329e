package configentry

import (
	"bytes"
	"fmt"
	"slices"
	"unicode/utf8"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"
)

// DecodeHCL reads one entry from HCL: Consul's documented form
// (`Kind = "service-splitter"`, `Splits = [{ Weight = 50 }]`) or
// snake_case keys, with attributes or blocks. A block is an object;
// repeated blocks of one name are a list (`routes { } routes { }`); a
// labelled block is a map entry (`subsets "v1" { filter = "..." }`).
// Values are literals, lists and objects only. Errors are *DecodeError
// naming filename:line:col.
func DecodeHCL(src []byte, filename string) (Entry, error) {
	return decodeHCLWith(src, &decoder{filename: filename, hcl: true})
}

func decodeHCLWith(src []byte, d *decoder) (Entry, error) {
	filename := d.filename
	src = bytes.TrimPrefix(src, utf8BOM)
	f, diags := hclsyntax.ParseConfig(src, filename, hcl.InitialPos)
	if diags.HasErrors() {
		return nil, diagErr(filename, diags)
	}
	body, ok := f.Body.(*hclsyntax.Body)
	if !ok {
		return nil, &DecodeError{Filename: filename, Msg: "not HCL native syntax"}
	}
	h := &hclReader{filename: filename}
	n, err := h.body(body, 0)
	if err != nil {
		return nil, err
	}
	return decodeNode(n, d)
}

func diagErr(filename string, diags hcl.Diagnostics) error {
	for _, d := range diags {
		if d.Severity != hcl.DiagError {
			continue
		}
		msg := d.Summary
		if d.Detail != "" {
			msg += ": " + d.Detail
		}
		e := &DecodeError{Filename: filename, Msg: msg}
		if d.Subject != nil {
			e.Line, e.Column = d.Subject.Start.Line, d.Subject.Start.Column
		}
		return e
	}
	return &DecodeError{Filename: filename, Msg: diags.Error()}
}

type hclReader struct {
	filename string
}

func hpos(p hcl.Pos) pos { return pos{p.Line, p.Column} }

func (h *hclReader) errAt(p hcl.Pos, format string, args ...any) error {
	return &DecodeError{Filename: h.filename, Line: p.Line, Column: p.Column, Msg: fmt.Sprintf(format, args...)}
}

// body turns a body into an object node: attributes and blocks in source
// order.
func (h *hclReader) body(b *hclsyntax.Body, depth int) (*node, error) {
	if depth > maxDepth {
		return nil, h.errAt(b.SrcRange.Start, "nested too deeply")
	}
	type member struct {
		at    hcl.Pos
		name  string
		attr  *hclsyntax.Attribute
		block []*hclsyntax.Block
	}
	var members []*member
	byName := map[string]*member{}
	for _, a := range b.Attributes {
		m := &member{at: a.NameRange.Start, name: a.Name, attr: a}
		members = append(members, m)
		byName[a.Name] = m
	}
	for _, blk := range b.Blocks {
		m := byName[blk.Type]
		if m != nil && m.attr != nil {
			return nil, h.errAt(blk.TypeRange.Start, "%s is set both as an attribute (line %d) and as a block", blk.Type, m.at.Line)
		}
		if m == nil {
			m = &member{at: blk.TypeRange.Start, name: blk.Type}
			members = append(members, m)
			byName[blk.Type] = m
		}
		m.block = append(m.block, blk)
	}
	slices.SortFunc(members, func(a, b *member) int { return a.at.Byte - b.at.Byte })
	n := &node{kind: nObject, pos: hpos(b.SrcRange.Start), block: true}
	for _, m := range members {
		var v *node
		var err error
		if m.attr != nil {
			v, err = h.expr(m.attr.Expr, depth+1)
		} else {
			v, err = h.blocks(m.block, depth+1)
		}
		if err != nil {
			return nil, err
		}
		n.keys = append(n.keys, m.name)
		n.keyPos = append(n.keyPos, hpos(m.at))
		n.vals = append(n.vals, v)
	}
	return n, nil
}

// blocks turns the blocks of one type into a node: one unlabelled block is
// an object, several a list; labelled blocks are objects keyed by label.
func (h *hclReader) blocks(bs []*hclsyntax.Block, depth int) (*node, error) {
	nl := len(bs[0].Labels)
	for _, b := range bs[1:] {
		if len(b.Labels) != nl {
			return nil, h.errAt(b.TypeRange.Start, "%s blocks must all have %d labels", b.Type, nl)
		}
	}
	if nl == 0 {
		if len(bs) == 1 {
			v, err := h.body(bs[0].Body, depth)
			if v != nil {
				v.pos = hpos(bs[0].TypeRange.Start)
			}
			return v, err
		}
		l := &node{kind: nList, pos: hpos(bs[0].TypeRange.Start), block: true}
		for _, b := range bs {
			v, err := h.body(b.Body, depth)
			if err != nil {
				return nil, err
			}
			v.pos = hpos(b.TypeRange.Start)
			l.list = append(l.list, v)
		}
		return l, nil
	}
	root := &node{kind: nObject, pos: hpos(bs[0].TypeRange.Start), block: true}
	for _, b := range bs {
		cur := root
		for i, label := range b.Labels {
			at := hpos(b.LabelRanges[i].Start)
			idx := slices.Index(cur.keys, label)
			last := i == len(b.Labels)-1
			if last {
				if idx >= 0 {
					return nil, h.errAt(b.LabelRanges[i].Start, "%s %q is defined twice", b.Type, label)
				}
				v, err := h.body(b.Body, depth)
				if err != nil {
					return nil, err
				}
				cur.keys = append(cur.keys, label)
				cur.keyPos = append(cur.keyPos, at)
				cur.vals = append(cur.vals, v)
				break
			}
			if idx < 0 {
				cur.keys = append(cur.keys, label)
				cur.keyPos = append(cur.keyPos, at)
				cur.vals = append(cur.vals, &node{kind: nObject, pos: at, block: true})
				idx = len(cur.keys) - 1
			}
			cur = cur.vals[idx]
		}
	}
	return root, nil
}

// expr turns a constant expression into a node, keeping the positions of
// list items and object members.
func (h *hclReader) expr(e hclsyntax.Expression, depth int) (*node, error) {
	if depth > maxDepth {
		return nil, h.errAt(e.Range().Start, "nested too deeply")
	}
	switch x := e.(type) {
	case *hclsyntax.ParenthesesExpr:
		return h.expr(x.Expression, depth)
	case *hclsyntax.TupleConsExpr:
		n := &node{kind: nList, pos: hpos(x.SrcRange.Start)}
		for _, it := range x.Exprs {
			v, err := h.expr(it, depth+1)
			if err != nil {
				return nil, err
			}
			n.list = append(n.list, v)
		}
		return n, nil
	case *hclsyntax.ObjectConsExpr:
		n := &node{kind: nObject, pos: hpos(x.SrcRange.Start)}
		for _, it := range x.Items {
			kv, diags := it.KeyExpr.Value(nil)
			if diags.HasErrors() {
				return nil, h.constErr(it.KeyExpr, diags)
			}
			if kv.IsNull() || !kv.IsKnown() || kv.Type() != cty.String {
				return nil, h.errAt(it.KeyExpr.Range().Start, "an object key must be a name or a string")
			}
			v, err := h.expr(it.ValueExpr, depth+1)
			if err != nil {
				return nil, err
			}
			if !utf8.ValidString(kv.AsString()) {
				return nil, h.errAt(it.KeyExpr.Range().Start, "key is not valid UTF-8")
			}
			n.keys = append(n.keys, kv.AsString())
			n.keyPos = append(n.keyPos, hpos(it.KeyExpr.Range().Start))
			n.vals = append(n.vals, v)
		}
		return n, nil
	}
	for _, t := range e.Variables() {
		return nil, h.errAt(t.SourceRange().Start, "variables are not allowed here: values are literals, lists and objects")
	}
	v, diags := e.Value(nil)
	if diags.HasErrors() {
		return nil, h.constErr(e, diags)
	}
	return h.cty(v, hpos(e.Range().Start), e.Range().Start, depth)
}

func (h *hclReader) constErr(e hclsyntax.Expression, diags hcl.Diagnostics) error {
	err := diagErr(h.filename, diags).(*DecodeError)
	if err.Line == 0 {
		r := e.Range().Start
		err.Line, err.Column = r.Line, r.Column
	}
	return err
}

// cty turns a constant value into a node positioned at p.
func (h *hclReader) cty(v cty.Value, p pos, at hcl.Pos, depth int) (*node, error) {
	if depth > maxDepth {
		return nil, h.errAt(at, "nested too deeply")
	}
	if !v.IsKnown() {
		return nil, h.errAt(at, "value is not known")
	}
	if v.IsNull() {
		return &node{kind: nNull, pos: p}, nil
	}
	v, _ = v.Unmark()
	t := v.Type()
	switch {
	case t == cty.String:
		if !utf8.ValidString(v.AsString()) {
			return nil, h.errAt(at, "string is not valid UTF-8")
		}
		return &node{kind: nString, str: v.AsString(), pos: p}, nil
	case t == cty.Bool:
		return &node{kind: nBool, b: v.True(), pos: p}, nil
	case t == cty.Number:
		bf := v.AsBigFloat()
		if bf.IsInf() {
			return nil, h.errAt(at, "number out of range")
		}
		s := bf.Text('g', -1)
		if bf.IsInt() {
			s = bf.Text('f', 0)
		}
		return &node{kind: nNumber, str: s, pos: p}, nil
	case t.IsListType() || t.IsTupleType() || t.IsSetType():
		n := &node{kind: nList, pos: p}
		for it := v.ElementIterator(); it.Next(); {
			_, ev := it.Element()
			en, err := h.cty(ev, p, at, depth+1)
			if err != nil {
				return nil, err
			}
			n.list = append(n.list, en)
		}
		return n, nil
	case t.IsMapType() || t.IsObjectType():
		n := &node{kind: nObject, pos: p}
		for it := v.ElementIterator(); it.Next(); {
			k, ev := it.Element()
			if !utf8.ValidString(k.AsString()) {
				return nil, h.errAt(at, "key is not valid UTF-8")
			}
			en, err := h.cty(ev, p, at, depth+1)
			if err != nil {
				return nil, err
			}
			n.keys = append(n.keys, k.AsString())
			n.keyPos = append(n.keyPos, p)
			n.vals = append(n.vals, en)
		}
		return n, nil
	}
	return nil, h.errAt(at, "unsupported value of type %s", t.FriendlyName())
}
