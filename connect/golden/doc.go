// Package golden owns the golden signals of the mesh's edges: for each pair
// of services that talk through the proxies, how many requests (or, for
// TCP, connections) went over it, how many failed, and how long they took.
//
// The proxies count into a [Recorder] (an atomic add per request); the
// agent drains it every report interval into [Sample]s and sends them to
// the servers; the leader keeps the recent reports of every node in a
// [Window], which merges them into [EdgeStats] for a service over the last
// few seconds. Latencies are kept in log-linear [Histogram]s (relative error
// under 7%), which merge by adding counts, so a p99 across many proxies is a
// true p99 and not an average of theirs.
//
// Each edge is seen from two sides: the caller's proxy ([Outbound]: the
// latency includes the network and the mesh hop) and the destination's
// ([Inbound]: it sees the intentions' denials, and the application's time).
//
// It imports nothing of ours, so the data plane and the servers share it.
package golden
