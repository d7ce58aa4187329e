package testcluster

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
)

var (
	ipMu   sync.Mutex
	ipNext int
)

// LoopbackIPs returns n loopback addresses for this test's agents, distinct
// from those of other tests and (by the process ID) other test processes.
// Linux answers the whole 127.0.0.0/8 on lo, so nothing needs configuring.
func LoopbackIPs(t testing.TB, n int) []string {
	t.Helper()
	ipMu.Lock()
	defer ipMu.Unlock()
	second := 100 + os.Getpid()%100
	var out []string
	for len(out) < n {
		ipNext++
		ip := fmt.Sprintf("127.%d.%d.%d", second, ipNext/250, ipNext%250+2)
		ln, err := net.Listen("tcp", ip+":0")
		if err != nil {
			continue
		}
		ln.Close()
		out = append(out, ip)
	}
	return out
}

// Firewall cuts traffic between loopback addresses with iptables DROP
// rules, in a chain of its own that is removed when the test ends. It needs
// root; iptables is installed when missing.
type Firewall struct {
	t     testing.TB
	chain string
}

// NewFirewall sets up the test's chain, or skips the test when iptables
// cannot be used here.
func NewFirewall(t testing.TB) *Firewall {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("partition tests need root for iptables")
	}
	installIPTables(t)
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	f := &Firewall{t: t, chain: "TRELLIS-" + strings.ToUpper(hex.EncodeToString(b))}
	f.run("-N", f.chain)
	f.run("-I", "INPUT", "-j", f.chain)
	t.Cleanup(func() {
		_ = exec.Command("iptables", "-D", "INPUT", "-j", f.chain).Run()
		_ = exec.Command("iptables", "-F", f.chain).Run()
		_ = exec.Command("iptables", "-X", f.chain).Run()
	})
	return f
}

var installOnce sync.Once

// installIPTables installs Debian's iptables when it is missing.
func installIPTables(t testing.TB) {
	t.Helper()
	var failure string
	installOnce.Do(func() {
		if _, err := exec.LookPath("iptables"); err == nil {
			return
		}
		if out, err := exec.Command("apt-get", "install", "-y", "iptables").CombinedOutput(); err == nil {
			return
		} else if out2, err2 := exec.Command("sh", "-c", "apt-get update && apt-get install -y iptables").CombinedOutput(); err2 != nil {
			failure = fmt.Sprintf("install iptables: %v\n%s\n%s", err2, out, out2)
		}
	})
	if failure != "" {
		t.Fatal(failure)
	}
	if _, err := exec.LookPath("iptables"); err != nil {
		t.Fatalf("iptables is missing and could not be installed: %v", err)
	}
}

func (f *Firewall) run(args ...string) {
	f.t.Helper()
	if out, err := exec.Command("iptables", args...).CombinedOutput(); err != nil {
		f.t.Fatalf("iptables %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// Partition drops every packet between any address of a and any of b, both
// ways (TCP and UDP).
func (f *Firewall) Partition(a, b []string) {
	f.t.Helper()
	for _, x := range a {
		for _, y := range b {
			f.run("-A", f.chain, "-s", x, "-d", y, "-j", "DROP")
			f.run("-A", f.chain, "-s", y, "-d", x, "-j", "DROP")
		}
	}
}

// Heal removes every rule.
func (f *Firewall) Heal() {
	f.t.Helper()
	f.run("-F", f.chain)
}
