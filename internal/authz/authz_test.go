package authz

import (
	"errors"
	"strings"
	"testing"
)

func TestRequest_StringAndDenied(t *testing.T) {
	r := Request{Token: "secret", Resource: Service, Name: "web", Access: Write}
	if got := r.String(); got != "service:write web" {
		t.Errorf("String() = %q", got)
	}
	err := Denied(r)
	if !errors.Is(err, ErrDenied) || err.Error() != "Permission denied: service:write web" || strings.Contains(err.Error(), "secret") {
		t.Errorf("Denied: %v", err)
	}
	if got := (Request{Resource: Operator, Access: Read}).String(); got != "operator:read" {
		t.Errorf("without a name: %q", got)
	}
	if err := (AllowAll{}).Authorize(t.Context(), r); err != nil {
		t.Errorf("AllowAll refused: %v", err)
	}
}
