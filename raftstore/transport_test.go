package raftstore

import (
	"errors"
	"testing"

	"github.com/hashicorp/raft"
)

// Raft gets a transport that refuses pipelined replication (see
// noPipelineTransport), and keeps every other method of the network
// transport.
func TestNoPipelineTransport(t *testing.T) {
	var tr raft.Transport = noPipelineTransport{}
	if _, err := tr.AppendEntriesPipeline("id", "addr"); !errors.Is(err, raft.ErrPipelineReplicationNotSupported) {
		t.Fatalf("AppendEntriesPipeline: %v, want ErrPipelineReplicationNotSupported", err)
	}
	if _, ok := tr.(raft.WithClose); !ok {
		t.Error("the transport lost Close")
	}
	if _, ok := tr.(raft.WithPreVote); !ok {
		t.Error("the transport lost pre-vote")
	}
}
