package proxy

import (
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"time"

	"github.com/trellismesh/trellis/connect/proxy/rawsock"
)

// maxEarly bounds what an application connection may send before the
// destination has answered its CONNECT; past it, reading waits for the
// answer.
const maxEarly = 64 << 10

// aLongTimeAgo is a deadline in the past: it interrupts a blocked Read.
var aLongTimeAgo = time.Unix(1, 0)

// outbound is the application side of one connection to an upstream. Its
// first bytes go out with the CONNECT, without waiting for the answer (a
// request usually follows the connect at once): the answer comes back with
// the destination's reply instead of a round trip ahead of it. Until the
// answer, what was sent is kept, so that if the instance refuses or fails
// the connection can go to another one, replaying it.
type outbound struct {
	app      net.Conn
	sent     *counter
	received *counter

	mu       sync.Mutex
	kept     []byte        // guarded by mu; bytes sent before an answer
	eof      bool          // guarded by mu; the application ended its direction before an answer
	opened   bool          // guarded by mu; an instance accepted
	openedCh chan struct{} // closed when opened
	pumpDone chan struct{} // of the current attempt's pump; guarded by mu
}

func newOutbound(app net.Conn, sent *counter) *outbound {
	return &outbound{app: app, sent: sent, openedCh: make(chan struct{})}
}

// accepted marks the connection open: nothing more is kept.
func (o *outbound) accepted() {
	o.mu.Lock()
	defer o.mu.Unlock()
	if !o.opened {
		o.opened = true
		o.sent.add(len(o.kept))
		o.kept = nil
		close(o.openedCh)
	}
}

// wait returns once the pump of the accepted attempt has ended.
func (o *outbound) wait() {
	o.mu.Lock()
	done := o.pumpDone
	o.mu.Unlock()
	if done != nil {
		<-done
	}
}

// first returns the bytes a new attempt can send with its CONNECT: what
// earlier attempts kept or, when they kept nothing, what the application
// has sent by now (a client that speaks first has usually sent its request
// by the time its connection is accepted). It does not wait; nothing is
// there for an application that waits for the server to speak. No pump
// runs meanwhile: the failed attempt's has been stopped.
func (o *outbound) first() []byte {
	o.mu.Lock()
	defer o.mu.Unlock()
	if len(o.kept) > 0 || o.eof {
		return o.kept
	}
	rc, ok := o.app.(*rawsock.Conn)
	if !ok {
		return nil
	}
	bp := chunkBufs.Get().(*[]byte)
	defer chunkBufs.Put(bp)
	buf := *bp
	n, _ := rc.TryRead(buf) // an end or an error is the pump's to find
	if n > 0 {
		o.kept = append(o.kept, buf[:n]...)
	}
	return o.kept
}

// attempt pumps the application into st in a goroutine of the proxy's,
// after the first sent bytes of what first returned, which went out with
// the CONNECT. The returned stop function interrupts the pump (when the
// attempt failed) and waits for it; what it read is kept for the next
// attempt.
func (o *outbound) attempt(p *Proxy, st *stream, sent int) (stop func(), ok bool) {
	done := make(chan struct{})
	halt := make(chan struct{})
	// What earlier attempts kept is taken now: the answer may arrive (and
	// clear it) before the pump's goroutine runs.
	o.mu.Lock()
	o.pumpDone = done
	replay, eof := o.kept[min(sent, len(o.kept)):], o.eof
	o.mu.Unlock()
	if !p.goFunc(func() {
		defer close(done)
		o.pump(st, replay, eof, halt)
	}) {
		close(done)
		return nil, false
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			close(halt)
			_ = o.app.SetReadDeadline(aLongTimeAgo)
			<-done
			_ = o.app.SetReadDeadline(time.Time{})
		})
	}, true
}

// pump sends replay (what earlier attempts kept; eof if the application
// had ended its direction), then reads the application and sends what it
// reads, until the application ends its direction or the stream fails, or
// halt is closed before an answer.
func (o *outbound) pump(st *stream, replay []byte, eof bool, halt <-chan struct{}) {
	bp := chunkBufs.Get().(*[]byte)
	defer chunkBufs.Put(bp)
	buf := *bp

	for len(replay) > 0 {
		n := copy(buf[frameHeaderLen:], replay)
		if err := st.send(buf[:frameHeaderLen+n], false); err != nil {
			return
		}
		replay = replay[n:]
	}
	if eof {
		_ = st.endLocal()
		return
	}
	for {
		o.mu.Lock()
		full := !o.opened && len(o.kept) >= maxEarly
		o.mu.Unlock()
		if full {
			select {
			case <-o.openedCh:
			case <-halt:
				return
			}
		}
		n, err := o.app.Read(buf[frameHeaderLen:])
		if n > 0 {
			o.mu.Lock()
			if !o.opened {
				o.kept = append(o.kept, buf[frameHeaderLen:frameHeaderLen+n]...)
			}
			opened := o.opened
			o.mu.Unlock()
			if opened {
				o.sent.add(n)
			}
			if serr := st.send(buf[:frameHeaderLen+n], false); serr != nil {
				if opened {
					st.abort(serr, true)
				}
				return
			}
		}
		if err != nil {
			switch {
			case errors.Is(err, os.ErrDeadlineExceeded):
				select {
				case <-halt:
					return // interrupted: the next attempt goes on
				default:
				}
				continue
			case errors.Is(err, io.EOF):
				o.mu.Lock()
				if !o.opened {
					o.eof = true
				}
				o.mu.Unlock()
				_ = st.endLocal()
			default:
				st.abort(err, true)
			}
			return
		}
	}
}
