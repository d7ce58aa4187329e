package httpapi

import (
	"net/http"
	"slices"
	"strings"

	"github.com/trellismesh/trellis/api"
	"github.com/trellismesh/trellis/raftstore/structs"
)

// selfAnswer is the body of /v1/agent/self: Self, with the agent's default
// intention policy added to its Config (trellis connect proxy reads it to
// decide connections no intention matches, as the agent does).
type selfAnswer struct {
	Self
	// Config shadows Self.Config in the JSON (the shallower field wins).
	Config selfConfigAnswer
}

type selfConfigAnswer struct {
	SelfConfig
	// DefaultIntentionPolicy is "allow" or "deny"
	// (connect { default_intention_policy }).
	DefaultIntentionPolicy string
}

func (s *Server) agentSelf(w http.ResponseWriter, r *http.Request) (any, error) {
	setLeaderHeaders(w, true, 0)
	self := s.agent.Self()
	policy := "deny"
	if s.agent.DefaultIntentionAllow() {
		policy = "allow"
	}
	return selfAnswer{Self: self, Config: selfConfigAnswer{SelfConfig: self.Config, DefaultIntentionPolicy: policy}}, nil
}

func (s *Server) agentMembers(w http.ResponseWriter, r *http.Request) (any, error) {
	setLeaderHeaders(w, true, 0)
	return applyFilter(r, nonNilSlice(s.agent.Members()))
}

func (s *Server) agentMetrics(w http.ResponseWriter, r *http.Request) (any, error) {
	if r.URL.Query().Get("format") == "prometheus" {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
		if err := s.agent.WritePrometheus(w); err != nil {
			return nil, err
		}
		return noBody, nil
	}
	return s.agent.MetricsJSON()
}

// localServiceMap returns the agent's services as the API shows them, by ID.
func (s *Server) localServiceMap() map[string]*api.AgentService {
	dc := s.agent.Self().Config.Datacenter
	out := make(map[string]*api.AgentService)
	for _, svc := range s.agent.LocalServices() {
		out[svc.ID] = toAPIService(svc, dc)
	}
	return out
}

func (s *Server) agentServices(w http.ResponseWriter, r *http.Request) (any, error) {
	setLeaderHeaders(w, true, 0)
	return applyFilter(r, s.localServiceMap())
}

func (s *Server) agentService(w http.ResponseWriter, r *http.Request) (any, error) {
	id := r.PathValue("id")
	svc, ok := s.localServiceMap()[id]
	if !ok {
		return nil, &statusError{code: http.StatusNotFound, msg: "unknown service ID: " + id}
	}
	setMeta(w, &structs.QueryMeta{Index: svc.ModifyIndex, KnownLeader: true})
	return svc, nil
}

func (s *Server) agentServiceRegister(w http.ResponseWriter, r *http.Request) (any, error) {
	var body serviceBody
	if err := decodeBody(r, &body, false); err != nil {
		return nil, err
	}
	svc, checks, err := body.toStructs()
	if err != nil {
		return nil, err
	}
	if err := s.agent.AddService(r.Context(), svc, checks, boolParam(r, "replace-existing-checks")); err != nil {
		return nil, err
	}
	return noBody, nil
}

func (s *Server) agentServiceDeregister(w http.ResponseWriter, r *http.Request) (any, error) {
	if err := s.agent.RemoveService(r.Context(), r.PathValue("id")); err != nil {
		return nil, err
	}
	return noBody, nil
}

func (s *Server) agentChecks(w http.ResponseWriter, r *http.Request) (any, error) {
	setLeaderHeaders(w, true, 0)
	out := make(map[string]*api.AgentCheck)
	for _, c := range s.agent.LocalChecks() {
		out[c.CheckID] = toAPIAgentCheck(c)
	}
	return applyFilter(r, out)
}

func (s *Server) agentCheckRegister(w http.ResponseWriter, r *http.Request) (any, error) {
	var body checkBody
	if err := decodeBody(r, &body, false); err != nil {
		return nil, err
	}
	if strings.TrimSpace(body.Name) == "" {
		return nil, structs.Invalid("Name", "a check needs a name")
	}
	def, err := body.checkType("")
	if err != nil {
		return nil, err
	}
	if def.CheckID == "" {
		def.CheckID = def.Name
	}
	status := def.Status
	if status == "" {
		status = structs.HealthCritical
	}
	chk := &structs.HealthCheck{
		CheckID: def.CheckID, Name: def.Name, Status: status, Notes: def.Notes,
		ServiceID: def.ServiceID, Type: def.Type(), Definition: def.Definition(),
	}
	if err := s.agent.AddCheck(r.Context(), chk, def); err != nil {
		return nil, err
	}
	return noBody, nil
}

func (s *Server) agentCheckDeregister(w http.ResponseWriter, r *http.Request) (any, error) {
	if err := s.agent.RemoveCheck(r.Context(), r.PathValue("id")); err != nil {
		return nil, err
	}
	return noBody, nil
}

func (s *Server) agentCheckTTL(verb string) handlerFunc {
	status := checkStatusFromVerb[verb]
	return func(w http.ResponseWriter, r *http.Request) (any, error) {
		note := capOutput(r.URL.Query().Get("note"))
		if err := s.agent.UpdateTTLCheck(r.Context(), r.PathValue("id"), status, note); err != nil {
			return nil, err
		}
		return noBody, nil
	}
}

func (s *Server) agentCheckUpdate(w http.ResponseWriter, r *http.Request) (any, error) {
	var body struct{ Status, Output string }
	if err := decodeBody(r, &body, false); err != nil {
		return nil, err
	}
	switch body.Status {
	case structs.HealthPassing, structs.HealthWarning, structs.HealthCritical:
	default:
		return nil, structs.Invalid("Status", "%q is not one of passing, warning, critical", body.Status)
	}
	if err := s.agent.UpdateTTLCheck(r.Context(), r.PathValue("id"), body.Status, capOutput(body.Output)); err != nil {
		return nil, err
	}
	return noBody, nil
}

// localHealth returns the health of the local services match selects: each
// with its own checks and the node's.
func (s *Server) localHealth(match func(*structs.NodeService) bool) []api.AgentServiceChecksInfo {
	dc := s.agent.Self().Config.Datacenter
	checks := s.agent.LocalChecks()
	var out []api.AgentServiceChecksInfo
	for _, svc := range s.agent.LocalServices() {
		if !match(svc) {
			continue
		}
		var mine api.HealthChecks
		for _, c := range checks {
			if c.ServiceID == "" || c.ServiceID == svc.ID {
				mine = append(mine, toAPICheck(c))
			}
		}
		out = append(out, api.AgentServiceChecksInfo{AggregatedStatus: mine.AggregatedStatus(), Service: toAPIService(svc, dc), Checks: nonNilSlice(mine)})
	}
	return out
}

// healthStatusCode is how /v1/agent/health answers a status.
func healthStatusCode(status string) int {
	switch status {
	case structs.HealthPassing:
		return http.StatusOK
	case structs.HealthWarning:
		return http.StatusTooManyRequests
	}
	return http.StatusServiceUnavailable
}

// worst returns the worst aggregated status of infos.
func worst(infos []api.AgentServiceChecksInfo) string {
	var all api.HealthChecks
	for _, i := range infos {
		all = append(all, &api.HealthCheck{Status: i.AggregatedStatus})
	}
	return all.AggregatedStatus()
}

func (s *Server) writeHealth(w http.ResponseWriter, r *http.Request, status string, body any) (any, error) {
	code := healthStatusCode(status)
	if r.URL.Query().Get("format") == "text" {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.WriteHeader(code)
		_, _ = w.Write([]byte(status))
		return noBody, nil
	}
	writeJSON(w, r, code, body)
	return noBody, nil
}

func (s *Server) agentHealthByName(w http.ResponseWriter, r *http.Request) (any, error) {
	name := r.PathValue("name")
	infos := s.localHealth(func(svc *structs.NodeService) bool { return svc.Service == name })
	if len(infos) == 0 {
		return nil, &statusError{code: http.StatusNotFound, msg: "ServiceName " + name + " Not Found"}
	}
	slices.SortFunc(infos, func(a, b api.AgentServiceChecksInfo) int { return strings.Compare(a.Service.ID, b.Service.ID) })
	return s.writeHealth(w, r, worst(infos), infos)
}

func (s *Server) agentHealthByID(w http.ResponseWriter, r *http.Request) (any, error) {
	id := r.PathValue("id")
	infos := s.localHealth(func(svc *structs.NodeService) bool { return svc.ID == id })
	if len(infos) == 0 {
		return nil, &statusError{code: http.StatusNotFound, msg: "ServiceId " + id + " not found"}
	}
	return s.writeHealth(w, r, infos[0].AggregatedStatus, infos[0])
}
