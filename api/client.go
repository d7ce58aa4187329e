package api

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"
)

// HTTPAddrEnv names the environment variable with the agent's HTTP address.
const HTTPAddrEnv = "TRELLIS_HTTP_ADDR"

// consulHTTPAddrEnv is read when HTTPAddrEnv is not set, so scripts written
// for Consul keep working.
const consulHTTPAddrEnv = "CONSUL_HTTP_ADDR"

// DefaultAddress is the agent address used when nothing else is given.
const DefaultAddress = "127.0.0.1:8500"

// Config configures a Client.
type Config struct {
	// Address is the agent's HTTP address: "host:port", or a URL with a
	// scheme ("http://10.0.0.1:8500"). Default: $TRELLIS_HTTP_ADDR, then
	// $CONSUL_HTTP_ADDR, then 127.0.0.1:8500.
	Address string
	// Scheme is "http" or "https"; taken from Address when it has one.
	Scheme string
	// Datacenter is sent with every request when set.
	Datacenter string
	// HTTPClient makes the requests; a client with no overall timeout (for
	// blocking queries) when nil.
	HTTPClient *http.Client
}

// DefaultConfig returns the configuration from the environment.
func DefaultConfig() *Config {
	addr := os.Getenv(HTTPAddrEnv)
	if addr == "" {
		addr = os.Getenv(consulHTTPAddrEnv)
	}
	if addr == "" {
		addr = DefaultAddress
	}
	return &Config{Address: addr, Scheme: "http"}
}

// Client talks to one agent's HTTP API.
type Client struct {
	base       url.URL
	datacenter string
	http       *http.Client
}

// NewClient returns a client for cfg.
func NewClient(cfg *Config) (*Client, error) {
	if cfg == nil {
		cfg = DefaultConfig()
	}
	addr := cfg.Address
	if addr == "" {
		addr = DefaultAddress
	}
	scheme := cfg.Scheme
	if scheme == "" {
		scheme = "http"
	}
	if i := strings.Index(addr, "://"); i >= 0 {
		scheme, addr = addr[:i], addr[i+3:]
	}
	addr = strings.TrimSuffix(addr, "/")
	if scheme != "http" && scheme != "https" {
		return nil, fmt.Errorf("agent address %q: unknown scheme %q (want http or https)", cfg.Address, scheme)
	}
	if addr == "" || strings.ContainsAny(addr, "/?#") {
		return nil, fmt.Errorf("agent address %q: want host:port", cfg.Address)
	}
	hc := cfg.HTTPClient
	if hc == nil {
		hc = &http.Client{Transport: &http.Transport{
			Proxy:               http.ProxyFromEnvironment,
			MaxIdleConnsPerHost: 16,
			IdleConnTimeout:     90 * time.Second,
		}}
	}
	return &Client{base: url.URL{Scheme: scheme, Host: addr}, datacenter: cfg.Datacenter, http: hc}, nil
}

// Address returns the agent's base URL.
func (c *Client) Address() string { return c.base.String() }

// QueryOptions are the options of a read.
type QueryOptions struct {
	// Datacenter overrides the client's datacenter.
	Datacenter string
	// AllowStale lets any server answer (?stale).
	AllowStale bool
	// RequireConsistent makes the leader confirm its leadership (?consistent).
	RequireConsistent bool
	// WaitIndex makes the query blocking: it returns once the result's index
	// is above WaitIndex, or after WaitTime.
	WaitIndex uint64
	// WaitTime bounds a blocking query (default 5 minutes on the agent, at most 10).
	WaitTime time.Duration
	// Filter is a filter expression (?filter=).
	Filter string
	// ctx cancels the request.
	ctx context.Context
}

// WithContext returns a copy of q whose requests are cancelled with ctx.
func (q *QueryOptions) WithContext(ctx context.Context) *QueryOptions {
	c := *q
	c.ctx = ctx
	return &c
}

// QueryMeta is what the agent says about a read's answer.
type QueryMeta struct {
	// LastIndex is the X-Consul-Index of the answer; pass it as WaitIndex.
	LastIndex uint64
	// LastContact is how long ago the answering server heard from the leader.
	LastContact time.Duration
	// KnownLeader reports whether the answering server knows a leader.
	KnownLeader bool
	// RequestTime is how long the request took.
	RequestTime time.Duration
}

// WriteOptions are the options of a write.
type WriteOptions struct {
	Datacenter string
	ctx        context.Context
}

// WithContext returns a copy of w whose requests are cancelled with ctx.
func (w *WriteOptions) WithContext(ctx context.Context) *WriteOptions {
	c := *w
	c.ctx = ctx
	return &c
}

// WriteMeta is what the agent says about a write.
type WriteMeta struct {
	RequestTime time.Duration
}

// StatusError is the error of a request the agent answered with a status
// other than 2xx.
type StatusError struct {
	Code int
	// Body is the agent's explanation, trimmed.
	Body string
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("unexpected response code: %d (%s)", e.Code, e.Body)
}

// request is one HTTP request under construction.
type request struct {
	method string
	path   string
	params url.Values
	body   any
	ctx    context.Context
}

func (c *Client) newRequest(method, path string) *request {
	r := &request{method: method, path: path, params: url.Values{}, ctx: context.Background()}
	if c.datacenter != "" {
		r.params.Set("dc", c.datacenter)
	}
	return r
}

func (r *request) setQuery(q *QueryOptions) {
	if q == nil {
		return
	}
	if q.Datacenter != "" {
		r.params.Set("dc", q.Datacenter)
	}
	if q.AllowStale {
		r.params.Set("stale", "")
	}
	if q.RequireConsistent {
		r.params.Set("consistent", "")
	}
	if q.WaitIndex != 0 {
		r.params.Set("index", strconv.FormatUint(q.WaitIndex, 10))
	}
	if q.WaitTime != 0 {
		r.params.Set("wait", strconv.FormatInt(q.WaitTime.Milliseconds(), 10)+"ms")
	}
	if q.Filter != "" {
		r.params.Set("filter", q.Filter)
	}
	if q.ctx != nil {
		r.ctx = q.ctx
	}
}

func (r *request) setWrite(w *WriteOptions) {
	if w == nil {
		return
	}
	if w.Datacenter != "" {
		r.params.Set("dc", w.Datacenter)
	}
	if w.ctx != nil {
		r.ctx = w.ctx
	}
}

// do sends r and returns the response when it is 2xx; otherwise a *StatusError.
func (c *Client) do(r *request) (*http.Response, time.Duration, error) {
	u := c.base
	u.Path = r.path
	u.RawQuery = r.params.Encode()
	var body io.Reader
	if r.body != nil {
		if rd, ok := r.body.(io.Reader); ok {
			body = rd
		} else {
			b, err := json.Marshal(r.body)
			if err != nil {
				return nil, 0, fmt.Errorf("encode request body: %w", err)
			}
			body = bytes.NewReader(b)
		}
	}
	req, err := http.NewRequestWithContext(r.ctx, r.method, u.String(), body)
	if err != nil {
		return nil, 0, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	start := time.Now()
	resp, err := c.http.Do(req)
	rtt := time.Since(start)
	if err != nil {
		return nil, rtt, err
	}
	if resp.StatusCode/100 != 2 {
		defer resp.Body.Close()
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		return nil, rtt, &StatusError{Code: resp.StatusCode, Body: strings.TrimSpace(string(b))}
	}
	return resp, rtt, nil
}

// query runs a GET and decodes the answer into out.
func (c *Client) query(path string, out any, q *QueryOptions, extra url.Values) (*QueryMeta, error) {
	r := c.newRequest(http.MethodGet, path)
	r.setQuery(q)
	for k, vs := range extra {
		for _, v := range vs {
			r.params.Add(k, v)
		}
	}
	resp, rtt, err := c.do(r)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	meta := &QueryMeta{RequestTime: rtt}
	if err := parseQueryMeta(resp.Header, meta); err != nil {
		return nil, err
	}
	if out != nil {
		if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
			return nil, fmt.Errorf("decode answer of %s: %w", path, err)
		}
	}
	return meta, nil
}

// write runs a PUT with body (may be nil) and decodes the answer into out (may be nil).
func (c *Client) write(path string, body, out any, w *WriteOptions, extra url.Values) (*WriteMeta, error) {
	r := c.newRequest(http.MethodPut, path)
	r.setWrite(w)
	r.body = body
	for k, vs := range extra {
		for _, v := range vs {
			r.params.Add(k, v)
		}
	}
	resp, rtt, err := c.do(r)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if out != nil {
		if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
			return nil, fmt.Errorf("decode answer of %s: %w", path, err)
		}
	} else {
		_, _ = io.Copy(io.Discard, resp.Body)
	}
	return &WriteMeta{RequestTime: rtt}, nil
}

func parseQueryMeta(h http.Header, m *QueryMeta) error {
	if s := h.Get("X-Consul-Index"); s != "" {
		idx, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			return fmt.Errorf("parse X-Consul-Index %q: %w", s, err)
		}
		m.LastIndex = idx
	}
	if s := h.Get("X-Consul-LastContact"); s != "" {
		ms, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			return fmt.Errorf("parse X-Consul-LastContact %q: %w", s, err)
		}
		m.LastContact = time.Duration(ms) * time.Millisecond
	}
	m.KnownLeader = h.Get("X-Consul-KnownLeader") == "true"
	return nil
}
