// Package gossip is the agents' membership pool: who is in the cluster, where
// they are, and whether they are alive. It wraps hashicorp/memberlist (SWIM)
// behind our own types.
//
// memberlist forgets a dead node after a while; the pool keeps its own table of
// members with a status (alive, leaving, left, failed) and the time of the last
// change. A failed member is retried (a join attempt every ReconnectInterval)
// so two sides of a healed partition merge again without a manual step, and is
// reaped (forgotten) after ReconnectTimeout, 72 h by default. A member that
// left is kept as a tombstone for TombstoneTimeout.
//
// Each member carries tags (role, datacenter, server port, build …) in its
// memberlist metadata. Changes to the table close the channel returned by
// ChangeCh, so watchers re-read Members.
//
// Gossip is encrypted when a key is set: a keyring of 32-byte AES keys, the
// primary one encrypting, all of them decrypting. Keyring operations reach every
// member through reliable member-to-member messages (see keyring.go), so a key
// is rotated with no downtime: install everywhere, use everywhere, remove the old.
package gossip
