package structs

import (
	"fmt"
	"net"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// Limits on user-supplied metadata, as Consul has them.
const (
	MetaMaxPairs    = 64
	MetaKeyMaxLen   = 128
	MetaValueMaxLen = 512
	// ReservedMetaPrefix may not start a user's meta key.
	ReservedMetaPrefix = "trellis-"
)

var metaKeyRE = regexp.MustCompile(`^[a-zA-Z0-9_-]+$`)

// ValidateMeta checks a meta map; field is the name used in errors ("Meta", "NodeMeta").
func ValidateMeta(field string, meta map[string]string) error {
	if len(meta) > MetaMaxPairs {
		return Invalid(field, "%d pairs is more than the %d allowed", len(meta), MetaMaxPairs)
	}
	for k, v := range meta {
		switch {
		case k == "":
			return Invalid(field, "empty key")
		case len(k) > MetaKeyMaxLen:
			return Invalid(field, "key %q is longer than %d characters", k[:16]+"…", MetaKeyMaxLen)
		case !metaKeyRE.MatchString(k):
			return Invalid(field, "key %q may contain only letters, digits, '-' and '_'", k)
		case strings.HasPrefix(k, ReservedMetaPrefix):
			return Invalid(field, "key %q uses the reserved prefix %q", k, ReservedMetaPrefix)
		case len(v) > MetaValueMaxLen:
			return Invalid(field, "value of %q is longer than %d characters", k, MetaValueMaxLen)
		}
	}
	return nil
}

// ValidatePort checks that p is a TCP/UDP port number (0 means none).
func ValidatePort(field string, p int) error {
	if p < 0 || p > 65535 {
		return Invalid(field, "port %d is out of range 0-65535", p)
	}
	return nil
}

// Validate checks a service instance before it is stored. It does not fill
// defaults; callers set ID from Service first.
func (s *NodeService) Validate() error {
	if s == nil {
		return Invalid("Service", "missing")
	}
	if strings.TrimSpace(s.Service) == "" {
		return Invalid("Name", "a service needs a name")
	}
	if len(s.Service) > 255 {
		return Invalid("Name", "longer than 255 characters")
	}
	if strings.ContainsAny(s.Service, "/\x00") {
		return Invalid("Name", "%q may not contain '/' or NUL", s.Service)
	}
	if s.ID == "" {
		return Invalid("ID", "empty")
	}
	if strings.ContainsAny(s.ID, "/\x00") {
		return Invalid("ID", "%q may not contain '/' or NUL", s.ID)
	}
	switch s.Kind {
	case ServiceKindTypical, ServiceKindConnectProxy:
	default:
		return Invalid("Kind", "unknown kind %q (want \"\" or %q)", s.Kind, ServiceKindConnectProxy)
	}
	if err := ValidatePort("Port", s.Port); err != nil {
		return err
	}
	for i, t := range s.Tags {
		if t == "" {
			return Invalid("Tags", "tag %d is empty", i)
		}
	}
	for name, a := range s.TaggedAddresses {
		if err := ValidatePort("TaggedAddresses."+name+".Port", a.Port); err != nil {
			return err
		}
	}
	if s.Weights != nil && (s.Weights.Passing < 1 || s.Weights.Warning < 0) {
		return Invalid("Weights", "passing must be at least 1 and warning at least 0")
	}
	if s.Kind == ServiceKindConnectProxy && (s.Proxy == nil || s.Proxy.DestinationServiceName == "") {
		return Invalid("Proxy.DestinationServiceName", "a connect-proxy service needs a destination")
	}
	if s.Proxy != nil {
		if s.Kind != ServiceKindConnectProxy {
			return Invalid("Proxy", "only a service of kind %q has a proxy configuration", ServiceKindConnectProxy)
		}
		if s.Port == 0 {
			return Invalid("Port", "a connect-proxy service needs the port of its public listener")
		}
		if err := s.Proxy.Validate("Proxy", true); err != nil {
			return err
		}
	}
	if s.Connect != nil && s.Connect.SidecarService != nil {
		sc := s.Connect.SidecarService
		if s.Kind == ServiceKindConnectProxy {
			return Invalid("Connect.SidecarService", "a proxy cannot have a sidecar")
		}
		if s.Connect.Native {
			return Invalid("Connect.SidecarService", "a mesh-native service needs no sidecar")
		}
		if strings.ContainsAny(sc.ID+sc.Service, "/\x00") {
			return Invalid("Connect.SidecarService.ID", "%q may not contain '/' or NUL", sc.ID+sc.Service)
		}
		if err := ValidatePort("Connect.SidecarService.Port", sc.Port); err != nil {
			return err
		}
		if err := ValidateMeta("Connect.SidecarService.Meta", sc.Meta); err != nil {
			return err
		}
		if sc.Proxy != nil {
			if sc.Proxy.DestinationServiceName != "" || sc.Proxy.DestinationServiceID != "" {
				return Invalid("Connect.SidecarService.Proxy.DestinationServiceName", "a sidecar's destination is the service it belongs to; leave it out")
			}
			if err := sc.Proxy.Validate("Connect.SidecarService.Proxy", false); err != nil {
				return err
			}
		}
	}
	return ValidateMeta("Meta", s.Meta)
}

// Validate checks a proxy configuration; prefix names it in errors.
// withDestination requires the destination fields (a proxy registered on
// its own; a sidecar's are filled by the agent).
func (p *ConnectProxyConfig) Validate(prefix string, withDestination bool) error {
	if withDestination {
		if err := validateMeshName(prefix+".DestinationServiceName", p.DestinationServiceName); err != nil {
			return err
		}
	}
	if p.LocalServiceAddress != "" && net.ParseIP(p.LocalServiceAddress) == nil {
		return Invalid(prefix+".LocalServiceAddress", "%q is not an IP address", p.LocalServiceAddress)
	}
	if err := ValidatePort(prefix+".LocalServicePort", p.LocalServicePort); err != nil {
		return err
	}
	binds := map[string]int{}
	for i, u := range p.Upstreams {
		f := fmt.Sprintf("%s.Upstreams[%d]", prefix, i)
		if err := validateMeshName(f+".DestinationName", u.DestinationName); err != nil {
			return err
		}
		if u.LocalBindPort < 1 || u.LocalBindPort > 65535 {
			return Invalid(f+".LocalBindPort", "%d is not a port (1-65535): the application dials the upstream there", u.LocalBindPort)
		}
		if u.LocalBindAddress != "" && net.ParseIP(u.LocalBindAddress) == nil {
			return Invalid(f+".LocalBindAddress", "%q is not an IP address", u.LocalBindAddress)
		}
		addr := net.JoinHostPort(u.LocalBindAddress, strconv.Itoa(u.LocalBindPort))
		if j, dup := binds[addr]; dup {
			return Invalid(f+".LocalBindPort", "upstreams %d and %d both listen on %s", j, i, addr)
		}
		binds[addr] = i
		if u.Datacenter != "" && !dcNameRE.MatchString(u.Datacenter) {
			return Invalid(f+".Datacenter", "%q is not a datacenter name", u.Datacenter)
		}
	}
	if len(p.Config) > MetaMaxPairs {
		return Invalid(prefix+".Config", "%d keys is more than the %d allowed", len(p.Config), MetaMaxPairs)
	}
	return nil
}

var (
	meshNameRE = regexp.MustCompile(`^[a-zA-Z0-9]([a-zA-Z0-9._-]{0,253}[a-zA-Z0-9])?$`)
	dcNameRE   = regexp.MustCompile(`^[a-zA-Z0-9_-]{1,64}$`)
)

// validateMeshName checks the name of a service the mesh reaches.
func validateMeshName(field, name string) error {
	if name == "" {
		return Invalid(field, "required")
	}
	if !meshNameRE.MatchString(name) {
		return Invalid(field, "%q is not a service name (letters, digits, '.', '_' and '-')", name)
	}
	return nil
}

// MinCheckInterval is the shortest interval a check may run at.
const MinCheckInterval = 100 * time.Millisecond

// Validate checks a check definition. prefix names it in errors, such as
// "Check" or "Checks[1]".
func (c *CheckType) Validate(prefix string) error {
	f := func(name string) string {
		if prefix == "" {
			return name
		}
		return prefix + "." + name
	}
	n := 0
	for _, set := range []bool{c.HTTP != "", c.TCP != "", c.TTL != 0} {
		if set {
			n++
		}
	}
	if n == 0 {
		return Invalid(prefix, "a check needs one of HTTP, TCP or TTL (script checks are not supported)")
	}
	if n > 1 {
		return Invalid(prefix, "a check takes only one of HTTP, TCP or TTL")
	}
	if c.Status != "" && !ValidHealthState(c.Status) {
		return Invalid(f("Status"), "%q is not one of passing, warning, critical", c.Status)
	}
	if c.TTL < 0 {
		return Invalid(f("TTL"), "must be positive")
	}
	if c.HTTP != "" || c.TCP != "" {
		if c.Interval <= 0 {
			return Invalid(f("Interval"), "an HTTP or TCP check needs an interval")
		}
		if c.Interval < MinCheckInterval {
			return Invalid(f("Interval"), "%s is shorter than the minimum %s", c.Interval, MinCheckInterval)
		}
	}
	if c.Timeout < 0 {
		return Invalid(f("Timeout"), "must be positive")
	}
	if c.DeregisterCriticalServiceAfter < 0 {
		return Invalid(f("DeregisterCriticalServiceAfter"), "must be positive")
	}
	if c.HTTP != "" {
		u, err := url.Parse(c.HTTP)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return Invalid(f("HTTP"), "%q is not an http:// or https:// URL", c.HTTP)
		}
		if c.Method != "" && !isToken(c.Method) {
			return Invalid(f("Method"), "%q is not an HTTP method", c.Method)
		}
	}
	if c.TCP != "" {
		host, port, err := net.SplitHostPort(c.TCP)
		if err != nil || host == "" {
			return Invalid(f("TCP"), "%q is not host:port", c.TCP)
		}
		if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
			return Invalid(f("TCP"), "%q has no valid port", c.TCP)
		}
	}
	if c.SuccessBeforePassing < 0 || c.FailuresBeforeCritical < 0 {
		return Invalid(prefix, "SuccessBeforePassing and FailuresBeforeCritical must be 0 or more")
	}
	if c.OutputMaxSize < 0 {
		return Invalid(f("OutputMaxSize"), "must be 0 or more")
	}
	return nil
}

func isToken(s string) bool {
	for _, r := range s {
		if r < '!' || r > '~' || strings.ContainsRune("()<>@,;:\\\"/[]?={}", r) {
			return false
		}
	}
	return s != ""
}
