package configentry

import (
	"fmt"
	"reflect"
	"regexp"
	"strconv"
	"strings"

	"github.com/hashicorp/go-bexpr"
	"github.com/hashicorp/go-bexpr/grammar"
)

// FilterInstance is what a service-resolver subset's Filter sees of one
// instance of the service: `Service.Meta.version == v1`,
// `"canary" in Service.Tags`, `Node == "host-3"`.
type FilterInstance struct {
	// Node is the name of the node the instance runs on.
	Node    string
	Service FilterService
}

// FilterService is the service instance part of a FilterInstance.
type FilterService struct {
	ID      string
	Service string
	Tags    []string
	Meta    map[string]string
	Port    int
}

// Filter is a compiled subset filter; the zero Filter (and a nil *Filter)
// matches every instance. It is safe for concurrent use.
type Filter struct {
	expr string
	eval *bexpr.Evaluator
}

// MaxFilterLength bounds the length of a filter expression.
const MaxFilterLength = 4096

// filterParseBudget bounds the parser's work on one expression. go-bexpr's
// parser backtracks, exponentially in the nesting of parentheses and nots
// ("((((((" alone takes seconds with its default budget); this budget keeps
// any expression under a few milliseconds and is far more than sensible
// filters need.
const filterParseBudget = 100000

// CompileFilter compiles a go-bexpr expression over FilterInstance. Every
// selector must name a field of FilterInstance (Meta keys are free), and
// values must suit the field (Service.Port compares with whole numbers).
// The empty expression matches everything.
func CompileFilter(expr string) (*Filter, error) {
	if strings.TrimSpace(expr) == "" {
		return &Filter{}, nil
	}
	if len(expr) > MaxFilterLength {
		return nil, fmt.Errorf("filter longer than %d characters", MaxFilterLength)
	}
	ast, err := grammar.Parse("", []byte(expr), grammar.MaxExpressions(filterParseBudget))
	if err != nil {
		return nil, fmt.Errorf("filter %q: %w", expr, err)
	}
	if err := checkFilter(ast.(grammar.Expression), nil); err != nil {
		return nil, fmt.Errorf("filter %q: %w", expr, err)
	}
	ev, err := bexpr.CreateEvaluator(expr, bexpr.WithMaxExpressions(filterParseBudget))
	if err != nil {
		return nil, fmt.Errorf("filter %q: %w", expr, err)
	}
	return &Filter{expr: expr, eval: ev}, nil
}

// String returns the expression the filter was compiled from.
func (f *Filter) String() string {
	if f == nil {
		return ""
	}
	return f.expr
}

// Match reports whether inst passes the filter. An evaluation error (which
// CompileFilter's checks make unlikely) does not match.
func (f *Filter) Match(inst FilterInstance) bool {
	if f == nil || f.eval == nil {
		return true
	}
	ok, err := f.eval.Evaluate(inst)
	return err == nil && ok
}

var filterType = reflect.TypeFor[FilterInstance]()

// filterScope binds a collection expression's names to what they stand
// for: a type (an element) or nil (a key or an index, a scalar).
type filterScope map[string]reflect.Type

var stringType = reflect.TypeFor[string]()

func checkFilter(e grammar.Expression, scope filterScope) error {
	switch x := e.(type) {
	case *grammar.UnaryExpression:
		return checkFilter(x.Operand, scope)
	case *grammar.BinaryExpression:
		if err := checkFilter(x.Left, scope); err != nil {
			return err
		}
		return checkFilter(x.Right, scope)
	case *grammar.MatchExpression:
		t, err := selectorType(x.Selector, scope)
		if err != nil {
			return err
		}
		return checkMatch(x, t)
	case *grammar.CollectionExpression:
		t, err := selectorType(x.Selector, scope)
		if err != nil {
			return err
		}
		inner := filterScope{}
		for k, v := range scope {
			inner[k] = v
		}
		nb := x.NameBinding
		switch t.Kind() {
		case reflect.Slice:
			bind(inner, nb.Default, t.Elem())
			bind(inner, nb.Value, t.Elem())
			bind(inner, nb.Index, reflect.TypeFor[int]())
		case reflect.Map:
			bind(inner, nb.Default, stringType)
			bind(inner, nb.Index, stringType)
			bind(inner, nb.Value, t.Elem())
		default:
			return fmt.Errorf("%s is not a list or a map", x.Selector)
		}
		return checkFilter(x.Inner, inner)
	}
	return fmt.Errorf("unsupported expression %T", e)
}

func bind(s filterScope, name string, t reflect.Type) {
	if name != "" {
		s[name] = t
	}
}

// selectorType follows sel through FilterInstance (or a bound name) and
// returns the type it selects.
func selectorType(sel grammar.Selector, scope filterScope) (reflect.Type, error) {
	path := sel.Path
	if len(path) == 0 {
		return nil, fmt.Errorf("empty selector")
	}
	t := filterType
	if bt, ok := scope[path[0]]; ok {
		t, path = bt, path[1:]
	}
	for i, part := range path {
		switch t.Kind() {
		case reflect.Struct:
			f, ok := t.FieldByName(part)
			if !ok || !f.IsExported() {
				return nil, fmt.Errorf("%s: unknown field %q (selectors: Node, Service.ID, Service.Service, Service.Tags, Service.Meta.<key>, Service.Port)", sel, part)
			}
			t = f.Type
		case reflect.Map:
			t = t.Elem()
		case reflect.Slice:
			if _, err := strconv.Atoi(part); err != nil {
				return nil, fmt.Errorf("%s: %q is not a list index", sel, part)
			}
			t = t.Elem()
		default:
			return nil, fmt.Errorf("%s: %s has no field %q", sel, strings.Join(sel.Path[:len(sel.Path)-len(path)+i], "."), part)
		}
	}
	return t, nil
}

// checkMatch checks that the operator suits the selected type and the value
// converts to it.
func checkMatch(x *grammar.MatchExpression, t reflect.Type) error {
	switch x.Operator {
	case grammar.MatchEqual, grammar.MatchNotEqual:
		return checkValue(x, t)
	case grammar.MatchIn, grammar.MatchNotIn, grammar.MatchContains, grammar.MatchNotContains:
		switch t.Kind() {
		case reflect.Slice:
			return checkValue(x, t.Elem())
		case reflect.Map:
			return checkValue(x, t.Key())
		case reflect.String:
			return nil
		}
		return fmt.Errorf("%s is not a list, a map or a string", x.Selector)
	case grammar.MatchMatches, grammar.MatchNotMatches:
		if t.Kind() != reflect.String {
			return fmt.Errorf("%s is not a string: matches needs one", x.Selector)
		}
		if x.Value != nil {
			if _, err := regexp.Compile(x.Value.Raw); err != nil {
				return fmt.Errorf("%s matches %q: %v", x.Selector, x.Value.Raw, err)
			}
		}
		return nil
	case grammar.MatchIsEmpty, grammar.MatchIsNotEmpty:
		switch t.Kind() {
		case reflect.Slice, reflect.Map, reflect.String:
			return nil
		}
		return fmt.Errorf("%s cannot be empty: it is not a list, a map or a string", x.Selector)
	}
	return nil
}

func checkValue(x *grammar.MatchExpression, t reflect.Type) error {
	if x.Value == nil {
		return nil
	}
	raw := x.Value.Raw
	switch t.Kind() {
	case reflect.String:
		return nil
	case reflect.Int:
		if _, err := strconv.ParseInt(raw, 10, 64); err != nil {
			return fmt.Errorf("%s is a number: %q is not one", x.Selector, raw)
		}
		return nil
	case reflect.Bool:
		if _, err := strconv.ParseBool(raw); err != nil {
			return fmt.Errorf("%s is true or false: %q is neither", x.Selector, raw)
		}
		return nil
	}
	return fmt.Errorf("%s cannot be compared with a value: it is a %s", x.Selector, t.Kind())
}
