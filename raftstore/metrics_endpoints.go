package raftstore

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/trellismesh/trellis/connect/golden"
	"github.com/trellismesh/trellis/raftstore/structs"
)

// MetricsRetain is how long the leader keeps the agents' reports of golden
// signals, and so the widest window a query can ask for.
const MetricsRetain = 5 * time.Minute

// maxReportInterval bounds the interval a report may claim to cover.
const maxReportInterval = 5 * time.Minute

// metricsReport keeps one agent's report, after checking it.
func (s *Server) metricsReport(_ context.Context, req *structs.MetricsReportRequest, _ *struct{}) error {
	if err := s.checkWrite(req.Datacenter); err != nil {
		return err
	}
	switch {
	case req.Node == "" || len(req.Node) > 256:
		return structs.Invalid("Node", "a report needs the node's name (1 to 256 characters)")
	case req.IntervalMs <= 0 || time.Duration(req.IntervalMs)*time.Millisecond > maxReportInterval:
		return structs.Invalid("IntervalMs", "%d: want 1 ms to %s", req.IntervalMs, maxReportInterval)
	}
	if err := golden.Validate(req.Samples); err != nil {
		return structs.Invalid("Samples", "%v", err)
	}
	// Only a node of the catalog reports: a made-up name cannot fill the
	// window.
	_, ns, err := s.fsm.State().NodeServices(nil, req.Node)
	if err != nil {
		return err
	}
	if ns == nil {
		return structs.Invalid("Node", "%q is not a node of the catalog", req.Node)
	}
	if err := s.golden.Add(req.Node, time.Duration(req.IntervalMs)*time.Millisecond, req.Samples, time.Now()); err != nil {
		return fmt.Errorf("keep the report of %q: %w", req.Node, err)
	}
	return nil
}

// metricsEdges merges the recent reports into the golden signals of a
// service's edges.
func (s *Server) metricsEdges(_ context.Context, req *structs.MetricsEdgesRequest, reply *structs.MetricsEdgesReply) error {
	if err := s.checkWrite(req.Datacenter); err != nil {
		return err
	}
	window := time.Duration(req.WindowMs) * time.Millisecond
	if window <= 0 {
		return structs.Invalid("WindowMs", "%d: want a positive window", req.WindowMs)
	}
	window = min(window, s.golden.Retain())
	var match func(src, dst string) bool
	if svc := req.Service; svc != "" {
		match = func(src, dst string) bool { return strings.EqualFold(src, svc) || strings.EqualFold(dst, svc) }
	}
	reply.WindowMs = window.Milliseconds()
	reply.Edges = s.golden.Edges(window, time.Now(), match)
	return nil
}
