package httpapi

import (
	"io/fs"
	"net/http"
	"net/http/httptest"
	"path"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/trellismesh/trellis/ui"
)

func uiServer(t *testing.T, on bool) http.Handler {
	t.Helper()
	var h http.Handler
	if on {
		var err error
		if h, err = UIHandler(ui.FS); err != nil {
			t.Fatal(err)
		}
	}
	return New(Config{UI: h}, nil).Handler()
}

func uiGet(h http.Handler, method, target string, header ...string) *httptest.ResponseRecorder {
	r := httptest.NewRequest(method, target, nil)
	for i := 0; i+1 < len(header); i += 2 {
		r.Header.Set(header[i], header[i+1])
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}

func TestUIHandler(t *testing.T) {
	t.Parallel()
	h := uiServer(t, true)
	index := uiGet(h, "GET", "/ui/")
	if index.Code != 200 || index.Header().Get("Content-Type") != "text/html; charset=utf-8" ||
		!strings.Contains(index.Body.String(), `<script type="module" src="/ui/js/main.js">`) ||
		index.Header().Get("Cache-Control") != "no-store" || !strings.Contains(index.Header().Get("Content-Security-Policy"), "default-src 'self'") {
		t.Errorf("GET /ui/ = %d %v", index.Code, index.Header())
	}
	// Deep links are pages of the app: index.html, so a reload works (a
	// service name may hold a dot).
	for _, p := range []string{"/ui/services/web", "/ui/services/web.v1", "/ui/nodes/node-1", "/ui/intentions", "/ui/config/service-router"} {
		if w := uiGet(h, "GET", p); w.Code != 200 || w.Body.String() != index.Body.String() {
			t.Errorf("GET %s = %d, want index.html", p, w.Code)
		}
	}
	for p, ct := range map[string]string{"/ui/js/main.js": "text/javascript; charset=utf-8", "/ui/js/pages/services.js": "text/javascript; charset=utf-8",
		"/ui/css/app.css": "text/css; charset=utf-8", "/ui/favicon.svg": "image/svg+xml"} {
		w := uiGet(h, "GET", p)
		etag := w.Header().Get("ETag")
		if w.Code != 200 || w.Header().Get("Content-Type") != ct || w.Header().Get("Cache-Control") != "no-cache" ||
			w.Header().Get("X-Content-Type-Options") != "nosniff" || !regexp.MustCompile(`^"[0-9a-f]{24}"$`).MatchString(etag) {
			t.Errorf("GET %s = %d %v", p, w.Code, w.Header())
			continue
		}
		if w := uiGet(h, "GET", p, "If-None-Match", etag); w.Code != http.StatusNotModified || w.Body.Len() != 0 {
			t.Errorf("GET %s If-None-Match = %d, want 304", p, w.Code)
		}
	}
	if w := uiGet(h, "HEAD", "/ui/js/main.js"); w.Code != 200 || w.Body.Len() != 0 {
		t.Errorf("HEAD = %d with %d bytes", w.Code, w.Body.Len())
	}
	if w := uiGet(h, "GET", "/ui/js/nope.js"); w.Code != 404 {
		t.Errorf("a missing module = %d, want 404 (not index.html)", w.Code)
	}
	if w := uiGet(h, "POST", "/ui/"); w.Code != 405 || w.Header().Get("Allow") != "GET, HEAD" {
		t.Errorf("POST /ui/ = %d %v", w.Code, w.Header())
	}
	if w := uiGet(h, "GET", "/"); w.Code != http.StatusMovedPermanently || w.Header().Get("Location") != "/ui/" {
		t.Errorf("GET / = %d %v, want a redirect to /ui/", w.Code, w.Header())
	}
}

func TestUIHandler_Disabled(t *testing.T) {
	t.Parallel()
	h := uiServer(t, false)
	for _, p := range []string{"/ui/", "/ui/services/web"} {
		if w := uiGet(h, "GET", p); w.Code != 404 || !strings.Contains(w.Body.String(), "ui_config { enabled = true }") {
			t.Errorf("GET %s with the UI off = %d %q", p, w.Code, w.Body.String())
		}
	}
	if w := uiGet(h, "GET", "/"); w.Code != 200 || !strings.Contains(w.Body.String(), "disabled") {
		t.Errorf("GET / with the UI off = %d %q", w.Code, w.Body.String())
	}
}

// TestUIModules checks the modules statically: every import names a file
// that exists, and index.html preloads every module (so the browser fetches
// them in one round rather than one per level of imports).
func TestUIModules(t *testing.T) {
	t.Parallel()
	index, err := fs.ReadFile(ui.FS, "index.html")
	if err != nil {
		t.Fatal(err)
	}
	var preloaded []string
	for _, m := range regexp.MustCompile(`<link rel="modulepreload" href="/ui/([^"]+)">`).FindAllSubmatch(index, -1) {
		preloaded = append(preloaded, string(m[1]))
	}
	importRE := regexp.MustCompile(`(?m)^import .* from '([^']+)';$`)
	err = fs.WalkDir(ui.FS, "js", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		src, err := fs.ReadFile(ui.FS, p)
		if err != nil {
			return err
		}
		if p != "js/main.js" && !slices.Contains(preloaded, p) {
			t.Errorf("index.html does not preload %s", p)
		}
		for _, m := range importRE.FindAllSubmatch(src, -1) {
			target := path.Join(path.Dir(p), string(m[1]))
			if _, err := fs.Stat(ui.FS, target); err != nil {
				t.Errorf("%s imports %s: %v", p, m[1], err)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range preloaded {
		if _, err := fs.Stat(ui.FS, p); err != nil {
			t.Errorf("index.html preloads %s: %v", p, err)
		}
	}
}
