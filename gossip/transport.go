package gossip

import (
	"net"
	"time"

	"github.com/hashicorp/memberlist"
)

// boundTransport is memberlist's network transport, except that stream
// connections leave from the bind address: on a host with several addresses
// (and in tests that give each agent its own loopback address) a member's
// TCP traffic then comes from the address it gossips under.
type boundTransport struct {
	*memberlist.NetTransport
	local *net.TCPAddr
}

var _ memberlist.NodeAwareTransport = (*boundTransport)(nil)

// newTransport binds the gossip port; the stream dialer uses the bind
// address as source when it is a specific IP.
func newTransport(bindAddr string, port int, logger *memberlistLogger) (memberlist.NodeAwareTransport, error) {
	nt, err := memberlist.NewNetTransport(&memberlist.NetTransportConfig{
		BindAddrs: []string{bindAddr},
		BindPort:  port,
		Logger:    logger.Logger,
	})
	if err != nil {
		return nil, err
	}
	ip := net.ParseIP(bindAddr)
	if ip == nil || ip.IsUnspecified() {
		return nt, nil
	}
	return &boundTransport{NetTransport: nt, local: &net.TCPAddr{IP: ip}}, nil
}

// DialTimeout dials from the bind address.
func (t *boundTransport) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	d := net.Dialer{Timeout: timeout, LocalAddr: t.local}
	return d.Dial("tcp", addr)
}

// DialAddressTimeout dials from the bind address.
func (t *boundTransport) DialAddressTimeout(a memberlist.Address, timeout time.Duration) (net.Conn, error) {
	return t.DialTimeout(a.Addr, timeout)
}
