package checks

import (
	"context"
	"errors"
	"fmt"
	"net"

	"github.com/trellismesh/trellis/raftstore/structs"
)

// TCP is a check that opens a TCP connection every interval: passing when
// the connection opens within the timeout, critical otherwise. The
// connection is closed at once; nothing is sent.
type TCP struct {
	*periodic
	addr string
}

var _ Check = (*TCP)(nil)

func newTCP(b base) *TCP {
	c := &TCP{addr: b.def.TCP}
	c.periodic = newPeriodic(b, c.dial)
	return c
}

// dial opens and closes one connection.
func (c *TCP) dial(ctx context.Context) (string, string) {
	prefix := fmt.Sprintf("TCP connect %s: ", c.addr)
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", c.addr)
	if err != nil {
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return structs.HealthCritical, prefix + fmt.Sprintf("timed out after %s", c.timeout)
		}
		return structs.HealthCritical, prefix + err.Error()
	}
	conn.Close()
	return structs.HealthPassing, prefix + "Success"
}
