package configentry

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/trellismesh/trellis/connect"
)

func mustDecode(t *testing.T, src, filename string) Entry {
	t.Helper()
	e, err := Decode([]byte(src), filename)
	if err != nil {
		t.Fatalf("Decode(%s): %v", filename, err)
	}
	return e
}

func TestDecode_HCLExamples(t *testing.T) {
	cases := []struct {
		name string
		src  string
		want Entry
	}{
		{
			name: "redirect camel",
			src: `Kind = "service-resolver"
Name = "db"
Redirect {
  Service = "db-v2"
}
`,
			want: &ServiceResolverConfigEntry{Kind: ServiceResolver, Name: "db", Redirect: &ServiceResolverRedirect{Service: "db-v2"}},
		},
		{
			name: "redirect snake block",
			src:  "kind = \"service-resolver\"\nname = \"db\"\nredirect { service = \"db-v2\" }\n",
			want: &ServiceResolverConfigEntry{Kind: ServiceResolver, Name: "db", Redirect: &ServiceResolverRedirect{Service: "db-v2"}},
		},
		{
			name: "redirect attribute",
			src:  "kind = \"service-resolver\"\nname = \"db\"\nredirect = { service = \"db-v2\" }\n",
			want: &ServiceResolverConfigEntry{Kind: ServiceResolver, Name: "db", Redirect: &ServiceResolverRedirect{Service: "db-v2"}},
		},
		{
			name: "canary split camel",
			src: `Kind = "service-splitter"
Name = "web"
Splits = [
  { Weight = 90, ServiceSubset = "v1" },
  { Weight = 10, ServiceSubset = "v2" },
]
`,
			want: &ServiceSplitterConfigEntry{Kind: ServiceSplitter, Name: "web", Splits: []ServiceSplit{{Weight: 90, ServiceSubset: "v1"}, {Weight: 10, ServiceSubset: "v2"}}},
		},
		{
			name: "split snake blocks",
			src: `kind = "service-splitter"
name = "web"
splits {
  weight         = 50
  service_subset = "v1"
}
splits {
  weight         = 50
  service_subset = "v2"
}
`,
			want: &ServiceSplitterConfigEntry{Kind: ServiceSplitter, Name: "web", Splits: []ServiceSplit{{Weight: 50, ServiceSubset: "v1"}, {Weight: 50, ServiceSubset: "v2"}}},
		},
		{
			name: "single block into a list",
			src:  "kind = \"service-splitter\"\nname = \"web\"\nsplits {\n  weight = 100\n}\n",
			want: &ServiceSplitterConfigEntry{Kind: ServiceSplitter, Name: "web", Splits: []ServiceSplit{{Weight: 100}}},
		},
		{
			name: "resolver subsets labelled blocks",
			src: `kind           = "service-resolver"
name           = "web"
default_subset = "v1"
connect_timeout = "5s"
request_timeout = 1500000000
drain_timeout  = "30s"
subsets "v1" {
  filter = "Service.Meta.version == v1"
}
subsets "v2" {
  filter       = "Service.Meta.version == v2"
  only_passing = true
}
failover "*" {
  datacenters = ["dc2"]
}
load_balancer {
  policy = "ring_hash"
  ring_hash_config {
    minimum_ring_size = 1024
  }
  hash_policies {
    field       = "header"
    field_value = "x-user"
  }
  hash_policies {
    source_ip = true
  }
}
meta {
  Owner_Team = "db"
}
`,
			want: &ServiceResolverConfigEntry{
				Kind: ServiceResolver, Name: "web", DefaultSubset: "v1",
				ConnectTimeout: Duration(5 * time.Second), RequestTimeout: Duration(1500 * time.Millisecond), DrainTimeout: Duration(30 * time.Second),
				Subsets: map[string]ServiceResolverSubset{
					"v1": {Filter: "Service.Meta.version == v1"},
					"v2": {Filter: "Service.Meta.version == v2", OnlyPassing: true},
				},
				Failover: map[string]ServiceResolverFailover{"*": {Datacenters: []string{"dc2"}}},
				LoadBalancer: &LoadBalancer{
					Policy:         LBRingHash,
					RingHashConfig: &RingHashConfig{MinimumRingSize: 1024},
					HashPolicies:   []HashPolicy{{Field: "header", FieldValue: "x-user"}, {SourceIP: true}},
				},
				Meta: map[string]string{"Owner_Team": "db"},
			},
		},
		{
			name: "resolver subsets object camel",
			src: `Kind = "service-resolver"
Name = "web"
DefaultSubset = "v1"
Subsets = {
  v1 = { Filter = "Service.Meta.version == v1" }
  "v2" = { Filter = "Service.Meta.version == v2" }
}
`,
			want: &ServiceResolverConfigEntry{Kind: ServiceResolver, Name: "web", DefaultSubset: "v1",
				Subsets: map[string]ServiceResolverSubset{"v1": {Filter: "Service.Meta.version == v1"}, "v2": {Filter: "Service.Meta.version == v2"}}},
		},
		{
			name: "intentions object literals",
			src: `kind = "service-intentions"
name = "db"
sources = [
  { name = "web", permissions = [{ action = "deny", http = { path_prefix = "/users", methods = ["DELETE"] } }] },
  { name = "*", action = "deny" },
]
`,
			want: &ServiceIntentionsConfigEntry{Kind: ServiceIntentions, Name: "db", Sources: []*SourceIntention{
				{Name: "web", Permissions: []*connect.IntentionPermission{{Action: "deny", HTTP: &connect.IntentionHTTPPermission{PathPrefix: "/users", Methods: []string{"DELETE"}}}}},
				{Name: "*", Action: "deny"},
			}},
		},
		{
			name: "intentions blocks",
			src: `Kind = "service-intentions"
Name = "db"
Sources {
  Name = "web"
  Permissions {
    Action = "deny"
    HTTP {
      PathPrefix = "/users"
      Methods    = ["DELETE"]
    }
  }
  Permissions {
    Action = "allow"
    HTTP {
      PathPrefix = "/"
      Header {
        Name = "x-env"
        Exact = "prod"
      }
    }
  }
}
`,
			want: &ServiceIntentionsConfigEntry{Kind: ServiceIntentions, Name: "db", Sources: []*SourceIntention{
				{Name: "web", Permissions: []*connect.IntentionPermission{
					{Action: "deny", HTTP: &connect.IntentionHTTPPermission{PathPrefix: "/users", Methods: []string{"DELETE"}}},
					{Action: "allow", HTTP: &connect.IntentionHTTPPermission{PathPrefix: "/", Header: []connect.IntentionHTTPHeaderPermission{{Name: "x-env", Exact: "prod"}}}},
				}},
			}},
		},
		{
			name: "router blocks snake",
			src: `kind = "service-router"
name = "web"
routes {
  match {
    http {
      path_prefix = "/admin"
      methods     = ["get", "POST"]
      header {
        name    = "x-debug"
        present = true
      }
      query_param {
        name  = "beta"
        exact = "1"
      }
    }
  }
  destination {
    service                  = "admin"
    prefix_rewrite           = "/"
    request_timeout          = "2s"
    num_retries              = 3
    retry_on_connect_failure = true
    retry_on_status_codes    = [503]
    request_headers {
      set = { "X-Route" = "admin" }
      remove = ["x-debug"]
    }
  }
}
routes {
  match { 
    http {
      path_exact = "/v2"
    }
  }
  destination {
    service_subset = "v2"
  }
}
`,
			want: &ServiceRouterConfigEntry{Kind: ServiceRouter, Name: "web", Routes: []ServiceRoute{
				{
					Match: &ServiceRouteMatch{HTTP: &ServiceRouteHTTPMatch{
						PathPrefix: "/admin", Methods: []string{"get", "POST"},
						Header:     []ServiceRouteHTTPMatchHeader{{Name: "x-debug", Present: true}},
						QueryParam: []ServiceRouteHTTPMatchQueryParam{{Name: "beta", Exact: "1"}},
					}},
					Destination: &ServiceRouteDestination{
						Service: "admin", PrefixRewrite: "/", RequestTimeout: Duration(2 * time.Second), NumRetries: 3,
						RetryOnConnectFailure: true, RetryOnStatusCodes: []uint32{503},
						RequestHeaders: &HTTPHeaderModifiers{Set: map[string]string{"X-Route": "admin"}, Remove: []string{"x-debug"}},
					},
				},
				{Match: &ServiceRouteMatch{HTTP: &ServiceRouteHTTPMatch{PathExact: "/v2"}}, Destination: &ServiceRouteDestination{ServiceSubset: "v2"}},
			}},
		},
		{
			name: "proxy-defaults config kept as written",
			src: `Kind = "proxy-defaults"
Name = "global"
Config {
  protocol = "HTTP"
  Local_Thing = { Nested_Key = [1, "two", true] }
}
`,
			want: &ProxyConfigEntry{Kind: ProxyDefaults, Name: "global", Config: map[string]any{
				"protocol": "HTTP", "Local_Thing": map[string]any{"Nested_Key": []any{1.0, "two", true}},
			}},
		},
		{
			name: "service-defaults",
			src: `Kind = "service-defaults"
Name = "web"
Protocol = "http"
MaxInboundConnections = 100
UpstreamConfig = {
  Defaults = {
    ConnectTimeoutMs = 500
    Limits = { MaxConnections = 10 }
    PassiveHealthCheck = { Interval = "5s", MaxFailures = 3, MaxEjectionPercent = 50, BaseEjectionTime = "10s" }
    RetryBudget = { Percent = 20.5, MinRetryConcurrency = 3 }
  }
  Overrides = [{ Name = "db", ConnectTimeoutMs = 100 }]
}
`,
			want: &ServiceConfigEntry{Kind: ServiceDefaults, Name: "web", Protocol: "http", MaxInboundConnections: 100,
				UpstreamConfig: &UpstreamConfiguration{
					Defaults: &UpstreamConfig{
						ConnectTimeoutMs:   500,
						Limits:             &UpstreamLimits{MaxConnections: ptr(10)},
						PassiveHealthCheck: &PassiveHealthCheck{Interval: Duration(5 * time.Second), MaxFailures: 3, MaxEjectionPercent: ptr(uint32(50)), BaseEjectionTime: ptr(Duration(10 * time.Second))},
						RetryBudget:        &RetryBudget{Percent: 20.5, MinRetryConcurrency: 3},
					},
					Overrides: []*UpstreamConfig{{Name: "db", ConnectTimeoutMs: 100}},
				}},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := mustDecode(t, c.src, "x.hcl")
			if !reflect.DeepEqual(got, c.want) {
				gb, _ := json.Marshal(got)
				wb, _ := json.Marshal(c.want)
				t.Fatalf("got  %s\nwant %s", gb, wb)
			}
			got.Normalize()
			if err := got.Validate(); err != nil {
				t.Fatalf("Validate: %v", err)
			}
			roundTrip(t, got)
		})
	}
}

func ptr[T any](v T) *T { return &v }

// roundTrip checks that e marshals and decodes back equal.
func roundTrip(t *testing.T, e Entry) {
	t.Helper()
	b, err := json.Marshal(e)
	if err != nil {
		t.Fatal(err)
	}
	back, err := DecodeJSON(b)
	if err != nil {
		t.Fatalf("DecodeJSON(%s): %v", b, err)
	}
	if !reflect.DeepEqual(back, e) {
		bb, _ := json.Marshal(back)
		t.Fatalf("round trip:\n got  %s\n want %s", bb, b)
	}
	var env Envelope
	if err := json.Unmarshal(b, &env); err != nil || !reflect.DeepEqual(env.Entry, e) {
		t.Fatalf("Envelope round trip: %v", err)
	}
}

func TestDecodeJSON_KeyStyles(t *testing.T) {
	camel := `{"Kind":"service-router","Name":"web","Meta":{"Team_Name":"x"},"Routes":[{"Match":{"HTTP":{"PathPrefix":"/a","Methods":["GET"]}},"Destination":{"Service":"api","ServiceSubset":"v1","NumRetries":2,"RetryOnStatusCodes":[503],"RequestTimeout":"1s","ResponseHeaders":{"Add":{"X-Foo_Bar":"1"}}}}]}`
	snake := `{"kind":"service-router","name":"web","meta":{"Team_Name":"x"},"routes":[{"match":{"http":{"path_prefix":"/a","methods":["GET"]}},"destination":{"service":"api","service_subset":"v1","num_retries":2,"retry_on_status_codes":[503],"request_timeout":1000000000,"response_headers":{"add":{"X-Foo_Bar":"1"}}}}]}`
	lower := strings.ToLower(strings.ReplaceAll(camel, `"X-Foo_Bar"`, `"X-FOO_BAR"`))
	a, err := DecodeJSON([]byte(camel))
	if err != nil {
		t.Fatal(err)
	}
	b, err := DecodeJSON([]byte(snake))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(a, b) {
		t.Fatalf("camel and snake differ:\n%#v\n%#v", a, b)
	}
	r := a.(*ServiceRouterConfigEntry)
	if r.Meta["Team_Name"] != "x" || r.Routes[0].Destination.ResponseHeaders.Add["X-Foo_Bar"] != "1" {
		t.Fatalf("user keys re-cased: %v %v", r.Meta, r.Routes[0].Destination.ResponseHeaders.Add)
	}
	if _, err := DecodeJSON([]byte(lower)); err != nil {
		t.Fatalf("lower-case CamelCase: %v", err)
	}
	roundTrip(t, a)
}

func TestDecode_Errors(t *testing.T) {
	cases := []struct {
		name, file, src, want string
	}{
		{"json unknown nested", "", `{"Kind":"service-router","Name":"web","Routes":[{"Match":{"HTTP":{"PathPrefx":"/a"}}}]}`,
			"Routes[0].Match.HTTP.PathPrefx: unknown field"},
		{"json unknown with position", "web.json", "{\n  \"Kind\": \"service-router\",\n  \"Name\": \"web\",\n  \"Routez\": []\n}",
			"web.json:4:3: Routez: unknown field (did you mean Routes?)"},
		{"hcl unknown", "db.hcl", "Kind = \"service-resolver\"\nName = \"db\"\nRedirect {\nServce = \"db-v2\"\n}\n",
			"db.hcl:4:1: Redirect.Servce: unknown field"},
		{"hcl unknown top", "db.hcl", "kind = \"service-resolver\"\nname = \"db\"\nredirectt { service = \"x\" }\n",
			"db.hcl:3:1: redirectt: unknown field"},
		{"hcl unknown in subset", "db.hcl", "kind = \"service-resolver\"\nname = \"db\"\nsubsets \"v1\" {\n  filtr = \"x\"\n}\n",
			`db.hcl:4:3: Subsets["v1"].filtr: unknown field`},
		{"hcl variable", "db.hcl", "kind = \"service-resolver\"\nname = var.name\n", "db.hcl:2:8: "},
		{"hcl function", "db.hcl", "kind = \"service-resolver\"\nname = upper(\"x\")\n", "db.hcl:2:8: "},
		{"hcl syntax", "db.hcl", "kind = \n", "db.hcl:1:"},
		{"hcl type", "web.hcl", "kind = \"service-splitter\"\nname = \"web\"\nsplits = [{ weight = \"half\" }]\n",
			`web.hcl:3:22: Splits[0].Weight: must be a number, not a string`},
		{"hcl raft index", "x.hcl", "kind = \"service-defaults\"\nname = \"web\"\nmodify_index = 3\n", "x.hcl:3:1: modify_index: set by the servers, not written in a file"},
		{"hcl create index", "ci.hcl", "Kind = \"service-resolver\"\nName = \"zz\"\nCreateIndex = 5\n", "ci.hcl:3:1: CreateIndex: set by the servers, not written in a file; remove it"},
		{"hcl near raft index", "ci.hcl", "Kind = \"service-resolver\"\nName = \"zz\"\nCreateIndx = 5\n", "ci.hcl:3:1: CreateIndx: unknown field (known: "},
		{"hcl attr and block", "x.hcl", "kind = \"service-resolver\"\nname = \"db\"\nredirect = {}\nredirect {}\n", "x.hcl:4:1: redirect is set both"},
		{"hcl repeated single", "x.hcl", "kind = \"service-resolver\"\nname = \"db\"\nredirect {}\nredirect {}\n", "x.hcl:4:1: Redirect: given as 2 blocks: only one is allowed"},
		{"hcl duplicate label", "x.hcl", "kind = \"service-resolver\"\nname = \"db\"\nsubsets \"a\" {}\nsubsets \"a\" {}\n", `x.hcl:4:9: subsets "a" is defined twice`},
		{"duplicate field styles", "", `{"Kind":"service-splitter","Name":"w","service_subset":1,"Splits":[{"ServiceSubset":"a","service_subset":"b"}]}`, "service_subset: unknown field"},
		{"duplicate field", "", `{"Kind":"service-splitter","Name":"w","Splits":[{"ServiceSubset":"a","service_subset":"b"}]}`, "Splits[0].ServiceSubset: duplicate field"},
		{"no kind", "", `{"Name":"web"}`, "Kind: missing"},
		{"bad kind", "", `{"Kind":"service-rooter","Name":"web"}`, `Kind: unknown kind "service-rooter"`},
		{"bad duration", "", `{"Kind":"service-resolver","Name":"db","ConnectTimeout":"5 parsecs"}`, `ConnectTimeout: "5 parsecs" is not a duration`},
		{"fractional int", "", `{"Kind":"service-router","Name":"w","Routes":[{"Destination":{"NumRetries":1.5}}]}`, "Routes[0].Destination.NumRetries: 1.5 is not a whole number"},
		{"negative uint", "", `{"Kind":"service-router","Name":"w","Routes":[{"Destination":{"NumRetries":-1}}]}`, "Routes[0].Destination.NumRetries: -1 is not a whole number"},
		{"json syntax", "a.json", "{\"Kind\": \"service-router\",\n \"Name\": }", "a.json:2:"},
		{"json trailing", "", `{"Kind":"service-router","Name":"w"} {}`, "unexpected data after the entry"},
		{"json not object", "", `[1]`, "must be an object"},
		{"json array of entries", "arr.json", `[{"Kind":"service-defaults","Name":"web"}]`, "arr.json:1:1: a config entry must be an object, not a list: write one entry per file"},
		{"json array after spaces", "arr.json", "\ufeff\n  [{\"Kind\":\"service-defaults\"}]", "arr.json:2:3: a config entry must be an object, not a list"},
		{"map duplicate key", "", `{"Kind":"service-resolver","Name":"db","Subsets":{"v1":{},"v1":{}}}`, `Subsets["v1"]: duplicate key`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var err error
			if c.file == "" {
				_, err = DecodeJSON([]byte(c.src))
			} else {
				_, err = Decode([]byte(c.src), c.file)
			}
			if err == nil {
				t.Fatalf("no error, want %q", c.want)
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %q, want it to contain %q", err, c.want)
			}
			var de *DecodeError
			if !errors.As(err, &de) {
				t.Fatalf("%T is not a *DecodeError", err)
			}
		})
	}
}

func TestSnakeCase(t *testing.T) {
	for in, want := range map[string]string{
		"PathPrefix": "path_prefix", "HTTP": "http", "ServiceSubset": "service_subset", "EnforcingConsecutive5xx": "enforcing_consecutive_5xx",
		"LegacyID": "legacy_id", "RingHashConfig": "ring_hash_config", "LocalConnectTimeoutMs": "local_connect_timeout_ms", "SourceIP": "source_ip",
	} {
		if got := snakeCase(in); got != want {
			t.Errorf("snakeCase(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestDecode_ByteOrderMark: a leading UTF-8 BOM, as some editors write,
// is ignored in JSON and HCL.
func TestDecode_ByteOrderMark(t *testing.T) {
	want := &ServiceConfigEntry{Kind: ServiceDefaults, Name: "web", Protocol: "http"}
	for name, src := range map[string]string{
		"web.json": "\ufeff{\"Kind\": \"service-defaults\", \"Name\": \"web\", \"Protocol\": \"http\"}\n",
		"web.hcl":  "\ufeffKind = \"service-defaults\"\nName = \"web\"\nProtocol = \"http\"\n",
	} {
		got, err := Decode([]byte(src), name)
		if err != nil || !reflect.DeepEqual(got, want) {
			t.Errorf("Decode(%s) = %#v, %v; want %#v", name, got, err, want)
		}
		got, _, err = DecodeWithPositions([]byte(src), name, false)
		if err != nil || !reflect.DeepEqual(got, want) {
			t.Errorf("DecodeWithPositions(%s) = %#v, %v; want %#v", name, got, err, want)
		}
	}
}
