// Package rpc is the internal RPC between agents and servers (and from a
// follower to the leader), carried on the server port after the mux's 0x02
// byte, in TLS when the cluster configures it.
//
// # Wire format
//
// Both directions carry frames: a 4-byte big-endian length, then one JSON
// object. A request frame is {ID, Method, Body}; a response {ID, Error, Body},
// with Error a structs.RemoteError so the caller rebuilds sentinel errors
// instead of matching strings. A frame {ID, Cancel: true} cancels a request in
// flight (the caller gave up). Requests on one connection run concurrently,
// each in its own goroutine on the server, so a blocking query held open for
// minutes costs one goroutine and no connection of its own.
package rpc

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/trellismesh/trellis/raftstore/structs"
)

// MaxFrame caps a frame: 4 MiB of request body plus envelope.
const MaxFrame = 8 << 20

// ErrUnavailable wraps failures to reach a server (dial, broken connection).
// Alone, it means the request never reached the server, so it did not run
// and may be sent to another; with structs.ErrReplyLost it may have run.
var ErrUnavailable = errors.New("server unreachable")

// request is a request frame.
type request struct {
	ID     uint64
	Method string          `json:",omitempty"`
	Body   json.RawMessage `json:",omitempty"`
	Cancel bool            `json:",omitempty"`
}

// response is a response frame.
type response struct {
	ID    uint64
	Error *structs.RemoteError `json:",omitempty"`
	Body  json.RawMessage      `json:",omitempty"`
	// Leader is the server-port address of the leader as the answering
	// server knows it, so clients can send the next request straight there.
	Leader string `json:",omitempty"`
}

func writeFrame(w io.Writer, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode frame: %w", err)
	}
	if len(b) > MaxFrame {
		return fmt.Errorf("frame of %d bytes is larger than %d", len(b), MaxFrame)
	}
	buf := make([]byte, 4+len(b))
	binary.BigEndian.PutUint32(buf, uint32(len(b)))
	copy(buf[4:], b)
	_, err = w.Write(buf)
	return err
}

func readFrame(r io.Reader, v any) error {
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return err
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if n > MaxFrame {
		return fmt.Errorf("frame of %d bytes is larger than %d", n, MaxFrame)
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(r, b); err != nil {
		return err
	}
	return json.Unmarshal(b, v)
}
