package config

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/trellismesh/trellis/connect/ca"
	"github.com/trellismesh/trellis/raftstore/structs"
)

var (
	serviceConnectKeys = []string{"native", "sidecar_service"}
	sidecarKeys        = []string{"id", "name", "port", "address", "tags", "meta", "proxy"}
	proxyKeys          = []string{"destination_service_name", "destination_service_id", "local_service_address", "local_service_port", "upstreams", "config"}
	upstreamKeys       = []string{"destination_name", "local_bind_port", "local_bind_address", "datacenter"}
	caConfigKeys       = []string{"leaf_cert_ttl", "private_key", "root_cert", "private_key_type", "private_key_bits"}
)

// decodeServiceConnect decodes a service's connect { native sidecar_service { ... } }.
func decodeServiceConnect(n node, e *errs) *structs.ServiceConnect {
	c := &structs.ServiceConnect{}
	for _, f := range n.fields(e) {
		switch f.key {
		case "native":
			c.Native, _ = e.boolean(f, n.what)
		case "sidecar_service":
			o, ok := e.object(f, n.what+": sidecar_service")
			if !ok {
				continue
			}
			c.SidecarService = decodeSidecar(o, e)
		case "proxy":
			e.add(f.rng, "%s: proxy: managed proxies are gone (as in Consul); use sidecar_service { proxy { ... } }", n.what)
		default:
			e.unknown(f, n.what, serviceConnectKeys)
		}
	}
	return c
}

func decodeSidecar(n node, e *errs) *structs.SidecarService {
	sc := &structs.SidecarService{}
	for _, f := range n.fields(e) {
		switch f.key {
		case "id":
			sc.ID, _ = e.str(f, n.what)
		case "name":
			sc.Service, _ = e.str(f, n.what)
		case "port":
			sc.Port, _ = e.integer(f, n.what)
		case "address":
			sc.Address, _ = e.str(f, n.what)
		case "tags":
			sc.Tags, _ = e.strings(f, n.what)
		case "meta":
			sc.Meta, _ = e.stringMap(f, n.what)
		case "proxy":
			if o, ok := e.object(f, n.what+": proxy"); ok {
				sc.Proxy = decodeProxy(o, e)
			}
		case "check", "checks":
			e.add(f.rng, "%s: %s: a sidecar's health is its node's and its service's (the agent runs the proxy); leave the checks out", n.what, f.name)
		default:
			e.unknown(f, n.what, sidecarKeys)
		}
	}
	return sc
}

// decodeProxy decodes proxy { ... }: the configuration of a proxy service.
func decodeProxy(n node, e *errs) *structs.ConnectProxyConfig {
	p := &structs.ConnectProxyConfig{}
	for _, f := range n.fields(e) {
		switch f.key {
		case "destination_service_name":
			p.DestinationServiceName, _ = e.str(f, n.what)
		case "destination_service_id":
			p.DestinationServiceID, _ = e.str(f, n.what)
		case "local_service_address":
			p.LocalServiceAddress, _ = e.str(f, n.what)
		case "local_service_port":
			p.LocalServicePort, _ = e.integer(f, n.what)
		case "config":
			p.Config, _ = e.stringMap(f, n.what)
		case "upstreams", "upstream":
			nodes, _ := e.objects(f, n.what)
			for i, un := range nodes {
				un.what = fmt.Sprintf("%s: upstream %d", n.what, i+1)
				p.Upstreams = append(p.Upstreams, decodeUpstream(un, e))
			}
		default:
			e.unknown(f, n.what, proxyKeys)
		}
	}
	return p
}

func decodeUpstream(n node, e *errs) structs.Upstream {
	var u structs.Upstream
	for _, f := range n.fields(e) {
		switch f.key {
		case "destination_name":
			u.DestinationName, _ = e.str(f, n.what)
		case "local_bind_port":
			u.LocalBindPort, _ = e.integer(f, n.what)
		case "local_bind_address":
			u.LocalBindAddress, _ = e.str(f, n.what)
		case "datacenter":
			u.Datacenter, _ = e.str(f, n.what)
		case "destination_type", "destination_namespace", "destination_partition", "destination_peer":
			e.add(f.rng, "%s: %s: not supported (upstreams name a service of this cluster)", n.what, f.name)
		default:
			e.unknown(f, n.what, upstreamKeys)
		}
	}
	return u
}

// cloneConnect copies a service's mesh settings.
func cloneConnect(c *structs.ServiceConnect) *structs.ServiceConnect {
	if c == nil {
		return nil
	}
	svc := (&structs.NodeService{Connect: c}).Clone()
	return svc.Connect
}

func cloneProxy(p *structs.ConnectProxyConfig) *structs.ConnectProxyConfig {
	if p == nil {
		return nil
	}
	c := *p
	c.Config = maps.Clone(p.Config)
	c.Upstreams = slices.Clone(p.Upstreams)
	return &c
}

// decodeCAConfig decodes connect { ca_config { ... } }.
func decodeCAConfig(e *errs, f field, what string, c *fileConfig) {
	n, ok := e.object(f, what)
	if !ok {
		return
	}
	at := map[string]field{} // the keys of this block, for positioned checks
	for _, sf := range n.fields(e) {
		at[sf.key] = sf
		switch sf.key {
		case "leaf_cert_ttl":
			setDuration(e, sf, what, &c.CALeafCertTTL)
		case "private_key":
			setStr(e, sf, what, &c.CAPrivateKey)
		case "root_cert":
			setStr(e, sf, what, &c.CARootCert)
		case "private_key_type":
			setStr(e, sf, what, &c.CAPrivateKeyType)
		case "private_key_bits":
			setInt(e, sf, what, &c.CAPrivateKeyBits)
		case "rotation_period", "intermediate_cert_ttl", "csr_max_per_second", "csr_max_concurrent":
			e.add(sf.rng, "%s: %s: not supported by the built-in CA", what, sf.name)
		default:
			e.unknown(sf, what, caConfigKeys)
		}
	}
	// The checks buildConnect makes again on the merged configuration, made
	// here too so that the error names this file and line.
	if sf, ok := at["leaf_cert_ttl"]; ok && c.CALeafCertTTL != nil {
		if err := checkLeafTTL(*c.CALeafCertTTL); err != nil {
			e.add(sf.rng, "%s.%s", what, err)
		}
	}
	if sf, ok := at["private_key_type"]; ok && c.CAPrivateKeyType != nil {
		if err := checkKeyType(*c.CAPrivateKeyType); err != nil {
			e.add(sf.rng, "%s.%s", what, err)
		}
	}
	if sf, ok := at["private_key_bits"]; ok && c.CAPrivateKeyBits != nil {
		if err := checkKeyBits(*c.CAPrivateKeyBits); err != nil {
			e.add(sf.rng, "%s.%s", what, err)
		}
	}
	kf, hasKey := at["private_key"]
	cf, hasCert := at["root_cert"]
	if hasKey && hasCert && c.CAPrivateKey != nil && c.CARootCert != nil {
		if key, err := checkRoot(*c.CARootCert, *c.CAPrivateKey); err != nil {
			rng := cf.rng
			if key == "private_key" {
				rng = kf.rng
			}
			e.add(rng, "%s.%s", what, err)
		}
	}
}

// checkLeafTTL, checkKeyType and checkKeyBits check one ca_config key;
// their errors begin with the key's name.
func checkLeafTTL(t time.Duration) error {
	if t != 0 && (t < ca.MinLeafCertTTL || t > ca.MaxLeafCertTTL) {
		return fmt.Errorf("leaf_cert_ttl %s: must be between %s and %s", t, ca.MinLeafCertTTL, ca.MaxLeafCertTTL)
	}
	return nil
}

func checkKeyType(k string) error {
	if k != "" && k != "ec" {
		return fmt.Errorf("private_key_type %q: only \"ec\" (ECDSA P-256) is supported", k)
	}
	return nil
}

func checkKeyBits(b int) error {
	if b != 0 && b != 256 {
		return fmt.Errorf("private_key_bits %d: only 256 (ECDSA P-256) is supported", b)
	}
	return nil
}

// checkRoot loads a configured root and its key as the CA will. Its error
// begins with the key at fault (private_key or root_cert), which it also
// returns, named as this configuration names it.
func checkRoot(cert, key string) (string, error) {
	_, err := ca.LoadRoot(cert, key, time.Now())
	if err == nil {
		return "", nil
	}
	var re *ca.RootError
	if !errors.As(err, &re) {
		return "root_cert", fmt.Errorf("root_cert and private_key: %w", err)
	}
	field := "root_cert"
	if re.Field == ca.FieldPrivateKey {
		field = "private_key"
	}
	return field, fmt.Errorf("%s: %w", field, re.Err)
}

// buildConnect checks the mesh settings and puts them in rc.
func buildConnect(c *fileConfig, rc *RuntimeConfig) error {
	switch p := strings.ToLower(*c.DefaultIntentionPolicy); p {
	case "allow", "deny":
		rc.DefaultIntentionAllow = p == "allow"
	default:
		return fmt.Errorf("connect.default_intention_policy %q: want allow or deny", *c.DefaultIntentionPolicy)
	}
	switch *c.CAProvider {
	case "", structs.CAProviderBuiltin, structs.CAProviderConsul:
	default:
		return fmt.Errorf("connect.ca_provider %q: only the built-in CA (%q, or %q) is supported", *c.CAProvider, structs.CAProviderBuiltin, structs.CAProviderConsul)
	}
	rc.ConnectCA = structs.CAConfig{
		LeafCertTTL: *c.CALeafCertTTL, PrivateKey: *c.CAPrivateKey, RootCert: *c.CARootCert,
		PrivateKeyType: *c.CAPrivateKeyType, PrivateKeyBits: *c.CAPrivateKeyBits,
	}
	if err := checkLeafTTL(rc.ConnectCA.LeafCertTTL); err != nil {
		return fmt.Errorf("connect.ca_config.%w", err)
	}
	if err := checkKeyType(rc.ConnectCA.PrivateKeyType); err != nil {
		return fmt.Errorf("connect.ca_config.%w", err)
	}
	if err := checkKeyBits(rc.ConnectCA.PrivateKeyBits); err != nil {
		return fmt.Errorf("connect.ca_config.%w", err)
	}
	if (rc.ConnectCA.PrivateKey == "") != (rc.ConnectCA.RootCert == "") {
		return errors.New("connect.ca_config: private_key and root_cert go together: give both or neither")
	}
	if rc.ConnectCA.RootCert != "" {
		if _, err := checkRoot(rc.ConnectCA.RootCert, rc.ConnectCA.PrivateKey); err != nil {
			return fmt.Errorf("connect.ca_config.%w", err)
		}
	}
	rc.SidecarMinPort, rc.SidecarMaxPort = *c.SidecarMinPort, *c.SidecarMaxPort
	if rc.SidecarMinPort < 1 || rc.SidecarMaxPort > 65535 || rc.SidecarMinPort > rc.SidecarMaxPort {
		return fmt.Errorf("ports.sidecar_min_port %d and sidecar_max_port %d: want 1 <= min <= max <= 65535", rc.SidecarMinPort, rc.SidecarMaxPort)
	}
	if !rc.ConnectEnabled {
		for _, s := range rc.Services {
			if s.Connect != nil && s.Connect.SidecarService != nil {
				return fmt.Errorf("%s: service %q asks for a sidecar, but connect is disabled (connect { enabled = false })", s.Source, s.Name)
			}
		}
	}
	return nil
}

// ProxyConfig is the proxy configuration of a service definition (for the
// CLI, which turns definitions into API registrations).
type ProxyConfig = structs.ConnectProxyConfig
