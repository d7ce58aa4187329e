package httpapi

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/trellismesh/trellis/internal/retry"
)

// FuzzConnectWrites drives the intention and CA configuration writes with
// arbitrary bodies: they must never panic and never answer 5xx to bad input.
func FuzzConnectWrites(f *testing.F) {
	for _, seed := range []string{
		`{"SourceName": "web", "DestinationName": "db", "Action": "allow", "Meta": {"k": "v"}}`,
		`{"SourceName": "*", "DestinationName": "*", "Action": "deny", "Description": "x"}`,
		`{"SourceNS": "default", "SourceName": "a", "DestinationNS": "x", "DestinationName": "b", "Action": "allow"}`,
		`{"SourceName": "a", "DestinationName": "b", "Permissions": [{"Action": "allow"}], "SourceType": "consul"}`,
		`{"Provider": "consul", "Config": {"LeafCertTTL": "24h", "PrivateKeyType": "ec", "PrivateKeyBits": 256}}`,
		`{"Config": {"LeafCertTTL": 3600, "leaf_cert_ttl": "1h"}}`,
		`{"Config": {"RootCert": "-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----", "PrivateKey": "x"}}`,
		`{"Config": {"RotationPeriod": "1h"}, "State": {"a": "b"}}`,
		`{}`, `[]`, `null`, `{"Config": null}`, `{"Config": {"LeafCertTTL": 1e300}}`,
	} {
		f.Add(seed)
	}
	_, srv, cc, _ := startAPIOnce(f)
	retry.Run(f, func(r *retry.R) {
		if roots, _, err := cc.Connect().CARoots(nil); err != nil || roots.ActiveRootID == "" {
			r.Fatalf("no CA yet: %v", err)
		}
	})
	targets := []struct{ method, path string }{
		{http.MethodPost, "/v1/connect/intentions"},
		{http.MethodPut, "/v1/connect/intentions/exact?source=web&destination=db"},
		{http.MethodPut, "/v1/connect/ca/configuration"},
		{http.MethodPost, "/v1/agent/connect/authorize"},
	}
	f.Fuzz(func(t *testing.T, body string) {
		for _, tg := range targets {
			req := httptest.NewRequest(tg.method, tg.path, strings.NewReader(body))
			rec := httptest.NewRecorder()
			srv.Handler().ServeHTTP(rec, req)
			if rec.Code >= 500 {
				t.Fatalf("%s %s body %q: %d %s", tg.method, tg.path, body, rec.Code, rec.Body.String())
			}
		}
	})
}
