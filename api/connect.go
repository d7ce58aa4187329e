package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"
)

// Connect returns the client of the mesh endpoints: the certificate
// authority and intentions.
func (c *Client) Connect() *Connect { return &Connect{c: c} }

// Connect is the client of /v1/connect.
type Connect struct{ c *Client }

// CARoots returns the roots of the mesh's CA. It blocks with q.WaitIndex.
func (h *Connect) CARoots(q *QueryOptions) (*CARootList, *QueryMeta, error) {
	var out CARootList
	meta, err := h.c.query("/v1/connect/ca/roots", &out, q, nil)
	if err != nil {
		return nil, nil, err
	}
	return &out, meta, nil
}

// IssuedLeaf is a leaf certificate a node holds, as the leader recorded it
// when it signed it (GET /v1/connect/ca/leaves, a Trellis path).
type IssuedLeaf struct {
	Node         string
	Service      string
	SerialNumber string
	RootID       string
	ValidBefore  time.Time
	CreateIndex  uint64
	ModifyIndex  uint64
}

// CALeaves returns the leaves every node holds, soonest to expire first.
// It blocks with q.WaitIndex; q.Filter selects.
func (h *Connect) CALeaves(q *QueryOptions) ([]IssuedLeaf, *QueryMeta, error) {
	var out []IssuedLeaf
	meta, err := h.c.query("/v1/connect/ca/leaves", &out, q, nil)
	return out, meta, err
}

// CAGetConfig returns the CA's configuration (never its private key).
func (h *Connect) CAGetConfig(q *QueryOptions) (*CAConfig, *QueryMeta, error) {
	var out CAConfig
	meta, err := h.c.query("/v1/connect/ca/configuration", &out, q, nil)
	if err != nil {
		return nil, nil, err
	}
	return &out, meta, nil
}

// CASetConfig changes the CA's configuration: the keys of conf.Config
// replace the current values; a new RootCert and PrivateKey make a new
// active root, cross-signed by the current one.
func (h *Connect) CASetConfig(conf *CAConfig, w *WriteOptions) (*WriteMeta, error) {
	return h.c.write("/v1/connect/ca/configuration", conf, nil, w, nil)
}

// CARotate makes a new generated root, cross-signed by the current one,
// and returns the roots with the new one active. The previous root stays
// trusted until the leaves it signed have been replaced.
func (h *Connect) CARotate(w *WriteOptions) (*CARootList, *WriteMeta, error) {
	var out CARootList
	meta, err := h.c.send(http.MethodPost, "/v1/connect/ca/rotate", nil, &out, w, nil)
	if err != nil {
		return nil, nil, err
	}
	return &out, meta, nil
}

// Intentions returns every intention in precedence order (q.Filter filters
// them). It blocks with q.WaitIndex.
func (h *Connect) Intentions(q *QueryOptions) ([]*Intention, *QueryMeta, error) {
	var out []*Intention
	meta, err := h.c.query("/v1/connect/intentions", &out, q, nil)
	return out, meta, err
}

// IntentionCreate creates an intention and returns its ID. It fails (409)
// when an intention of the same source and destination exists; use
// IntentionUpsert to replace one.
func (h *Connect) IntentionCreate(ixn *Intention, w *WriteOptions) (string, *WriteMeta, error) {
	var out struct{ ID string }
	meta, err := h.c.send(http.MethodPost, "/v1/connect/intentions", ixn, &out, w, nil)
	if err != nil {
		return "", nil, err
	}
	return out.ID, meta, nil
}

// IntentionUpsert creates the intention of ixn's source and destination, or
// replaces it. ixn.ID must be empty.
func (h *Connect) IntentionUpsert(ixn *Intention, w *WriteOptions) (*WriteMeta, error) {
	return h.c.send(http.MethodPut, "/v1/connect/intentions/exact", ixn, nil, w, exactParams(ixn.SourceName, ixn.DestinationName))
}

// IntentionGetExact returns the intention of source and destination, or nil
// when there is none.
func (h *Connect) IntentionGetExact(source, destination string, q *QueryOptions) (*Intention, *QueryMeta, error) {
	return h.getIntention("/v1/connect/intentions/exact", q, exactParams(source, destination))
}

// IntentionDeleteExact deletes the intention of source and destination.
func (h *Connect) IntentionDeleteExact(source, destination string, w *WriteOptions) (*WriteMeta, error) {
	return h.c.send(http.MethodDelete, "/v1/connect/intentions/exact", nil, nil, w, exactParams(source, destination))
}

// IntentionGet returns the intention with an ID, or nil when there is none.
func (h *Connect) IntentionGet(id string, q *QueryOptions) (*Intention, *QueryMeta, error) {
	if id == "" {
		return nil, nil, errors.New("intention ID is empty")
	}
	return h.getIntention("/v1/connect/intentions/"+url.PathEscape(id), q, nil)
}

// IntentionUpdate replaces the intention with ixn.ID.
func (h *Connect) IntentionUpdate(ixn *Intention, w *WriteOptions) (*WriteMeta, error) {
	if ixn.ID == "" {
		return nil, errors.New("intention ID is empty")
	}
	return h.c.send(http.MethodPut, "/v1/connect/intentions/"+url.PathEscape(ixn.ID), ixn, nil, w, nil)
}

// IntentionDelete deletes the intention with an ID.
func (h *Connect) IntentionDelete(id string, w *WriteOptions) (*WriteMeta, error) {
	if id == "" {
		return nil, errors.New("intention ID is empty")
	}
	return h.c.send(http.MethodDelete, "/v1/connect/intentions/"+url.PathEscape(id), nil, nil, w, nil)
}

// IntentionMatch returns, for each name, the intentions that apply to it
// (by source or by destination), in precedence order: the first that
// matches a connection decides it.
func (h *Connect) IntentionMatch(args *IntentionMatch, q *QueryOptions) (map[string][]*Intention, *QueryMeta, error) {
	var out map[string][]*Intention
	meta, err := h.c.query("/v1/connect/intentions/match", &out, q, url.Values{"by": {args.By}, "name": args.Names})
	return out, meta, err
}

// IntentionCheck reports whether args.Source may connect to
// args.Destination under the current intentions and the agent's default
// policy.
func (h *Connect) IntentionCheck(args *IntentionCheck, q *QueryOptions) (bool, *QueryMeta, error) {
	var out struct{ Allowed bool }
	meta, err := h.c.query("/v1/connect/intentions/check", &out, q, exactParams(args.Source, args.Destination))
	if err != nil {
		return false, nil, err
	}
	return out.Allowed, meta, nil
}

func exactParams(source, destination string) url.Values {
	return url.Values{"source": {source}, "destination": {destination}}
}

// getIntention reads one intention; a 404 is nil without an error.
func (h *Connect) getIntention(path string, q *QueryOptions, extra url.Values) (*Intention, *QueryMeta, error) {
	var out Intention
	meta, err := h.c.query(path, &out, q, extra)
	var se *StatusError
	if errors.As(err, &se) && se.Code == http.StatusNotFound {
		return nil, &QueryMeta{}, nil
	}
	if err != nil {
		return nil, nil, err
	}
	return &out, meta, nil
}

// ConnectCARoots returns the roots as this agent holds them. It blocks with
// q.WaitIndex.
func (a *Agent) ConnectCARoots(q *QueryOptions) (*CARootList, *QueryMeta, error) {
	var out CARootList
	meta, err := a.c.query("/v1/agent/connect/ca/roots", &out, q, nil)
	if err != nil {
		return nil, nil, err
	}
	return &out, meta, nil
}

// ConnectCALeaf returns this agent's leaf certificate of a service, with its
// private key; the agent signs one first if it has none. With q.WaitIndex it
// blocks until a newer leaf replaces the one of that index.
func (a *Agent) ConnectCALeaf(service string, q *QueryOptions) (*LeafCert, *QueryMeta, error) {
	if service == "" {
		return nil, nil, errors.New("service name is empty")
	}
	var out LeafCert
	meta, err := a.c.query("/v1/agent/connect/ca/leaf/"+url.PathEscape(service), &out, q, nil)
	if err != nil {
		return nil, nil, err
	}
	return &out, meta, nil
}

// ConnectAuthorize asks the agent whether a client with a certificate may
// connect to a target service.
func (a *Agent) ConnectAuthorize(params *AgentAuthorizeParams) (*AgentAuthorize, error) {
	var out AgentAuthorize
	if _, err := a.c.send(http.MethodPost, "/v1/agent/connect/authorize", params, &out, nil, nil); err != nil {
		return nil, err
	}
	return &out, nil
}

// send runs a write with any method: body (may be nil) is sent as JSON and
// the answer decoded into out (may be nil).
func (c *Client) send(method, path string, body, out any, w *WriteOptions, extra url.Values) (*WriteMeta, error) {
	r := c.newRequest(method, path)
	r.setWrite(w)
	if body != nil {
		r.body = body
	}
	for k, vs := range extra {
		for _, v := range vs {
			r.params.Add(k, v)
		}
	}
	resp, rtt, err := c.do(r)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if out != nil {
		if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
			return nil, fmt.Errorf("decode answer of %s: %w", path, err)
		}
	} else {
		_, _ = io.Copy(io.Discard, resp.Body)
	}
	return &WriteMeta{RequestTime: rtt}, nil
}
