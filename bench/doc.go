// Package bench holds the benchmarks whose figures go into the issues'
// closing notes. Each one builds the trellis binary, starts it as its own
// process on free loopback ports, and drives it from the benchmark process
// over HTTP, so the load generator never runs inside the process it measures.
//
// Run them with `make bench`. Figures are reported with b.ReportMetric, so
// they appear in the standard benchmark output that benchstat reads.
package bench
