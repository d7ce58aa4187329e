package gossip

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"

	"github.com/hashicorp/memberlist"
)

// Keyring operations.
const (
	KeyringList    = "list"
	KeyringInstall = "install"
	KeyringUse     = "use"
	KeyringRemove  = "remove"
)

// KeyringResponse is the outcome of a keyring operation across the cluster.
type KeyringResponse struct {
	// NumNodes is how many alive members were asked; NumResp answered.
	NumNodes, NumResp int
	// Errors holds each member's error, by member name.
	Errors map[string]string
	// Keys counts, for each key (base64), the members holding it.
	Keys map[string]int
	// PrimaryKeys counts, for each key, the members using it as primary.
	PrimaryKeys map[string]int
}

// DecodeKey decodes a base64 gossip key and checks its length (16, 24 or 32
// bytes; `trellis keygen` makes 32).
func DecodeKey(s string) ([]byte, error) {
	k, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return nil, fmt.Errorf("gossip key is not base64: %w", err)
	}
	if err := memberlist.ValidateKey(k); err != nil {
		return nil, fmt.Errorf("gossip key: %w", err)
	}
	return k, nil
}

// keyringFile is the JSON kept in KeyringFile: base64 keys, primary first.
func readKeyringFile(path string) ([][]byte, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read keyring %s: %w", path, err)
	}
	var enc []string
	if err := json.Unmarshal(b, &enc); err != nil {
		return nil, fmt.Errorf("keyring %s: %w", path, err)
	}
	var keys [][]byte
	for _, s := range enc {
		k, err := DecodeKey(s)
		if err != nil {
			return nil, fmt.Errorf("keyring %s: %w", path, err)
		}
		keys = append(keys, k)
	}
	return keys, nil
}

func writeKeyringFile(path string, kr *memberlist.Keyring) error {
	primary := kr.GetPrimaryKey()
	enc := []string{base64.StdEncoding.EncodeToString(primary)}
	for _, k := range kr.GetKeys() {
		if string(k) != string(primary) {
			enc = append(enc, base64.StdEncoding.EncodeToString(k))
		}
	}
	b, _ := json.Marshal(enc)
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("keyring directory: %w", err)
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return fmt.Errorf("write keyring: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("write keyring: %w", err)
	}
	return nil
}

// localKeyringOp performs op on this member's keyring.
func (p *Pool) localKeyringOp(op string, key []byte) (keys [][]byte, primary []byte, err error) {
	if p.keyring == nil {
		return nil, nil, errors.New("gossip encryption is not enabled on this agent")
	}
	switch op {
	case KeyringList:
	case KeyringInstall:
		err = p.keyring.AddKey(key)
	case KeyringUse:
		installed := false
		for _, k := range p.keyring.GetKeys() {
			if string(k) == string(key) {
				installed = true
			}
		}
		if !installed {
			return nil, nil, errors.New("the key is not installed: install it first")
		}
		err = p.keyring.UseKey(key)
	case KeyringRemove:
		if string(p.keyring.GetPrimaryKey()) == string(key) {
			return nil, nil, errors.New("the key is the primary key: use another first")
		}
		err = p.keyring.RemoveKey(key)
	default:
		return nil, nil, fmt.Errorf("unknown keyring operation %q", op)
	}
	if err != nil {
		return nil, nil, err
	}
	if op != KeyringList && p.cfg.KeyringFile != "" {
		if err := writeKeyringFile(p.cfg.KeyringFile, p.keyring); err != nil {
			return nil, nil, err
		}
	}
	if op != KeyringList {
		p.logger.Info("keyring changed", "operation", op)
	}
	return p.keyring.GetKeys(), p.keyring.GetPrimaryKey(), nil
}

// Keyring performs op (KeyringList, …) with key (nil for list) on every
// alive member and gathers the answers, waiting until all have answered or
// ctx ends.
func (p *Pool) Keyring(ctx context.Context, op string, key []byte) (*KeyringResponse, error) {
	if op != KeyringList && key == nil {
		return nil, fmt.Errorf("keyring %s needs a key", op)
	}
	targets := p.aliveNodes()
	resp := &KeyringResponse{NumNodes: len(targets) + 1, Errors: map[string]string{}, Keys: map[string]int{}, PrimaryKeys: map[string]int{}}
	var mu sync.Mutex
	record := func(node string, keys []string, primary, errMsg string) {
		mu.Lock()
		defer mu.Unlock()
		resp.NumResp++
		if errMsg != "" {
			resp.Errors[node] = errMsg
			return
		}
		for _, k := range keys {
			resp.Keys[k]++
		}
		if primary != "" {
			resp.PrimaryKeys[primary]++
		}
	}
	// Members first, while this member's keyring still decrypts their
	// answers; this member last.
	if len(targets) > 0 {
		answers, err := p.queries.ask(ctx, targets, query{Kind: kindKeyringRequest, Op: op, Key: key})
		if err != nil {
			return nil, err
		}
		for _, n := range targets {
			if a, ok := answers[n.Name]; ok {
				record(n.Name, a.Keys, a.Primary, a.Error)
			} else {
				record(n.Name, nil, "", "no answer (the member may be down, or unable to decrypt the request)")
			}
		}
	}
	keys, primary, err := p.localKeyringOp(op, key)
	if err != nil {
		record(p.cfg.NodeName, nil, "", err.Error())
	} else {
		record(p.cfg.NodeName, encodeKeys(keys), base64.StdEncoding.EncodeToString(primary), "")
	}
	return resp, nil
}

func encodeKeys(keys [][]byte) []string {
	out := make([]string, len(keys))
	for i, k := range keys {
		out[i] = base64.StdEncoding.EncodeToString(k)
	}
	return out
}
