// Config entries by kind (GET /v1/config/:kind), each shown as HCL.

import { h, replace, link } from '../dom.js';
import { get, watch, every, esc, APIError } from '../api.js';
import { toHCL } from '../hcl.js';

/** KINDS are the config entry kinds Trellis knows, in listing order. */
export const KINDS = ['proxy-defaults', 'service-defaults', 'service-router', 'service-splitter', 'service-resolver', 'service-intentions'];

export default function configPage(main, { kind }, signal) {
  const kinds = kind ? [kind] : KINDS;
  main.append(h('h1', {}, kind ? `Config entries: ${kind}` : 'Config entries'),
    h('nav', { 'aria-label': 'Kinds' }, h('ul', {}, h('li', {}, link('/config', 'all kinds')),
      KINDS.map((k) => h('li', {}, link('/config/' + k, k))))),
    h('p', { class: 'muted' }, 'Shown as HCL, the way you would write them for ', h('code', {}, 'trellis config write'), '.'));
  for (const k of kinds) {
    const body = h('div', { dataset: { kind: k } }, h('p', { class: 'muted' }, 'Loading…'));
    main.append(h('section', { 'aria-labelledby': 'cfg-' + k }, h('h2', { id: 'cfg-' + k }, k), body));
    const draw = (entries) => {
      entries = Array.isArray(entries) ? entries : [];
      if (!entries.length) {
        replace(body, h('p', { class: 'empty' }, 'no entries'));
        return;
      }
      replace(body, entries.map((e) => h('article', { class: 'card', dataset: { name: e.Name } },
        h('h3', {}, e.Name), h('pre', { class: 'hcl' }, h('code', {}, toHCL(e))))));
    };
    const fail = (err) => replace(body, h('p', { class: 'error' }, err.message));
    if (kind) {
      // One kind: a blocking query.
      watch(`/v1/config/${esc(k)}`, draw, signal, { notFoundIsEmpty: true, onError: fail });
    } else {
      // Every kind: six blocking queries would take most of the browser's
      // connections to the agent, so read them all every 10 s instead.
      every(10000, () => get(`/v1/config/${esc(k)}`, signal).then(draw, (err) => {
        if (err instanceof APIError && err.status === 404) draw(null);
        else if (!signal.aborted) fail(err);
      }), signal);
    }
  }
}
