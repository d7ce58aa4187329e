package raftstore

import (
	"context"
	"fmt"
	"time"

	"github.com/hashicorp/go-metrics"

	"github.com/trellismesh/trellis/raftstore/fsm"
	"github.com/trellismesh/trellis/raftstore/state"
	"github.com/trellismesh/trellis/raftstore/structs"
)

// Catalog writes are batched: concurrent writes are gathered into one Raft
// entry (structs.BatchRequestType), applied in one state transaction. There
// is no waiting to fill a batch: a worker takes what is queued when it is
// free, so a lone write goes out at once, and under load each entry carries
// the writes that arrived while the previous ones were being committed.
const (
	// maxBatch caps the writes of one entry.
	maxBatch = 128
	// batchWorkers is how many entries may be in flight at once.
	batchWorkers = 4
)

// pendingWrite is a write waiting for its batch.
type pendingWrite struct {
	op   state.Op
	done chan writeResult // buffered: the worker never blocks on it
}

type writeResult struct {
	index uint64
	err   error
}

// submit queues op and waits for its result.
func (s *Server) submit(ctx context.Context, op state.Op) (uint64, error) {
	w := &pendingWrite{op: op, done: make(chan writeResult, 1)}
	select {
	case s.writes <- w:
	case <-ctx.Done():
		return 0, ctx.Err()
	case <-s.shutdownCh:
		return 0, structs.ErrShutdown
	}
	select {
	case r := <-w.done:
		return r.index, r.err
	case <-ctx.Done():
		// The write may still be applied; the caller learns it was not
		// confirmed.
		return 0, ctx.Err()
	case <-s.shutdownCh:
		return 0, structs.ErrShutdown
	}
}

// batchWorker gathers queued writes into entries until shutdown.
func (s *Server) batchWorker() {
	defer s.wg.Done()
	for {
		var first *pendingWrite
		select {
		case first = <-s.writes:
		case <-s.shutdownCh:
			return
		}
		batch := []*pendingWrite{first}
	gather:
		for len(batch) < maxBatch {
			select {
			case w := <-s.writes:
				batch = append(batch, w)
			default:
				break gather
			}
		}
		s.applyBatch(batch)
	}
}

func (s *Server) applyBatch(batch []*pendingWrite) {
	metrics.AddSample([]string{"trellis", "raft", "batch_size"}, float32(len(batch)))
	ops := make([]state.Op, len(batch))
	for i, w := range batch {
		ops[i] = w.op
	}
	idx, resp, err := s.applyEntry(structs.BatchRequestType, ops)
	if err == nil {
		br, ok := resp.(fsm.BatchResult)
		if !ok || len(br.Errors) != len(batch) {
			err = fmt.Errorf("batch entry %d: unexpected result %T", idx, resp)
		} else {
			for i, w := range batch {
				w.done <- writeResult{index: idx, err: br.Errors[i]}
			}
			return
		}
	}
	for _, w := range batch {
		w.done <- writeResult{err: err}
	}
}

// applyEntry writes one entry through Raft and returns its index and the
// FSM's response. It is the one place that calls raft.Apply.
func (s *Server) applyEntry(t structs.MessageType, msg any) (uint64, any, error) {
	defer metrics.MeasureSince([]string{"trellis", "raft", "apply"}, time.Now())
	buf, err := structs.Encode(t, msg)
	if err != nil {
		return 0, nil, err
	}
	// Raft never answers an entry still queued when it shuts down: hold
	// Shutdown off until this one is answered.
	s.applyMu.RLock()
	defer s.applyMu.RUnlock()
	if s.closing {
		return 0, nil, structs.ErrShutdown
	}
	f := s.raft.Apply(buf, s.cfg.ApplyTimeout)
	if err := f.Error(); err != nil {
		return 0, nil, s.raftError(t, err)
	}
	if resErr, ok := f.Response().(error); ok && resErr != nil {
		return 0, nil, resErr
	}
	return f.Index(), f.Response(), nil
}
