package l7

import (
	"bufio"
	"bytes"
	"net/http"
	"net/url"
	"strings"
	"testing"
)

// writeRequest writes what net/http's Request.Write would for the requests
// the application client takes, reads back as the same request with
// net/http's own parser, adds no User-Agent, and refuses a method or Host
// that would break the request line.
func TestWriteRequest(t *testing.T) {
	for _, c := range []struct {
		name    string
		method  string
		target  string
		host    string
		header  http.Header
		body    []byte
		want    []string // lines the request must have
		wantNot []string // substrings it must not have
	}{
		{name: "get", method: "GET", target: "/a%20b/c?x=1&y=%2F", host: "api",
			header:  http.Header{"Accept": {"text/plain"}, "X-Two": {"1", "2"}, "Content-Length": {"99"}, "Host": {"evil"}},
			want:    []string{"GET /a%20b/c?x=1&y=%2F HTTP/1.1", "Host: api", "Accept: text/plain", "X-Two: 1", "X-Two: 2"},
			wantNot: []string{"User-Agent", "Content-Length", "evil"}},
		{name: "post with a body", method: "POST", target: "/p", host: "api", body: []byte("hello"),
			want: []string{"POST /p HTTP/1.1", "Content-Length: 5"}},
		{name: "post without a body", method: "POST", target: "/p", host: "api",
			want: []string{"Content-Length: 0"}},
		{name: "delete without a body", method: "DELETE", target: "/d", host: "api",
			wantNot: []string{"Content-Length"}},
		{name: "options star", method: "OPTIONS", target: "*", host: "api", want: []string{"OPTIONS * HTTP/1.1"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			u := &url.URL{Path: c.target}
			if c.target != "*" {
				var err error
				if u, err = url.ParseRequestURI(c.target); err != nil {
					t.Fatal(err)
				}
			}
			req := &http.Request{Method: c.method, URL: u, Host: c.host, Header: c.header}
			if req.Header == nil {
				req.Header = http.Header{}
			}
			var buf bytes.Buffer
			bw := bufio.NewWriter(&buf)
			if err := writeRequest(bw, req, c.body); err != nil {
				t.Fatal(err)
			}
			bw.Flush()
			raw := buf.String()
			lines := strings.Split(raw, "\r\n")
			for _, w := range c.want {
				found := false
				for _, l := range lines {
					found = found || l == w
				}
				if !found {
					t.Errorf("no line %q in\n%s", w, raw)
				}
			}
			for _, w := range c.wantNot {
				if strings.Contains(raw, w) {
					t.Errorf("%q in\n%s", w, raw)
				}
			}
			got, err := http.ReadRequest(bufio.NewReader(strings.NewReader(raw)))
			if err != nil {
				t.Fatalf("net/http cannot read what was written: %v\n%s", err, raw)
			}
			if got.Method != c.method || got.Host != c.host || got.RequestURI != c.target || got.ContentLength != int64(len(c.body)) {
				t.Errorf("read back as %s %s (Host %s, length %d)", got.Method, got.RequestURI, got.Host, got.ContentLength)
			}
		})
	}
	for _, bad := range []*http.Request{
		{Method: "GET /x", URL: &url.URL{Path: "/"}, Host: "api", Header: http.Header{}},
		{Method: "GET", URL: &url.URL{Path: "/"}, Host: "api\r\nX: y", Header: http.Header{}},
		{Method: "GET", URL: &url.URL{Path: "/"}, Host: "a b", Header: http.Header{}},
	} {
		var buf bytes.Buffer
		bw := bufio.NewWriter(&buf)
		if err := writeRequest(bw, bad, nil); err == nil {
			t.Errorf("method %q host %q: written", bad.Method, bad.Host)
		}
		if bw.Buffered() != 0 {
			t.Errorf("method %q host %q: %d bytes written before the error", bad.Method, bad.Host, bw.Buffered())
		}
	}
}
