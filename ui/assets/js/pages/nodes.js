// Nodes: gossip members with status, role, address, version and the leader
// marker; a node's page with its services and checks.

import { h, replace, badge, link, table } from '../dom.js';
import { get, watch, every, esc } from '../api.js';
import { worst } from '../health.js';

const memberStatus = ['none', 'alive', 'leaving', 'left', 'failed'];

/** nodesPage lists the gossip members (refreshed every 5 s: members do not block). */
export function nodesPage(main, _params, signal) {
  const list = h('div', { id: 'nodes' }, h('p', { class: 'muted' }, 'Loading…'));
  main.append(h('h1', {}, 'Nodes'), list);
  let health = new Map();
  let members = null;
  let raft = [];
  const draw = () => {
    if (!members) return;
    const leader = raft.find((s) => s.Leader)?.Node;
    const sorted = [...members].sort((a, b) => a.Name.localeCompare(b.Name));
    replace(list, table(['Node', 'Status', 'Health', 'Role', 'Address', 'Version'], sorted.map((m) => {
      const st = memberStatus[m.Status] || 'unknown';
      const t = m.Tags || {};
      return [
        [link('/nodes/' + esc(m.Name), m.Name), m.Name === leader ? [' ', h('span', { class: 'badge passing', title: 'Raft leader' }, '★ leader')] : null],
        badge(st === 'alive' ? 'alive' : st, st),
        health.has(m.Name) ? badge(health.get(m.Name)) : h('span', { class: 'muted' }, '—'),
        t.role === 'consul' || t.role === 'server' ? 'server' : (t.role || 'client'),
        h('span', { class: 'mono' }, `${m.Addr}:${m.Port}`),
        t.build || t.version || '—',
      ];
    })));
  };
  every(5000, async () => {
    const [m, r] = await Promise.all([get('/v1/agent/members', signal), get('/v1/operator/raft/configuration', signal).catch(() => ({}))]);
    members = m || [];
    raft = r?.Servers || [];
    draw();
  }, signal);
  watch('/v1/health/state/any', (checks) => {
    const by = new Map();
    for (const c of checks || []) if (!c.ServiceID) by.set(c.Node, worst([by.get(c.Node) || 'passing', c.Status]));
    health = by;
    draw();
  }, signal);
}

/** nodePage shows one node's services and checks. */
export function nodePage(main, { name }, signal) {
  const info = h('div', {}, h('p', { class: 'muted' }, 'Loading…'));
  const svcs = h('div', {});
  const checks = h('div', {});
  main.append(h('h1', {}, name), h('p', {}, link('/nodes', '← All nodes')), info,
    h('section', { 'aria-labelledby': 'nd-svc' }, h('h2', { id: 'nd-svc' }, 'Services'), svcs),
    h('section', { 'aria-labelledby': 'nd-chk' }, h('h2', { id: 'nd-chk' }, 'Checks'), checks));
  watch(`/v1/catalog/node/${esc(name)}`, (cn) => {
    if (!cn) {
      replace(info, h('p', { class: 'empty' }, `No node ${name} in the catalog.`));
      replace(svcs);
      return;
    }
    const n = cn.Node || {};
    replace(info, h('dl', { class: 'kv' }, h('dt', {}, 'Address'), h('dd', { class: 'mono' }, n.Address || '—'),
      h('dt', {}, 'Datacenter'), h('dd', {}, n.Datacenter || '—'),
      h('dt', {}, 'ID'), h('dd', { class: 'mono' }, n.ID || '—'),
      Object.entries(n.Meta || {}).map(([k, v]) => [h('dt', {}, k), h('dd', {}, v)])));
    const list = Object.values(cn.Services || {}).sort((a, b) => a.ID.localeCompare(b.ID));
    replace(svcs, list.length ? table(['Service', 'ID', 'Kind', 'Port', 'Tags'], list.map((sv) => [
      link('/services/' + esc(sv.Service), sv.Service), h('span', { class: 'mono' }, sv.ID), sv.Kind || 'typical',
      String(sv.Port), (sv.Tags || []).map((x) => h('span', { class: 'tag' }, x))]), { num: ['Port'] }) : h('p', { class: 'empty' }, 'No services.'));
  }, signal);
  watch(`/v1/health/node/${esc(name)}`, (cs) => {
    cs = cs || [];
    replace(checks, cs.length ? table(['Check', 'Status', 'Service', 'Output'], cs.map((c) => [
      c.Name || c.CheckID, badge(c.Status), c.ServiceName ? link('/services/' + esc(c.ServiceName), c.ServiceName) : h('span', { class: 'muted' }, 'node'),
      c.Output ? h('pre', {}, c.Output) : '']))
      : h('p', { class: 'empty' }, 'No checks.'));
  }, signal);
}
