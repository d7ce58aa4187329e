package httpapi

import (
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/trellismesh/trellis/api"
	"github.com/trellismesh/trellis/connect"
	"github.com/trellismesh/trellis/raftstore/structs"
)

// The certificate authority: /v1/connect/ca/... (cluster state, through
// RPC) and /v1/agent/connect/... (what this agent holds and decides).

func toAPICARoots(in *structs.IndexedCARoots) *api.CARootList {
	out := &api.CARootList{ActiveRootID: in.ActiveRootID, TrustDomain: in.TrustDomain, Roots: make([]*api.CARoot, 0, len(in.Roots))}
	for _, r := range in.Roots {
		out.Roots = append(out.Roots, &api.CARoot{
			ID: r.ID, Name: r.Name, SerialNumber: r.SerialNumber, SigningKeyID: r.SigningKeyID,
			NotBefore: r.NotBefore, NotAfter: r.NotAfter, RootCertPEM: r.RootCert,
			IntermediateCerts: nonNilSlice(slices.Clone(r.IntermediateCerts)), Active: r.Active,
			PrivateKeyType: r.PrivateKeyType, PrivateKeyBits: r.PrivateKeyBits,
			CreateIndex: r.CreateIndex, ModifyIndex: r.ModifyIndex,
		})
	}
	return out
}

// rootsAnswer writes a roots reply: JSON, or with ?pem=true the root
// certificates and their intermediates as one PEM bundle.
func rootsAnswer(w http.ResponseWriter, r *http.Request, reply *structs.IndexedCARoots) (any, error) {
	setMeta(w, &reply.QueryMeta)
	if !boolParam(r, "pem") {
		return toAPICARoots(reply), nil
	}
	var b strings.Builder
	for _, root := range reply.Roots {
		for _, c := range append([]string{root.RootCert}, root.IntermediateCerts...) {
			b.WriteString(strings.TrimSpace(c))
			b.WriteString("\n")
		}
	}
	w.Header().Set("Content-Type", "application/pem-certificate-chain")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write([]byte(b.String()))
	return noBody, nil
}

func (s *Server) connectCARoots(w http.ResponseWriter, r *http.Request) (any, error) {
	var req structs.DCSpecificRequest
	if err := parseQuery(r, &req.Datacenter, &req.QueryOptions); err != nil {
		return nil, err
	}
	var reply structs.IndexedCARoots
	if err := s.agent.RPC(r.Context(), structs.MethodCARoots, &req, &reply); err != nil {
		return nil, err
	}
	return rootsAnswer(w, r, &reply)
}

// issuedLeafOut is one element of GET /v1/connect/ca/leaves (a Trellis
// addition): a leaf certificate a node holds, as the leader recorded it
// when it signed it. The private key never leaves its agent.
type issuedLeafOut struct {
	Node         string
	Service      string
	SerialNumber string
	RootID       string
	ValidBefore  time.Time
	CreateIndex  uint64
	ModifyIndex  uint64
}

// connectCALeaves lists the leaves of every node, soonest to expire first
// (blocking; ?filter selects).
func (s *Server) connectCALeaves(w http.ResponseWriter, r *http.Request) (any, error) {
	var req structs.DCSpecificRequest
	if err := parseQuery(r, &req.Datacenter, &req.QueryOptions); err != nil {
		return nil, err
	}
	var reply structs.IndexedIssuedLeaves
	if err := s.agent.RPC(r.Context(), structs.MethodCALeaves, &req, &reply); err != nil {
		return nil, err
	}
	setMeta(w, &reply.QueryMeta)
	out := make([]issuedLeafOut, 0, len(reply.Leaves))
	for _, l := range reply.Leaves {
		out = append(out, issuedLeafOut{Node: l.Node, Service: l.Service, SerialNumber: l.SerialNumber, RootID: l.RootID,
			ValidBefore: l.NotAfter, CreateIndex: l.CreateIndex, ModifyIndex: l.ModifyIndex})
	}
	return applyFilter(r, out)
}

func (s *Server) agentConnectCARoots(w http.ResponseWriter, r *http.Request) (any, error) {
	var dc string
	var opts structs.QueryOptions
	if err := parseQuery(r, &dc, &opts); err != nil {
		return nil, err
	}
	reply, err := s.agent.ConnectRoots(r.Context(), opts.MinQueryIndex, opts.MaxQueryTime)
	if err != nil {
		return nil, err
	}
	return rootsAnswer(w, r, reply)
}

// caConfigAnswer is the body of GET /v1/connect/ca/configuration.
type caConfigAnswer struct {
	Provider    string
	ClusterID   string
	Config      caProviderConfig
	CreateIndex uint64
	ModifyIndex uint64
}

// caProviderConfig is the shown part of structs.CAConfig: never the key.
type caProviderConfig struct {
	LeafCertTTL    string
	PrivateKeyType string
	PrivateKeyBits int
	RootCert       string `json:",omitempty"`
}

func (s *Server) getCAConfig(r *http.Request, dc string) (*structs.CAConfiguration, error) {
	var reply structs.CAConfiguration
	if err := s.agent.RPC(r.Context(), structs.MethodCAConfigurationGet, &structs.DCSpecificRequest{Datacenter: dc}, &reply); err != nil {
		return nil, err
	}
	return &reply, nil
}

func (s *Server) connectCAConfiguration(w http.ResponseWriter, r *http.Request) (any, error) {
	if r.Method == http.MethodPut {
		return s.connectCAConfigurationSet(w, r)
	}
	var dc string
	var opts structs.QueryOptions
	if err := parseQuery(r, &dc, &opts); err != nil {
		return nil, err
	}
	conf, err := s.getCAConfig(r, dc)
	if err != nil {
		return nil, err
	}
	setMeta(w, &structs.QueryMeta{Index: conf.ModifyIndex, KnownLeader: true})
	return &caConfigAnswer{
		Provider:  conf.Provider,
		ClusterID: conf.ClusterID,
		Config: caProviderConfig{
			LeafCertTTL:    conf.Config.LeafCertTTL.String(),
			PrivateKeyType: conf.Config.PrivateKeyType,
			PrivateKeyBits: conf.Config.PrivateKeyBits,
			RootCert:       conf.Config.RootCert,
		},
		CreateIndex: conf.CreateIndex,
		ModifyIndex: conf.ModifyIndex,
	}, nil
}

// caConfigBody is the body of PUT /v1/connect/ca/configuration, in the
// shape Consul's clients send.
type caConfigBody struct {
	Provider  string
	ClusterID string
	Config    map[string]json.RawMessage
	// State is read-only in Consul; a client sending one is refused.
	State map[string]string
	// ForceWithoutCrossSigning is accepted and has no effect: the built-in
	// CA always cross-signs.
	ForceWithoutCrossSigning bool
	// CreateIndex and ModifyIndex are sent back by clients and ignored.
	CreateIndex, ModifyIndex uint64
}

// caConfigKeys are the keys of the built-in provider's configuration,
// by their normalized spelling (see normalizeKey).
var caConfigKeys = map[string]string{
	"leafcertttl":    api.CAConfigLeafCertTTL,
	"privatekeytype": api.CAConfigPrivateKeyType,
	"privatekeybits": api.CAConfigPrivateKeyBits,
	"privatekey":     api.CAConfigPrivateKey,
	"rootcert":       api.CAConfigRootCert,
}

// consulOnlyCAKeys are keys of Consul's providers that Trellis does not
// support; they are refused by name rather than as unknown.
var consulOnlyCAKeys = map[string]string{
	"rotationperiod":      "RotationPeriod",
	"intermediatecertttl": "IntermediateCertTTL",
	"rootcertttl":         "RootCertTTL",
	"csrmaxpersecond":     "CSRMaxPerSecond",
	"csrmaxconcurrent":    "CSRMaxConcurrent",
	"skipvalidate":        "SkipValidate",
	"disablecrosssigning": "DisableCrossSigning",
	"intermediatepkipath": "IntermediatePKIPath",
	"rootpkipath":         "RootPKIPath",
	"address":             "Address",
	"token":               "Token",
	"existingarn":         "ExistingARN",
	"deleteonexit":        "DeleteOnExit",
}

// normalizeKey folds case and drops underscores, so LeafCertTTL,
// leafcertttl and leaf_cert_ttl name the same key.
func normalizeKey(k string) string { return strings.ReplaceAll(strings.ToLower(k), "_", "") }

const caKeysList = "LeafCertTTL, PrivateKeyType, PrivateKeyBits, PrivateKey and RootCert"

// applyCAConfig overlays the keys of raw onto cfg. Keys are checked in
// sorted order, so the error for a body with several bad keys is stable.
func applyCAConfig(cfg *structs.CAConfig, raw map[string]json.RawMessage) error {
	keys := make([]string, 0, len(raw))
	for k := range raw {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	seen := map[string]string{}
	for _, k := range keys {
		norm := normalizeKey(k)
		name, ok := caConfigKeys[norm]
		if !ok {
			if consul, isConsul := consulOnlyCAKeys[norm]; isConsul {
				return structs.Invalid("Config."+k, "%s is not supported by the built-in CA of Trellis (it takes %s)", consul, caKeysList)
			}
			return structs.Invalid("Config."+k, "unknown key (the built-in CA takes %s)", caKeysList)
		}
		if prev, dup := seen[name]; dup {
			return structs.Invalid("Config."+k, "given twice (also as %s)", prev)
		}
		seen[name] = k
		field := "Config." + k
		v := raw[k]
		switch name {
		case api.CAConfigLeafCertTTL:
			d, err := parseTTL(v)
			if err != nil {
				return structs.Invalid(field, "%v", err)
			}
			cfg.LeafCertTTL = d
		case api.CAConfigPrivateKeyType:
			if err := decodeString(v, &cfg.PrivateKeyType); err != nil {
				return structs.Invalid(field, "%v", err)
			}
		case api.CAConfigPrivateKeyBits:
			n, err := parseInt(v)
			if err != nil {
				return structs.Invalid(field, "%v", err)
			}
			cfg.PrivateKeyBits = n
		case api.CAConfigPrivateKey:
			if err := decodeString(v, &cfg.PrivateKey); err != nil {
				return structs.Invalid(field, "%v", err)
			}
		case api.CAConfigRootCert:
			if err := decodeString(v, &cfg.RootCert); err != nil {
				return structs.Invalid(field, "%v", err)
			}
		}
	}
	return nil
}

func decodeString(v json.RawMessage, out *string) error {
	if err := json.Unmarshal(v, out); err != nil {
		return fmt.Errorf("want a string, not %s", short(v))
	}
	return nil
}

// parseTTL reads a duration string ("72h") or a number of seconds.
func parseTTL(v json.RawMessage) (time.Duration, error) {
	var s string
	if err := json.Unmarshal(v, &s); err == nil {
		d, err := time.ParseDuration(s)
		if err != nil {
			return 0, fmt.Errorf("%q is not a duration such as 72h", s)
		}
		if d <= 0 {
			return 0, fmt.Errorf("%q: want a positive duration", s)
		}
		return d, nil
	}
	var secs float64
	if err := json.Unmarshal(v, &secs); err != nil {
		return 0, fmt.Errorf("want a duration string such as \"72h\" or a number of seconds, not %s", short(v))
	}
	if secs <= 0 || secs > float64(math.MaxInt64/int64(time.Second)) {
		return 0, fmt.Errorf("%s seconds: want a positive number of seconds", short(v))
	}
	return time.Duration(secs * float64(time.Second)), nil
}

// parseInt reads a whole JSON number (or a string holding one, as Consul's
// weakly typed decoding allows).
func parseInt(v json.RawMessage) (int, error) {
	var s string
	if err := json.Unmarshal(v, &s); err == nil {
		v = json.RawMessage(s)
	}
	var f float64
	if err := json.Unmarshal(v, &f); err != nil || f != math.Trunc(f) || math.Abs(f) > math.MaxInt32 {
		return 0, fmt.Errorf("want a whole number, not %s", short(v))
	}
	return int(f), nil
}

// short quotes a raw value for an error message, cut to a readable length.
func short(v json.RawMessage) string {
	s := string(v)
	if len(s) > 40 {
		s = s[:40] + "…"
	}
	return s
}

func (s *Server) connectCAConfigurationSet(w http.ResponseWriter, r *http.Request) (any, error) {
	var body caConfigBody
	if err := decodeBody(r, &body, false); err != nil {
		return nil, err
	}
	if len(body.State) > 0 {
		return nil, structs.Invalid("State", "is read-only and must not be set")
	}
	switch strings.ToLower(body.Provider) {
	case "", structs.CAProviderBuiltin, structs.CAProviderConsul:
	default:
		return nil, structs.Invalid("Provider", "%q is not supported: the only provider is the built-in CA (%q, or %q as Consul names it)",
			body.Provider, structs.CAProviderBuiltin, structs.CAProviderConsul)
	}
	dc := r.URL.Query().Get("dc")
	cur, err := s.getCAConfig(r, dc)
	if err != nil {
		return nil, err
	}
	if body.ClusterID != "" && body.ClusterID != cur.ClusterID {
		return nil, structs.Invalid("ClusterID", "%q differs from the cluster's %q, which never changes", body.ClusterID, cur.ClusterID)
	}
	next := *cur
	next.Provider = structs.CAProviderBuiltin
	if err := applyCAConfig(&next.Config, body.Config); err != nil {
		return nil, err
	}
	req := &structs.CARequest{Datacenter: dc, Config: &next}
	var reply structs.WriteReply
	if err := s.agent.RPC(r.Context(), structs.MethodCAConfigurationSet, req, &reply); err != nil {
		return nil, err
	}
	return true, nil
}

func (s *Server) connectCARotate(w http.ResponseWriter, r *http.Request) (any, error) {
	dc := r.URL.Query().Get("dc")
	// No Config: the servers keep the stored one, so a rotation cannot undo
	// a configuration change made meanwhile.
	var wr structs.WriteReply
	if err := s.agent.RPC(r.Context(), structs.MethodCAConfigurationSet, &structs.CARequest{Datacenter: dc, Rotate: true}, &wr); err != nil {
		return nil, err
	}
	// The leader has applied the write: a read (served by the leader)
	// sees the new root.
	var roots structs.IndexedCARoots
	if err := s.agent.RPC(r.Context(), structs.MethodCARoots, &structs.DCSpecificRequest{Datacenter: dc}, &roots); err != nil {
		return nil, err
	}
	return toAPICARoots(&roots), nil
}

// validateServiceParam checks a service name given in a path or parameter:
// a name, not a wildcard.
func validateServiceParam(param, name string) error {
	if name == connect.Wildcard {
		return badRequest("invalid %s %q: a service name, not a wildcard, is expected", param, name)
	}
	return fieldToBadRequest(connect.ValidateServiceName(param, name))
}

func (s *Server) agentConnectCALeaf(w http.ResponseWriter, r *http.Request) (any, error) {
	service := r.PathValue("service")
	if err := validateServiceParam("service", service); err != nil {
		return nil, err
	}
	var dc string
	var opts structs.QueryOptions
	if err := parseQuery(r, &dc, &opts); err != nil {
		return nil, err
	}
	leaf, err := s.agent.ConnectLeaf(r.Context(), service, opts.MinQueryIndex, opts.MaxQueryTime)
	if err != nil {
		return nil, err
	}
	setMeta(w, &structs.QueryMeta{Index: leaf.ModifyIndex, KnownLeader: true})
	return &api.LeafCert{
		SerialNumber: leaf.SerialNumber, CertPEM: leaf.CertPEM, PrivateKeyPEM: leaf.PrivateKeyPEM,
		Service: leaf.Service, ServiceURI: leaf.ServiceURI, ValidAfter: leaf.ValidAfter, ValidBefore: leaf.ValidBefore,
		CreateIndex: leaf.CreateIndex, ModifyIndex: leaf.ModifyIndex,
	}, nil
}

func (s *Server) agentConnectAuthorize(w http.ResponseWriter, r *http.Request) (any, error) {
	var body api.AgentAuthorizeParams
	if err := decodeBody(r, &body, false); err != nil {
		return nil, err
	}
	if body.Target == "" {
		return nil, structs.Invalid("Target", "required: the name of the service connected to")
	}
	if err := connect.ValidateServiceName("Target", body.Target); err != nil || body.Target == connect.Wildcard {
		return nil, structs.Invalid("Target", "%q is not a service name", body.Target)
	}
	if body.ClientCertURI == "" {
		return nil, structs.Invalid("ClientCertURI", "required: the SPIFFE ID of the client's certificate")
	}
	dec, err := s.agent.ConnectAuthorize(r.Context(), body.Target, body.ClientCertURI)
	if err != nil {
		return nil, err
	}
	return &api.AgentAuthorize{Authorized: dec.Allowed, Reason: dec.Reason}, nil
}
