package connectmetrics

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"

	"github.com/hashicorp/cli"
)

// fakeAgent answers /v1/connect/metrics with body (or status code) and
// records the queries it was asked.
func fakeAgent(t *testing.T, code int, body string) (addr string, asked func() []url.Values) {
	t.Helper()
	var mu sync.Mutex
	var qs []url.Values
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1/connect/metrics" {
			http.NotFound(w, r)
			return
		}
		mu.Lock()
		qs = append(qs, r.URL.Query())
		mu.Unlock()
		w.WriteHeader(code)
		w.Write([]byte(body))
	}))
	t.Cleanup(srv.Close)
	return srv.URL, func() []url.Values {
		mu.Lock()
		defer mu.Unlock()
		return qs
	}
}

func runCmd(args ...string) (code int, stdout, stderr string) {
	ui := cli.NewMockUi()
	code = New(ui).Run(args)
	return code, ui.OutputWriter.String(), ui.ErrorWriter.String()
}

func TestRun_Query(t *testing.T) {
	const answer = `{"Window": "1m0s", "Edges": [{"Source": "web", "Destination": "api", "Protocol": "tcp", "Unit": "connections",
		"Outbound": {"Requests": 60, "RequestsPerSecond": 1, "SuccessRate": 1, "P50Ms": 0.5, "P99Ms": 1.5, "Reporters": 1}}]}`
	addr, asked := fakeAgent(t, http.StatusOK, answer)
	for _, tc := range []struct {
		args []string
		want url.Values
	}{
		{[]string{"-http-addr", addr}, url.Values{"window": {"30s"}}},
		{[]string{"-http-addr", addr, "-window", "1m", "web"}, url.Values{"window": {"1m0s"}, "service": {"web"}}},
		{[]string{"-http-addr", addr, "-service", "web", "-filter", "Protocol == tcp"}, url.Values{"window": {"30s"}, "service": {"web"}, "filter": {"Protocol == tcp"}}},
		// The same service both ways is one service.
		{[]string{"-http-addr", addr, "-service", "web", "web"}, url.Values{"window": {"30s"}, "service": {"web"}}},
	} {
		code, out, errOut := runCmd(tc.args...)
		if code != 0 || !strings.Contains(out, "web     api          tcp    1.0 conn/s  100%     0.500ms  1.50ms  outbound") {
			t.Errorf("%v: exit %d\n%s%s", tc.args, code, out, errOut)
		}
		qs := asked()
		if got := qs[len(qs)-1]; got.Encode() != tc.want.Encode() {
			t.Errorf("%v asked %v, want %v", tc.args, got, tc.want)
		}
	}
}

func TestRun_Empty(t *testing.T) {
	addr, _ := fakeAgent(t, http.StatusOK, `{"Window": "30s", "Edges": []}`)
	code, out, errOut := runCmd("-http-addr", addr)
	if code != 0 || out != "No traffic through the mesh in the last 30s (figures arrive every telemetry.mesh_metrics_interval, 5s by default).\n" {
		t.Errorf("exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	code, out, _ = runCmd("-http-addr", addr, "-format", "json")
	if code != 0 || !strings.Contains(out, `"Edges": []`) {
		t.Errorf("-format json: exit %d, %q", code, out)
	}
}

func TestRun_Errors(t *testing.T) {
	addr, asked := fakeAgent(t, http.StatusBadRequest, "invalid filter: Protocol ==: unexpected end")
	for _, tc := range []struct {
		args []string
		err  string
	}{
		{[]string{"-window", "soon"}, `-window "soon": want a duration`},
		{[]string{"-window", "0s"}, "-window 0s: want more than 0"},
		{[]string{"-window", "-5s"}, "-window -5s: want more than 0"},
		{[]string{"-window", "500us"}, "-window 500us: want at least 1ms"},
		{[]string{"-window", "6m"}, "-window 6m: at most 5m"},
		{[]string{"-format", "yaml"}, `-format "yaml": want table or json`},
		{[]string{"a", "b"}, "takes at most one argument"},
		{[]string{"web", "-format", "json"}, "flag -format comes after"},
		{[]string{"-service", "web", "api"}, `-service "web" and the argument "api"`},
		{[]string{"-nope"}, "flag provided but not defined: -nope"},
	} {
		code, out, errOut := runCmd(append([]string{"-http-addr", addr}, tc.args...)...)
		if code != 1 || out != "" || !strings.Contains(errOut, tc.err) || !strings.Contains(errOut, "Usage: trellis connect metrics") {
			t.Errorf("%v: exit %d, stdout %q, stderr %q; want exit 1 and %q with the usage", tc.args, code, out, errOut, tc.err)
		}
	}
	if n := len(asked()); n != 0 {
		t.Errorf("bad flags asked the agent %d times", n)
	}

	code, _, errOut := runCmd("-http-addr", addr, "-filter", "Protocol ==")
	if code != 1 || !strings.Contains(errOut, "Error reading the mesh metrics: the agent answered 400: invalid filter") {
		t.Errorf("HTTP error: exit %d, %q", code, errOut)
	}
	code, _, errOut = runCmd("-http-addr", "127.0.0.1:1")
	if code != 1 || !strings.Contains(errOut, "Error reading the mesh metrics") || !strings.Contains(errOut, "connection refused") {
		t.Errorf("no agent: exit %d, %q", code, errOut)
	}
}

func TestHelp(t *testing.T) {
	c := New(cli.NewMockUi())
	for _, want := range []string{"Usage: trellis connect metrics [options] [SERVICE]", "-http-addr=<address>", "-service=<name>",
		"-window=<duration>", "-filter=<expression>", "-format=<format>"} {
		if !strings.Contains(c.Help(), want) {
			t.Errorf("help lacks %q:\n%s", want, c.Help())
		}
	}
	if code, out, _ := runCmd("-h"); code != 0 || !strings.Contains(out, "Usage: trellis connect metrics") {
		t.Errorf("-h: exit %d, %q", code, out)
	}
}

// TestRun_FilterUnknownField: a selector that names no field of an edge is
// refused before the agent is asked, naming the fields, instead of
// go-bexpr's "error finding value in datum".
func TestRun_FilterUnknownField(t *testing.T) {
	addr, asked := fakeAgent(t, http.StatusOK, `{"Window": "30s", "Edges": []}`)
	for _, tc := range []struct{ filter, err string }{
		{"Bogus == 1", `-filter "Bogus == 1": Bogus is not a field of an edge (the fields are Source, Destination, Protocol, Unit, Outbound.Requests,`},
		{"Protocol == http and Outbound.Latency == 5", "Outbound.Latency is not a field of an edge"},
		{"not (Source.Name == web)", "Source.Name is not a field of an edge"},
	} {
		code, out, errOut := runCmd("-http-addr", addr, "-filter", tc.filter)
		if code != 1 || out != "" || !strings.Contains(errOut, tc.err) {
			t.Errorf("-filter %q: exit %d, stdout %q, stderr %q; want exit 1 and %q", tc.filter, code, out, errOut, tc.err)
		}
	}
	if n := len(asked()); n != 0 {
		t.Errorf("unknown fields asked the agent %d times", n)
	}
	for _, ok := range []string{"Protocol == http", "Outbound.P99Ms == 5 or Inbound.Failures != 0", "web in Source"} {
		if code, _, errOut := runCmd("-http-addr", addr, "-filter", ok); code != 0 {
			t.Errorf("-filter %q: exit %d, %s", ok, code, errOut)
		}
	}
}
