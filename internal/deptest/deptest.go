// Package deptest checks the import direction of Trellis packages with
// `go list`, so that the layering in DESIGN.md stays true. It is test-only.
package deptest

import (
	"encoding/json"
	"fmt"
	"io"
	"os/exec"
	"strings"
	"testing"
)

// Module is the module path of Trellis.
const Module = "github.com/trellismesh/trellis"

// Package is what `go list -json` says of one package, the parts we read.
type Package struct {
	ImportPath string
	Imports    []string // direct imports of non-test files
	Deps       []string // transitive
}

// List returns the packages matched by patterns (e.g. "./..."), run from dir.
func List(t testing.TB, dir string, patterns ...string) []Package {
	t.Helper()
	args := append([]string{"list", "-json=ImportPath,Imports,Deps"}, patterns...)
	cmd := exec.Command("go", args...)
	cmd.Dir = dir
	out, err := cmd.Output()
	if err != nil {
		var stderr string
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = string(ee.Stderr)
		}
		t.Fatalf("go list %v: %v\n%s", patterns, err, stderr)
	}
	var pkgs []Package
	dec := json.NewDecoder(strings.NewReader(string(out)))
	for {
		var p Package
		if err := dec.Decode(&p); err == io.EOF {
			break
		} else if err != nil {
			t.Fatalf("decode go list output: %v", err)
		}
		pkgs = append(pkgs, p)
	}
	return pkgs
}

// Rule forbids packages matching From (a path relative to the module, with a
// trailing "/..." for a subtree) to import packages matching any of Deny,
// except those matching Allow. Reason is printed when it is broken.
type Rule struct {
	From   string
	Deny   []string
	Allow  []string
	Reason string
}

// Rel returns the path of p relative to the module ("" for the root), or
// p unchanged when it is outside the module.
func Rel(p string) string {
	if p == Module {
		return ""
	}
	if rest, ok := strings.CutPrefix(p, Module+"/"); ok {
		return rest
	}
	return p
}

// Match reports whether rel (module-relative) matches pattern, which is a
// module-relative path, optionally ending in "/..." for the subtree; "..."
// alone matches every package of the module.
func Match(pattern, rel string) bool {
	if pattern == "..." {
		return true
	}
	if base, ok := strings.CutSuffix(pattern, "/..."); ok {
		return rel == base || strings.HasPrefix(rel, base+"/")
	}
	return rel == pattern
}

// Check returns every direct import that breaks a rule, one line each.
func Check(pkgs []Package, rules []Rule) []string {
	var bad []string
	for _, p := range pkgs {
		from := Rel(p.ImportPath)
		for _, r := range rules {
			if !Match(r.From, from) {
				continue
			}
			for _, imp := range p.Imports {
				if !strings.HasPrefix(imp, Module) {
					continue
				}
				to := Rel(imp)
				if matchAny(r.Allow, to) || !matchAny(r.Deny, to) {
					continue
				}
				bad = append(bad, fmt.Sprintf("%s imports %s: %s", p.ImportPath, imp, r.Reason))
			}
		}
	}
	return bad
}

func matchAny(patterns []string, rel string) bool {
	for _, p := range patterns {
		if Match(p, rel) {
			return true
		}
	}
	return false
}
