// Package state is the in-memory, indexed, transactional store of the
// cluster's state (go-memdb): nodes, service instances and checks, each row
// carrying the Raft indexes that created and last changed it.
//
// # Indexes for blocking queries
//
// Besides the rows, the store keeps named Raft indexes in its "index" table:
// one per table ("nodes", "services", "checks") and one per resource:
// "service.<name>" moves whenever anything a query about that service returns
// changes (an instance, one of its checks, a check of or a change to a node that
// hosts it), and "node.<name>" whenever anything on that node changes. A read
// returns the index of exactly what it read and adds that index row's watch
// channel to the caller's WatchSet, so a blocking query on service web is not
// woken by a change to service db. A write that changes nothing moves no index
// and wakes nobody. Per-service index rows are kept when the service goes away,
// so an index never moves backwards; a name never seen has index 1.
//
// # Writers
//
// Only the FSM writes, one transaction per Raft log entry, with that entry's
// index. Restore builds a new Store; the FSM swaps it in and calls Abandon on
// the old one, which closes AbandonCh so blocked queries re-run on the new one.
package state
