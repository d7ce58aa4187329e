// hcl.js: writes a config entry's JSON (as the API returns it) as HCL, the
// way one would write it in a file for `trellis config write`.

const IDENT = /^[A-Za-z_][A-Za-z0-9_-]*$/;
// Bookkeeping the server adds; not part of what one writes.
const SKIP = new Set(['CreateIndex', 'ModifyIndex', 'Hash']);
// Fields that are maps (arbitrary keys), written `Key = { "k" = v }`.
const MAPS = new Set(['Meta', 'Config', 'Subsets', 'Failover', 'Add', 'Set', 'Labels', 'Headers']);

const isObj = (v) => v !== null && typeof v === 'object' && !Array.isArray(v);
const isScalar = (v) => v === null || typeof v !== 'object';

function str(v) {
  // JSON escapes are valid HCL escapes; template sequences must be doubled.
  return JSON.stringify(v).replace(/\$\{/g, '$${').replace(/%\{/g, '%%{');
}

function key(k) {
  return IDENT.test(k) ? k : str(k);
}

function scalar(v) {
  if (v === null) return 'null';
  if (typeof v === 'string') return str(v);
  return String(v);
}

function value(v, ind, asMap) {
  if (isScalar(v)) return scalar(v);
  const inner = ind + '  ';
  if (Array.isArray(v)) {
    if (!v.length) return '[]';
    if (v.every(isScalar)) {
      const flat = '[' + v.map(scalar).join(', ') + ']';
      if (flat.length <= 72) return flat;
      return '[\n' + v.map((x) => inner + scalar(x) + ',\n').join('') + ind + ']';
    }
    return '[\n' + v.map((x) => inner + value(x, inner, false) + ',\n').join('') + ind + ']';
  }
  const b = body(v, inner, asMap);
  return b ? '{\n' + b + ind + '}' : '{}';
}

function body(obj, ind, asMap) {
  const entries = Object.entries(obj).filter(([k, v]) => v !== undefined && !(ind === '' && SKIP.has(k)) && !SKIP.has(k));
  // Attributes first (aligned), then blocks, as a person would write it.
  const attrs = entries.filter(([k, v]) => asMap || !isObj(v) || MAPS.has(k) || !IDENT.test(k));
  const blocks = entries.filter((e) => !attrs.includes(e));
  const pad = Math.max(0, ...attrs.filter(([, v]) => isScalar(v)).map(([k]) => key(k).length));
  let out = '';
  for (const [k, v] of attrs) {
    const name = isScalar(v) ? key(k).padEnd(pad) : key(k);
    out += `${ind}${name} = ${value(v, ind, MAPS.has(k))}\n`;
  }
  for (const [k, v] of blocks) {
    const b = body(v, ind + '  ', false);
    out += b ? `${ind}${k} {\n${b}${ind}}\n` : `${ind}${k} {}\n`;
  }
  return out;
}

/** toHCL renders one config entry (a JSON object) as HCL text. */
export function toHCL(entry) {
  if (!isObj(entry)) return '';
  // Kind and Name lead, as in every example of the docs.
  const { Kind, Name, ...rest } = entry;
  const head = {};
  if (Kind !== undefined) head.Kind = Kind;
  if (Name !== undefined) head.Name = Name;
  return body({ ...head, ...rest }, '', false);
}
