// routing.js: the routing that applies to a service (router, splitter,
// resolver config entries), said in words.

import { h, link } from '../dom.js';
import { get, esc, APIError } from '../api.js';

async function entry(kind, name, signal) {
  try {
    return await get(`/v1/config/${kind}/${esc(name)}`, signal);
  } catch (e) {
    if (e instanceof APIError && e.status === 404) return null;
    throw e;
  }
}

const svcLink = (n) => link('/services/' + esc(n), n);

function target(d, self) {
  const svc = d?.Service || self;
  return [svcLink(svc), d?.ServiceSubset ? ` (subset ${d.ServiceSubset})` : ''];
}

function match(m) {
  const http = m?.HTTP;
  if (!http) return 'every request';
  const parts = [];
  if (http.PathExact) parts.push(`path is ${http.PathExact}`);
  if (http.PathPrefix) parts.push(`path starts with ${http.PathPrefix}`);
  if (http.PathRegex) parts.push(`path matches /${http.PathRegex}/`);
  if (http.Methods?.length) parts.push(`method is ${http.Methods.join(' or ')}`);
  for (const hd of http.Header || []) parts.push(`header ${hd.Name}${hd.Exact ? ' is ' + hd.Exact : hd.Prefix ? ' starts with ' + hd.Prefix : hd.Present ? ' is present' : ''}`);
  for (const qp of http.QueryParam || []) parts.push(`query ${qp.Name}${qp.Exact ? ' is ' + qp.Exact : ' is present'}`);
  return parts.length ? 'requests whose ' + parts.join(' and ') : 'every request';
}

/** describeRouting resolves to nodes describing name's routing. */
export async function describeRouting(name, signal) {
  const [router, splitter, resolver] = await Promise.all(['service-router', 'service-splitter', 'service-resolver'].map((k) => entry(k, name, signal)));
  const items = [];
  for (const r of router?.Routes || []) {
    items.push(h('li', {}, `Router: ${match(r.Match)} go to `, target(r.Destination, name),
      r.Destination?.PrefixRewrite ? `, path prefix rewritten to ${r.Destination.PrefixRewrite}` : '',
      r.Destination?.NumRetries ? `, retried up to ${r.Destination.NumRetries} times` : '',
      r.Destination?.RequestTimeout ? `, timeout ${r.Destination.RequestTimeout}` : '', '.'));
  }
  if (router) {
    items.push(h('li', {}, `Router: any other request goes to ${name}`,
      splitter?.Splits?.length || resolver ? ', through the splitter and resolver below.' : '.'));
  }
  if (splitter?.Splits?.length) {
    items.push(h('li', {}, 'Splitter: ', splitter.Splits.map((sp, i) => [i ? ', ' : '', `${sp.Weight}% to `, target(sp, name)]), '.'));
  }
  if (resolver) {
    if (resolver.Redirect) {
      items.push(h('li', {}, 'Resolver: every request is redirected to ', target(resolver.Redirect, name),
        resolver.Redirect.Datacenter ? ` in ${resolver.Redirect.Datacenter}` : '', '.'));
    }
    const subsets = Object.entries(resolver.Subsets || {});
    if (subsets.length) {
      items.push(h('li', {}, 'Resolver subsets: ', subsets.map(([n, ss], i) => [i ? '; ' : '', h('code', {}, n), ss.Filter ? ` = instances where ${ss.Filter}` : ' = all instances']),
        resolver.DefaultSubset ? `; default subset ${resolver.DefaultSubset}` : '', '.'));
    }
    for (const [sub, f] of Object.entries(resolver.Failover || {})) {
      const to = [...(f.Targets || []).map((t) => t.Service || t.Datacenter), f.Service, ...(f.Datacenters || [])].filter(Boolean);
      items.push(h('li', {}, `Resolver failover${sub === '*' ? '' : ' of subset ' + sub}: when no instance is healthy, go to ${to.join(', ') || 'another target'}.`));
    }
    if (resolver.ConnectTimeout) items.push(h('li', {}, `Resolver: connections time out after ${resolver.ConnectTimeout}.`));
  }
  if (!items.length) {
    return [h('p', {}, `Default routing: requests to ${name} go to its healthy instances in this datacenter, balanced across them.`),
      h('p', { class: 'muted' }, 'No service-router, service-splitter or service-resolver entry names this service (', link('/config', 'config entries'), ').')];
  }
  return h('ul', {}, items);
}
