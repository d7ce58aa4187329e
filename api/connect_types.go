package api

import (
	"fmt"
	"time"
)

// CA providers. "consul" names the built-in provider too, so that
// configurations written for Consul's built-in CA are accepted.
const (
	CAProviderBuiltin = "trellis"
	CAProviderConsul  = "consul"
)

// Keys of CAConfig.Config that the built-in provider takes.
const (
	// CAConfigLeafCertTTL is how long leaves are valid: a duration string
	// ("72h") or a number of seconds.
	CAConfigLeafCertTTL = "LeafCertTTL"
	// CAConfigPrivateKeyType is the key type of roots and leaves: "ec".
	CAConfigPrivateKeyType = "PrivateKeyType"
	// CAConfigPrivateKeyBits is the key size: 256.
	CAConfigPrivateKeyBits = "PrivateKeyBits"
	// CAConfigPrivateKey is the PEM private key of an operator-given root
	// (with RootCert); it is never shown back.
	CAConfigPrivateKey = "PrivateKey"
	// CAConfigRootCert is the PEM certificate of an operator-given root
	// (with PrivateKey).
	CAConfigRootCert = "RootCert"
)

// CARootList is the body of GET /v1/connect/ca/roots and
// /v1/agent/connect/ca/roots: the roots every service should trust.
type CARootList struct {
	// ActiveRootID is the ID of the root that signs new leaves.
	ActiveRootID string
	// TrustDomain is the cluster's SPIFFE trust domain ("<id>.trellis").
	TrustDomain string
	Roots       []*CARoot
}

// Active returns the active root, or nil.
func (l *CARootList) Active() *CARoot {
	if l == nil {
		return nil
	}
	for _, r := range l.Roots {
		if r.Active {
			return r
		}
	}
	return nil
}

// CARoot is one trusted root of the mesh's CA. Its signing key never leaves
// the servers.
type CARoot struct {
	// ID is the SHA-256 fingerprint of the root certificate, in colon hex.
	ID   string
	Name string
	// SerialNumber is the low 64 bits of the certificate's serial.
	SerialNumber uint64
	// SigningKeyID is the root's subject key ID, in colon hex.
	SigningKeyID string
	NotBefore    time.Time
	NotAfter     time.Time
	// RootCertPEM is the root certificate (PEM).
	RootCertPEM string `json:"RootCert"`
	// IntermediateCerts follow every leaf this root signs: after a
	// rotation, this root cross-signed by the previous one.
	IntermediateCerts []string
	// Active marks the root that signs new leaves; exactly one is.
	Active         bool
	PrivateKeyType string
	PrivateKeyBits int
	CreateIndex    uint64
	ModifyIndex    uint64
}

// CAConfig is the configuration of the mesh's CA (GET and PUT
// /v1/connect/ca/configuration). Config holds the provider's settings by the
// CAConfig* key names; on a PUT, keys left out keep their current values,
// and any other key is refused.
type CAConfig struct {
	// Provider is CAProviderBuiltin (CAProviderConsul is accepted as its
	// other name).
	Provider string
	// ClusterID names the trust domain; it is made once and never changes.
	ClusterID string `json:",omitempty"`
	// Config is the provider's configuration. As read, LeafCertTTL is a
	// duration string and PrivateKeyBits a JSON number (a float64 here).
	Config      map[string]any
	CreateIndex uint64
	ModifyIndex uint64
}

// LeafCert is a service's leaf certificate with its private key, as the
// agent that asked for it holds it (GET /v1/agent/connect/ca/leaf/:service).
type LeafCert struct {
	// SerialNumber is the certificate's serial in colon hex.
	SerialNumber string
	// CertPEM is the leaf followed by the intermediates of its root.
	CertPEM string
	// PrivateKeyPEM is the leaf's key; it never left the agent.
	PrivateKeyPEM string
	Service       string
	// ServiceURI is the leaf's SPIFFE ID.
	ServiceURI  string
	ValidAfter  time.Time
	ValidBefore time.Time
	CreateIndex uint64
	ModifyIndex uint64
}

// AgentAuthorizeParams is the body of POST /v1/agent/connect/authorize:
// may the holder of a leaf with ClientCertURI connect to Target?
type AgentAuthorizeParams struct {
	// Target is the destination service's name.
	Target string
	// ClientCertURI is the SPIFFE ID of the client's certificate.
	ClientCertURI string
	// ClientCertSerial is the client certificate's serial (colon hex).
	ClientCertSerial string
}

// AgentAuthorize is the answer of POST /v1/agent/connect/authorize.
type AgentAuthorize struct {
	Authorized bool
	// Reason says what decided: the matching intention or the default.
	Reason string
}

// Intention actions.
const (
	IntentionActionAllow = "allow"
	IntentionActionDeny  = "deny"
)

// IntentionDefaultNamespace is the only namespace.
const IntentionDefaultNamespace = "default"

// IntentionSourceConsul is the only source type: a service of the mesh.
const IntentionSourceConsul = "consul"

// IntentionWildcard, as a source or destination name, matches any service.
const IntentionWildcard = "*"

// Intention says whether a source service may connect to a destination
// service. Names are service names or IntentionWildcard.
type Intention struct {
	// ID is assigned when the intention is created.
	ID          string `json:",omitempty"`
	Description string `json:",omitempty"`
	// SourceNS and DestinationNS are "default" (or empty, meaning it).
	SourceNS, SourceName           string
	DestinationNS, DestinationName string
	// SourceType is "consul" (or empty, meaning it).
	SourceType string
	// Action is IntentionActionAllow or IntentionActionDeny.
	Action string `json:",omitempty"`
	// Permissions, set instead of Action, decide per HTTP request (from a
	// service-intentions config entry, or written here).
	Permissions []*IntentionPermission `json:",omitempty"`
	Meta        map[string]string      `json:",omitempty"`
	// Precedence is computed from the names: the higher applies first.
	Precedence           int
	CreatedAt, UpdatedAt time.Time
	CreateIndex          uint64
	ModifyIndex          uint64
}

// String returns "source => destination (action)", the action as
// ActionSummary gives it.
func (i *Intention) String() string {
	return i.SourceName + " => " + i.DestinationName + " (" + i.ActionSummary() + ")"
}

// ActionSummary returns the intention's Action or, for an intention of
// HTTP permissions (which has no Action), "N HTTP permission(s)".
func (i *Intention) ActionSummary() string {
	switch n := len(i.Permissions); {
	case i.Action != "" || n == 0:
		return i.Action
	case n == 1:
		return "1 HTTP permission"
	default:
		return fmt.Sprintf("%d HTTP permissions", n)
	}
}

// Intention match kinds.
const (
	IntentionMatchSource      = "source"
	IntentionMatchDestination = "destination"
)

// IntentionMatch asks which intentions apply to each of Names, by source or
// by destination.
type IntentionMatch struct {
	// By is IntentionMatchSource or IntentionMatchDestination.
	By    string
	Names []string
}

// IntentionCheck asks whether Source may connect to Destination.
type IntentionCheck struct {
	Source, Destination string
}
