// Package h2link speaks HTTP/2 on the connection between two proxies: a
// ClientConn sends requests over one connection and a ServerConn serves
// them. It is standard HTTP/2 (RFC 9113) with prior knowledge, so either
// end also talks to net/http's HTTP/2, but it is written for a proxy's hot
// path rather than for every use of HTTP:
//
//   - No goroutine hand-offs where a proxy does not need them. The client
//     writes a request's frames on the caller's goroutine and the reader
//     goroutine hands it the answer; the server runs each request's handler
//     on a goroutine of its own, and the handler writes its frames itself.
//     A handler goroutine that is done waits a few seconds for the next
//     request, so its stack, grown to what the handler needs, is not grown
//     again from nothing for every request.
//     net/http's HTTP/2 passes every frame through a connection goroutine
//     and writes from yet another one.
//   - Writes gather: frames are written into a buffer under the connection's
//     write lock, and the last writer in the queue flushes, so a response's
//     headers, body and trailers, or the frames of several streams, leave in
//     one TLS record and one system call.
//   - HPACK keeps its dynamic table: headers repeated on every request (the
//     mesh's own, content types) cost a byte or two each.
//
// Flow control follows the RFC: every stream has a window of
// StreamWindow bytes, the connection one of ConnWindow, and credit is
// returned as the consumer reads, so a slow reader holds at most its
// window. The reader goroutine never waits on the socket: the frames it
// must send (window updates, acknowledgements, resets) are queued and sent
// by the next writer or by a control goroutine.
//
// It is strict where the RFC is: our SETTINGS are the first frame we send,
// whatever comes first (a GOAWAY of a shutdown included); a peer that sends
// DATA, RST_STREAM or WINDOW_UPDATE on a stream nobody opened yet, or more
// DATA than the window it was given (credit we have not returned yet is
// not the peer's to use), gets a connection error or a stream reset with
// the code the RFC names. Frames that cross a stream's end are ignored.
//
// What it leaves out: server push, priorities, CONNECT, and the h2c upgrade
// from HTTP/1.1. A peer that sends them gets the errors the RFC asks for.
package h2link
