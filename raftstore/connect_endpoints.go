package raftstore

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/go-memdb"

	"github.com/trellismesh/trellis/connect"
	"github.com/trellismesh/trellis/connect/ca"
	"github.com/trellismesh/trellis/raftstore/state"
	"github.com/trellismesh/trellis/raftstore/structs"
)

// ErrCANotReady means the leader has not initialised the CA yet (it does so
// right after an election); retry shortly.
var ErrCANotReady = errors.New("the CA is not initialised yet")

// errConnectDisabled answers mesh requests when connect is off.
var errConnectDisabled = structs.Invalid("", "the mesh is disabled on the servers (connect { enabled = false })")

// --- CA reads ---

func (s *Server) caRoots(ctx context.Context, req *structs.DCSpecificRequest, reply *structs.IndexedCARoots) error {
	return s.read(ctx, req.Datacenter, &req.QueryOptions, &reply.QueryMeta, func(ws memdb.WatchSet, st *state.Store) (uint64, error) {
		idx, roots, err := st.CARoots(ws)
		if err != nil {
			return 0, err
		}
		_, cfg, err := st.CAConfig(ws)
		if err != nil {
			return 0, err
		}
		reply.Roots, reply.ActiveRootID, reply.TrustDomain = nil, "", ""
		if cfg != nil {
			reply.TrustDomain = cfg.TrustDomain()
		}
		for _, r := range roots {
			reply.Roots = append(reply.Roots, r.Public())
			if r.Active {
				reply.ActiveRootID = r.ID
			}
		}
		return idx, nil
	})
}

// caLeaves lists the leaf certificates the nodes hold (the leader records
// each one it signs, and prunes those of services gone or expired).
func (s *Server) caLeaves(ctx context.Context, req *structs.DCSpecificRequest, reply *structs.IndexedIssuedLeaves) error {
	return s.read(ctx, req.Datacenter, &req.QueryOptions, &reply.QueryMeta, func(ws memdb.WatchSet, st *state.Store) (uint64, error) {
		idx, leaves, err := st.IssuedLeaves(ws)
		if err != nil {
			return 0, err
		}
		slices.SortStableFunc(leaves, func(a, b *structs.IssuedLeaf) int {
			if c := a.NotAfter.Compare(b.NotAfter); c != 0 {
				return c
			}
			return strings.Compare(a.Node+"/"+a.Service, b.Node+"/"+b.Service)
		})
		reply.Leaves = leaves
		return idx, nil
	})
}

func (s *Server) caConfigGet(ctx context.Context, req *structs.DCSpecificRequest, reply *structs.CAConfiguration) error {
	return s.read(ctx, req.Datacenter, &req.QueryOptions, &structs.QueryMeta{}, func(ws memdb.WatchSet, st *state.Store) (uint64, error) {
		idx, cfg, err := st.CAConfig(ws)
		if err != nil {
			return 0, err
		}
		if cfg == nil {
			return 0, ErrCANotReady
		}
		*reply = *cfg
		reply.Config.PrivateKey = ""
		return idx, nil
	})
}

// --- CA configuration ---

// validateCAConfig checks a CA configuration and fills its defaults. It
// parses an operator's root and key when given, and returns it.
func validateCAConfig(c *structs.CAConfig, now time.Time) (*ca.Root, error) {
	if c.LeafCertTTL == 0 {
		c.LeafCertTTL = ca.DefaultLeafCertTTL
	}
	if c.LeafCertTTL < ca.MinLeafCertTTL || c.LeafCertTTL > ca.MaxLeafCertTTL {
		return nil, structs.Invalid("Config.LeafCertTTL", "%s is outside %s to %s", c.LeafCertTTL, ca.MinLeafCertTTL, ca.MaxLeafCertTTL)
	}
	switch c.PrivateKeyType {
	case "", "ec":
		c.PrivateKeyType = "ec"
	default:
		return nil, structs.Invalid("Config.PrivateKeyType", "%q is not supported: the CA uses ECDSA P-256 keys (\"ec\")", c.PrivateKeyType)
	}
	switch c.PrivateKeyBits {
	case 0, 256:
		c.PrivateKeyBits = 256
	default:
		return nil, structs.Invalid("Config.PrivateKeyBits", "%d is not supported: the CA uses ECDSA P-256 keys (256)", c.PrivateKeyBits)
	}
	if (c.RootCert == "") != (c.PrivateKey == "") {
		return nil, structs.Invalid("Config.RootCert", "RootCert and PrivateKey go together: give both or neither")
	}
	if c.RootCert == "" {
		return nil, nil
	}
	root, err := ca.LoadRoot(c.RootCert, c.PrivateKey, now)
	if err != nil {
		field, reason := ca.FieldRootCert, err
		var re *ca.RootError
		if errors.As(err, &re) {
			field, reason = re.Field, re.Err
		}
		return nil, structs.Invalid("Config."+field, "%v", reason)
	}
	return root, nil
}

// rootRecord is the Raft record of a root.
func rootRecord(r *ca.Root, active bool) *structs.CARoot {
	return &structs.CARoot{
		ID: r.ID(), Name: r.Cert.Subject.CommonName, SerialNumber: r.Cert.SerialNumber.Uint64(),
		SigningKeyID: r.SigningKeyID(), NotBefore: r.Cert.NotBefore, NotAfter: r.Cert.NotAfter,
		RootCert: r.CertPEM, SigningKey: r.KeyPEM, Active: active, PrivateKeyType: "ec", PrivateKeyBits: 256,
	}
}

func rootName(now time.Time) string {
	return "Trellis CA Root " + now.UTC().Format("2006-01-02 15:04:05")
}

func (s *Server) caConfigSet(_ context.Context, req *structs.CARequest, reply *structs.WriteReply) error {
	if s.cfg.ConnectDisabled {
		return errConnectDisabled
	}
	if err := s.checkWrite(req.Datacenter); err != nil {
		return err
	}
	if req.Config == nil && !req.Rotate {
		return structs.Invalid("Config", "missing")
	}
	s.caMu.Lock()
	defer s.caMu.Unlock()
	st := s.fsm.State()
	_, cur, err := st.CAConfig(nil)
	if err != nil {
		return err
	}
	if cur == nil {
		return ErrCANotReady
	}
	_, roots, err := st.CARoots(nil)
	if err != nil {
		return err
	}
	active := roots.Active()
	if active == nil {
		return fmt.Errorf("CA state has no active root: %w", ErrCANotReady)
	}
	now := time.Now()
	next := *cur
	if req.Config != nil {
		switch req.Config.Provider {
		case "", structs.CAProviderBuiltin, structs.CAProviderConsul:
			next.Provider = structs.CAProviderBuiltin
		default:
			return structs.Invalid("Provider", "%q is not supported: the built-in CA (%q, or %q) is the only provider", req.Config.Provider, structs.CAProviderBuiltin, structs.CAProviderConsul)
		}
		if req.Config.ClusterID != "" && req.Config.ClusterID != cur.ClusterID {
			return structs.Invalid("ClusterID", "the cluster ID %q cannot change", cur.ClusterID)
		}
		next.Config = req.Config.Config
	}
	given, err := validateCAConfig(&next.Config, now)
	if err != nil {
		return err
	}
	next.Config.RootCert, next.Config.PrivateKey = "", "" // the roots hold them
	var newRoot *ca.Root
	switch {
	case given != nil && given.ID() != active.ID:
		newRoot = given
	case req.Rotate:
		if newRoot, err = ca.GenerateRoot(cur.TrustDomain(), rootName(now), now); err != nil {
			return err
		}
	}
	out := make(structs.CARoots, 0, len(roots)+1)
	if newRoot != nil {
		old, err := ca.ParseRoot(active.RootCert, active.SigningKey)
		if err != nil {
			return fmt.Errorf("read the active root %s: %w", active.ID, err)
		}
		cross, err := old.CrossSign(newRoot.Cert, now)
		if err != nil {
			return err
		}
		for _, r := range roots {
			if r.ID == newRoot.ID() {
				continue // an earlier root made active again
			}
			c := r.Clone()
			if c.Active {
				c.Active, c.RotatedOutAt = false, now
			}
			out = append(out, c)
		}
		rec := rootRecord(newRoot, true)
		rec.IntermediateCerts = []string{cross}
		out = append(out, rec)
	} else {
		out = append(out, roots...)
	}
	idx, _, err := s.applyEntry(structs.CARequestType, &structs.CAWrite{Config: &next, Roots: out, ExpectConfigIndex: cur.ModifyIndex})
	if err != nil {
		return err
	}
	if newRoot != nil {
		s.logger.Info("CA root rotated: new leaves are signed by the new root; the old one stays trusted until every leaf is re-signed",
			"new_root", newRoot.ID(), "old_root", active.ID)
	} else {
		s.logger.Info("CA configuration updated", "leaf_cert_ttl", next.Config.LeafCertTTL)
	}
	reply.Index = idx
	return nil
}

// --- Signing ---

func (s *Server) caSign(_ context.Context, req *structs.CASignRequest, reply *structs.IssuedCert) error {
	if s.cfg.ConnectDisabled {
		return errConnectDisabled
	}
	if err := s.checkWrite(req.Datacenter); err != nil {
		return err
	}
	csr, err := connect.ParseCSR(req.CSR)
	if err != nil {
		return structs.Invalid("CSR", "%v", err)
	}
	// Signing and recording the leaf happen under the read lock, so the
	// pruner (write lock) never drops a root between the two.
	s.caMu.RLock()
	defer s.caMu.RUnlock()
	st := s.fsm.State()
	_, cfg, err := st.CAConfig(nil)
	if err != nil {
		return err
	}
	_, roots, err := st.CARoots(nil)
	if err != nil {
		return err
	}
	active := roots.Active()
	if cfg == nil || active == nil {
		return ErrCANotReady
	}
	root, err := s.signer(active)
	if err != nil {
		return err
	}
	now := time.Now()
	leaf, err := root.SignLeaf(csr, ca.LeafRequest{TrustDomain: cfg.TrustDomain(), Datacenter: s.cfg.Datacenter, TTL: cfg.Config.LeafCertTTL, Now: now})
	if err != nil {
		return structs.Invalid("CSR", "%v", err)
	}
	serial := connect.HexString(leaf.Cert.SerialNumber.Bytes())
	idx := s.raft.AppliedIndex()
	if req.Node != "" {
		idx, _, err = s.applyEntry(structs.LeafRequestType, &structs.LeafWrite{Issued: []*structs.IssuedLeaf{{
			Node: req.Node, Service: leaf.ID.Service, SerialNumber: serial, RootID: active.ID, NotAfter: leaf.Cert.NotAfter,
		}}})
		if err != nil {
			return fmt.Errorf("record the leaf of %q: %w", leaf.ID.Service, err)
		}
	}
	*reply = structs.IssuedCert{
		SerialNumber: serial, CertPEM: leaf.CertPEM + strings.Join(active.IntermediateCerts, ""),
		Service: leaf.ID.Service, ServiceURI: leaf.ID.String(),
		ValidAfter: leaf.Cert.NotBefore, ValidBefore: leaf.Cert.NotAfter, RootID: active.ID,
		RaftIndex: structs.RaftIndex{CreateIndex: idx, ModifyIndex: idx},
	}
	return nil
}

// signer returns the parsed active root, cached by ID.
func (s *Server) signer(active *structs.CARoot) (*ca.Root, error) {
	if c := s.signerCache.Load(); c != nil && c.ID() == active.ID {
		return c, nil
	}
	r, err := ca.ParseRoot(active.RootCert, active.SigningKey)
	if err != nil {
		return nil, fmt.Errorf("read the active root %s: %w", active.ID, err)
	}
	s.signerCache.Store(r)
	return r, nil
}

// --- Intentions ---

func fieldError(prefix string, err error) error {
	var fe *connect.FieldError
	if errors.As(err, &fe) {
		return structs.Invalid(prefix+fe.Field, "%s", fe.Reason)
	}
	return structs.Invalid(prefix, "%v", err)
}

func (s *Server) intentionApply(_ context.Context, req *structs.IntentionRequest, reply *structs.IntentionApplyReply) error {
	if err := s.checkWrite(req.Datacenter); err != nil {
		return err
	}
	if req.Intention == nil {
		return structs.Invalid("Intention", "missing")
	}
	in := req.Intention.Clone()
	// Intention writes are serialised so that "exists already" is decided
	// on the state the write applies to.
	s.intentionMu.Lock()
	defer s.intentionMu.Unlock()
	st := s.fsm.State()
	var existing *connect.Intention
	var err error
	switch req.Op {
	case structs.IntentionOpCreate, structs.IntentionOpUpsert:
		if err := in.Validate(); err != nil {
			return fieldError("Intention.", err)
		}
		if _, existing, err = st.IntentionExact(nil, in.SourceName, in.DestinationName); err != nil {
			return err
		}
		if req.Op == structs.IntentionOpCreate && req.CreateID != "" {
			if !structs.IsUUID(req.CreateID) {
				return structs.Invalid("CreateID", "%q is not a lowercase UUID", req.CreateID)
			}
			if existing != nil && existing.ID == req.CreateID {
				// This create, sent again after its reply was lost: it
				// was applied the first time.
				*reply = structs.IntentionApplyReply{ID: existing.ID, Index: existing.ModifyIndex}
				return nil
			}
			if existing == nil {
				_, other, err := st.IntentionByID(nil, req.CreateID)
				if err != nil {
					return err
				}
				if other != nil {
					return fmt.Errorf("%w: intention ID %s is taken (%s => %s)", structs.ErrConflict, req.CreateID, other.SourceName, other.DestinationName)
				}
			}
		}
		if existing != nil && req.Op == structs.IntentionOpCreate {
			return fmt.Errorf("%w: an intention %s => %s exists already (ID %s); replace it instead (intention create -replace, or PUT /v1/connect/intentions/exact)",
				structs.ErrConflict, existing.SourceName, existing.DestinationName, existing.ID)
		}
	case structs.IntentionOpUpdate:
		if in.ID == "" {
			return structs.Invalid("Intention.ID", "required to update an intention")
		}
		if err := in.Validate(); err != nil {
			return fieldError("Intention.", err)
		}
		if _, existing, err = st.IntentionByID(nil, in.ID); err != nil {
			return err
		}
		if existing == nil {
			return fmt.Errorf("intention %s: %w", in.ID, structs.ErrNotFound)
		}
		if _, other, err := st.IntentionExact(nil, in.SourceName, in.DestinationName); err != nil {
			return err
		} else if other != nil && other.ID != in.ID {
			return fmt.Errorf("%w: an intention %s => %s exists already (ID %s)", structs.ErrConflict, other.SourceName, other.DestinationName, other.ID)
		}
	case structs.IntentionOpDelete:
		if in.ID != "" {
			_, existing, err = st.IntentionByID(nil, in.ID)
		} else {
			for _, f := range []struct{ name, v string }{{"SourceName", in.SourceName}, {"DestinationName", in.DestinationName}} {
				if err := connect.ValidateServiceName(f.name, f.v); err != nil {
					return fieldError("Intention.", err)
				}
			}
			_, existing, err = st.IntentionExact(nil, in.SourceName, in.DestinationName)
		}
		if err != nil {
			return err
		}
		if existing == nil {
			if in.ID != "" {
				return fmt.Errorf("intention %s: %w", in.ID, structs.ErrNotFound)
			}
			return fmt.Errorf("intention %s => %s: %w", in.SourceName, in.DestinationName, structs.ErrNotFound)
		}
		idx, _, err := s.applyEntry(structs.IntentionRequestType, &structs.IntentionWrite{Op: structs.IntentionOpDelete, Intention: existing})
		if err != nil {
			return err
		}
		s.logger.Info("intention deleted", "source", existing.SourceName, "destination", existing.DestinationName, "id", existing.ID)
		*reply = structs.IntentionApplyReply{ID: existing.ID, Index: idx}
		return nil
	default:
		return structs.Invalid("Op", "%q is not one of create, upsert, update, delete", req.Op)
	}

	now := time.Now().UTC()
	in.Precedence = connect.ComputePrecedence(in.SourceName, in.DestinationName)
	in.UpdatedAt = now
	if existing != nil {
		in.ID, in.CreatedAt = existing.ID, existing.CreatedAt
	} else {
		id := req.CreateID
		if id == "" || req.Op != structs.IntentionOpCreate {
			id = structs.NewUUID()
		}
		in.ID, in.CreatedAt = id, now
	}
	idx, _, err := s.applyEntry(structs.IntentionRequestType, &structs.IntentionWrite{Op: structs.IntentionOpUpsert, Intention: in})
	if err != nil {
		return err
	}
	s.logger.Info("intention written", "source", in.SourceName, "destination", in.DestinationName, "action", in.Action, "id", in.ID)
	*reply = structs.IntentionApplyReply{ID: in.ID, Index: idx}
	return nil
}

func (s *Server) intentionGet(ctx context.Context, req *structs.IntentionQueryRequest, reply *structs.IndexedIntentions) error {
	if req.IntentionID == "" {
		for _, f := range []struct{ name, v string }{{"SourceName", req.SourceName}, {"DestinationName", req.DestinationName}} {
			if err := connect.ValidateServiceName(f.name, f.v); err != nil {
				return fieldError("", err)
			}
		}
	}
	return s.read(ctx, req.Datacenter, &req.QueryOptions, &reply.QueryMeta, func(ws memdb.WatchSet, st *state.Store) (uint64, error) {
		var (
			idx uint64
			ixn *connect.Intention
			err error
		)
		if req.IntentionID != "" {
			idx, ixn, err = st.IntentionByID(ws, req.IntentionID)
		} else {
			idx, ixn, err = st.IntentionExact(ws, req.SourceName, req.DestinationName)
		}
		reply.Intentions = nil
		if ixn != nil {
			reply.Intentions = []*connect.Intention{ixn}
		}
		return idx, err
	})
}
