package local

import (
	"context"
	"testing"
	"time"

	"github.com/trellismesh/trellis/internal/testutil"
	"github.com/trellismesh/trellis/raftstore"
)

// The sync tests also run against the real catalog: a single Raft server.
func init() {
	catalogs["raft"] = func(t *testing.T) rpcClient {
		cfg := raftstore.TestConfig("server", "")
		cfg.Logger = testutil.Logger(t)
		s, err := raftstore.NewServer(cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Shutdown() })
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		defer cancel()
		if err := s.WaitForLeader(ctx); err != nil {
			t.Fatal(err)
		}
		return s
	}
}
