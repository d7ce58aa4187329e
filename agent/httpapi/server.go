// Package httpapi is the agent's HTTP API: the paths, verbs, parameters,
// headers and JSON of Consul's v1 API, so Consul's clients work unchanged.
//
// The whole route table is in routes.go. Every handler has the shape
// func(w, r) (any, error) and runs through one wrapper that checks the method
// (405 with Allow; OPTIONS answered), caps the body (4 MiB; 413), maps errors to
// status codes in one place (a *structs.ValidationError or malformed input is
// 400, structs.ErrNotFound 404, structs.ErrNoLeader 500 "No cluster leader")
// and encodes the result as JSON (indented with ?pretty).
//
// Reads that Consul blocks on take ?index=N&wait=D and answer with
// X-Consul-Index (never 0; also sent as X-Trellis-Index), X-Consul-KnownLeader
// and X-Consul-LastContact. One in flight when the server shuts down is
// answered at once, as if its wait had passed. The handlers reach the agent
// only through the Agent interface.
package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-metrics"

	"github.com/trellismesh/trellis/internal/authz"
	"github.com/trellismesh/trellis/raftstore/structs"
)

// MaxBodyBytes caps request bodies.
const MaxBodyBytes = 4 << 20

// Config configures a Server.
type Config struct {
	// Addrs are the host:port addresses to listen on; port 0 picks one.
	Addrs []string
	// UI, when set, is served under /ui/, and / redirects there.
	UI http.Handler
	// EnableDebug serves Go's profiler under /debug/pprof/ (enable_debug).
	EnableDebug bool
	// Authorizer decides every request before its handler runs; nil
	// allows all (authz.AllowAll).
	Authorizer authz.Authorizer
	// Logger is named "http"; nil means hclog.Default().
	Logger hclog.Logger
}

// Server is the HTTP API server.
type Server struct {
	agent  Agent
	authz  authz.Authorizer
	logger hclog.Logger
	mux    *http.ServeMux
	srv    *http.Server

	// stopping ends when Shutdown begins: blocking queries in flight, and
	// the profiler's timed captures, are answered at once then (see call).
	stopping context.Context
	stop     context.CancelFunc

	mu        sync.Mutex
	listeners []net.Listener // guarded by mu
	serveWG   sync.WaitGroup
	shutdown  bool // guarded by mu
}

// New returns a server for agent; Start binds it.
func New(cfg Config, agent Agent) *Server {
	logger := cfg.Logger
	if logger == nil {
		logger = hclog.Default()
	}
	az := cfg.Authorizer
	if az == nil {
		az = authz.AllowAll{}
	}
	s := &Server{agent: agent, authz: az, logger: logger.Named("http"), mux: http.NewServeMux()}
	s.stopping, s.stop = context.WithCancel(context.Background())
	s.registerRoutes(cfg.UI)
	if cfg.EnableDebug {
		// Profiles show the process's memory: operator:read, as in Consul.
		debug := func(h http.HandlerFunc) http.Handler {
			return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				req := authz.Request{Token: requestToken(r), Resource: authz.Operator, Access: authz.Read}
				if err := s.authz.Authorize(r.Context(), req); err != nil {
					http.Error(w, err.Error(), http.StatusForbidden)
					return
				}
				// A timed capture (?seconds=) ends when the server stops:
				// a CPU profile or trace answers what it has so far.
				ctx, cancel := s.untilStopping(r.Context())
				defer cancel()
				h(w, r.WithContext(ctx))
			})
		}
		s.mux.Handle("/debug/pprof/", debug(pprof.Index))
		s.mux.Handle("/debug/pprof/cmdline", debug(pprof.Cmdline))
		s.mux.Handle("/debug/pprof/profile", debug(pprof.Profile))
		s.mux.Handle("/debug/pprof/symbol", debug(pprof.Symbol))
		s.mux.Handle("/debug/pprof/trace", debug(pprof.Trace))
	}
	s.srv = &http.Server{
		Handler:           s.mux,
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          s.logger.StandardLogger(&hclog.StandardLoggerOptions{InferLevels: true}),
	}
	for _, a := range cfg.Addrs {
		s.listeners = append(s.listeners, &pendingListener{addr: a})
	}
	return s
}

// Handler returns the API's handler, for tests that serve it themselves.
func (s *Server) Handler() http.Handler { return s.mux }

// pendingListener holds an address until Start binds it.
type pendingListener struct {
	net.Listener
	addr string
}

// Start binds every address and serves them in the background.
func (s *Server) Start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.shutdown {
		return http.ErrServerClosed
	}
	for i, l := range s.listeners {
		p, ok := l.(*pendingListener)
		if !ok {
			continue
		}
		ln, err := net.Listen("tcp", p.addr)
		if err != nil {
			for _, bound := range s.listeners[:i] {
				bound.Close()
			}
			return fmt.Errorf("listen for HTTP on %s: %w", p.addr, err)
		}
		s.listeners[i] = ln
	}
	for _, ln := range s.listeners {
		s.serveWG.Add(1)
		go func() {
			defer s.serveWG.Done()
			if err := s.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				s.logger.Error("HTTP server stopped", "address", ln.Addr(), "error", err)
			}
		}()
		s.logger.Info("HTTP API listening", "address", ln.Addr())
	}
	return nil
}

// Addrs returns the bound addresses (after Start).
func (s *Server) Addrs() []net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []net.Addr
	for _, l := range s.listeners {
		if _, pending := l.(*pendingListener); !pending {
			out = append(out, l.Addr())
		}
	}
	return out
}

// Shutdown stops accepting, waits for requests in flight until ctx ends
// (then closes them), and returns once the serving goroutines are gone.
// Blocking queries in flight do not wait: they are answered at once with
// the current result and index, as when their wait passes, so that clients
// poll again (elsewhere) instead of holding the shutdown to its deadline.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.shutdown = true
	s.mu.Unlock()
	s.stop()
	err := s.srv.Shutdown(ctx)
	if err != nil {
		s.srv.Close()
	}
	s.serveWG.Wait()
	return err
}

// errStopping is the cause of the context of a blocking query that the
// server's shutdown ended.
var errStopping = errors.New("HTTP API shutting down")

// untilStopping returns a context of parent that also ends, with cause
// errStopping, when the server begins to shut down.
func (s *Server) untilStopping(parent context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancelCause(parent)
	unhook := context.AfterFunc(s.stopping, func() { cancel(errStopping) })
	return ctx, func() {
		unhook()
		cancel(context.Canceled)
	}
}

// isBlocking reports whether r is a blocking query: a read with ?index=
// above 0.
func isBlocking(r *http.Request) bool {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		return false
	}
	idx, err := strconv.ParseUint(r.URL.Query().Get("index"), 10, 64)
	return err == nil && idx > 0
}

// call runs h for r. A blocking query also ends when the server begins to
// shut down; it is then run again as a plain read (without ?index), which
// answers the current result and index at once: what the query would have
// answered had its wait passed. Reads are idempotent, so running one twice
// is safe; other requests keep the grace period Shutdown gives them.
func (s *Server) call(h handlerFunc, w http.ResponseWriter, r *http.Request) (any, error) {
	if !isBlocking(r) {
		return h(w, r)
	}
	ctx, cancel := s.untilStopping(r.Context())
	defer cancel()
	out, err := h(w, r.WithContext(ctx))
	if err == nil || !errors.Is(context.Cause(ctx), errStopping) {
		return out, err
	}
	plain := r.Clone(r.Context())
	q := plain.URL.Query()
	q.Del("index")
	plain.URL.RawQuery = q.Encode()
	plain.Form = nil
	return h(w, plain)
}

// handlerFunc is the shape of every endpoint.
type handlerFunc func(w http.ResponseWriter, r *http.Request) (any, error)

// noBody is returned by handlers that have written their own response.
var noBody = &struct{}{}

// badRequestError is malformed input found by the HTTP layer itself.
type badRequestError struct{ msg string }

func (e *badRequestError) Error() string { return e.msg }

func badRequest(format string, args ...any) error {
	return &badRequestError{msg: fmt.Sprintf(format, args...)}
}

// statusError carries an explicit status (used where Consul answers a
// domain condition with a special code).
type statusError struct {
	code int
	msg  string
}

func (e *statusError) Error() string { return e.msg }

// wrap turns an endpoint into an http.Handler: method check, body cap,
// error mapping, JSON encoding, logging and metrics.
func (s *Server) wrap(route string, methods []string, h handlerFunc) http.Handler {
	allow := strings.Join(append(slices.Clone(methods), http.MethodOptions), ", ")
	access, ok := accessOf(route)
	if !ok {
		panic("httpapi: route " + route + " has no entry in routeAccesses")
	}
	metricKey := []string{"trellis", "http", "request"}
	labels := []metrics.Label{{Name: "route", Value: route}}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		defer func() {
			metrics.MeasureSinceWithLabels(metricKey, start, append(labels, metrics.Label{Name: "method", Value: r.Method}))
		}()
		if r.Method == http.MethodOptions {
			w.Header().Set("Allow", allow)
			w.WriteHeader(http.StatusOK)
			return
		}
		if !slices.Contains(methods, r.Method) && !(r.Method == http.MethodHead && slices.Contains(methods, http.MethodGet)) {
			w.Header().Set("Allow", allow)
			http.Error(w, fmt.Sprintf("method %s not allowed", r.Method), http.StatusMethodNotAllowed)
			return
		}
		if r.ContentLength > MaxBodyBytes {
			http.Error(w, fmt.Sprintf("request body larger than %d bytes", MaxBodyBytes), http.StatusRequestEntityTooLarge)
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, MaxBodyBytes)
		if access.resource != "" {
			req := access.request(r)
			r = r.WithContext(authz.WithToken(r.Context(), req.Token))
			if err := s.authz.Authorize(r.Context(), req); err != nil {
				s.logger.Debug("request refused", "method", r.Method, "url", redactURL(r.URL), "error", err)
				http.Error(w, err.Error(), http.StatusForbidden)
				return
			}
		}
		out, err := s.call(h, w, r)
		if err != nil {
			code, msg := s.errorStatus(err)
			s.logger.Debug("request failed", "method", r.Method, "url", redactURL(r.URL), "status", code, "error", err)
			http.Error(w, msg, code)
			return
		}
		s.logger.Trace("request", "method", r.Method, "url", redactURL(r.URL), "duration", time.Since(start))
		if out == noBody {
			return
		}
		writeJSON(w, r, http.StatusOK, out)
	})
}

func writeJSON(w http.ResponseWriter, r *http.Request, code int, out any) {
	var buf []byte
	var err error
	if _, pretty := r.URL.Query()["pretty"]; pretty {
		buf, err = json.MarshalIndent(out, "", "    ")
	} else {
		buf, err = json.Marshal(out)
	}
	if err != nil {
		http.Error(w, "encode response: "+err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_, _ = w.Write(buf)
}

// errorStatus maps an error to its status code and message: the one place
// that does.
func (s *Server) errorStatus(err error) (int, string) {
	var (
		ve   *structs.ValidationError
		br   *badRequestError
		se   *statusError
		mbe  *http.MaxBytesError
		synt *json.SyntaxError
		typ  *json.UnmarshalTypeError
	)
	switch {
	case errors.As(err, &mbe):
		return http.StatusRequestEntityTooLarge, fmt.Sprintf("request body larger than %d bytes", mbe.Limit)
	case errors.As(err, &se):
		return se.code, se.msg
	case errors.As(err, &ve), errors.As(err, &br):
		return http.StatusBadRequest, err.Error()
	case errors.As(err, &synt), errors.As(err, &typ):
		return http.StatusBadRequest, "request decode failed: " + err.Error()
	case errors.Is(err, structs.ErrUnknownDatacenter):
		// The caller named it (?dc=, -datacenter): its mistake, not ours.
		return http.StatusBadRequest, err.Error()
	case errors.Is(err, structs.ErrNotFound):
		return http.StatusNotFound, err.Error()
	case errors.Is(err, structs.ErrConflict):
		return http.StatusConflict, err.Error()
	case errors.Is(err, structs.ErrNoLeader):
		return http.StatusInternalServerError, "No cluster leader"
	case errors.Is(err, structs.ErrLeadershipLost):
		return http.StatusInternalServerError, "Leadership lost while committing the write; it may or may not have been applied"
	case errors.Is(err, structs.ErrReplyLost):
		return http.StatusInternalServerError, "Connection to the server lost before its reply; the write may or may not have been applied"
	case errors.Is(err, context.Canceled):
		return 499, "request cancelled"
	}
	return http.StatusInternalServerError, err.Error()
}

// redactURL hides secrets in a URL before it is logged.
func redactURL(u *url.URL) string {
	q := u.Query()
	if q.Has("token") {
		q.Set("token", "<hidden>")
		c := *u
		c.RawQuery = q.Encode()
		return c.String()
	}
	return u.String()
}
