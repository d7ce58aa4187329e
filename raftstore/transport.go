package raftstore

import "github.com/hashicorp/raft"

// noPipelineTransport is Raft's network transport without pipelined
// replication. hashicorp/raft's pipeline can deadlock (hashicorp/raft#612):
// when a follower answers an append with Success=false, the pipeline's
// decoder ends while the sender may still queue one more request, which
// then waits for ever for that decoder. The replication goroutine never
// ends, the follower gets no more entries (heartbeats go on, so no
// election heals it), and Raft's Shutdown waits for the goroutine for
// ever. Without a pipeline Raft replicates with one AppendEntries at a
// time per follower, each carrying every entry waiting (up to
// MaxAppendEntries), and recovers from every failure.
type noPipelineTransport struct{ *raft.NetworkTransport }

// AppendEntriesPipeline refuses: Raft falls back to plain AppendEntries.
func (noPipelineTransport) AppendEntriesPipeline(raft.ServerID, raft.ServerAddress) (raft.AppendPipeline, error) {
	return nil, raft.ErrPipelineReplicationNotSupported
}
