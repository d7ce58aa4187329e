package checks

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/trellismesh/trellis/raftstore/structs"
)

// drainMax is how much of a response body beyond the output is read and
// discarded so that the connection can be reused.
const drainMax = 64 << 10

// HTTP is a check that sends an HTTP request every interval: a 2xx answer is
// passing, 429 warning, anything else critical.
//
// Each HTTP check has its own client and transport, reused between probes;
// it keeps at most one idle connection, closed on Stop. Requests go directly
// to the target, ignoring HTTP_PROXY: a health check probes the instance,
// not a proxy in front of it.
type HTTP struct {
	*periodic
	url       *url.URL
	method    string
	transport *http.Transport
	client    *http.Client
}

var _ Check = (*HTTP)(nil)

func newHTTP(b base) (*HTTP, error) {
	u, err := url.Parse(b.def.HTTP)
	if err != nil {
		// Validate parsed it already; this is only a safeguard.
		return nil, structs.Invalid("Check.HTTP", "%v", err)
	}
	method := b.def.Method
	if method == "" {
		method = http.MethodGet
	}
	timeout := probeTimeout(b.def.Timeout, b.def.Interval)
	transport := &http.Transport{
		Proxy: nil,
		DialContext: (&net.Dialer{
			Timeout:   timeout,
			KeepAlive: 30 * time.Second,
		}).DialContext,
		TLSClientConfig: &tls.Config{
			// Only when the definition asks for it (tls_skip_verify).
			InsecureSkipVerify: b.def.TLSSkipVerify,
			MinVersion:         tls.VersionTLS12,
		},
		MaxIdleConns:        1,
		MaxIdleConnsPerHost: 1,
		IdleConnTimeout:     max(2*b.def.Interval, 30*time.Second),
		ForceAttemptHTTP2:   true,
	}
	c := &HTTP{
		url:       u,
		method:    method,
		transport: transport,
		client: &http.Client{
			Transport: transport,
			CheckRedirect: func(_ *http.Request, via []*http.Request) error {
				if len(via) > MaxRedirects {
					return http.ErrUseLastResponse
				}
				return nil
			},
		},
	}
	c.periodic = newPeriodic(b, c.do)
	return c, nil
}

// Stop ends the check, waits for its goroutine and closes idle connections.
func (c *HTTP) Stop() {
	c.periodic.Stop()
	c.transport.CloseIdleConnections()
}

// do sends one request and classifies the answer.
func (c *HTTP) do(ctx context.Context) (string, string) {
	prefix := fmt.Sprintf("HTTP %s %s: ", c.method, c.url.Redacted())
	var body io.Reader
	if c.def.Body != "" {
		body = strings.NewReader(c.def.Body)
	}
	req, err := http.NewRequestWithContext(ctx, c.method, c.url.String(), body)
	if err != nil {
		return structs.HealthCritical, prefix + err.Error()
	}
	for name, values := range c.def.Header {
		if strings.EqualFold(name, "Host") {
			if len(values) > 0 {
				req.Host = values[0]
			}
			continue
		}
		for _, v := range values {
			req.Header.Add(name, v)
		}
	}
	if req.Header.Get("User-Agent") == "" {
		req.Header.Set("User-Agent", UserAgent)
	}
	if req.Header.Get("Accept") == "" {
		req.Header.Set("Accept", "text/plain, text/*, */*")
	}

	resp, err := c.client.Do(req)
	if err != nil {
		return structs.HealthCritical, prefix + describeHTTPError(ctx, err, c.timeout)
	}
	defer resp.Body.Close()
	limit := c.outputMax()
	out, readErr := io.ReadAll(io.LimitReader(resp.Body, int64(limit)))
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, drainMax))

	output := prefix + resp.Status + " Output: " + string(out)
	if readErr != nil {
		output += " (reading body: " + describeHTTPError(ctx, readErr, c.timeout) + ")"
	}
	switch {
	case resp.StatusCode >= 200 && resp.StatusCode <= 299:
		return structs.HealthPassing, output
	case resp.StatusCode == http.StatusTooManyRequests:
		return structs.HealthWarning, output
	default:
		return structs.HealthCritical, output
	}
}

// describeHTTPError turns a client error into output text without repeating
// the method and URL that the output already starts with.
func describeHTTPError(ctx context.Context, err error, timeout time.Duration) string {
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return fmt.Sprintf("timed out after %s", timeout)
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	return err.Error()
}
