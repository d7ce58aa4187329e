// Package structs holds the records Trellis keeps in Raft (nodes, services,
// checks), the requests and replies of the internal RPC endpoints, and the
// encoding of Raft log entries.
//
// These are wire and storage types: a field once persisted keeps its name and
// meaning. MessageType values are written into the Raft log, so they are
// append-only with explicit numbers (a test pins them).
//
// The package imports nothing of ours but connect, so every layer can use it.
package structs
