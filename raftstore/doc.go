// Package raftstore is a Trellis server: a Raft node whose FSM keeps the
// cluster's state (package state), and the internal RPC endpoints that read
// and write it.
//
// # Using a Server
//
//	s, err := raftstore.NewServer(cfg)     // starts Raft on cfg.BindAddr
//	err = s.RPC(ctx, structs.MethodCatalogRegister, &req, &reply)
//	err = s.Shutdown()                     // idempotent; waits for goroutines
//
// RPC is the one entry point for reads and writes. Writes are validated
// first (errors are *structs.ValidationError naming the field), so nothing
// invalid reaches the Raft log; then they go through Raft, batched with other
// concurrent writes into fewer disk writes. Reads run through the blocking
// query helper and fill the reply's QueryMeta. A server that is not the leader
// answers writes and non-stale reads with structs.ErrNotLeader; forwarding to
// the leader is the caller's job.
//
// # The server port
//
// The server listens on one TCP port (default 8300) and reads the first byte
// of every connection to tell its protocols apart: 0x01 is Raft; 0x02 is
// reserved for the internal RPC between agents and servers.
//
// # Storage
//
// With a DataDir, the Raft log and stable store are a bbolt file
// (DataDir/raft/raft.db) and snapshots are files under DataDir/raft/snapshots
// (two kept). Without one (the -dev agent), everything is in memory.
package raftstore
