package httpapi

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/go-bexpr"
	"github.com/hashicorp/go-bexpr/grammar"

	"github.com/trellismesh/trellis/raftstore/blocking"
	"github.com/trellismesh/trellis/raftstore/structs"
)

// parseQuery reads the read options every query endpoint takes: dc, index,
// wait, stale, consistent. Bad values are a 400 naming the parameter.
func parseQuery(r *http.Request, dc *string, opts *structs.QueryOptions) error {
	q := r.URL.Query()
	*dc = q.Get("dc")
	if s := q.Get("index"); s != "" {
		idx, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			return badRequest("invalid index %q: want a non-negative integer", s)
		}
		opts.MinQueryIndex = idx
	}
	if s := q.Get("wait"); s != "" {
		d, err := parseWait(s)
		if err != nil {
			return err
		}
		opts.MaxQueryTime = d
	}
	_, opts.AllowStale = q["stale"]
	_, opts.RequireConsistent = q["consistent"]
	if opts.AllowStale && opts.RequireConsistent {
		return badRequest("cannot specify both ?stale and ?consistent")
	}
	return nil
}

// parseWait reads a wait duration: "10s", "1m", or a bare number of seconds.
// Values above blocking.MaxWait are capped there by the query.
func parseWait(s string) (time.Duration, error) {
	if n, err := strconv.ParseUint(s, 10, 32); err == nil {
		return time.Duration(n) * time.Second, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		return 0, badRequest("invalid wait %q: want a duration such as 10s or 5m", s)
	}
	if d > blocking.MaxWait {
		d = blocking.MaxWait
	}
	return d, nil
}

// setMeta writes the headers of a query answer. The index is never 0.
func setMeta(w http.ResponseWriter, m *structs.QueryMeta) {
	idx := m.Index
	if idx == 0 {
		idx = 1 // a 0 would make blocking clients spin
	}
	h := w.Header()
	s := strconv.FormatUint(idx, 10)
	h.Set("X-Consul-Index", s)
	h.Set("X-Trellis-Index", s)
	setLeaderHeaders(w, m.KnownLeader, m.LastContact)
}

// setLeaderHeaders writes X-Consul-KnownLeader and X-Consul-LastContact;
// Consul's client stops reading headers when LastContact is missing, so every
// GET sends it.
func setLeaderHeaders(w http.ResponseWriter, known bool, lastContact time.Duration) {
	h := w.Header()
	h.Set("X-Consul-KnownLeader", strconv.FormatBool(known))
	h.Set("X-Consul-LastContact", strconv.FormatInt(lastContact.Milliseconds(), 10))
}

// nodeMetaFilters reads ?node-meta=key:value (repeatable).
func nodeMetaFilters(r *http.Request) (map[string]string, error) {
	vals := r.URL.Query()["node-meta"]
	if len(vals) == 0 {
		return nil, nil
	}
	out := make(map[string]string, len(vals))
	for _, v := range vals {
		k, val, ok := strings.Cut(v, ":")
		if !ok || k == "" {
			return nil, badRequest("invalid node-meta %q: want key:value", v)
		}
		out[k] = val
	}
	return out, nil
}

// boolParam reports whether a flag parameter is set: present and not
// "false" or "0".
func boolParam(r *http.Request, name string) bool {
	q := r.URL.Query()
	if !q.Has(name) {
		return false
	}
	v := strings.ToLower(q.Get(name))
	return v != "false" && v != "0"
}

// Bounds of a ?filter= expression: its length, and the parser's work on it.
const (
	maxFilterLength   = 4096
	filterParseBudget = 100000
)

// applyFilter evaluates ?filter= against data (a slice or map of API types),
// returning the matching part. The expression names the JSON fields users
// see, e.g. `Service.Tags contains "v2"` or `ServiceMeta.env == prod`.
func applyFilter(r *http.Request, data any) (any, error) {
	expr := r.URL.Query().Get("filter")
	if expr == "" {
		return data, nil
	}
	if len(expr) > maxFilterLength {
		return nil, badRequest("filter longer than %d characters", maxFilterLength)
	}
	// go-bexpr's parser backtracks exponentially in the nesting of
	// parentheses and nots: parse once on a budget first, so that a hostile
	// filter costs milliseconds, not minutes.
	if _, err := grammar.Parse("", []byte(expr), grammar.MaxExpressions(filterParseBudget)); err != nil {
		return nil, badRequest("invalid filter %q: %v", expr, err)
	}
	f, err := bexpr.CreateFilter(expr)
	if err != nil {
		return nil, badRequest("invalid filter %q: %v", expr, err)
	}
	out, err := f.Execute(data)
	if err != nil {
		return nil, badRequest("filter %q: %v", expr, err)
	}
	return out, nil
}

// decodeBody decodes a JSON request body into out. An empty body is an
// error unless allowEmpty. Any decoding problem is a 400 with the reason;
// a body over the cap is a 413.
func decodeBody(r *http.Request, out any, allowEmpty bool) error {
	dec := json.NewDecoder(r.Body)
	err := dec.Decode(out)
	if err == io.EOF {
		if allowEmpty {
			return nil
		}
		return badRequest("request body is empty: a JSON object is expected")
	}
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return err
		}
		return badRequest("request decode failed: %v", err)
	}
	// Trailing data after the object is malformed input too.
	if _, err := dec.Token(); err != io.EOF {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return err
		}
		return badRequest("request decode failed: unexpected data after the JSON object")
	}
	return nil
}
