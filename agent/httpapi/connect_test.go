package httpapi

//lint:file-ignore SA1019 Consul's by-ID intention calls are deprecated there, and still part of the API its clients use: they are tested on purpose.

import (
	"crypto/ecdsa"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	consulapi "github.com/hashicorp/consul/api"

	"github.com/trellismesh/trellis/api"
	"github.com/trellismesh/trellis/connect"
	"github.com/trellismesh/trellis/internal/retry"
)

// waitCA waits until the leader has made the CA's first root.
func waitCA(t *testing.T, cc *consulapi.Client) *consulapi.CARootList {
	t.Helper()
	var roots *consulapi.CARootList
	retry.Run(t, func(r *retry.R) {
		var err error
		roots, _, err = cc.Connect().CARoots(nil)
		if err != nil || roots.ActiveRootID == "" {
			r.Fatalf("roots = %+v, %v", roots, err)
		}
	})
	return roots
}

func TestConnect_CARootsAndConfig(t *testing.T) {
	t.Parallel()
	_, hs, cc, ours := startAPI(t)
	base := "http://" + hs.Addrs()[0].String()
	roots := waitCA(t, cc)
	if !strings.HasSuffix(roots.TrustDomain, ".trellis") || len(roots.Roots) != 1 {
		t.Fatalf("roots = %+v", roots)
	}
	root := roots.Roots[0]
	if !root.Active || root.ID != roots.ActiveRootID || root.NotAfter == nil || root.NotAfter.Before(time.Now()) {
		t.Errorf("root = %+v", root)
	}
	if c, err := connect.ParseCert(root.RootCertPEM); err != nil || !c.IsCA {
		t.Errorf("root certificate: %v", err)
	}
	// The raw answer has every field, and never a signing key.
	resp, body := do(t, "GET", base+"/v1/connect/ca/roots", nil)
	if resp.StatusCode != 200 || resp.Header.Get("X-Consul-Index") == "" || strings.Contains(body, "SigningKey\"") || strings.Contains(body, "PRIVATE KEY") {
		t.Fatalf("raw roots: %d %s", resp.StatusCode, body)
	}
	for _, f := range []string{"ActiveRootID", "TrustDomain", "SerialNumber", "SigningKeyID", "NotBefore", "NotAfter", "RootCert", "IntermediateCerts", "PrivateKeyType", "PrivateKeyBits", "CreateIndex", "ModifyIndex"} {
		if !strings.Contains(body, `"`+f+`"`) {
			t.Errorf("roots answer lacks %s: %s", f, body)
		}
	}
	resp, body = do(t, "GET", base+"/v1/connect/ca/roots?pem=true", nil)
	if resp.StatusCode != 200 || !strings.HasPrefix(body, "-----BEGIN CERTIFICATE-----") || !strings.Contains(resp.Header.Get("Content-Type"), "pem") {
		t.Errorf("pem roots: %d %q %s", resp.StatusCode, resp.Header.Get("Content-Type"), body)
	}
	// Our client reads the same.
	if mine, _, err := ours.Connect().CARoots(nil); err != nil || mine.ActiveRootID != roots.ActiveRootID || mine.Active().RootCertPEM != root.RootCertPEM {
		t.Errorf("our client's roots = %+v, %v", mine, err)
	}

	conf, _, err := cc.Connect().CAGetConfig(nil)
	if err != nil {
		t.Fatal(err)
	}
	if conf.Provider != "trellis" || conf.Config["LeafCertTTL"] != "72h0m0s" || conf.Config["PrivateKeyType"] != "ec" || conf.Config["PrivateKeyBits"] != float64(256) || conf.ModifyIndex == 0 {
		t.Errorf("config = %+v", conf)
	}
	if _, ok := conf.Config["PrivateKey"]; ok {
		t.Errorf("config shows a PrivateKey: %+v", conf.Config)
	}

	// Set with Consul's provider name, a duration string, then seconds.
	if _, err := cc.Connect().CASetConfig(&consulapi.CAConfig{Provider: "consul", Config: map[string]any{"LeafCertTTL": "24h"}}, nil); err != nil {
		t.Fatal(err)
	}
	if c, _, _ := cc.Connect().CAGetConfig(nil); c.Config["LeafCertTTL"] != "24h0m0s" || c.Config["PrivateKeyType"] != "ec" {
		t.Errorf("after set 24h: %+v", c.Config)
	}
	if _, err := ours.Connect().CASetConfig(&api.CAConfig{Provider: "trellis", Config: map[string]any{"LeafCertTTL": 7200}}, nil); err != nil {
		t.Fatal(err)
	}
	before, _, _ := ours.Connect().CAGetConfig(nil)
	if before.Config["LeafCertTTL"] != "2h0m0s" || before.ClusterID == "" {
		t.Errorf("after set 7200 seconds: %+v", before)
	}

	// Refused bodies name what is wrong and change nothing.
	bad := []struct {
		conf *consulapi.CAConfig
		want string
	}{
		{&consulapi.CAConfig{Provider: "consul", Config: map[string]any{"LeafCertTTL": "72h", "RotationPeriod": "2160h"}}, "RotationPeriod is not supported"},
		{&consulapi.CAConfig{Provider: "consul", Config: map[string]any{"IntermediateCertTTL": "8760h"}}, "IntermediateCertTTL is not supported"},
		{&consulapi.CAConfig{Provider: "consul", Config: map[string]any{"Frobnicate": 1}}, "Config.Frobnicate: unknown key"},
		{&consulapi.CAConfig{Provider: "vault", Config: map[string]any{}}, "invalid Provider"},
		{&consulapi.CAConfig{Provider: "consul", Config: map[string]any{"LeafCertTTL": "soon"}}, "invalid Config.LeafCertTTL"},
		{&consulapi.CAConfig{Provider: "consul", Config: map[string]any{"LeafCertTTL": "30s"}}, "invalid Config.LeafCertTTL"},
		{&consulapi.CAConfig{Provider: "consul", Config: map[string]any{"PrivateKeyType": "rsa"}}, "invalid Config.PrivateKeyType"},
		{&consulapi.CAConfig{Provider: "consul", Config: map[string]any{"PrivateKeyBits": 2048}}, "invalid Config.PrivateKeyBits"},
		{&consulapi.CAConfig{Provider: "consul", Config: map[string]any{"RootCert": root.RootCertPEM}}, "PrivateKey"},
		{&consulapi.CAConfig{Provider: "consul", State: map[string]string{"a": "b"}}, "invalid State"},
	}
	for _, tc := range bad {
		_, err := cc.Connect().CASetConfig(tc.conf, nil)
		if err == nil || !strings.Contains(err.Error(), "400") || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("set %+v = %v, want a 400 with %q", tc.conf, err, tc.want)
		}
	}
	after, _, _ := ours.Connect().CAGetConfig(nil)
	if after.ModifyIndex != before.ModifyIndex || after.Config["LeafCertTTL"] != "2h0m0s" {
		t.Errorf("refused sets changed the config: %+v, was %+v", after, before)
	}
	if r, _, _ := cc.Connect().CARoots(nil); r.ActiveRootID != roots.ActiveRootID || len(r.Roots) != 1 {
		t.Errorf("config changes moved the roots: %+v", r)
	}
}

func TestConnect_CARotate(t *testing.T) {
	t.Parallel()
	_, _, cc, ours := startAPI(t)
	old := waitCA(t, cc)
	_, meta, err := cc.Connect().CARoots(nil)
	if err != nil {
		t.Fatal(err)
	}
	agentRoots, agentMeta, err := cc.Agent().ConnectCARoots(nil)
	if err != nil || agentRoots.ActiveRootID != old.ActiveRootID {
		t.Fatalf("agent roots = %+v, %v", agentRoots, err)
	}

	type result struct {
		roots *consulapi.CARootList
		meta  *consulapi.QueryMeta
		err   error
	}
	watch := func(f func(q *consulapi.QueryOptions) (*consulapi.CARootList, *consulapi.QueryMeta, error), index uint64) chan result {
		ch := make(chan result, 1)
		go func() {
			r, m, err := f(&consulapi.QueryOptions{WaitIndex: index, WaitTime: 30 * time.Second})
			ch <- result{r, m, err}
		}()
		return ch
	}
	cluster := watch(cc.Connect().CARoots, meta.LastIndex)
	agent := watch(cc.Agent().ConnectCARoots, agentMeta.LastIndex)
	select {
	case r := <-cluster:
		t.Fatalf("roots watch returned before any change: %+v", r.meta)
	case <-time.After(100 * time.Millisecond):
	}

	rotated, _, err := ours.Connect().CARotate(nil)
	if err != nil {
		t.Fatal(err)
	}
	if rotated.ActiveRootID == "" || rotated.ActiveRootID == old.ActiveRootID || len(rotated.Roots) != 2 {
		t.Fatalf("rotate answered %+v", rotated)
	}
	for _, ch := range []chan result{cluster, agent} {
		select {
		case r := <-ch:
			if r.err != nil || r.meta.LastIndex <= meta.LastIndex || r.roots.ActiveRootID != rotated.ActiveRootID {
				t.Errorf("watch answered %+v, %+v, %v", r.roots, r.meta, r.err)
			}
		case <-time.After(20 * time.Second):
			t.Fatal("a roots watch did not return after the rotation")
		}
	}
	now, _, _ := cc.Connect().CARoots(nil)
	var sawOld bool
	for _, r := range now.Roots {
		switch r.ID {
		case old.ActiveRootID:
			sawOld = !r.Active
		case now.ActiveRootID:
			if !r.Active {
				t.Errorf("new root not active: %+v", r)
			}
		}
	}
	if !sawOld {
		t.Errorf("old root not kept as inactive: %+v", now.Roots)
	}
	// The new root carries its cross-signed certificate.
	if a := rotated.Active(); len(a.IntermediateCerts) != 1 {
		t.Errorf("new root intermediates = %d", len(a.IntermediateCerts))
	}
}

func TestConnect_Leaf(t *testing.T) {
	t.Parallel()
	_, hs, cc, ours := startAPI(t)
	base := "http://" + hs.Addrs()[0].String()
	roots := waitCA(t, cc)

	leaf, meta, err := cc.Agent().ConnectCALeaf("web", nil)
	if err != nil {
		t.Fatal(err)
	}
	if leaf.SerialNumber == "" || leaf.Service != "web" || leaf.ModifyIndex == 0 || meta.LastIndex != leaf.ModifyIndex ||
		!leaf.ValidBefore.After(time.Now()) || !leaf.ValidAfter.Before(time.Now().Add(time.Minute)) {
		t.Fatalf("leaf = %+v, meta %+v", leaf, meta)
	}
	cert, err := connect.ParseCert(leaf.CertPEM)
	if err != nil {
		t.Fatal(err)
	}
	if len(cert.URIs) != 1 || cert.URIs[0].String() != leaf.ServiceURI || !strings.Contains(leaf.ServiceURI, roots.TrustDomain) || !strings.HasSuffix(leaf.ServiceURI, "/svc/web") {
		t.Errorf("leaf URI %v, ServiceURI %q", cert.URIs, leaf.ServiceURI)
	}
	key, err := connect.ParseSigner(leaf.PrivateKeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	if !key.Public().(*ecdsa.PublicKey).Equal(cert.PublicKey) {
		t.Error("the leaf's private key does not match its certificate")
	}
	_, body := do(t, "GET", base+"/v1/agent/connect/ca/leaf/web", nil)
	for _, f := range []string{"SerialNumber", "CertPEM", "PrivateKeyPEM", "Service", "ServiceURI", "ValidAfter", "ValidBefore", "CreateIndex", "ModifyIndex"} {
		if !strings.Contains(body, `"`+f+`"`) {
			t.Errorf("leaf answer lacks %s", f)
		}
	}

	// Blocking at the leaf's index: the same leaf at the end of the wait.
	start := time.Now()
	same, m2, err := cc.Agent().ConnectCALeaf("web", &consulapi.QueryOptions{WaitIndex: meta.LastIndex, WaitTime: 200 * time.Millisecond})
	if err != nil || same.SerialNumber != leaf.SerialNumber || m2.LastIndex != meta.LastIndex {
		t.Errorf("timed-out leaf = %+v, %+v, %v", same, m2, err)
	}
	if d := time.Since(start); d < 200*time.Millisecond {
		t.Errorf("leaf query returned after %s, before its wait", d)
	}
	// A rotation makes a newer leaf, which answers the blocked query.
	type result struct {
		leaf *api.LeafCert
		meta *api.QueryMeta
		err  error
	}
	done := make(chan result, 1)
	go func() {
		l, m, err := ours.Agent().ConnectCALeaf("web", &api.QueryOptions{WaitIndex: meta.LastIndex, WaitTime: 30 * time.Second})
		done <- result{l, m, err}
	}()
	select {
	case r := <-done:
		t.Fatalf("leaf watch returned before any change: %+v", r.meta)
	case <-time.After(100 * time.Millisecond):
	}
	rotated, _, err := ours.Connect().CARotate(nil)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-done:
		if r.err != nil || r.leaf.SerialNumber == leaf.SerialNumber || r.meta.LastIndex <= meta.LastIndex {
			t.Fatalf("leaf after rotation = %+v, %+v, %v", r.leaf, r.meta, r.err)
		}
		// The new leaf chains to the new root and carries the cross-signed intermediate.
		if certs, err := connect.ParseCerts(r.leaf.CertPEM); err != nil || len(certs) != 2 {
			t.Errorf("new leaf chain: %d certs, %v", len(certs), err)
		}
		if rotated.ActiveRootID == roots.ActiveRootID {
			t.Error("rotation kept the root")
		}
	case <-time.After(20 * time.Second):
		t.Fatal("leaf watch did not return after the rotation")
	}

	for _, name := range []string{"*", "bad!name"} {
		resp, body := do(t, "GET", base+"/v1/agent/connect/ca/leaf/"+url.PathEscape(name), nil)
		if resp.StatusCode != 400 || !strings.Contains(body, "service") {
			t.Errorf("leaf of %q: %d %s", name, resp.StatusCode, body)
		}
	}
}

func TestConnect_Authorize(t *testing.T) {
	t.Parallel()
	a, hs, cc, ours := startAPI(t)
	base := "http://" + hs.Addrs()[0].String()
	waitCA(t, cc)
	leaf, _, err := cc.Agent().ConnectCALeaf("web", nil)
	if err != nil {
		t.Fatal(err)
	}
	auth := func(target string) *consulapi.AgentAuthorize {
		t.Helper()
		out, err := cc.Agent().ConnectAuthorize(&consulapi.AgentAuthorizeParams{Target: target, ClientCertURI: leaf.ServiceURI, ClientCertSerial: leaf.SerialNumber})
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	// No intention: the default (deny here) decides.
	if out := auth("db"); out.Authorized || !strings.Contains(out.Reason, "default") {
		t.Errorf("default deny: %+v", out)
	}
	a.defaultAllow.Store(true)
	if out := auth("db"); !out.Authorized {
		t.Errorf("default allow: %+v", out)
	}
	if _, err := cc.Connect().IntentionUpsert(&consulapi.Intention{SourceName: "web", DestinationName: "db", Action: consulapi.IntentionActionDeny}, nil); err != nil {
		t.Fatal(err)
	}
	if out := auth("db"); out.Authorized || !strings.Contains(out.Reason, "web => db (deny)") {
		t.Errorf("deny intention: %+v", out)
	}
	a.defaultAllow.Store(false)
	if _, err := cc.Connect().IntentionUpsert(&consulapi.Intention{SourceName: "*", DestinationName: "cache", Action: consulapi.IntentionActionAllow}, nil); err != nil {
		t.Fatal(err)
	}
	if out, err := ours.Agent().ConnectAuthorize(&api.AgentAuthorizeParams{Target: "cache", ClientCertURI: leaf.ServiceURI}); err != nil || !out.Authorized || !strings.Contains(out.Reason, "* => cache") {
		t.Errorf("wildcard allow: %+v, %v", out, err)
	}

	bad := []struct{ body, want string }{
		{`{}`, "Target"},
		{`{"Target": "db"}`, "ClientCertURI"},
		{`{"Target": "*", "ClientCertURI": "x"}`, "Target"},
		{`{"Target": "db", "ClientCertURI": "not a uri"}`, "ClientCertURI"},
		{`{"Target": "db", "ClientCertURI": "spiffe://other.trellis/ns/default/dc/dc1/svc/web"}`, "ClientCertURI"},
		{`{"Target": "db"`, "decode"},
	}
	for _, tc := range bad {
		resp, body := do(t, "POST", base+"/v1/agent/connect/authorize", strings.NewReader(tc.body))
		if resp.StatusCode != 400 || !strings.Contains(body, tc.want) {
			t.Errorf("authorize %s: %d %s, want 400 naming %s", tc.body, resp.StatusCode, body, tc.want)
		}
	}
	if resp, _ := do(t, "GET", base+"/v1/agent/connect/authorize", nil); resp.StatusCode != 405 {
		t.Errorf("GET authorize: %d", resp.StatusCode)
	}
}

func TestConnect_Intentions(t *testing.T) {
	t.Parallel()
	a, hs, cc, ours := startAPI(t)
	base := "http://" + hs.Addrs()[0].String()
	conn := cc.Connect()

	list, meta, err := conn.Intentions(nil)
	if err != nil || len(list) != 0 || meta.LastIndex == 0 {
		t.Fatalf("empty list = %v, %+v, %v", list, meta, err)
	}
	// A blocking list answers on the first write.
	type result struct {
		list []*consulapi.Intention
		meta *consulapi.QueryMeta
		err  error
	}
	done := make(chan result, 1)
	go func() {
		l, m, err := conn.Intentions(&consulapi.QueryOptions{WaitIndex: meta.LastIndex, WaitTime: 30 * time.Second})
		done <- result{l, m, err}
	}()

	id, _, err := conn.IntentionCreate(&consulapi.Intention{
		SourceName: "web", DestinationName: "db", Action: consulapi.IntentionActionAllow,
		Description: "web reads the db", Meta: map[string]string{"team": "core"},
	}, nil)
	if err != nil || id == "" {
		t.Fatalf("create = %q, %v", id, err)
	}
	select {
	case r := <-done:
		if r.err != nil || len(r.list) != 1 || r.meta.LastIndex <= meta.LastIndex {
			t.Errorf("blocking list = %+v, %+v, %v", r.list, r.meta, r.err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("blocking list did not return after a create")
	}
	// Creating the pair again is a conflict that says what to do.
	_, _, err = conn.IntentionCreate(&consulapi.Intention{SourceName: "web", DestinationName: "db", Action: consulapi.IntentionActionDeny}, nil)
	if err == nil || !strings.Contains(err.Error(), "409") || !strings.Contains(err.Error(), "exact") {
		t.Errorf("second create = %v, want a 409 suggesting PUT exact", err)
	}

	got, _, err := conn.IntentionGet(id, nil)
	if err != nil || got == nil || got.SourceName != "web" || got.DestinationName != "db" || got.Action != "allow" ||
		got.SourceNS != "default" || got.DestinationNS != "default" || got.SourceType != "consul" ||
		got.Precedence != 9 || got.Meta["team"] != "core" || got.Description != "web reads the db" || got.CreatedAt.IsZero() || got.CreateIndex == 0 {
		t.Fatalf("get by ID = %+v, %v", got, err)
	}
	exact, _, err := conn.IntentionGetExact("web", "db", nil)
	if err != nil || exact == nil || exact.ID != id {
		t.Errorf("get exact = %+v, %v", exact, err)
	}
	if none, _, err := conn.IntentionGetExact("web", "nope", nil); err != nil || none != nil {
		t.Errorf("get exact of no intention = %+v, %v", none, err)
	}
	if none, _, err := conn.IntentionGet("00000000-0000-4000-8000-000000000000", nil); err != nil || none != nil {
		t.Errorf("get unknown ID = %+v, %v", none, err)
	}

	// Upsert keeps the ID and changes the action.
	if _, err := conn.IntentionUpsert(&consulapi.Intention{SourceName: "web", DestinationName: "db", Action: consulapi.IntentionActionDeny}, nil); err != nil {
		t.Fatal(err)
	}
	if exact, _, _ := conn.IntentionGetExact("web", "db", nil); exact == nil || exact.ID != id || exact.Action != "deny" || !exact.UpdatedAt.After(got.UpdatedAt) && !exact.UpdatedAt.Equal(got.UpdatedAt) {
		t.Errorf("after upsert = %+v", exact)
	}
	// Update by ID (Consul's deprecated form).
	exact.Description = "no more"
	exact.Action = consulapi.IntentionActionAllow
	if _, err := conn.IntentionUpdate(exact, nil); err != nil {
		t.Fatal(err)
	}
	if g, _, _ := ours.Connect().IntentionGet(id, nil); g == nil || g.Description != "no more" || g.Action != "allow" {
		t.Errorf("after update = %+v", g)
	}

	// Precedence order: exact beats wildcard destination, then source.
	for _, p := range [][3]string{{"*", "*", "deny"}, {"web", "*", "allow"}, {"*", "db", "deny"}, {"api", "cache", "allow"}} {
		if _, err := ours.Connect().IntentionUpsert(&api.Intention{SourceName: p[0], DestinationName: p[1], Action: p[2]}, nil); err != nil {
			t.Fatal(err)
		}
	}
	list, _, err = conn.Intentions(nil)
	if err != nil {
		t.Fatal(err)
	}
	var order []string
	for _, i := range list {
		order = append(order, i.String())
	}
	want := "api => cache (allow),web => db (allow),* => db (deny),web => * (allow),* => * (deny)"
	if strings.Join(order, ",") != want {
		t.Errorf("list order:\n got %s\nwant %s", strings.Join(order, ","), want)
	}
	if f, _, err := conn.Intentions(&consulapi.QueryOptions{Filter: `Action == "deny"`}); err != nil || len(f) != 2 {
		t.Errorf("filtered list = %v, %v", f, err)
	}
	if _, _, err := conn.Intentions(&consulapi.QueryOptions{Filter: `Nope == 1`}); err == nil || !strings.Contains(err.Error(), "400") {
		t.Errorf("bad filter = %v", err)
	}

	// Match, by destination and by source, several names at once.
	m, _, err := conn.IntentionMatch(&consulapi.IntentionMatch{By: consulapi.IntentionMatchDestination, Names: []string{"db", "cache"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	names := func(l []*consulapi.Intention) string {
		var s []string
		for _, i := range l {
			s = append(s, i.String())
		}
		return strings.Join(s, ",")
	}
	if got := names(m["db"]); got != "web => db (allow),* => db (deny),web => * (allow),* => * (deny)" {
		t.Errorf("match destination db = %s", got)
	}
	if got := names(m["cache"]); got != "api => cache (allow),web => * (allow),* => * (deny)" {
		t.Errorf("match destination cache = %s", got)
	}
	ms, _, err := ours.Connect().IntentionMatch(&api.IntentionMatch{By: api.IntentionMatchSource, Names: []string{"api"}}, nil)
	if err != nil || len(ms["api"]) != 3 || ms["api"][0].DestinationName != "cache" {
		t.Errorf("match source api = %+v, %v", ms, err)
	}

	// Check: the first match decides, else the agent's default.
	checks := []struct {
		src, dst     string
		defaultAllow bool
		want         bool
	}{
		{"web", "db", false, true},
		{"api", "db", false, false},   // * => db deny
		{"web", "cache", false, true}, // web => * allow
		{"db", "cache", false, false}, // * => * deny
	}
	for _, c := range checks {
		a.defaultAllow.Store(c.defaultAllow)
		got, _, err := conn.IntentionCheck(&consulapi.IntentionCheck{Source: c.src, Destination: c.dst}, nil)
		if err != nil || got != c.want {
			t.Errorf("check %s => %s = %v, %v; want %v", c.src, c.dst, got, err, c.want)
		}
	}
	// With no matching intention the default decides.
	if _, err := conn.IntentionDeleteExact("*", "*", nil); err != nil {
		t.Fatal(err)
	}
	for _, allow := range []bool{false, true} {
		a.defaultAllow.Store(allow)
		if got, _, err := ours.Connect().IntentionCheck(&api.IntentionCheck{Source: "db", Destination: "cache"}, nil); err != nil || got != allow {
			t.Errorf("check with default %v = %v, %v", allow, got, err)
		}
	}

	// Delete by pair and by ID.
	if _, err := ours.Connect().IntentionDeleteExact("api", "cache", nil); err != nil {
		t.Fatal(err)
	}
	if g, _, _ := conn.IntentionGetExact("api", "cache", nil); g != nil {
		t.Errorf("deleted intention still there: %+v", g)
	}
	if _, err := conn.IntentionDelete(id, nil); err != nil {
		t.Fatal(err)
	}
	if g, _, _ := conn.IntentionGet(id, nil); g != nil {
		t.Errorf("deleted intention still there: %+v", g)
	}
	resp, body := do(t, "DELETE", base+"/v1/connect/intentions/exact?source=api&destination=cache", nil)
	if resp.StatusCode != 404 {
		t.Errorf("delete of no intention: %d %s", resp.StatusCode, body)
	}
	// The namespace prefix Consul's clients may send is understood.
	resp, body = do(t, "GET", base+"/v1/connect/intentions/exact?source=default/web&destination=*", nil)
	if resp.StatusCode != 200 || !strings.Contains(body, `"SourceName":"web"`) {
		t.Errorf("get with default/ prefix: %d %s", resp.StatusCode, body)
	}
}

func TestConnect_BadRequests(t *testing.T) {
	t.Parallel()
	_, hs, cc, _ := startAPI(t)
	base := "http://" + hs.Addrs()[0].String()
	waitCA(t, cc)
	if _, err := cc.Connect().IntentionUpsert(&consulapi.Intention{SourceName: "web", DestinationName: "db", Action: "allow"}, nil); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		method, path, body string
		code               int
		want               string
	}{
		{"GET", "/v1/connect/intentions/exact", "", 400, "invalid source"},
		{"GET", "/v1/connect/intentions/exact?source=web", "", 400, "invalid destination"},
		{"GET", "/v1/connect/intentions/exact?source=we%20b&destination=db", "", 400, "invalid source"},
		{"GET", "/v1/connect/intentions/exact?source=web&destination=db&destination=x", "", 400, "invalid destination"},
		{"GET", "/v1/connect/intentions/exact?source=team/web&destination=db", "", 400, "namespace"},
		{"DELETE", "/v1/connect/intentions/exact?source=&destination=db", "", 400, "invalid source"},
		{"GET", "/v1/connect/intentions/match?name=web", "", 400, "invalid by"},
		{"GET", "/v1/connect/intentions/match?by=sideways&name=web", "", 400, "invalid by"},
		{"GET", "/v1/connect/intentions/match?by=source", "", 400, "invalid name"},
		{"GET", "/v1/connect/intentions/match?by=source&name=", "", 400, "invalid name"},
		{"GET", "/v1/connect/intentions/match?by=source&name=a%2Bb", "", 400, "invalid name"},
		{"GET", "/v1/connect/intentions/check?source=web", "", 400, "invalid destination"},
		{"GET", "/v1/connect/intentions/check?destination=db", "", 400, "invalid source"},
		{"GET", "/v1/connect/intentions/check?source=web&destination=db&source-type=external", "", 400, "source-type"},
		{"POST", "/v1/connect/intentions", "", 400, "empty"},
		{"POST", "/v1/connect/intentions", "{", 400, "decode"},
		{"POST", "/v1/connect/intentions", `{"SourceName": "web", "DestinationName": "db", "Action": "maybe"}`, 400, "invalid Action"},
		{"POST", "/v1/connect/intentions", `{"SourceName": "", "DestinationName": "db", "Action": "allow"}`, 400, "invalid SourceName"},
		{"POST", "/v1/connect/intentions", `{"SourceName": "w b", "DestinationName": "db", "Action": "allow"}`, 400, "invalid SourceName"},
		{"POST", "/v1/connect/intentions", `{"SourceName": "web", "DestinationName": "db/x", "Action": "allow"}`, 400, "invalid DestinationName"},
		{"POST", "/v1/connect/intentions", `{"SourceNS": "team", "SourceName": "web", "DestinationName": "x", "Action": "allow"}`, 400, "invalid SourceNS"},
		{"POST", "/v1/connect/intentions", `{"SourceName": "web", "DestinationName": "x", "Permissions": [{}]}`, 400, "invalid Permissions"},
		{"POST", "/v1/connect/intentions", `{"ID": "abc", "SourceName": "web", "DestinationName": "x", "Action": "allow"}`, 400, "invalid ID"},
		{"POST", "/v1/connect/intentions", `{"SourceName": "web", "DestinationName": "x", "Action": "allow", "SourceType": "external"}`, 400, "invalid SourceType"},
		{"POST", "/v1/connect/intentions", `{"SourceName": "web", "DestinationName": "x", "Action": "allow"} {}`, 400, "unexpected data"},
		{"POST", "/v1/connect/intentions", `{"SourceName": "web", "DestinationName": "db", "Action": "allow"}`, 409, "already"},
		{"PUT", "/v1/connect/intentions/exact?source=web&destination=db", `{"SourceName": "api", "Action": "allow"}`, 400, "invalid SourceName"},
		{"PUT", "/v1/connect/intentions/exact?source=web&destination=db", `{"Action": "sometimes"}`, 400, "invalid Action"},
		{"PUT", "/v1/connect/intentions/exact?source=web&destination=db", ``, 400, "empty"},
		{"PUT", "/v1/connect/intentions/00000000-0000-4000-8000-000000000000", `{"SourceName": "a", "DestinationName": "b", "Action": "allow"}`, 404, "not found"},
		{"PUT", "/v1/connect/intentions/abc", `{"ID": "def", "SourceName": "a", "DestinationName": "b", "Action": "allow"}`, 400, "invalid ID"},
		{"GET", "/v1/connect/intentions/00000000-0000-4000-8000-000000000000", "", 404, "no intention"},
		{"PATCH", "/v1/connect/intentions/exact?source=web&destination=db", "", 405, "not allowed"},
		{"PUT", "/v1/connect/ca/configuration", `{"Config": {"LeafCertTTL": true}}`, 400, "invalid Config.LeafCertTTL"},
		{"PUT", "/v1/connect/ca/configuration", `{"Config": {"LeafCertTTL": -5}}`, 400, "invalid Config.LeafCertTTL"},
		{"PUT", "/v1/connect/ca/configuration", `{"Config": {"PrivateKeyBits": 25.5}}`, 400, "invalid Config.PrivateKeyBits"},
		{"PUT", "/v1/connect/ca/configuration", `{"Config": {"leaf_cert_ttl": "24h", "LeafCertTTL": "12h"}}`, 400, "given twice"},
		{"PUT", "/v1/connect/ca/configuration", `{"Config": {"SkipValidate": true}}`, 400, "SkipValidate is not supported"},
		{"PUT", "/v1/connect/ca/configuration", `{"ClusterID": "other"}`, 400, "invalid ClusterID"},
		{"PUT", "/v1/connect/ca/configuration", `[]`, 400, "decode"},
		{"PUT", "/v1/connect/ca/configuration", ``, 400, "empty"},
		{"GET", "/v1/connect/ca/rotate", "", 405, "not allowed"},
		{"GET", "/v1/connect/ca/roots?index=x", "", 400, "invalid index"},
		{"GET", "/v1/agent/connect/ca/roots?wait=forever", "", 400, "invalid wait"},
		{"GET", "/v1/agent/connect/ca/leaf/web?index=-1", "", 400, "invalid index"},
	}
	for _, tc := range cases {
		var body *strings.Reader
		if tc.body != "" {
			body = strings.NewReader(tc.body)
		} else {
			body = strings.NewReader("")
		}
		resp, got := do(t, tc.method, base+tc.path, body)
		if resp.StatusCode != tc.code || !strings.Contains(got, tc.want) {
			t.Errorf("%s %s %s: %d %s; want %d with %q", tc.method, tc.path, tc.body, resp.StatusCode, strings.TrimSpace(got), tc.code, tc.want)
		}
	}
	// A body over the cap is refused before it is read.
	big := strings.Repeat("a", MaxBodyBytes+10)
	if resp, _ := do(t, "POST", base+"/v1/connect/intentions", strings.NewReader(big)); resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Errorf("big body: %d", resp.StatusCode)
	}
	// Nothing of the refused writes was stored.
	list, _, err := cc.Connect().Intentions(nil)
	if err != nil || len(list) != 1 {
		b, _ := json.Marshal(list)
		t.Errorf("after refused writes: %s, %v", b, err)
	}
}

// TestConnect_OurClient covers the methods of our client the tests above
// reach only through Consul's.
func TestConnect_OurClient(t *testing.T) {
	t.Parallel()
	_, _, cc, ours := startAPI(t)
	waitCA(t, cc)
	conn := ours.Connect()
	id, _, err := conn.IntentionCreate(&api.Intention{SourceName: "web", DestinationName: "db", Action: api.IntentionActionAllow, Meta: map[string]string{"k": "v"}}, nil)
	if err != nil || id == "" {
		t.Fatalf("create = %q, %v", id, err)
	}
	var se *api.StatusError
	if _, _, err := conn.IntentionCreate(&api.Intention{SourceName: "web", DestinationName: "db", Action: api.IntentionActionDeny}, nil); !errorsAs(err, &se) || se.Code != http.StatusConflict {
		t.Errorf("second create = %v, want a 409 StatusError", err)
	}
	list, meta, err := conn.Intentions(nil)
	if err != nil || len(list) != 1 || list[0].ID != id || list[0].Meta["k"] != "v" || meta.LastIndex == 0 {
		t.Fatalf("list = %+v, %+v, %v", list, meta, err)
	}
	exact, _, err := conn.IntentionGetExact("web", "db", nil)
	if err != nil || exact == nil || exact.ID != id || exact.String() != "web => db (allow)" {
		t.Fatalf("get exact = %+v, %v", exact, err)
	}
	if none, _, err := conn.IntentionGetExact("db", "web", nil); err != nil || none != nil {
		t.Errorf("get exact of none = %+v, %v", none, err)
	}
	exact.Action = api.IntentionActionDeny
	if _, err := conn.IntentionUpdate(exact, nil); err != nil {
		t.Fatal(err)
	}
	if g, _, err := conn.IntentionGet(id, nil); err != nil || g == nil || g.Action != "deny" {
		t.Errorf("after update = %+v, %v", g, err)
	}
	if _, err := conn.IntentionUpdate(&api.Intention{SourceName: "a"}, nil); err == nil {
		t.Error("update without an ID succeeded")
	}
	if _, err := conn.IntentionDelete(id, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.IntentionDelete(id, nil); !errorsAs(err, &se) || se.Code != http.StatusNotFound {
		t.Errorf("second delete = %v, want a 404", err)
	}
	roots, meta, err := ours.Agent().ConnectCARoots(nil)
	if err != nil || roots.Active() == nil || meta.LastIndex == 0 {
		t.Errorf("agent roots = %+v, %+v, %v", roots, meta, err)
	}
	if _, _, err := ours.Agent().ConnectCALeaf("", nil); err == nil {
		t.Error("leaf of an empty name succeeded")
	}
}
