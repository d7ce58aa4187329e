package httpapi

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io/fs"
	"net/http"
	"path"
	"strings"
	"time"
)

// uiFile is one file of the UI, read once.
type uiFile struct {
	body        []byte
	etag        string
	contentType string
}

// uiContentTypes are the types of the UI's files, fixed here rather than read
// from the host's mime tables, so a module is always served as JavaScript.
var uiContentTypes = map[string]string{
	".html": "text/html; charset=utf-8",
	".css":  "text/css; charset=utf-8",
	".js":   "text/javascript; charset=utf-8",
	".svg":  "image/svg+xml",
	".json": "application/json",
	".txt":  "text/plain; charset=utf-8",
}

// uiCSP allows only the agent's own origin: no inline script, no CDN.
const uiCSP = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
	"connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"

// UIHandler serves the web UI's files from fsys (ui.FS) under /ui/.
//
// A path naming a file serves it; a path under one of fsys's directories
// (/ui/js/...) that names no file is a 404; any other path is a page of the
// single-page app (/ui/services/web) and serves index.html, so deep links
// survive a reload. Every answer carries a strong ETag (a hash of the
// content) and Cache-Control: no-cache, so browsers revalidate and get a
// 304 until the binary changes. The files are read once, here.
func UIHandler(fsys fs.FS) (http.Handler, error) {
	files := make(map[string]*uiFile)
	dirs := make(map[string]bool)
	err := fs.WalkDir(fsys, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if p != "." {
				dirs[strings.SplitN(p, "/", 2)[0]] = true
			}
			return nil
		}
		body, err := fs.ReadFile(fsys, p)
		if err != nil {
			return err
		}
		ct, ok := uiContentTypes[path.Ext(p)]
		if !ok {
			ct = "application/octet-stream"
		}
		sum := sha256.Sum256(body)
		files[p] = &uiFile{body: body, etag: `"` + hex.EncodeToString(sum[:12]) + `"`, contentType: ct}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read UI files: %w", err)
	}
	index, ok := files["index.html"]
	if !ok {
		return nil, fmt.Errorf("read UI files: no index.html")
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, fmt.Sprintf("method %s not allowed", r.Method), http.StatusMethodNotAllowed)
			return
		}
		rel := strings.TrimPrefix(path.Clean(r.URL.Path), "/ui")
		rel = strings.TrimPrefix(rel, "/")
		f := files[rel]
		if f == nil {
			if dirs[strings.SplitN(rel, "/", 2)[0]] {
				http.Error(w, "no such UI file: "+r.URL.Path, http.StatusNotFound)
				return
			}
			f = index
		}
		h := w.Header()
		h.Set("Content-Type", f.contentType)
		h.Set("ETag", f.etag)
		h.Set("Cache-Control", "no-cache")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		if f == index {
			h.Set("Content-Security-Policy", uiCSP)
			// no-store keeps the page out of the back/forward cache, which
			// would hold its blocking queries (and so the browser's few
			// connections per host) while the next page loads.
			h.Set("Cache-Control", "no-store")
		}
		http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(f.body))
	}), nil
}

// uiDisabled answers /ui/ when the UI is off, saying how to turn it on.
func uiDisabled() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "The web UI is disabled on this agent. Enable it with ui_config { enabled = true } "+
			"in the agent's configuration (or the -ui flag); trellis agent -dev turns it on.", http.StatusNotFound)
	})
}
