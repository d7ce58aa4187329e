// Services: the searchable list, and one service's page (instances,
// topology with each edge's golden metrics, traffic, routing).

import { h, s, replace, badge, link, table } from '../dom.js';
import { get, watch, every, esc, APIError } from '../api.js';
import { byInstance, worst, summarize } from '../health.js';
import * as inventory from '../inventory.js';
import { describeRouting } from './routing.js';

function healthSummary(statuses) {
  const c = summarize(statuses);
  const parts = [];
  for (const k of ['passing', 'warning', 'critical']) if (c[k]) parts.push(badge(k, `${c[k]} ${k}`));
  if (!parts.length) parts.push(h('span', { class: 'muted' }, 'no checks'));
  return h('span', { class: 'health' }, parts);
}

const isProxyName = (n) => n.endsWith('-sidecar-proxy');

/** servicesPage lists every service of the datacenter. */
export function servicesPage(main, _params, signal) {
  const q = new URLSearchParams(location.search);
  const search = h('input', { type: 'search', id: 'svc-search', name: 'q', value: q.get('q') || '', placeholder: 'name or tag', autocomplete: 'off' });
  const healthSel = h('select', { id: 'svc-health', name: 'health' },
    ['', 'passing', 'warning', 'critical'].map((v) => h('option', { value: v }, v || 'any')));
  healthSel.value = q.get('health') || '';
  const tagSel = h('select', { id: 'svc-tag', name: 'tag' }, h('option', { value: '' }, 'any'));
  const count = h('span', { class: 'count', 'aria-live': 'polite', id: 'svc-count' });
  const list = h('div', { id: 'services' }, h('p', { class: 'muted' }, 'Loading…'));
  main.append(h('h1', {}, 'Services', count),
    h('form', { class: 'toolbar', role: 'search', onsubmit: (e) => e.preventDefault() },
      h('div', {}, h('label', { for: 'svc-search' }, 'Search'), search),
      h('div', {}, h('label', { for: 'svc-health' }, 'Health'), healthSel),
      h('div', {}, h('label', { for: 'svc-tag' }, 'Tag'), tagSel)),
    list);

  let names = null; // name → tags
  let checks = null;
  let instances = null; // from inventory, when loaded
  let wantTag = q.get('tag') || '';

  function rows() {
    const { instances: hi } = byInstance(checks);
    const statusBy = new Map();
    for (const i of hi.values()) statusBy.set(i.name, [...(statusBy.get(i.name) || []), i.status]);
    const countBy = new Map();
    let proxies = new Set();
    let meshed = new Set();
    if (instances) {
      for (const { svc } of instances) countBy.set(svc.Service, (countBy.get(svc.Service) || 0) + 1);
      proxies = inventory.proxyNames(instances);
      meshed = inventory.proxied(instances);
    }
    const out = [];
    for (const [name, tags] of Object.entries(names)) {
      if (proxies.has(name) || (!instances && isProxyName(name))) continue;
      const st = statusBy.get(name) || [];
      if (!instances && names[name + '-sidecar-proxy']) meshed.add(name);
      out.push({ name, tags: tags || [], statuses: st, status: worst(st), count: countBy.get(name) ?? st.length, mesh: meshed.has(name) });
    }
    out.sort((a, b) => a.name.localeCompare(b.name));
    return out;
  }

  function draw() {
    if (!names || !checks) return;
    const all = rows();
    const tags = [...new Set(all.flatMap((r) => r.tags))].sort();
    const keep = tagSel.value || wantTag;
    replace(tagSel, h('option', { value: '' }, 'any'), tags.map((t) => h('option', { value: t }, t)));
    tagSel.value = tags.includes(keep) ? keep : '';
    const term = search.value.trim().toLowerCase();
    const shown = all.filter((r) => (!term || r.name.toLowerCase().includes(term) || r.tags.some((t) => t.toLowerCase().includes(term))) &&
      (!healthSel.value || r.status === healthSel.value) && (!tagSel.value || r.tags.includes(tagSel.value)));
    count.textContent = shown.length === all.length ? `${all.length}` : `${shown.length} of ${all.length}`;
    if (!shown.length) {
      replace(list, h('p', { class: 'empty' }, all.length ? 'No service matches the filters.' : 'No services are registered.'));
      return;
    }
    const t = table(['Service', 'Health', 'Instances', 'Tags'], [], { num: ['Instances'] });
    const tbody = t.querySelector('tbody');
    const frag = document.createDocumentFragment();
    for (const r of shown) {
      const tr = h('tr', { dataset: { service: r.name, health: r.status } },
        h('td', { 'data-label': 'Service' }, link('/services/' + esc(r.name), r.name), r.mesh ? [' ', h('span', { class: 'badge mesh', title: 'has a sidecar proxy' }, 'mesh')] : null),
        h('td', { 'data-label': 'Health' }, healthSummary(r.statuses)),
        h('td', { 'data-label': 'Instances', class: 'num' }, String(r.count)),
        h('td', { 'data-label': 'Tags' }, r.tags.map((x) => h('span', { class: 'tag' }, x))));
      frag.append(tr);
    }
    tbody.append(frag);
    t.querySelector('table').id = 'services-table';
    replace(list, t);
    if (instances && !performance.getEntriesByName('services-drawn').length) {
      // For the benchmark: the list is complete (instances counted) once
      // the frame after this one starts, i.e. once this one is painted.
      requestAnimationFrame(() => setTimeout(() => performance.mark('services-drawn', { detail: all.length })));
    }
  }

  function syncURL() {
    const p = new URLSearchParams();
    if (search.value) p.set('q', search.value);
    if (healthSel.value) p.set('health', healthSel.value);
    if (tagSel.value) p.set('tag', tagSel.value);
    const qs = p.toString();
    history.replaceState(null, '', location.pathname + (qs ? '?' + qs : ''));
  }
  for (const el of [search, healthSel, tagSel]) el.addEventListener('input', () => { wantTag = tagSel.value; syncURL(); draw(); });

  // The inventory (instance counts, which services are proxies) is read at
  // once, beside the two watches, and again when the service list changes.
  // The list is drawn when all three are in, or without the counts if the
  // inventory is slow: drawing a long table twice costs more than waiting.
  let invGen = 0;
  let firstNames = true;
  let patience = null;
  let waited = false;
  const loadInventory = () => {
    const gen = ++invGen;
    inventory.load(signal).then((inst) => { if (gen === invGen && !signal.aborted) { instances = inst; draw(); } }).catch(() => {});
  };
  const drawSoon = () => {
    // Once the wait for the counts is over, changes draw at once, counts
    // or not.
    if (instances || waited) draw();
    else if (names && checks && !patience) {
      patience = setTimeout(() => { waited = true; if (!signal.aborted) draw(); }, 500);
    }
  };
  loadInventory();
  watch('/v1/catalog/services', (d) => {
    names = d || {};
    if (firstNames) firstNames = false;
    else loadInventory();
    drawSoon();
  }, signal);
  watch('/v1/health/state/any', (d) => { checks = d || []; drawSoon(); }, signal);
}

function checkList(cs) {
  return h('ul', { class: 'checks' }, cs.map((c) => h('li', {},
    badge(c.Status), ' ', c.Name || c.CheckID, c.ServiceID ? null : h('span', { class: 'muted' }, ' (node)'),
    c.Output ? h('details', {}, h('summary', {}, 'output'), h('pre', {}, c.Output)) : null)));
}

/** servicePage shows one service: instances, topology and routing. */
export function servicePage(main, { name }, signal) {
  const meshBadge = h('span');
  const inst = h('div', {}, h('p', { class: 'muted' }, 'Loading…'));
  const topo = h('div', { class: 'topology', id: 'topology' }, h('p', { class: 'muted' }, 'Loading…'));
  const traffic = h('div', { id: 'traffic' }, h('p', { class: 'muted' }, 'Loading…'));
  const routing = h('div', { id: 'routing' }, h('p', { class: 'muted' }, 'Loading…'));
  main.append(h('h1', {}, name, ' ', meshBadge),
    h('p', {}, link('/services', '← All services')),
    h('section', { 'aria-labelledby': 'sv-inst' }, h('h2', { id: 'sv-inst' }, 'Instances'), inst),
    h('section', { 'aria-labelledby': 'sv-topo' }, h('h2', { id: 'sv-topo' }, 'Topology'),
      h('p', { class: 'muted' }, 'Downstreams (services whose sidecars list this one as an upstream) on the left, upstreams on the right. ' +
        'An edge is green and solid when intentions allow the call, red and dashed when they deny it.'), topo,
      h('p', { class: 'muted', id: 'metrics-note' },
        `The figures on each edge — requests per second (connections for tcp), success rate, p50 and p99 latency — ` +
        `cover the last ${WINDOW_WORDS}, as the proxies on each side report them: the caller\u2019s proxy when it reported, ` +
        `else the destination\u2019s. They are refreshed every ${POLL_MS / 1000} seconds.`),
      h('h3', { id: 'sv-traffic' }, 'Traffic'), traffic),
    h('section', { 'aria-labelledby': 'sv-routing' }, h('h2', { id: 'sv-routing' }, 'Routing'), routing));

  watch(`/v1/health/service/${esc(name)}`, (entries) => {
    entries = entries || [];
    if (!entries.length) {
      replace(inst, h('p', { class: 'empty' }, `No instances of ${name} are registered.`));
      return;
    }
    replace(inst, table(['Node', 'Address', 'Health', 'Tags', 'Checks'], entries.map((e) => [
      link('/nodes/' + esc(e.Node.Node), e.Node.Node),
      h('span', { class: 'mono' }, `${e.Service.Address || e.Node.Address}:${e.Service.Port}`),
      badge(worst((e.Checks || []).map((c) => c.Status))),
      (e.Service.Tags || []).map((x) => h('span', { class: 'tag' }, x)),
      checkList(e.Checks || [])])));
  }, signal);

  // Golden metrics: the endpoint does not block, so it is read every
  // POLL_MS. The figures are written into the drawn edges in place (the
  // SVG is rebuilt only when the topology changes, so focus stays put).
  let metrics = null; // the last answer's edges, or null before the first
  let metricsError = null;
  const paint = () => paintMetrics(topo, metrics, metricsError);
  every(POLL_MS, async () => {
    try {
      const m = await get(`/v1/connect/metrics?service=${esc(name)}&window=${WINDOW}`, signal);
      if (signal.aborted) return;
      metrics = m?.Edges || [];
      metricsError = null;
    } catch (e) {
      if (signal.aborted || !(e instanceof APIError)) throw e; // network: the banner says so; keep the last figures
      metricsError = e.message;
    }
    paint();
    drawTraffic(traffic, name, metrics, metricsError);
  }, signal);

  // Topology: upstreams from this service's sidecars, downstreams from
  // every sidecar in the catalog that lists it; edges checked against the
  // intentions, re-checked whenever they change.
  let ups = null;
  let downs = null;
  let ixnTick = 0;
  let drawGen = 0;
  async function drawTopology() {
    if (ups === null || downs === null) return;
    const gen = ++drawGen;
    const edges = [...downs.map((d) => [d, name]), ...ups.map((u) => [name, u])];
    const verdicts = await Promise.all(edges.map(([a, b]) =>
      get(`/v1/connect/intentions/check?source=${esc(a)}&destination=${esc(b)}`, signal)
        .then((r) => (r?.Allowed ? 'allow' : 'deny')).catch(() => 'unknown')));
    if (gen !== drawGen || signal.aborted) return;
    replace(topo, topology(name, downs, ups, new Map(edges.map(([a, b], i) => [a + '>' + b, verdicts[i]]))));
    paint();
  }
  // One watch of the catalog's service list re-reads the inventory, which
  // has every sidecar with its upstreams: this service's own sidecars give
  // its upstreams, the others' upstream lists its downstreams.
  let invGen = 0;
  watch('/v1/catalog/services', () => {
    const gen = ++invGen;
    inventory.load(signal).then((all) => {
      if (gen !== invGen || signal.aborted) return;
      const up = new Set();
      const down = new Set();
      let meshed = false;
      for (const { svc } of all) {
        if (svc.Kind !== 'connect-proxy') continue;
        const us = svc.Proxy?.Upstreams || [];
        if (svc.Proxy?.DestinationServiceName === name) {
          meshed = true;
          for (const u of us) up.add(u.DestinationName);
        }
        if (us.some((u) => u.DestinationName === name)) down.add(svc.Proxy.DestinationServiceName);
      }
      ups = [...up].sort();
      downs = [...down].sort();
      replace(meshBadge, meshed ? h('span', { class: 'badge mesh' }, 'mesh') : null);
      drawTopology();
    }).catch((e) => { if (!signal.aborted) replace(topo, h('p', { class: 'error' }, `Could not read the catalog: ${e.message}`)); });
  }, signal);
  watch('/v1/connect/intentions', () => { if (ixnTick++) drawTopology(); }, signal);

  describeRouting(name, signal).then((nodes) => replace(routing, nodes)).catch((e) => {
    replace(routing, h('p', { class: 'error' }, e instanceof APIError ? e.message : 'could not read the routing'));
  });
}

// The golden metrics' window and refresh.
const WINDOW = '15s';
const WINDOW_WORDS = '15 seconds';
const POLL_MS = 5000;

const verdictWords = { allow: 'allowed', deny: 'denied', unknown: 'unknown' };

/** side is the figures an edge is shown with: the callers' proxies', else the destination's. */
function side(e) {
  return e.Outbound ? { fig: e.Outbound, by: 'outbound' } : e.Inbound ? { fig: e.Inbound, by: 'inbound' } : null;
}

/** edgeFor picks the endpoint's edge a → b (the busiest, if the protocol changed within the window). */
function edgeFor(edges, a, b) {
  let best = null;
  for (const e of edges) {
    if (e.Source !== a || e.Destination !== b || !side(e)) continue;
    if (!best || side(e).fig.Requests > side(best).fig.Requests) best = e;
  }
  return best;
}

const isConn = (e) => e.Unit === 'connections' || (!e.Unit && e.Protocol === 'tcp');

function fmtRate(v) {
  if (v >= 100) return v.toFixed(0);
  if (v >= 0.1 || v === 0) return v.toFixed(1);
  return v.toPrecision(1);
}

// Success is rounded down, so that 99.96% does not read as 100%.
function fmtSuccess(v) {
  const pct = Math.floor(v * 1000) / 10;
  return (pct === 100 ? '100' : pct.toFixed(1)) + '%';
}

function fmtMs(v) {
  if (v >= 1000) return (v / 1000).toFixed(v >= 10000 ? 0 : 1) + ' s';
  if (v >= 10) return v.toFixed(0) + ' ms';
  if (v >= 1) return v.toFixed(1) + ' ms';
  return v.toFixed(2) + ' ms';
}

const rateText = (e, f) => `${fmtRate(f.RequestsPerSecond)} ${isConn(e) ? 'conn/s' : 'req/s'}`;

/** paintMetrics writes the figures into the drawn edges' text, title and label. */
function paintMetrics(topo, edges, error) {
  for (const g of topo.querySelectorAll('g.edge')) {
    const { from: a, to: b, verdict } = g.dataset;
    const text = g.querySelector('text.metrics');
    const [l1, l2] = text.querySelectorAll('tspan');
    let state, line1, line2 = '', spoken;
    const e = edges && edgeFor(edges, a, b);
    if (error) {
      state = 'unknown'; line1 = 'metrics unavailable'; spoken = `metrics unavailable: ${error}`;
    } else if (!edges) {
      state = 'pending'; line1 = 'metrics: loading…'; spoken = 'metrics loading';
    } else if (!e) {
      state = 'idle'; line1 = `no traffic in ${WINDOW}`; spoken = `no traffic in the last ${WINDOW_WORDS}`;
    } else {
      const { fig: f, by } = side(e);
      state = 'live';
      line1 = `${rateText(e, f)} · ${fmtSuccess(f.SuccessRate)} ok`;
      line2 = `p50 ${fmtMs(f.P50Ms)} · p99 ${fmtMs(f.P99Ms)}`;
      spoken = `last ${WINDOW_WORDS}, ${by} proxy: ${fmtRate(f.RequestsPerSecond)} ${isConn(e) ? 'connections' : 'requests'} per second, ` +
        `${fmtSuccess(f.SuccessRate)} succeeded, p50 ${fmtMs(f.P50Ms)}, p99 ${fmtMs(f.P99Ms)}`;
    }
    if (l1.textContent !== line1) l1.textContent = line1;
    if (l2.textContent !== line2) l2.textContent = line2;
    text.dataset.metrics = state;
    const word = verdictWords[verdict] || 'unknown';
    g.setAttribute('aria-label', `${a} calls ${b}: ${word} by intentions; ${spoken}`);
    g.querySelector('title').textContent = `${a} → ${b}: ${word} by intentions\n${spoken}`;
  }
}

/**
 * drawTraffic lists every edge of the endpoint's answer. The rows are
 * updated in place while the set of edges stays the same, so a focused
 * link keeps its focus.
 */
function drawTraffic(el, name, edges, error) {
  if (error) {
    replace(el, h('p', { class: 'error' }, `Could not read the metrics: ${error}`));
    return;
  }
  if (!edges) return;
  const shown = edges.filter(side).sort((x, y) => x.Source.localeCompare(y.Source) || x.Destination.localeCompare(y.Destination) || x.Protocol.localeCompare(y.Protocol));
  if (!shown.length) {
    replace(el, h('p', { class: 'empty', id: 'no-traffic' }, `No traffic to or from ${name} in the last ${WINDOW_WORDS}.`));
    return;
  }
  const key = (e) => `${e.Source}>${e.Destination}>${e.Protocol}`;
  const cells = (e) => {
    const { fig: f } = side(e);
    const by = [e.Outbound ? 'outbound' : null, e.Inbound ? 'inbound' : null].filter(Boolean).join(' + ');
    return [e.Protocol, rateText(e, f), fmtSuccess(f.SuccessRate), fmtMs(f.P50Ms), fmtMs(f.P99Ms), by];
  };
  const t = el.querySelector('#traffic-table');
  const rows = t ? [...t.tBodies[0].rows] : [];
  if (t && rows.length === shown.length && rows.every((r, i) => r.dataset.key === key(shown[i]))) {
    shown.forEach((e, i) => cells(e).forEach((c, j) => {
      const td = rows[i].cells[j + 2];
      if (td.textContent !== c) td.textContent = c;
    }));
    return;
  }
  const headers = ['Source', 'Destination', 'Protocol', 'Rate', 'Success', 'p50', 'p99', 'Reported by'];
  const num = ['Rate', 'Success', 'p50', 'p99'];
  const wrap = table(headers, [], { num, caption: `Traffic to and from ${name} in the last ${WINDOW_WORDS}, from the proxies` });
  wrap.querySelector('table').id = 'traffic-table';
  const active = el.contains(document.activeElement) ? document.activeElement.closest('td') : null;
  const focused = active && { key: active.parentElement.dataset.key, cell: active.cellIndex };
  const svc = (n) => (n === name ? h('strong', {}, n) : link('/services/' + esc(n), n));
  wrap.querySelector('tbody').append(...shown.map((e) => h('tr', { dataset: { key: key(e), source: e.Source, destination: e.Destination } },
    h('td', { 'data-label': 'Source' }, svc(e.Source)), h('td', { 'data-label': 'Destination' }, svc(e.Destination)),
    cells(e).map((c, j) => h('td', { 'data-label': headers[j + 2], class: num.includes(headers[j + 2]) ? 'num' : null }, c)))));
  replace(el, wrap);
  if (focused) [...wrap.querySelector('tbody').rows].find((r) => r.dataset.key === focused.key)?.cells[focused.cell]?.querySelector('a')?.focus();
}

/**
 * topology draws downstreams → service → upstreams as SVG. Each edge's
 * labels (the intentions' verdict above the line, the golden metrics
 * below) sit at its outer end, on that box's row, so the labels of
 * neighbouring edges do not overlap; paintMetrics fills the figures in.
 */
function topology(name, downs, ups, verdicts) {
  const W = 1000, BW = 170, BH = 40, GAP = 64;
  const rows = Math.max(1, downs.length, ups.length);
  const H = rows * GAP + 30;
  const colX = [16, (W - BW) / 2, W - BW - 16];
  const yOf = (i, n) => 15 + (H - 30 - n * GAP) / 2 + i * GAP + (GAP - BH) / 2;
  const box = (label, x, y, self) => s('g', { class: 'box' + (self ? ' self' : ''), dataset: { service: label } },
    s('a', { href: '/ui/services/' + esc(label), 'aria-label': `service ${label}` },
      s('rect', { x, y, width: BW, height: BH, rx: 8 }),
      s('text', { x: x + BW / 2, y: y + BH / 2 + 5, 'text-anchor': 'middle' }, label.length > 20 ? label.slice(0, 19) + '…' : label)));
  // outer is the end of the edge at the other service's box: its label
  // starts there (downstreams) or ends there (upstreams, before the arrow).
  const edge = (a, b, x1, y1, x2, y2, outer) => {
    const v = verdicts.get(a + '>' + b) || 'unknown';
    const word = verdictWords[v];
    const mx = (x1 + x2) / 2;
    const [lx, ly, anchor] = outer === 'start' ? [x1 + 10, y1, 'start'] : [x2 - 16, y2, 'end'];
    return s('g', { class: 'edge ' + v, dataset: { from: a, to: b, verdict: v }, role: 'img', 'aria-label': `${a} calls ${b}: ${word} by intentions` },
      s('title', {}, `${a} → ${b}: ${word} by intentions`),
      s('path', { d: `M${x1},${y1} C${mx},${y1} ${mx},${y2} ${x2},${y2}`, 'marker-end': 'url(#arrow)' }),
      s('text', { class: 'verdict', x: lx, y: ly - 7, 'text-anchor': anchor }, word),
      s('text', { class: 'metrics', x: lx, y: ly + 17, 'text-anchor': anchor, dataset: { metrics: 'pending' } },
        s('tspan', { x: lx }, 'metrics: loading…'), s('tspan', { x: lx, dy: 14 })));
  };
  const selfY = yOf(0, 1);
  const parts = [s('defs', {}, s('marker', { id: 'arrow', viewBox: '0 0 10 10', refX: 9, refY: 5, markerWidth: 7, markerHeight: 7, orient: 'auto-start-reverse' },
    s('path', { d: 'M0,0 L10,5 L0,10 z' })))];
  downs.forEach((d, i) => parts.push(edge(d, name, colX[0] + BW, yOf(i, downs.length) + BH / 2, colX[1], selfY + BH / 2, 'start')));
  ups.forEach((u, i) => parts.push(edge(name, u, colX[1] + BW, selfY + BH / 2, colX[2], yOf(i, ups.length) + BH / 2, 'end')));
  downs.forEach((d, i) => parts.push(box(d, colX[0], yOf(i, downs.length))));
  parts.push(box(name, colX[1], selfY, true));
  ups.forEach((u, i) => parts.push(box(u, colX[2], yOf(i, ups.length))));
  const desc = `${name}: ${downs.length ? 'called by ' + downs.join(', ') : 'no downstreams'}; ${ups.length ? 'calls ' + ups.join(', ') : 'no upstreams'}.`;
  return [s('svg', { viewBox: `0 0 ${W} ${H}`, role: 'group', 'aria-label': `Topology of ${name}` }, s('desc', {}, desc), parts),
    (!downs.length && !ups.length) ? h('p', { class: 'muted' }, 'No upstreams or downstreams in the mesh.') : null];
}
