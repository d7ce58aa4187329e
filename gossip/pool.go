package gossip

import (
	"encoding/json"
	"errors"
	"fmt"
	"log"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-metrics"
	"github.com/hashicorp/memberlist"
)

// Pool is this agent's membership in the cluster.
type Pool struct {
	cfg     Config
	logger  hclog.Logger
	ml      *memberlist.Memberlist
	keyring *memberlist.Keyring // nil without encryption
	// localIP and localPort are this member's advertised address, read
	// once from memberlist: its local Node is rewritten (under its own
	// lock) at each tag update.
	localIP   net.IP
	localPort int

	mu       sync.Mutex
	members  map[string]*Member // guarded by mu
	tags     map[string]string  // guarded by mu
	changeCh chan struct{}      // guarded by mu; closed on change
	leaving  bool               // guarded by mu

	queries *queries

	shutdownOnce sync.Once
	shutdownCh   chan struct{}
	wg           sync.WaitGroup
}

// New starts a pool: it binds the gossip port and starts the protocol. It
// does not join anyone; call Join.
func New(cfg Config) (*Pool, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	logger := cfg.Logger
	if logger == nil {
		logger = hclog.Default()
	}
	p := &Pool{
		cfg: cfg, logger: logger.Named("gossip"),
		members:    make(map[string]*Member),
		tags:       cloneTags(cfg.Tags),
		changeCh:   make(chan struct{}),
		shutdownCh: make(chan struct{}),
	}
	p.queries = newQueries(p)

	keys := cfg.Keys
	if cfg.KeyringFile != "" {
		fileKeys, err := readKeyringFile(cfg.KeyringFile)
		if err != nil {
			return nil, err
		}
		if len(fileKeys) > 0 {
			if len(keys) > 0 {
				p.logger.Info("using the keyring file; the configured encrypt key is ignored", "file", cfg.KeyringFile)
			}
			keys = fileKeys
		}
	}
	mc := memberlist.DefaultLANConfig()
	mc.Name = cfg.NodeName
	mc.BindAddr = cfg.BindAddr
	mc.BindPort = cfg.BindPort
	mc.AdvertiseAddr = cfg.AdvertiseAddr
	mc.AdvertisePort = cfg.AdvertisePort
	t := cfg.Timing
	mc.ProbeInterval, mc.ProbeTimeout, mc.SuspicionMult = t.ProbeInterval, t.ProbeTimeout, t.SuspicionMult
	mc.GossipInterval, mc.PushPullInterval, mc.TCPTimeout = t.GossipInterval, t.PushPullInterval, t.TCPTimeout
	mc.Delegate = &delegate{p: p}
	mc.Events = &events{p: p}
	mc.Logger = p.logger.StandardLogger(&hclog.StandardLoggerOptions{InferLevels: true, InferLevelsWithTimestamp: true})
	mc.LogOutput = nil
	transport, err := newTransport(cfg.BindAddr, cfg.BindPort, &memberlistLogger{mc.Logger})
	if err != nil {
		return nil, fmt.Errorf("start gossip on %s:%d: %w", cfg.BindAddr, cfg.BindPort, err)
	}
	mc.Transport = transport
	if len(keys) > 0 {
		kr, err := memberlist.NewKeyring(keys, keys[0])
		if err != nil {
			transport.Shutdown()
			return nil, fmt.Errorf("gossip keyring: %w", err)
		}
		p.keyring = kr
		mc.Keyring = kr
		mc.GossipVerifyIncoming, mc.GossipVerifyOutgoing = true, true
		if cfg.KeyringFile != "" {
			if err := writeKeyringFile(cfg.KeyringFile, kr); err != nil {
				transport.Shutdown()
				return nil, err
			}
		}
	}
	ml, err := memberlist.Create(mc)
	if err != nil {
		transport.Shutdown()
		return nil, fmt.Errorf("start gossip on %s:%d: %w", cfg.BindAddr, cfg.BindPort, err)
	}
	p.ml = ml
	n := ml.LocalNode() // nothing updates it yet
	p.localIP, p.localPort = append(net.IP(nil), n.Addr...), int(n.Port)
	p.wg.Add(1)
	go p.maintain()
	return p, nil
}

func cloneTags(t map[string]string) map[string]string {
	out := make(map[string]string, len(t))
	for k, v := range t {
		out[k] = v
	}
	return out
}

// LocalAddr returns the advertised gossip address of this member.
func (p *Pool) LocalAddr() string {
	return net.JoinHostPort(p.localIP.String(), fmt.Sprint(p.localPort))
}

// LocalMember returns this member.
func (p *Pool) LocalMember() Member {
	p.mu.Lock()
	defer p.mu.Unlock()
	if m, ok := p.members[p.cfg.NodeName]; ok {
		return m.Clone()
	}
	return Member{Name: p.cfg.NodeName, Addr: append(net.IP(nil), p.localIP...), Port: p.localPort, Tags: cloneTags(p.tags), Status: StatusAlive}
}

// Join contacts the members at addrs (host or host:port) and merges state
// with them. It returns how many it reached; an error only when none.
func (p *Pool) Join(addrs []string) (int, error) {
	var withPorts []string
	for _, a := range addrs {
		if _, _, err := net.SplitHostPort(a); err != nil {
			a = net.JoinHostPort(strings.Trim(a, "[]"), fmt.Sprint(defaultPort(p)))
		}
		withPorts = append(withPorts, a)
	}
	n, err := p.ml.Join(withPorts)
	if n > 0 {
		p.logger.Info("joined the cluster", "reached", n, "addresses", withPorts)
		return n, nil
	}
	if err == nil {
		err = errors.New("no member reached")
	}
	hint := ""
	if p.keyring != nil {
		hint = " (if the other agents are up, check that they use the same gossip encryption key)"
	} else {
		hint = " (if the other agents are up and encrypt gossip, this agent needs their encrypt key)"
	}
	return 0, fmt.Errorf("join %s: %w%s", strings.Join(withPorts, ", "), err, hint)
}

// defaultPort is the port assumed for join addresses without one: this
// member's own gossip port (all agents usually share it).
func defaultPort(p *Pool) int {
	if p.cfg.AdvertisePort != 0 {
		return p.cfg.AdvertisePort
	}
	return p.localPort
}

// Members returns every member known: alive, leaving, failed (until reaped)
// and left (until their tombstone expires), sorted by name.
func (p *Pool) Members() []Member {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]Member, 0, len(p.members))
	for _, m := range p.members {
		out = append(out, m.Clone())
	}
	slices.SortFunc(out, func(a, b Member) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// aliveNodes returns the other alive members as memberlist nodes made here,
// sorted by name. memberlist's Members() hands out the Node structs it keeps,
// which its packet handler rewrites under a lock of its own (a member that
// comes back, on another address for instance): reading one later, as
// SendReliable does, would race with that.
func (p *Pool) aliveNodes() []*memberlist.Node {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []*memberlist.Node
	for _, m := range p.members {
		if m.Name == p.cfg.NodeName || m.Status != StatusAlive {
			continue
		}
		out = append(out, m.node())
	}
	slices.SortFunc(out, func(a, b *memberlist.Node) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// node returns the member named name, whatever its status, as a memberlist
// node made here (see aliveNodes); nil when it is unknown.
func (p *Pool) node(name string) *memberlist.Node {
	p.mu.Lock()
	defer p.mu.Unlock()
	m, ok := p.members[name]
	if !ok {
		return nil
	}
	return m.node()
}

// node makes a memberlist node of m, to send to (Name, Addr and Port).
func (m *Member) node() *memberlist.Node {
	return &memberlist.Node{Name: m.Name, Addr: append(net.IP(nil), m.Addr...), Port: uint16(m.Port)}
}

// NumAlive returns the number of alive members, this one included.
func (p *Pool) NumAlive() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, m := range p.members {
		if m.Status == StatusAlive {
			n++
		}
	}
	return n
}

// ChangeCh returns a channel closed at the next change of the member table.
func (p *Pool) ChangeCh() <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.changeCh
}

// notifyLocked closes the change channel; p.mu must be held.
func (p *Pool) notifyLocked() {
	close(p.changeCh)
	p.changeCh = make(chan struct{})
}

// setStatusLocked records a member's status; p.mu must be held.
func (p *Pool) setStatusLocked(n *memberlist.Node, status Status) {
	m, ok := p.members[n.Name]
	if !ok {
		m = &Member{Name: n.Name}
		p.members[n.Name] = m
	}
	changed := !ok || m.Status != status || !m.Addr.Equal(n.Addr) || m.Port != int(n.Port)
	tags := decodeTags(n.Meta)
	if !mapsEqual(m.Tags, tags) {
		changed = true
	}
	m.Addr, m.Port, m.Tags = append(net.IP(nil), n.Addr...), int(n.Port), tags
	if m.Status != status {
		m.Status, m.Since = status, time.Now()
		p.logger.Info("member "+status.String(), "member", n.Name, "address", m.Address())
		metrics.IncrCounterWithLabels([]string{"trellis", "gossip", "member", status.String()}, 1, nil)
	}
	if changed {
		p.notifyLocked()
	}
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if bv, ok := b[k]; !ok || bv != v {
			return false
		}
	}
	return true
}

// SetTags replaces this member's tags and gossips them.
func (p *Pool) SetTags(tags map[string]string) error {
	b, err := encodeTags(tags)
	if err != nil {
		return err
	}
	if len(b) > memberlist.MetaMaxSize {
		return fmt.Errorf("gossip: tags take %d bytes, more than the %d allowed", len(b), memberlist.MetaMaxSize)
	}
	p.mu.Lock()
	p.tags = cloneTags(tags)
	p.mu.Unlock()
	return p.ml.UpdateNode(p.cfg.Timing.TCPTimeout)
}

// RemoveFailed forgets a failed member at once (force-leave): it is marked
// left, and others are told when they next exchange state.
func (p *Pool) RemoveFailed(name string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	m, ok := p.members[name]
	if !ok {
		return fmt.Errorf("no member named %q", name)
	}
	if m.Status != StatusFailed {
		return fmt.Errorf("member %q is %s, not failed", name, m.Status)
	}
	m.Status, m.Since = StatusLeft, time.Now()
	p.notifyLocked()
	return nil
}

// maintain rejoins the members of the snapshot, keeps the snapshot, retries
// failed members and reaps old ones.
func (p *Pool) maintain() {
	defer p.wg.Done()
	t := p.cfg.Timing
	p.rejoinSnapshot()
	timer := time.NewTimer(t.ReconnectInterval/2 + rand.N(t.ReconnectInterval))
	defer timer.Stop()
	for {
		changed := p.ChangeCh()
		select {
		case <-p.shutdownCh:
			return
		case <-changed:
			p.writeSnapshot()
		case <-timer.C:
			p.reapAndReconnect()
			timer.Reset(t.ReconnectInterval/2 + rand.N(t.ReconnectInterval)) // jittered
		}
	}
}

// snapshotEntry is a member as the snapshot keeps it.
type snapshotEntry struct {
	Name, Addr string
}

// writeSnapshot keeps the addresses of the members that are alive or failed.
func (p *Pool) writeSnapshot() {
	if p.cfg.SnapshotFile == "" {
		return
	}
	var entries []snapshotEntry
	for _, m := range p.Members() {
		if m.Name != p.cfg.NodeName && (m.Status == StatusAlive || m.Status == StatusFailed) {
			entries = append(entries, snapshotEntry{Name: m.Name, Addr: m.Address()})
		}
	}
	b, _ := json.Marshal(entries)
	if err := os.MkdirAll(filepath.Dir(p.cfg.SnapshotFile), 0o700); err == nil {
		tmp := p.cfg.SnapshotFile + ".tmp"
		if err = os.WriteFile(tmp, b, 0o600); err == nil {
			err = os.Rename(tmp, p.cfg.SnapshotFile)
		}
		if err != nil {
			p.logger.Warn("keep the member snapshot", "error", err)
		}
	}
}

// rejoinSnapshot joins the members known before a restart.
func (p *Pool) rejoinSnapshot() {
	if p.cfg.SnapshotFile == "" {
		return
	}
	b, err := os.ReadFile(p.cfg.SnapshotFile)
	if err != nil {
		return
	}
	var entries []snapshotEntry
	if err := json.Unmarshal(b, &entries); err != nil || len(entries) == 0 {
		return
	}
	var addrs []string
	for _, e := range entries {
		addrs = append(addrs, e.Addr)
	}
	if n, err := p.ml.Join(addrs); err != nil {
		p.logger.Info("could not rejoin the members known before the restart", "error", err)
	} else {
		p.logger.Info("rejoined the members known before the restart", "reached", n)
	}
}

func (p *Pool) reapAndReconnect() {
	t := p.cfg.Timing
	now := time.Now()
	var retry []string
	p.mu.Lock()
	if p.leaving {
		p.mu.Unlock()
		return
	}
	changed := false
	for name, m := range p.members {
		switch {
		case m.Status == StatusFailed && now.Sub(m.Since) > t.ReconnectTimeout:
			p.logger.Info("reaping a member failed for too long", "member", name, "failed_for", now.Sub(m.Since).Round(time.Second))
			delete(p.members, name)
			changed = true
		case m.Status == StatusLeft && now.Sub(m.Since) > t.TombstoneTimeout:
			delete(p.members, name)
			changed = true
		case m.Status == StatusFailed:
			retry = append(retry, m.Address())
		}
	}
	if changed {
		p.notifyLocked()
	}
	p.mu.Unlock()
	if len(retry) > 0 {
		// One at a time, in random order, like a member probing.
		addr := retry[rand.N(len(retry))]
		if n, err := p.ml.Join([]string{addr}); err != nil || n == 0 {
			p.logger.Debug("reconnect to failed member did not succeed", "address", addr, "error", err)
		}
	}
}

// Leave tells the cluster this member is leaving and waits (up to timeout)
// for that to spread. The pool must still be shut down after.
func (p *Pool) Leave(timeout time.Duration) error {
	p.mu.Lock()
	p.leaving = true
	if m, ok := p.members[p.cfg.NodeName]; ok {
		m.Status, m.Since = StatusLeaving, time.Now()
		p.notifyLocked()
	}
	p.mu.Unlock()
	// Tell every alive member directly: memberlist's own leave message is
	// gossiped and may reach nobody before this member goes.
	b, _ := json.Marshal(query{Kind: kindLeaveIntent, From: p.cfg.NodeName})
	var wg sync.WaitGroup
	for _, n := range p.aliveNodes() {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := p.ml.SendReliable(n, b); err != nil {
				p.logger.Debug("tell a member this one leaves", "member", n.Name, "error", err)
			}
		}()
	}
	wg.Wait()
	if err := p.ml.Leave(timeout); err != nil {
		return fmt.Errorf("leave the cluster: %w", err)
	}
	p.mu.Lock()
	if m, ok := p.members[p.cfg.NodeName]; ok {
		m.Status, m.Since = StatusLeft, time.Now()
		p.notifyLocked()
	}
	p.mu.Unlock()
	return nil
}

// Shutdown stops gossip at once, without leaving: to the others this member
// fails. It returns once the pool's goroutines are gone (memberlist's own
// probe in flight, if any, ends when its timer fires, within a few probe
// intervals: memberlist does not wait for it). Idempotent.
func (p *Pool) Shutdown() error {
	var err error
	p.shutdownOnce.Do(func() {
		close(p.shutdownCh)
		err = p.ml.Shutdown()
		p.queries.close()
		p.wg.Wait()
	})
	return err
}

// markLeaving records that a member announced it is leaving. The intent
// travels apart from memberlist's own leave message, and is handled from a
// queue: when that message came first, the member was marked failed, and
// its intent now makes it left (as it would have been had the intent come
// first).
func (p *Pool) markLeaving(name string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	m, ok := p.members[name]
	if !ok {
		return
	}
	switch m.Status {
	case StatusAlive:
		m.Status, m.Since = StatusLeaving, time.Now()
		p.logger.Info("member leaving", "member", name)
	case StatusFailed:
		m.Status, m.Since = StatusLeft, time.Now()
		p.logger.Info("member left", "member", name, "address", m.Address())
		metrics.IncrCounterWithLabels([]string{"trellis", "gossip", "member", StatusLeft.String()}, 1, nil)
	default:
		return
	}
	p.notifyLocked()
}

// delegate gives memberlist our metadata and receives our messages.
type delegate struct{ p *Pool }

func (d *delegate) NodeMeta(limit int) []byte {
	d.p.mu.Lock()
	defer d.p.mu.Unlock()
	b, err := encodeTags(d.p.tags)
	if err != nil || len(b) > limit {
		d.p.logger.Error("tags do not fit the gossip metadata", "bytes", len(b), "limit", limit)
		return nil
	}
	return b
}

// NotifyMsg must not block: messages are handed to the query handler's queue.
func (d *delegate) NotifyMsg(b []byte) { d.p.queries.receive(slices.Clone(b)) }

func (d *delegate) GetBroadcasts(overhead, limit int) [][]byte { return nil }
func (d *delegate) LocalState(join bool) []byte                { return nil }
func (d *delegate) MergeRemoteState(buf []byte, join bool)     {}

// events updates the member table from memberlist's events, which come one
// at a time.
type events struct{ p *Pool }

func (e *events) NotifyJoin(n *memberlist.Node) {
	e.p.mu.Lock()
	defer e.p.mu.Unlock()
	e.p.setStatusLocked(n, StatusAlive)
}

func (e *events) NotifyLeave(n *memberlist.Node) {
	e.p.mu.Lock()
	defer e.p.mu.Unlock()
	// memberlist knows whether a member left or failed, but does not say:
	// the Node it passes keeps the state it had when it joined. The
	// member's leave intent (markLeaving) tells the two apart.
	status := StatusFailed
	if m, ok := e.p.members[n.Name]; ok && (m.Status == StatusLeaving || m.Status == StatusLeft) {
		status = StatusLeft
	}
	e.p.setStatusLocked(n, status)
}

func (e *events) NotifyUpdate(n *memberlist.Node) {
	e.p.mu.Lock()
	defer e.p.mu.Unlock()
	e.p.setStatusLocked(n, StatusAlive)
}

// memberlistLogger carries the standard logger memberlist's transport takes.
type memberlistLogger struct{ *log.Logger }
