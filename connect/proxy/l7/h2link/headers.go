package h2link

import (
	"fmt"
	"net/http"
	"strings"

	"golang.org/x/net/http/httpguts"
	"golang.org/x/net/http2/hpack"
)

// commonHeaders maps the canonical form of the headers most requests carry
// to their lower-case wire form and back, so that neither direction
// allocates for them.
var commonHeaders = map[string]string{}
var commonLower = map[string]string{}

func init() {
	for _, k := range []string{
		"Accept", "Accept-Charset", "Accept-Encoding", "Accept-Language", "Accept-Ranges",
		"Age", "Access-Control-Allow-Origin", "Allow", "Authorization", "Cache-Control",
		"Content-Disposition", "Content-Encoding", "Content-Language", "Content-Length",
		"Content-Location", "Content-Range", "Content-Type", "Cookie", "Date", "Etag", "Expect",
		"Expires", "From", "Host", "If-Match", "If-Modified-Since", "If-None-Match",
		"If-Unmodified-Since", "Last-Modified", "Link", "Location", "Max-Forwards", "Origin",
		"Proxy-Authenticate", "Proxy-Authorization", "Range", "Referer", "Refresh", "Retry-After",
		"Server", "Set-Cookie", "Strict-Transport-Security", "Te", "Trailer", "Transfer-Encoding",
		"User-Agent", "Vary", "Via", "Www-Authenticate", "X-Content-Type-Options",
		"X-Forwarded-For", "X-Forwarded-Proto", "X-Forwarded-Host", "X-Request-Id",
		"X-Forwarded-Client-Cert", "Traceparent", "Tracestate", "Grpc-Status", "Grpc-Message",
		"Grpc-Encoding", "Grpc-Accept-Encoding", "Grpc-Timeout", "Grpc-Status-Details-Bin",
		"X-Trellis-Overloaded", "X-Trellis-Route", "X-Trellis-Target",
	} {
		lower := strings.ToLower(k)
		commonHeaders[k] = lower
		commonLower[lower] = k
	}
}

// errHeaderList is the error of a header block past maxHeaderList.
func errHeaderList(what string) error {
	return fmt.Errorf("h2link: the %s are larger than the limit of %d bytes", what, maxHeaderList)
}

// lowerKey returns the wire (lower-case) form of a header name.
func lowerKey(k string) string {
	if l, ok := commonHeaders[k]; ok {
		return l
	}
	return strings.ToLower(k)
}

// canonicalKey returns the canonical form of a wire header name.
func canonicalKey(k string) string {
	if c, ok := commonLower[k]; ok {
		return c
	}
	return http.CanonicalHeaderKey(k)
}

// connectionHeaders may not appear in HTTP/2 (RFC 9113, 8.2.2); "te" may,
// with the value "trailers" only.
var connectionHeaders = map[string]bool{
	"connection": true, "keep-alive": true, "proxy-connection": true,
	"transfer-encoding": true, "upgrade": true, "host": true,
}

// validHeader reports a field of h that HTTP/2 cannot carry. Headers are
// checked before they are encoded: a header block must never be left half
// written, since HPACK's table would then differ between the two ends.
func validHeader(h http.Header) error {
	for k, vv := range h {
		if !httpguts.ValidHeaderFieldName(k) {
			return fmt.Errorf("invalid header field name %q", k)
		}
		for _, v := range vv {
			if !httpguts.ValidHeaderFieldValue(v) {
				return fmt.Errorf("invalid value of header field %q", k)
			}
		}
	}
	return nil
}

// encodeHeader writes h to enc, lower-casing names and leaving out what
// HTTP/2 does not carry: connection headers, Host, a "te" other than
// "trailers", and invalid names or values (see validHeader).
func encodeHeader(enc *hpack.Encoder, h http.Header) error {
	for k, vv := range h {
		lk := lowerKey(k)
		if connectionHeaders[lk] || !httpguts.ValidHeaderFieldName(k) {
			continue
		}
		for _, v := range vv {
			if !httpguts.ValidHeaderFieldValue(v) || (lk == "te" && !strings.EqualFold(v, "trailers")) {
				continue
			}
			if err := enc.WriteField(hpack.HeaderField{Name: lk, Value: v, Sensitive: lk == "authorization" || lk == "cookie"}); err != nil {
				return err
			}
		}
	}
	return nil
}

// decodeHeader turns regular wire fields into an http.Header.
func decodeHeader(fields []hpack.HeaderField) http.Header {
	h := make(http.Header, len(fields))
	// One backing array for the values, as net/textproto does: a field
	// seen once (most are) takes a one-value slice of it, capped so that
	// a later append copies rather than overwrites its neighbour.
	vals := make([]string, len(fields))
	for i, hf := range fields {
		k := canonicalKey(hf.Name)
		if v, ok := h[k]; ok {
			h[k] = append(v, hf.Value)
			continue
		}
		vals[i] = hf.Value
		h[k] = vals[i : i+1 : i+1]
	}
	return h
}

// invalidWireField returns a connection-specific field the peer must
// not have sent (RFC 9113, 8.2.2).
func invalidWireField(fields []hpack.HeaderField) string {
	for _, hf := range fields {
		if connectionHeaders[hf.Name] && hf.Name != "host" {
			return hf.Name
		}
		if hf.Name == "te" && hf.Value != "trailers" {
			return hf.Name
		}
	}
	return ""
}

// trailerKeys returns the trailers h declares ("Trailer: a, b") in
// canonical form.
func trailerKeys(h http.Header) []string {
	var keys []string
	for _, v := range h["Trailer"] {
		for _, k := range strings.Split(v, ",") {
			if k = textTrim(k); k != "" {
				keys = append(keys, http.CanonicalHeaderKey(k))
			}
		}
	}
	return keys
}

func textTrim(s string) string { return strings.Trim(s, " \t") }
