package raftstore

// Membership is the cluster's membership as the leader sees it. The agent
// implements it over gossip, so this package needs no gossip import.
type Membership interface {
	// Members returns every known member: alive, leaving, failed (until
	// reaped) and left (until forgotten).
	Members() []Member
	// ChangeCh returns a channel closed at the next change.
	ChangeCh() <-chan struct{}
}

// MemberStatus is a member's gossip status.
type MemberStatus int

// Member statuses.
const (
	MemberAlive MemberStatus = iota + 1
	MemberLeaving
	MemberLeft
	MemberFailed
)

// Member is one agent of the cluster.
type Member struct {
	// Name is the node name; ID the node ID.
	Name, ID string
	// Addr is the member's advertised IP.
	Addr string
	// Datacenter is the member's datacenter.
	Datacenter string
	Status     MemberStatus
	// Server reports whether the member is a server; ServerAddr is then its
	// server port address (host:port), and Expect its bootstrap_expect.
	Server     bool
	ServerAddr string
	Expect     int
}
