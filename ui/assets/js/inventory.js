// inventory.js: every service instance of the datacenter, read through the
// public catalog: /v1/catalog/nodes, then /v1/catalog/node/:node for each
// (four at a time). It is re-read when the catalog's service list changes,
// so callers get instance counts, kinds and proxies' upstreams without one
// request per service.

import { get, esc } from './api.js';

/** load resolves to a list of {node, address, svc} (svc an AgentService). */
export async function load(signal) {
  const nodes = await get('/v1/catalog/nodes', signal) || [];
  const out = [];
  let next = 0;
  async function worker() {
    while (next < nodes.length && !signal.aborted) {
      const n = nodes[next++];
      const cn = await get(`/v1/catalog/node/${esc(n.Node)}`, signal);
      for (const svc of Object.values(cn?.Services || {})) out.push({ node: n.Node, address: n.Address, svc });
    }
  }
  await Promise.all([worker(), worker(), worker(), worker()]);
  return out;
}

/** proxied returns the names of services that have a sidecar proxy. */
export function proxied(instances) {
  const out = new Set();
  for (const { svc } of instances) {
    if (svc.Kind === 'connect-proxy' && svc.Proxy?.DestinationServiceName) out.add(svc.Proxy.DestinationServiceName);
  }
  return out;
}

/** isProxy tells a proxy's catalog name, from the kinds seen or the naming convention. */
export function proxyNames(instances) {
  const out = new Set();
  for (const { svc } of instances) if (svc.Kind) out.add(svc.Service);
  return out;
}
