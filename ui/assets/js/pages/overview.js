// Overview: datacenter, leader, Raft peers, agents, services by health,
// the CA root and the default intention policy.

import { h, replace, badge, link, table, until, fmtTime } from '../dom.js';
import { get, watch, every } from '../api.js';
import { byInstance, worst, summarize } from '../health.js';

const memberStatus = ['none', 'alive', 'leaving', 'left', 'failed'];

export default function overview(main, _params, signal) {
  const cluster = h('div', { class: 'cards' });
  const raft = h('div', {}, h('p', { class: 'muted' }, 'Loading…'));
  const health = h('div', { class: 'cards' });
  const ca = h('div', { class: 'cards' });
  main.append(h('h1', {}, 'Overview'),
    h('section', { 'aria-labelledby': 'ov-cluster' }, h('h2', { id: 'ov-cluster' }, 'Cluster'), cluster),
    h('section', { 'aria-labelledby': 'ov-health' }, h('h2', { id: 'ov-health' }, 'Services by health'), health),
    h('section', { 'aria-labelledby': 'ov-ca' }, h('h2', { id: 'ov-ca' }, 'Mesh'), ca),
    h('section', { 'aria-labelledby': 'ov-raft' }, h('h2', { id: 'ov-raft' }, 'Raft peers'), raft));

  const card = (title, value, extra) => h('div', { class: 'card' }, h('h2', {}, title), h('div', { class: 'big' }, value), extra || null);

  // Agent, leader, members and Raft do not block: refresh them every 5 s.
  let policy = '…';
  let caCard = null;
  const drawCA = () => replace(ca, card('Default intention policy', badge(policy === 'allow' ? 'allow' : 'deny', policy),
    h('p', { class: 'muted' }, 'Applies when no intention matches (', link('/intentions', 'intentions'), ').')), caCard);
  every(5000, async () => {
    const [self, leader, peers, members, raftCfg] = await Promise.all([
      get('/v1/agent/self', signal), get('/v1/status/leader', signal), get('/v1/status/peers', signal),
      get('/v1/agent/members', signal), get('/v1/operator/raft/configuration', signal).catch((e) => ({ error: e.message })),
    ]);
    if (signal.aborted) return;
    const counts = { alive: 0, failed: 0, left: 0, leaving: 0 };
    for (const m of members || []) counts[memberStatus[m.Status]] = (counts[memberStatus[m.Status]] || 0) + 1;
    const leaderNode = (raftCfg.Servers || []).find((s) => s.Leader)?.Node;
    replace(cluster,
      card('Datacenter', self?.Config?.Datacenter || '—'),
      card('Leader', leaderNode || leader || 'none', h('p', { class: 'muted mono' }, leader || 'no leader')),
      card('Raft peers', String((peers || []).length)),
      card('Agents', String((members || []).length), h('p', {},
        badge('alive', `${counts.alive} alive`), ' ', badge('failed', `${counts.failed} failed`), ' ',
        badge('left', `${counts.left + counts.leaving} left`))));
    policy = self?.Config?.DefaultIntentionPolicy || 'unknown';
    drawCA();
    if (raftCfg.error) {
      replace(raft, h('p', { class: 'error' }, raftCfg.error));
    } else {
      const alive = new Map((members || []).map((m) => [m.Name, memberStatus[m.Status]]));
      replace(raft, table(['Node', 'Address', 'Role', 'Voter', 'Gossip'], (raftCfg.Servers || []).map((s) => [
        link('/nodes/' + encodeURIComponent(s.Node), s.Node), h('span', { class: 'mono' }, s.Address),
        s.Leader ? badge('passing', 'leader') : 'follower', s.Voter ? 'yes' : 'no',
        badge(alive.get(s.Node) || 'critical', alive.get(s.Node) || 'unknown')])));
    }
  }, signal);

  // Health of every instance: one blocking query for all checks.
  let names = null;
  let checks = null;
  const drawHealth = () => {
    if (!names || !checks) return;
    const { instances } = byInstance(checks);
    const perService = new Map();
    for (const i of instances.values()) perService.set(i.name, [...(perService.get(i.name) || []), i.status]);
    const statuses = Object.keys(names).filter((n) => !n.endsWith('-sidecar-proxy'))
      .map((n) => worst(perService.get(n) || []));
    const c = summarize(statuses);
    replace(health,
      card('Services', String(statuses.length), h('p', {}, link('/services', 'All services'))),
      card('Passing', h('span', { class: 'txt-passing' }, String(c.passing))),
      card('Warning', h('span', { class: 'txt-warning' }, String(c.warning))),
      card('Critical', h('span', { class: 'txt-critical' }, String(c.critical))));
  };
  watch('/v1/catalog/services', (d) => { names = d || {}; drawHealth(); }, signal);
  watch('/v1/health/state/any', (d) => { checks = d || []; drawHealth(); }, signal);
  watch('/v1/connect/ca/roots', (d) => {
    const root = (d?.Roots || []).find((r) => r.Active);
    caCard = card('CA root expires', root ? h('time', { datetime: root.NotAfter, title: fmtTime(root.NotAfter) }, until(root.NotAfter)) : 'no root yet',
      root ? h('p', {}, root.Name, ' · ', link('/ca', 'certificates')) : h('p', { class: 'muted' }, 'The leader has not made the CA yet.'));
    drawCA();
  }, signal);
}
