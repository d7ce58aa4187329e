package configentry

import (
	"errors"
	"strings"
	"testing"
)

// decodeValid decodes src (HCL or JSON), normalizes and validates it.
func decodeValid(t *testing.T, src string) (Entry, error) {
	t.Helper()
	e, err := Decode([]byte(src), "t.hcl")
	if err != nil {
		t.Fatalf("Decode: %v\n%s", err, src)
	}
	e.Normalize()
	return e, e.Validate()
}

func TestValidate_Refused(t *testing.T) {
	cases := []struct {
		name, src, field, msg string
	}{
		// names
		{"name missing", `{"Kind":"service-defaults"}`, "Name", "required"},
		{"name bad", `{"Kind":"service-defaults","Name":"web app"}`, "Name", "not a service name"},
		{"name long", `{"Kind":"service-defaults","Name":"` + strings.Repeat("a", 256) + `"}`, "Name", "longer than 255"},
		{"proxy-defaults name", `{"Kind":"proxy-defaults","Name":"web"}`, "Name", `"global"`},
		{"proxy-defaults protocol", `{"Kind":"proxy-defaults","Name":"global","Config":{"protocol":"udp"}}`, `Config["protocol"]`, "not a protocol"},
		{"proxy-defaults protocol type", `{"Kind":"proxy-defaults","Name":"global","Config":{"protocol":1}}`, `Config["protocol"]`, "must be a string"},
		{"meta key", `{"Kind":"service-defaults","Name":"web","Meta":{"a b":"c"}}`, `Meta["a b"]`, "a key is"},
		{"meta value", `{"Kind":"service-defaults","Name":"web","Meta":{"a":"` + strings.Repeat("v", 513) + `"}}`, `Meta["a"]`, "value longer"},

		// service-defaults
		{"protocol", `{"Kind":"service-defaults","Name":"web","Protocol":"udp"}`, "Protocol", "not a protocol"},
		{"max inbound", `{"Kind":"service-defaults","Name":"web","MaxInboundConnections":-1}`, "MaxInboundConnections", "negative"},
		{"local connect timeout", `{"Kind":"service-defaults","Name":"web","LocalConnectTimeoutMs":-1}`, "LocalConnectTimeoutMs", "negative"},
		{"defaults name", `{"Kind":"service-defaults","Name":"web","UpstreamConfig":{"Defaults":{"Name":"db"}}}`, "UpstreamConfig.Defaults.Name", "must be empty"},
		{"limits", `{"Kind":"service-defaults","Name":"web","UpstreamConfig":{"Defaults":{"Limits":{"MaxPendingRequests":-2}}}}`, "UpstreamConfig.Defaults.Limits.MaxPendingRequests", "negative"},
		{"connect timeout ms", `{"Kind":"service-defaults","Name":"web","UpstreamConfig":{"Overrides":[{"Name":"db","ConnectTimeoutMs":-5}]}}`, "UpstreamConfig.Overrides[0].ConnectTimeoutMs", "negative"},
		{"ejection percent", `{"Kind":"service-defaults","Name":"web","UpstreamConfig":{"Defaults":{"PassiveHealthCheck":{"MaxEjectionPercent":101}}}}`, "UpstreamConfig.Defaults.PassiveHealthCheck.MaxEjectionPercent", "at most 100"},
		{"enforcing", `{"Kind":"service-defaults","Name":"web","UpstreamConfig":{"Defaults":{"PassiveHealthCheck":{"EnforcingConsecutive5xx":200}}}}`, "UpstreamConfig.Defaults.PassiveHealthCheck.EnforcingConsecutive5xx", "at most 100"},
		{"interval", `{"Kind":"service-defaults","Name":"web","UpstreamConfig":{"Defaults":{"PassiveHealthCheck":{"Interval":"-1s"}}}}`, "UpstreamConfig.Defaults.PassiveHealthCheck.Interval", "negative"},
		{"base ejection", `{"Kind":"service-defaults","Name":"web","UpstreamConfig":{"Defaults":{"PassiveHealthCheck":{"BaseEjectionTime":"-1s"}}}}`, "UpstreamConfig.Defaults.PassiveHealthCheck.BaseEjectionTime", "negative"},
		{"retry budget", `{"Kind":"service-defaults","Name":"web","UpstreamConfig":{"Defaults":{"RetryBudget":{"Percent":101}}}}`, "UpstreamConfig.Defaults.RetryBudget.Percent", "0 to 100"},
		{"retry budget negative", `{"Kind":"service-defaults","Name":"web","UpstreamConfig":{"Defaults":{"RetryBudget":{"Percent":-1}}}}`, "UpstreamConfig.Defaults.RetryBudget.Percent", "0 to 100"},
		{"retry concurrency", `{"Kind":"service-defaults","Name":"web","UpstreamConfig":{"Defaults":{"RetryBudget":{"MinRetryConcurrency":-1}}}}`, "UpstreamConfig.Defaults.RetryBudget.MinRetryConcurrency", "negative"},
		{"override name", `{"Kind":"service-defaults","Name":"web","UpstreamConfig":{"Overrides":[{"ConnectTimeoutMs":5}]}}`, "UpstreamConfig.Overrides[0].Name", "required"},
		{"override dup", `{"Kind":"service-defaults","Name":"web","UpstreamConfig":{"Overrides":[{"Name":"db"},{"Name":"db"}]}}`, "UpstreamConfig.Overrides[1].Name", "already overridden"},

		// service-router
		{"paths exclusive", `{"Kind":"service-router","Name":"web","Routes":[{"Match":{"HTTP":{"PathExact":"/a","PathPrefix":"/b"}}}]}`, "Routes[0].Match.HTTP", "at most one of PathExact"},
		{"path exact slash", `{"Kind":"service-router","Name":"web","Routes":[{"Match":{"HTTP":{"PathExact":"a"}}}]}`, "Routes[0].Match.HTTP.PathExact", "must start with /"},
		{"path prefix slash", `{"Kind":"service-router","Name":"web","Routes":[{},{"Match":{"HTTP":{"PathPrefix":"a"}}}]}`, "Routes[1].Match.HTTP.PathPrefix", "must start with /"},
		{"path regex", `{"Kind":"service-router","Name":"web","Routes":[{"Match":{"HTTP":{"PathRegex":"(["}}}]}`, "Routes[0].Match.HTTP.PathRegex", "missing closing"},
		{"header none", `{"Kind":"service-router","Name":"web","Routes":[{"Match":{"HTTP":{"Header":[{"Name":"x"}]}}}]}`, "Routes[0].Match.HTTP.Header[0]", "exactly one of Present, Exact, Prefix, Suffix and Regex"},
		{"header two", `{"Kind":"service-router","Name":"web","Routes":[{"Match":{"HTTP":{"Header":[{"Name":"x","Present":true,"Exact":"y"}]}}}]}`, "Routes[0].Match.HTTP.Header[0]", "exactly one"},
		{"header name", `{"Kind":"service-router","Name":"web","Routes":[{"Match":{"HTTP":{"Header":[{"Exact":"y"}]}}}]}`, "Routes[0].Match.HTTP.Header[0].Name", "required"},
		{"header regex", `{"Kind":"service-router","Name":"web","Routes":[{"Match":{"HTTP":{"Header":[{"Name":"x","Regex":"a("}]}}}]}`, "Routes[0].Match.HTTP.Header[0].Regex", "missing closing"},
		{"query none", `{"Kind":"service-router","Name":"web","Routes":[{"Match":{"HTTP":{"QueryParam":[{"Name":"x"}]}}}]}`, "Routes[0].Match.HTTP.QueryParam[0]", "exactly one of Present, Exact and Regex"},
		{"query regex", `{"Kind":"service-router","Name":"web","Routes":[{"Match":{"HTTP":{"QueryParam":[{"Name":"x","Regex":"*"}]}}}]}`, "Routes[0].Match.HTTP.QueryParam[0].Regex", "missing argument"},
		{"method", `{"Kind":"service-router","Name":"web","Routes":[{"Match":{"HTTP":{"Methods":["GET","FETCH"]}}}]}`, "Routes[0].Match.HTTP.Methods[1]", "not an HTTP method"},
		{"prefix rewrite", `{"Kind":"service-router","Name":"web","Routes":[{"Match":{"HTTP":{"PathRegex":"/a"}},"Destination":{"PrefixRewrite":"/"}}]}`, "Routes[0].Destination.PrefixRewrite", "PathExact or PathPrefix"},
		{"prefix rewrite no match", `{"Kind":"service-router","Name":"web","Routes":[{"Destination":{"PrefixRewrite":"/"}}]}`, "Routes[0].Destination.PrefixRewrite", "PathExact or PathPrefix"},
		{"status code low", `{"Kind":"service-router","Name":"web","Routes":[{"Destination":{"RetryOnStatusCodes":[99]}}]}`, "Routes[0].Destination.RetryOnStatusCodes[0]", "100 to 599"},
		{"status code high", `{"Kind":"service-router","Name":"web","Routes":[{"Destination":{"RetryOnStatusCodes":[503,600]}}]}`, "Routes[0].Destination.RetryOnStatusCodes[1]", "100 to 599"},
		{"num retries", `{"Kind":"service-router","Name":"web","Routes":[{"Destination":{"NumRetries":11}}]}`, "Routes[0].Destination.NumRetries", "at most 10 retries"},
		{"request timeout", `{"Kind":"service-router","Name":"web","Routes":[{"Destination":{"RequestTimeout":"-1s"}}]}`, "Routes[0].Destination.RequestTimeout", "negative"},
		{"idle timeout", `{"Kind":"service-router","Name":"web","Routes":[{"Destination":{"IdleTimeout":-5}}]}`, "Routes[0].Destination.IdleTimeout", "negative"},
		{"retry on", `{"Kind":"service-router","Name":"web","Routes":[{"Destination":{"RetryOn":["sometimes"]}}]}`, "Routes[0].Destination.RetryOn[0]", "not a retry condition"},
		{"dest service", `{"Kind":"service-router","Name":"web","Routes":[{"Destination":{"Service":"a b"}}]}`, "Routes[0].Destination.Service", "not a service name"},
		{"dest subset", `{"Kind":"service-router","Name":"web","Routes":[{"Destination":{"ServiceSubset":"V_1"}}]}`, "Routes[0].Destination.ServiceSubset", "not a subset name"},
		{"header modifier", `{"Kind":"service-router","Name":"web","Routes":[{"Destination":{"RequestHeaders":{"Set":{"bad header":"x"}}}}]}`, `Routes[0].Destination.RequestHeaders.Set["bad header"]`, "not a header name"},

		// service-splitter
		{"no splits", `{"Kind":"service-splitter","Name":"web"}`, "Splits", "at least one"},
		{"weight high", `{"Kind":"service-splitter","Name":"web","Splits":[{"Weight":101}]}`, "Splits[0].Weight", "0 to 100"},
		{"weight negative", `{"Kind":"service-splitter","Name":"web","Splits":[{"Weight":-1},{"Weight":101}]}`, "Splits[0].Weight", "0 to 100"},
		{"weight decimals", `{"Kind":"service-splitter","Name":"web","Splits":[{"Weight":33.333},{"Weight":66.667}]}`, "Splits[0].Weight", "33.333: at most two decimals"},
		{"weight high as written", `{"Kind":"service-splitter","Name":"web","Splits":[{"Weight":100.1}]}`, "Splits[0].Weight", "100.1: a weight is from 0 to 100"},
		{"weights sum", "Kind = \"service-splitter\"\nName = \"web\"\nSplits = [{ Weight = 80, ServiceSubset = \"v1\" }, { Weight = 10, ServiceSubset = \"v2\" }]\n", "Splits", "weights sum to 90, must sum to 100"},
		{"weights sum over", `{"Kind":"service-splitter","Name":"web","Splits":[{"Weight":50.5},{"Weight":50}]}`, "Splits", "weights sum to 100.5, must sum to 100"},
		{"split subset", `{"Kind":"service-splitter","Name":"web","Splits":[{"Weight":100,"ServiceSubset":"-x"}]}`, "Splits[0].ServiceSubset", "not a subset name"},
		{"split service", `{"Kind":"service-splitter","Name":"web","Splits":[{"Weight":100,"Service":"*"}]}`, "Splits[0].Service", "not a service name"},
		{"split header", `{"Kind":"service-splitter","Name":"web","Splits":[{"Weight":100,"ResponseHeaders":{"Remove":[""]}}]}`, "Splits[0].ResponseHeaders.Remove[0]", "not a header name"},

		// service-resolver
		{"subset name", `{"Kind":"service-resolver","Name":"db","Subsets":{"V1":{}}}`, `Subsets["V1"]`, "not a subset name"},
		{"subset filter syntax", `{"Kind":"service-resolver","Name":"db","Subsets":{"v1":{"Filter":"Service.Meta.version =="}}}`, `Subsets["v1"].Filter`, "filter"},
		{"subset filter field", `{"Kind":"service-resolver","Name":"db","Subsets":{"v1":{"Filter":"Service.Version == v1"}}}`, `Subsets["v1"].Filter`, `unknown field "Version"`},
		{"subset filter port", `{"Kind":"service-resolver","Name":"db","Subsets":{"v1":{"Filter":"Service.Port == eighty"}}}`, `Subsets["v1"].Filter`, "is a number"},
		{"default subset", `{"Kind":"service-resolver","Name":"db","DefaultSubset":"v2","Subsets":{"v1":{}}}`, "DefaultSubset", `"v2" is not one of Subsets`},
		{"redirect and subsets", `{"Kind":"service-resolver","Name":"db","Redirect":{"Service":"x"},"Subsets":{"v1":{}}}`, "Redirect", "Subsets"},
		{"redirect and default subset", `{"Kind":"service-resolver","Name":"db","Redirect":{"Service":"x"},"DefaultSubset":"v1"}`, "DefaultSubset", "not one of Subsets"},
		{"redirect and failover", `{"Kind":"service-resolver","Name":"db","Redirect":{"Service":"x"},"Failover":{"*":{"Service":"y"}}}`, "Redirect", "Failover"},
		{"redirect to itself", "kind = \"service-resolver\"\nname = \"db\"\nredirect { service = \"db\" }\n", "Redirect.Service", "itself"},
		{"redirect to itself implicit", `{"Kind":"service-resolver","Name":"db","Redirect":{"ServiceSubset":""}}`, "Redirect", "names nothing"},
		{"redirect service", `{"Kind":"service-resolver","Name":"db","Redirect":{"Service":"a/b"}}`, "Redirect.Service", "not a service name"},
		{"failover key", `{"Kind":"service-resolver","Name":"db","Subsets":{"v1":{}},"Failover":{"v2":{"Service":"x"}}}`, `Failover["v2"]`, "neither one of Subsets nor *"},
		{"failover empty", `{"Kind":"service-resolver","Name":"db","Failover":{"*":{}}}`, `Failover["*"]`, "names nothing"},
		{"failover targets and service", `{"Kind":"service-resolver","Name":"db","Failover":{"*":{"Service":"x","Targets":[{"Service":"y"}]}}}`, `Failover["*"].Targets`, "cannot be set with"},
		{"failover target empty", `{"Kind":"service-resolver","Name":"db","Failover":{"*":{"Targets":[{}]}}}`, `Failover["*"].Targets[0]`, "names nothing"},
		{"connect timeout", `{"Kind":"service-resolver","Name":"db","ConnectTimeout":"-1s"}`, "ConnectTimeout", "negative"},
		{"drain timeout", `{"Kind":"service-resolver","Name":"db","DrainTimeout":"-1s"}`, "DrainTimeout", "negative"},
		{"policy", `{"Kind":"service-resolver","Name":"db","LoadBalancer":{"Policy":"fastest"}}`, "LoadBalancer.Policy", "not a policy"},
		{"ring hash config", `{"Kind":"service-resolver","Name":"db","LoadBalancer":{"Policy":"least_request","RingHashConfig":{"MinimumRingSize":1}}}`, "LoadBalancer.RingHashConfig", "ring_hash or maglev"},
		{"ring too big", `{"Kind":"service-resolver","Name":"db","LoadBalancer":{"Policy":"ring_hash","RingHashConfig":{"MinimumRingSize":2147483648,"MaximumRingSize":2147483648}}}`, "LoadBalancer.RingHashConfig.MinimumRingSize", "more than 8388608"},
		{"ring sizes", `{"Kind":"service-resolver","Name":"db","LoadBalancer":{"Policy":"ring_hash","RingHashConfig":{"MinimumRingSize":10,"MaximumRingSize":5}}}`, "LoadBalancer.RingHashConfig.MinimumRingSize", "more than MaximumRingSize"},
		{"least request config", `{"Kind":"service-resolver","Name":"db","LoadBalancer":{"Policy":"random","LeastRequestConfig":{"ChoiceCount":2}}}`, "LoadBalancer.LeastRequestConfig", "least_request"},
		{"hash policies", `{"Kind":"service-resolver","Name":"db","LoadBalancer":{"Policy":"round_robin","HashPolicies":[{"SourceIP":true}]}}`, "LoadBalancer.HashPolicies", "ring_hash or maglev"},
		{"hash field", `{"Kind":"service-resolver","Name":"db","LoadBalancer":{"Policy":"maglev","HashPolicies":[{"Field":"body","FieldValue":"x"}]}}`, "LoadBalancer.HashPolicies[0].Field", "header, cookie or query_parameter"},
		{"hash field value", `{"Kind":"service-resolver","Name":"db","LoadBalancer":{"Policy":"maglev","HashPolicies":[{"Field":"cookie"}]}}`, "LoadBalancer.HashPolicies[0].FieldValue", "required"},
		{"hash none", `{"Kind":"service-resolver","Name":"db","LoadBalancer":{"Policy":"maglev","HashPolicies":[{"FieldValue":"x"}]}}`, "LoadBalancer.HashPolicies[0].Field", "required"},
		{"hash source ip and field", `{"Kind":"service-resolver","Name":"db","LoadBalancer":{"Policy":"ring_hash","HashPolicies":[{"SourceIP":true,"Field":"header","FieldValue":"x"}]}}`, "LoadBalancer.HashPolicies[0]", "SourceIP cannot be set with Field"},

		// service-intentions
		{"no sources", `{"Kind":"service-intentions","Name":"db"}`, "Sources", "at least one"},
		{"source name", `{"Kind":"service-intentions","Name":"db","Sources":[{"Action":"allow"}]}`, "Sources[0].Name", "required"},
		{"source action", `{"Kind":"service-intentions","Name":"db","Sources":[{"Name":"web","Action":"maybe"}]}`, "Sources[0].Action", "allow or deny"},
		{"source no action", `{"Kind":"service-intentions","Name":"db","Sources":[{"Name":"web"}]}`, "Sources[0].Action", "required"},
		{"action and permissions", `{"Kind":"service-intentions","Name":"db","Sources":[{"Name":"web","Action":"allow","Permissions":[{"Action":"deny","HTTP":{"PathPrefix":"/"}}]}]}`, "Sources[0].Action", "must be empty"},
		{"permission bad", `{"Kind":"service-intentions","Name":"db","Sources":[{"Name":"web","Permissions":[{"Action":"deny","HTTP":{"PathPrefix":"users"}}]}]}`, "Sources[0].Permissions[0].HTTP.PathPrefix", "must start with /"},
		{"permission action", "kind = \"service-intentions\"\nname = \"db\"\nsources {\n  name = \"web\"\n  permissions {\n    action = \"perhaps\"\n    http {\n      path_prefix = \"/users\"\n    }\n  }\n}\n", "Sources[0].Permissions[0].Action", "must be"},
		{"duplicate source", `{"Kind":"service-intentions","Name":"db","Sources":[{"Name":"web","Action":"allow"},{"Name":"web","Action":"deny"}]}`, "Sources[1].Name", "already a source"},
		{"too many permissions", `{"Kind":"service-intentions","Name":"db","Sources":[{"Name":"web","Permissions":[` + strings.TrimSuffix(strings.Repeat(`{"Action":"deny","HTTP":{"PathPrefix":"/"}},`, 65), ",") + `]}]}`, "Sources[0].Permissions", "more than the 64"},
		{"description", `{"Kind":"service-intentions","Name":"db","Sources":[{"Name":"web","Action":"allow","Description":"` + strings.Repeat("d", 513) + `"}]}`, "Sources[0].Description", "longer than 512"},
		{"source type", `{"Kind":"service-intentions","Name":"db","Sources":[{"Name":"web","Action":"allow","Type":"other"}]}`, "Sources[0].Type", "consul"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := decodeValid(t, c.src)
			var fe *FieldError
			if !errors.As(err, &fe) {
				t.Fatalf("error %v (%T), want a *FieldError for %s", err, err, c.field)
			}
			if fe.Field != c.field || !strings.Contains(fe.Msg, c.msg) {
				t.Fatalf("error %q, want field %q and a message containing %q", err, c.field, c.msg)
			}
		})
	}
}

func TestValidate_Accepted(t *testing.T) {
	for _, src := range []string{
		`{"Kind":"proxy-defaults","Name":"global","Config":{"protocol":" HTTP "}}`,
		`{"Kind":"service-defaults","Name":"web","Protocol":"GRPC"}`,
		`{"Kind":"service-router","Name":"web","Routes":[{"Match":{"HTTP":{"PathPrefix":"/a","Methods":["get"," put "]}},"Destination":{"PrefixRewrite":"/","NumRetries":10,"RetryOn":["5xx","Reset"]}}]}`,
		`{"Kind":"service-splitter","Name":"web","Splits":[{"Weight":33.33},{"Weight":33.33},{"Weight":33.34}]}`,
		`{"Kind":"service-splitter","Name":"web","Splits":[{"Weight":100},{"Weight":0,"Service":"other"}]}`,
		`{"Kind":"service-resolver","Name":"db","Redirect":{"Service":"db","Datacenter":"dc2"}}`,
		`{"Kind":"service-resolver","Name":"db","Subsets":{"v1":{"Filter":"Service.Meta.version == v1"},"canary":{"Filter":"\"canary\" in Service.Tags and Service.Port != 0"}},"DefaultSubset":"v1","Failover":{"v1":{"ServiceSubset":"canary"},"*":{"Targets":[{"Datacenter":"dc2"}]}},"LoadBalancer":{"Policy":"RING_HASH","HashPolicies":[{"Field":"Cookie","FieldValue":"s"}]}}`,
		`{"Kind":"service-intentions","Name":"*","Sources":[{"Name":"*","Action":"DENY"},{"Name":"web","Permissions":[{"Action":"allow","HTTP":{"PathExact":"/x","Methods":["get"]}}]}]}`,
	} {
		e, err := decodeValid(t, src)
		if err != nil {
			t.Errorf("%s: %v", src, err)
			continue
		}
		roundTrip(t, e)
	}
}

func TestNormalize(t *testing.T) {
	e, _ := decodeValid(t, `{"Kind":"proxy-defaults","Name":" global ","Config":{"protocol":" HTTP2 "}}`)
	if p := e.(*ProxyConfigEntry); p.Config["protocol"] != "http2" || p.Name != "global" {
		t.Errorf("proxy-defaults: %#v", p)
	}
	e, _ = decodeValid(t, `{"Kind":"service-router","Name":"web","Routes":[{"Match":{"HTTP":{"Methods":["get"]}}}]}`)
	if m := e.(*ServiceRouterConfigEntry).Routes[0].Match.HTTP.Methods; m[0] != "GET" {
		t.Errorf("methods: %v", m)
	}
	e, _ = decodeValid(t, `{"Kind":"service-defaults","Name":"web","Protocol":"HTTP"}`)
	if p := e.(*ServiceConfigEntry).Protocol; p != "http" {
		t.Errorf("protocol: %q", p)
	}
	e, _ = decodeValid(t, `{"Kind":"service-intentions","Name":"db","Sources":[{"Name":"web","Action":"Allow"},{"Name":"*","Permissions":[{"Action":"DENY","HTTP":{"PathPrefix":"/","Methods":["delete"]}}]}]}`)
	s := e.(*ServiceIntentionsConfigEntry).Sources
	if s[0].Action != "allow" || s[0].Type != "consul" || s[0].Precedence != 9 || s[1].Precedence != 8 || s[1].Permissions[0].Action != "deny" || s[1].Permissions[0].HTTP.Methods[0] != "DELETE" {
		t.Errorf("intentions: %+v %+v", s[0], s[1])
	}
}
