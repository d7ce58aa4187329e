// api.js: the UI's only way to the cluster, the public HTTP API (/v1/).
// Lists are watched with blocking queries (?index=N&wait=30s, reading
// X-Consul-Index), never polled in a tight loop. A network failure shows the
// banner and retries with backoff; the banner goes once a call succeeds.

/** APIError is a non-2xx answer: status and the body's text. */
export class APIError extends Error {
  constructor(status, body, path) {
    super(body.trim() || `HTTP ${status}`);
    this.status = status;
    this.path = path;
  }
  /** field is the field a 400 names ("invalid SourceName: ..."), or "". */
  get field() {
    const m = /^invalid ([A-Za-z0-9_.[\]]+): /.exec(this.message);
    return this.status === 400 && m ? m[1] : '';
  }
}

const connListeners = new Set();
let lost = false;
let probing = false;

let problem = null; // the last 5xx a watch got, until one succeeds

/**
 * onConnection calls fn(lost, problem) whenever the agent becomes
 * unreachable or reachable again, or a watch starts or stops failing with a
 * server error (problem is its message, or null).
 */
export function onConnection(fn) {
  connListeners.add(fn);
  fn(lost, problem);
}

function notify() {
  for (const fn of connListeners) fn(lost, problem);
}

function setLost(v) {
  if (lost === v) return;
  lost = v;
  notify();
  if (lost) probe();
}

function setProblem(msg) {
  if (problem === msg) return;
  problem = msg;
  notify();
}

/** sleep waits ms, or until signal aborts. */
export function sleep(ms, signal) {
  return new Promise((resolve) => {
    if (signal?.aborted) { resolve(); return; }
    const stop = () => { clearTimeout(t); resolve(); };
    const t = setTimeout(() => { signal?.removeEventListener('abort', stop); resolve(); }, ms);
    signal?.addEventListener('abort', stop, { once: true });
  });
}

/** backoff is the delay before retry n (0-based): 0.5 s doubling to 15 s, jittered. */
export function backoff(n) {
  const base = Math.min(15000, 500 * 2 ** n);
  return base / 2 + Math.random() * base / 2;
}

// probe retries a cheap call with backoff while the agent is unreachable,
// so the banner clears even on pages with no watch running.
async function probe() {
  if (probing) return;
  probing = true;
  for (let n = 0; lost; n++) {
    await sleep(backoff(n));
    if (!lost) break;
    try { await request('GET', '/v1/status/leader'); } catch { /* request keeps lost set */ }
  }
  probing = false;
}

async function request(method, path, { body, signal } = {}) {
  let resp;
  try {
    resp = await fetch(path, {
      method, signal, cache: 'no-store',
      headers: body === undefined ? { Accept: 'application/json' } : { Accept: 'application/json', 'Content-Type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (err) {
    if (signal?.aborted) throw err;
    setLost(true);
    throw err;
  }
  setLost(false);
  const text = await resp.text();
  if (!resp.ok) throw new APIError(resp.status, text, path);
  const index = Number(resp.headers.get('X-Consul-Index') || 0);
  let data = null;
  if (text !== '') {
    try { data = JSON.parse(text); } catch { data = text; }
  }
  return { data, index };
}

/** get reads path once; resolves to the decoded JSON. */
export async function get(path, signal) {
  return (await request('GET', path, { signal })).data;
}

/** send writes: method PUT, POST or DELETE, with an optional JSON body. */
export async function send(method, path, body) {
  return (await request(method, path, { body })).data;
}

/**
 * watch calls onData(data) with path's answer, then again each time it
 * changes, using blocking queries until signal aborts. onError(err) is
 * told of answers that are not 2xx (the watch keeps retrying with backoff);
 * a 404 is passed to onData as null when opts.notFoundIsEmpty is set.
 */
export async function watch(path, onData, signal, { onError, notFoundIsEmpty, wait = '30s' } = {}) {
  let index = 0;
  let failures = 0;
  const sep = path.includes('?') ? '&' : '?';
  while (!signal.aborted) {
    const started = Date.now();
    try {
      const url = index > 0 ? `${path}${sep}index=${index}&wait=${wait}` : path;
      const r = await request('GET', url, { signal });
      failures = 0;
      setProblem(null);
      if (signal.aborted) return;
      if (r.index === index && index > 0) {
        // The wait ran out with nothing new; if it came back at once,
        // pause so a misbehaving server cannot make this a tight loop.
        if (Date.now() - started < 1000) await sleep(1000, signal);
        continue;
      }
      // An index that went backwards (a snapshot restore) restarts the watch.
      index = r.index < index ? 0 : r.index;
      onData(r.data);
      if (index === 0) await sleep(5000, signal); // no index: fall back to slow refresh
    } catch (err) {
      if (signal.aborted) return;
      if (err instanceof APIError && err.status === 404 && notFoundIsEmpty) {
        onData(null);
        index = 0;
        await sleep(10000, signal);
        continue;
      }
      if (err instanceof APIError) {
        if (err.status >= 500) setProblem(`The agent answered ${err.status}: ${err.message} — retrying`);
        onError?.(err);
      }
      index = 0;
      await sleep(backoff(failures++), signal);
    }
  }
}

/** every calls fn now and then every ms until signal aborts (for endpoints that do not block). */
export async function every(ms, fn, signal) {
  while (!signal.aborted) {
    try { await fn(); } catch (err) { if (!signal.aborted && !(err instanceof TypeError)) console.warn(err); }
    await sleep(ms, signal);
  }
}

/** esc encodes one path segment. */
export const esc = encodeURIComponent;
