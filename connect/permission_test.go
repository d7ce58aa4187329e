package connect

import (
	"errors"
	"testing"
)

func TestIntentionPermissionsValidate(t *testing.T) {
	ok := &Intention{SourceName: "web", DestinationName: "api", Permissions: []*IntentionPermission{
		{Action: IntentionDeny, HTTP: &IntentionHTTPPermission{PathPrefix: "/users", Methods: []string{"delete"}}},
	}}
	if err := ok.Validate(); err != nil {
		t.Fatalf("valid L7 intention refused: %v", err)
	}
	if got := ok.Permissions[0].HTTP.Methods[0]; got != "DELETE" {
		t.Errorf("method not upper-cased: %q", got)
	}
	for name, c := range map[string]struct {
		p     *IntentionPermission
		field string
	}{
		"bad action":   {&IntentionPermission{Action: "maybe", HTTP: &IntentionHTTPPermission{PathExact: "/"}}, "Permissions[0].Action"},
		"no http":      {&IntentionPermission{Action: IntentionAllow}, "Permissions[0].HTTP"},
		"two paths":    {&IntentionPermission{Action: IntentionAllow, HTTP: &IntentionHTTPPermission{PathExact: "/a", PathPrefix: "/b"}}, "Permissions[0].HTTP"},
		"relative":     {&IntentionPermission{Action: IntentionAllow, HTTP: &IntentionHTTPPermission{PathPrefix: "users"}}, "Permissions[0].HTTP.PathPrefix"},
		"bad regex":    {&IntentionPermission{Action: IntentionAllow, HTTP: &IntentionHTTPPermission{PathRegex: "(("}}, "Permissions[0].HTTP.PathRegex"},
		"bad method":   {&IntentionPermission{Action: IntentionAllow, HTTP: &IntentionHTTPPermission{Methods: []string{"FETCH"}}}, "Permissions[0].HTTP.Methods[0]"},
		"header twice": {&IntentionPermission{Action: IntentionAllow, HTTP: &IntentionHTTPPermission{Header: []IntentionHTTPHeaderPermission{{Name: "x", Exact: "a", Prefix: "b"}}}}, "Permissions[0].HTTP.Header[0]"},
		"matches all":  {&IntentionPermission{Action: IntentionAllow, HTTP: &IntentionHTTPPermission{}}, "Permissions[0].HTTP"},
	} {
		ixn := &Intention{SourceName: "web", DestinationName: "api", Permissions: []*IntentionPermission{c.p}}
		var fe *FieldError
		if err := ixn.Validate(); !errors.As(err, &fe) || fe.Field != c.field {
			t.Errorf("%s: got %v, want a field error on %s", name, err, c.field)
		}
	}
	both := &Intention{SourceName: "web", DestinationName: "api", Action: IntentionAllow, Permissions: ok.Permissions}
	if err := both.Validate(); err == nil {
		t.Error("an intention with both Action and Permissions was accepted")
	}
}
