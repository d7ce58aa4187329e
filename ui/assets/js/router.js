// router.js: client-side routing with the History API. Routes are paths
// under /ui/ with :params; a page is render(main, params, signal), and the
// signal aborts (stopping its watches) when the user navigates away.

const routes = [];
let current = null;

/** route adds a page: pattern like '/services/:name', nav the menu entry it lights. */
export function route(pattern, nav, page) {
  const names = [];
  const re = new RegExp('^' + pattern.replace(/:([a-z]+)/g, (_, n) => { names.push(n); return '([^/]+)'; }) + '/?$');
  routes.push({ re, names, nav, page });
}

/** navigate goes to an in-app path ('/services/web'), adding a history entry. */
export function navigate(path, { replace = false } = {}) {
  const url = '/ui' + path;
  if (replace) history.replaceState(null, '', url);
  else history.pushState(null, '', url);
  render();
}

/** render draws the page for the current location. */
export function render() {
  const main = document.getElementById('main');
  current?.abort();
  current = new AbortController();
  const signal = current.signal;
  let path = location.pathname.replace(/^\/ui/, '') || '/';
  if (path.length > 1) path = path.replace(/\/$/, '');
  let found = null;
  for (const r of routes) {
    const m = r.re.exec(path);
    if (m) {
      const params = {};
      r.names.forEach((n, i) => { params[n] = decodeURIComponent(m[i + 1]); });
      found = { r, params };
      break;
    }
  }
  for (const a of document.querySelectorAll('nav a[data-nav]')) {
    if (found && a.dataset.nav === found.r.nav) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  main.replaceChildren();
  if (!found) {
    const h1 = document.createElement('h1');
    h1.textContent = 'Not found';
    const p = document.createElement('p');
    p.textContent = `No page at ${location.pathname}.`;
    main.append(h1, p);
    return;
  }
  found.r.page(main, found.params, signal);
  // Move focus to the new page's heading so keyboard and screen-reader
  // users land on it, as after a full page load.
  const h1 = main.querySelector('h1');
  if (h1) {
    h1.tabIndex = -1;
    document.title = `${(h1.firstChild?.textContent || h1.textContent).trim()} · Trellis`;
    if (document.activeElement && document.activeElement !== document.body) h1.focus({ preventScroll: true });
  }
}

/** start wires links and the back button to the router. */
export function start() {
  document.addEventListener('click', (e) => {
    if (e.defaultPrevented || e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || e.altKey) return;
    const a = e.target.closest('a[href]');
    if (!a || a.target || a.hasAttribute('download')) return;
    const url = new URL(a.href, location.href);
    if (url.origin !== location.origin || !(url.pathname === '/ui' || url.pathname.startsWith('/ui/'))) return;
    if (url.pathname.startsWith('/ui/js/') || url.pathname.startsWith('/ui/css/')) return;
    e.preventDefault();
    if (url.pathname + url.search === location.pathname + location.search) return;
    history.pushState(null, '', url.pathname + url.search);
    render();
  });
  addEventListener('popstate', render);
  // Stop the page's blocking queries before the document goes, so their
  // connections are not held open into the next page load.
  addEventListener('pagehide', () => current?.abort());
  addEventListener('pageshow', (e) => { if (e.persisted) render(); });
  render();
}
