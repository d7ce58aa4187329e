package config

import (
	"errors"
	"fmt"
	"maps"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/hcl/v2"

	"github.com/trellismesh/trellis/raftstore/structs"
)

// ServiceDefinition is a service from a config or service definition file.
// Decoding fills defaults (ID from the name, check IDs and names) and
// validates it with the same rules as the HTTP API.
type ServiceDefinition struct {
	Kind              string
	ID                string
	Name              string
	Tags              []string
	Meta              map[string]string
	Address           string
	Port              int
	EnableTagOverride bool
	Weights           *structs.Weights
	TaggedAddresses   map[string]structs.ServiceAddress
	// Connect holds the mesh settings: native, or a sidecar proxy the agent
	// registers and runs.
	Connect *structs.ServiceConnect
	// Proxy is the configuration of a service of kind connect-proxy
	// registered on its own.
	Proxy  *structs.ConnectProxyConfig
	Checks []CheckDefinition
	// Source is where the definition starts, "file:line:col".
	Source string
}

// CheckDefinition is a check of a service definition.
type CheckDefinition struct {
	ID                             string
	Name                           string
	Notes                          string
	Status                         string
	HTTP                           string
	Method                         string
	Header                         map[string][]string
	Body                           string
	TLSSkipVerify                  bool
	TCP                            string
	TTL                            time.Duration
	Interval                       time.Duration
	Timeout                        time.Duration
	DeregisterCriticalServiceAfter time.Duration
	SuccessBeforePassing           int
	FailuresBeforeCritical         int
}

// NodeService returns the catalog form of the service.
func (s *ServiceDefinition) NodeService() *structs.NodeService {
	return &structs.NodeService{
		Kind: structs.ServiceKind(s.Kind), ID: s.ID, Service: s.Name, Tags: slices.Clone(s.Tags),
		Meta: maps.Clone(s.Meta), Address: s.Address, Port: s.Port, EnableTagOverride: s.EnableTagOverride,
		Weights: s.Weights, TaggedAddresses: maps.Clone(s.TaggedAddresses),
		Connect: cloneConnect(s.Connect), Proxy: cloneProxy(s.Proxy),
	}
}

// CheckTypes returns the checks the agent runs for the service.
func (s *ServiceDefinition) CheckTypes() []*structs.CheckType {
	var out []*structs.CheckType
	for _, c := range s.Checks {
		out = append(out, c.checkType(s.ID))
	}
	return out
}

func (c *CheckDefinition) checkType(serviceID string) *structs.CheckType {
	return &structs.CheckType{
		CheckID: c.ID, Name: c.Name, Notes: c.Notes, Status: c.Status, ServiceID: serviceID,
		HTTP: c.HTTP, Method: c.Method, Header: c.Header, Body: c.Body, TLSSkipVerify: c.TLSSkipVerify,
		TCP: c.TCP, TTL: c.TTL, Interval: c.Interval, Timeout: c.Timeout,
		DeregisterCriticalServiceAfter: c.DeregisterCriticalServiceAfter,
		SuccessBeforePassing:           c.SuccessBeforePassing, FailuresBeforeCritical: c.FailuresBeforeCritical,
	}
}

var serviceKeys = []string{"id", "name", "kind", "tags", "meta", "address", "port", "enable_tag_override", "weights", "tagged_addresses", "connect", "proxy", "check", "checks"}

var checkKeys = []string{"id", "check_id", "name", "notes", "status", "http", "method", "header", "body", "tls_skip_verify", "tcp", "ttl", "interval", "timeout", "deregister_critical_service_after", "success_before_passing", "failures_before_critical"}

// decodeService decodes one service node; it returns false after errors.
func decodeService(n node, e *errs) (ServiceDefinition, bool) {
	before := len(e.list)
	s := ServiceDefinition{Source: position(n.rng)}
	keyRanges := map[string]hcl.Range{}
	var checkNodes []node
	for _, f := range n.fields(e) {
		keyRanges[f.key] = f.expr0Range()
		switch f.key {
		case "id":
			s.ID, _ = e.str(f, n.what)
		case "name":
			s.Name, _ = e.str(f, n.what)
		case "kind":
			s.Kind, _ = e.str(f, n.what)
		case "tags":
			s.Tags, _ = e.strings(f, n.what)
		case "meta":
			s.Meta, _ = e.stringMap(f, n.what)
		case "address":
			s.Address, _ = e.str(f, n.what)
		case "port":
			s.Port, _ = e.integer(f, n.what)
		case "enable_tag_override":
			s.EnableTagOverride, _ = e.boolean(f, n.what)
		case "weights":
			if o, ok := e.object(f, n.what+": weights"); ok {
				w := structs.Weights{Passing: 1, Warning: 1}
				for _, wf := range o.fields(e) {
					switch wf.key {
					case "passing":
						w.Passing, _ = e.integer(wf, o.what)
					case "warning":
						w.Warning, _ = e.integer(wf, o.what)
					default:
						e.unknown(wf, o.what, []string{"passing", "warning"})
					}
				}
				s.Weights = &w
			}
		case "tagged_addresses":
			if o, ok := e.object(f, n.what+": tagged_addresses"); ok {
				s.TaggedAddresses = map[string]structs.ServiceAddress{}
				for _, af := range o.fields(e) {
					ao, ok := e.object(af, o.what+": "+af.name)
					if !ok {
						continue
					}
					var sa structs.ServiceAddress
					for _, x := range ao.fields(e) {
						switch x.key {
						case "address":
							sa.Address, _ = e.str(x, ao.what)
						case "port":
							sa.Port, _ = e.integer(x, ao.what)
						default:
							e.unknown(x, ao.what, []string{"address", "port"})
						}
					}
					s.TaggedAddresses[af.name] = sa
				}
			}
		case "connect":
			if o, ok := e.object(f, n.what+": connect"); ok {
				s.Connect = decodeServiceConnect(o, e)
			}
		case "proxy":
			if o, ok := e.object(f, n.what+": proxy"); ok {
				s.Proxy = decodeProxy(o, e)
			}
		case "check", "checks":
			nodes, _ := e.objects(f, n.what)
			checkNodes = append(checkNodes, nodes...)
		case "args", "script", "docker_container_id", "grpc", "h2ping", "alias_service":
			e.add(f.rng, "%s: %s: only HTTP, TCP and TTL checks are supported (script checks are not)", n.what, f.name)
		default:
			e.unknown(f, n.what, serviceKeys)
		}
	}
	if s.ID == "" {
		s.ID = s.Name
	}
	if s.Name != "" {
		n.what = fmt.Sprintf("service %q", s.Name)
	}
	for i, cn := range checkNodes {
		cn.what = fmt.Sprintf("%s: check %d", n.what, i+1)
		c, ok := decodeCheck(cn, e)
		if !ok {
			continue
		}
		if c.ID == "" {
			c.ID = "service:" + s.ID
			if len(checkNodes) > 1 {
				c.ID += fmt.Sprintf(":%d", i+1)
			}
		}
		if c.Name == "" {
			c.Name = fmt.Sprintf("Service '%s' check", s.Name)
		}
		s.Checks = append(s.Checks, c)
	}
	if len(e.list) > before {
		return s, false
	}
	// The rules the HTTP API applies, with the error put on the key.
	if err := s.NodeService().Validate(); err != nil {
		e.add(rangeFor(err, keyRanges, n.rng), "%s: %s", n.what, validationText(err))
		return s, false
	}
	seen := map[string]bool{}
	for i, ct := range s.CheckTypes() {
		if err := ct.Validate(""); err != nil {
			e.add(checkNodes[i].rng, "%s: check %d: %s", n.what, i+1, validationText(err))
			return s, false
		}
		if seen[ct.CheckID] {
			e.add(checkNodes[i].rng, "%s: check %d: id %q is used twice", n.what, i+1, ct.CheckID)
			return s, false
		}
		seen[ct.CheckID] = true
	}
	return s, true
}

// expr0Range is where a field's value starts (its key for blocks).
func (f field) expr0Range() hcl.Range {
	if f.expr != nil {
		return f.expr.Range()
	}
	return f.rng
}

// validationText words a validation error with the config's key names.
func validationText(err error) string {
	var ve *structs.ValidationError
	if errors.As(err, &ve) {
		if ve.Field == "" {
			return ve.Reason
		}
		parts := strings.Split(ve.Field, ".")
		return normalizeKey(parts[len(parts)-1]) + ": " + ve.Reason
	}
	return err.Error()
}

// rangeFor finds the key a validation error is about, or falls back to the node.
func rangeFor(err error, keys map[string]hcl.Range, fallback hcl.Range) hcl.Range {
	var ve *structs.ValidationError
	if errors.As(err, &ve) {
		parts := strings.Split(ve.Field, ".")
		if r, ok := keys[normalizeKey(parts[0])]; ok {
			return r
		}
	}
	return fallback
}

func decodeCheck(n node, e *errs) (CheckDefinition, bool) {
	before := len(e.list)
	var c CheckDefinition
	for _, f := range n.fields(e) {
		switch f.key {
		case "id", "check_id":
			c.ID, _ = e.str(f, n.what)
		case "name":
			c.Name, _ = e.str(f, n.what)
		case "notes":
			c.Notes, _ = e.str(f, n.what)
		case "status":
			c.Status, _ = e.str(f, n.what)
		case "http":
			c.HTTP, _ = e.str(f, n.what)
		case "method":
			c.Method, _ = e.str(f, n.what)
		case "header":
			c.Header, _ = e.headerMap(f, n.what)
		case "body":
			c.Body, _ = e.str(f, n.what)
		case "tls_skip_verify":
			c.TLSSkipVerify, _ = e.boolean(f, n.what)
		case "tcp":
			c.TCP, _ = e.str(f, n.what)
		case "ttl":
			c.TTL, _ = e.duration(f, n.what)
		case "interval":
			c.Interval, _ = e.duration(f, n.what)
		case "timeout":
			c.Timeout, _ = e.duration(f, n.what)
		case "deregister_critical_service_after":
			c.DeregisterCriticalServiceAfter, _ = e.duration(f, n.what)
		case "success_before_passing":
			c.SuccessBeforePassing, _ = e.integer(f, n.what)
		case "failures_before_critical":
			c.FailuresBeforeCritical, _ = e.integer(f, n.what)
		case "args", "script", "script_args", "docker_container_id", "shell":
			e.add(f.rng, "%s: %s: script checks are not supported (use an HTTP, TCP or TTL check)", n.what, f.name)
		case "grpc", "h2ping", "udp", "os_service", "alias_service", "alias_node":
			e.add(f.rng, "%s: %s: this check type is not supported (use an HTTP, TCP or TTL check)", n.what, f.name)
		case "service_id":
			e.add(f.rng, "%s: service_id: a check inside a service belongs to that service; leave it out", n.what)
		default:
			e.unknown(f, n.what, checkKeys)
		}
	}
	return c, len(e.list) == before
}

// ParseServiceFile reads a service definition file (HCL or JSON by its
// extension) holding `service { ... }` and/or `services { ... }` blocks and
// nothing else. Errors name file:line:col.
func ParseServiceFile(path string) ([]ServiceDefinition, error) {
	src, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read service definition: %w", err)
	}
	return ParseServices(src, path)
}

// ParseServices is ParseServiceFile over content; filename picks the syntax
// (.hcl or .json) and names the file in errors.
func ParseServices(src []byte, filename string) ([]ServiceDefinition, error) {
	var e errs
	root, ok := parseFile(src, filename, &e)
	if !ok {
		return nil, e.err()
	}
	root.what = filename
	var out []ServiceDefinition
	for _, f := range root.fields(&e) {
		switch f.key {
		case "service", "services":
			nodes, _ := e.objects(f, "service")
			for _, n := range nodes {
				n.what = "service"
				if s, ok := decodeService(n, &e); ok {
					out = append(out, s)
				}
			}
		default:
			e.add(f.rng, "unknown key %q: a service definition file holds only service { } and services { } blocks", f.name)
		}
	}
	if err := e.err(); err != nil {
		return nil, err
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s: no service { } block found", filename)
	}
	if err := checkDuplicateIDs(out); err != nil {
		return nil, err
	}
	return out, nil
}

// checkDuplicateIDs refuses two services with one ID.
func checkDuplicateIDs(defs []ServiceDefinition) error {
	seen := map[string]string{}
	for _, d := range defs {
		if prev, dup := seen[d.ID]; dup {
			return fmt.Errorf("%s: service ID %q is already defined at %s", d.Source, d.ID, prev)
		}
		seen[d.ID] = d.Source
	}
	return nil
}
