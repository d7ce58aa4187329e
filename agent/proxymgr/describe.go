package proxymgr

import "github.com/trellismesh/trellis/connect/proxy"

// Describe returns a snapshot of the running proxy of the sidecar with
// service ID id; false when this manager runs no such proxy.
func (m *Manager) Describe(id string) (proxy.Description, bool) {
	m.mu.Lock()
	mp := m.proxies[id]
	m.mu.Unlock()
	if mp == nil || mp.p == nil {
		return proxy.Description{}, false
	}
	return mp.p.Describe(), true
}
