// Intentions: the list in precedence order, a form to create and edit them
// (the API's 400s shown next to the field they name), delete, and "can A
// call B?" with the intention that decided.

import { h, replace, badge, table } from '../dom.js';
import { get, send, watch, esc, APIError } from '../api.js';

const NAME_RE = /^([A-Za-z0-9._-]+|\*)$/;

function permissions(list) {
  return h('ul', { class: 'checks' }, list.map((p) => {
    const m = p.HTTP || {};
    const what = [m.Methods?.length ? m.Methods.join(',') : 'any method',
      m.PathExact ? m.PathExact : m.PathPrefix ? m.PathPrefix + '*' : m.PathRegex ? `/${m.PathRegex}/` : 'any path'];
    return h('li', {}, badge(p.Action === 'allow' ? 'allow' : 'deny', p.Action), ' ', what.join(' '),
      (m.Header || []).map((hd) => ` header ${hd.Name}`));
  }));
}

function field(id, label, input, hint) {
  input.id = id;
  input.setAttribute('aria-describedby', `${id}-error${hint ? ` ${id}-hint` : ''}`);
  return h('div', { class: 'field' }, h('label', { for: id }, label), input,
    hint ? h('div', { class: 'muted', id: `${id}-hint` }, hint) : null,
    h('div', { class: 'field-error', id: `${id}-error`, 'aria-live': 'polite' }));
}

export default function intentionsPage(main, _params, signal) {
  const datalist = h('datalist', { id: 'service-names' });
  // "Can A call B?"
  const cSrc = h('input', { type: 'text', name: 'source', list: 'service-names', required: true, autocomplete: 'off' });
  const cDst = h('input', { type: 'text', name: 'destination', list: 'service-names', required: true, autocomplete: 'off' });
  const cResult = h('div', { id: 'check-result', 'aria-live': 'polite' });
  const checkForm = h('form', { id: 'check-form', novalidate: true },
    h('fieldset', {}, h('legend', {}, 'Can A call B?'),
      h('div', { class: 'form-row' }, field('check-src', 'Source service', cSrc), field('check-dst', 'Destination service', cDst),
        h('div', { class: 'field' }, h('label', { 'aria-hidden': 'true' }, '\u00a0'), h('button', { type: 'submit' }, 'Check'))),
      cResult));

  // Create / edit.
  const fSrc = h('input', { type: 'text', name: 'SourceName', list: 'service-names', autocomplete: 'off' });
  const fDst = h('input', { type: 'text', name: 'DestinationName', list: 'service-names', autocomplete: 'off' });
  const fAllow = h('input', { type: 'radio', name: 'Action', value: 'allow', id: 'ixn-allow', checked: true });
  const fDeny = h('input', { type: 'radio', name: 'Action', value: 'deny', id: 'ixn-deny' });
  const fDesc = h('input', { type: 'text', name: 'Description', autocomplete: 'off' });
  const legend = h('legend', {}, 'New intention');
  const status = h('div', { id: 'ixn-status', role: 'status' });
  const cancel = h('button', { type: 'button', class: 'secondary', hidden: true }, 'Cancel edit');
  const actionField = h('div', { class: 'field', role: 'radiogroup', 'aria-labelledby': 'ixn-action-label', 'aria-describedby': 'ixn-action-error' },
    h('label', { id: 'ixn-action-label' }, 'Action'),
    h('div', { class: 'radios' }, h('label', { for: 'ixn-allow' }, fAllow, 'allow'), h('label', { for: 'ixn-deny' }, fDeny, 'deny')),
    h('div', { class: 'field-error', id: 'ixn-action-error', 'aria-live': 'polite' }));
  const form = h('form', { id: 'intention-form', novalidate: true },
    h('fieldset', {}, legend,
      h('div', { class: 'form-row' },
        field('ixn-source', 'Source', fSrc, 'a service name, or * for any'),
        field('ixn-destination', 'Destination', fDst, 'a service name, or * for any')),
      actionField,
      field('ixn-description', 'Description (optional)', fDesc),
      h('div', { class: 'form-row' }, h('button', { type: 'submit', id: 'ixn-save' }, 'Save'), cancel), status));

  const list = h('div', { id: 'intentions' }, h('p', { class: 'muted' }, 'Loading…'));
  main.append(h('h1', {}, 'Intentions'), datalist, checkForm,
    h('section', { 'aria-labelledby': 'ix-list' }, h('h2', { id: 'ix-list' }, 'In precedence order'),
      h('p', { class: 'muted' }, 'The first intention that matches a call decides it; with none, the default policy does.'), list),
    h('section', { 'aria-labelledby': 'ix-form' }, h('h2', { id: 'ix-form' }, 'Create or edit'), form));

  get('/v1/catalog/services', signal).then((names) => {
    replace(datalist, Object.keys(names || {}).filter((n) => !n.endsWith('-sidecar-proxy')).sort().map((n) => h('option', { value: n })));
  }).catch(() => {});

  // Field errors.
  const fields = { SourceName: 'ixn-source', DestinationName: 'ixn-destination', Action: 'ixn-action', Description: 'ixn-description' };
  function clearErrors() {
    for (const id of Object.values(fields)) {
      document.getElementById(`${id}-error`).textContent = '';
      document.getElementById(id)?.removeAttribute('aria-invalid');
    }
    fAllow.removeAttribute('aria-invalid');
    replace(status);
  }
  function fieldError(apiField, msg) {
    const id = fields[apiField];
    if (!id) return false;
    document.getElementById(`${id}-error`).textContent = msg;
    const input = document.getElementById(id) || fAllow;
    input.setAttribute('aria-invalid', 'true');
    input.focus();
    return true;
  }

  let editing = null; // the intention being edited
  function reset() {
    editing = null;
    form.reset();
    fAllow.checked = true;
    legend.textContent = 'New intention';
    cancel.hidden = true;
    clearErrors();
  }
  cancel.addEventListener('click', reset);
  function edit(ixn) {
    clearErrors();
    editing = ixn;
    fSrc.value = ixn.SourceName;
    fDst.value = ixn.DestinationName;
    (ixn.Action === 'deny' ? fDeny : fAllow).checked = true;
    fDesc.value = ixn.Description || '';
    legend.textContent = `Edit intention ${ixn.SourceName} → ${ixn.DestinationName}`;
    cancel.hidden = false;
    fSrc.focus();
  }

  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    clearErrors();
    const body = { SourceName: fSrc.value.trim(), DestinationName: fDst.value.trim(), Action: fDeny.checked ? 'deny' : 'allow', Description: fDesc.value };
    // The same checks the API makes, so most mistakes are caught here; the
    // API's own 400 is still shown next to its field.
    for (const [k, v] of [['SourceName', body.SourceName], ['DestinationName', body.DestinationName]]) {
      if (!v) { fieldError(k, 'Required: a service name, or * for any.'); return; }
      if (!NAME_RE.test(v)) { fieldError(k, `"${v}" is not a service name (letters, digits, '.', '_' and '-', or * for any).`); return; }
    }
    const save = document.getElementById('ixn-save');
    save.disabled = true;
    try {
      if (editing) await send('PUT', `/v1/connect/intentions/${esc(editing.ID)}`, body);
      else await send('POST', '/v1/connect/intentions', body);
      const what = `${body.SourceName} → ${body.DestinationName} (${body.Action})`;
      reset();
      replace(status, h('p', { class: 'result passing' }, `Saved: ${what}.`));
    } catch (err) {
      if (err instanceof APIError && fieldError(err.field, err.message)) return;
      const msg = err instanceof APIError && err.status === 409
        ? `${err.message}: edit the existing intention instead.` : (err.message || String(err));
      replace(status, h('p', { class: 'result critical', role: 'alert' }, msg));
    } finally {
      save.disabled = false;
    }
  });

  checkForm.addEventListener('submit', async (e) => {
    e.preventDefault();
    const src = cSrc.value.trim(), dst = cDst.value.trim();
    for (const [id, v] of [['check-src', src], ['check-dst', dst]]) {
      const err = document.getElementById(`${id}-error`);
      err.textContent = !v ? 'Required.' : !NAME_RE.test(v) || v === '*' ? `"${v}" is not a service name.` : '';
      if (err.textContent) { document.getElementById(id).setAttribute('aria-invalid', 'true'); document.getElementById(id).focus(); return; }
      document.getElementById(id).removeAttribute('aria-invalid');
    }
    try {
      const [res, matches, self] = await Promise.all([
        get(`/v1/connect/intentions/check?source=${esc(src)}&destination=${esc(dst)}`, signal),
        get(`/v1/connect/intentions/match?by=destination&name=${esc(dst)}`, signal),
        get('/v1/agent/self', signal)]);
      const decided = (matches?.[dst] || []).find((i) => i.SourceName === src || i.SourceName === '*');
      const why = decided
        ? [`decided by the intention ${decided.SourceName} → ${decided.DestinationName} (${decided.Permissions?.length ? 'L7 permissions' : decided.Action}, precedence ${decided.Precedence})`,
          decided.Description ? ` — “${decided.Description}”` : '', '.',
          decided.Permissions?.length ? ' Its HTTP permissions decide each request by its method, path and headers; a check of the connection counts them as denied.' : '']
        : `no intention matches, so the default policy (${self?.Config?.DefaultIntentionPolicy || 'unknown'}) decides.`;
      replace(cResult, h('p', { class: 'result ' + (res?.Allowed ? 'allow' : 'deny'), dataset: { allowed: String(!!res?.Allowed) } },
        h('strong', {}, res?.Allowed ? `Allowed: ${src} may call ${dst}` : `Denied: ${src} may not call ${dst}`), ' — ', why));
    } catch (err) {
      replace(cResult, h('p', { class: 'result critical', role: 'alert' }, err.message || String(err)));
    }
  });

  function row(i) {
    const actions = h('td', { 'data-label': 'Actions' });
    const normal = () => replace(actions,
      h('button', { type: 'button', class: 'secondary', 'aria-label': `Edit ${i.SourceName} → ${i.DestinationName}`, onclick: () => edit(i) }, 'Edit'), ' ',
      h('button', { type: 'button', class: 'secondary', 'aria-label': `Delete ${i.SourceName} → ${i.DestinationName}`, onclick: confirmDelete }, 'Delete'));
    function confirmDelete() {
      const yes = h('button', { type: 'button', class: 'danger', onclick: async () => {
        try { await send('DELETE', `/v1/connect/intentions/${esc(i.ID)}`); } catch (err) { replace(actions, h('span', { class: 'error' }, err.message)); }
      } }, 'Yes, delete');
      replace(actions, `Delete ${i.SourceName} → ${i.DestinationName}? `, yes, ' ', h('button', { type: 'button', class: 'secondary', onclick: normal }, 'Cancel'));
      yes.focus();
    }
    // An intention of a service-intentions entry is written with its
    // entry: the API refuses edits and deletes of it one by one.
    const entry = i.ID?.startsWith('ce:') ? i.ID.split(':')[1] : null;
    if (entry) {
      replace(actions, h('span', { class: 'muted managed' }, 'from the config entry ',
        h('a', { href: '/ui/config' }, `service-intentions/${entry}`), ': change it with trellis config write'));
    } else {
      normal();
    }
    return h('tr', { dataset: { source: i.SourceName, destination: i.DestinationName, action: i.Action || 'l7' } },
      h('td', { 'data-label': 'Source' }, i.SourceName),
      h('td', { 'data-label': 'Destination' }, i.DestinationName),
      h('td', { 'data-label': 'Action' }, i.Permissions?.length ? permissions(i.Permissions) : badge(i.Action === 'allow' ? 'allow' : 'deny', i.Action)),
      h('td', { 'data-label': 'Precedence', class: 'num' }, String(i.Precedence)),
      h('td', { 'data-label': 'Description' }, i.Description || ''),
      actions);
  }

  watch('/v1/connect/intentions', (ixns) => {
    ixns = ixns || [];
    if (!ixns.length) {
      replace(list, h('p', { class: 'empty', id: 'no-intentions' }, 'No intentions: the default policy decides every call.'));
      return;
    }
    const t = table(['Source', 'Destination', 'Action', 'Precedence', 'Description', 'Actions'], [], { num: ['Precedence'] });
    t.querySelector('table').id = 'intentions-table';
    t.querySelector('tbody').append(...ixns.map(row));
    replace(list, t);
  }, signal);
}
