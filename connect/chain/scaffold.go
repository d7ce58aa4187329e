package chain

// SCAFFOLD: replaced by compile.go.

// Compile builds the chain of req.ServiceName from req.Entries. It refuses
// (with an error naming the entry and field) a graph that validation should
// already have refused: a redirect loop, a subset that does not exist.
func Compile(req Request) (*Chain, error) {
	id := req.ServiceName + ".default.default." + req.Datacenter
	return &Chain{
		ServiceName: req.ServiceName, Datacenter: req.Datacenter, Protocol: "tcp", Default: true,
		StartNode: "resolver:" + id,
		Nodes: map[string]*Node{"resolver:" + id: {Type: NodeResolver, Name: id,
			Resolver: &Resolver{Default: true, Target: id}}},
		Targets: map[string]*Target{id: {ID: id, Service: req.ServiceName, Datacenter: req.Datacenter, Name: req.ServiceName}},
	}, nil
}
