package configentry

import (
	"errors"
	"fmt"
	"math"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/trellismesh/trellis/connect"
)

// Limits that Validate enforces.
const (
	MaxNameLength        = 255
	MaxMetaPairs         = 64
	MaxMetaKeyLength     = 128
	MaxMetaValueLength   = 512
	MaxNumRetries        = 10
	MaxRingSize          = 8 << 20 // Envoy's own bound
	MaxPermissions       = 64
	MaxDescriptionLength = 512
)

var (
	nameRE     = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?$`)
	subsetRE   = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)
	metaKeyRE  = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)
	protocols  = []string{ProtocolTCP, ProtocolHTTP, ProtocolHTTP2, ProtocolGRPC}
	lbPolicies = []string{LBRoundRobin, LBLeastRequest, LBRingHash, LBMaglev, LBRandom}
	retryOns   = []string{
		"5xx", "gateway-error", "reset", "connect-failure", "envoy-ratelimited", "retriable-4xx",
		"refused-stream", "cancelled", "deadline-exceeded", "internal", "resource-exhausted", "unavailable",
		"retriable-status-codes",
	}
	httpMethods = []string{
		http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
		http.MethodDelete, http.MethodConnect, http.MethodOptions, http.MethodTrace,
	}
)

func validName(field, name string) error {
	switch {
	case name == "":
		return fieldErr(field, "required")
	case len(name) > MaxNameLength:
		return fieldErr(field, "longer than %d characters", MaxNameLength)
	case !nameRE.MatchString(name):
		return fieldErr(field, "%q is not a service name (letters, digits, '.', '_' and '-', starting and ending with a letter or digit)", name)
	}
	return nil
}

func validSubsetName(field, name string) error {
	if !subsetRE.MatchString(name) {
		return fieldErr(field, "%q is not a subset name (a DNS label: lower-case letters, digits and '-', at most 63)", name)
	}
	return nil
}

func validProtocol(field, p string) error {
	if p != "" && !slices.Contains(protocols, p) {
		return fieldErr(field, "%q is not a protocol (want one of %s)", p, strings.Join(protocols, ", "))
	}
	return nil
}

func validMeta(meta map[string]string) error {
	if len(meta) > MaxMetaPairs {
		return fieldErr("Meta", "%d pairs is more than the %d allowed", len(meta), MaxMetaPairs)
	}
	for _, k := range sortedKeys(meta) {
		f := elemPath("Meta", k)
		switch {
		case !metaKeyRE.MatchString(k):
			return fieldErr(f, "a key is letters, digits, '_' and '-'")
		case len(k) > MaxMetaKeyLength:
			return fieldErr(f, "key longer than %d characters", MaxMetaKeyLength)
		case len(meta[k]) > MaxMetaValueLength:
			return fieldErr(f, "value longer than %d characters", MaxMetaValueLength)
		}
	}
	return nil
}

func sortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

func nonNegative(field string, d Duration) error {
	if d < 0 {
		return fieldErr(field, "must not be negative")
	}
	return nil
}

// fromConnect turns connect's field errors into ours.
func fromConnect(err error) error {
	var ce *connect.FieldError
	if errors.As(err, &ce) {
		return &FieldError{Field: ce.Field, Msg: ce.Reason}
	}
	return err
}

func trimUpper(ss []string) {
	for i, s := range ss {
		ss[i] = strings.ToUpper(strings.TrimSpace(s))
	}
}

// --- proxy-defaults ---

// Normalize sets the kind and name and lower-cases Config["protocol"].
func (e *ProxyConfigEntry) Normalize() {
	e.Kind = ProxyDefaults
	e.Name = strings.TrimSpace(e.Name)
	if p, ok := e.Config["protocol"].(string); ok {
		e.Config["protocol"] = strings.ToLower(strings.TrimSpace(p))
	}
}

// Validate checks the name ("global") and the protocol.
func (e *ProxyConfigEntry) Validate() error {
	if e.Name != ProxyDefaultsName {
		return fieldErr("Name", "%q: a proxy-defaults entry is named %q", e.Name, ProxyDefaultsName)
	}
	if p, ok := e.Config["protocol"]; ok {
		s, isStr := p.(string)
		if !isStr {
			return fieldErr(`Config["protocol"]`, "must be a string")
		}
		if err := validProtocol(`Config["protocol"]`, s); err != nil {
			return err
		}
	}
	return validMeta(e.Meta)
}

// --- service-defaults ---

// Normalize sets the kind and lower-cases the protocol.
func (e *ServiceConfigEntry) Normalize() {
	e.Kind = ServiceDefaults
	e.Name = strings.TrimSpace(e.Name)
	e.Protocol = strings.ToLower(strings.TrimSpace(e.Protocol))
	if u := e.UpstreamConfig; u != nil {
		for _, o := range u.Overrides {
			if o != nil {
				o.Name = strings.TrimSpace(o.Name)
			}
		}
	}
}

// Validate checks the protocol, limits, and the upstream settings.
func (e *ServiceConfigEntry) Validate() error {
	if err := validName("Name", e.Name); err != nil {
		return err
	}
	if err := validProtocol("Protocol", e.Protocol); err != nil {
		return err
	}
	for _, c := range []struct {
		f string
		v int
	}{{"MaxInboundConnections", e.MaxInboundConnections}, {"LocalConnectTimeoutMs", e.LocalConnectTimeoutMs}, {"LocalRequestTimeoutMs", e.LocalRequestTimeoutMs}} {
		if c.v < 0 {
			return fieldErr(c.f, "must not be negative")
		}
	}
	if u := e.UpstreamConfig; u != nil {
		if u.Defaults != nil {
			if u.Defaults.Name != "" {
				return fieldErr("UpstreamConfig.Defaults.Name", "must be empty: Defaults apply to every upstream")
			}
			if err := u.Defaults.validate("UpstreamConfig.Defaults"); err != nil {
				return err
			}
		}
		seen := map[string]int{}
		for i, o := range u.Overrides {
			f := fmt.Sprintf("UpstreamConfig.Overrides[%d]", i)
			if o == nil {
				return fieldErr(f, "missing")
			}
			if err := validName(f+".Name", o.Name); err != nil {
				return err
			}
			if j, dup := seen[o.Name]; dup {
				return fieldErr(f+".Name", "%q is already overridden by UpstreamConfig.Overrides[%d]", o.Name, j)
			}
			seen[o.Name] = i
			if err := o.validate(f); err != nil {
				return err
			}
		}
	}
	return validMeta(e.Meta)
}

func (u *UpstreamConfig) validate(f string) error {
	if u.ConnectTimeoutMs < 0 {
		return fieldErr(f+".ConnectTimeoutMs", "must not be negative")
	}
	if l := u.Limits; l != nil {
		for _, c := range []struct {
			f string
			v *int
		}{{"MaxConnections", l.MaxConnections}, {"MaxPendingRequests", l.MaxPendingRequests}, {"MaxConcurrentRequests", l.MaxConcurrentRequests}} {
			if c.v != nil && *c.v < 0 {
				return fieldErr(f+".Limits."+c.f, "must not be negative")
			}
		}
	}
	if p := u.PassiveHealthCheck; p != nil {
		pf := f + ".PassiveHealthCheck"
		if err := nonNegative(pf+".Interval", p.Interval); err != nil {
			return err
		}
		if p.MaxEjectionPercent != nil && *p.MaxEjectionPercent > 100 {
			return fieldErr(pf+".MaxEjectionPercent", "%d: a percentage is at most 100", *p.MaxEjectionPercent)
		}
		if p.EnforcingConsecutive5xx != nil && *p.EnforcingConsecutive5xx > 100 {
			return fieldErr(pf+".EnforcingConsecutive5xx", "%d: a percentage is at most 100", *p.EnforcingConsecutive5xx)
		}
		if p.BaseEjectionTime != nil {
			if err := nonNegative(pf+".BaseEjectionTime", *p.BaseEjectionTime); err != nil {
				return err
			}
		}
	}
	if r := u.RetryBudget; r != nil {
		if r.Percent < 0 || r.Percent > 100 || math.IsNaN(r.Percent) {
			return fieldErr(f+".RetryBudget.Percent", "%g: a percentage is from 0 to 100", r.Percent)
		}
		if r.MinRetryConcurrency < 0 {
			return fieldErr(f+".RetryBudget.MinRetryConcurrency", "must not be negative")
		}
	}
	return nil
}

// --- service-router ---

// Normalize sets the kind, trims names and upper-cases methods.
func (e *ServiceRouterConfigEntry) Normalize() {
	e.Kind = ServiceRouter
	e.Name = strings.TrimSpace(e.Name)
	for i := range e.Routes {
		r := &e.Routes[i]
		if r.Match != nil && r.Match.HTTP != nil {
			trimUpper(r.Match.HTTP.Methods)
		}
		if d := r.Destination; d != nil {
			d.Service = strings.TrimSpace(d.Service)
			d.ServiceSubset = strings.TrimSpace(d.ServiceSubset)
			for k, s := range d.RetryOn {
				d.RetryOn[k] = strings.ToLower(strings.TrimSpace(s))
			}
		}
	}
}

// Validate checks every route's match and destination.
func (e *ServiceRouterConfigEntry) Validate() error {
	if err := validName("Name", e.Name); err != nil {
		return err
	}
	for i, r := range e.Routes {
		f := fmt.Sprintf("Routes[%d]", i)
		var h *ServiceRouteHTTPMatch
		if r.Match != nil {
			h = r.Match.HTTP
		}
		if h != nil {
			if err := h.validate(f + ".Match.HTTP"); err != nil {
				return err
			}
		}
		if d := r.Destination; d != nil {
			if err := d.validate(f+".Destination", h); err != nil {
				return err
			}
		}
	}
	return validMeta(e.Meta)
}

func (h *ServiceRouteHTTPMatch) validate(f string) error {
	paths := 0
	for _, v := range []string{h.PathExact, h.PathPrefix, h.PathRegex} {
		if v != "" {
			paths++
		}
	}
	if paths > 1 {
		return fieldErr(f, "at most one of PathExact, PathPrefix and PathRegex may be set")
	}
	if h.PathExact != "" && !strings.HasPrefix(h.PathExact, "/") {
		return fieldErr(f+".PathExact", "%q: must start with /", h.PathExact)
	}
	if h.PathPrefix != "" && !strings.HasPrefix(h.PathPrefix, "/") {
		return fieldErr(f+".PathPrefix", "%q: must start with /", h.PathPrefix)
	}
	if h.PathRegex != "" {
		if _, err := regexp.Compile(h.PathRegex); err != nil {
			return fieldErr(f+".PathRegex", "%q: %v", h.PathRegex, err)
		}
	}
	for i, hd := range h.Header {
		hf := fmt.Sprintf("%s.Header[%d]", f, i)
		if strings.TrimSpace(hd.Name) == "" {
			return fieldErr(hf+".Name", "required")
		}
		if err := exactlyOne(hf, hd.Present, map[string]string{"Exact": hd.Exact, "Prefix": hd.Prefix, "Suffix": hd.Suffix, "Regex": hd.Regex}, "Present, Exact, Prefix, Suffix and Regex"); err != nil {
			return err
		}
	}
	for i, q := range h.QueryParam {
		qf := fmt.Sprintf("%s.QueryParam[%d]", f, i)
		if strings.TrimSpace(q.Name) == "" {
			return fieldErr(qf+".Name", "required")
		}
		if err := exactlyOne(qf, q.Present, map[string]string{"Exact": q.Exact, "Regex": q.Regex}, "Present, Exact and Regex"); err != nil {
			return err
		}
	}
	for i, m := range h.Methods {
		if !slices.Contains(httpMethods, m) {
			return fieldErr(fmt.Sprintf("%s.Methods[%d]", f, i), "%q is not an HTTP method (want one of %s)", m, strings.Join(httpMethods, ", "))
		}
	}
	return nil
}

// exactlyOne checks that exactly one matcher of a header or query
// parameter is set, and that a Regex compiles.
func exactlyOne(f string, present bool, vals map[string]string, names string) error {
	n := 0
	if present {
		n++
	}
	for _, v := range vals {
		if v != "" {
			n++
		}
	}
	if n != 1 {
		return fieldErr(f, "exactly one of %s must be set", names)
	}
	if re := vals["Regex"]; re != "" {
		if _, err := regexp.Compile(re); err != nil {
			return fieldErr(f+".Regex", "%q: %v", re, err)
		}
	}
	return nil
}

func (d *ServiceRouteDestination) validate(f string, h *ServiceRouteHTTPMatch) error {
	if d.Service != "" {
		if err := validName(f+".Service", d.Service); err != nil {
			return err
		}
	}
	if d.ServiceSubset != "" {
		if err := validSubsetName(f+".ServiceSubset", d.ServiceSubset); err != nil {
			return err
		}
	}
	if d.PrefixRewrite != "" && (h == nil || (h.PathExact == "" && h.PathPrefix == "")) {
		return fieldErr(f+".PrefixRewrite", "needs the route to match PathExact or PathPrefix")
	}
	if err := nonNegative(f+".RequestTimeout", d.RequestTimeout); err != nil {
		return err
	}
	if err := nonNegative(f+".IdleTimeout", d.IdleTimeout); err != nil {
		return err
	}
	if d.NumRetries > MaxNumRetries {
		return fieldErr(f+".NumRetries", "%d: at most %d retries", d.NumRetries, MaxNumRetries)
	}
	for i, c := range d.RetryOnStatusCodes {
		if c < 100 || c > 599 {
			return fieldErr(fmt.Sprintf("%s.RetryOnStatusCodes[%d]", f, i), "%d is not an HTTP status code (100 to 599)", c)
		}
	}
	for i, r := range d.RetryOn {
		if !slices.Contains(retryOns, r) {
			return fieldErr(fmt.Sprintf("%s.RetryOn[%d]", f, i), "%q is not a retry condition (want one of %s)", r, strings.Join(retryOns, ", "))
		}
	}
	if err := d.RequestHeaders.validate(f + ".RequestHeaders"); err != nil {
		return err
	}
	return d.ResponseHeaders.validate(f + ".ResponseHeaders")
}

func (m *HTTPHeaderModifiers) validate(f string) error {
	if m == nil {
		return nil
	}
	for _, part := range []struct {
		name string
		m    map[string]string
	}{{"Add", m.Add}, {"Set", m.Set}} {
		for _, k := range sortedKeys(part.m) {
			if !validHeaderName(k) {
				return fieldErr(elemPath(f+"."+part.name, k), "not a header name")
			}
		}
	}
	for i, k := range m.Remove {
		if !validHeaderName(k) {
			return fieldErr(fmt.Sprintf("%s.Remove[%d]", f, i), "%q is not a header name", k)
		}
	}
	return nil
}

// validHeaderName reports whether s is an HTTP token (RFC 9110).
func validHeaderName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0) {
			return false
		}
	}
	return true
}

// --- service-splitter ---

// Normalize sets the kind and trims names.
func (e *ServiceSplitterConfigEntry) Normalize() {
	e.Kind = ServiceSplitter
	e.Name = strings.TrimSpace(e.Name)
	for i := range e.Splits {
		s := &e.Splits[i]
		s.Service = strings.TrimSpace(s.Service)
		s.ServiceSubset = strings.TrimSpace(s.ServiceSubset)
	}
}

// Validate checks the splits and that their weights sum to 100.
func (e *ServiceSplitterConfigEntry) Validate() error {
	if err := validName("Name", e.Name); err != nil {
		return err
	}
	if len(e.Splits) == 0 {
		return fieldErr("Splits", "at least one split is required")
	}
	sum := 0.0
	for i, s := range e.Splits {
		f := fmt.Sprintf("Splits[%d]", i)
		w := float64(s.Weight)
		if math.IsNaN(w) || w < 0 || w > 100 {
			return fieldErr(f+".Weight", "%s: a weight is from 0 to 100", formatFloat32(s.Weight))
		}
		if c := w * 100; math.Abs(c-math.Round(c)) > 1e-3 {
			return fieldErr(f+".Weight", "%s: at most two decimals", formatFloat32(s.Weight))
		}
		sum += math.Round(w*100) / 100
		if s.Service != "" {
			if err := validName(f+".Service", s.Service); err != nil {
				return err
			}
		}
		if s.ServiceSubset != "" {
			if err := validSubsetName(f+".ServiceSubset", s.ServiceSubset); err != nil {
				return err
			}
		}
		if err := s.RequestHeaders.validate(f + ".RequestHeaders"); err != nil {
			return err
		}
		if err := s.ResponseHeaders.validate(f + ".ResponseHeaders"); err != nil {
			return err
		}
	}
	if math.Abs(sum-100) > 0.01 {
		return fieldErr("Splits", "weights sum to %s, must sum to 100", trimFloat(sum))
	}
	return validMeta(e.Meta)
}

// formatFloat32 prints f as it was written: the shortest decimal that
// reads back as the same float32 (33.333, not 33.33300018310547).
func formatFloat32(f float32) string {
	return strconv.FormatFloat(float64(f), 'f', -1, 32)
}

func trimFloat(f float64) string {
	return strings.TrimRight(strings.TrimRight(fmt.Sprintf("%.2f", f), "0"), ".")
}

// --- service-resolver ---

// Normalize sets the kind, trims names and lower-cases the load-balancing
// policy and hash fields.
func (e *ServiceResolverConfigEntry) Normalize() {
	e.Kind = ServiceResolver
	e.Name = strings.TrimSpace(e.Name)
	e.DefaultSubset = strings.TrimSpace(e.DefaultSubset)
	if r := e.Redirect; r != nil {
		r.Service = strings.TrimSpace(r.Service)
		r.ServiceSubset = strings.TrimSpace(r.ServiceSubset)
		r.Datacenter = strings.TrimSpace(r.Datacenter)
	}
	if lb := e.LoadBalancer; lb != nil {
		lb.Policy = strings.ToLower(strings.TrimSpace(lb.Policy))
		for i := range lb.HashPolicies {
			lb.HashPolicies[i].Field = strings.ToLower(strings.TrimSpace(lb.HashPolicies[i].Field))
		}
	}
}

// Validate checks subsets and their filters, the redirect, failover and
// the load balancer.
func (e *ServiceResolverConfigEntry) Validate() error {
	if err := validName("Name", e.Name); err != nil {
		return err
	}
	for _, name := range sortedKeys(e.Subsets) {
		f := elemPath("Subsets", name)
		if err := validSubsetName(f, name); err != nil {
			return err
		}
		if _, err := CompileFilter(e.Subsets[name].Filter); err != nil {
			return fieldErr(f+".Filter", "%v", err)
		}
	}
	if e.DefaultSubset != "" {
		if _, ok := e.Subsets[e.DefaultSubset]; !ok {
			return fieldErr("DefaultSubset", "%q is not one of Subsets", e.DefaultSubset)
		}
	}
	if r := e.Redirect; r != nil {
		switch {
		case len(e.Subsets) > 0:
			return fieldErr("Redirect", "cannot be set with Subsets: a redirected service has no instances of its own")
		case e.DefaultSubset != "":
			return fieldErr("Redirect", "cannot be set with DefaultSubset")
		case len(e.Failover) > 0:
			return fieldErr("Redirect", "cannot be set with Failover: fail over in the redirect's target")
		case r.Service == "" && r.ServiceSubset == "" && r.Datacenter == "":
			return fieldErr("Redirect", "names nothing: set Service, ServiceSubset or Datacenter")
		case (r.Service == "" || r.Service == e.Name) && r.ServiceSubset == "" && r.Datacenter == "":
			return fieldErr("Redirect.Service", "%q redirects to itself", e.Name)
		}
		if r.Service != "" {
			if err := validName("Redirect.Service", r.Service); err != nil {
				return err
			}
		}
		if r.ServiceSubset != "" {
			if err := validSubsetName("Redirect.ServiceSubset", r.ServiceSubset); err != nil {
				return err
			}
		}
	}
	for _, key := range sortedKeys(e.Failover) {
		f := elemPath("Failover", key)
		if key != "*" {
			if _, ok := e.Subsets[key]; !ok {
				return fieldErr(f, "%q is neither one of Subsets nor *", key)
			}
		}
		if err := e.Failover[key].validate(f); err != nil {
			return err
		}
	}
	for _, c := range []struct {
		f string
		d Duration
	}{{"ConnectTimeout", e.ConnectTimeout}, {"RequestTimeout", e.RequestTimeout}, {"DrainTimeout", e.DrainTimeout}} {
		if err := nonNegative(c.f, c.d); err != nil {
			return err
		}
	}
	if err := e.LoadBalancer.validate("LoadBalancer"); err != nil {
		return err
	}
	return validMeta(e.Meta)
}

func (fo ServiceResolverFailover) validate(f string) error {
	if len(fo.Targets) > 0 {
		if fo.Service != "" || fo.ServiceSubset != "" || len(fo.Datacenters) > 0 {
			return fieldErr(f+".Targets", "cannot be set with Service, ServiceSubset or Datacenters")
		}
		for i, t := range fo.Targets {
			tf := fmt.Sprintf("%s.Targets[%d]", f, i)
			if t.Service == "" && t.ServiceSubset == "" && t.Datacenter == "" {
				return fieldErr(tf, "names nothing: set Service, ServiceSubset or Datacenter")
			}
			if t.Service != "" {
				if err := validName(tf+".Service", t.Service); err != nil {
					return err
				}
			}
			if t.ServiceSubset != "" {
				if err := validSubsetName(tf+".ServiceSubset", t.ServiceSubset); err != nil {
					return err
				}
			}
		}
		return nil
	}
	if fo.Service == "" && fo.ServiceSubset == "" && len(fo.Datacenters) == 0 {
		return fieldErr(f, "names nothing: set Service, ServiceSubset, Datacenters or Targets")
	}
	if fo.Service != "" {
		if err := validName(f+".Service", fo.Service); err != nil {
			return err
		}
	}
	if fo.ServiceSubset != "" {
		if err := validSubsetName(f+".ServiceSubset", fo.ServiceSubset); err != nil {
			return err
		}
	}
	for i, dc := range fo.Datacenters {
		if err := validName(fmt.Sprintf("%s.Datacenters[%d]", f, i), dc); err != nil {
			return err
		}
	}
	return nil
}

func (lb *LoadBalancer) validate(f string) error {
	if lb == nil {
		return nil
	}
	if lb.Policy != "" && !slices.Contains(lbPolicies, lb.Policy) {
		return fieldErr(f+".Policy", "%q is not a policy (want one of %s)", lb.Policy, strings.Join(lbPolicies, ", "))
	}
	hashing := lb.Policy == LBRingHash || lb.Policy == LBMaglev
	if rh := lb.RingHashConfig; rh != nil {
		if !hashing {
			return fieldErr(f+".RingHashConfig", "needs Policy %s or %s", LBRingHash, LBMaglev)
		}
		if rh.MinimumRingSize > MaxRingSize {
			return fieldErr(f+".RingHashConfig.MinimumRingSize", "%d is more than %d", rh.MinimumRingSize, uint64(MaxRingSize))
		}
		if rh.MaximumRingSize > MaxRingSize {
			return fieldErr(f+".RingHashConfig.MaximumRingSize", "%d is more than %d", rh.MaximumRingSize, uint64(MaxRingSize))
		}
		if rh.MinimumRingSize > 0 && rh.MaximumRingSize > 0 && rh.MinimumRingSize > rh.MaximumRingSize {
			return fieldErr(f+".RingHashConfig.MinimumRingSize", "%d is more than MaximumRingSize %d", rh.MinimumRingSize, rh.MaximumRingSize)
		}
	}
	if lb.LeastRequestConfig != nil && lb.Policy != LBLeastRequest {
		return fieldErr(f+".LeastRequestConfig", "needs Policy %s", LBLeastRequest)
	}
	if len(lb.HashPolicies) > 0 && !hashing {
		return fieldErr(f+".HashPolicies", "need Policy %s or %s", LBRingHash, LBMaglev)
	}
	for i, hp := range lb.HashPolicies {
		hf := fmt.Sprintf("%s.HashPolicies[%d]", f, i)
		switch {
		case hp.SourceIP && (hp.Field != "" || hp.FieldValue != ""):
			return fieldErr(hf, "SourceIP cannot be set with Field or FieldValue")
		case hp.SourceIP:
		case hp.Field == "":
			return fieldErr(hf+".Field", "required (header, cookie or query_parameter) unless SourceIP is set")
		case hp.Field != "header" && hp.Field != "cookie" && hp.Field != "query_parameter":
			return fieldErr(hf+".Field", "%q: want header, cookie or query_parameter", hp.Field)
		case hp.FieldValue == "":
			return fieldErr(hf+".FieldValue", "required: the name of the %s to hash", hp.Field)
		}
	}
	return nil
}

// --- service-intentions ---

// Normalize sets the kind, lower-cases actions, upper-cases methods, and
// computes each source's precedence and type.
func (e *ServiceIntentionsConfigEntry) Normalize() {
	e.Kind = ServiceIntentions
	e.Name = strings.TrimSpace(e.Name)
	for _, s := range e.Sources {
		if s == nil {
			continue
		}
		s.Name = strings.TrimSpace(s.Name)
		s.Action = strings.ToLower(strings.TrimSpace(s.Action))
		for _, p := range s.Permissions {
			if p == nil {
				continue
			}
			p.Action = strings.ToLower(strings.TrimSpace(p.Action))
			if p.HTTP != nil {
				trimUpper(p.HTTP.Methods)
			}
		}
		s.Precedence = connect.ComputePrecedence(s.Name, e.Name)
		if s.Type == "" {
			s.Type = "consul"
		}
	}
}

// Validate checks the sources: each named once, with an action or
// permissions.
func (e *ServiceIntentionsConfigEntry) Validate() error {
	if e.Name != connect.Wildcard {
		if err := validName("Name", e.Name); err != nil {
			return err
		}
	}
	if len(e.Sources) == 0 {
		return fieldErr("Sources", "at least one source is required")
	}
	seen := map[string]int{}
	for i, s := range e.Sources {
		f := fmt.Sprintf("Sources[%d]", i)
		if s == nil {
			return fieldErr(f, "missing")
		}
		if s.Name != connect.Wildcard {
			if err := validName(f+".Name", s.Name); err != nil {
				return err
			}
		}
		if j, dup := seen[s.Name]; dup {
			return fieldErr(f+".Name", "%q is already a source (Sources[%d])", s.Name, j)
		}
		seen[s.Name] = i
		switch {
		case len(s.Permissions) > 0 && s.Action != "":
			return fieldErr(f+".Action", "must be empty when Permissions are given: the permissions decide")
		case len(s.Permissions) > MaxPermissions:
			return fieldErr(f+".Permissions", "%d permissions is more than the %d allowed", len(s.Permissions), MaxPermissions)
		case len(s.Permissions) > 0:
			for k, p := range s.Permissions {
				if err := p.Validate(fmt.Sprintf("%s.Permissions[%d]", f, k)); err != nil {
					return fromConnect(err)
				}
			}
		case s.Action == "":
			return fieldErr(f+".Action", "required (allow or deny) unless Permissions are given")
		case s.Action != connect.IntentionAllow && s.Action != connect.IntentionDeny:
			return fieldErr(f+".Action", "%q: must be allow or deny", s.Action)
		}
		if s.Type != "" && s.Type != "consul" {
			return fieldErr(f+".Type", "%q: the only type is consul", s.Type)
		}
		if len(s.Description) > MaxDescriptionLength {
			return fieldErr(f+".Description", "longer than %d characters", MaxDescriptionLength)
		}
	}
	return validMeta(e.Meta)
}
