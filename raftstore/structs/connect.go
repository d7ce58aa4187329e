package structs

import (
	"crypto/rand"
	"fmt"
	"regexp"
	"slices"
	"time"

	"github.com/trellismesh/trellis/connect"
)

// RPC methods of the mesh: the certificate authority and intentions.
const (
	MethodCARoots            = "ConnectCA.Roots"            // DCSpecificRequest → IndexedCARoots (blocking)
	MethodCAConfigurationGet = "ConnectCA.ConfigurationGet" // DCSpecificRequest → CAConfiguration
	MethodCAConfigurationSet = "ConnectCA.ConfigurationSet" // CARequest → WriteReply
	MethodCASign             = "ConnectCA.Sign"             // CASignRequest → IssuedCert
	MethodCALeaves           = "ConnectCA.Leaves"           // DCSpecificRequest → IndexedIssuedLeaves (blocking)
	MethodIntentionApply     = "Intention.Apply"            // IntentionRequest → IntentionApplyReply
	MethodIntentionList      = "Intention.List"             // DCSpecificRequest → IndexedIntentions (blocking)
	MethodIntentionGet       = "Intention.Get"              // IntentionQueryRequest → IndexedIntentions
	MethodIntentionMatch     = "Intention.Match"            // IntentionMatchRequest → IndexedIntentionMatches (blocking)
)

// CA providers. "consul" is accepted as another name of the built-in one so
// that Consul's tools can set the configuration unchanged.
const (
	CAProviderBuiltin = "trellis"
	CAProviderConsul  = "consul"
)

// CARoot is one root of the built-in CA, as kept in Raft. SigningKey never
// leaves the servers: the RPC and HTTP answers clear it.
type CARoot struct {
	// ID is the root certificate's SHA-256 fingerprint (colon hex).
	ID   string
	Name string
	// SerialNumber is the low 64 bits of the root certificate's serial.
	SerialNumber uint64
	// SigningKeyID is the root's subject key ID (colon hex).
	SigningKeyID string
	NotBefore    time.Time
	NotAfter     time.Time
	// RootCert is the root certificate (PEM).
	RootCert string
	// IntermediateCerts are served after the leaf of every certificate this
	// root signs: after a rotation, this root cross-signed by the previous
	// one, so peers that trust only the previous root accept new leaves.
	IntermediateCerts []string `json:",omitempty"`
	// SigningKey is the private key (PEM); empty outside the servers.
	SigningKey string `json:",omitempty"`
	// Active marks the root that signs new leaves; exactly one is.
	Active bool
	// RotatedOutAt is when a newer root replaced this one (zero while active).
	RotatedOutAt   time.Time
	PrivateKeyType string
	PrivateKeyBits int
	RaftIndex
}

// Clone returns a deep copy of r.
func (r *CARoot) Clone() *CARoot {
	if r == nil {
		return nil
	}
	c := *r
	c.IntermediateCerts = slices.Clone(r.IntermediateCerts)
	return &c
}

// Public returns a copy without the signing key.
func (r *CARoot) Public() *CARoot {
	c := r.Clone()
	c.SigningKey = ""
	return c
}

// CARoots is a list of roots, active first.
type CARoots []*CARoot

// Active returns the active root, or nil.
func (rs CARoots) Active() *CARoot {
	for _, r := range rs {
		if r.Active {
			return r
		}
	}
	return nil
}

// CAConfig is the configuration of the built-in provider.
type CAConfig struct {
	// LeafCertTTL is how long leaves are valid (72h by default).
	LeafCertTTL time.Duration
	// PrivateKeyType and PrivateKeyBits name the key type: only "ec", 256.
	PrivateKeyType string
	PrivateKeyBits int
	// PrivateKey and RootCert (PEM), given together, make the CA use that
	// root; when both are empty the CA generates its root. PrivateKey is
	// never shown back.
	PrivateKey string `json:",omitempty"`
	RootCert   string `json:",omitempty"`
}

// CAConfiguration is the CA's configuration as kept in Raft.
type CAConfiguration struct {
	// ClusterID names the trust domain: "<cluster-id>.trellis". It is made
	// once, by the first leader, and never changes.
	ClusterID string
	// Provider is CAProviderBuiltin.
	Provider string
	Config   CAConfig
	RaftIndex
}

// TrustDomain returns the cluster's trust domain.
func (c *CAConfiguration) TrustDomain() string { return connect.TrustDomain(c.ClusterID) }

// CARequest sets the CA configuration: a new LeafCertTTL applies to new
// leaves; a new RootCert/PrivateKey, or Rotate, makes a new active root,
// cross-signed by the current one.
type CARequest struct {
	Datacenter string
	Config     *CAConfiguration
	// Rotate makes a new generated root even when the configuration names
	// no new one (trellis connect ca rotate).
	Rotate bool
	WriteRequest
}

// IndexedCARoots is the reply of ConnectCA.Roots.
type IndexedCARoots struct {
	ActiveRootID string
	TrustDomain  string
	Roots        CARoots
	QueryMeta
}

// IndexedIssuedLeaves is the record of the leaves the nodes hold, soonest
// to expire first.
type IndexedIssuedLeaves struct {
	Leaves []*IssuedLeaf
	QueryMeta
}

// CASignRequest asks the leader to sign a leaf from a CSR (PEM). The CSR's
// SPIFFE ID names the service; Node is the agent asking, for tracking
// which leaves a rotation still waits for.
type CASignRequest struct {
	Datacenter string
	CSR        string
	Node       string
	WriteRequest
}

// IssuedCert is a signed leaf, in the shape of Consul's
// /v1/agent/connect/ca/leaf answer (without the private key, which only the
// agent knows).
type IssuedCert struct {
	// SerialNumber is the leaf's serial in colon hex.
	SerialNumber string
	// CertPEM is the leaf followed by the intermediates of its root.
	CertPEM     string
	Service     string
	ServiceURI  string
	ValidAfter  time.Time
	ValidBefore time.Time
	// RootID is the ID of the root that signed it.
	RootID string
	// PrivateKeyPEM is the leaf's key: never set by the servers (the key
	// stays on the agent that made the CSR); the agent sets it in its
	// /v1/agent/connect/ca/leaf answers.
	PrivateKeyPEM string `json:",omitempty"`
	RaftIndex
}

// IssuedLeaf records that a node holds a leaf of a service, signed by a
// root. A rotation keeps the previous root trusted until no node holds an
// unexpired leaf signed by it for a service it still runs.
type IssuedLeaf struct {
	Node         string
	Service      string
	SerialNumber string
	RootID       string
	NotAfter     time.Time
	RaftIndex
}

// CAWrite is the body of a CARequestType entry: the configuration and the
// full set of roots, written together. ExpectConfigIndex, when above 0,
// makes the write fail if the stored configuration moved since it was read
// (two rotations at once).
type CAWrite struct {
	Config            *CAConfiguration
	Roots             CARoots
	ExpectConfigIndex uint64 `json:",omitempty"`
}

// LeafWrite is the body of a LeafRequestType entry.
type LeafWrite struct {
	// Issued are recorded (replacing the node's record for the service).
	Issued []*IssuedLeaf `json:",omitempty"`
	// Delete removes records by node and service.
	Delete []LeafKey `json:",omitempty"`
}

// LeafKey names a leaf record.
type LeafKey struct{ Node, Service string }

// Intention operations of IntentionRequest.
const (
	// IntentionOpCreate adds a new intention; it fails when one exists for
	// the same source and destination. The reply carries its new ID.
	IntentionOpCreate = "create"
	// IntentionOpUpsert creates or replaces the intention of the same
	// source and destination.
	IntentionOpUpsert = "upsert"
	// IntentionOpUpdate replaces the intention with Intention.ID.
	IntentionOpUpdate = "update"
	// IntentionOpDelete removes the intention with Intention.ID, or, when
	// ID is empty, the one of Intention's source and destination.
	IntentionOpDelete = "delete"
)

// IntentionRequest changes an intention.
type IntentionRequest struct {
	Datacenter string
	Op         string
	Intention  *connect.Intention
	// CreateID, for IntentionOpCreate, is the ID the caller chose for the
	// new intention (NewUUID): a create applied once and sent again
	// (its reply lost) finds the intention it made, with this ID, and
	// succeeds instead of conflicting. Empty: the leader picks the ID, and
	// the create cannot be sent again safely.
	CreateID string `json:",omitempty"`
	WriteRequest
}

// NewUUID returns a random (version 4) UUID.
func NewUUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

var uuidRE = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)

// IsUUID reports whether s is a UUID in NewUUID's form (lowercase).
func IsUUID(s string) bool { return uuidRE.MatchString(s) }

// IntentionApplyReply is the reply of Intention.Apply.
type IntentionApplyReply struct {
	ID    string
	Index uint64
}

// IntentionWrite is the body of an IntentionRequestType entry: the leader
// has resolved IDs, precedence and times, so applying it is deterministic.
type IntentionWrite struct {
	// Op is IntentionOpUpsert (insert or replace by ID) or IntentionOpDelete (by ID).
	Op        string
	Intention *connect.Intention
}

// IntentionQueryRequest reads one intention: by IntentionID, or by exact
// SourceName and DestinationName.
type IntentionQueryRequest struct {
	Datacenter      string
	IntentionID     string
	SourceName      string
	DestinationName string
	QueryOptions
}

// IndexedIntentions is a list of intentions in precedence order.
type IndexedIntentions struct {
	Intentions []*connect.Intention
	QueryMeta
}

// IntentionMatchRequest asks which intentions apply to each of Names, by
// "source" or by "destination".
type IntentionMatchRequest struct {
	Datacenter string
	By         string
	Names      []string
	QueryOptions
}

// IndexedIntentionMatches holds, for each name of the request in order, the
// intentions that match it, in precedence order.
type IndexedIntentionMatches struct {
	Matches [][]*connect.Intention
	QueryMeta
}
