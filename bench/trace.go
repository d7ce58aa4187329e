package bench

import (
	"context"
	"net/http/httptrace"
)

// withWroteRequest returns a context whose HTTP requests call f once the
// request has been written to the connection.
func withWroteRequest(ctx context.Context, f func()) context.Context {
	return httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{
		WroteRequest: func(httptrace.WroteRequestInfo) { f() },
	})
}
