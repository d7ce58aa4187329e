package configentry

import (
	"errors"
	"testing"
)

func TestPositions_LocateValidationErrors(t *testing.T) {
	t.Parallel()
	src := []byte(`kind = "service-router"
name = "web"
routes {
  match {
    http {
      path_prefix = "/a"
    }
  }
  destination {
    service = "api"
  }
}
routes {
  match {
    http {
      path_prefix = "b"
    }
  }
  destination {
    service = "api"
    num_retries = 3
  }
}
`)
	e, pos, err := DecodeWithPositions(src, "router.hcl", false)
	if err != nil {
		t.Fatal(err)
	}
	e.Normalize()
	verr := e.Validate()
	var fe *FieldError
	if !errors.As(verr, &fe) {
		t.Fatalf("validation error %v (%T), want a *FieldError", verr, verr)
	}
	if got := pos.Prefix(fe.Field); got != "router.hcl:16:7" {
		t.Errorf("%s located at %q, want router.hcl:16:7", fe.Field, got)
	}
	for field, want := range map[string]string{
		"Routes[1].Destination.NumRetries":         "router.hcl:21:5",
		"Routes[1].Destination.RetryOnStatusCodes": "router.hcl:19:3", // not written: its parent
		"Routes[0]":    "router.hcl:3:1",
		"Nothing.Here": "router.hcl:1:1",
	} {
		if got := pos.Prefix(field); got != want {
			t.Errorf("%s at %q, want %q", field, got, want)
		}
	}

	// JSON sources locate the same way.
	_, jpos, err := DecodeWithPositions([]byte("{\n  \"Kind\": \"service-defaults\",\n  \"Name\": \"web\",\n  \"Protocol\": \"smtp\"\n}"), "web.json", false)
	if err != nil {
		t.Fatal(err)
	}
	if got := jpos.Prefix("Protocol"); got != "web.json:4:3" {
		t.Errorf("Protocol at %q, want web.json:4:3", got)
	}
	var none *Positions
	if _, _, ok := none.Locate("Name"); ok {
		t.Error("nil positions located something")
	}
}
