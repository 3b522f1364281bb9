// Wisp's built-in dashboard. Polls the broker's JSON API once a second
// (see broker/src/http/api.c for why polling): /api/stats for the figures,
// /api/tree for each open level of the topic tree, /api/clients. Every
// response is bounded by the broker, so the page stays light however many
// topics and clients there are. Nothing here is fetched from elsewhere.
'use strict';

const POLL_MS = 1000;
const HISTORY = 120;          // samples in the charts: two minutes
const MAX_OPEN_REFRESH = 32;  // open tree levels refreshed per poll

const $ = (id) => document.getElementById(id);
const series = { msgIn: [], msgOut: [], bytesIn: [], bytesOut: [] };
let last = null;              // previous /api/stats sample: counters and time
// Tree levels shown open, by path: null is the top, '' the empty first level
// of topics such as "/a" (a level like any other, shown as "(empty)").
const open = new Set([null]);

function fmt(n) {
  if (n === null || n === undefined || Number.isNaN(n)) return '–';
  const a = Math.abs(n);
  if (a >= 1e9) return (n / 1e9).toFixed(1) + 'G';
  if (a >= 1e6) return (n / 1e6).toFixed(1) + 'M';
  if (a >= 1e4) return (n / 1e3).toFixed(1) + 'k';
  if (Number.isInteger(n)) return String(n);
  return n.toFixed(a < 10 ? 2 : 1);
}

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

async function getJSON(url) {
  const r = await fetch(url, { credentials: 'same-origin', cache: 'no-store' });
  if (!r.ok) throw new Error(url + ': ' + r.status);
  return r.json();
}

function setStatus(ok, text) {
  const s = $('status');
  s.textContent = text;
  s.className = 'status ' + (ok ? 'ok' : 'bad');
}

// ---- figures, rates and charts ----

function metricValue(stats, name, label) {
  for (const m of stats.metrics)
    if (m.name === name && (label === undefined || m.label === label)) return m.value;
  return null;
}

function push(arr, v) {
  arr.push(v);
  if (arr.length > HISTORY) arr.shift();
}

function drawChart(canvas, a, b) {
  const ctx = canvas.getContext('2d');
  const ratio = window.devicePixelRatio || 1;
  const w = canvas.clientWidth, h = canvas.clientHeight;
  if (canvas.width !== Math.round(w * ratio)) { canvas.width = Math.round(w * ratio); canvas.height = Math.round(h * ratio); }
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  ctx.clearRect(0, 0, w, h);
  const max = Math.max(1, ...a, ...b);
  ctx.strokeStyle = '#e3e6eb';
  ctx.fillStyle = '#6b7280';
  ctx.font = '11px system-ui, sans-serif';
  for (let i = 0; i <= 2; i++) {
    const y = 8 + (h - 16) * i / 2;
    ctx.beginPath(); ctx.moveTo(0, y); ctx.lineTo(w, y); ctx.stroke();
    ctx.fillText(fmt(max * (1 - i / 2)), 4, y + (i === 0 ? 10 : -2));
  }
  const line = (arr, color) => {
    ctx.strokeStyle = color; ctx.lineWidth = 2; ctx.beginPath();
    arr.forEach((v, i) => {
      const x = w - (arr.length - 1 - i) * (w / (HISTORY - 1));
      const y = 8 + (h - 16) * (1 - v / max);
      if (i === 0) ctx.moveTo(x, y); else ctx.lineTo(x, y);
    });
    ctx.stroke();
  };
  line(a, '#2563eb');
  line(b, '#db6d28');
}

function renderSys(stats) {
  const body = $('sys').tBodies[0];
  const rows = [];
  for (const m of stats.metrics) {
    if (!m.sys) continue;
    const tr = el('tr');
    tr.append(el('td', '', m.sys), el('td', 'num', fmt(m.value)),
      el('td', '', 'wisp_' + m.name + (m.label !== null ? '{' + m.label + '}' : '')), el('td', 'small', m.help));
    rows.push(tr);
  }
  body.replaceChildren(...rows);
}

function updateFigures(stats) {
  const now = stats.now_ms;
  const c = {
    msgIn: metricValue(stats, 'messages_received_total'),
    msgOut: metricValue(stats, 'messages_sent_total'),
    bytesIn: metricValue(stats, 'bytes_received_total'),
    bytesOut: metricValue(stats, 'bytes_sent_total'),
  };
  if (last && now > last.now) {
    const dt = (now - last.now) / 1000;
    for (const k of Object.keys(c)) push(series[k], Math.max(0, (c[k] - last.c[k]) / dt));
  }
  last = { now, c };
  const tail = (arr) => (arr.length ? arr[arr.length - 1] : null);
  $('clients-connected').textContent = fmt(metricValue(stats, 'clients_connected'));
  $('rate-msg-in').textContent = fmt(tail(series.msgIn));
  $('rate-msg-out').textContent = fmt(tail(series.msgOut));
  $('rate-bytes-in').textContent = fmt(tail(series.bytesIn));
  $('rate-bytes-out').textContent = fmt(tail(series.bytesOut));
  $('dropped').textContent = fmt(metricValue(stats, 'messages_dropped_all_total'));
  $('uptime').textContent = 'up ' + fmt(metricValue(stats, 'uptime_seconds')) + ' s';
  const info = stats.metrics.find((m) => m.name === 'info');
  if (info) $('version').textContent = 'version ' + info.label;
  $('topic-count').textContent = '(' + fmt(metricValue(stats, 'dashboard_topics')) + ' tracked)';
  $('chart-msgs').dataset.samples = series.msgIn.length;
  drawChart($('chart-msgs'), series.msgIn, series.msgOut);
  drawChart($('chart-bytes'), series.bytesIn, series.bytesOut);
  renderSys(stats);
}

// ---- the topic tree ----

function childPath(parent, name) {
  return parent === null ? name : parent + '/' + name;
}

// The top's list is #tree, without a data-path; each open level's has its path.
function findList(path) {
  if (path === null) return $('tree');
  for (const ul of document.querySelectorAll('ul[data-path]'))
    if (ul.dataset.path === path) return ul;
  return null;
}

function renderLevel(ul, data) {
  const path = ul.dataset.path === undefined ? null : ul.dataset.path;
  const seen = new Set();
  const kids = data.children.slice().sort((x, y) => (x.name < y.name ? -1 : x.name > y.name ? 1 : 0));
  let prev = null;
  for (const k of kids) {
    const p = childPath(path, k.name);
    seen.add(p);
    let li = null;
    for (const c of ul.children) if (c.dataset && c.dataset.path === p) { li = c; break; }
    if (!li) {
      li = el('li');
      li.dataset.path = p;
      const row = el('div', 'row');
      row.append(el('span', 'twisty'), k.name === '' ? el('span', 'name empty', '(empty)') : el('span', 'name', k.name),
        el('span', 'value'), el('span', 'rate'),
        el('span', 'count'));
      row.addEventListener('click', () => toggle(li));
      li.append(row);
    }
    const row = li.firstChild;
    row.classList.toggle('has-kids', k.children);
    row.querySelector('.twisty').textContent = k.children ? (open.has(p) ? '▾' : '▸') : '·';
    const value = row.querySelector('.value');
    if (k.value !== undefined) {
      if (value.textContent !== k.value) {
        value.textContent = k.value;
        value.title = k.size + ' bytes';
        row.classList.remove('flash'); void row.offsetWidth; row.classList.add('flash');
      }
      row.querySelector('.rate').textContent = fmt(k.rate) + '/s';
      row.querySelector('.count').textContent = fmt(k.count) + ' msgs';
    }
    const next = prev ? prev.nextSibling : ul.firstChild;
    if (next !== li) ul.insertBefore(li, next);
    prev = li;
  }
  for (const c of Array.from(ul.children))
    if (c.dataset && c.dataset.path !== undefined && !seen.has(c.dataset.path)) c.remove();
  let more = ul.querySelector(':scope > .more');
  const hidden = data.total - data.children.length;
  if (hidden > 0) {
    if (!more) { more = el('li', 'more'); }
    more.textContent = '… ' + hidden + ' more (showing ' + data.children.length + ' per level)';
    ul.append(more);
  } else if (more) {
    more.remove();
  }
}

async function loadLevel(path) {
  const ul = findList(path);
  if (!ul) return;
  const data = await getJSON(path === null ? '/api/tree' : '/api/tree?path=' + encodeURIComponent(path));
  renderLevel(ul, data);
}

function toggle(li) {
  const p = li.dataset.path;
  if (!li.firstChild.classList.contains('has-kids')) return;
  if (open.has(p)) {
    open.delete(p);
    for (const q of Array.from(open)) if (q !== null && q.startsWith(p + '/')) open.delete(q);
    const ul = li.querySelector(':scope > ul');
    if (ul) ul.remove();
    li.firstChild.querySelector('.twisty').textContent = '▸';
    return;
  }
  open.add(p);
  const ul = el('ul');
  ul.dataset.path = p;
  li.append(ul);
  li.firstChild.querySelector('.twisty').textContent = '▾';
  loadLevel(p).catch(() => {});
}

async function refreshTree() {
  const paths = Array.from(open).slice(0, MAX_OPEN_REFRESH);
  for (const p of paths) {
    if (!findList(p)) { open.delete(p); continue; }
    await loadLevel(p);
  }
}

// ---- clients ----

async function refreshClients() {
  const data = await getJSON('/api/clients');
  $('client-count').textContent = '(' + data.total + ')';
  const rows = data.clients.map((c) => {
    const tr = el('tr');
    tr.append(el('td', '', c.id === null ? '(connecting)' : c.id), el('td', '', c.peer), el('td', '', c.listener),
      el('td', 'num', c.version === 4 ? '3.1.1' : c.version === 5 ? '5' : c.version === 3 ? '3.1' : '–'),
      el('td', 'num', c.keepalive + ' s'), el('td', 'num', String(c.subscriptions)), el('td', 'num', String(c.queued)));
    return tr;
  });
  $('clients').tBodies[0].replaceChildren(...rows);
}

// ---- publishing ----

function setupPublish() {
  $('publish').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const out = $('pub-result');
    const form = new URLSearchParams();
    form.set('topic', $('pub-topic').value);
    form.set('payload', $('pub-payload').value);
    form.set('qos', $('pub-qos').value);
    if ($('pub-retain').checked) form.set('retain', '1');
    try {
      const r = await fetch('/api/publish', { method: 'POST', body: form, credentials: 'same-origin' });
      const text = await r.text();
      if (!r.ok) { out.textContent = 'refused: ' + text; return; }
      const j = JSON.parse(text);
      out.textContent = 'published ' + j.bytes + ' bytes to ' + j.published + ' (QoS ' + j.qos + (j.retain ? ', retained' : '') + ')';
      poll();
    } catch (e) {
      out.textContent = 'failed: ' + e.message;
    }
  });
}

// ---- the poll ----

let busy = false;
async function poll() {
  if (busy) return;
  busy = true;
  try {
    const stats = await getJSON('/api/stats');
    updateFigures(stats);
    await refreshTree();
    await refreshClients();
    setStatus(true, 'live');
  } catch (e) {
    setStatus(false, 'disconnected: ' + e.message);
  } finally {
    busy = false;
  }
}

document.addEventListener('DOMContentLoaded', () => {
  setupPublish();
  poll();
  setInterval(poll, POLL_MS);
});
