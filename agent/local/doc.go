// Package local holds an agent's local state: its node identity and the
// services and checks registered on it (from config files, `services
// register` and the agent HTTP API), each marked in sync with the catalog or
// not. It is the source of truth for what the agent owns; the catalog is
// brought in line with it by anti-entropy (package ae drives State's
// SyncFull and SyncChanges).
//
// # Change and sync
//
// Every change that the catalog must hear about marks the entry out of sync
// and calls Config.OnChange (the agent points it at the anti-entropy
// trigger); WatchCh is closed on every change, including output-only ones,
// for in-process watchers. SyncChanges pushes what is out of sync: the
// node's own registration first (so the node is in the catalog even with no
// services), then deregistrations, then services with all their checks, then
// single checks. SyncFull first reads this node's services and checks from
// the catalog and marks every difference out of sync, so an entry removed
// from (or changed in) the catalog behind the agent's back comes back, and
// an entry the agent does not own goes away.
//
// RPCs run without holding the state's lock, so the agent API keeps
// answering while a sync waits for a server; an entry changed meanwhile stays
// out of sync and goes out at the next sync.
//
// # Check output
//
// A check's output changes far more often than its status (a timestamp in an
// HTTP body is enough). A status change syncs at once; an output-only change
// of a check that is in sync is deferred by CheckUpdateInterval (jittered
// between half and one and a half times it, default five minutes), so checks
// do not flood the Raft log. A full sync also leaves output-only
// differences to that timer.
//
// # Deregistering critical services
//
// Reaper removes a service once one of its checks with
// DeregisterCriticalServiceAfter has been critical for longer than that. It
// reads CriticalCheckStates and calls a removal function the agent gives it,
// so that the agent also stops the service's check runners.
//
// # Persistence
//
// The state is in memory only. Services and checks are plain data
// (ServiceState and CheckState clone to JSON-encodable values), so keeping
// them across restarts (the cluster issue) can be an observer of WatchCh
// that writes Services, Checks and CheckState(id).Def, and a loader that
// replays them through AddService and AddCheck before the first sync.
package local
