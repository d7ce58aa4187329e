// Package connect holds the mesh's value types and the pure pieces every
// layer shares: SPIFFE identities of services, intentions (who may call
// whom), and the TLS configurations proxies use (TLS 1.3, mutual, with the
// identity checked against the trusted roots).
//
// It imports nothing of ours, so the state store, the agent and the proxies
// can all use it.
package connect
