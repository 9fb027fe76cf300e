// The inspector's page: plain JavaScript, no build step, no CDN. Everything
// a visitor sent is shown with textContent, never as HTML.
'use strict';

const token = new URLSearchParams(location.search).get('token') || '';
const tokenQuery = token ? 'token=' + encodeURIComponent(token) : '';
const masked = new Set(['authorization', 'proxy-authorization', 'cookie', 'set-cookie']);

let rows = [];          // summaries shown, newest first
let selected = null;    // id of the selected exchange
let current = null;     // its detail
let filterTimer = null;

const $ = (id) => document.getElementById(id);

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === 'class') e.className = v;
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  for (const c of children) {
    if (c == null) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

function withToken(url) {
  if (!tokenQuery) return url;
  return url + (url.includes('?') ? '&' : '?') + tokenQuery;
}

async function api(method, path, body) {
  const opts = { method, headers: {} };
  if (token) opts.headers['Authorization'] = 'Bearer ' + token;
  if (body !== undefined) {
    opts.headers['Content-Type'] = 'application/json';
    opts.body = JSON.stringify(body);
  }
  const resp = await fetch(path, opts);
  if (resp.status === 204) return null;
  const data = await resp.json();
  if (!resp.ok) throw new Error(data.error || resp.statusText);
  return data;
}

// filterQuery is the list's query string from the filter inputs.
function filterQuery() {
  const q = new URLSearchParams();
  const set = (k, id) => { const v = $(id).value.trim(); if (v) q.set(k, v); };
  set('status', 'f-status');
  set('method', 'f-method');
  set('path', 'f-path');
  set('header', 'f-header');
  set('min_ms', 'f-min-ms');
  set('min_size', 'f-min-size');
  set('q', 'f-q');
  return q.toString();
}

function filtered() { return filterQuery() !== ''; }

async function loadList() {
  const q = filterQuery();
  $('har-all').href = withToken('/api/har' + (q ? '?' + q : ''));
  try {
    const data = await api('GET', '/api/exchanges' + (q ? '?' + q : ''));
    if (q !== filterQuery()) return; // the filters changed meanwhile: a newer load follows
    // Exchanges pushed while the list was fetched are newer than it.
    const top = data.exchanges.length ? data.exchanges[0].id : 0;
    const pushed = q ? [] : rows.filter((s) => s.id > top);
    rows = pushed.concat(data.exchanges);
    renderList();
  } catch (err) {
    $('status').textContent = 'error: ' + err.message;
  }
}

function fmtDuration(ms) {
  if (ms < 1) return ms.toFixed(2) + ' ms';
  if (ms < 1000) return Math.round(ms) + ' ms';
  return (ms / 1000).toFixed(2) + ' s';
}

function fmtSize(n) {
  if (n < 1024) return n + ' B';
  const u = ['KiB', 'MiB', 'GiB', 'TiB'];
  let i = -1;
  do { n /= 1024; i++; } while (n >= 1024 && i < u.length - 1);
  return n.toFixed(1) + ' ' + u[i];
}

function statusClass(s) { return s ? 's' + String(s)[0] : 'err'; }

function row(s) {
  const tr = el('tr', { 'data-id': s.id, onclick: () => select(s.id) },
    el('td', {}, new Date(s.start).toLocaleTimeString()),
    el('td', {}, s.method),
    el('td', { class: 'path', title: s.url }, s.url),
    el('td', { class: statusClass(s.status) }, s.status || (s.error ? 'error' : '—')),
    el('td', {}, fmtDuration(s.duration_ms)),
    el('td', {}, fmtSize(s.resp_size)));
  if (s.replay_of) tr.classList.add('replay');
  if (s.id === selected) tr.classList.add('selected');
  return tr;
}

function renderList() {
  const body = $('rows');
  body.replaceChildren(...rows.map(row));
  $('empty').hidden = rows.length > 0;
}

function onExchange(s) {
  if (filtered()) {
    // The filters (a body search, say) are the server's to apply.
    clearTimeout(filterTimer);
    filterTimer = setTimeout(loadList, 100);
    return;
  }
  if (rows.some((r) => r.id === s.id)) return;
  rows.unshift(s);
  $('rows').prepend(row(s));
  $('empty').hidden = true;
}

function connect() {
  const es = new EventSource(withToken('/api/events'));
  es.addEventListener('open', () => {
    $('status').textContent = 'live';
    $('status').classList.add('live');
    loadList();
  });
  es.addEventListener('error', () => {
    $('status').textContent = 'reconnecting…';
    $('status').classList.remove('live');
  });
  es.addEventListener('exchange', (e) => onExchange(JSON.parse(e.data)));
  es.addEventListener('clear', () => { rows = []; renderList(); showNone(); });
}

function showNone() {
  selected = null; current = null;
  $('detail').hidden = true;
  $('no-detail').hidden = false;
}

async function select(id) {
  selected = id;
  for (const tr of $('rows').children) {
    const on = Number(tr.dataset.id) === id;
    tr.classList.toggle('selected', on);
    if (on) tr.scrollIntoView({ block: 'nearest' });
  }
  try {
    current = await api('GET', '/api/exchanges/' + id);
  } catch (err) {
    current = null;
    $('no-detail').textContent = err.message;
    $('no-detail').hidden = false;
    $('detail').hidden = true;
    return;
  }
  if (selected !== id) return;
  $('no-detail').hidden = true;
  $('detail').hidden = false;
  $('editor').hidden = true;
  $('curl-out').hidden = true;
  $('col-replay').hidden = true;
  $('diff-box').hidden = true;
  $('har-one').href = withToken('/api/exchanges/' + id + '/har');
  $('har-one').setAttribute('download', 'tunnel-' + id + '.har');
  $('replay').disabled = $('edit').disabled = !!current.upgrade;
  renderExchange($('col-main'), current, current.replay_of ? 'replay of #' + current.replay_of : '');
}

function headerTable(headers) {
  const t = el('table', { class: 'headers' });
  for (const [name, value] of headers) {
    const cell = el('td', {});
    if (masked.has(name.toLowerCase())) {
      const v = el('span', { class: 'masked value' }, '••••••••');
      const b = el('button', { type: 'button', class: 'reveal' }, 'reveal');
      b.addEventListener('click', () => {
        const hidden = v.classList.toggle('masked');
        v.textContent = hidden ? '••••••••' : value;
        b.textContent = hidden ? 'reveal' : 'hide';
      });
      cell.append(v, b);
    } else {
      cell.append(el('span', { class: 'value' }, value));
    }
    t.append(el('tr', {}, el('td', {}, name), cell));
  }
  return t;
}

function prettyXML(text) {
  let depth = 0;
  return text.replace(/>\s*</g, '><').split(/(?=<)/).map((part) => {
    if (/^<\//.test(part)) depth = Math.max(depth - 1, 0);
    const line = '  '.repeat(depth) + part;
    if (/^<[^!?\/][^>]*[^\/]>$/.test(part) || /^<[^!?\/]>$/.test(part)) depth++;
    return line;
  }).join('\n');
}

function hexDump(bytes) {
  const lines = [];
  for (let i = 0; i < Math.min(bytes.length, 64 * 1024); i += 16) {
    const chunk = bytes.slice(i, i + 16);
    const hex = Array.from(chunk, (b) => b.toString(16).padStart(2, '0')).join(' ');
    const asc = Array.from(chunk, (b) => (b >= 32 && b < 127 ? String.fromCharCode(b) : '.')).join('');
    lines.push(i.toString(16).padStart(8, '0') + '  ' + hex.padEnd(48) + ' ' + asc);
  }
  return lines.join('\n');
}

// prettyText is a body as text, pretty-printed by kind: what the page
// shows and what the diff compares.
function prettyText(b) {
  if (b.kind === 'json') {
    try { return JSON.stringify(JSON.parse(b.text), null, 2); } catch (e) { return b.text; }
  }
  if (b.kind === 'xml') return prettyXML(b.text);
  if (b.kind === 'binary' || b.kind === 'image') {
    const raw = atob(b.base64 || '');
    return hexDump(Uint8Array.from(raw, (c) => c.charCodeAt(0)));
  }
  return b.text || '';
}

function bodyView(b) {
  const box = el('div', { class: 'body' });
  const notes = [fmtSize(b.size)];
  if (b.content_type) notes.push(b.content_type);
  if (b.decoded) notes.push('decompressed from ' + b.encoding);
  if (b.truncated) notes.push('only the first ' + fmtSize(b.captured) + ' kept');
  box.append(el('div', { class: 'note' }, notes.join(' · ')));
  if (!b.size) return box;
  if (b.kind === 'image' && b.base64) {
    box.append(el('img', { src: 'data:' + (b.content_type || 'image/png').split(';')[0] + ';base64,' + b.base64, alt: 'image body' }));
  } else if (b.kind === 'form') {
    const t = el('table', { class: 'headers' });
    for (const [k, v] of new URLSearchParams(b.text)) t.append(el('tr', {}, el('td', {}, k), el('td', {}, v)));
    box.append(t);
  }
  box.append(el('pre', { class: 'body-text' }, prettyText(b)));
  return box;
}

function renderExchange(col, d, title) {
  col.replaceChildren();
  col.append(el('h2', {}, (title ? title + ': ' : '') + '#' + d.id + ' ' + d.method + ' ' + d.url));
  const facts = [new Date(d.start).toLocaleString(), 'from ' + d.visitor, 'tunnel ' + d.tunnel, fmtDuration(d.duration_ms)];
  col.append(el('div', { class: 'note' }, facts.join(' · ')));
  if (d.error) col.append(el('div', { class: 'err' }, d.error));
  if (d.upgrade) col.append(el('div', { class: 'note' }, 'an upgrade (WebSocket): what followed is not recorded'));
  col.append(el('h3', {}, 'request'), headerTable(d.request.headers), bodyView(d.request.body));
  if (d.response) {
    col.append(el('h3', {}, 'response ', el('span', { class: statusClass(d.response.status) + ' resp-status' }, d.response.status)),
      headerTable(d.response.headers), bodyView(d.response.body));
  } else {
    col.append(el('h3', {}, 'no response'));
  }
}

// diffLines is a line diff (longest common subsequence) of a and b.
function diffLines(a, b) {
  const x = a.split('\n'), y = b.split('\n');
  if (x.length * y.length > 4e6) return [{ op: ' ', line: '(too large to compare)' }];
  const n = x.length, m = y.length;
  const dp = Array.from({ length: n + 1 }, () => new Uint32Array(m + 1));
  for (let i = n - 1; i >= 0; i--)
    for (let j = m - 1; j >= 0; j--)
      dp[i][j] = x[i] === y[j] ? dp[i + 1][j + 1] + 1 : Math.max(dp[i + 1][j], dp[i][j + 1]);
  const out = [];
  let i = 0, j = 0;
  while (i < n && j < m) {
    if (x[i] === y[j]) { out.push({ op: ' ', line: x[i] }); i++; j++; }
    else if (dp[i + 1][j] >= dp[i][j + 1]) out.push({ op: '-', line: x[i++] });
    else out.push({ op: '+', line: y[j++] });
  }
  while (i < n) out.push({ op: '-', line: x[i++] });
  while (j < m) out.push({ op: '+', line: y[j++] });
  return out;
}

function showReplay(orig, rep) {
  $('col-replay').hidden = false;
  renderExchange($('col-replay'), rep, 'replay');
  const a = (orig.response ? 'status ' + orig.response.status + '\n' + prettyText(orig.response.body) : '(no response)');
  const b = (rep.response ? 'status ' + rep.response.status + '\n' + prettyText(rep.response.body) : '(no response: ' + (rep.error || '') + ')');
  const pre = $('diff');
  pre.replaceChildren(...diffLines(a, b).map((d) =>
    el('span', { class: d.op === '+' ? 'add' : d.op === '-' ? 'del' : 'same' }, d.op + ' ' + d.line + '\n')));
  $('diff-box').hidden = false;
}

async function replay(edit) {
  if (!current || current.upgrade) return;
  const orig = current;
  $('replay').disabled = true;
  try {
    const rep = await api('POST', '/api/exchanges/' + orig.id + '/replay', edit);
    if (current && current.id === orig.id) showReplay(orig, rep);
  } catch (err) {
    alert('replay: ' + err.message);
  } finally {
    $('replay').disabled = false;
  }
}

function openEditor() {
  if (!current || current.upgrade) return;
  $('ed-method').value = current.method;
  $('ed-url').value = current.url;
  $('ed-headers').value = current.request.headers.map(([k, v]) => k + ': ' + v).join('\n');
  $('ed-body').value = current.request.body.text || '';
  $('editor').hidden = false;
  $('ed-body').focus();
}

function sendEdit(ev) {
  ev.preventDefault();
  const headers = $('ed-headers').value.split('\n').filter((l) => l.includes(':'))
    .map((l) => { const i = l.indexOf(':'); return [l.slice(0, i).trim(), l.slice(i + 1).trim()]; });
  $('editor').hidden = true;
  replay({ method: $('ed-method').value.trim(), url: $('ed-url').value.trim(), headers, body: $('ed-body').value });
}

function shellQuote(s) { return "'" + String(s).replace(/'/g, "'\\''") + "'"; }

function curlCommand(d) {
  const hdr = Object.fromEntries(d.request.headers.map(([k, v]) => [k.toLowerCase(), v]));
  const scheme = hdr['x-forwarded-proto'] === 'https' ? 'https' : 'http';
  const parts = ['curl', '-X', d.method, shellQuote(scheme + '://' + d.host + d.url)];
  const skip = new Set(['host', 'content-length', 'connection', 'transfer-encoding', 'accept-encoding',
    'x-forwarded-for', 'x-forwarded-proto', 'x-forwarded-host']);
  for (const [k, v] of d.request.headers) if (!skip.has(k.toLowerCase())) parts.push('-H', shellQuote(k + ': ' + v));
  if (d.request.body.size) {
    parts.push('--data-binary', d.request.body.text != null && d.request.body.text !== '' && !d.request.body.decoded
      ? shellQuote(d.request.body.text) : '@body.bin');
  }
  return parts.join(' ');
}

function copyCurl() {
  if (!current) return;
  const cmd = curlCommand(current);
  const out = $('curl-out');
  out.value = cmd;
  out.hidden = false;
  out.select();
  if (navigator.clipboard) navigator.clipboard.writeText(cmd).catch(() => {});
}

function move(step) {
  if (!rows.length) return;
  let i = rows.findIndex((s) => s.id === selected);
  i = i < 0 ? (step > 0 ? 0 : rows.length - 1) : Math.min(Math.max(i + step, 0), rows.length - 1);
  select(rows[i].id);
}

function onKey(e) {
  const typing = /^(INPUT|TEXTAREA|SELECT)$/.test(e.target.tagName);
  if (e.key === 'Escape') { if (typing) e.target.blur(); $('editor').hidden = true; return; }
  if (typing || e.ctrlKey || e.metaKey || e.altKey) return;
  switch (e.key) {
    case 'j': case 'ArrowDown': move(1); break;
    case 'k': case 'ArrowUp': move(-1); break;
    case 'r': replay(); break;
    case 'e': openEditor(); break;
    case '/': $('f-q').focus(); break;
    default: return;
  }
  e.preventDefault();
}

function init() {
  for (const id of ['f-status', 'f-method', 'f-path', 'f-header', 'f-min-ms', 'f-min-size', 'f-q']) {
    $(id).addEventListener('input', () => { clearTimeout(filterTimer); filterTimer = setTimeout(loadList, 150); });
  }
  $('filters').addEventListener('submit', (e) => { e.preventDefault(); loadList(); });
  $('clear').addEventListener('click', () => api('DELETE', '/api/exchanges').then(() => { rows = []; renderList(); showNone(); }));
  $('replay').addEventListener('click', () => replay());
  $('edit').addEventListener('click', openEditor);
  $('editor').addEventListener('submit', sendEdit);
  $('ed-cancel').addEventListener('click', () => { $('editor').hidden = true; });
  $('curl').addEventListener('click', copyCurl);
  document.addEventListener('keydown', onKey);
  connect();
}

init();
