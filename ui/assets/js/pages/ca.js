// CA roots and the leaf certificates of this agent's mesh services.

import { h, replace, badge, table, until, fmtTime } from '../dom.js';
import { get, watch, esc } from '../api.js';

const expiry = (t) => h('time', { datetime: t, title: fmtTime(t) }, until(t));

export default function caPage(main, _params, signal) {
  const roots = h('div', { id: 'ca-roots' }, h('p', { class: 'muted' }, 'Loading…'));
  const leaves = h('div', { id: 'ca-leaves' }, h('p', { class: 'muted' }, 'Loading…'));
  const trust = h('p', { class: 'muted' });
  main.append(h('h1', {}, 'Certificates'),
    h('section', { 'aria-labelledby': 'ca-r' }, h('h2', { id: 'ca-r' }, 'CA roots'), trust, roots),
    h('section', { 'aria-labelledby': 'ca-l' }, h('h2', { id: 'ca-l' }, 'Leaf certificates on this agent'),
      h('p', { class: 'muted' }, 'One per local service with a sidecar; the agent renews each before it expires.'), leaves));

  watch('/v1/connect/ca/roots', (d) => {
    trust.textContent = d?.TrustDomain ? `Trust domain: ${d.TrustDomain}` : '';
    const list = d?.Roots || [];
    replace(roots, list.length ? table(['Name', 'Active', 'Valid from', 'Expires', 'Key', 'ID'], list.map((r) => [
      r.Name, r.Active ? badge('passing', 'active') : 'no', h('span', { class: 'nowrap' }, fmtTime(r.NotBefore)),
      [h('span', { class: 'nowrap' }, fmtTime(r.NotAfter)), ' (', expiry(r.NotAfter), ')'], h('span', { class: 'nowrap' }, `${r.PrivateKeyType || ''} ${r.PrivateKeyBits || ''}`),
      h('span', { class: 'mono id' }, r.ID)])) : h('p', { class: 'empty' }, 'No CA root yet: the leader makes one when it starts.'));
    loadLeaves();
  }, signal);

  async function loadLeaves() {
    try {
      const svcs = Object.values(await get('/v1/agent/services', signal) || {});
      const names = [...new Set(svcs.filter((s) => s.Kind === 'connect-proxy' && s.Proxy?.DestinationServiceName)
        .map((s) => s.Proxy.DestinationServiceName))].sort();
      const certs = await Promise.all(names.map((n) => get(`/v1/agent/connect/ca/leaf/${esc(n)}`, signal).catch((e) => ({ Service: n, error: e.message }))));
      if (signal.aborted) return;
      replace(leaves, certs.length ? table(['Service', 'Identity', 'Valid from', 'Expires', 'Serial'], certs.map((c) => c.error
        ? [c.Service, h('span', { class: 'error' }, c.error), '', '', '']
        : [c.Service, h('span', { class: 'mono id' }, c.ServiceURI), h('span', { class: 'nowrap' }, fmtTime(c.ValidAfter)),
          [h('span', { class: 'nowrap' }, fmtTime(c.ValidBefore)), ' (', expiry(c.ValidBefore), ')'], h('span', { class: 'mono id' }, c.SerialNumber)])) : h('p', { class: 'empty' }, 'No local service has a sidecar.'));
    } catch (e) {
      if (!signal.aborted) replace(leaves, h('p', { class: 'error' }, e.message));
    }
  }
}
