package bench

import (
	"context"
	"fmt"
	"os/exec"
	"testing"
	"time"

	consulapi "github.com/hashicorp/consul/api"

	"github.com/chromedp/chromedp"

	"github.com/trellismesh/trellis/internal/retry"
)

// uiBrowser starts headless chromium (Debian's, installed by make ui-deps)
// with a fresh profile.
func uiBrowser(b *testing.B) context.Context {
	b.Helper()
	exe, err := exec.LookPath("chromium")
	if err != nil {
		if out, err := exec.Command("make", "-C", "..", "ui-deps").CombinedOutput(); err != nil {
			b.Logf("make ui-deps: %v\n%s", err, out)
		}
		if exe, err = exec.LookPath("chromium"); err != nil {
			b.Fatalf("chromium is missing: %v", err)
		}
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(),
		chromedp.ExecPath(exe), chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun,
		chromedp.Flag("disable-background-networking", true), chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true), chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.UserDataDir(b.TempDir()), chromedp.WindowSize(1280, 900))
	ctx, cancel := chromedp.NewContext(actx)
	b.Cleanup(func() { cancel(); cancelAlloc() })
	if err := chromedp.Do(ctx, chromedp.Navigate("about:blank")); err != nil {
		b.Fatalf("start chromium: %v", err)
	}
	return ctx
}

// BenchmarkUIServicesList registers 1,000 services (each with a TTL check,
// a tenth of them warning and a tenth critical), then opens /ui/services in
// a fresh tab and reports the milliseconds from the start of navigation to
// the list being painted with every service and its instance count
// (services-ms), and the uncompressed bytes of the page's own files on that
// first load (first-load-KB) and of its API answers (api-KB).
func BenchmarkUIServicesList(b *testing.B) {
	a := startDevAgent(b)
	for i := range 1000 {
		status := "passing"
		switch i % 10 {
		case 3:
			status = "warning"
		case 7:
			status = "critical"
		}
		err := a.Client.Agent().ServiceRegister(&consulapi.AgentServiceRegistration{
			Name: fmt.Sprintf("svc-%04d", i), Port: 10000 + i, Tags: []string{"v1", fmt.Sprintf("team-%d", i%7)},
			Check: &consulapi.AgentServiceCheck{TTL: "10m", Status: status},
		})
		if err != nil {
			b.Fatalf("register service %d: %v", i, err)
		}
	}
	retry.RunWith(&retry.Timer{Timeout: 60 * time.Second, Wait: 100 * time.Millisecond}, b, func(r *retry.R) {
		svcs, _, err := a.Client.Catalog().Services(nil)
		if err != nil || len(svcs) < 1000 {
			r.Fatalf("catalog has %d services (%v)", len(svcs), err)
		}
	})
	ctx := uiBrowser(b)
	url := "http://" + a.HTTPAddr + "/ui/services"
	var total, assets, api float64
	b.ResetTimer()
	for range b.N {
		// A new tab each time: nothing cached, as on a first visit.
		tctx, cancel := chromedp.NewContext(ctx)
		tctx, cancelT := context.WithTimeout(tctx, 60*time.Second)
		if err := chromedp.Do(tctx, chromedp.Navigate(url)); err != nil {
			b.Fatalf("open %s: %v", url, err)
		}
		got, err := chromedp.Run(tctx, chromedp.Poll[map[string]float64](`(() => {
			const m = performance.getEntriesByName('services-drawn')[0];
			if (!m) return null;
			let assets = 0, api = 0;
			for (const e of [...performance.getEntriesByType('navigation'), ...performance.getEntriesByType('resource')]) {
				if (new URL(e.name).pathname.startsWith('/v1/')) api += e.decodedBodySize; else assets += e.decodedBodySize;
			}
			return { ms: m.startTime, rows: m.detail, assets, api };
		})()`, chromedp.WithPollingInterval(10*time.Millisecond), chromedp.WithPollingTimeout(50*time.Second)))
		cancelT()
		cancel()
		if err != nil {
			b.Fatalf("wait for the services list: %v", err)
		}
		if got["rows"] != 1000 {
			b.Fatalf("the list drew %v services, want 1000", got["rows"])
		}
		total += got["ms"]
		assets, api = got["assets"], got["api"]
	}
	b.StopTimer()
	b.ReportMetric(total/float64(b.N), "services-ms")
	b.ReportMetric(assets/1024, "first-load-KB")
	b.ReportMetric(api/1024, "api-KB")
}
