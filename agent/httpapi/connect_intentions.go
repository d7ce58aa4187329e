package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strings"

	"github.com/trellismesh/trellis/api"
	"github.com/trellismesh/trellis/connect"
	"github.com/trellismesh/trellis/connect/intentions"
	"github.com/trellismesh/trellis/raftstore/structs"
)

// Intentions: /v1/connect/intentions/...

func toAPIIntention(i *connect.Intention) *api.Intention {
	return &api.Intention{
		ID: i.ID, Description: i.Description,
		SourceNS: connect.DefaultNamespace, SourceName: i.SourceName,
		DestinationNS: connect.DefaultNamespace, DestinationName: i.DestinationName,
		SourceType: api.IntentionSourceConsul, Action: i.Action, Meta: maps.Clone(i.Meta),
		Precedence: i.Precedence, CreatedAt: i.CreatedAt, UpdatedAt: i.UpdatedAt,
		CreateIndex: i.CreateIndex, ModifyIndex: i.ModifyIndex,
		Permissions: toAPIPermissions(i.Permissions),
	}
}

// toAPIPermissions copies L7 permissions into the API's types.
func toAPIPermissions(list []*connect.IntentionPermission) []*api.IntentionPermission {
	if len(list) == 0 {
		return nil
	}
	out := make([]*api.IntentionPermission, len(list))
	for k, p := range list {
		ap := &api.IntentionPermission{Action: p.Action}
		if h := p.HTTP; h != nil {
			ap.HTTP = &api.IntentionHTTPPermission{PathExact: h.PathExact, PathPrefix: h.PathPrefix, PathRegex: h.PathRegex, Methods: slices.Clone(h.Methods)}
			for _, hp := range h.Header {
				ap.HTTP.Header = append(ap.HTTP.Header, api.IntentionHTTPHeaderPermission(hp))
			}
		}
		out[k] = ap
	}
	return out
}

func toAPIIntentions(list []*connect.Intention) []*api.Intention {
	sorted := append([]*connect.Intention(nil), list...)
	intentions.Sort(sorted)
	out := make([]*api.Intention, 0, len(sorted))
	for _, i := range sorted {
		out = append(out, toAPIIntention(i))
	}
	return out
}

// asValidation turns a *connect.FieldError (from Intention.Validate, here or
// in the RPC) into the *structs.ValidationError the wrapper answers with 400.
func asValidation(err error) error {
	var fe *connect.FieldError
	if errors.As(err, &fe) {
		return structs.Invalid(fe.Field, "%s", fe.Reason)
	}
	return err
}

// fieldToBadRequest is asValidation for checks that may pass (nil stays nil).
func fieldToBadRequest(err error) error {
	if err == nil {
		return nil
	}
	return asValidation(err)
}

// rpc calls the agent's RPC and keeps field errors 400s.
func (s *Server) rpc(ctx context.Context, method string, args, reply any) error {
	return asValidation(s.agent.RPC(ctx, method, args, reply))
}

// parseIntentionName checks a source or destination name: a service name
// or *, optionally written with the default namespace ("default/web").
// field names it in errors.
func parseIntentionName(field, v string) (string, error) {
	name := v
	if ns, n, ok := strings.Cut(v, "/"); ok {
		if ns != connect.DefaultNamespace {
			return "", structs.Invalid(field, "%q: namespace %q is not supported (only %q)", v, ns, connect.DefaultNamespace)
		}
		name = n
	}
	if err := connect.ValidateServiceName(field, name); err != nil {
		return "", asValidation(err)
	}
	return name, nil
}

// nameParam reads a required, single-valued name parameter.
func nameParam(q url.Values, param string) (string, error) {
	vals := q[param]
	switch {
	case len(vals) == 0 || vals[0] == "":
		return "", structs.Invalid(param, "required: ?%s= a service name or *", param)
	case len(vals) > 1:
		return "", structs.Invalid(param, "given %d times; give it once", len(vals))
	}
	return parseIntentionName(param, vals[0])
}

// exactParams reads ?source= and ?destination=.
func exactParams(r *http.Request) (src, dst string, err error) {
	q := r.URL.Query()
	if src, err = nameParam(q, "source"); err != nil {
		return "", "", err
	}
	if dst, err = nameParam(q, "destination"); err != nil {
		return "", "", err
	}
	return src, dst, nil
}

// intentionBody is the body of the intention writes, in the shape
// Consul's clients send (they send back the read-only fields too, which are
// ignored).
type intentionBody struct {
	ID                   string
	Description          string
	SourceNS             string
	SourceName           string
	DestinationNS        string
	DestinationName      string
	SourcePartition      string
	DestinationPartition string
	SourcePeer           string
	SourceSamenessGroup  string
	SourceType           string
	Action               string
	Meta                 map[string]string
	Permissions          []json.RawMessage
}

// toIntention checks what Trellis does not support and returns the
// intention the body describes, validated.
func (b *intentionBody) toIntention() (*connect.Intention, error) {
	for _, f := range []struct{ name, v string }{{"SourceNS", b.SourceNS}, {"DestinationNS", b.DestinationNS}} {
		if f.v != "" && f.v != connect.DefaultNamespace {
			return nil, structs.Invalid(f.name, "namespace %q is not supported (only %q)", f.v, connect.DefaultNamespace)
		}
	}
	for _, f := range []struct{ name, v string }{{"SourcePartition", b.SourcePartition}, {"DestinationPartition", b.DestinationPartition}} {
		if f.v != "" && f.v != "default" {
			return nil, structs.Invalid(f.name, "admin partitions are not supported (got %q)", f.v)
		}
	}
	if b.SourcePeer != "" {
		return nil, structs.Invalid("SourcePeer", "cluster peering is not supported")
	}
	if b.SourceSamenessGroup != "" {
		return nil, structs.Invalid("SourceSamenessGroup", "sameness groups are not supported")
	}
	if b.SourceType != "" && b.SourceType != api.IntentionSourceConsul {
		return nil, structs.Invalid("SourceType", "%q is not supported (only %q, a service of the mesh)", b.SourceType, api.IntentionSourceConsul)
	}
	if len(b.Permissions) > 0 {
		return nil, structs.Invalid("Permissions", "L7 permissions are written in a service-intentions config entry (trellis config write); this endpoint takes an Action")
	}
	ixn := &connect.Intention{
		ID: b.ID, SourceName: b.SourceName, DestinationName: b.DestinationName,
		Action: b.Action, Description: b.Description, Meta: b.Meta,
	}
	if err := ixn.Validate(); err != nil {
		return nil, asValidation(err)
	}
	return ixn, nil
}

func (s *Server) connectIntentions(w http.ResponseWriter, r *http.Request) (any, error) {
	if r.Method == http.MethodPost {
		return s.connectIntentionCreate(w, r)
	}
	var req structs.DCSpecificRequest
	if err := parseQuery(r, &req.Datacenter, &req.QueryOptions); err != nil {
		return nil, err
	}
	var reply structs.IndexedIntentions
	if err := s.rpc(r.Context(), structs.MethodIntentionList, &req, &reply); err != nil {
		return nil, err
	}
	setMeta(w, &reply.QueryMeta)
	return applyFilter(r, toAPIIntentions(reply.Intentions))
}

func (s *Server) connectIntentionCreate(w http.ResponseWriter, r *http.Request) (any, error) {
	var body intentionBody
	if err := decodeBody(r, &body, false); err != nil {
		return nil, err
	}
	if body.ID != "" {
		return nil, structs.Invalid("ID", "must be empty: an intention's ID is assigned when it is created")
	}
	ixn, err := body.toIntention()
	if err != nil {
		return nil, err
	}
	dc := r.URL.Query().Get("dc")
	// The ID is chosen here, so that the servers may send the create again
	// when its reply is lost (see raftstore.MayResend).
	req := &structs.IntentionRequest{Datacenter: dc, Op: structs.IntentionOpCreate, Intention: ixn, CreateID: structs.NewUUID()}
	var reply structs.IntentionApplyReply
	// An intention of the same pair is a structs.ErrConflict: a 409.
	if err := s.rpc(r.Context(), structs.MethodIntentionApply, req, &reply); err != nil {
		return nil, err
	}
	return struct{ ID string }{reply.ID}, nil
}

// exactIntention reads the intention of a pair; nil when there is none.
func (s *Server) exactIntention(ctx context.Context, dc, src, dst string, opts structs.QueryOptions) (*connect.Intention, *structs.QueryMeta, error) {
	req := &structs.IntentionQueryRequest{Datacenter: dc, SourceName: src, DestinationName: dst, QueryOptions: opts}
	var reply structs.IndexedIntentions
	err := s.rpc(ctx, structs.MethodIntentionGet, req, &reply)
	if errors.Is(err, structs.ErrNotFound) {
		return nil, &reply.QueryMeta, nil
	}
	if err != nil {
		return nil, nil, err
	}
	if len(reply.Intentions) == 0 {
		return nil, &reply.QueryMeta, nil
	}
	return reply.Intentions[0], &reply.QueryMeta, nil
}

func (s *Server) connectIntentionExact(w http.ResponseWriter, r *http.Request) (any, error) {
	src, dst, err := exactParams(r)
	if err != nil {
		return nil, err
	}
	dc := r.URL.Query().Get("dc")
	switch r.Method {
	case http.MethodPut:
		var body intentionBody
		if err := decodeBody(r, &body, false); err != nil {
			return nil, err
		}
		if body.ID != "" {
			return nil, structs.Invalid("ID", "must be empty: the intention is named by ?source and ?destination")
		}
		// Consul's client repeats the names in the body; they must agree.
		if body.SourceName != "" && body.SourceName != src {
			return nil, structs.Invalid("SourceName", "%q differs from ?source=%s", body.SourceName, src)
		}
		if body.DestinationName != "" && body.DestinationName != dst {
			return nil, structs.Invalid("DestinationName", "%q differs from ?destination=%s", body.DestinationName, dst)
		}
		body.SourceName, body.DestinationName = src, dst
		ixn, err := body.toIntention()
		if err != nil {
			return nil, err
		}
		req := &structs.IntentionRequest{Datacenter: dc, Op: structs.IntentionOpUpsert, Intention: ixn}
		if err := s.rpc(r.Context(), structs.MethodIntentionApply, req, &structs.IntentionApplyReply{}); err != nil {
			return nil, err
		}
		return true, nil
	case http.MethodDelete:
		req := &structs.IntentionRequest{Datacenter: dc, Op: structs.IntentionOpDelete,
			Intention: &connect.Intention{SourceName: src, DestinationName: dst}}
		if err := s.rpc(r.Context(), structs.MethodIntentionApply, req, &structs.IntentionApplyReply{}); err != nil {
			return nil, err
		}
		return true, nil
	}
	var opts structs.QueryOptions
	if err := parseQuery(r, &dc, &opts); err != nil {
		return nil, err
	}
	ixn, meta, err := s.exactIntention(r.Context(), dc, src, dst, opts)
	if err != nil {
		return nil, err
	}
	setMeta(w, meta)
	if ixn == nil {
		return nil, &statusError{code: http.StatusNotFound, msg: fmt.Sprintf("no intention %s => %s", src, dst)}
	}
	return toAPIIntention(ixn), nil
}

func (s *Server) connectIntentionByID(w http.ResponseWriter, r *http.Request) (any, error) {
	id := r.PathValue("id")
	if id == "" || len(id) > 128 {
		return nil, badRequest("invalid intention ID %q", id)
	}
	dc := r.URL.Query().Get("dc")
	switch r.Method {
	case http.MethodPut:
		var body intentionBody
		if err := decodeBody(r, &body, false); err != nil {
			return nil, err
		}
		if body.ID != "" && body.ID != id {
			return nil, structs.Invalid("ID", "%q differs from the ID in the path, %q", body.ID, id)
		}
		body.ID = id
		ixn, err := body.toIntention()
		if err != nil {
			return nil, err
		}
		req := &structs.IntentionRequest{Datacenter: dc, Op: structs.IntentionOpUpdate, Intention: ixn}
		if err := s.rpc(r.Context(), structs.MethodIntentionApply, req, &structs.IntentionApplyReply{}); err != nil {
			return nil, err
		}
		return true, nil
	case http.MethodDelete:
		req := &structs.IntentionRequest{Datacenter: dc, Op: structs.IntentionOpDelete, Intention: &connect.Intention{ID: id}}
		if err := s.rpc(r.Context(), structs.MethodIntentionApply, req, &structs.IntentionApplyReply{}); err != nil {
			return nil, err
		}
		return true, nil
	}
	req := &structs.IntentionQueryRequest{IntentionID: id}
	if err := parseQuery(r, &req.Datacenter, &req.QueryOptions); err != nil {
		return nil, err
	}
	var reply structs.IndexedIntentions
	err := s.rpc(r.Context(), structs.MethodIntentionGet, req, &reply)
	if err != nil && !errors.Is(err, structs.ErrNotFound) {
		return nil, err
	}
	setMeta(w, &reply.QueryMeta)
	if err != nil || len(reply.Intentions) == 0 {
		return nil, &statusError{code: http.StatusNotFound, msg: "no intention with ID " + id}
	}
	return toAPIIntention(reply.Intentions[0]), nil
}

func (s *Server) connectIntentionMatch(w http.ResponseWriter, r *http.Request) (any, error) {
	q := r.URL.Query()
	req := &structs.IntentionMatchRequest{By: q.Get("by")}
	switch req.By {
	case api.IntentionMatchSource, api.IntentionMatchDestination:
	case "":
		return nil, structs.Invalid("by", "required: ?by=source or ?by=destination")
	default:
		return nil, structs.Invalid("by", "%q: want source or destination", req.By)
	}
	given := q["name"]
	if len(given) == 0 {
		return nil, structs.Invalid("name", "required: ?name= a service name (may repeat)")
	}
	for _, n := range given {
		if n == "" {
			return nil, structs.Invalid("name", "required: ?name= a service name (may repeat)")
		}
		name, err := parseIntentionName("name", n)
		if err != nil {
			return nil, err
		}
		req.Names = append(req.Names, name)
	}
	if err := parseQuery(r, &req.Datacenter, &req.QueryOptions); err != nil {
		return nil, err
	}
	var reply structs.IndexedIntentionMatches
	if err := s.rpc(r.Context(), structs.MethodIntentionMatch, req, &reply); err != nil {
		return nil, err
	}
	if len(reply.Matches) != len(req.Names) {
		return nil, fmt.Errorf("intention match answered %d lists for %d names", len(reply.Matches), len(req.Names))
	}
	setMeta(w, &reply.QueryMeta)
	// Keyed by the names as given, as Consul does.
	out := make(map[string][]*api.Intention, len(given))
	for i, n := range given {
		out[n] = toAPIIntentions(reply.Matches[i])
	}
	return out, nil
}

func (s *Server) connectIntentionCheck(w http.ResponseWriter, r *http.Request) (any, error) {
	src, dst, err := exactParams(r)
	if err != nil {
		return nil, err
	}
	if st := r.URL.Query().Get("source-type"); st != "" && st != api.IntentionSourceConsul {
		return nil, structs.Invalid("source-type", "%q is not supported (only %q)", st, api.IntentionSourceConsul)
	}
	req := &structs.IntentionMatchRequest{By: api.IntentionMatchDestination, Names: []string{dst}}
	if err := parseQuery(r, &req.Datacenter, &req.QueryOptions); err != nil {
		return nil, err
	}
	var reply structs.IndexedIntentionMatches
	if err := s.rpc(r.Context(), structs.MethodIntentionMatch, req, &reply); err != nil {
		return nil, err
	}
	if len(reply.Matches) != 1 {
		return nil, fmt.Errorf("intention match answered %d lists for 1 name", len(reply.Matches))
	}
	setMeta(w, &reply.QueryMeta)
	dec := intentions.NewSet(reply.Matches[0]).Decide(src, dst, s.agent.DefaultIntentionAllow())
	return struct{ Allowed bool }{dec.Allowed}, nil
}
