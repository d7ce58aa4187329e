package agent_test

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	consulapi "github.com/hashicorp/consul/api"

	"github.com/trellismesh/trellis/agent/tlsutil"
	"github.com/trellismesh/trellis/internal/retry"
	"github.com/trellismesh/trellis/internal/testcluster"
	"github.com/trellismesh/trellis/raftstore/structs"
)

func gossipKey(t *testing.T) string {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return base64.StdEncoding.EncodeToString(b)
}

func TestCluster_GossipKeyRefusedAndRotated(t *testing.T) {
	t.Parallel()
	k1 := gossipKey(t)
	c := testcluster.StartCluster(t, testcluster.ClusterOptions{Servers: 1, Clients: 1,
		Modify: func(i int, o *testcluster.Options) { o.HCL = fmt.Sprintf("encrypt = %q", k1) }})

	// An agent with another key cannot join, and says why.
	wrong := testcluster.StartAgent(t, testcluster.Options{Name: "wrong-key", Client: true, HCL: fmt.Sprintf("encrypt = %q", gossipKey(t))})
	err := wrong.Client.Agent().Join(c.Servers[0].GossipAddr(), false)
	if err == nil || !strings.Contains(err.Error(), "encryption key") {
		t.Errorf("join with the wrong key: %v", err)
	}
	// So can't one with no key.
	plain := testcluster.StartAgent(t, testcluster.Options{Name: "no-key", Client: true})
	if err := plain.Client.Agent().Join(c.Servers[0].GossipAddr(), false); err == nil {
		t.Error("an agent without the key joined")
	}
	if members, _ := c.Servers[0].Client.Agent().Members(false); len(members) != 2 {
		t.Errorf("members = %d, want 2 (the refused agents are not members)", len(members))
	}

	// Rotation through the API, with no downtime. Each step reaches the
	// members that are alive; one falsely taken for failed at that moment
	// (its probes late on a loaded machine) is skipped, and the operator
	// runs the steps again, as website/security.md says: each is
	// idempotent. The list tells when every member has the new key alone.
	k2 := gossipKey(t)
	op := c.Clients[0].Client.Operator()
	// A step waits up to 10 s for a member's answer: room for a few rounds.
	retry.RunWith(&retry.Timer{Timeout: 45 * time.Second, Wait: 100 * time.Millisecond}, t, func(r *retry.R) {
		for _, step := range []func() error{
			func() error { return op.KeyringInstall(k2, nil) },
			func() error { return op.KeyringUse(k2, nil) },
			func() error { return op.KeyringRemove(k1, nil) },
		} {
			if err := step(); err != nil {
				r.Fatal(err)
			}
		}
		list, err := op.KeyringList(nil)
		if err != nil {
			r.Fatal(err)
		}
		if len(list) != 1 || len(list[0].Keys) != 1 || list[0].Keys[k2] != 2 || list[0].PrimaryKeys[k2] != 2 {
			for _, l := range list {
				r.Fatalf("keyring after rotation: nodes %d, keys %v, primary %v, messages %v", l.NumNodes, l.Keys, l.PrimaryKeys, l.Messages)
			}
			r.Fatalf("keyring after rotation: %d answers", len(list))
		}
	})
	// An agent with only the new key joins.
	fresh := testcluster.StartAgent(t, testcluster.Options{Name: "new-key", Client: true, HCL: fmt.Sprintf("encrypt = %q", k2),
		RetryJoin: []string{c.Servers[0].GossipAddr()}})
	retry.Run(t, func(r *retry.R) {
		if members, _ := fresh.Client.Agent().Members(false); len(members) != 3 {
			r.Fatalf("members seen by the new agent: %d", len(members))
		}
	})
}

// writeCerts makes a CA and certificates under dir, returning the paths.
func writeCerts(t *testing.T, dir string, server bool) (ca, cert, key string) {
	t.Helper()
	caCert, caKey, err := tlsutil.GenerateCA(tlsutil.CAOptions{})
	if err != nil {
		t.Fatal(err)
	}
	c, k, err := tlsutil.GenerateCert(tlsutil.CertOptions{CACert: caCert, CAKey: caKey, Server: server})
	if err != nil {
		t.Fatal(err)
	}
	ca, cert, key = filepath.Join(dir, "ca.pem"), filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	for p, b := range map[string][]byte{ca: caCert, cert: c, key: k} {
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return ca, cert, key
}

func tlsHCL(ca, cert, key string) string {
	return fmt.Sprintf(`tls {
  defaults {
    ca_file = %q
    cert_file = %q
    key_file = %q
    verify_incoming = true
    verify_outgoing = true
  }
}`, ca, cert, key)
}

func TestCluster_MutualTLS(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	caCert, caKey, err := tlsutil.GenerateCA(tlsutil.CAOptions{})
	if err != nil {
		t.Fatal(err)
	}
	caPath := filepath.Join(dir, "ca.pem")
	os.WriteFile(caPath, caCert, 0o600)
	certFor := func(name string, server bool) string {
		c, k, err := tlsutil.GenerateCert(tlsutil.CertOptions{CACert: caCert, CAKey: caKey, Server: server})
		if err != nil {
			t.Fatal(err)
		}
		cp, kp := filepath.Join(dir, name+".pem"), filepath.Join(dir, name+"-key.pem")
		os.WriteFile(cp, c, 0o600)
		os.WriteFile(kp, k, 0o600)
		return tlsHCL(caPath, cp, kp)
	}
	c := testcluster.StartCluster(t, testcluster.ClusterOptions{Servers: 3, Clients: 1,
		Modify: func(i int, o *testcluster.Options) { o.HCL = certFor(fmt.Sprintf("agent-%d", i), i < 3) }})
	c.WaitVoters(t, c.Servers[0], 3)
	if err := c.Clients[0].Client.Agent().ServiceRegister(&consulapi.AgentServiceRegistration{Name: "secure"}); err != nil {
		t.Fatal(err)
	}
	retry.Run(t, func(r *retry.R) {
		if svcs := staleServices(t, c.Servers[2]); svcs["secure"] == nil {
			r.Fatal("service of the TLS client not replicated")
		}
	})

	// A client whose certificate comes from another CA reaches no server.
	otherCA, otherCert, otherKey := writeCerts(t, t.TempDir(), false)
	rogue := testcluster.StartAgent(t, testcluster.Options{Name: "rogue", Client: true,
		HCL: tlsHCL(otherCA, otherCert, otherKey), RetryJoin: []string{c.Servers[0].GossipAddr()}})
	// It fails at once, having tried each server once: no loop of TLS
	// handshakes for the servers to pay until the 7 s hold timeout.
	asked := time.Now()
	_, _, err = rogue.Client.Catalog().Services(nil)
	if err == nil {
		t.Fatal("a client with an untrusted certificate read the catalog")
	}
	if took := time.Since(asked); took > 5*time.Second || !strings.Contains(err.Error(), "TLS certificate refused") {
		t.Errorf("untrusted client's read took %s: %v; want a prompt TLS refusal", took, err)
	}
	t.Logf("untrusted client's read: %v", err)

	// A client certificate cannot pose as a server: a "server" holding one
	// is refused by the agents that dial it.
	imposterHCL := certFor("imposter", false)
	// It runs with the cluster servers' Raft timers (see StartCluster).
	testcluster.StartAgent(t, testcluster.Options{Name: "imposter", BootstrapExpect: 3, HCL: imposterHCL, RaftMultiplier: 3,
		RetryJoin: []string{c.Servers[0].GossipAddr()}})
	var imposterSeen time.Time
	retry.RunWith(&retry.Timer{Timeout: 15 * time.Second, Wait: 50 * time.Millisecond}, t, func(r *retry.R) {
		// Ask whoever leads now: the imposter's arrival may cost an election.
		leader := c.Leader()
		if leader == nil {
			r.Fatal("no leader")
		}
		var reply structs.RaftConfigurationResponse
		if err := leader.RPC(context.Background(), structs.MethodOperatorRaftConfig, &structs.DCSpecificRequest{}, &reply); err != nil {
			r.Fatal(err)
		}
		for _, srv := range reply.Servers {
			if srv.Voter && !isCluster(c, srv.Address) {
				t.Fatalf("the imposter became a voter: %+v", srv)
			}
			if !srv.Voter {
				if imposterSeen.IsZero() {
					imposterSeen = time.Now()
				}
			}
		}
		// Several promotion rounds (stabilisation is 1s under -dev).
		if imposterSeen.IsZero() || time.Since(imposterSeen) < 3*time.Second {
			r.Fatal("watching the imposter")
		}
	})
}

// isCluster reports whether addr is the server address of one of c's servers.
func isCluster(c *testcluster.Cluster, addr string) bool {
	for _, s := range c.Servers {
		if s.ServerAddr() == addr {
			return true
		}
	}
	return false
}
