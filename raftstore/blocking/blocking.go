// Package blocking is the one blocking-query helper: every read that can
// block (the HTTP API's ?index=, the proxies' watches, the UI) goes through
// Query.
//
// The rules for a query function:
//
//  1. It reads only from the *state.Store it is given, and adds what it reads
//     to the WatchSet (the store's read methods do this).
//  2. It returns the index of the result: the Raft index that moves whenever
//     the result may have changed, and stores its result in the caller's
//     reply as a side effect. It may be called several times; only the last
//     call's result is kept.
//  3. It returns quickly and never blocks itself.
//
// Query returns at once when MinQueryIndex is 0, when the result's index is
// already above it, or on error; otherwise it waits for a change to what was
// read (or for the store to be replaced by a snapshot restore), re-runs the
// function, and returns once the index has moved past MinQueryIndex or the
// wait is over. The wait is MaxQueryTime (DefaultWait when 0, capped at
// MaxWait) plus a random jitter of up to 1/JitterFraction of it, so that many
// watchers started together do not all come back at the same moment. The
// returned index is never 0: clients would spin on it.
package blocking

import (
	"context"
	"math/rand/v2"
	"time"

	"github.com/hashicorp/go-memdb"

	"github.com/trellismesh/trellis/raftstore/state"
	"github.com/trellismesh/trellis/raftstore/structs"
)

const (
	// DefaultWait is the wait of a blocking query that names none.
	DefaultWait = 5 * time.Minute
	// MaxWait caps the wait a client may ask for.
	MaxWait = 10 * time.Minute
	// JitterFraction: up to 1/16 of the wait is added at random.
	JitterFraction = 16
)

// StateGetter returns the current store. It is called for each run of the
// query, since a snapshot restore replaces the store.
type StateGetter func() *state.Store

// QueryFn runs the query once against s, adding what it reads to ws, and
// returns the result's index.
type QueryFn func(ws memdb.WatchSet, s *state.Store) (uint64, error)

// Wait returns the time a blocking query with these options waits at most,
// jitter included.
func Wait(opts *structs.QueryOptions) time.Duration {
	wait := opts.MaxQueryTime
	if wait <= 0 {
		wait = DefaultWait
	}
	if wait > MaxWait {
		wait = MaxWait
	}
	return wait + rand.N(wait/JitterFraction+1)
}

// Query runs fn, blocking as the package doc describes, and sets meta.Index.
// It returns ctx's error if ctx ends first. An idle blocking query holds no
// goroutine beyond the caller's.
func Query(ctx context.Context, getState StateGetter, opts *structs.QueryOptions, meta *structs.QueryMeta, fn QueryFn) error {
	if opts.MinQueryIndex == 0 {
		idx, err := fn(nil, getState())
		meta.Index = nonZero(idx)
		return err
	}
	waitCtx, cancel := context.WithTimeout(ctx, Wait(opts))
	defer cancel()
	for {
		s := getState()
		ws := memdb.NewWatchSet()
		ws.Add(s.AbandonCh())
		idx, err := fn(ws, s)
		meta.Index = nonZero(idx)
		if err != nil || meta.Index > opts.MinQueryIndex {
			return err
		}
		if ws.WatchCtx(waitCtx) != nil {
			// The wait is over, or the caller gave up.
			return ctx.Err()
		}
	}
}

func nonZero(idx uint64) uint64 {
	if idx == 0 {
		return 1
	}
	return idx
}
