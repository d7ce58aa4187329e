package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/emulation"
	cdplog "github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	"github.com/trellismesh/trellis/api"
	"github.com/trellismesh/trellis/internal/retry"
	"github.com/trellismesh/trellis/internal/testcluster"
	"github.com/trellismesh/trellis/internal/testutil"
)

var chromiumOnce sync.Once

// ensureChromium installs Debian's chromium (make ui-deps) when it is not on
// PATH. The UI tests skip only under -short.
func ensureChromium(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("drives a headless chromium")
	}
	chromiumOnce.Do(func() {
		if _, err := exec.LookPath("chromium"); err == nil {
			return
		}
		if out, err := exec.Command("make", "ui-deps").CombinedOutput(); err != nil {
			t.Logf("make ui-deps: %v\n%s", err, out)
		}
	})
	p, err := exec.LookPath("chromium")
	if err != nil {
		t.Fatalf("chromium is missing and make ui-deps could not install it: %v", err)
	}
	return p
}

// browser is a headless chromium tab that records every JavaScript error.
type browser struct {
	ctx context.Context

	mu     sync.Mutex
	errors []string // guarded by mu
}

// newBrowser starts chromium with a fresh profile under t.TempDir(); it is
// stopped when the test ends.
func newBrowser(t *testing.T) *browser {
	t.Helper()
	exe := ensureChromium(t)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(),
		chromedp.ExecPath(exe), chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun,
		chromedp.Flag("disable-background-networking", true), chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true), chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.UserDataDir(t.TempDir()), chromedp.WindowSize(1280, 900))
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(func() { cancel(); cancelAlloc() })
	b := &browser{ctx: ctx}
	err := chromedp.Listen(ctx, func(ev any) {
		var msg string
		switch ev := ev.(type) {
		case *runtime.EventConsoleAPICalled:
			if ev.Type == runtime.ConsoleAPICalledTypeError || ev.Type == runtime.ConsoleAPICalledTypeAssert {
				var args []string
				for _, a := range ev.Args {
					args = append(args, string(a.Value)+a.Description)
				}
				msg = fmt.Sprintf("console.%s: %s", ev.Type, strings.Join(args, " "))
			}
		case *runtime.EventExceptionThrown:
			d := ev.ExceptionDetails
			msg = "exception: " + d.Text
			if d.Exception != nil {
				msg += " " + d.Exception.Description
			}
			msg += fmt.Sprintf(" at %s:%d:%d", d.URL, d.LineNumber, d.ColumnNumber)
		case *cdplog.EventEntryAdded:
			// Failed requests are the network's (a 404 the UI expects, or the
			// agent stopping); everything else at error level is a bug, a CSP
			// violation included.
			if ev.Entry.Level == cdplog.EntryLevelError && ev.Entry.Source != cdplog.EntrySourceNetwork {
				msg = fmt.Sprintf("log %s: %s (%s)", ev.Entry.Source, ev.Entry.Text, ev.Entry.URL)
			}
		}
		if msg != "" {
			b.mu.Lock()
			b.errors = append(b.errors, msg)
			b.mu.Unlock()
		}
	})
	if err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	if _, err := chromedp.Call(ctx, cdplog.Enable, struct{}{}); err != nil {
		t.Fatalf("enable the log domain: %v", err)
	}
	t.Cleanup(func() {
		b.mu.Lock()
		defer b.mu.Unlock()
		for _, e := range b.errors {
			t.Errorf("JavaScript error: %s", e)
		}
	})
	return b
}

// do runs steps with a timeout, failing the test with what.
func (b *browser) do(t *testing.T, what string, steps ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 20*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		dctx, dcancel := context.WithTimeout(b.ctx, 5*time.Second)
		defer dcancel()
		html, _ := chromedp.Run(dctx, chromedp.Evaluate[string](`location.href + "\n" + document.getElementById('main').innerHTML`))
		t.Fatalf("%s: %v\npage: %s", what, err, html)
	}
}

// eval evaluates a JavaScript expression.
func eval[T any](t *testing.T, b *browser, expr string) T {
	t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 20*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr))
	if err != nil {
		t.Fatalf("evaluate %s: %v", expr, err)
	}
	return v
}

// waitFor polls a JavaScript predicate on every DOM change until it holds.
func (b *browser) waitFor(t *testing.T, what, predicate string) {
	t.Helper()
	b.do(t, what, chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		_, err := chromedp.Poll[chromedp.Void](predicate, chromedp.WithPollingMutation(), chromedp.WithPollingTimeout(15*time.Second))(ctx, tg)
		return err
	}))
}

// screenshotDir keeps the screenshots: $TRELLIS_UI_SCREENSHOTS, else a new
// temporary directory that outlives the test (its path is logged).
func screenshotDir(t *testing.T) string {
	t.Helper()
	if d := os.Getenv("TRELLIS_UI_SCREENSHOTS"); d != "" {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		return d
	}
	d, err := os.MkdirTemp("", "trellis-ui-screenshots-")
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func (b *browser) screenshot(t *testing.T, dir, name string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 20*time.Second)
	defer cancel()
	buf, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot %s: %v", name, err)
	}
	p := filepath.Join(dir, name+".png")
	if err := os.WriteFile(p, buf, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s", p)
}

// labelled fails when a form control on the page has no label.
const unlabelled = `[...document.querySelectorAll('input:not([type=hidden]), select, textarea')]
	.filter((e) => !e.labels?.length && !e.getAttribute('aria-label')).map((e) => e.outerHTML)`

// uiServices is the dev agent's configuration: web (with an upstream to api
// on the first %d), api (whose app listens on the second %d) and db, and
// fast golden-metrics reports.
const uiServices = `
telemetry {
  mesh_metrics_interval = "200ms"
}
service {
  name = "web"
  port = 8080
  tags = ["frontend", "v1"]
  check {
    ttl    = "1h"
    status = "passing"
  }
  connect {
    sidecar_service {
      proxy {
        upstreams = [{ destination_name = "api", local_bind_port = %d }]
      }
    }
  }
}
service {
  name = "api"
  port = %d
  tags = ["backend"]
  check {
    ttl    = "1h"
    status = "warning"
  }
  connect {
    sidecar_service {}
  }
}
service {
  name = "db"
  port = 5432
  check {
    ttl    = "1h"
    status = "critical"
  }
}
`

// TestUI drives the web UI in headless chromium against a dev agent.
func TestUI(t *testing.T) {
	if !testing.Short() {
		t.Parallel()
	}
	b := newBrowser(t)
	upPort := testutil.FreePorts(t, 1)[0]
	a := testcluster.StartAgent(t, testcluster.Options{Name: "ui-node", HCL: fmt.Sprintf(uiServices, upPort, serveApp(t, "api"))})
	addr := a.HTTPAddr()
	base := "http://" + addr
	waitForCA(t, addr)
	shots := screenshotDir(t)
	sendUITraffic(t, addr, fmt.Sprintf("127.0.0.1:%d", upPort))

	// The server side: content types, caching, deep links, the redirect.
	for _, c := range []struct{ path, ctype string }{
		{"/ui/", "text/html"}, {"/ui/services/web", "text/html"}, {"/ui/js/main.js", "text/javascript"}, {"/ui/css/app.css", "text/css"},
	} {
		resp, err := http.Get(base + c.path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), c.ctype) || resp.Header.Get("ETag") == "" {
			t.Errorf("GET %s: %d %q ETag %q", c.path, resp.StatusCode, resp.Header.Get("Content-Type"), resp.Header.Get("ETag"))
		}
	}

	// Config entries, for the config page and the routing in words.
	for _, e := range []string{
		`{"Kind": "service-defaults", "Name": "web", "Protocol": "http"}`,
		`{"Kind": "service-defaults", "Name": "api", "Protocol": "http"}`,
		`{"Kind": "service-router", "Name": "web", "Routes": [{"Match": {"HTTP": {"PathPrefix": "/admin"}}, "Destination": {"Service": "api", "NumRetries": 2}}]}`,
		`{"Kind": "service-resolver", "Name": "api", "DefaultSubset": "v1", "Subsets": {"v1": {"Filter": "Service.Meta.version == v1"}}}`,
	} {
		req, _ := http.NewRequest(http.MethodPut, base+"/v1/config", strings.NewReader(e))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("PUT /v1/config %s: %s", e, resp.Status)
		}
	}

	// Services list: every service with its health, sidecars folded into a mesh badge.
	b.do(t, "services list", chromedp.Navigate(base+"/ui/services"), chromedp.WaitVisible(chromedp.CSS(`tr[data-service="db"]`)))
	b.waitFor(t, "mesh badges", `document.querySelector('tr[data-service="web"] .mesh') && document.querySelector('tr[data-service="api"] .mesh')`)
	health := eval[map[string]string](t, b, `Object.fromEntries([...document.querySelectorAll('#services-table tr[data-service]')].map((r) => [r.dataset.service, r.dataset.health]))`)
	if want := map[string]string{"web": "passing", "api": "warning", "db": "critical"}; fmt.Sprint(health) != fmt.Sprint(want) {
		t.Errorf("services list health = %v, want %v (and no sidecar rows)", health, want)
	}
	b.screenshot(t, shots, "services")
	// The search box filters as one types; the filter lands in the URL.
	b.do(t, "search", chromedp.SendKeys(chromedp.ID("svc-search"), "ap"))
	b.waitFor(t, "filtered list", `document.querySelectorAll('#services-table tr[data-service]').length === 1 && document.querySelector('tr[data-service="api"]') && location.search === '?q=ap'`)

	// A service page, reached by a deep link; the topology shows web → api
	// with the golden metrics of the traffic sent above (tcp: connections),
	// and the Traffic table lists the edge.
	b.do(t, "service page", chromedp.Navigate(base+"/ui/services/web"),
		chromedp.WaitVisible(chromedp.CSS(`#topology g.edge[data-from="web"][data-to="api"][data-verdict="allow"]`)))
	b.waitFor(t, "instances", `document.querySelector('#main table') && document.querySelector('#main').textContent.includes('ui-node')`)
	b.waitFor(t, "routing in words", `document.getElementById('routing').textContent.includes('requests whose path starts with /admin go to api, retried up to 2 times')`)
	b.waitFor(t, "golden metrics on the edge", `(() => {
		const g = document.querySelector('#topology g.edge[data-from="web"][data-to="api"]');
		const m = g?.querySelector('text.metrics');
		return m?.dataset.metrics === 'live' && /^[0-9.]+ conn\/s · [0-9.]+% ok/.test(m.textContent) && /p50 [0-9.]+ m?s · p99 [0-9.]+ m?s$/.test(m.textContent) &&
			g.getAttribute('aria-label').includes('connections per second') && g.querySelector('title').textContent.includes('p99');
	})()`)
	b.waitFor(t, "traffic table", `(() => {
		const r = document.querySelector('#traffic-table tbody tr[data-source="web"][data-destination="api"]');
		return r && document.querySelector('#traffic-table caption') && document.querySelectorAll('#traffic-table thead th[scope=col]').length === 8 &&
			[...r.cells].map((c) => c.textContent).slice(0, 3).join(' ') === 'web api tcp' &&
			r.cells[3].textContent.endsWith('conn/s') && r.cells[7].textContent === 'outbound + inbound';
	})()`)
	b.screenshot(t, shots, "service-web")
	b.do(t, "reload a deep link", chromedp.Reload(), chromedp.WaitVisible(chromedp.CSS(`#topology g.edge[data-from="web"][data-to="api"]`)))
	b.do(t, "api page", chromedp.Navigate(base+"/ui/services/api"),
		chromedp.WaitVisible(chromedp.CSS(`#topology g.edge[data-from="web"][data-to="api"]`)))

	// Intentions: a field error from the API, then create through the form.
	b.do(t, "intentions page", chromedp.Navigate(base+"/ui/intentions"), chromedp.WaitVisible(chromedp.ID("no-intentions")))
	b.do(t, "form with a bad description",
		chromedp.SendKeys(chromedp.ID("ixn-source"), "web"), chromedp.SendKeys(chromedp.ID("ixn-destination"), "api"),
		chromedp.SetValue(chromedp.ID("ixn-description"), strings.Repeat("x", 600)),
		chromedp.Click(chromedp.ID("ixn-deny")), chromedp.Click(chromedp.ID("ixn-save")))
	b.waitFor(t, "field error", `document.getElementById('ixn-description-error').textContent.includes('longer than 512')`)
	b.screenshot(t, shots, "intentions-field-error")
	b.do(t, "save", chromedp.SetValue(chromedp.ID("ixn-description"), "no calls from web"), chromedp.Click(chromedp.ID("ixn-save")))
	b.waitFor(t, "intention listed", `document.querySelector('#intentions-table tr[data-source="web"][data-destination="api"][data-action="deny"]')`)
	if r := run(t, addr, "intention", "check", "web", "api"); r.code != 1 || !strings.Contains(r.stdout, "Denied") {
		t.Errorf("trellis intention check web api after the form made a deny: %+v", r)
	}
	// Edit it: allow, then back to deny, through the row's Edit button.
	b.do(t, "edit", chromedp.Click(chromedp.CSS(`tr[data-source="web"] button[aria-label^="Edit"]`)), chromedp.Click(chromedp.ID("ixn-allow")), chromedp.Click(chromedp.ID("ixn-save")))
	b.waitFor(t, "edited to allow", `document.querySelector('#intentions-table tr[data-source="web"][data-action="allow"]')`)
	if r := run(t, addr, "intention", "check", "web", "api"); r.code != 0 {
		t.Errorf("trellis intention check web api after the form allowed it: %+v", r)
	}
	b.do(t, "edit back", chromedp.Click(chromedp.CSS(`tr[data-source="web"] button[aria-label^="Edit"]`)), chromedp.Click(chromedp.ID("ixn-deny")), chromedp.Click(chromedp.ID("ixn-save")))
	b.waitFor(t, "edited to deny", `document.querySelector('#intentions-table tr[data-source="web"][data-action="deny"]')`)
	if r := run(t, addr, "intention", "check", "web", "api"); r.code != 1 {
		t.Errorf("trellis intention check web api after the form denied it again: %+v", r)
	}
	// "Can web call api?" names the intention that decided.
	b.do(t, "check form", chromedp.SendKeys(chromedp.ID("check-src"), "web"), chromedp.SendKeys(chromedp.ID("check-dst"), "api"),
		chromedp.Click(chromedp.CSS(`#check-form button[type=submit]`)))
	b.waitFor(t, "check result", `document.querySelector('#check-result [data-allowed="false"]')?.textContent.includes('web → api')`)
	if bad := eval[[]string](t, b, unlabelled); len(bad) > 0 {
		t.Errorf("form controls without a label: %v", bad)
	}
	b.screenshot(t, shots, "intentions")
	// The topology follows: the edge turns to deny without a reload.
	b.do(t, "topology after deny", chromedp.Navigate(base+"/ui/services/web"),
		chromedp.WaitVisible(chromedp.CSS(`#topology g.edge[data-from="web"][data-to="api"][data-verdict="deny"]`)))
	b.screenshot(t, shots, "service-web-denied")
	// Deleting in the CLI removes the row from the open page (a blocking query).
	b.do(t, "back to intentions", chromedp.Navigate(base+"/ui/intentions"), chromedp.WaitVisible(chromedp.CSS(`tr[data-source="web"]`)))
	if r := run(t, addr, "intention", "delete", "web", "api"); r.code != 0 {
		t.Fatalf("trellis intention delete: %+v", r)
	}
	b.waitFor(t, "row gone", `!document.querySelector('tr[data-source="web"]') && document.getElementById('no-intentions')`)
	// Deleting from the form: a confirmation, then the row goes, and the CLI
	// agrees (the dev agent's default policy allows again).
	if r := run(t, addr, "intention", "create", "-deny", "admin", "api"); r.code != 0 {
		t.Fatalf("trellis intention create -deny admin api: %+v", r)
	}
	b.waitFor(t, "admin row", `document.querySelector('#intentions-table tr[data-source="admin"][data-action="deny"]')`)
	b.do(t, "delete button", chromedp.Click(chromedp.CSS(`tr[data-source="admin"] button[aria-label="Delete admin → api"]`)))
	b.waitFor(t, "confirmation focused", `document.activeElement?.textContent === 'Yes, delete'`)
	b.do(t, "confirm delete", chromedp.Click(chromedp.CSS(`tr[data-source="admin"] button.danger`)))
	b.waitFor(t, "admin row gone", `!document.querySelector('tr[data-source="admin"]') && document.getElementById('no-intentions')`)
	if r := run(t, addr, "intention", "check", "admin", "api"); r.code != 0 || !strings.Contains(r.stdout, "Allowed") {
		t.Errorf("trellis intention check admin api after the form deleted the deny: %+v", r)
	}
	// An intention of a service-intentions entry is listed with where it
	// comes from, and no Edit or Delete (the API refuses them).
	entryFile := filepath.Join(t.TempDir(), "ixn.hcl")
	entry := "Kind = \"service-intentions\"\nName = \"api\"\nSources = [{ Name = \"ops\", Permissions = [{ Action = \"deny\", HTTP = { PathPrefix = \"/admin\" } }] }]\n"
	if err := os.WriteFile(entryFile, []byte(entry), 0o600); err != nil {
		t.Fatal(err)
	}
	if r := run(t, addr, "config", "write", entryFile); r.code != 0 {
		t.Fatalf("trellis config write service-intentions: %+v", r)
	}
	b.waitFor(t, "entry intention row", `(() => { const tr = document.querySelector('#intentions-table tr[data-source="ops"][data-action="l7"]');
		return tr && !tr.querySelector('button') && tr.querySelector('.managed')?.textContent.includes('service-intentions/api'); })()`)
	// "Can ops call api?" says that its HTTP permissions decide per request.
	b.do(t, "check form, L7", chromedp.SetValue(chromedp.ID("check-src"), "ops"), chromedp.SetValue(chromedp.ID("check-dst"), "api"),
		chromedp.Click(chromedp.CSS(`#check-form button[type=submit]`)))
	b.waitFor(t, "check result, L7", `(() => { const t = document.querySelector('#check-result [data-allowed="false"]')?.textContent || '';
		return t.includes('ops → api') && t.includes('L7 permissions') && t.includes('decide each request'); })()`)
	b.screenshot(t, shots, "intentions-entry")
	if r := run(t, addr, "config", "delete", "-kind", "service-intentions", "-name", "api"); r.code != 0 {
		t.Fatalf("trellis config delete service-intentions: %+v", r)
	}
	b.waitFor(t, "entry intention row gone", `!document.querySelector('tr[data-source="ops"]')`)

	// The other pages.
	for _, p := range []struct{ path, name, ready string }{
		{"/ui/", "overview", `document.querySelector('#main .cards .big') && document.querySelector('#main').textContent.includes('CA root expires') && document.querySelector('#main .card .allow')`},
		{"/ui/nodes", "nodes", `document.querySelector('#nodes table') && document.querySelector('#nodes').textContent.includes('leader')`},
		{"/ui/nodes/ui-node", "node", `document.querySelectorAll('#main table').length === 2`},
		{"/ui/config", "config", `[...document.querySelectorAll('#main div[data-kind]')].every((d) => d.querySelector('.empty, article')) &&
			document.querySelector('[data-kind="service-router"] pre')?.textContent.includes('Kind = "service-router"') &&
			document.querySelector('[data-kind="service-router"] pre').textContent.includes('PathPrefix = "/admin"') &&
			document.querySelector('[data-kind="service-resolver"] pre')?.textContent.includes('Subsets = {')`},
		{"/ui/ca", "ca", `document.querySelector('#ca-roots table') && [...document.querySelectorAll('#ca-leaves tbody tr')].some((tr) =>
			tr.textContent.includes('web') && tr.textContent.includes('ui-node') && tr.textContent.includes('(active)'))`},
	} {
		b.do(t, p.name, chromedp.Navigate(base+p.path))
		b.waitFor(t, p.name, p.ready)
		if bad := eval[[]string](t, b, unlabelled); len(bad) > 0 {
			t.Errorf("%s: form controls without a label: %v", p.name, bad)
		}
		b.screenshot(t, shots, p.name)
	}
	// Narrow screens and the dark scheme.
	b.do(t, "narrow", chromedp.EmulateViewport(390, 844), chromedp.Navigate(base+"/ui/services"), chromedp.WaitVisible(chromedp.CSS(`tr[data-service="web"]`)))
	b.screenshot(t, shots, "services-narrow")
	b.do(t, "narrow service page", chromedp.Navigate(base+"/ui/services/api"), chromedp.WaitVisible(chromedp.CSS(`#topology g.edge`)))
	b.waitFor(t, "narrow traffic", `document.querySelector('#topology text.metrics:not([data-metrics="pending"])') && document.querySelector('#traffic-table, #no-traffic')`)
	b.screenshot(t, shots, "service-api-narrow")
	b.do(t, "dark", chromedp.EmulateViewport(1280, 900), chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		_, err := chromedp.Call(ctx, emulation.SetEmulatedMedia, emulation.SetEmulatedMediaParams{
			Features: []*emulation.MediaFeature{{Name: "prefers-color-scheme", Value: "dark"}}})
		return err
	}), chromedp.Navigate(base+"/ui/services/web"), chromedp.WaitVisible(chromedp.CSS(`#topology g.edge`)))
	b.screenshot(t, shots, "service-web-dark")

	// Keyboard: the first Tab reaches the skip link.
	b.do(t, "tab", chromedp.KeyEvent("\t"))
	if got := eval[string](t, b, `document.activeElement.className`); got != "skip" {
		t.Errorf("first Tab focused %q, want the skip link", got)
	}

	// Losing the agent (its API blocked in the browser) shows the banner, and
	// it goes when calls succeed again.
	offline := func(off bool) chromedp.Action[chromedp.Void] {
		return chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
			if _, err := chromedp.Call(ctx, network.Enable, network.EnableParams{}); err != nil {
				return err
			}
			// Blocked requests fail as a network error does.
			var block []*network.BlockPattern
			if off {
				block = append(block, &network.BlockPattern{URLPattern: "http://127.0.0.1:*/v1/*", Block: true})
			}
			_, err := chromedp.Call(ctx, network.SetBlockedURLs, network.SetBlockedURLsParams{URLPatterns: block})
			return err
		})
	}
	b.do(t, "go offline", offline(true), chromedp.Click(chromedp.CSS(`nav a[data-nav="nodes"]`)))
	b.waitFor(t, "banner", `!document.getElementById('banner').hidden && document.getElementById('banner').textContent === 'Lost connection to the agent — retrying'`)
	b.screenshot(t, shots, "connection-lost")
	b.do(t, "back online", offline(false))
	b.waitFor(t, "banner gone", `document.getElementById('banner').hidden && document.querySelector('#nodes table')`)
}

// sendUITraffic makes a few connections from web to api through web's
// upstream listener, and waits until the leader has both proxies' report of
// them. It runs before any config entry makes api http, so the edge is tcp;
// its figures stay in a 15 s window for the service page to show.
func sendUITraffic(t *testing.T, httpAddr, upstream string) {
	t.Helper()
	// The first tries fail until web's proxy knows api's instance.
	retry.RunWith(&retry.Timer{Timeout: 20 * time.Second, Wait: 20 * time.Millisecond}, t, func(r *retry.R) {
		if body, err := fetch(upstream, "/warm"); err != nil || body != "api /warm" {
			r.Fatalf("through web's upstream: %q, %v", body, err)
		}
	})
	for i := range 10 {
		if body, err := fetch(upstream, "/"); err != nil || body != "api /" {
			t.Fatalf("connection %d through web's upstream: %q, %v", i, body, err)
		}
	}
	cl, err := api.NewClient(&api.Config{Address: httpAddr})
	if err != nil {
		t.Fatal(err)
	}
	retry.RunWith(&retry.Timer{Timeout: 10 * time.Second, Wait: 50 * time.Millisecond}, t, func(r *retry.R) {
		m, err := cl.Connect().Metrics("web", 15*time.Second, nil)
		if err != nil {
			r.Fatal(err)
		}
		for _, e := range m.Edges {
			if e.Source == "web" && e.Destination == "api" && e.Protocol == "tcp" && e.Outbound != nil && e.Inbound != nil && e.Outbound.Requests >= 10 {
				return
			}
		}
		r.Fatalf("no tcp edge web → api reported by both sides yet: %+v", m.Edges)
	})
}

// TestUI_Disabled checks the 404 that says how to turn the UI on.
func TestUI_Disabled(t *testing.T) {
	if testing.Short() {
		t.Skip("starts an agent")
	}
	t.Parallel()
	a := testcluster.StartAgent(t, testcluster.Options{Name: "ui-off", Args: []string{"-ui=false"}})
	resp, err := http.Get("http://" + a.HTTPAddr() + "/ui/services")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body := make([]byte, 512)
	n, _ := resp.Body.Read(body)
	if resp.StatusCode != 404 || !strings.Contains(string(body[:n]), "ui_config { enabled = true }") {
		t.Errorf("GET /ui/ with the UI off = %d %q", resp.StatusCode, body[:n])
	}
}
