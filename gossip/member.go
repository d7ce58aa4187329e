package gossip

import (
	"encoding/json"
	"fmt"
	"maps"
	"net"
	"time"
)

// Status is a member's gossip status. The values are Serf's (and Consul's
// API's): 1 alive, 2 leaving, 3 left, 4 failed.
type Status int

// Member statuses.
const (
	StatusNone    Status = 0
	StatusAlive   Status = 1
	StatusLeaving Status = 2
	StatusLeft    Status = 3
	StatusFailed  Status = 4
)

func (s Status) String() string {
	switch s {
	case StatusAlive:
		return "alive"
	case StatusLeaving:
		return "leaving"
	case StatusLeft:
		return "left"
	case StatusFailed:
		return "failed"
	}
	return "none"
}

// Member is one agent of the cluster as this pool knows it.
type Member struct {
	Name   string
	Addr   net.IP
	Port   int
	Tags   map[string]string
	Status Status
	// Since is when Status last changed.
	Since time.Time
}

// Clone returns a copy of m.
func (m Member) Clone() Member {
	m.Addr = append(net.IP(nil), m.Addr...)
	m.Tags = maps.Clone(m.Tags)
	return m
}

// Address returns host:port of the member's gossip port.
func (m Member) Address() string { return net.JoinHostPort(m.Addr.String(), fmt.Sprint(m.Port)) }

func encodeTags(tags map[string]string) ([]byte, error) {
	if len(tags) == 0 {
		return nil, nil
	}
	b, err := json.Marshal(tags)
	if err != nil {
		return nil, fmt.Errorf("encode tags: %w", err)
	}
	return b, nil
}

func decodeTags(b []byte) map[string]string {
	if len(b) == 0 {
		return map[string]string{}
	}
	var tags map[string]string
	if err := json.Unmarshal(b, &tags); err != nil {
		return map[string]string{}
	}
	return tags
}
