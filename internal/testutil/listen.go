package testutil

import (
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
)

// ListensHere reports whether this process (the test and whatever it runs
// in-process: agents, proxies) has a TCP socket listening on the port of
// addr ("host:port"), from /proc/net/tcp{,6} and /proc/self/fd. Dialling
// the port would not tell: tests running in parallel may be given a port
// a test freed (or picked and never bound), and a dial can even connect a
// socket to itself.
func ListensHere(tb testing.TB, addr string) bool {
	tb.Helper()
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		tb.Fatalf("ListensHere(%q): %v", addr, err)
	}
	port, err := strconv.Atoi(p)
	if err != nil {
		tb.Fatalf("ListensHere(%q): port: %v", addr, err)
	}
	inodes := map[string]bool{}
	for _, table := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		b, err := os.ReadFile(table)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n")[1:] {
			// sl local_address rem_address st ... inode; local_address is
			// HEXIP:HEXPORT, st 0A is LISTEN.
			f := strings.Fields(line)
			if len(f) < 10 || f[3] != "0A" {
				continue
			}
			i := strings.LastIndexByte(f[1], ':')
			if lp, err := strconv.ParseUint(f[1][i+1:], 16, 16); err == nil && int(lp) == port {
				inodes["socket:["+f[9]+"]"] = true
			}
		}
	}
	if len(inodes) == 0 {
		return false
	}
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		tb.Fatalf("list this process's descriptors: %v", err)
	}
	for _, fd := range fds {
		if l, err := os.Readlink("/proc/self/fd/" + fd.Name()); err == nil && inodes[l] {
			return true
		}
	}
	return false
}
