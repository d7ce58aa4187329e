// Package api is the Go client of the Trellis HTTP API, and the JSON types
// of that API. The paths, field names and headers are those of Consul's v1
// API, so these types also describe what Consul's own clients send and read.
//
// It imports nothing else from Trellis, so it can become a module of its own.
//
//	client, err := api.NewClient(api.DefaultConfig())
//	err = client.Agent().ServiceRegister(&api.AgentServiceRegistration{Name: "web", Port: 8080})
//	entries, meta, err := client.Health().Service("web", "", true, nil)
package api
