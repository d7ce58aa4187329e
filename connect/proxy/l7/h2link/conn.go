package h2link

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// Tuning, the same on both ends.
const (
	// StreamWindow is the flow-control window of a stream: what a peer may
	// send on it before the reader has read.
	StreamWindow = 1 << 20
	// ConnWindow is the flow-control window of a connection.
	ConnWindow = 16 << 20
	// DefaultMaxStreams is how many streams a server lets a client open at
	// once, unless ServerConfig says otherwise.
	DefaultMaxStreams = 1000
	// maxFrameSize is the largest frame a peer may send us.
	maxFrameSize = 1 << 20
	// dataChunk is the largest DATA frame we send.
	dataChunk = 64 << 10
	// maxHeaderList bounds a header block: net/http takes 1 MiB of request
	// headers from an application, and a proxy must not refuse what its
	// application took.
	maxHeaderList = 1<<20 + 64<<10
	// maxControlBuffer bounds the control frames waiting to be sent.
	maxControlBuffer = 1 << 20
	// writeBuffer is the size of the buffer frames are written into.
	writeBuffer = 64 << 10
	// pingAfter is how long a connection with streams may hear nothing
	// before it asks with a PING; pingTimeout is how long it then waits.
	pingAfter   = 30 * time.Second
	pingTimeout = 15 * time.Second
)

// ErrClosed is the error of requests on a connection that closed.
var ErrClosed = errors.New("h2link: connection closed")

// ErrRefused is the error of a request the server refused before handling
// it (GOAWAY past its stream, or REFUSED_STREAM): it is safe to send again.
var ErrRefused = errors.New("h2link: the server refused the stream before processing it")

// errStreamClosed is what writes to a stream that ended return.
var errStreamClosed = errors.New("h2link: stream closed")

// StreamError is a stream the peer reset.
type StreamError struct {
	Code http2.ErrCode
}

func (e StreamError) Error() string { return "h2link: stream reset by the peer: " + e.Code.String() }

// sides are what the client and the server add to a conn.
type side interface {
	// headers handles a HEADERS frame (and its CONTINUATIONs), from the
	// reader goroutine.
	headers(f *http2.MetaHeadersFrame) error
	// streamDone is told that s ended, from any goroutine.
	streamDone(s *stream)
}

// conn is what both ends share: the framed connection, its flow control
// and its streams.
type conn struct {
	nc     net.Conn
	server bool
	side   side

	// Writes: frames are written into bw under wmu; waiting counts the
	// writers queued for it, so the holder knows whether another will
	// flush after it.
	wmu       sync.Mutex
	waiting   atomic.Int32
	bw        *bufio.Writer
	wfr       *http2.Framer  // writes to bw; guarded by wmu
	hbuf      bytes.Buffer   // an encoded header block; guarded by wmu
	henc      *hpack.Encoder // guarded by wmu
	werr      error          // guarded by wmu; sticky
	prefaced  bool           // guarded by wmu; the preface and our SETTINGS went
	tableSize atomic.Int64   // the peer's header table size to apply, or -1
	ctl       bytes.Buffer   // control frames to send; guarded by ctlMu
	ctlFr     *http2.Framer  // writes to ctl; guarded by ctlMu
	ctlMu     sync.Mutex
	ctlOut    []byte        // control frames being sent; guarded by wmu
	ctlWake   chan struct{} // buffered: control frames wait
	closing   chan struct{} // closed when the connection starts closing
	closedErr atomic.Pointer[error]

	// Flow control of what we send: guarded by fcMu, waited on with fcCond.
	// Lock order: wmu, fcMu, mu; a stream's mu and ctlMu come last.
	fcMu       sync.Mutex
	fcCond     sync.Cond
	sendWindow int64 // the connection's
	peerInit   int64 // the peer's initial stream window
	peerFrame  int   // the largest frame the peer takes

	// recvUnacked is what readers read and we did not yet credit back to
	// the peer's connection window.
	recvUnacked atomic.Int64
	// recvWindow is what the peer may still send on the connection: the
	// window we gave it, less what it sent, plus what we credited back.
	recvWindow atomic.Int64
	// lastRead is when the reader last got a frame (Unix nanoseconds);
	// pingSent when a PING went unanswered (0: none).
	lastRead atomic.Int64
	pingSent atomic.Int64

	mu        sync.Mutex
	streams   map[uint32]*stream // guarded by mu
	nextID    uint32             // guarded by mu; client: the next stream ID
	lastPeer  uint32             // guarded by mu; server: the highest stream ID opened by the peer
	peerMax   int                // guarded by mu; streams the peer lets us open
	reserved  int                // guarded by mu; client: streams promised by Reserve
	goingAway bool               // guarded by mu; no new streams
	closed    bool               // guarded by mu
	idleSince time.Time          // guarded by mu

	// idleTimeout (server) closes a connection without streams for this
	// long; 0: never.
	idleTimeout time.Duration
	// maxStreams (server) is the SETTINGS_MAX_CONCURRENT_STREAMS we send.
	maxStreams uint32

	goroutines sync.WaitGroup // the control goroutine, and the GOAWAY writer of a drain
}

func newConn(nc net.Conn, server bool, s side) *conn {
	c := &conn{
		nc: nc, server: server, side: s,
		bw:         bufio.NewWriterSize(nc, writeBuffer),
		ctlWake:    make(chan struct{}, 1),
		closing:    make(chan struct{}),
		sendWindow: 65535, peerInit: 65535, peerFrame: 16 << 10,
		streams: make(map[uint32]*stream), nextID: 1, peerMax: 100,
		idleSince: time.Now(),
	}
	c.fcCond.L = &c.fcMu
	c.wfr = http2.NewFramer(c.bw, nil)
	c.ctlFr = http2.NewFramer(&c.ctl, nil)
	c.henc = hpack.NewEncoder(&c.hbuf)
	c.tableSize.Store(-1)
	c.recvWindow.Store(ConnWindow) // start grants it before the reader starts
	c.lastRead.Store(time.Now().UnixNano())
	return c
}

// start sends the preface and our settings, unless a write sent them
// already, and starts the control goroutine.
func (c *conn) start() error {
	if err := c.write(nil); err != nil {
		return fmt.Errorf("h2link: send the connection preface: %w", err)
	}
	c.goroutines.Add(1)
	go c.runControl()
	return nil
}

// writePrefaceLocked writes the connection preface: the client's magic
// string, then our SETTINGS and the connection's window. The first write
// on the connection does it, whichever it is, so that nothing precedes it
// (RFC 9113, 3.4): a server told to shut down before it served sends its
// SETTINGS before its GOAWAY. wmu must be held.
func (c *conn) writePrefaceLocked() error {
	c.prefaced = true
	if !c.server {
		if _, err := io.WriteString(c.bw, http2.ClientPreface); err != nil {
			return err
		}
	}
	settings := [4]http2.Setting{
		{ID: http2.SettingInitialWindowSize, Val: StreamWindow},
		{ID: http2.SettingMaxFrameSize, Val: maxFrameSize},
		{ID: http2.SettingMaxHeaderListSize, Val: maxHeaderList},
		{ID: http2.SettingEnablePush, Val: 0},
	}
	if c.server {
		settings[3] = http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: c.maxStreams}
	}
	if err := c.wfr.WriteSettings(settings[:]...); err != nil {
		return err
	}
	return c.wfr.WriteWindowUpdate(0, ConnWindow-65535)
}

// write runs fn, which writes frames to c.wfr (or c.bw), under the write
// lock, then flushes unless another writer is queued (it will flush).
// The preface goes first on the connection's first write, then queued
// control frames. The reader never calls it.
func (c *conn) write(fn func() error) error {
	c.waiting.Add(1)
	c.wmu.Lock()
	c.waiting.Add(-1)
	defer c.wmu.Unlock()
	if c.werr != nil {
		return c.werr
	}
	var err error
	if !c.prefaced {
		err = c.writePrefaceLocked()
	}
	if err == nil {
		err = c.writeControlLocked()
	}
	// After the control frames: a SETTINGS ACK among them makes the size
	// the peer's, and the reader stores the size before it queues the ACK.
	if n := c.tableSize.Swap(-1); n >= 0 {
		c.henc.SetMaxDynamicTableSizeLimit(uint32(n))
	}
	var streamErr error // the stream's, not the connection's (errSkip)
	if err == nil && fn != nil {
		if err = fn(); err != nil {
			if _, ok := err.(errSkip); ok {
				streamErr, err = err, nil
			}
		}
	}
	if err == nil && c.waiting.Load() == 0 {
		err = c.bw.Flush()
	}
	if err != nil {
		c.werr = err
		c.close(fmt.Errorf("h2link: write: %w", err)) // does not write: safe under wmu
		return err
	}
	return streamErr
}

// writeControlLocked moves the queued control frames to the write buffer;
// wmu must be held.
//
// The frames are copied out before they are written, so the reader, which
// queues them, never waits on a socket the peer does not read: the queue
// grows instead, and control cuts the peer off past its bound.
func (c *conn) writeControlLocked() error {
	c.ctlMu.Lock()
	c.ctlOut = append(c.ctlOut[:0], c.ctl.Bytes()...)
	c.ctl.Reset()
	c.ctlMu.Unlock()
	if len(c.ctlOut) == 0 {
		return nil
	}
	_, err := c.bw.Write(c.ctlOut)
	if cap(c.ctlOut) > 64<<10 {
		c.ctlOut = nil // a burst's buffer is not kept
	}
	return err
}

// control queues frames, which fn writes to the framer it is given,
// without waiting on the socket: the reader uses it.
func (c *conn) control(fn func(fr *http2.Framer) error) {
	c.ctlMu.Lock()
	_ = fn(c.ctlFr) // writes to a buffer: no error
	flood := c.ctl.Len() > maxControlBuffer
	c.ctlMu.Unlock()
	if flood {
		// The peer makes us answer (pings, resets, settings) faster than
		// it reads the answers.
		c.close(errors.New("h2link: the peer does not read the control frames it causes"))
		return
	}
	select {
	case c.ctlWake <- struct{}{}:
	default:
	}
}

// runControl sends queued control frames, and pings a peer that has been
// silent while streams wait on it, until the connection closes.
func (c *conn) runControl() {
	defer c.goroutines.Done()
	tick := time.NewTicker(pingTimeout / 3)
	defer tick.Stop()
	for {
		select {
		case <-c.closing:
			return
		case <-c.ctlWake:
			if c.write(nil) != nil {
				return
			}
		case now := <-tick.C:
			if !c.checkAlive(now) {
				return
			}
		}
	}
}

// checkAlive pings a connection that has streams and has been silent for
// pingAfter, and closes one whose ping went unanswered for pingTimeout.
func (c *conn) checkAlive(now time.Time) bool {
	c.mu.Lock()
	active, idle := len(c.streams), now.Sub(c.idleSince)
	c.mu.Unlock()
	if active == 0 {
		if c.idleTimeout > 0 && idle > c.idleTimeout {
			c.drain()
		}
		return true
	}
	if sent := c.pingSent.Load(); sent != 0 {
		if now.UnixNano()-sent > int64(pingTimeout) && c.lastRead.Load() < sent {
			c.close(fmt.Errorf("h2link: the peer did not answer a ping in %s", pingTimeout))
			return false
		}
		return true
	}
	if now.UnixNano()-c.lastRead.Load() < int64(pingAfter) {
		return true
	}
	c.pingSent.Store(now.UnixNano())
	c.control(func(fr *http2.Framer) error { return fr.WritePing(false, [8]byte{'t', 'r', 'e', 'l', 'l', 'i', 's'}) })
	return true
}

// readLoop reads frames until the connection ends, then closes it.
func (c *conn) readLoop() {
	fr := http2.NewFramer(nil, c.nc)
	fr.SetMaxReadFrameSize(maxFrameSize)
	fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	fr.MaxHeaderListSize = maxHeaderList
	fr.SetReuseFrames()
	var err error
	if c.server {
		err = c.readPreface()
	}
	for err == nil {
		var f http2.Frame
		f, err = fr.ReadFrame()
		if err != nil {
			var se http2.StreamError
			if errors.As(err, &se) {
				if se.Cause == nil && c.idle(se.StreamID) {
					// A frame the framer refused for its content (a zero
					// WINDOW_UPDATE, HEADERS padding past the payload) on a
					// stream that was never opened: a connection error
					// (RFC 9113, 5.1 and 6.2), not a stream to reset.
					err = fmt.Errorf("h2link: the peer broke the protocol: %v on stream %d, which is idle: %w", se.Code, se.StreamID, http2.ConnectionError(http2.ErrCodeProtocol))
					break
				}
				if c.server && se.StreamID%2 == 1 {
					// A request refused as it opened its stream: the
					// stream was opened, and is closed, so what the peer
					// sends on it next is ignored, not taken for a
					// stream it never opened.
					c.mu.Lock()
					c.lastPeer = max(c.lastPeer, se.StreamID)
					c.mu.Unlock()
				}
				c.resetStream(se.StreamID, se.Code, fmt.Errorf("h2link: %v", se))
				err = nil
				continue
			}
			break
		}
		c.lastRead.Store(time.Now().UnixNano())
		c.pingSent.Store(0)
		err = c.handle(f)
	}
	if errors.Is(err, http2.ErrFrameTooLarge) {
		err = fmt.Errorf("h2link: the peer sent a frame larger than the %d bytes we allow: %w", maxFrameSize, http2.ConnectionError(http2.ErrCodeFrameSize))
	}
	var ce http2.ConnectionError
	if errors.As(err, &ce) {
		// The peer broke the protocol: it has a second to take the
		// GOAWAY saying how, not for ever.
		_ = c.nc.SetWriteDeadline(time.Now().Add(time.Second))
		_ = c.writeGoAway(c.lastPeerID(), http2.ErrCode(ce))
		if _, bare := err.(http2.ConnectionError); bare {
			// The framer's, or a bare code: say whose it is, and
			// what the framer found.
			if d := fr.ErrorDetail(); d != nil {
				err = fmt.Errorf("h2link: the peer broke the protocol: %w (%v)", err, d)
			} else {
				err = fmt.Errorf("h2link: the peer broke the protocol: %w", err)
			}
		}
	}
	if errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) {
		err = ErrClosed
	}
	c.close(err)
}

func (c *conn) readPreface() error {
	buf := make([]byte, len(http2.ClientPreface))
	if _, err := io.ReadFull(c.nc, buf); err != nil {
		return fmt.Errorf("h2link: read the connection preface: %w", err)
	}
	if string(buf) != http2.ClientPreface {
		return errors.New("h2link: not HTTP/2: bad connection preface")
	}
	return nil
}

func (c *conn) lastPeerID() uint32 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lastPeer
}

// handle applies one frame; an error ends the connection.
func (c *conn) handle(f http2.Frame) error {
	switch f := f.(type) {
	case *http2.DataFrame:
		if c.recvWindow.Add(-int64(f.Length)) < 0 {
			return fmt.Errorf("h2link: the peer sent past the connection's window: %w", http2.ConnectionError(http2.ErrCodeFlowControl))
		}
		s := c.stream(f.StreamID)
		// Padding, and data for a stream that is gone, are credited back
		// at once; the rest when the reader reads it.
		used := int64(len(f.Data()))
		pad := int64(f.Length) - used // to the stream's window too, if it is open
		c.creditConn(pad)
		if s == nil {
			if c.idle(f.StreamID) {
				return idleStreamError(f)
			}
			c.creditConn(used) // a closed stream: the frame is ignored
			return nil
		}
		s.receive(f.Data(), pad, f.StreamEnded())
	case *http2.MetaHeadersFrame:
		return c.side.headers(f)
	case *http2.RSTStreamFrame:
		if s := c.stream(f.StreamID); s != nil {
			s.peerReset(f.ErrCode)
		} else if c.idle(f.StreamID) {
			return idleStreamError(f)
		}
		// A closed stream: a reset that crossed its end, ignored.
	case *http2.WindowUpdateFrame:
		return c.windowUpdate(f)
	case *http2.SettingsFrame:
		if f.IsAck() {
			return nil
		}
		if err := c.applySettings(f); err != nil {
			return err
		}
		c.control(func(fr *http2.Framer) error { return fr.WriteSettingsAck() })
	case *http2.PingFrame:
		if !f.IsAck() {
			data := f.Data
			c.control(func(fr *http2.Framer) error { return fr.WritePing(true, data) })
		}
	case *http2.GoAwayFrame:
		c.goAway(f.LastStreamID)
	case *http2.PushPromiseFrame:
		return http2.ConnectionError(http2.ErrCodeProtocol) // we disabled push
	}
	return nil
}

// idle reports whether stream id (not 0) is idle (RFC 9113, 5.1): neither
// end has opened it. Only the client opens streams (we take no push), so
// every even stream is idle, and an odd one is until the client opens it:
// on the server, one past the highest the peer opened; on the client, one
// from the next we would open. A frame other than HEADERS or PRIORITY on
// an idle stream breaks the protocol, where one on a closed stream can be
// a race with its end, and is ignored.
func (c *conn) idle(id uint32) bool {
	if id%2 == 0 {
		return true
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.server {
		return id > c.lastPeer
	}
	return id >= c.nextID
}

// idleStreamError is the connection error of frame f, on a stream that
// is idle.
func idleStreamError(f http2.Frame) error {
	h := f.Header()
	return fmt.Errorf("h2link: the peer broke the protocol: %v on stream %d, which is idle: %w", h.Type, h.StreamID, http2.ConnectionError(http2.ErrCodeProtocol))
}

func (c *conn) windowUpdate(f *http2.WindowUpdateFrame) error {
	c.fcMu.Lock()
	defer c.fcMu.Unlock()
	inc := int64(f.Increment)
	if f.StreamID == 0 {
		if c.sendWindow+inc > 1<<31-1 {
			return http2.ConnectionError(http2.ErrCodeFlowControl)
		}
		c.sendWindow += inc
	} else if s := c.stream(f.StreamID); s != nil {
		if s.sendWindow+inc > 1<<31-1 {
			id := f.StreamID
			c.fcMu.Unlock()
			c.resetStream(id, http2.ErrCodeFlowControl, errors.New("h2link: stream window overflow"))
			c.fcMu.Lock()
			return nil
		}
		s.sendWindow += inc
	} else if c.idle(f.StreamID) {
		return idleStreamError(f)
	} else {
		return nil // a closed stream: credit that crossed its end
	}
	c.fcCond.Broadcast()
	return nil
}

func (c *conn) applySettings(f *http2.SettingsFrame) error {
	return f.ForeachSetting(func(st http2.Setting) error {
		if err := st.Valid(); err != nil {
			return err
		}
		switch st.ID {
		case http2.SettingInitialWindowSize:
			c.fcMu.Lock()
			delta := int64(st.Val) - c.peerInit
			c.peerInit = int64(st.Val)
			c.mu.Lock()
			for _, s := range c.streams {
				s.sendWindow += delta
			}
			c.mu.Unlock()
			c.fcCond.Broadcast()
			c.fcMu.Unlock()
		case http2.SettingMaxFrameSize:
			c.fcMu.Lock()
			c.peerFrame = int(st.Val)
			c.fcMu.Unlock()
		case http2.SettingMaxConcurrentStreams:
			c.mu.Lock()
			c.peerMax = int(min(st.Val, DefaultMaxStreams))
			c.mu.Unlock()
		case http2.SettingHeaderTableSize:
			c.tableSize.Store(int64(min(st.Val, 4096)))
		}
		return nil
	})
}

// creditConn returns n bytes to the peer's connection window, in steps of
// a quarter window.
func (c *conn) creditConn(n int64) {
	if n <= 0 {
		return
	}
	if v := c.recvUnacked.Add(n); v >= ConnWindow/4 {
		if c.recvUnacked.CompareAndSwap(v, 0) {
			c.recvWindow.Add(v)
			c.control(func(fr *http2.Framer) error { return fr.WriteWindowUpdate(0, uint32(v)) })
		}
	}
}

// goAway handles the peer's GOAWAY: no new streams; streams we opened past
// last were not processed and fail with ErrRefused.
func (c *conn) goAway(last uint32) {
	c.mu.Lock()
	c.goingAway = true
	var refused []*stream
	if !c.server {
		for id, s := range c.streams {
			if id > last {
				refused = append(refused, s)
			}
		}
	}
	c.mu.Unlock()
	for _, s := range refused {
		s.fail(ErrRefused)
	}
	c.closeIfIdle()
}

func (c *conn) stream(id uint32) *stream {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.streams[id]
}

// resetStream resets stream id (if we know it) with code.
func (c *conn) resetStream(id uint32, code http2.ErrCode, why error) {
	if s := c.stream(id); s != nil {
		s.reset(code, why)
		return
	}
	c.control(func(fr *http2.Framer) error { return fr.WriteRSTStream(id, code) })
}

func (c *conn) activeStreams() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.streams)
}

// removeStream forgets a finished stream.
func (c *conn) removeStream(s *stream) {
	c.mu.Lock()
	if c.streams[s.id] == s {
		delete(c.streams, s.id)
		if len(c.streams) == 0 {
			c.idleSince = time.Now()
		}
	}
	c.mu.Unlock()
	c.side.streamDone(s)
	c.closeIfIdle()
}

// drain stops new streams (telling the peer with GOAWAY on the server
// side) and closes the connection once its streams have ended.
func (c *conn) drain() {
	c.mu.Lock()
	if c.goingAway || c.closed {
		c.mu.Unlock()
		return
	}
	c.goingAway = true
	last := c.lastPeer
	if c.server {
		// The GOAWAY is written by a goroutine of the connection's, so
		// that a peer that does not read (a full socket holding the
		// writer) cannot hold up the caller; closing the connection ends
		// it. It closes the connection, if idle, only once the GOAWAY
		// is out.
		c.goroutines.Add(1) // before close, which the Wait follows: c.closed is false
		c.mu.Unlock()
		go func() {
			defer c.goroutines.Done()
			_ = c.writeGoAway(last, http2.ErrCodeNo)
			c.closeIfIdle()
		}()
		return
	}
	c.mu.Unlock()
	c.closeIfIdle()
}

// writeGoAway sends GOAWAY, flushed before it returns: the connection may
// close right after, before a writer queued behind this one (which would
// flush) has its turn.
func (c *conn) writeGoAway(last uint32, code http2.ErrCode) error {
	return c.write(func() error {
		if err := c.wfr.WriteGoAway(last, code, nil); err != nil {
			return err
		}
		return c.bw.Flush()
	})
}

func (c *conn) closeIfIdle() {
	c.mu.Lock()
	idle := c.goingAway && !c.closed && len(c.streams) == 0 && c.reserved == 0
	c.mu.Unlock()
	if idle {
		c.close(nil)
	}
}

// close ends the connection and every stream on it; err says why (nil:
// it was done). It is idempotent and does not wait for the goroutines.
func (c *conn) close(err error) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	c.closed = true
	if err == nil {
		err = ErrClosed
	}
	c.closedErr.Store(&err)
	streams := make([]*stream, 0, len(c.streams))
	for _, s := range c.streams {
		streams = append(streams, s)
	}
	c.mu.Unlock()
	close(c.closing)
	c.nc.Close()
	c.fcMu.Lock()
	c.fcCond.Broadcast()
	c.fcMu.Unlock()
	for _, s := range streams {
		s.fail(err)
	}
}

// err returns why the connection closed, or nil while it is open.
func (c *conn) err() error {
	if p := c.closedErr.Load(); p != nil {
		return *p
	}
	return nil
}
