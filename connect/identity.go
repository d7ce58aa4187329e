package connect

import (
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// TrustDomainSuffix ends every cluster's trust domain.
const TrustDomainSuffix = ".trellis"

// DefaultNamespace is the only namespace for now.
const DefaultNamespace = "default"

// TrustDomain returns the trust domain of a cluster: "<cluster-id>.trellis".
func TrustDomain(clusterID string) string { return strings.ToLower(clusterID) + TrustDomainSuffix }

// ServiceID is the SPIFFE identity of a service:
// spiffe://<trust-domain>/ns/<namespace>/dc/<datacenter>/svc/<service>.
type ServiceID struct {
	TrustDomain string
	Namespace   string
	Datacenter  string
	Service     string
}

// NewServiceID returns the identity of service in datacenter dc.
func NewServiceID(trustDomain, dc, service string) ServiceID {
	return ServiceID{TrustDomain: trustDomain, Namespace: DefaultNamespace, Datacenter: dc, Service: service}
}

// spiffe returns the go-spiffe form, checking every part.
func (s ServiceID) spiffe() (spiffeid.ID, error) {
	td, err := spiffeid.TrustDomainFromString(s.TrustDomain)
	if err != nil {
		return spiffeid.ID{}, fmt.Errorf("trust domain %q: %w", s.TrustDomain, err)
	}
	return spiffeid.FromSegments(td, "ns", s.Namespace, "dc", s.Datacenter, "svc", s.Service)
}

// URI returns the identity as a URI, for a certificate's URI SAN.
func (s ServiceID) URI() (*url.URL, error) {
	id, err := s.spiffe()
	if err != nil {
		return nil, err
	}
	return id.URL(), nil
}

// String returns spiffe://… (or a description of what is wrong).
func (s ServiceID) String() string {
	id, err := s.spiffe()
	if err != nil {
		return fmt.Sprintf("invalid service identity (%v)", err)
	}
	return id.String()
}

// ErrNotServiceID means a URI is a valid SPIFFE ID but not a service's.
var ErrNotServiceID = errors.New("not a Trellis service identity")

// ParseServiceID parses spiffe://<td>/ns/<ns>/dc/<dc>/svc/<name>.
func ParseServiceID(uri string) (ServiceID, error) {
	id, err := spiffeid.FromString(uri)
	if err != nil {
		return ServiceID{}, fmt.Errorf("parse SPIFFE ID %q: %w", uri, err)
	}
	seg := strings.Split(strings.TrimPrefix(id.Path(), "/"), "/")
	if len(seg) != 6 || seg[0] != "ns" || seg[2] != "dc" || seg[4] != "svc" {
		return ServiceID{}, fmt.Errorf("%w: %q", ErrNotServiceID, uri)
	}
	return ServiceID{TrustDomain: id.TrustDomain().Name(), Namespace: seg[1], Datacenter: seg[3], Service: seg[5]}, nil
}

// ServiceIDFromCert returns the service identity in a certificate's URI SAN.
func ServiceIDFromCert(cert *x509.Certificate) (ServiceID, error) {
	if len(cert.URIs) != 1 {
		return ServiceID{}, fmt.Errorf("certificate has %d URI SANs, want exactly one SPIFFE ID", len(cert.URIs))
	}
	return ParseServiceID(cert.URIs[0].String())
}
