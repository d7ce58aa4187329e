package httpapi

import (
	"context"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"testing"

	"github.com/trellismesh/trellis/internal/authz"
)

// denyAll refuses everything and records what it was asked.
type denyAll struct {
	mu   sync.Mutex
	seen []authz.Request
}

func (d *denyAll) Authorize(_ context.Context, req authz.Request) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.seen = append(d.seen, req)
	return authz.Denied(req)
}

func (d *denyAll) last() (authz.Request, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.seen) == 0 {
		return authz.Request{}, false
	}
	r := d.seen[len(d.seen)-1]
	d.seen = nil
	return r, true
}

// Every route asks the Authorizer before its handler runs (the status
// endpoints excepted), naming the resource its table entry says, with the
// caller's token; a refusal is a 403 and changes nothing.
func TestAuthorizer_everyRouteAsks(t *testing.T) {
	t.Parallel()
	a, _, _, _ := startAPI(t)
	deny := &denyAll{}
	hs := serveAPI(t, a, Config{Authorizer: deny, EnableDebug: true})
	base := "http://" + hs.Addrs()[0].String()
	wildcard := regexp.MustCompile(`\{[a-z]+\}`)
	for _, rt := range routes {
		access, ok := accessOf(rt.pattern)
		if !ok {
			t.Errorf("%s has no entry in routeAccesses", rt.pattern)
			continue
		}
		method := rt.methods[len(rt.methods)-1] // the write, when there is one
		path := wildcard.ReplaceAllString(rt.pattern, "web")
		req, err := http.NewRequest(method, base+path, strings.NewReader("{}"))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("X-Consul-Token", "secret-token")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		asked, wasAsked := deny.last()
		if access.resource == "" {
			if wasAsked || resp.StatusCode == http.StatusForbidden {
				t.Errorf("%s %s is public but asked %v (status %d)", method, rt.pattern, asked, resp.StatusCode)
			}
			continue
		}
		if resp.StatusCode != http.StatusForbidden || !wasAsked {
			t.Errorf("%s %s: status %d, asked %v; want 403 after asking", method, rt.pattern, resp.StatusCode, wasAsked)
			continue
		}
		wantAccess := authz.Read
		switch {
		case access.access != 0:
			wantAccess = access.access
		case method != http.MethodGet:
			wantAccess = authz.Write
		}
		if asked.Resource != access.resource || asked.Access != wantAccess || asked.Token != "secret-token" {
			t.Errorf("%s %s asked %+v, want %s:%s with the token", method, rt.pattern, asked, access.resource, wantAccess)
		}
		if access.name != "" && strings.Contains(rt.pattern, "{"+access.name+"}") && asked.Name != "web" {
			t.Errorf("%s %s asked about %q, want the path's web", method, rt.pattern, asked.Name)
		}
	}
	// The profiler takes operator:read.
	if resp, err := http.Get(base + "/debug/pprof/cmdline"); err != nil {
		t.Fatal(err)
	} else if resp.Body.Close(); resp.StatusCode != http.StatusForbidden {
		t.Errorf("pprof without operator:read: %d", resp.StatusCode)
	}
	if asked, _ := deny.last(); asked.Resource != authz.Operator || asked.Access != authz.Read {
		t.Errorf("pprof asked %+v, want operator:read", asked)
	}
	// A leaf, with its private key, takes service:write.
	req, _ := http.NewRequest(http.MethodGet, base+"/v1/agent/connect/ca/leaf/web", nil)
	if resp, err := http.DefaultClient.Do(req); err != nil {
		t.Fatal(err)
	} else {
		resp.Body.Close()
	}
	if asked, _ := deny.last(); asked.Resource != authz.Service || asked.Access != authz.Write || asked.Name != "web" {
		t.Errorf("GET of a leaf asked %+v, want service:write web", asked)
	}
	// The refused registration did nothing.
	if svcs := a.LocalServices(); len(svcs) != 0 {
		t.Errorf("services after refused writes: %v", svcs)
	}
	// The token never reaches the answer.
	req, _ = http.NewRequest(http.MethodGet, base+"/v1/agent/services?token=secret-token", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	buf := make([]byte, 512)
	n, _ := resp.Body.Read(buf)
	b.Write(buf[:n])
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden || strings.Contains(b.String(), "secret-token") || !strings.Contains(b.String(), "Permission denied: service:read") {
		t.Errorf("refusal: %d %q", resp.StatusCode, b.String())
	}
}
