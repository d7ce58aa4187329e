package configentry

import (
	"errors"
	"strings"
	"testing"
)

// set builds a MapSet from HCL or JSON sources, each normalized and
// validated.
func set(t *testing.T, srcs ...string) MapSet {
	t.Helper()
	m := MapSet{}
	for _, src := range srcs {
		e, err := decodeValid(t, src)
		if err != nil {
			t.Fatalf("%s: %v", src, err)
		}
		m[KeyOf(e)] = e
	}
	return m
}

const (
	webHTTP    = `{"Kind":"service-defaults","Name":"web","Protocol":"http"}`
	webTCP     = `{"Kind":"service-defaults","Name":"web","Protocol":"tcp"}`
	apiHTTP    = `{"Kind":"service-defaults","Name":"api","Protocol":"http2"}`
	apiGRPC    = `{"Kind":"service-defaults","Name":"api","Protocol":"grpc"}`
	globalHTTP = `{"Kind":"proxy-defaults","Name":"global","Config":{"protocol":"http"}}`
	webRouter  = `{"Kind":"service-router","Name":"web","Routes":[{"Match":{"HTTP":{"PathPrefix":"/api"}},"Destination":{"Service":"api"}}]}`
	webSplit   = "Kind = \"service-splitter\"\nName = \"web\"\nSplits = [{ Weight = 90, ServiceSubset = \"v1\" }, { Weight = 10, ServiceSubset = \"v2\" }]\n"
	webRes     = `{"Kind":"service-resolver","Name":"web","Subsets":{"v1":{"Filter":"Service.Meta.version == v1"},"v2":{"Filter":"Service.Meta.version == v2"}}}`
	webResV1   = `{"Kind":"service-resolver","Name":"web","Subsets":{"v1":{"Filter":"Service.Meta.version == v1"}}}`
	dbRedirect = "kind = \"service-resolver\"\nname = \"db\"\nredirect { service = \"db-v2\" }\n"
	dbV2Back   = "kind = \"service-resolver\"\nname = \"db-v2\"\nredirect { service = \"db\" }\n"
)

const webL7Ixn = `{"Kind":"service-intentions","Name":"web","Sources":[{"Name":"api","Action":"allow"},
	{"Name":"admin","Permissions":[{"Action":"allow","HTTP":{"PathPrefix":"/admin"}}]}]}`

func TestProtocol(t *testing.T) {
	s := set(t)
	if p := Protocol(s, "web"); p != "tcp" {
		t.Errorf("empty set: %q", p)
	}
	s = set(t, globalHTTP)
	if p := Protocol(s, "web"); p != "http" {
		t.Errorf("proxy-defaults: %q", p)
	}
	s = set(t, globalHTTP, apiGRPC, `{"Kind":"service-defaults","Name":"web"}`)
	if p := Protocol(s, "api"); p != "grpc" {
		t.Errorf("service-defaults: %q", p)
	}
	if p := Protocol(s, "web"); p != "http" {
		t.Errorf("service-defaults without protocol: %q", p)
	}
}

func TestConsistent(t *testing.T) {
	cases := []struct {
		name    string
		entries []string
		changed Key
		field   string
		msg     string // empty: consistent
	}{
		{"router for http", []string{webHTTP, apiHTTP, webRouter}, Key{ServiceRouter, "web"}, "", ""},
		{"L7 permissions for http", []string{webHTTP, webL7Ixn}, Key{ServiceIntentions, "web"}, "", ""},
		{"L7 permissions for tcp", []string{webL7Ixn}, Key{ServiceIntentions, "web"}, "Sources[1].Permissions",
			`source "admin" of service "web" has L7 permissions, which need protocol http, http2 or grpc; its protocol is tcp (the default`},
		{"service-defaults to tcp under L7 permissions", []string{webTCP, webL7Ixn}, Key{ServiceDefaults, "web"}, "Protocol", `source "admin" of service "web" has L7 permissions`},
		{"actions only for tcp", []string{`{"Kind":"service-intentions","Name":"web","Sources":[{"Name":"api","Action":"allow"}]}`}, Key{ServiceIntentions, "web"}, "", ""},
		{"L7 permissions for a wildcard", []string{`{"Kind":"service-intentions","Name":"*","Sources":[{"Name":"api","Permissions":[{"Action":"deny","HTTP":{"PathPrefix":"/x"}}]}]}`}, Key{ServiceIntentions, "*"}, "", ""},
		{"router via proxy-defaults", []string{globalHTTP, webRouter}, Key{ServiceRouter, "web"}, "", ""},
		{"router for tcp", []string{webRouter}, Key{ServiceRouter, "web"}, "Name",
			`service "web" has a service-router, which needs protocol http, http2 or grpc; its protocol is tcp (the default`},
		{"service-defaults to tcp", []string{webTCP, apiHTTP, webRouter}, Key{ServiceDefaults, "web"}, "Protocol",
			`service "web" has a service-router, which needs protocol http, http2 or grpc; its protocol is tcp (set by service-defaults/web)`},
		{"service-defaults deleted", []string{apiHTTP, webRouter}, Key{ServiceDefaults, "web"}, "Protocol", `service "web" has a service-router`},
		{"proxy-defaults to tcp", []string{`{"Kind":"proxy-defaults","Name":"global","Config":{"protocol":"tcp"}}`, webSplit, webRes}, Key{ProxyDefaults, "global"}, `Config["protocol"]`,
			`service "web" has a service-splitter, which needs protocol http, http2 or grpc; its protocol is tcp (set by proxy-defaults/global)`},
		{"unrelated change", []string{webRouter, `{"Kind":"service-defaults","Name":"other","Protocol":"tcp"}`}, Key{ServiceDefaults, "other"}, "", ""},
		{"route to grpc", []string{webHTTP, apiGRPC, webRouter}, Key{ServiceRouter, "web"}, "Routes[0].Destination.Service",
			`leads to "api", which speaks grpc, but "web" speaks http`},
		{"api changed to grpc", []string{webHTTP, apiGRPC, webRouter}, Key{ServiceDefaults, "api"}, "Protocol", `service-router/web Routes[0].Destination.Service leads to "api"`},
		{"route to tcp", []string{webHTTP, webRouter}, Key{ServiceRouter, "web"}, "Routes[0].Destination.Service", `"api", which speaks tcp`},
		{"split subsets defined", []string{webHTTP, webRes, webSplit}, Key{ServiceSplitter, "web"}, "", ""},
		{"split subset undefined", []string{webHTTP, webResV1, webSplit}, Key{ServiceSplitter, "web"}, "Splits[1].ServiceSubset",
			`leads to subset "v2" of "web", but service-resolver/web defines only v1`},
		{"split subset removed", []string{webHTTP, webResV1, webSplit}, Key{ServiceResolver, "web"}, "Subsets", `service-splitter/web Splits[1].ServiceSubset leads to subset "v2"`},
		{"split subset no resolver", []string{webHTTP, webSplit}, Key{ServiceSplitter, "web"}, "Splits[0].ServiceSubset", `no service-resolver for "web" defines subsets`},
		{"resolver deleted", []string{webHTTP, webSplit}, Key{ServiceResolver, "web"}, "Subsets", `no service-resolver for "web"`},
		{"route subset", []string{webHTTP, `{"Kind":"service-router","Name":"web","Routes":[{"Destination":{"ServiceSubset":"v3"}}]}`, webRes}, Key{ServiceRouter, "web"},
			"Routes[0].Destination.ServiceSubset", `subset "v3" of "web", but service-resolver/web defines only v1, v2`},
		{"redirect subset", []string{`{"Kind":"service-resolver","Name":"db","Redirect":{"Service":"db-v2","ServiceSubset":"fast"}}`, `{"Kind":"service-resolver","Name":"db-v2"}`}, Key{ServiceResolver, "db"},
			"Redirect.ServiceSubset", `service-resolver/db-v2 defines no subsets`},
		{"failover subset", []string{`{"Kind":"service-resolver","Name":"db","Subsets":{"a":{}},"Failover":{"a":{"ServiceSubset":"b"}}}`}, Key{ServiceResolver, "db"},
			`Failover["a"].ServiceSubset`, `subset "b" of "db"`},
		{"redirect ok", []string{dbRedirect}, Key{ServiceResolver, "db"}, "", ""},
		{"redirect loop", []string{dbRedirect, dbV2Back}, Key{ServiceResolver, "db"}, "Redirect", "loop db -> db-v2 -> db"},
		{"redirect loop other end", []string{dbRedirect, dbV2Back}, Key{ServiceResolver, "db-v2"}, "Redirect", "loop db-v2 -> db -> db-v2"},
		{"redirect loop of three", []string{dbRedirect, `{"Kind":"service-resolver","Name":"db-v2","Redirect":{"Service":"db-v3"}}`, `{"Kind":"service-resolver","Name":"db-v3","Redirect":{"Service":"db"}}`},
			Key{ServiceResolver, "db-v3"}, "Redirect", "loop db-v3 -> db -> db-v2 -> db-v3"},
		{"redirect across datacenters", []string{dbRedirect, `{"Kind":"service-resolver","Name":"db-v2","Redirect":{"Service":"db","Datacenter":"dc2"}}`}, Key{ServiceResolver, "db"}, "", ""},
		{"splitter to self", []string{globalHTTP, webSplit, webRes}, Key{ServiceSplitter, "web"}, "", ""},
		{"splitter nested", []string{globalHTTP,
			`{"Kind":"service-splitter","Name":"a","Splits":[{"Weight":50,"Service":"b"},{"Weight":50}]}`,
			`{"Kind":"service-splitter","Name":"b","Splits":[{"Weight":50,"Service":"c"},{"Weight":50}]}`}, Key{ServiceSplitter, "a"}, "", ""},
		{"splitter cycle", []string{globalHTTP,
			`{"Kind":"service-splitter","Name":"a","Splits":[{"Weight":50,"Service":"b"},{"Weight":50}]}`,
			`{"Kind":"service-splitter","Name":"b","Splits":[{"Weight":50,"Service":"c"},{"Weight":50}]}`,
			`{"Kind":"service-splitter","Name":"c","Splits":[{"Weight":100,"Service":"a"}]}`}, Key{ServiceSplitter, "b"}, "Splits", "loop b -> c -> a -> b"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := set(t, c.entries...)
			err := Consistent(s, c.changed)
			if c.msg == "" {
				if err != nil {
					t.Fatalf("Consistent: %v", err)
				}
				return
			}
			var fe *FieldError
			if !errors.As(err, &fe) {
				t.Fatalf("Consistent = %v, want a *FieldError", err)
			}
			if fe.Field != c.field || !strings.Contains(fe.Msg, c.msg) {
				t.Fatalf("Consistent = %q, want field %q and a message containing %q", err, c.field, c.msg)
			}
		})
	}
}
