package l7

import (
	"encoding/hex"
	"math/rand/v2"
	"net/http"
)

// W3C Trace Context headers (https://www.w3.org/TR/trace-context/), in
// their canonical forms.
const (
	headerTraceparent = "Traceparent"
	headerTracestate  = "Tracestate"
)

// ensureTraceparent keeps a valid traceparent (and its tracestate) of h
// unchanged: the proxy records no spans of its own, so the application's
// span stays the parent of the next hop's. Without one, or with an invalid
// one (whose tracestate is then dropped, as the specification requires), it
// starts a trace: a random trace-id and parent-id, version 00, flags 01
// (sampled). It reports whether it started one.
func ensureTraceparent(h http.Header) bool {
	if vs := h[headerTraceparent]; len(vs) == 1 && validTraceparent(vs[0]) {
		return false
	}
	delete(h, headerTracestate)
	h[headerTraceparent] = []string{newTraceparent()}
	return true
}

// newTraceparent returns "00-<trace-id>-<parent-id>-01" with random IDs.
func newTraceparent() string {
	var raw [24]byte
	for {
		a, b, c := rand.Uint64(), rand.Uint64(), rand.Uint64()
		if (a != 0 || b != 0) && c != 0 {
			putUint64(raw[0:], a)
			putUint64(raw[8:], b)
			putUint64(raw[16:], c)
			break
		}
	}
	var out [55]byte
	out[0], out[1], out[2] = '0', '0', '-'
	hex.Encode(out[3:35], raw[:16])
	out[35] = '-'
	hex.Encode(out[36:52], raw[16:])
	out[52], out[53], out[54] = '-', '0', '1'
	return string(out[:])
}

func putUint64(b []byte, v uint64) {
	for i := 7; i >= 0; i-- {
		b[i] = byte(v)
		v >>= 8
	}
}

// validTraceparent checks the version-00 form (and the prefix a later
// version must keep): lower-case hex fields, a trace-id and parent-id not
// all zeros, version not ff.
func validTraceparent(s string) bool {
	if len(s) < 55 || s[2] != '-' || s[35] != '-' || s[52] != '-' {
		return false
	}
	if !isHex(s[0:2]) || s[0:2] == "ff" || !isHex(s[53:55]) {
		return false
	}
	if s[0:2] == "00" && len(s) != 55 {
		return false
	}
	if len(s) > 55 && s[55] != '-' {
		return false
	}
	return isHex(s[3:35]) && !allZero(s[3:35]) && isHex(s[36:52]) && !allZero(s[36:52])
}

func isHex(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

func allZero(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] != '0' {
			return false
		}
	}
	return true
}
