// dom.js: tiny helpers to build elements. Text always goes in as text
// nodes, never as HTML, so names and check output cannot inject markup.

const SVG = 'http://www.w3.org/2000/svg';

function build(el, attrs, children) {
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else if (k === 'dataset') Object.assign(el.dataset, v);
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  append(el, children);
  return el;
}

/** append adds children (nodes, strings, numbers, nested arrays; null skipped). */
export function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

/** h makes an HTML element: h('a', {href}, 'text', child...). */
export function h(tag, attrs, ...children) {
  return build(document.createElement(tag), attrs, children);
}

/** s makes an SVG element. */
export function s(tag, attrs, ...children) {
  return build(document.createElementNS(SVG, tag), attrs, children);
}

/** replace swaps an element's children. */
export function replace(el, ...children) {
  el.replaceChildren();
  return append(el, children);
}

/** link is an in-app link under /ui/. */
export function link(path, ...children) {
  return h('a', { href: '/ui' + path }, ...children);
}

/** table builds a table; rows are arrays of cells (node or text). */
export function table(headers, rows, opts = {}) {
  const thead = h('thead', {}, h('tr', {}, headers.map((t) => h('th', { scope: 'col', class: opts.num?.includes(t) ? 'num' : null }, t))));
  const tbody = h('tbody', {}, rows.map((r) => h('tr', {}, r.map((c, i) =>
    h('td', { 'data-label': headers[i], class: opts.num?.includes(headers[i]) ? 'num' : null }, c)))));
  const t = h('table', { class: 'stack' }, opts.caption ? h('caption', { class: 'sr-only' }, opts.caption) : null, thead, tbody);
  return h('div', { class: 'table-wrap' }, t);
}

/** statusBadge shows a health or member status as text and colour. */
export function badge(status, text) {
  return h('span', { class: 'badge ' + status }, text ?? status);
}

/** ago says how far t (a Date or string) is from now, in words. */
export function until(t) {
  const ms = new Date(t).getTime() - Date.now();
  const abs = Math.abs(ms);
  const units = [['day', 864e5], ['hour', 36e5], ['minute', 6e4], ['second', 1e3]];
  for (const [u, n] of units) {
    if (abs >= n || u === 'second') {
      const v = Math.floor(abs / n);
      const w = `${v} ${u}${v === 1 ? '' : 's'}`;
      return ms >= 0 ? `in ${w}` : `${w} ago`;
    }
  }
  return '';
}

/** fmtTime formats a timestamp in the viewer's locale, with UTC beside it. */
export function fmtTime(t) {
  const d = new Date(t);
  if (Number.isNaN(d.getTime()) || d.getFullYear() < 1971) return '—';
  return d.toISOString().replace('T', ' ').replace(/\.\d+Z$/, ' UTC');
}
