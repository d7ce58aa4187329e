package gossip

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/hashicorp/memberlist"
)

// Message kinds of the member-to-member query protocol.
const (
	kindKeyringRequest  = "keyring-request"
	kindKeyringResponse = "keyring-response"
	// kindLeaveIntent tells members the sender is leaving on purpose, so its
	// disappearance is a leave, not a failure.
	kindLeaveIntent = "leave-intent"
)

// query is a message between members, sent over memberlist's reliable
// (TCP, encrypted) channel.
type query struct {
	Kind string
	// ID pairs a response with its request; From names the asker.
	ID   uint64
	From string
	// Request fields.
	Op  string `json:",omitempty"`
	Key []byte `json:",omitempty"`
	// Response fields.
	Keys    []string `json:",omitempty"`
	Primary string   `json:",omitempty"`
	Error   string   `json:",omitempty"`
	Node    string   `json:",omitempty"`
}

// queries sends requests to members and serves theirs. Incoming messages
// go through a bounded queue to one worker, so memberlist's receive loop
// never blocks; when the queue is full, messages are dropped (and the asker
// times out).
type queries struct {
	p      *Pool
	nextID atomic.Uint64
	inbox  chan []byte

	mu      sync.Mutex
	pending map[uint64]chan query // guarded by mu

	done      chan struct{}
	closeOnce sync.Once
	wg        sync.WaitGroup
}

func newQueries(p *Pool) *queries {
	q := &queries{p: p, inbox: make(chan []byte, 256), pending: map[uint64]chan query{}, done: make(chan struct{})}
	q.wg.Add(1)
	go q.run()
	return q
}

func (q *queries) receive(b []byte) {
	select {
	case q.inbox <- b:
	default:
		q.p.logger.Warn("dropping a member message: the queue is full")
	}
}

func (q *queries) close() {
	q.closeOnce.Do(func() { close(q.done) })
	q.wg.Wait()
}

func (q *queries) run() {
	defer q.wg.Done()
	for {
		select {
		case <-q.done:
			return
		case b := <-q.inbox:
			q.handle(b)
		}
	}
}

func (q *queries) handle(b []byte) {
	var m query
	if err := json.Unmarshal(b, &m); err != nil {
		q.p.logger.Warn("ignoring a malformed member message", "error", err)
		return
	}
	switch m.Kind {
	case kindKeyringRequest:
		resp := query{Kind: kindKeyringResponse, ID: m.ID, Node: q.p.cfg.NodeName}
		keys, primary, err := q.p.localKeyringOp(m.Op, m.Key)
		if err != nil {
			resp.Error = err.Error()
		} else {
			resp.Keys, resp.Primary = encodeKeys(keys), base64.StdEncoding.EncodeToString(primary)
		}
		if err := q.send(m.From, resp); err != nil {
			q.p.logger.Warn("answer a keyring request", "to", m.From, "error", err)
		}
	case kindLeaveIntent:
		q.p.markLeaving(m.From)
	case kindKeyringResponse:
		q.mu.Lock()
		ch := q.pending[m.ID]
		q.mu.Unlock()
		if ch != nil {
			select {
			case ch <- m:
			default:
			}
		}
	default:
		q.p.logger.Debug("ignoring a member message of unknown kind", "kind", m.Kind)
	}
}

// send sends m to the member named to, whatever its status here: the
// answer to a request goes to the member that just sent it, even if this
// member takes it for failed (a false alarm on a loaded machine).
func (q *queries) send(to string, m query) error {
	b, err := json.Marshal(m)
	if err != nil {
		return err
	}
	n := q.p.node(to)
	if n == nil {
		return fmt.Errorf("no member named %q", to)
	}
	return q.p.ml.SendReliable(n, b)
}

// ask sends req to every target and gathers their answers by member name
// until all answered or ctx ends.
func (q *queries) ask(ctx context.Context, targets []*memberlist.Node, req query) (map[string]query, error) {
	req.ID = q.nextID.Add(1)
	req.From = q.p.cfg.NodeName
	ch := make(chan query, len(targets))
	q.mu.Lock()
	q.pending[req.ID] = ch
	q.mu.Unlock()
	defer func() {
		q.mu.Lock()
		delete(q.pending, req.ID)
		q.mu.Unlock()
	}()
	b, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	answers := map[string]query{}
	for _, n := range targets {
		if err := q.p.ml.SendReliable(n, b); err != nil {
			answers[n.Name] = query{Error: fmt.Sprintf("send request: %v", err)}
		}
	}
	for len(answers) < len(targets) {
		select {
		case a := <-ch:
			answers[a.Node] = a
		case <-ctx.Done():
			return answers, nil
		case <-q.done:
			return answers, nil
		}
	}
	return answers, nil
}
