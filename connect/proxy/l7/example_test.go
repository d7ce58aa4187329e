package l7_test

import (
	"context"
	"crypto/tls"
	"net"

	"github.com/trellismesh/trellis/connect"
	"github.com/trellismesh/trellis/connect/chain"
	"github.com/trellismesh/trellis/connect/intentions"
	"github.com/trellismesh/trellis/connect/proxy/l7"
)

// Example wires both sides: the destination's public listener hands the
// connections that negotiated l7.ALPN to an Inbound (the others, ALPN
// "h2", stay with the L4 tunnel), and the source's upstream listener is
// served by an Outbound whose endpoints the owner keeps current.
func Example() {
	var certs connect.CertSource                      // the sidecar's leaf and roots
	var compiled *chain.Chain                         // the upstream's discovery chain
	var current func() *intentions.Set                // the intentions, swapped as they change
	public, _ := net.Listen("tcp", "127.0.0.1:21000") // the public listener
	upstream, _ := net.Listen("tcp", "127.0.0.1:9191")

	in, _ := l7.NewInbound(l7.InboundConfig{
		ProxyID: "api-sidecar", Service: "api", Protocol: "http", LocalAppAddr: "127.0.0.1:8080",
		Authorizer: &l7.IntentionsAuthorizer{Destination: "api", Set: current},
	})
	defer in.Close()
	tlsConf := connect.ServerTLSConfig(certs, connect.ALPNTunnel, l7.ALPN)
	go func() {
		for {
			c, err := public.Accept()
			if err != nil {
				return
			}
			go func() {
				tc := tls.Server(c, tlsConf)
				if tc.HandshakeContext(context.Background()) != nil {
					c.Close()
					return
				}
				if tc.ConnectionState().NegotiatedProtocol == l7.ALPN {
					in.ServeConn(context.Background(), tc)
					return
				}
				// ... the L4 tunnel serves ALPN "h2".
			}()
		}
	}()

	out, _ := l7.NewOutbound(l7.OutboundConfig{
		ProxyID: "web-sidecar", Service: "web", DestinationName: "api", Chain: compiled, Certs: certs,
	})
	defer out.Close()
	out.SetTargetEndpoints("api.default.default.dc1", []l7.Endpoint{{Addr: "10.0.0.7:21000", Node: "node-7"}})
	go out.Serve(upstream)
}
