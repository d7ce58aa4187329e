// CA roots and the leaf certificates every node holds.

import { h, replace, badge, table, until, fmtTime, link } from '../dom.js';
import { watch, esc } from '../api.js';

const expiry = (t) => h('time', { datetime: t, title: fmtTime(t) }, until(t));

export default function caPage(main, _params, signal) {
  const roots = h('div', { id: 'ca-roots' }, h('p', { class: 'muted' }, 'Loading…'));
  const leaves = h('div', { id: 'ca-leaves' }, h('p', { class: 'muted' }, 'Loading…'));
  const trust = h('p', { class: 'muted' });
  main.append(h('h1', {}, 'Certificates'),
    h('section', { 'aria-labelledby': 'ca-r' }, h('h2', { id: 'ca-r' }, 'CA roots'), trust, roots),
    h('section', { 'aria-labelledby': 'ca-l' }, h('h2', { id: 'ca-l' }, 'Leaf certificates'),
      h('p', { class: 'muted' }, 'One per service with a sidecar on each node, soonest to expire first, as the leader recorded them when it signed them. ' +
        'Agents renew each well before it expires; the private keys never leave their nodes.'), leaves));

  let rootNames = new Map();
  let lastLeaves = null;
  watch('/v1/connect/ca/roots', (d) => {
    trust.textContent = d?.TrustDomain ? `Trust domain: ${d.TrustDomain}` : '';
    const list = d?.Roots || [];
    rootNames = new Map(list.map((r) => [r.ID, r.Active ? `${r.Name} (active)` : r.Name]));
    replace(roots, list.length ? table(['Name', 'Active', 'Valid from', 'Expires', 'Key', 'ID'], list.map((r) => [
      r.Name, r.Active ? badge('passing', 'active') : 'no', h('span', { class: 'nowrap' }, fmtTime(r.NotBefore)),
      [h('span', { class: 'nowrap' }, fmtTime(r.NotAfter)), ' (', expiry(r.NotAfter), ')'], h('span', { class: 'nowrap' }, `${r.PrivateKeyType || ''} ${r.PrivateKeyBits || ''}`),
      h('span', { class: 'mono id' }, r.ID)])) : h('p', { class: 'empty' }, 'No CA root yet: the leader makes one when it starts.'));
    if (lastLeaves) drawLeaves(lastLeaves);
  }, signal);

  watch('/v1/connect/ca/leaves', (d) => { lastLeaves = d || []; drawLeaves(lastLeaves); }, signal);

  function drawLeaves(list) {
    replace(leaves, list.length ? table(['Service', 'Node', 'Expires', 'Signed by', 'Serial'], list.map((l) => [
      link('/services/' + esc(l.Service), l.Service), link('/nodes/' + esc(l.Node), l.Node),
      [h('span', { class: 'nowrap' }, fmtTime(l.ValidBefore)), ' (', expiry(l.ValidBefore), ')'],
      rootNames.get(l.RootID) || h('span', { class: 'mono id' }, l.RootID),
      h('span', { class: 'mono id' }, l.SerialNumber)]), { caption: 'Leaf certificates of every node' })
      : h('p', { class: 'empty' }, 'No node holds a leaf yet: agents ask for one when a service with a sidecar is registered.'));
  }
}
