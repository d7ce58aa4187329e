package agent

import (
	"context"
	"errors"
	"time"

	"github.com/trellismesh/trellis/connect/intentions"
	"github.com/trellismesh/trellis/raftstore/structs"
)

var errMeshNotReady = errors.New("the mesh is not wired into the agent yet")

// ConnectRoots returns the trusted roots this agent holds.
func (a *Agent) ConnectRoots(ctx context.Context, minIndex uint64, wait time.Duration) (*structs.IndexedCARoots, error) {
	return nil, errMeshNotReady
}

// ConnectLeaf returns the leaf of a service.
func (a *Agent) ConnectLeaf(ctx context.Context, service string, minIndex uint64, wait time.Duration) (*structs.IssuedCert, error) {
	return nil, errMeshNotReady
}

// ConnectAuthorize decides a connection with the agent's intentions.
func (a *Agent) ConnectAuthorize(ctx context.Context, target, clientCertURI string) (intentions.Decision, error) {
	return intentions.Decision{}, errMeshNotReady
}

// DefaultIntentionAllow reports the default intention policy.
func (a *Agent) DefaultIntentionAllow() bool { return a.cfg.DevMode }
