// main.js: boots the UI: the connection banner, the datacenter label and
// the routes.

import { onConnection, get } from './api.js';
import { route, start } from './router.js';
import overview from './pages/overview.js';
import { servicesPage, servicePage } from './pages/services.js';
import { nodesPage, nodePage } from './pages/nodes.js';
import intentionsPage from './pages/intentions.js';
import configPage from './pages/config.js';
import caPage from './pages/ca.js';

onConnection((lost, problem) => {
  const banner = document.getElementById('banner');
  banner.textContent = lost ? 'Lost connection to the agent — retrying' : problem || '';
  banner.hidden = !lost && !problem;
});

get('/v1/agent/self').then((self) => {
  const cfg = self?.Config || {};
  document.getElementById('dc').textContent = `${cfg.Datacenter || ''} · ${cfg.NodeName || ''}`;
}).catch(() => {});

route('/', 'overview', overview);
route('/services', 'services', servicesPage);
route('/services/:name', 'services', servicePage);
route('/nodes', 'nodes', nodesPage);
route('/nodes/:name', 'nodes', nodePage);
route('/intentions', 'intentions', intentionsPage);
route('/config', 'config', configPage);
route('/config/:kind', 'config', configPage);
route('/ca', 'ca', caPage);
start();
