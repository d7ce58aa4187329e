// Package config reads the agent's configuration: HCL and JSON files with
// Consul's key names, and the `trellis agent` flags.
//
// # Sources and precedence
//
// Sources are merged in order, later ones winning field by field:
//
//  1. built-in defaults (datacenter dc1, ports 8500/8600/8300/8301, …);
//  2. the -dev overlay, with -dev (a bootstrapped server on 127.0.0.1, in
//     memory, UI on);
//  3. -config-file files in the order given, then the *.hcl and *.json files
//     of each -config-dir in lexical order;
//  4. flags.
//
// Services from every file accumulate; two services with one ID are an error.
// The result is a RuntimeConfig: plain values, checked, never changed.
//
// # Files
//
// HCL native syntax and JSON are decoded by one small decoder over HCL's
// syntax trees (decode.go), so every error names file:line:col and the key.
// A list of objects may be written as repeated blocks (check { } check { }) or
// as a list (checks = [{ }, { }]). CamelCase keys ("Name", "DeregisterCriticalServiceAfter")
// are read as their snake_case form, so the JSON of Consul's agent API can be
// pasted into a service file. Services and checks are validated with the
// rules the HTTP API uses (raftstore/structs), so both answer alike.
package config
