// Package ui holds the agent's web UI: plain HTML, CSS and JavaScript
// modules under assets/, embedded in the binary with go:embed. There is no
// build step and nothing is loaded from the network at run time; the
// single-page app reads the cluster only through the public HTTP API (/v1/),
// so anything it shows a script can get too.
//
// The agent serves FS under /ui/ (agent/httpapi.UIHandler) when the UI is
// on: with -dev, or ui_config { enabled = true }.
package ui

import (
	"embed"
	"io/fs"
)

//go:embed assets
var files embed.FS

// FS is the UI's files, rooted at assets/: index.html at its top, the
// stylesheet and the modules beside it. It is read-only and safe for
// concurrent use.
var FS fs.FS = mustSub(files, "assets")

func mustSub(f fs.FS, dir string) fs.FS {
	sub, err := fs.Sub(f, dir)
	if err != nil {
		panic(err) // dir is a constant that go:embed has checked
	}
	return sub
}
