package httpapi

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strconv"
	"strings"

	"github.com/trellismesh/trellis/connect/configentry"
	"github.com/trellismesh/trellis/raftstore/structs"
)

// Config entries: /v1/config and /v1/discovery-chain, in Consul's shapes.
//
// Trellis additions to PUT /v1/config: the body may be HCL (Content-Type
// application/hcl, or ?format=hcl), and ?filename= names the file the body
// came from, so that errors name filename:line:col. ?format=json with a
// filename decodes JSON with positions too. The CLI's config write uses
// both; Consul's clients send neither.

// casParam reads ?cas=N: whether it was given, and N.
func casParam(r *http.Request) (bool, uint64, error) {
	q := r.URL.Query()
	if !q.Has("cas") {
		return false, 0, nil
	}
	n, err := strconv.ParseUint(q.Get("cas"), 10, 64)
	if err != nil {
		return false, 0, badRequest("invalid cas %q: want the ModifyIndex of the entry (0: it must not exist yet)", q.Get("cas"))
	}
	return true, n, nil
}

// kindParam reads the {kind} of the path; an unknown kind is a 400 naming it.
func kindParam(r *http.Request) (string, error) {
	kind := r.PathValue("kind")
	if !configentry.ValidKind(kind) {
		return "", structs.Invalid("Kind", "unknown kind %q (want one of %s)", kind, strings.Join(configentry.Kinds, ", "))
	}
	return kind, nil
}

// consulEmptyFields are fields Consul's Go client always sends, as empty
// objects, for features Trellis does not have (its MeshGatewayConfig and
// ExposeConfig are struct values). Empty, they say nothing and are dropped;
// set, the decoder refuses them by name.
var consulEmptyFields = map[string]bool{"MeshGateway": true, "Expose": true}

// dropConsulEmpty removes consulEmptyFields holding {} (or objects of
// empty values) at any depth of v, and reports whether it removed any.
func dropConsulEmpty(v any) bool {
	dropped := false
	switch t := v.(type) {
	case map[string]any:
		for k, sub := range t {
			if consulEmptyFields[k] && isEmptyJSON(sub) {
				delete(t, k)
				dropped = true
				continue
			}
			if dropConsulEmpty(sub) {
				dropped = true
			}
		}
	case []any:
		for _, sub := range t {
			if dropConsulEmpty(sub) {
				dropped = true
			}
		}
	}
	return dropped
}

func isEmptyJSON(v any) bool {
	switch t := v.(type) {
	case nil:
		return true
	case string:
		return t == ""
	case bool:
		return !t
	case []any:
		return len(t) == 0
	case map[string]any:
		for _, sub := range t {
			if !isEmptyJSON(sub) {
				return false
			}
		}
		return true
	}
	return false
}

// decodeEntry reads the entry of a PUT /v1/config body, with where its
// fields were written (nil for a body in Consul's JSON shape, which names no
// file).
func decodeEntry(r *http.Request) (configentry.Entry, *configentry.Positions, error) {
	src, err := io.ReadAll(r.Body)
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return nil, nil, err
		}
		return nil, nil, badRequest("read the request body: %v", err)
	}
	if strings.TrimSpace(string(src)) == "" {
		return nil, nil, badRequest("request body is empty: a config entry is expected")
	}
	q := r.URL.Query()
	filename, format := q.Get("filename"), strings.ToLower(q.Get("format"))
	if ct := r.Header.Get("Content-Type"); ct != "" && format == "" {
		if mt, _, err := mime.ParseMediaType(ct); err == nil && (mt == "application/hcl" || mt == "text/hcl") {
			format = "hcl"
		}
	}
	var e configentry.Entry
	var at *configentry.Positions
	switch format {
	case "hcl":
		e, at, err = configentry.DecodeWithPositions(src, filename, true)
	case "json", "":
		if filename == "" && format == "" {
			// Consul's shape: a JSON body from a Consul client.
			var raw any
			if json.Unmarshal(src, &raw) == nil && dropConsulEmpty(raw) {
				if b, merr := json.Marshal(raw); merr == nil {
					src = b
				}
			}
			e, err = configentry.DecodeJSON(src)
			break
		}
		e, at, err = configentry.DecodeWithPositions(src, filename, false)
	default:
		return nil, nil, badRequest("invalid format %q: want json or hcl", format)
	}
	if err != nil {
		return nil, nil, badRequest("%v", err)
	}
	return e, at, nil
}

func (s *Server) configApply(w http.ResponseWriter, r *http.Request) (any, error) {
	cas, index, err := casParam(r)
	if err != nil {
		return nil, err
	}
	e, at, err := decodeEntry(r)
	if err != nil {
		return nil, err
	}
	req := &structs.ConfigEntryRequest{
		Datacenter: r.URL.Query().Get("dc"), Op: structs.ConfigEntryOpUpsert,
		Entry: configentry.Envelope{Entry: e}, CAS: cas, Index: index,
	}
	var reply structs.ConfigEntryApplyReply
	if err := s.rpc(r.Context(), structs.MethodConfigEntryApply, req, &reply); err != nil {
		// The servers name the field; the source says where it is.
		var ve *structs.ValidationError
		if errors.As(err, &ve) {
			if where := at.Prefix(ve.Field); where != "" {
				return nil, badRequest("%s: %v", where, err)
			}
			if f := r.URL.Query().Get("filename"); f != "" {
				return nil, badRequest("%s: %v", f, err)
			}
		}
		return nil, err
	}
	return reply.Applied, nil
}

func (s *Server) configList(w http.ResponseWriter, r *http.Request) (any, error) {
	kind, err := kindParam(r)
	if err != nil {
		return nil, err
	}
	req := &structs.ConfigEntryQuery{Kind: kind}
	if err := parseQuery(r, &req.Datacenter, &req.QueryOptions); err != nil {
		return nil, err
	}
	var reply structs.IndexedConfigEntries
	if err := s.rpc(r.Context(), structs.MethodConfigEntryList, req, &reply); err != nil {
		return nil, err
	}
	setMeta(w, &reply.QueryMeta)
	if reply.Entries == nil {
		reply.Entries = []configentry.Envelope{}
	}
	return reply.Entries, nil
}

func (s *Server) configEntry(w http.ResponseWriter, r *http.Request) (any, error) {
	kind, err := kindParam(r)
	if err != nil {
		return nil, err
	}
	name := r.PathValue("name")
	if name == "" {
		return nil, structs.Invalid("Name", "required")
	}
	if r.Method == http.MethodDelete {
		return s.configDelete(r, kind, name)
	}
	req := &structs.ConfigEntryQuery{Kind: kind, Name: name}
	if err := parseQuery(r, &req.Datacenter, &req.QueryOptions); err != nil {
		return nil, err
	}
	var reply structs.ConfigEntryResponse
	if err := s.rpc(r.Context(), structs.MethodConfigEntryGet, req, &reply); err != nil {
		return nil, err
	}
	setMeta(w, &reply.QueryMeta)
	if reply.Entry == nil || reply.Entry.Entry == nil {
		return nil, &statusError{code: http.StatusNotFound, msg: fmt.Sprintf("Config entry not found for %q / %q", kind, name)}
	}
	return reply.Entry, nil
}

func (s *Server) configDelete(r *http.Request, kind, name string) (any, error) {
	cas, index, err := casParam(r)
	if err != nil {
		return nil, err
	}
	stub, err := configentry.New(kind)
	if err != nil {
		return nil, structs.Invalid("Kind", "%v", err)
	}
	b, err := json.Marshal(struct{ Kind, Name string }{kind, name})
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(b, stub); err != nil {
		return nil, fmt.Errorf("name the entry %s/%s: %w", kind, name, err)
	}
	req := &structs.ConfigEntryRequest{
		Datacenter: r.URL.Query().Get("dc"), Op: structs.ConfigEntryOpDelete,
		Entry: configentry.Envelope{Entry: stub}, CAS: cas, Index: index,
	}
	var reply structs.ConfigEntryApplyReply
	if err := s.rpc(r.Context(), structs.MethodConfigEntryDelete, req, &reply); err != nil {
		return nil, err
	}
	if cas {
		return struct{ Deleted bool }{reply.Applied}, nil
	}
	// As Consul: the Deleted flag only for a CAS delete.
	return struct{}{}, nil
}

// discoveryChainOptions is the body of POST /v1/discovery-chain, in
// Consul's shape. Trellis compiles chains only as they are: overrides are
// refused.
type discoveryChainOptions struct {
	OverrideMeshGateway    json.RawMessage
	OverrideProtocol       string
	OverrideConnectTimeout json.RawMessage
}

func (s *Server) discoveryChain(w http.ResponseWriter, r *http.Request) (any, error) {
	if r.Method == http.MethodPost {
		var opts discoveryChainOptions
		if err := decodeBody(r, &opts, true); err != nil {
			return nil, err
		}
		switch {
		case opts.OverrideProtocol != "":
			return nil, structs.Invalid("OverrideProtocol", "overrides are not supported: set the protocol with a service-defaults entry")
		case len(opts.OverrideConnectTimeout) > 0 && string(opts.OverrideConnectTimeout) != "0" && string(opts.OverrideConnectTimeout) != `""` && string(opts.OverrideConnectTimeout) != "null":
			return nil, structs.Invalid("OverrideConnectTimeout", "overrides are not supported: set it with a service-resolver entry")
		case len(opts.OverrideMeshGateway) > 0 && !emptyRawObject(opts.OverrideMeshGateway):
			return nil, structs.Invalid("OverrideMeshGateway", "mesh gateways are not supported")
		}
	}
	req := &structs.DiscoveryChainRequest{Name: r.PathValue("service")}
	if err := parseQuery(r, &req.Datacenter, &req.QueryOptions); err != nil {
		return nil, err
	}
	if dc := r.URL.Query().Get("compile-dc"); dc != "" {
		req.Datacenter = dc
	}
	var reply structs.DiscoveryChainResponse
	if err := s.rpc(r.Context(), structs.MethodDiscoveryChainGet, req, &reply); err != nil {
		return nil, err
	}
	setMeta(w, &reply.QueryMeta)
	return struct{ Chain any }{reply.Chain}, nil
}

func emptyRawObject(b json.RawMessage) bool {
	var v any
	return json.Unmarshal(b, &v) == nil && isEmptyJSON(v)
}
