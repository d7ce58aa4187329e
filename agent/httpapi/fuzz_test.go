package httpapi

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// FuzzServiceRegister drives PUT /v1/agent/service/register with arbitrary
// bodies: it must never panic and never answer 5xx to bad input.
func FuzzServiceRegister(f *testing.F) {
	for _, seed := range []string{
		`{"Name": "web", "Port": 8080, "Tags": ["v1"], "Meta": {"env": "prod"}}`,
		`{"ID": "web-1", "Name": "web", "Address": "10.0.0.1", "Port": 80, "Check": {"HTTP": "http://127.0.0.1:80/health", "Interval": "10s", "Timeout": "1s"}}`,
		`{"Name": "db", "Checks": [{"TTL": "30s", "Status": "passing"}, {"TCP": "127.0.0.1:5432", "Interval": "5s"}]}`,
		`{"Name": "api", "Weights": {"Passing": 10, "Warning": 1}, "EnableTagOverride": true, "TaggedAddresses": {"lan": {"Address": "10.0.0.1", "Port": 80}}}`,
		`{"Name": "x", "Check": {"Args": ["/bin/true"], "Interval": "10s"}}`,
		`{"Name": "x", "Check": {"DeregisterCriticalServiceAfter": 90000000000, "TTL": "1m"}}`,
		`{"Kind": "connect-proxy", "Name": "web-proxy", "Proxy": {"DestinationServiceName": "web", "Upstreams": [{"DestinationName": "db", "LocalBindPort": 9191}]}}`,
		`{}`, `[]`, `null`, `{"Name": 5}`,
	} {
		f.Add(seed)
	}
	_, srv, _, _ := startAPIOnce(f)
	f.Fuzz(func(t *testing.T, body string) {
		req := httptest.NewRequest(http.MethodPut, "/v1/agent/service/register", strings.NewReader(body))
		rec := httptest.NewRecorder()
		srv.Handler().ServeHTTP(rec, req)
		if rec.Code >= 500 {
			t.Fatalf("body %q: %d %s", body, rec.Code, rec.Body.String())
		}
	})
}
