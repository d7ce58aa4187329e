// Package authz is the one authorization point of Trellis: every HTTP
// handler, DNS answer and internal RPC asks an Authorizer before it reads or
// writes, naming what it touches. Until ACL tokens exist the agent uses
// AllowAll; access control is then a new Authorizer, not a change to every
// handler.
package authz

import (
	"context"
	"errors"
	"fmt"
)

// Access is what a request does to a resource.
type Access uint8

// The accesses.
const (
	Read Access = iota + 1
	Write
)

func (a Access) String() string {
	switch a {
	case Read:
		return "read"
	case Write:
		return "write"
	}
	return fmt.Sprintf("access(%d)", uint8(a))
}

// Resource is a kind of thing a request touches, in the terms of Consul's
// ACL rules.
type Resource string

// The resources.
const (
	// Agent is the local agent itself: its configuration, members, metrics,
	// joining and leaving.
	Agent Resource = "agent"
	// Node is a node of the catalog and its checks.
	Node Resource = "node"
	// Service is a service: its instances, health, discovery chain, and
	// the metrics of its traffic.
	Service Resource = "service"
	// Intention is who may call a destination service.
	Intention Resource = "intention"
	// Mesh is the mesh's configuration: config entries, and the CA's roots
	// and leaves.
	Mesh Resource = "mesh"
	// Operator is the cluster's operation: Raft peers, the CA's
	// configuration.
	Operator Resource = "operator"
	// Keyring is the gossip encryption keys.
	Keyring Resource = "keyring"
)

// Request is one access to check. Name is the resource's name when the
// request is about one (a service, a node), empty otherwise. Token is the
// caller's ACL token: never logged.
type Request struct {
	Token    string
	Resource Resource
	Name     string
	Access   Access
}

// String says what is asked, e.g. "service:write web", without the token.
func (r Request) String() string {
	s := string(r.Resource) + ":" + r.Access.String()
	if r.Name != "" {
		s += " " + r.Name
	}
	return s
}

// Authorizer decides requests: nil to allow, else an error wrapping
// ErrDenied that says what was refused.
type Authorizer interface {
	Authorize(ctx context.Context, req Request) error
}

// ErrDenied is the error of a refused request; its text is Consul's.
//
//lint:ignore ST1005 Consul's clients match this exact text
var ErrDenied = errors.New("Permission denied")

// Denied returns the error refusing req.
func Denied(req Request) error { return fmt.Errorf("%w: %s", ErrDenied, req) }

type tokenKey struct{}

// WithToken returns ctx carrying the caller's token, for the calls made
// on its behalf (the HTTP API's RPCs).
func WithToken(ctx context.Context, token string) context.Context {
	if token == "" {
		return ctx
	}
	return context.WithValue(ctx, tokenKey{}, token)
}

// TokenFrom returns the token WithToken put in ctx, or "".
func TokenFrom(ctx context.Context) string {
	t, _ := ctx.Value(tokenKey{}).(string)
	return t
}

// AllowAll allows everything: the Authorizer until ACL tokens exist.
type AllowAll struct{}

// Authorize allows req.
func (AllowAll) Authorize(context.Context, Request) error { return nil }
