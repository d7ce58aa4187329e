package proxy

import (
	"bytes"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// A tunnel is one mutual-TLS connection between two proxies that carries
// many application connections, each as an HTTP/2 CONNECT stream (as
// Istio's HBONE does). It speaks HTTP/2's framing (x/net/http2's Framer and
// HPACK), but only the part a CONNECT tunnel needs, written for the proxy's
// path rather than for HTTP:
//
//   - No goroutine hand-offs on the data path. The tunnel's reader
//     goroutine writes each DATA frame's payload straight to the
//     application's socket; each stream's own goroutine reads its
//     application and writes DATA frames to the TLS connection under a
//     lock. A request and its answer cross each proxy with one wake-up
//     per direction, as a plain TCP relay would.
//   - A stream whose application reads slowly does not stall the others:
//     the reader writes to applications without waiting (rawWriter); what a
//     full socket does not take goes to a queue drained by a goroutine of
//     its own, and flow control (a window per stream) bounds the queue.
//   - Writes gather under the TLS connection (see batchConn), so a large DATA
//     frame leaves in one system call, and frames of several streams that
//     queue up behind the lock leave together.
//
// Both directions of a stream end independently (END_STREAM), so a
// half-closed application connection behaves as over plain TCP. RST_STREAM
// aborts a stream; GOAWAY stops new streams on a tunnel, which then closes
// once its streams are done.

// Tunnel tuning, the same on both ends.
const (
	// streamWindow is the flow-control window of a stream: what may be in
	// flight to (or queued for) one application connection.
	streamWindow = 1 << 20
	// connWindow is the window of a whole tunnel.
	connWindow = 16 << 20
	// maxFrameSize is the largest frame a peer may send us.
	maxFrameSize = 1 << 20
	// dataChunk is the most application data read (and sent) at once.
	dataChunk = 64 << 10
	// maxStreams is how many streams a client may open on one tunnel; a
	// pool opens another tunnel past it.
	maxStreams = 1000
	// frameHeaderLen is the size of an HTTP/2 frame header.
	frameHeaderLen = 9
)

var chunkBufs = sync.Pool{New: func() any {
	b := make([]byte, frameHeaderLen+dataChunk)
	return &b
}}

// errTunnelClosed is the error of streams of a tunnel that ended.
var errTunnelClosed = errors.New("tunnel connection closed")

// errStreamReset means the peer reset the stream.
var errStreamReset = errors.New("stream reset by the peer")

// tunnelHooks are what a tunnel asks of its proxy.
type tunnelHooks struct {
	// spawn runs f as one of the proxy's goroutines; false when closing.
	spawn func(f func()) bool
	// accept (server side) decides a new stream for authority, from the
	// reader goroutine: it must be fast. It returns 0 to accept (and then
	// serve runs in a goroutine of its own), or an HTTP status and a
	// message to refuse with.
	accept func(s *stream, authority string) (status int, message string)
	// serve (server side) serves an accepted stream.
	serve func(s *stream)
	// closed is called once the tunnel has closed.
	closed func(t *tunnel)
}

// tunnel is one side of a tunnel connection.
type tunnel struct {
	server bool
	tls    *tls.Conn
	wire   *batchConn
	hooks  tunnelHooks
	// peer is the verified identity of the other side's leaf (its SPIFFE ID
	// string), for logs.
	peer string

	// Writes: frames are written under wmu; waiting counts writers queued
	// for it, so the holder knows whether someone else will flush.
	wmu     sync.Mutex
	waiting atomic.Int32
	wfr     *http2.Framer // writes only; guarded by wmu
	hbuf    bytes.Buffer  // HPACK output; guarded by wmu
	henc    *hpack.Encoder

	// Flow control of what we send: guarded by fcMu, waited on with fcCond.
	fcMu       sync.Mutex
	fcCond     sync.Cond
	sendWindow int64 // the connection's
	peerInit   int64 // the peer's initial stream window
	peerFrame  int   // the largest frame the peer takes

	mu        sync.Mutex
	streams   map[uint32]*stream // guarded by mu
	nextID    uint32             // guarded by mu; client: next stream ID
	lastPeer  uint32             // guarded by mu; server: highest stream ID seen
	peerMax   int                // guarded by mu; streams the peer lets us open
	goingAway bool               // guarded by mu; no new streams (GOAWAY sent or received)
	closed    bool               // guarded by mu
	closeErr  error              // guarded by mu
	idleSince time.Time          // guarded by mu; when the last stream ended

	// Control frames (window updates, acknowledgements, refusals) come
	// from the reader, which must never wait on the socket: if it did, two
	// proxies whose sockets are full would each wait for the other to read.
	// They are encoded into ctlBuf and sent by the control goroutine, or by
	// any writer that takes the write lock first.
	ctlMu   sync.Mutex
	ctlBuf  bytes.Buffer  // guarded by ctlMu
	ctlFr   *http2.Framer // writes into ctlBuf; guarded by ctlMu
	ctlHbuf bytes.Buffer  // guarded by ctlMu
	ctlEnc  *hpack.Encoder
	ctlWake chan struct{} // buffered: control frames wait

	// owed (server) are the streams accepted since the last sweep of owed
	// answers; the first of them arms the sweep, through owedWake.
	owed     []*stream     // guarded by mu
	owedWake chan struct{} // buffered
	// pressed (server) are the streams whose clients have sent answerAfter
	// bytes without an answer: the control goroutine answers them at once,
	// woken by pressedWake.
	pressed     []*stream     // guarded by mu
	pressedWake chan struct{} // buffered

	// connUnacked is what the reader received and not yet credited back
	// to the peer's connection window.
	connUnacked atomic.Int64
	// answerDelay (server) is how long an accepted stream's answer waits
	// for the application's first bytes (see stream.accepted).
	answerDelay time.Duration
	done        chan struct{} // closed when the reader has ended
	closing     chan struct{} // closed by close
}

// newTunnel wraps an established TLS connection (whose handshake ran over
// w) and sends the connection preface. The caller runs t.run in a
// goroutine.
func newTunnel(server bool, c *tls.Conn, w *batchConn, peer string, hooks tunnelHooks) (*tunnel, error) {
	t := &tunnel{
		server: server, tls: c, wire: w, hooks: hooks, peer: peer,
		streams: map[uint32]*stream{}, nextID: 1, peerMax: 100,
		sendWindow: 65535, peerInit: 65535, peerFrame: 16 << 10,
		idleSince: time.Now(), done: make(chan struct{}), closing: make(chan struct{}),
		ctlWake: make(chan struct{}, 1), owedWake: make(chan struct{}, 1), pressedWake: make(chan struct{}, 1),
		answerDelay: answerDelay,
	}
	t.fcCond.L = &t.fcMu
	t.wfr = http2.NewFramer(c, nil)
	t.ctlFr = http2.NewFramer(&t.ctlBuf, nil)
	// Header blocks are encoded without HPACK's dynamic table: two
	// encoders (the writers' and the control queue's) feed one decoder, in
	// an order neither knows, so neither may keep state.
	t.henc = statelessEncoder(&t.hbuf)
	t.ctlEnc = statelessEncoder(&t.ctlHbuf)
	err := t.write(func() error {
		if !server {
			if _, err := io.WriteString(c, http2.ClientPreface); err != nil {
				return err
			}
		}
		err := t.wfr.WriteSettings(
			http2.Setting{ID: http2.SettingInitialWindowSize, Val: streamWindow},
			http2.Setting{ID: http2.SettingMaxFrameSize, Val: maxFrameSize},
			http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: maxStreams},
			http2.Setting{ID: http2.SettingEnablePush, Val: 0},
		)
		if err != nil {
			return err
		}
		return t.wfr.WriteWindowUpdate(0, connWindow-65535)
	})
	if err != nil {
		return nil, fmt.Errorf("tunnel preface: %w", err)
	}
	return t, nil
}

func statelessEncoder(w io.Writer) *hpack.Encoder {
	e := hpack.NewEncoder(w)
	e.SetMaxDynamicTableSizeLimit(0)
	e.SetMaxDynamicTableSize(0)
	return e
}

// write runs fn, which writes frames, under the write lock, and flushes the
// gathered bytes unless another writer is queued (it will flush). Control
// frames waiting go out with them. The reader never calls it (see control).
func (t *tunnel) write(fn func() error) error {
	t.waiting.Add(1)
	t.wmu.Lock()
	t.waiting.Add(-1)
	defer t.wmu.Unlock()
	t.wire.gather()
	err := t.writeControlLocked()
	if err == nil {
		err = fn()
	}
	if t.waiting.Load() == 0 || err != nil {
		if ferr := t.wire.flush(); err == nil {
			err = ferr
		}
	}
	return err
}

// control queues control frames, which fn writes to the framer it is
// given, without waiting on the socket.
func (t *tunnel) control(fn func(fr *http2.Framer, enc *hpack.Encoder, hbuf *bytes.Buffer) error) {
	t.ctlMu.Lock()
	_ = fn(t.ctlFr, t.ctlEnc, &t.ctlHbuf) // writes to a buffer: no error
	t.ctlMu.Unlock()
	select {
	case t.ctlWake <- struct{}{}:
	default:
	}
}

// writeControlLocked sends the queued control frames; wmu must be held.
func (t *tunnel) writeControlLocked() error {
	t.ctlMu.Lock()
	defer t.ctlMu.Unlock()
	if t.ctlBuf.Len() == 0 {
		return nil
	}
	_, err := t.tls.Write(t.ctlBuf.Bytes())
	t.ctlBuf.Reset()
	return err
}

// runControl sends queued control frames until the tunnel closes, the
// answers still owed answerDelay after they were first owed, and those of
// pressed streams at once.
func (t *tunnel) runControl() {
	sweep := time.NewTimer(time.Hour)
	sweep.Stop()
	defer sweep.Stop()
	for {
		select {
		case <-t.closing:
			return
		case <-t.owedWake:
			sweep.Reset(t.answerDelay)
			continue
		case <-sweep.C:
			if err := t.answerOwed(); err != nil {
				t.close(err)
				return
			}
			continue
		case <-t.pressedWake:
			if err := t.answerPressed(); err != nil {
				t.close(err)
				return
			}
			continue
		case <-t.ctlWake:
		}
		if err := t.write(func() error { return nil }); err != nil {
			t.close(err)
			return
		}
	}
}

// run reads frames until the connection ends, then closes the tunnel.
// Control frames are sent by a goroutine of their own meanwhile.
func (t *tunnel) run() {
	if !t.hooks.spawn(t.runControl) {
		t.close(errTunnelClosed)
		close(t.done)
		return
	}
	defer close(t.done)
	var err error
	if t.server {
		err = t.readPreface()
	}
	fr := http2.NewFramer(nil, t.tls)
	fr.SetMaxReadFrameSize(maxFrameSize)
	fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	fr.MaxHeaderListSize = 16 << 10
	fr.SetReuseFrames()
	for err == nil {
		var f http2.Frame
		if f, err = fr.ReadFrame(); err != nil {
			break
		}
		err = t.handle(f)
	}
	t.close(err)
}

func (t *tunnel) readPreface() error {
	buf := make([]byte, len(http2.ClientPreface))
	if _, err := io.ReadFull(t.tls, buf); err != nil {
		return fmt.Errorf("read the tunnel preface: %w", err)
	}
	if string(buf) != http2.ClientPreface {
		return errors.New("not an HTTP/2 tunnel: bad connection preface")
	}
	return nil
}

// handle applies one frame; an error ends the tunnel.
func (t *tunnel) handle(f http2.Frame) error {
	switch f := f.(type) {
	case *http2.DataFrame:
		n := int64(f.Length) // padding counts against flow control too
		t.credit(n)
		s := t.stream(f.StreamID)
		if s == nil {
			return nil // a stream we already ended; its data is dropped
		}
		if len(f.Data()) > 0 {
			s.deliver(f.Data(), f.StreamEnded())
		}
		if f.StreamEnded() {
			s.remoteEnd()
		}
	case *http2.MetaHeadersFrame:
		if t.server {
			return t.openRemote(f)
		}
		if s := t.stream(f.StreamID); s != nil {
			s.response(f)
		}
	case *http2.RSTStreamFrame:
		if s := t.stream(f.StreamID); s != nil {
			s.abort(errStreamReset, false)
		}
	case *http2.WindowUpdateFrame:
		t.fcMu.Lock()
		if f.StreamID == 0 {
			t.sendWindow += int64(f.Increment)
		} else if s := t.stream(f.StreamID); s != nil {
			s.sendWindow += int64(f.Increment)
		}
		t.fcCond.Broadcast()
		t.fcMu.Unlock()
	case *http2.SettingsFrame:
		if f.IsAck() {
			return nil
		}
		if err := t.applySettings(f); err != nil {
			return err
		}
		t.control(func(fr *http2.Framer, _ *hpack.Encoder, _ *bytes.Buffer) error { return fr.WriteSettingsAck() })
	case *http2.PingFrame:
		if !f.IsAck() {
			data := f.Data
			t.control(func(fr *http2.Framer, _ *hpack.Encoder, _ *bytes.Buffer) error { return fr.WritePing(true, data) })
		}
	case *http2.GoAwayFrame:
		t.mu.Lock()
		t.goingAway = true
		t.mu.Unlock()
		t.closeIfIdle()
	}
	return nil
}

func (t *tunnel) applySettings(f *http2.SettingsFrame) error {
	return f.ForeachSetting(func(s http2.Setting) error {
		switch s.ID {
		case http2.SettingInitialWindowSize:
			t.fcMu.Lock()
			delta := int64(s.Val) - t.peerInit
			t.peerInit = int64(s.Val)
			t.mu.Lock()
			for _, st := range t.streams {
				st.sendWindow += delta
			}
			t.mu.Unlock()
			t.fcCond.Broadcast()
			t.fcMu.Unlock()
		case http2.SettingMaxFrameSize:
			t.fcMu.Lock()
			t.peerFrame = int(s.Val)
			t.fcMu.Unlock()
		case http2.SettingMaxConcurrentStreams:
			t.mu.Lock()
			t.peerMax = int(min(s.Val, maxStreams))
			t.mu.Unlock()
		}
		return nil
	})
}

// credit returns n bytes of the connection window to the peer once enough
// has been delivered.
func (t *tunnel) credit(n int64) {
	if v := t.connUnacked.Add(n); v >= connWindow/4 {
		if t.connUnacked.CompareAndSwap(v, 0) {
			t.control(func(fr *http2.Framer, _ *hpack.Encoder, _ *bytes.Buffer) error {
				return fr.WriteWindowUpdate(0, uint32(v))
			})
		}
	}
}

func (t *tunnel) stream(id uint32) *stream {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.streams[id]
}

// canOpen reports whether a client tunnel takes another stream.
func (t *tunnel) canOpen() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return !t.closed && !t.goingAway && len(t.streams) < t.peerMax && t.nextID < 1<<31-2
}

// activeStreams returns how many streams are open.
func (t *tunnel) activeStreams() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.streams)
}

// idleFor returns how long a tunnel without streams has been idle (0 when
// it has streams).
func (t *tunnel) idleFor(now time.Time) time.Duration {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.streams) > 0 {
		return 0
	}
	return now.Sub(t.idleSince)
}

// isClosed reports whether the tunnel has closed.
func (t *tunnel) isClosed() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.closed
}

// drain stops new streams on the tunnel (telling the peer with GOAWAY) and
// closes it once its streams have ended.
func (t *tunnel) drain() {
	t.mu.Lock()
	if t.goingAway || t.closed {
		t.mu.Unlock()
		return
	}
	t.goingAway = true
	last := t.lastPeer
	t.mu.Unlock()
	_ = t.write(func() error { return t.wfr.WriteGoAway(last, http2.ErrCodeNo, nil) })
	t.closeIfIdle()
}

func (t *tunnel) closeIfIdle() {
	t.mu.Lock()
	idle := t.goingAway && len(t.streams) == 0
	t.mu.Unlock()
	if idle {
		t.close(nil)
	}
}

// close ends the tunnel and every stream on it. It is idempotent.
func (t *tunnel) close(err error) {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return
	}
	t.closed = true
	if err == nil {
		err = errTunnelClosed
	}
	t.closeErr = err
	streams := make([]*stream, 0, len(t.streams))
	for _, s := range t.streams {
		streams = append(streams, s)
	}
	t.mu.Unlock()
	close(t.closing)
	// The TCP connection, not the TLS one: close_notify could wait on a
	// peer that does not read.
	t.wire.Conn.Close()
	t.fcMu.Lock()
	t.fcCond.Broadcast()
	t.fcMu.Unlock()
	for _, s := range streams {
		s.abort(errTunnelClosed, false)
	}
	if t.hooks.closed != nil {
		t.hooks.closed(t)
	}
}

// removeStream forgets a finished stream.
func (t *tunnel) removeStream(s *stream) {
	t.mu.Lock()
	if t.streams[s.id] == s {
		delete(t.streams, s.id)
		if len(t.streams) == 0 {
			t.idleSince = time.Now()
		}
	}
	t.mu.Unlock()
	t.closeIfIdle()
}

// --- Opening streams ---

// open starts a CONNECT stream to authority for the application connection
// app (client side). The answer arrives on s.answer. The start of first,
// the application's bytes that are already at hand, goes out in a DATA
// frame with the HEADERS, as much as the flow-control windows take without
// waiting: one write, and one wake-up of the destination, instead of two.
// sent says how much of first went.
func (t *tunnel) open(authority string, app net.Conn, first []byte) (s *stream, sent int, err error) {
	// Stream IDs must reach the wire in increasing order: the ID is taken
	// under the write lock, with the HEADERS that opens it.
	err = t.write(func() error {
		t.mu.Lock()
		if t.closed || t.goingAway {
			t.mu.Unlock()
			return errTunnelClosed
		}
		s = newStream(t, t.nextID, app)
		t.nextID += 2
		t.streams[s.id] = s
		t.mu.Unlock()
		t.fcMu.Lock()
		s.sendWindow = t.peerInit
		if len(first) > 0 {
			sent = int(min(int64(len(first)), int64(t.peerFrame), max(s.sendWindow, 0), max(t.sendWindow, 0)))
			s.sendWindow -= int64(sent)
			t.sendWindow -= int64(sent)
		}
		t.fcMu.Unlock()
		t.hbuf.Reset()
		for _, hf := range []hpack.HeaderField{{Name: ":method", Value: "CONNECT"}, {Name: ":authority", Value: authority}} {
			if err := t.henc.WriteField(hf); err != nil {
				return err
			}
		}
		if err := t.wfr.WriteHeaders(http2.HeadersFrameParam{StreamID: s.id, BlockFragment: t.hbuf.Bytes(), EndHeaders: true}); err != nil {
			return err
		}
		if sent > 0 {
			return t.wfr.WriteData(s.id, false, first[:sent])
		}
		return nil
	})
	if errors.Is(err, errTunnelClosed) {
		return nil, 0, err
	}
	if err != nil {
		s.finish(err)
		t.close(err)
		return nil, 0, fmt.Errorf("open a stream: %w", err)
	}
	return s, sent, nil
}

// openRemote handles a new stream of the client (server side).
func (t *tunnel) openRemote(f *http2.MetaHeadersFrame) error {
	id := f.StreamID
	t.mu.Lock()
	if id%2 == 0 || id <= t.lastPeer {
		t.mu.Unlock()
		return fmt.Errorf("protocol error: stream %d opened out of order", id)
	}
	t.lastPeer = id
	refuse := t.goingAway || t.closed || len(t.streams) >= maxStreams
	var s *stream
	if !refuse {
		s = newStream(t, id, nil)
		t.streams[id] = s
	}
	t.mu.Unlock()
	if refuse {
		t.control(func(fr *http2.Framer, _ *hpack.Encoder, _ *bytes.Buffer) error {
			return fr.WriteRSTStream(id, http2.ErrCodeRefusedStream)
		})
		return nil
	}
	t.fcMu.Lock()
	s.sendWindow = t.peerInit
	t.fcMu.Unlock()
	if f.PseudoValue("method") != "CONNECT" || f.StreamEnded() {
		s.refuse(http2.ErrCodeProtocol, 405, "trellis: the mesh tunnel takes only CONNECT")
		return nil
	}
	if status, msg := t.hooks.accept(s, f.PseudoValue("authority")); status != 0 {
		s.refuse(http2.ErrCodeRefusedStream, status, msg)
		return nil
	}
	if !t.hooks.spawn(func() { t.hooks.serve(s) }) {
		s.abort(errTunnelClosed, true)
	}
	return nil
}

// --- Streams ---

// answer is the destination's answer to a CONNECT (client side).
type answer struct {
	status  int
	message string
	err     error
}

// stream is one application connection carried by a tunnel.
type stream struct {
	t  *tunnel
	id uint32

	// sendWindow is guarded by t.fcMu.
	sendWindow int64

	answerCh chan answer // client: the answer to the CONNECT (buffered)
	answered atomic.Bool
	// answerDue is set on the server once the application is connected:
	// the 200 answer is owed, and goes out with the first frame the stream
	// sends (see accepted).
	answerDue atomic.Bool

	mu          sync.Mutex
	app         net.Conn   // guarded by mu; nil on the server until the app is dialled
	appW        *rawWriter // guarded by mu; app's, for the reader's writes (only it uses it)
	queue       []byte     // guarded by mu; data waiting for a slow (or not yet dialled) application
	draining    bool       // guarded by mu; a drainer goroutine owns writes to app
	remoteEnded bool       // guarded by mu; the peer sent END_STREAM
	closedWrite bool       // guarded by mu; the application's write side was closed
	localEnded  bool       // guarded by mu; we sent END_STREAM
	finished    bool       // guarded by mu
	err         error      // guarded by mu; why the stream was aborted
	unacked     int64      // guarded by mu; delivered, not yet credited back
	// early counts the bytes delivered while the answer was owed (server),
	// until answerAfter of them press for it.
	early int // guarded by mu
	// message collects a refusal's body (client side): non-nil once a
	// refusal with status refusal arrived.
	message []byte // guarded by mu
	refusal int    // guarded by mu

	// onDeliver counts bytes handed to the application.
	onDeliver func(n int)
	done      chan struct{} // closed when the stream has finished
}

func newStream(t *tunnel, id uint32, app net.Conn) *stream {
	s := &stream{t: t, id: id, app: app, answerCh: make(chan answer, 1), done: make(chan struct{})}
	if app != nil {
		s.appW = newRawWriter(app)
	}
	return s
}

// response handles the HEADERS answering our CONNECT (client side).
func (s *stream) response(f *http2.MetaHeadersFrame) {
	status, _ := strconv.Atoi(f.PseudoValue("status"))
	if status == 200 && !f.StreamEnded() {
		s.answer(answer{status: 200})
		return
	}
	if status == 0 || status == 200 {
		status = 502 // a 200 that ends the stream at once carries nothing
	}
	if f.StreamEnded() {
		s.answer(answer{status: status})
		s.finish(errStreamReset)
		return
	}
	// A refusal: its body follows and ends with END_STREAM.
	s.mu.Lock()
	s.message, s.refusal = []byte{}, status
	s.mu.Unlock()
}

func (s *stream) answer(a answer) {
	if s.answered.CompareAndSwap(false, true) {
		s.answerCh <- a
	}
}

// refuse answers a stream with a status and a message and resets it.
func (s *stream) refuse(code http2.ErrCode, status int, msg string) {
	id := s.id
	s.t.control(func(fr *http2.Framer, enc *hpack.Encoder, hbuf *bytes.Buffer) error {
		hbuf.Reset()
		_ = enc.WriteField(hpack.HeaderField{Name: ":status", Value: strconv.Itoa(status)})
		_ = enc.WriteField(hpack.HeaderField{Name: "content-type", Value: "text/plain; charset=utf-8"})
		if err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: hbuf.Bytes(), EndHeaders: true}); err != nil {
			return err
		}
		if err := fr.WriteData(id, true, []byte(msg)); err != nil {
			return err
		}
		return fr.WriteRSTStream(id, code)
	})
	s.finish(errors.New(msg))
}

// accepted attaches the connected application to an accepted stream
// (server side) and owes the client its 200 answer. The answer does not go
// at once: it goes with the stream's first frame, the application's first
// bytes or its end (or ahead of a reset), or alone within answerDelay
// when the application is silent (see runControl), sooner once the client
// has sent answerAfter bytes. The client's first bytes reach the
// application first, and a request and its response cost the destination
// one write to the tunnel, and the source one wake-up, fewer. The answer
// still precedes anything of the stream's, so the client never takes
// another instance for a stream the application has seen.
func (s *stream) accepted(app net.Conn) {
	s.answerDue.Store(true)
	t := s.t
	t.mu.Lock()
	t.owed = append(t.owed, s)
	first := len(t.owed) == 1
	t.mu.Unlock()
	if first {
		select {
		case t.owedWake <- struct{}{}:
		default:
		}
	}
	s.setApp(app)
}

// answerDelay bounds how long a silent application keeps its stream's
// answer waiting for company (a client past maxEarly waits for it). One
// timer per tunnel serves all its streams, armed by the first answer owed
// since it last fired: a timer per stream, armed and stopped on every
// connection, cost the proxies a wake-up each (a fifth of their CPU for
// new connections).
const answerDelay = 10 * time.Millisecond

// answerAfter is how much a client may send to an application that has
// not spoken before its answer goes alone, without waiting for
// answerDelay: half of what the source keeps for a retry (maxEarly), past
// which it stops reading its application until the answer comes. A large
// upload to an application that answers at its end is never held.
const answerAfter = maxEarly / 2

// pressLocked counts n bytes delivered to the application while the
// answer is owed, and reports whether they just reached answerAfter (the
// caller then calls press). s.mu must be held.
func (s *stream) pressLocked(n int) bool {
	if s.early >= answerAfter || !s.answerDue.Load() {
		return false
	}
	s.early += n
	return s.early >= answerAfter
}

// press has the control goroutine send the stream's answer at once.
func (s *stream) press() {
	t := s.t
	t.mu.Lock()
	t.pressed = append(t.pressed, s)
	t.mu.Unlock()
	select {
	case t.pressedWake <- struct{}{}:
	default:
	}
}

// answerPressed sends the answers of the pressed streams, if still owed.
func (t *tunnel) answerPressed() error { return t.answerTaken(&t.pressed) }

// answerOwed sends the answers still owed of the streams accepted since
// the last sweep (their applications have been silent).
func (t *tunnel) answerOwed() error { return t.answerTaken(&t.owed) }

// answerTaken takes the streams of list (guarded by t.mu) and sends their
// answers, those still owed.
func (t *tunnel) answerTaken(list *[]*stream) error {
	t.mu.Lock()
	streams := *list
	*list = nil
	t.mu.Unlock()
	for _, s := range streams {
		if err := s.answer200(); err != nil {
			return err
		}
	}
	return nil
}

// writeAnswerLocked writes the owed 200 answer, if it still is; the write
// lock must be held.
func (s *stream) writeAnswerLocked() error {
	if !s.answerDue.Load() || !s.answerDue.CompareAndSwap(true, false) {
		return nil
	}
	t := s.t
	return writeAnswer200(t.wfr, t.henc, &t.hbuf, s.id)
}

// writeAnswer200 writes the HEADERS of a 200 answer to stream id.
func writeAnswer200(fr *http2.Framer, enc *hpack.Encoder, hbuf *bytes.Buffer, id uint32) error {
	hbuf.Reset()
	_ = enc.WriteField(hpack.HeaderField{Name: ":status", Value: "200"})
	return fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: hbuf.Bytes(), EndHeaders: true})
}

// answer200 sends the owed answer alone, if it still is owed.
func (s *stream) answer200() error {
	if !s.answerDue.Load() {
		return nil
	}
	return s.t.write(s.writeAnswerLocked)
}

// failed answers a stream whose application could not be reached (server side).
func (s *stream) failed(status int, msg string) {
	s.refuse(http2.ErrCodeConnect, status, msg)
}

// setApp attaches the application connection and delivers what arrived
// before it: from the caller's goroutine when the socket takes it all at
// once (the usual case: a request or a response, into a fresh socket),
// else from a drainer goroutine.
func (s *stream) setApp(app net.Conn) {
	s.mu.Lock()
	if s.finished {
		// Reset between its answer and now (an application that took the
		// request and reset its connection): finish closed no application,
		// so this one is closed here, and its pump ends.
		s.mu.Unlock()
		app.Close()
		return
	}
	s.app, s.appW = app, newRawWriter(app)
	start := len(s.queue) > 0 || s.remoteEnded
	if start {
		s.draining = true
	}
	w := s.appW
	s.mu.Unlock()
	if !start || (w.rc != nil && s.drainNow(w)) {
		return
	}
	if !s.t.hooks.spawn(s.drain) {
		s.abort(errTunnelClosed, true)
	}
}

// deliver hands the payload of a DATA frame to the application, from the
// tunnel's reader goroutine: straight to its socket when it keeps up,
// through the queue when it does not (or is not connected yet). last says
// that the peer's END_STREAM came with p (remoteEnd follows).
func (s *stream) deliver(p []byte, last bool) {
	s.mu.Lock()
	if s.finished || s.closedWrite {
		s.mu.Unlock()
		return
	}
	if s.message != nil { // a refusal's body
		if len(s.message) < 512 {
			s.message = append(s.message, p[:min(len(p), 512-len(s.message))]...)
		}
		s.mu.Unlock()
		return
	}
	if s.app == nil || s.draining {
		s.queue = append(s.queue, p...)
		s.mu.Unlock()
		return
	}
	w := s.appW
	s.mu.Unlock()

	n, blocked, err := w.writeLast(p, last)
	if err == nil && !blocked {
		s.delivered(n)
		return
	}
	if err == nil {
		// Slow application: the rest goes through the queue.
		s.delivered(n)
		s.mu.Lock()
		s.queue = append(s.queue, p[n:]...)
		s.draining = true
		s.mu.Unlock()
		if !s.t.hooks.spawn(s.drain) {
			s.abort(errTunnelClosed, true)
		}
		return
	}
	s.abort(fmt.Errorf("write to the application: %w", err), true)
}

// drainNow writes the queue to the application as far as its socket takes
// it without waiting, while the stream is draining. It reports whether it
// is done: the queue written (and draining over), or the stream failed.
// false leaves the rest queued, for drain.
func (s *stream) drainNow(w *rawWriter) bool { return s.drainWith(w.writeLast) }

// drain writes the queue to the application until it is empty, waiting
// for room as needed, then hands writes back to the tunnel's reader.
func (s *stream) drain() {
	s.mu.Lock()
	app := s.app
	s.mu.Unlock()
	s.drainWith(func(p []byte, _ bool) (int, bool, error) {
		n, err := app.Write(p)
		return n, false, err
	})
}

// drainWith writes the queue with write until the queue is empty (draining
// ends; a pending end of the peer's direction is passed on), the stream
// fails, or write reports the socket full (the rest stays queued, and
// drainWith returns false).
func (s *stream) drainWith(write func(p []byte, last bool) (n int, blocked bool, err error)) bool {
	for {
		s.mu.Lock()
		if s.finished {
			s.mu.Unlock()
			return true
		}
		chunk := s.queue
		s.queue = nil
		// With the peer's end already in, this chunk is the last: the end
		// follows it at once (the loop's next turn).
		last := s.remoteEnded && !s.closedWrite
		if len(chunk) == 0 {
			s.draining = false
			s.mu.Unlock()
			if last {
				s.closeAppWrite()
			}
			return true
		}
		s.mu.Unlock()
		n, blocked, err := write(chunk, last)
		s.delivered(n)
		if err != nil {
			s.abort(fmt.Errorf("write to the application: %w", err), true)
			return true
		}
		if blocked {
			s.mu.Lock()
			s.queue = append(chunk[n:], s.queue...)
			s.mu.Unlock()
			return false
		}
	}
}

// delivered credits n bytes back to the peer's stream window once enough
// has reached the application, and presses for an owed answer once the
// client has sent answerAfter bytes (server).
func (s *stream) delivered(n int) {
	if n <= 0 {
		return
	}
	if s.onDeliver != nil {
		s.onDeliver(n)
	}
	s.mu.Lock()
	pressed := s.pressLocked(n)
	s.unacked += int64(n)
	credit := int64(0)
	if s.unacked >= streamWindow/4 && !s.remoteEnded {
		credit, s.unacked = s.unacked, 0
	}
	s.mu.Unlock()
	if pressed {
		s.press()
	}
	if credit > 0 {
		id := s.id
		s.t.control(func(fr *http2.Framer, _ *hpack.Encoder, _ *bytes.Buffer) error {
			return fr.WriteWindowUpdate(id, uint32(credit))
		})
	}
}

// remoteEnd handles the peer's END_STREAM: once what it sent has been
// delivered, the application's write side is closed.
func (s *stream) remoteEnd() {
	s.mu.Lock()
	if s.message != nil { // the end of a refusal's body
		msg := string(s.message)
		status := s.refusal
		s.mu.Unlock()
		s.answer(answer{status: status, message: msg})
		s.finish(errStreamReset)
		return
	}
	s.remoteEnded = true
	now := s.app != nil && !s.draining && !s.closedWrite
	s.mu.Unlock()
	if now {
		s.closeAppWrite()
	}
}

func (s *stream) closeAppWrite() {
	s.mu.Lock()
	if s.closedWrite || s.app == nil {
		s.mu.Unlock()
		return
	}
	s.closedWrite = true
	app := s.app
	done := s.localEnded
	s.mu.Unlock()
	closeWrite(app)
	if done {
		s.finish(nil)
	}
}

// send writes application bytes as DATA frames, within the flow-control
// windows. buf holds frameHeaderLen bytes of room followed by the payload;
// send overwrites bytes before each chunk it sends (already sent) with
// that chunk's frame header. With end, the last frame carries END_STREAM
// (the application ended its direction after these bytes), as endLocal
// would send it alone.
func (s *stream) send(buf []byte, end bool) error {
	t := s.t
	off := frameHeaderLen
	for off < len(buf) {
		k, err := s.window(len(buf) - off)
		if err != nil {
			return err
		}
		frame := buf[off-frameHeaderLen : off+k]
		var flags byte
		if end && off+k == len(buf) {
			flags = byte(http2.FlagDataEndStream)
		}
		putFrameHeader(frame, k, flags, s.id)
		if err := t.write(func() error {
			if err := s.writeAnswerLocked(); err != nil {
				return err
			}
			_, err := t.tls.Write(frame)
			return err
		}); err != nil {
			t.close(err)
			return err
		}
		off += k
	}
	if end {
		s.endedLocal()
	}
	return nil
}

// endLocal sends END_STREAM: the application ended its direction.
func (s *stream) endLocal() error {
	var hdr [frameHeaderLen]byte
	putFrameHeader(hdr[:], 0, byte(http2.FlagDataEndStream), s.id)
	t := s.t
	err := t.write(func() error {
		if err := s.writeAnswerLocked(); err != nil {
			return err
		}
		_, err := t.tls.Write(hdr[:])
		return err
	})
	s.endedLocal()
	return err
}

// endedLocal records that END_STREAM went, and finishes the stream if the
// other direction is done too.
func (s *stream) endedLocal() {
	s.mu.Lock()
	s.localEnded = true
	// Done once the other direction has reached the application too. (A
	// client stream may end its direction before its application is
	// attached, when the application half-closes before the answer.)
	done := s.closedWrite
	s.mu.Unlock()
	if done {
		s.finish(nil)
	}
}

// window waits for flow-control credit and takes up to want bytes of it.
func (s *stream) window(want int) (int, error) {
	t := s.t
	t.fcMu.Lock()
	defer t.fcMu.Unlock()
	for {
		if err := s.abortErr(); err != nil {
			return 0, err
		}
		if t.isClosed() {
			return 0, errTunnelClosed
		}
		if s.sendWindow > 0 && t.sendWindow > 0 {
			k := int64(min(want, t.peerFrame))
			k = min(k, s.sendWindow, t.sendWindow)
			s.sendWindow -= k
			t.sendWindow -= k
			return int(k), nil
		}
		t.fcCond.Wait()
	}
}

func (s *stream) abortErr() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.finished {
		if s.err != nil {
			return s.err
		}
		return errTunnelClosed
	}
	return nil
}

// abort ends the stream at once: the application connection is closed,
// and with reset the peer is told (RST_STREAM).
func (s *stream) abort(err error, reset bool) {
	s.mu.Lock()
	if s.finished {
		s.mu.Unlock()
		return
	}
	s.mu.Unlock()
	if reset {
		id := s.id
		// An owed answer goes first: the client must not take another
		// instance for what this one's application may have seen.
		owed := s.answerDue.CompareAndSwap(true, false)
		s.t.control(func(fr *http2.Framer, enc *hpack.Encoder, hbuf *bytes.Buffer) error {
			if owed {
				if err := writeAnswer200(fr, enc, hbuf, id); err != nil {
					return err
				}
			}
			return fr.WriteRSTStream(id, http2.ErrCodeCancel)
		})
	}
	s.answer(answer{err: err})
	s.finish(err)
}

// finish marks the stream done, closes its application connection and
// wakes whoever waits on it.
func (s *stream) finish(err error) {
	s.mu.Lock()
	if s.finished {
		s.mu.Unlock()
		return
	}
	s.finished = true
	s.err = err
	app := s.app
	s.mu.Unlock()
	if app != nil {
		app.Close() // both directions are done, or the stream failed
	}
	t := s.t
	t.fcMu.Lock()
	t.fcCond.Broadcast() // a sender waiting for window
	t.fcMu.Unlock()
	close(s.done)
	t.removeStream(s)
}

// putFrameHeader writes an HTTP/2 DATA frame header into b[:9].
func putFrameHeader(b []byte, length int, flags byte, id uint32) {
	b[0], b[1], b[2] = byte(length>>16), byte(length>>8), byte(length)
	b[3] = byte(http2.FrameData)
	b[4] = flags
	binary.BigEndian.PutUint32(b[5:9], id&(1<<31-1))
}
