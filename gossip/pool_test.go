package gossip

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/trellismesh/trellis/internal/retry"
	"github.com/trellismesh/trellis/internal/testutil"
)

func TestMain(m *testing.M) { testutil.VerifyTestMain(m) }

func newKey(t *testing.T) []byte {
	k := make([]byte, 32)
	if _, err := rand.Read(k); err != nil {
		t.Fatal(err)
	}
	return k
}

func startPool(t *testing.T, name string, mutate ...func(*Config)) *Pool {
	t.Helper()
	cfg := Config{
		NodeName: name, BindAddr: "127.0.0.1", BindPort: 0,
		Tags: map[string]string{"role": "client"}, Timing: DevTiming(), Logger: testutil.Logger(t),
	}
	for _, m := range mutate {
		m(&cfg)
	}
	p, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Shutdown() })
	return p
}

func statusOf(p *Pool, name string) Status {
	for _, m := range p.Members() {
		if m.Name == name {
			return m.Status
		}
	}
	return StatusNone
}

func waitStatus(t *testing.T, p *Pool, name string, want Status) {
	t.Helper()
	retry.RunWith(&retry.Timer{Timeout: 15 * time.Second, Wait: 20 * time.Millisecond}, t, func(r *retry.R) {
		if got := statusOf(p, name); got != want {
			r.Fatalf("%s sees %s as %s, want %s", p.cfg.NodeName, name, got, want)
		}
	})
}

// startPair starts pools a and b, joined, and waits until a sees b alive.
func startPair(t *testing.T) (a, b *Pool) {
	t.Helper()
	a, b = startPool(t, "a"), startPool(t, "b")
	if _, err := b.Join([]string{a.LocalAddr()}); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, a, "b", StatusAlive)
	return a, b
}

func TestPool_JoinFailLeave(t *testing.T) {
	t.Parallel()
	a := startPool(t, "a")
	b := startPool(t, "b", func(c *Config) { c.Tags = map[string]string{"role": "server", "dc": "dc1"} })
	c := startPool(t, "c")
	if _, err := b.Join([]string{a.LocalAddr()}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Join([]string{a.LocalAddr()}); err != nil {
		t.Fatal(err)
	}
	for _, p := range []*Pool{a, b, c} {
		for _, n := range []string{"a", "b", "c"} {
			waitStatus(t, p, n, StatusAlive)
		}
	}
	var bm Member
	for _, m := range c.Members() {
		if m.Name == "b" {
			bm = m
		}
	}
	if bm.Tags["role"] != "server" || bm.Addr.String() != "127.0.0.1" {
		t.Errorf("c sees b as %+v", bm)
	}

	// Tags changes spread.
	ch := a.ChangeCh()
	if err := b.SetTags(map[string]string{"role": "server", "dc": "dc1", "build": "2"}); err != nil {
		t.Fatal(err)
	}
	retry.Run(t, func(r *retry.R) {
		for _, m := range a.Members() {
			if m.Name == "b" && m.Tags["build"] != "2" {
				r.Fatalf("a sees b's tags %v", m.Tags)
			}
		}
	})
	select {
	case <-ch:
	default:
		t.Error("a tags change did not close the change channel")
	}

	// A member that stops without leaving fails; one that leaves has left.
	c.Shutdown()
	waitStatus(t, a, "c", StatusFailed)
	waitStatus(t, b, "c", StatusFailed)
	if err := b.Leave(2 * time.Second); err != nil {
		t.Fatal(err)
	}
	b.Shutdown()
	waitStatus(t, a, "b", StatusLeft)
	if a.NumAlive() != 1 {
		t.Errorf("alive = %d, want 1", a.NumAlive())
	}
	if err := a.RemoveFailed("c"); err != nil {
		t.Fatal(err)
	}
	if statusOf(a, "c") != StatusLeft {
		t.Error("force-removed member not marked left")
	}
}

// A leave intent handled after memberlist's leave message (which marked
// the member failed: the intent comes from a queue, and the two travel
// apart) still makes the member left. Without it, a member that left on
// purpose could stay failed, and its services critical, until reaped.
func TestPool_leaveIntentAfterTheLeaveMessage(t *testing.T) {
	t.Parallel()
	a, b := startPair(t)
	// b goes without a word: a marks it failed, as it does when b's
	// memberlist leave message is handled before its intent.
	b.Shutdown()
	waitStatus(t, a, "b", StatusFailed)
	ch := a.ChangeCh()
	a.markLeaving("b")
	if got := statusOf(a, "b"); got != StatusLeft {
		t.Errorf("a sees b as %s after its late leave intent, want left", got)
	}
	select {
	case <-ch:
	default:
		t.Error("the change from failed to left did not close the change channel")
	}
	// An intent of a member that has left already changes nothing.
	a.markLeaving("b")
	if got := statusOf(a, "b"); got != StatusLeft {
		t.Errorf("a sees b as %s after a second intent, want left", got)
	}
}

func TestPool_ReconnectAfterRestart(t *testing.T) {
	t.Parallel()
	a, b := startPair(t)
	addr := b.LocalAddr()
	b.Shutdown()
	waitStatus(t, a, "b", StatusFailed)
	// b comes back on the same address without joining anyone: a's
	// reconnect attempts bring it back.
	_, port, _ := strings.Cut(addr, ":")
	var p int
	fmt.Sscan(port, &p)
	startPool(t, "b", func(c *Config) { c.BindPort = p })
	waitStatus(t, a, "b", StatusAlive)
}

func TestPool_EncryptionAndKeyRotation(t *testing.T) {
	t.Parallel()
	k1, k2 := newKey(t), newKey(t)
	dir := t.TempDir()
	a := startPool(t, "a", func(c *Config) { c.Keys = [][]byte{k1}; c.KeyringFile = filepath.Join(dir, "a.keyring") })
	b := startPool(t, "b", func(c *Config) { c.Keys = [][]byte{k1} })
	if _, err := b.Join([]string{a.LocalAddr()}); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, a, "b", StatusAlive)

	// The wrong key cannot join; neither can no key.
	wrong := startPool(t, "wrong", func(c *Config) { c.Keys = [][]byte{k2} })
	if _, err := wrong.Join([]string{a.LocalAddr()}); err == nil {
		t.Error("a member with the wrong key joined")
	} else if !strings.Contains(err.Error(), "same gossip encryption key") {
		t.Errorf("join error does not say why: %v", err)
	}
	plain := startPool(t, "plain")
	if _, err := plain.Join([]string{a.LocalAddr()}); err == nil {
		t.Error("a member without a key joined an encrypted cluster")
	}
	if statusOf(a, "wrong") != StatusNone || statusOf(a, "plain") != StatusNone {
		t.Errorf("refused members are known: %v", a.Members())
	}

	ctx := context.Background()
	k2s := base64.StdEncoding.EncodeToString(k2)
	k1s := base64.StdEncoding.EncodeToString(k1)
	steps := []struct {
		op      string
		key     []byte
		keys    map[string]int
		primary string
	}{
		{KeyringInstall, k2, map[string]int{k1s: 2, k2s: 2}, k1s},
		{KeyringUse, k2, map[string]int{k1s: 2, k2s: 2}, k2s},
		{KeyringRemove, k1, map[string]int{k2s: 2}, k2s},
	}
	for _, st := range steps {
		resp, err := b.Keyring(ctx, st.op, st.key)
		if err != nil || resp.NumResp != 2 || len(resp.Errors) != 0 {
			t.Fatalf("%s: %+v, %v", st.op, resp, err)
		}
		list, err := a.Keyring(ctx, KeyringList, nil)
		if err != nil || len(list.Keys) != len(st.keys) || list.PrimaryKeys[st.primary] != 2 {
			t.Fatalf("after %s: %+v, %v", st.op, list, err)
		}
		for k, n := range st.keys {
			if list.Keys[k] != n {
				t.Errorf("after %s: key held by %d members, want %d", st.op, list.Keys[k], n)
			}
		}
	}
	// Removing the primary is refused everywhere.
	resp, _ := a.Keyring(ctx, KeyringRemove, k2)
	if len(resp.Errors) != 2 {
		t.Errorf("removing the primary: %+v", resp)
	}
	// Gossip still works on the new key: a third member with only k2 joins.
	c := startPool(t, "c", func(c *Config) { c.Keys = [][]byte{k2} })
	if _, err := c.Join([]string{a.LocalAddr()}); err != nil {
		t.Fatalf("join with the rotated key: %v", err)
	}
	waitStatus(t, b, "c", StatusAlive)

	// The keyring file keeps the rotation: a restart with the old
	// configured key still uses k2.
	keys, err := readKeyringFile(filepath.Join(dir, "a.keyring"))
	if err != nil || len(keys) != 1 || string(keys[0]) != string(k2) {
		t.Errorf("keyring file = %v, %v", keys, err)
	}
}

func TestConfig_Validate(t *testing.T) {
	t.Parallel()
	good := Config{NodeName: "n", Timing: DevTiming()}
	if err := good.Validate(); err != nil {
		t.Fatal(err)
	}
	for name, mut := range map[string]func(*Config){
		"no name":  func(c *Config) { c.NodeName = "" },
		"bad key":  func(c *Config) { c.Keys = [][]byte{[]byte("short")} },
		"big tags": func(c *Config) { c.Tags = map[string]string{"x": strings.Repeat("y", 600)} },
		"timing":   func(c *Config) { c.Timing.ProbeInterval = 0 },
	} {
		c := good
		mut(&c)
		if err := c.Validate(); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if _, err := DecodeKey("not base64!"); err == nil {
		t.Error("DecodeKey accepted garbage")
	}
}

// Messages sent to members while one of them changes (each change is an
// alive message with a new incarnation, which memberlist applies to the
// Node structs it keeps), and the member's own address read meanwhile:
// both read copies of the pool's own, so -race finds nothing.
func TestPool_sendsWhileAMemberChanges(t *testing.T) {
	t.Parallel()
	a, b := startPair(t)
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			_ = b.SetTags(map[string]string{"n": fmt.Sprint(i)})
		}
	}()
	for range 30 {
		ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
		// Neither has a keyring: each answers with an error, after a
		// round trip to the other.
		if _, err := a.Keyring(ctx, KeyringList, nil); err != nil {
			t.Error(err)
		}
		cancel()
		// b's own address, while its tag updates rewrite its local Node.
		if addr := b.LocalAddr(); !strings.HasPrefix(addr, "127.0.0.1:") {
			t.Errorf("b's address: %q", addr)
		}
	}
	close(stop)
	<-done
}

// A member answers a request even from a member it takes for failed (a
// false alarm on a loaded machine): the asker just reached it.
func TestPool_answersAMemberItTakesForFailed(t *testing.T) {
	t.Parallel()
	a, b := startPair(t)
	b.mu.Lock()
	b.members["a"].Status = StatusFailed // b's view only; a is alive
	b.mu.Unlock()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	resp, err := a.Keyring(ctx, KeyringList, nil)
	if err != nil {
		t.Fatal(err)
	}
	// Neither has a keyring: b's answer is that error, not silence.
	if msg := resp.Errors["b"]; !strings.Contains(msg, "not enabled") {
		t.Errorf("b's answer: %q; want its own error, not a missing answer", msg)
	}
}
