package rpc

import (
	"context"
	"encoding/json"
	"net"
	"sync"

	"github.com/hashicorp/go-hclog"

	"github.com/trellismesh/trellis/raftstore/structs"
)

// Handler serves one request: it decodes body into the method's arguments,
// runs it, and returns the reply to encode. It honours ctx, which ends when
// the caller cancels or the connection closes.
type Handler func(ctx context.Context, method string, body json.RawMessage) (any, error)

// MaxInFlight caps the requests running at once on one connection.
const MaxInFlight = 4096

// ServeConn serves requests on conn until it closes or ctx ends, then waits
// for the requests still running to finish (their contexts are cancelled).
// leader, when set, names the leader in every response.
func ServeConn(ctx context.Context, conn net.Conn, h Handler, leader func() string, logger hclog.Logger) {
	ctx, cancelAll := context.WithCancel(ctx)
	var (
		wg      sync.WaitGroup
		writeMu sync.Mutex
		mu      sync.Mutex
		cancels = map[uint64]context.CancelFunc{} // guarded by mu
	)
	defer func() {
		cancelAll()
		conn.Close()
		wg.Wait()
	}()
	go func() {
		<-ctx.Done()
		conn.Close() // unblocks the read below
	}()
	for {
		var req request
		if err := readFrame(conn, &req); err != nil {
			if ctx.Err() == nil {
				logger.Trace("rpc connection closed", "remote", conn.RemoteAddr(), "error", err)
			}
			return
		}
		if req.Cancel {
			mu.Lock()
			if c := cancels[req.ID]; c != nil {
				c()
			}
			mu.Unlock()
			continue
		}
		mu.Lock()
		if len(cancels) >= MaxInFlight {
			mu.Unlock()
			writeMu.Lock()
			_ = writeFrame(conn, response{ID: req.ID, Error: structs.ToRemote(structs.Invalid("", "too many requests in flight on one connection"))})
			writeMu.Unlock()
			continue
		}
		reqCtx, cancel := context.WithCancel(ctx)
		cancels[req.ID] = cancel
		mu.Unlock()
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() {
				mu.Lock()
				delete(cancels, req.ID)
				mu.Unlock()
				cancel()
			}()
			reply, err := h(reqCtx, req.Method, req.Body)
			resp := response{ID: req.ID}
			if leader != nil {
				resp.Leader = leader()
			}
			if err != nil {
				resp.Error = structs.ToRemote(err)
			} else if resp.Body, err = json.Marshal(reply); err != nil {
				resp.Error = structs.ToRemote(err)
				resp.Body = nil
			}
			writeMu.Lock()
			defer writeMu.Unlock()
			if err := writeFrame(conn, resp); err != nil {
				logger.Debug("write rpc response", "method", req.Method, "error", err)
			}
		}()
	}
}
