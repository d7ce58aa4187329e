package configentry_test

import (
	"fmt"

	"github.com/trellismesh/trellis/connect/configentry"
)

func ExampleDecodeHCL() {
	src := []byte(`kind = "service-resolver"
name = "db"
redirect {
  service = "db-v2"
}
`)
	e, err := configentry.DecodeHCL(src, "db.hcl")
	if err != nil {
		fmt.Println(err)
		return
	}
	e.Normalize()
	if err := e.Validate(); err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(configentry.KeyOf(e), "->", e.(*configentry.ServiceResolverConfigEntry).Redirect.Service)

	_, err = configentry.DecodeHCL([]byte("kind = \"service-resolver\"\nname = \"db\"\nredirect {\n  servce = \"db-v2\"\n}\n"), "db.hcl")
	fmt.Println(err)
	// Output:
	// service-resolver/db -> db-v2
	// db.hcl:4:3: Redirect.servce: unknown field (did you mean Service?)
}

func ExampleCompileFilter() {
	f, err := configentry.CompileFilter(`Service.Meta.version == v2 and "canary" in Service.Tags`)
	if err != nil {
		fmt.Println(err)
		return
	}
	inst := configentry.FilterInstance{Node: "n1", Service: configentry.FilterService{
		Service: "web", Tags: []string{"canary"}, Meta: map[string]string{"version": "v2"}, Port: 8080,
	}}
	fmt.Println(f.Match(inst))
	inst.Service.Tags = nil
	fmt.Println(f.Match(inst))
	// Output:
	// true
	// false
}

func ExampleConsistent() {
	set := configentry.MapSet{}
	for _, src := range []string{
		"kind = \"service-resolver\"\nname = \"db\"\nredirect { service = \"db-v2\" }\n",
		"kind = \"service-resolver\"\nname = \"db-v2\"\nredirect { service = \"db\" }\n",
	} {
		e, _ := configentry.Decode([]byte(src), "")
		e.Normalize()
		set[configentry.KeyOf(e)] = e
	}
	fmt.Println(configentry.Consistent(set, configentry.Key{Kind: configentry.ServiceResolver, Name: "db"}))
	// Output: Redirect: loop db -> db-v2 -> db
}
