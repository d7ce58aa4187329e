package agent_test

import (
	"context"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/trellismesh/trellis/internal/authz"
	"github.com/trellismesh/trellis/internal/testcluster"
)

// tokenRecorder allows everything and keeps what it was asked with a token.
type tokenRecorder struct {
	mu   sync.Mutex
	seen []authz.Request
}

func (r *tokenRecorder) Authorize(_ context.Context, req authz.Request) error {
	if req.Token != "" {
		r.mu.Lock()
		r.seen = append(r.seen, req)
		r.mu.Unlock()
	}
	return nil
}

func (r *tokenRecorder) take() []authz.Request {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := r.seen
	r.seen = nil
	return out
}

// The caller's token reaches the Authorizer twice: at the HTTP route, and
// with the RPC the route makes (a read and a write).
func TestAgent_tokenReachesTheRPCAuthorizer(t *testing.T) {
	t.Parallel()
	rec := &tokenRecorder{}
	a := testcluster.StartAgent(t, testcluster.Options{Name: "authz", Authorizer: rec})
	do := func(method, path, body string) {
		t.Helper()
		req, err := http.NewRequest(method, "http://"+a.HTTPAddr()+path, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("X-Consul-Token", "tok-1")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("%s %s: %d", method, path, resp.StatusCode)
		}
	}
	rec.take()
	do(http.MethodGet, "/v1/health/service/web", "")
	want := []authz.Request{
		{Token: "tok-1", Resource: authz.Service, Name: "web", Access: authz.Read}, // the route
		{Token: "tok-1", Resource: authz.Service, Access: authz.Read},              // Health.ServiceNodes
	}
	if got := rec.take(); !slices.Equal(got, want) {
		t.Errorf("a read asked %+v, want %+v", got, want)
	}
	do(http.MethodPut, "/v1/catalog/register", `{"Node": "ext-1", "Address": "10.0.0.9"}`)
	want = []authz.Request{
		{Token: "tok-1", Resource: authz.Node, Access: authz.Write}, // the route
		{Token: "tok-1", Resource: authz.Node, Access: authz.Write}, // Catalog.Register
	}
	if got := rec.take(); !slices.Equal(got, want) {
		t.Errorf("a write asked %+v, want %+v", got, want)
	}
}
