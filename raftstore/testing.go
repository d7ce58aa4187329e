package raftstore

import "time"

// TestConfig returns a configuration for a single bootstrapped server on a
// free loopback port with fast timers, in memory unless dataDir is set.
func TestConfig(name, dataDir string) Config {
	cfg := DefaultConfig()
	cfg.NodeName = name
	cfg.DataDir = dataDir
	cfg.BindAddr = "127.0.0.1:0"
	cfg.Bootstrap = true
	cfg.Timing = DevTiming()
	cfg.ServerStabilizationTime = 200 * time.Millisecond
	cfg.ReconcileInterval = time.Second
	cfg.MissingGrace = time.Second
	cfg.CAPruneInterval = 100 * time.Millisecond
	cfg.CARootGrace = 200 * time.Millisecond
	return cfg
}
