// Package l7 is the mesh's HTTP-aware data path: the part of a sidecar
// proxy that handles services whose protocol is http, http2 or grpc request
// by request, where package proxy relays TCP connections.
//
// # Outbound (the source proxy)
//
// An Outbound serves one upstream. The application connects to the
// upstream's local listener and speaks HTTP/1.1, or HTTP/2 with prior
// knowledge (h2c, as gRPC clients do); both are served on the same
// listener (Serve or ServeConn). For each request the Outbound
//
//   - evaluates the discovery chain (chain.Chain.Route): the first router
//     route that matches the path, headers, query and method, then a split
//     by weight with a random pick, then the resolver's target and its
//     failover targets;
//   - chooses the first of those targets that has an instance not ejected
//     (when none has, ejected instances are used: Envoy's panic routing),
//     and an instance of it by the resolver's policy: by default the power
//     of two choices on requests in flight; round_robin, random,
//     least_request (ChoiceCount samples), ring_hash and maglev (hashing
//     the header, cookie, query parameter or source IP of HashPolicies; a
//     random pick when none is present);
//   - rewrites the path (PrefixRewrite replaces the route's PathPrefix or
//     PathExact), applies the route's and the split's header modifiers,
//     strips hop-by-hop headers, and makes sure a W3C traceparent is there:
//     a valid one (with its tracestate) is passed on unchanged, since the
//     proxy records no spans of its own and the application's span stays
//     the parent; otherwise a new trace is started (random trace-id and
//     parent-id, flags 01, sampled) and an invalid tracestate dropped;
//   - forwards it over one HTTP/2 connection per instance, with mutual TLS
//     1.3 (connect.ClientTLSConfig, the instance's identity checked, ALPN
//     "trellis-http"), pooled and multiplexed: no handshake per request.
//     Another connection to the same instance is opened only when the
//     peer's stream limit is reached. Package h2link speaks that HTTP/2 on
//     both ends, with no goroutine hand-off on a request's way: the
//     request's goroutine writes its frames, the connection's reader hands
//     it the answer. A request the instance refused before processing it
//     (GOAWAY, REFUSED_STREAM) is sent once more.
//
// Timeouts: the route's RequestTimeout, else the resolver's, else
// OutboundConfig.RequestTimeout, bounds the whole request with its retries
// (504 when exceeded); the route's IdleTimeout ends a request that moved no
// data for that long (504 if nothing was answered yet).
//
// Retries: a request whose connection failed (nothing was sent) is tried
// on up to two other instances whatever the route says, and a GET, HEAD,
// OPTIONS or TRACE that failed on a pooled connection the peer may just
// have closed is sent once more (as net/http does). Beyond that the
// route's NumRetries, RetryOnConnectFailure, RetryOnStatusCodes and RetryOn
// ("5xx": any 5xx, reset or connect failure; "gateway-error": 502, 503,
// 504, reset or connect failure; "reset"; "connect-failure") decide. Only
// requests whose body can be sent again are retried after it was sent: no
// body, or a body of known length up to MaxReplayBody, kept in memory.
// A retry goes to an instance not tried yet when there is one, after a
// jittered backoff (below 25ms × 2^n, at most 250ms). The retry budget
// (RetryBudget, default 20% and 3) allows a retry only while the retries
// in flight are fewer than max(MinRetryConcurrency, Percent% of the
// requests in flight), so retries cannot multiply the load on a failing
// upstream; a retry it refuses is counted and the last answer returned.
//
// Circuit breaking (UpstreamLimits): beyond MaxConcurrentRequests in
// flight, MaxConnections to the upstream's instances, or
// MaxPendingRequests waiting for a connection being dialled, the proxy
// answers 503 with the header X-Trellis-Overloaded: true and counts it.
//
// Passive health checks (PassiveHealthCheck, Envoy's defaults: 5 failures,
// 30s, 10%): after MaxFailures consecutive 5xx answers, resets or connect
// failures, an instance is ejected for BaseEjectionTime × the number of
// times it was ejected (at most 300s, or the base if longer), unless that
// would eject more than MaxEjectionPercent of the target's instances (one
// may always be ejected). It comes back when the time is up; each healthy
// Interval after that lowers its multiplier by one.
//
// Errors the proxy answers itself have a plain-text body starting
// "trellis mesh:": 502 when no instance could be reached, 503 when the
// target has no healthy instance or a breaker is open, 504 on a timeout.
//
// # Inbound (the destination proxy)
//
// An Inbound serves HTTP/2 on the connections of the public listener that
// negotiated ALPN (ServeConn). The source is the SPIFFE identity of the
// connection's client certificate. Each request is authorized (Authorizer;
// IntentionsAuthorizer decides with intentions.Set.DecideHTTP, so L7
// permissions apply per request); a denied one is answered 403 "trellis
// mesh: request denied by intention X => Y" (or "by the default intention
// policy (source X → destination Y)"), counted and
// logged with source, destination, method, path and what decided. An
// allowed one is forwarded to the application with the caller's identity
// in X-Forwarded-Client-Cert: over pooled HTTP/1.1 keep-alive connections
// for protocol http (a request without a body or with a small one of known
// length is written and answered on the request's own goroutine; others go
// through net/http's Transport, which sends a body while it reads the
// answer; a kept connection idle for over half a second is peeked at
// without blocking before its reuse, so that one the application closed or
// sent an unasked 408 on is dropped, and a GET that meets a 408 on a kept
// connection anyway goes again on a new one), over h2c for http2 and grpc.
// A request body that does not match its Content-Length is answered 400,
// and one that comes more slowly than LocalRequestTimeout ends with it (504). Trailers pass both ways,
// responses without a length are flushed as they come (gRPC streams).
// A connection ends when the peer's certificate expires; Reverify ends
// those whose peer no longer verifies after a change of roots (and
// (*Outbound).DrainConnections moves the source side to new connections).
//
// Not handled per request: protocol upgrades (WebSocket) and CONNECT;
// such services are best left at protocol tcp.
//
// # Metrics
//
// Keys start with "trellis", "proxy", "http". Every metric has the labels
// proxy and service; outbound ones also upstream (the destination name).
// Requests are counted per class (label class: 1xx, 2xx, 3xx, 4xx, 5xx, or
// other for a client that went away); latency quantiles are gauges in
// milliseconds with the label quantile (0.5, 0.9, 0.99), computed from a
// bucketed histogram (relative error under 7%) over the samples since the
// previous emission, and not emitted for an interval without requests.
//
//	upstream.requests               counter  requests answered (labels route, class)
//	upstream.latency_ms             gauge    latency to the answer's end (labels route, quantile)
//	upstream.retries                counter  retry attempts
//	upstream.retry_budget_exhausted counter  retries the budget refused
//	upstream.overloaded             counter  requests refused by a circuit breaker
//	upstream.ejections              counter  instances ejected by passive health checks
//	upstream.timeouts               counter  requests ended by a request or idle timeout
//	upstream.connect_failures       counter  failed dials or handshakes to instances
//	upstream.connections            counter  connections opened to instances
//	inbound.requests                counter  requests answered (labels source, class)
//	inbound.latency_ms              gauge    latency (labels source, quantile)
//	inbound.denied                  counter  requests denied by intentions (label source)
//	inbound.timeouts                counter  requests ended by LocalRequestTimeout
//	inbound.app_errors              counter  requests the application could not be reached for
//	inbound.overloaded              counter  requests refused by MaxConcurrentRequests
//
// The route label is the chain's route name ("route:N", or "default").
// Counting is an atomic add on the request's path; the proxy emits what
// changed once a second (go-metrics' global sink), and when it closes.
package l7
