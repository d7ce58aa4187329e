// Package checks runs the health checks an agent owns: TTL checks (set from
// outside through the agent API), HTTP checks and TCP checks. Each check is a
// Check with Start and Stop; results go out through a Notifier, which the
// agent's local state implements.
//
// # Results
//
//   - HTTP: a 2xx answer is passing, 429 Too Many Requests is warning, any
//     other answer or a transport error (refused, reset, timed out) is
//     critical. The output reads "HTTP GET <url>: 200 OK Output: <body>".
//   - TCP: a connection opened within the timeout is passing
//     ("TCP connect <addr>: Success"), anything else critical.
//   - TTL: the status and output are whatever SetStatus was last given; when
//     the TTL passes without a SetStatus the check turns critical with the
//     output "TTL expired".
//
// Output is cut to the definition's OutputMaxSize (DefaultOutputMaxSize when
// zero), at a UTF-8 boundary.
//
// # Timing
//
// An HTTP or TCP check probes every Interval, measured from the end of one
// probe to the start of the next. Each probe is bounded by Timeout
// (DefaultTimeout when zero), never more than the interval.
//
// The first probe is staggered: it runs after a random delay in
// [0, min(Interval, MaxFirstDelay)). Spreading over a whole interval, as some
// agents do, leaves a service with a 30 s check critical for up to 30 s after
// it registers, which users read as a failure; capping the delay at one second
// gives a status promptly (and keeps tests fast) while still not firing every
// check of a restarting agent in the same instant. To keep checks that start
// together from probing in lockstep forever, the second probe comes after a
// random delay in [Interval/2, Interval); from then on the period is
// Interval. Probing once a little early costs nothing and never delays the
// detection of a failure.
//
// # Damping
//
// SuccessBeforePassing and FailuresBeforeCritical (0 and 1 both mean "at
// once") hold back a change of status until that many consecutive probes
// agree: a passing result is reported only after SuccessBeforePassing passes
// in a row, a warning or critical one only after FailuresBeforeCritical
// non-passing results in a row. Results held back are not reported at all,
// so the catalog keeps the last reported status and output. TTL checks are
// not damped: their status is set on purpose.
//
// # Lifecycle
//
// Start launches the check's goroutine; Stop cancels it (aborting a probe in
// flight), waits until it has exited, and for HTTP checks closes the idle
// connections of the check's own transport. Both are idempotent, and a
// stopped check does not start again.
package checks
