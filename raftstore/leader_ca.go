package raftstore

import (
	"context"
	"strings"
	"time"

	"github.com/trellismesh/trellis/connect/ca"
	"github.com/trellismesh/trellis/raftstore/structs"
)

// caDuties runs while this server leads: it initialises the CA if no leader
// has, then, every CAPruneInterval, drops rotated-out roots that no live
// leaf depends on any more and forgets stale leaf records.
func (s *Server) caDuties(ctx context.Context) {
	if s.cfg.ConnectDisabled {
		return
	}
	for {
		err := s.initializeCA()
		if err == nil {
			break
		}
		s.logger.Error("initialise the CA; retrying", "error", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Second):
		}
	}
	ticker := time.NewTicker(s.cfg.CAPruneInterval)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
			if err := s.pruneCA(); err != nil && ctx.Err() == nil {
				s.logger.Warn("prune CA roots", "error", err)
			}
		}
	}
}

// initializeCA makes the CA configuration and first root when there are none.
func (s *Server) initializeCA() error {
	s.caMu.Lock()
	defer s.caMu.Unlock()
	st := s.fsm.State()
	_, cfg, err := st.CAConfig(nil)
	if err != nil || cfg != nil {
		return err
	}
	now := time.Now()
	next := &structs.CAConfiguration{ClusterID: structs.NewUUID(), Provider: structs.CAProviderBuiltin, Config: s.cfg.CA}
	root, err := validateCAConfig(&next.Config, now)
	if err != nil {
		return err
	}
	if root == nil {
		if root, err = ca.GenerateRoot(next.TrustDomain(), rootName(now), now); err != nil {
			return err
		}
	}
	next.Config.RootCert, next.Config.PrivateKey = "", ""
	if _, _, err := s.applyEntry(structs.CARequestType, &structs.CAWrite{Config: next, Roots: structs.CARoots{rootRecord(root, true)}}); err != nil {
		return err
	}
	s.logger.Info("initialised the built-in CA", "trust_domain", next.TrustDomain(), "root", root.ID(), "leaf_cert_ttl", next.Config.LeafCertTTL)
	return nil
}

// leafIssueGrace counts a leaf as live for this long after it was issued,
// even before its service shows in the catalog (anti-entropy may lag).
const leafIssueGrace = 2 * time.Minute

// pruneCA removes rotated-out roots once no node holds an unexpired leaf
// signed by them for a mesh service it still runs (and CARootGrace has
// passed since the rotation), and deletes leaf records of expired leaves
// or of nodes gone from the catalog.
func (s *Server) pruneCA() error {
	st := s.fsm.State()
	_, roots, err := st.CARoots(nil)
	if err != nil {
		return err
	}
	_, leaves, err := st.IssuedLeaves(nil)
	if err != nil {
		return err
	}
	_, cfg, err := st.CAConfig(nil)
	if err != nil || cfg == nil {
		return err
	}
	active := roots.Active()
	if active == nil {
		return nil
	}
	now := time.Now()
	waiting := map[string]int{}
	var stale []structs.LeafKey
	for _, l := range leaves {
		_, ns, err := st.NodeServices(nil, l.Node)
		if err != nil {
			return err
		}
		if ns == nil || now.After(l.NotAfter) {
			stale = append(stale, structs.LeafKey{Node: l.Node, Service: l.Service})
			continue
		}
		if l.RootID == active.ID {
			continue
		}
		issued := l.NotAfter.Add(-cfg.Config.LeafCertTTL)
		if servesMesh(ns, l.Service) || now.Sub(issued) < leafIssueGrace {
			waiting[l.RootID]++
		}
	}
	if len(stale) > 0 {
		if _, _, err := s.applyEntry(structs.LeafRequestType, &structs.LeafWrite{Delete: stale}); err != nil {
			return err
		}
	}
	var keep structs.CARoots
	var dropped []string
	for _, r := range roots {
		expired := now.After(r.NotAfter)
		if r.Active || (!expired && (waiting[r.ID] > 0 || now.Sub(r.RotatedOutAt) < s.cfg.CARootGrace)) {
			keep = append(keep, r)
			continue
		}
		dropped = append(dropped, r.ID)
	}
	for id, n := range waiting {
		s.logger.Debug("CA rotation in progress: leaves still signed by a rotated-out root", "root", id, "leaves", n)
	}
	if len(dropped) == 0 {
		return nil
	}
	s.caMu.Lock()
	defer s.caMu.Unlock()
	// A rotation may have happened since the reads above: drop from the
	// roots as they are now, and only roots that are still rotated out.
	_, now2, err := st.CARoots(nil)
	if err != nil {
		return err
	}
	gone := map[string]bool{}
	for _, id := range dropped {
		gone[id] = true
	}
	keep = keep[:0]
	for _, r := range now2 {
		if r.Active || !gone[r.ID] {
			keep = append(keep, r)
		}
	}
	_, cur, err := st.CAConfig(nil)
	if err != nil || cur == nil {
		return err
	}
	if _, _, err := s.applyEntry(structs.CARequestType, &structs.CAWrite{Config: cur, Roots: keep, ExpectConfigIndex: cur.ModifyIndex}); err != nil {
		return err
	}
	s.logger.Info("dropped rotated-out CA roots: every live leaf is signed by the active root", "roots", strings.Join(dropped, ","), "active", active.ID)
	return nil
}

// servesMesh reports whether a node runs a mesh endpoint of service: a
// proxy whose destination it is, or a mesh-native instance of it.
func servesMesh(ns *structs.NodeServices, service string) bool {
	for _, svc := range ns.Services {
		switch {
		case svc.Kind == structs.ServiceKindConnectProxy && svc.Proxy != nil && strings.EqualFold(svc.Proxy.DestinationServiceName, service):
			return true
		case svc.Connect != nil && svc.Connect.Native && strings.EqualFold(svc.Service, service):
			return true
		}
	}
	return false
}
