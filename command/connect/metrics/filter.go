package connectmetrics

import (
	"fmt"
	"reflect"
	"strings"

	"github.com/hashicorp/go-bexpr/grammar"

	"github.com/trellismesh/trellis/api"
)

// Bounds on the local parse of -filter, as the agent's: go-bexpr's parser
// backtracks, so it works on a budget; longer filters are the agent's to
// refuse.
const (
	maxFilterLength   = 4096
	filterParseBudget = 100000
)

// checkFilter refuses a -filter whose selectors name no field of an edge,
// before the agent is asked: the agent's answer for one is go-bexpr's
// ("error finding value in datum: /Bogus at part 0: ..."), and only when
// some edge exists. A filter that does not parse is left to the agent,
// which says why.
func checkFilter(expr string) error {
	if expr == "" || len(expr) > maxFilterLength {
		return nil
	}
	parsed, err := grammar.Parse("", []byte(expr), grammar.MaxExpressions(filterParseBudget))
	if err != nil {
		return nil
	}
	e, ok := parsed.(grammar.Expression)
	if !ok {
		return nil
	}
	for _, sel := range selectors(e, nil) {
		if !resolves(reflect.TypeFor[api.MeshEdge](), sel.Path) {
			return fmt.Errorf("-filter %q: %s is not a field of an edge (the fields are %s)", expr, sel.String(), strings.Join(edgeFields(), ", "))
		}
	}
	return nil
}

// selectors lists the selectors of e's match expressions.
func selectors(e grammar.Expression, out []grammar.Selector) []grammar.Selector {
	switch x := e.(type) {
	case *grammar.UnaryExpression:
		return selectors(x.Operand, out)
	case *grammar.BinaryExpression:
		return selectors(x.Right, selectors(x.Left, out))
	case *grammar.MatchExpression:
		return append(out, x.Selector)
	case *grammar.CollectionExpression:
		// The inner expression is over the bound names; an edge has no
		// collections, so the selector itself is what can be wrong.
		return append(out, x.Selector)
	}
	return out
}

// resolves reports whether path names a field of t, through structs and
// pointers to them, as go-bexpr looks fields up (by Go name).
func resolves(t reflect.Type, path []string) bool {
	for _, p := range path {
		for t.Kind() == reflect.Pointer {
			t = t.Elem()
		}
		if t.Kind() != reflect.Struct {
			return false
		}
		f, ok := t.FieldByName(p)
		if !ok || !f.IsExported() {
			return false
		}
		t = f.Type
	}
	return true
}

// edgeFields lists the selectors an edge has: Source, ...,
// Outbound.Requests, ...
func edgeFields() []string {
	var out []string
	var walk func(t reflect.Type, prefix string)
	walk = func(t reflect.Type, prefix string) {
		for t.Kind() == reflect.Pointer {
			t = t.Elem()
		}
		for f := range t.Fields() {
			if !f.IsExported() {
				continue
			}
			ft := f.Type
			for ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Struct {
				walk(ft, prefix+f.Name+".")
				continue
			}
			out = append(out, prefix+f.Name)
		}
	}
	walk(reflect.TypeFor[api.MeshEdge](), "")
	return out
}
