package connect

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

func TestComputePrecedence(t *testing.T) {
	t.Parallel()
	tests := []struct {
		src, dst string
		want     int
	}{
		{"web", "db", PrecedenceExactExact},
		{"*", "db", PrecedenceWildcardSrcExact},
		{"web", "*", PrecedenceExactSrcWildcard},
		{"*", "*", PrecedenceWildcardWildcard},
	}
	for _, test := range tests {
		if got := ComputePrecedence(test.src, test.dst); got != test.want {
			t.Errorf("ComputePrecedence(%q, %q) got %d, want %d", test.src, test.dst, got, test.want)
		}
	}
	// exact/exact beats */exact beats exact/* beats */*.
	order := []int{PrecedenceExactExact, PrecedenceWildcardSrcExact, PrecedenceExactSrcWildcard, PrecedenceWildcardWildcard}
	for i := 1; i < len(order); i++ {
		if order[i-1] <= order[i] {
			t.Errorf("precedence %d is not above %d", order[i-1], order[i])
		}
	}
}

func TestValidateServiceName(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		ok   bool
	}{
		{"*", true},
		{"web", true},
		{"a", true},
		{"Web-API_v2.eu", true},
		{"9lives", true},
		{strings.Repeat("a", 255), true},
		{"", false},
		{strings.Repeat("a", 256), false},
		{"-web", false},
		{"web-", false},
		{".web", false},
		{"web_", false},
		{"we b", false},
		{"web/admin", false},
		{"web*", false},
		{"**", false},
		{"wéb", false},
		{"web\n", false},
	}
	for _, test := range tests {
		err := ValidateServiceName("SourceName", test.name)
		if test.ok != (err == nil) {
			t.Errorf("ValidateServiceName(%q) got %v, want ok=%v", test.name, err, test.ok)
		}
		var fe *FieldError
		if err != nil && (!errors.As(err, &fe) || fe.Field != "SourceName") {
			t.Errorf("ValidateServiceName(%q) got %#v, want a *FieldError for SourceName", test.name, err)
		}
	}
}

func TestIntention_Validate(t *testing.T) {
	t.Parallel()
	valid := func() *Intention {
		return &Intention{SourceName: "web", DestinationName: "db", Action: IntentionAllow}
	}
	bigMeta := map[string]string{}
	for i := range 65 {
		bigMeta[fmt.Sprint("k", i)] = "v"
	}
	tests := []struct {
		name      string
		edit      func(*Intention)
		wantField string // "" means valid
	}{
		{"allow", func(*Intention) {}, ""},
		{"deny", func(i *Intention) { i.Action = IntentionDeny }, ""},
		{"wildcards", func(i *Intention) { i.SourceName, i.DestinationName = "*", "*" }, ""},
		{"full meta and description", func(i *Intention) {
			i.Description = strings.Repeat("d", 512)
			i.Meta = map[string]string{strings.Repeat("k", 128): strings.Repeat("v", 512)}
		}, ""},
		{"no source", func(i *Intention) { i.SourceName = "" }, "SourceName"},
		{"bad source", func(i *Intention) { i.SourceName = "web*" }, "SourceName"},
		{"no destination", func(i *Intention) { i.DestinationName = "" }, "DestinationName"},
		{"bad destination", func(i *Intention) { i.DestinationName = "db/x" }, "DestinationName"},
		{"no action", func(i *Intention) { i.Action = "" }, "Action"},
		{"upper-case action", func(i *Intention) { i.Action = "Allow" }, "Action"},
		{"unknown action", func(i *Intention) { i.Action = "permit" }, "Action"},
		{"long description", func(i *Intention) { i.Description = strings.Repeat("d", 513) }, "Description"},
		{"too much meta", func(i *Intention) { i.Meta = bigMeta }, "Meta"},
		{"empty meta key", func(i *Intention) { i.Meta = map[string]string{"": "v"} }, "Meta"},
		{"long meta key", func(i *Intention) { i.Meta = map[string]string{strings.Repeat("k", 129): "v"} }, "Meta"},
		{"long meta value", func(i *Intention) { i.Meta = map[string]string{"k": strings.Repeat("v", 513)} }, "Meta"},
	}
	for _, test := range tests {
		t.Run(test.name, func(t *testing.T) {
			t.Parallel()
			ixn := valid()
			test.edit(ixn)
			err := ixn.Validate()
			if test.wantField == "" {
				if err != nil {
					t.Fatalf("Validate() got %v, want nil", err)
				}
				return
			}
			var fe *FieldError
			if !errors.As(err, &fe) || fe.Field != test.wantField {
				t.Fatalf("Validate() got %v, want a FieldError for %s", err, test.wantField)
			}
			if !strings.HasPrefix(err.Error(), test.wantField+": ") {
				t.Errorf("Validate() error %q does not start with the field", err)
			}
		})
	}
}

func TestIntention_Clone(t *testing.T) {
	t.Parallel()
	var nilIxn *Intention
	if nilIxn.Clone() != nil {
		t.Error("nil.Clone() is not nil")
	}
	orig := &Intention{ID: "1", SourceName: "web", DestinationName: "db", Action: IntentionAllow, Meta: map[string]string{"a": "b"}}
	c := orig.Clone()
	if c == orig || c.ID != "1" || c.Meta["a"] != "b" {
		t.Fatalf("Clone() got %+v", c)
	}
	c.Meta["a"] = "changed"
	c.SourceName = "api"
	if orig.Meta["a"] != "b" || orig.SourceName != "web" {
		t.Errorf("changing the clone changed the original: %+v", orig)
	}
}
