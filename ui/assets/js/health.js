// health.js: health states and how they combine.

const rank = { passing: 0, warning: 1, critical: 2, maintenance: 2 };

/** worst returns the worst of some statuses ('passing' for none). */
export function worst(statuses) {
  let w = 'passing';
  for (const s of statuses) if ((rank[s] ?? 2) > rank[w]) w = s === 'maintenance' ? 'critical' : s;
  return w;
}

/**
 * byInstance groups checks (from /v1/health/state/any) into the status of
 * each service instance, key "node/serviceID", folding in its node's checks.
 * Returns { instances: Map(key → {node, id, name, status}), nodes: Map(node → status) }.
 */
export function byInstance(checks) {
  const nodes = new Map();
  const inst = new Map();
  for (const c of checks || []) {
    if (!c.ServiceID) {
      nodes.set(c.Node, worst([nodes.get(c.Node) || 'passing', c.Status]));
      continue;
    }
    const key = c.Node + '/' + c.ServiceID;
    const cur = inst.get(key);
    if (cur) cur.status = worst([cur.status, c.Status]);
    else inst.set(key, { node: c.Node, id: c.ServiceID, name: c.ServiceName, status: c.Status });
  }
  for (const i of inst.values()) i.status = worst([i.status, nodes.get(i.node) || 'passing']);
  return { instances: inst, nodes };
}

/** summarize counts statuses: {passing, warning, critical}. */
export function summarize(statuses) {
  const out = { passing: 0, warning: 0, critical: 0 };
  for (const s of statuses) out[s === 'maintenance' ? 'critical' : s] = (out[s === 'maintenance' ? 'critical' : s] || 0) + 1;
  return out;
}
