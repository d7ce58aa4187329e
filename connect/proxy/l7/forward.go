package l7

import (
	"errors"
	"io"
	"maps"
	"net/http"
	"net/textproto"
	"slices"
	"strings"
	"sync"

	"github.com/trellismesh/trellis/connect/configentry"
)

// hopHeaders are the headers of one connection, not of the request (RFC
// 9110, 7.6.1): never forwarded.
var hopHeaders = []string{
	"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate",
	"Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade",
}

// cloneForward copies h without its hop-by-hop headers (and those the
// Connection header names). "TE: trailers" is kept: gRPC needs it.
func cloneForward(h http.Header) http.Header {
	out := h.Clone()
	if out == nil {
		return make(http.Header)
	}
	stripHop(out)
	return out
}

// stripHop removes from h, in place, what cloneForward leaves out: for a
// header the caller owns and forwards as it is.
func stripHop(h http.Header) {
	for _, v := range h["Connection"] {
		for _, name := range strings.Split(v, ",") {
			if name = textproto.TrimString(name); name != "" {
				delete(h, http.CanonicalHeaderKey(name))
			}
		}
	}
	te := h["Te"]
	for _, k := range hopHeaders {
		delete(h, k)
	}
	for _, v := range te {
		if strings.EqualFold(textproto.TrimString(v), "trailers") {
			h["Te"] = []string{"trailers"}
			break
		}
	}
}

// applyHeaders changes h as m says: Add appends, Set replaces, Remove
// deletes.
func applyHeaders(h http.Header, m *configentry.HTTPHeaderModifiers) {
	if m == nil {
		return
	}
	for k, v := range m.Add {
		h.Add(k, v)
	}
	for k, v := range m.Set {
		h.Set(k, v)
	}
	for _, k := range m.Remove {
		h.Del(k)
	}
}

var copyBufs = sync.Pool{New: func() any {
	b := make([]byte, 32<<10)
	return &b
}}

// errDownstream is a failure to write to the client of a proxy: nothing
// more can reach it.
var errDownstream = errors.New("writing the response failed")

// writeResponse sends resp (headers, body, trailers) to w. Streams (no
// Content-Length, or gRPC) are flushed after each read so that messages
// are not held back. It returns errDownstream when w failed, or the error
// reading resp.Body (the upstream reset it).
func writeResponse(w http.ResponseWriter, resp *http.Response, mods ...*configentry.HTTPHeaderModifiers) error {
	dst := w.Header()
	for k, vv := range resp.Header {
		dst[k] = vv
	}
	for _, k := range hopHeaders {
		delete(dst, k)
	}
	for _, m := range mods {
		applyHeaders(dst, m)
	}
	if len(resp.Trailer) > 0 {
		// Trailers follow: an HTTP/1.1 client can only get them after a
		// chunked body, so the length goes (an HTTP/2 one has no need
		// of it), and they are announced as RFC 9110, 6.6.2 asks.
		delete(dst, "Content-Length")
		keys := slices.Sorted(maps.Keys(resp.Trailer))
		dst["Trailer"] = []string{strings.Join(keys, ", ")}
	}
	w.WriteHeader(resp.StatusCode)
	stream := resp.ContentLength < 0 || strings.HasPrefix(resp.Header.Get("Content-Type"), "application/grpc")
	var flusher http.Flusher
	if stream {
		flusher, _ = w.(http.Flusher)
		if flusher != nil {
			flusher.Flush()
		}
	}
	bp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bp)
	buf := *bp
	var readErr error
	for {
		n, err := resp.Body.Read(buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				return errDownstream
			}
			if flusher != nil {
				flusher.Flush()
			}
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			readErr = err
			break
		}
	}
	if readErr != nil {
		return readErr
	}
	for k, vv := range resp.Trailer {
		dst[http.TrailerPrefix+k] = vv
	}
	return nil
}

// meshError answers a request the mesh could not serve with status and a
// plain-text body "trellis mesh: msg".
func meshError(w http.ResponseWriter, status int, msg string) {
	h := w.Header()
	h["Content-Type"] = []string{"text/plain; charset=utf-8"}
	h["X-Content-Type-Options"] = []string{"nosniff"}
	w.WriteHeader(status)
	io.WriteString(w, "trellis mesh: "+msg+"\n")
}
