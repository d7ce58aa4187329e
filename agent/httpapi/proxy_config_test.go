package httpapi

import (
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/trellismesh/trellis/api"
)

// An agent that runs no such proxy answers 404 naming the ID. (The answer
// of a running proxy is tested at the repository root, against a dev
// agent: cli_proxy_config_test.go.)
func TestAgentProxyConfig_unknown(t *testing.T) {
	t.Parallel()
	_, _, _, client := startAPI(t)
	_, _, err := client.Agent().ProxyConfig("nope-sidecar-proxy", nil)
	var se *api.StatusError
	if !errors.As(err, &se) || se.Code != http.StatusNotFound || !strings.Contains(se.Body, `no proxy "nope-sidecar-proxy" on this agent`) {
		t.Fatalf("ProxyConfig of an unknown ID: %v, want 404 naming it", err)
	}
}
