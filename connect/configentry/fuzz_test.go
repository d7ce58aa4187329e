package configentry

import (
	"encoding/json"
	"reflect"
	"testing"
)

// fuzzSeeds are the documented examples, in both key styles and both
// syntaxes.
var fuzzSeeds = []string{
	"Kind = \"service-resolver\"\nName = \"db\"\nRedirect {\n  Service = \"db-v2\"\n}\n",
	"kind = \"service-resolver\"\nname = \"db\"\nredirect { service = \"db-v2\" }\n",
	"Kind = \"service-splitter\"\nName = \"web\"\nSplits = [{ Weight = 90, ServiceSubset = \"v1\" }, { Weight = 10, ServiceSubset = \"v2\" }]\n",
	"kind = \"service-splitter\"\nname = \"web\"\nsplits {\n weight = 50\n service_subset = \"v1\"\n}\nsplits {\n weight = 50\n service_subset = \"v2\"\n}\n",
	"kind = \"service-resolver\"\nname = \"web\"\ndefault_subset = \"v1\"\nsubsets \"v1\" {\n filter = \"Service.Meta.version == v1\"\n}\nsubsets \"v2\" {\n filter = \"\\\"canary\\\" in Service.Tags\"\n}\nconnect_timeout = \"5s\"\n",
	"kind = \"service-intentions\"\nname = \"db\"\nsources = [{ name = \"web\", permissions = [{ action = \"deny\", http = { path_prefix = \"/users\", methods = [\"DELETE\"] } }] }]\n",
	"Kind = \"service-intentions\"\nName = \"db\"\nSources {\n Name = \"web\"\n Permissions {\n  Action = \"deny\"\n  HTTP {\n   PathPrefix = \"/users\"\n  }\n }\n}\n",
	"Kind = \"proxy-defaults\"\nName = \"global\"\nConfig {\n protocol = \"http\"\n}\n",
	webRouter, webHTTP, apiGRPC, webRes,
	`{"Kind":"service-defaults","Name":"web","UpstreamConfig":{"Defaults":{"PassiveHealthCheck":{"Interval":"5s","MaxEjectionPercent":50},"RetryBudget":{"Percent":20}}}}`,
	`{"kind":"service-router","name":"web","routes":[{"match":{"http":{"path_prefix":"/a","header":[{"name":"x","regex":"a.*"}]}},"destination":{"num_retries":2,"retry_on_status_codes":[503],"request_timeout":"1s","prefix_rewrite":"/"}}]}`,
	`{"Kind":"service-resolver","Name":"db","LoadBalancer":{"Policy":"ring_hash","RingHashConfig":{"MinimumRingSize":1024},"HashPolicies":[{"Field":"header","FieldValue":"x-user"}]},"DrainTimeout":"30s"}`,
}

// FuzzDecode checks that no input panics the decoder, and that an entry
// that decodes and validates marshals and decodes back equal (and still
// valid).
func FuzzDecode(f *testing.F) {
	for _, s := range fuzzSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, src []byte) {
		e, err := Decode(src, "fuzz.hcl")
		if err != nil {
			return
		}
		e.Normalize()
		if e.Validate() != nil {
			return
		}
		b, err := json.Marshal(e)
		if err != nil {
			t.Fatalf("Marshal: %v", err)
		}
		back, err := DecodeJSON(b)
		if err != nil {
			t.Fatalf("DecodeJSON(%s): %v", b, err)
		}
		if !reflect.DeepEqual(back, e) {
			bb, _ := json.Marshal(back)
			t.Fatalf("round trip differs:\n %s\n %s", b, bb)
		}
		back.Normalize()
		if err := back.Validate(); err != nil {
			t.Fatalf("valid entry invalid after a round trip: %v\n%s", err, b)
		}
	})
}
