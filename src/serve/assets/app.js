// Sluice dashboard: a small single-page app over the same JSON API anyone
// can call. No build step; Chart.js (vendored) draws the charts. Every text
// from the server is put in the page with textContent, never as HTML.
'use strict';

const main = document.getElementById('main');
let session = { authenticated: false, scope: null, anonymous: null, csrf: null };
let streams = [];   // EventSources of the page shown
let charts = [];    // Chart.js instances of the page shown

// ---------- helpers ----------
function h(tag, attrs, ...kids) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === 'class') el.className = v;
    else if (k === 'text') el.textContent = v;
    else if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? '' : v);
  }
  for (const kid of kids.flat()) {
    if (kid === null || kid === undefined || kid === false) continue;
    el.append(kid instanceof Node ? kid : document.createTextNode(String(kid)));
  }
  return el;
}
const svgNS = 'http://www.w3.org/2000/svg';
function s(tag, attrs, ...kids) {
  const el = document.createElementNS(svgNS, tag);
  for (const [k, v] of Object.entries(attrs || {})) if (v !== null && v !== undefined) el.setAttribute(k, v);
  for (const kid of kids.flat()) if (kid !== null && kid !== undefined) el.append(kid instanceof Node ? kid : document.createTextNode(String(kid)));
  return el;
}
function toast(msg) {
  const t = document.getElementById('toast');
  t.textContent = msg; t.classList.add('show');
  clearTimeout(toast.timer); toast.timer = setTimeout(() => t.classList.remove('show'), 2500);
}
function badge(status) { return h('span', { class: `badge s-${status}`, text: status.replace('_', ' ') }); }
function when(iso) { return iso ? new Date(iso).toLocaleString() : '–'; }
function secs(x) {
  if (x === null || x === undefined) return '–';
  if (x < 1) return `${Math.round(x * 1000)} ms`;
  if (x < 120) return `${x.toFixed(1)} s`;
  return `${Math.floor(x / 60)} min ${Math.round(x % 60)} s`;
}
function between(a, b) { return a ? ((b ? new Date(b) : new Date()) - new Date(a)) / 1000 : null; }
function shortId(id) { return id.slice(0, 13); }
function canTrigger() { return ['trigger', 'admin'].includes(session.scope); }
function css(name) { return getComputedStyle(document.documentElement).getPropertyValue(name).trim(); }

class HttpError extends Error { constructor(status, msg) { super(msg); this.status = status; } }

async function call(method, path, body) {
  const headers = { Accept: 'application/json' };
  if (method !== 'GET') {
    headers['Content-Type'] = 'application/json';
    if (session.csrf) headers['X-CSRF-Token'] = session.csrf;
  }
  const r = await fetch(path, { method, headers, credentials: 'same-origin', body: body === undefined ? undefined : JSON.stringify(body) });
  let data = null;
  try { data = await r.json(); } catch (_) { /* not JSON */ }
  if (!r.ok) throw new HttpError(r.status, (data && data.error) || `${r.status} ${r.statusText}`);
  return data;
}

function stopPage() {
  document.getElementById('toast').classList.remove('show');
  streams.forEach(e => e.close()); streams = [];
  charts.forEach(c => c.destroy()); charts = [];
}

function problem(e) {
  if (e.status === 404 && /not been built/.test(e.message)) {
    return h('p', { class: 'muted', text: 'Not built yet: run the pipeline that builds it.' });
  }
  if (e.status === 401) {
    return h('div', { class: 'card' },
      h('h2', { text: 'Log in to see this' }),
      h('p', { class: 'muted', text: e.message }),
      h('a', { class: 'button', href: '#/login' }, 'Log in with a token'));
  }
  return h('p', { class: 'error', role: 'alert', text: e.message });
}

// ---------- session and theme ----------
async function loadSession() {
  try { session = await call('GET', '/api/session'); } catch (_) { session = { authenticated: false }; }
  const who = document.getElementById('who');
  who.replaceChildren();
  if (session.authenticated) {
    who.append(h('span', { text: `${session.name} · ${session.scope}` }), ' ',
      h('button', { type: 'button', class: 'ghost', onclick: logout }, 'Log out'));
  } else {
    who.append(session.anonymous ? h('span', { text: `anonymous · ${session.anonymous}` }) : '', ' ',
      h('a', { href: '#/login' }, 'Log in'));
  }
}
async function logout() {
  try { await call('POST', '/logout'); } catch (_) { /* already out */ }
  await loadSession();
  location.hash = '#/';
  route();
}
function applyTheme() {
  const t = localStorage.getItem('sluice-theme');
  if (t) document.documentElement.setAttribute('data-theme', t); else document.documentElement.removeAttribute('data-theme');
  const b = document.getElementById('theme');
  b.setAttribute('aria-label', `Colour theme: ${t || 'as the system'} (switch)`);
  b.title = `Theme: ${t || 'system'}`;
}
document.getElementById('theme').addEventListener('click', () => {
  const order = [null, 'dark', 'light'];
  const cur = localStorage.getItem('sluice-theme');
  const next = order[(order.indexOf(cur) + 1) % order.length];
  if (next) localStorage.setItem('sluice-theme', next); else localStorage.removeItem('sluice-theme');
  applyTheme();
  route();
});

// ---------- charts ----------
const palette = ['#1f6feb', '#e8590c', '#2f9e44', '#ae3ec9', '#f08c00', '#0c8599', '#e03131', '#5c7cfa'];

const numericType = t => /^(smallint|integer|bigint|float|decimal|numeric)/.test(t || '');
// A column as tables show it: numbers right-aligned, decimals with their scale.
function col(c) {
  const m = /^decimal\(\d+,(\d+)\)/.exec(c.type || '');
  return { name: c.name, numeric: numericType(c.type), scale: m ? Number(m[1]) : null };
}
function cell(c, v) {
  if (v === null || v === undefined) return '∅';
  if (c.scale !== null && typeof v === 'number') return v.toLocaleString(undefined, { minimumFractionDigits: c.scale, maximumFractionDigits: c.scale });
  if (c.numeric && typeof v === 'number') return v.toLocaleString();
  return String(v);
}
function rowsTable(columns, rows) {
  return h('div', { class: 'table-wrap' }, h('table', {},
    h('thead', {}, h('tr', {}, columns.map(c => h('th', { scope: 'col', class: c.numeric ? 'num' : null, text: c.name })))),
    h('tbody', {}, rows.map(r => h('tr', {}, columns.map(c => h('td', { class: c.numeric ? 'num' : null, text: cell(c, r[c.name]) })))))));
}

async function drawChart(box, cfg) {
  const cols = cfg.type === 'table' ? [] : [cfg.x, ...cfg.y, cfg.group].filter(Boolean);
  const q = new URLSearchParams({ limit: String(cfg.limit) });
  if (cols.length) q.set('columns', [...new Set(cols)].join(','));
  if (cfg.sort) q.set('sort', cfg.sort);
  const page = await call('GET', `/api/data/${encodeURIComponent(cfg.model)}?${q}`);
  const columns = page.columns.map(col);
  box.replaceChildren();
  if (cfg.type === 'table') {
    box.append(rowsTable(columns, page.rows));
    return;
  }
  const labels = [...new Set(page.rows.map(r => String(r[cfg.x])))];
  const datasets = [];
  const series = cfg.group ? [...new Set(page.rows.map(r => String(r[cfg.group])))] : [null];
  for (const y of cfg.y) {
    for (const g of series) {
      const data = labels.map(l => {
        const r = page.rows.find(r => String(r[cfg.x]) === l && (g === null || String(r[cfg.group]) === g));
        return r ? Number(r[y]) : null;
      });
      const i = datasets.length;
      datasets.push({
        label: g === null ? y : (cfg.y.length > 1 ? `${y} · ${g}` : g),
        data, backgroundColor: palette[i % palette.length], borderColor: palette[i % palette.length],
        borderWidth: cfg.type === 'line' ? 2 : 0, tension: 0.2,
      });
    }
  }
  const canvas = h('canvas', { role: 'img', 'aria-label': `${cfg.title}: ${cfg.type} chart of ${cfg.y.join(', ')} by ${cfg.x}`, 'data-model': cfg.model });
  box.append(h('div', { class: 'chart' }, canvas),
    h('details', {}, h('summary', {}, 'Data as a table'), rowsTable(columns, page.rows)));
  Chart.defaults.color = css('--muted');
  Chart.defaults.borderColor = css('--line');
  charts.push(new Chart(canvas, {
    type: cfg.type, data: { labels, datasets },
    options: {
      responsive: true, maintainAspectRatio: false, animation: false,
      plugins: { legend: { display: datasets.length > 1 } },
      scales: { y: { beginAtZero: true } },
    },
  }));
}

async function chartsSection(target, list) {
  if (!list.charts.length) {
    target.append(h('p', { class: 'muted', text: 'No charts yet: declare [[charts]] of published models in sluice.toml.' }));
    return;
  }
  const grid = h('div', { class: 'grid' });
  target.append(grid);
  for (const cfg of list.charts) {
    const box = h('div', { class: 'card-body' }, h('p', { class: 'muted', text: 'Loading…' }));
    grid.append(h('section', { class: 'card', 'aria-label': cfg.title }, h('h3', { text: cfg.title }), box));
    drawChart(box, cfg).catch(e => box.replaceChildren(problem(e)));
  }
}

// ---------- pipelines (home) ----------
function stepsList(tasks) {
  return h('ul', { class: 'steps', 'aria-label': 'Steps' }, tasks.map(t => h('li', {}, h('span', { class: `badge s-${t.status}`, title: t.kind }, `${t.step}: ${t.status.replace('_', ' ')}`))));
}

function follow(runId, area, onDone) {
  const es = new EventSource(`/api/events?run=${encodeURIComponent(runId)}`);
  streams.push(es);
  es.addEventListener('run', ev => {
    const { run, tasks } = JSON.parse(ev.data);
    const done = ['success', 'failed', 'cancelled'].includes(run.status);
    area.replaceChildren(
      h('div', { class: 'row' }, badge(run.status),
        h('span', { class: 'result', 'data-status': run.status, text: done ? (run.status === 'success' ? `Succeeded in ${secs(run.duration_seconds)}` : `Run ${run.status}${run.error ? ': ' + run.error : ''}`) : 'Running…' }),
        h('span', { class: 'spacer' }), h('a', { href: `#/runs/${run.id}` }, `Run ${shortId(run.id)}`)),
      stepsList(tasks));
    if (done) { es.close(); onDone && onDone(run); }
  });
  es.addEventListener('error', () => { /* the browser reconnects */ });
}

async function pipelinesPage() {
  main.replaceChildren(h('h1', { text: 'Pipelines' }));
  let list, data;
  try { [list, data] = await Promise.all([call('GET', '/api/pipelines'), call('GET', '/api/data')]); } catch (e) { main.append(problem(e)); return; }
  const grid = h('div', { class: 'grid' });
  main.append(grid);
  const results = h('section', { 'aria-labelledby': 'results-h' }, h('h2', { id: 'results-h', text: 'Latest data' }));
  for (const p of list.pipelines) {
    const area = h('div', { class: 'progress', 'aria-live': 'polite', hidden: true });
    const next = p.triggers.filter(t => t.next_fire).map(t => {
      const at = new Date(t.next_fire).toLocaleString(undefined, { timeZone: t.timezone, dateStyle: 'medium', timeStyle: 'short' });
      return `${at} (${t.timezone})`;
    });
    const events = p.triggers.filter(t => t.on_dataset || t.on_new_objects).map(t => t.on_dataset ? `when ${t.on_dataset} is updated` : `on new files in ${t.on_new_objects}`);
    const last = p.last_run;
    const button = h('button', { type: 'button', 'data-pipeline': p.name, 'aria-label': `Run ETL Pipeline: ${p.name}` }, 'Run ETL Pipeline');
    if (!canTrigger()) { button.disabled = true; button.title = 'Log in with a token of scope trigger to run pipelines'; }
    button.addEventListener('click', async () => {
      button.disabled = true;
      area.hidden = false;
      area.replaceChildren(h('p', { class: 'muted', text: 'Starting…' }));
      try {
        const run = await call('POST', `/api/pipelines/${encodeURIComponent(p.name)}/runs`, {});
        follow(run.id, area, async done => {
          button.disabled = false;
          card.querySelector('header').lastChild.replaceWith(badge(done.status));
          lastRun.replaceChildren(h('a', { href: `#/runs/${done.id}` }, `${done.status} · ${when(done.queued_at)} · ${secs(done.duration_seconds)}`));
          toast(`${p.name}: ${done.status}`);
          if (done.status === 'success') {
            charts.forEach(c => c.destroy()); charts = [];
            results.replaceChildren(h('h2', { id: 'results-h', text: 'Latest data' }));
            await chartsSection(results, data);
          }
        });
      } catch (e) { button.disabled = false; area.replaceChildren(problem(e)); }
    });
    const lastRun = h('dd', {}, last ? h('a', { href: `#/runs/${last.id}` }, `${last.status} · ${when(last.queued_at)} · ${secs(last.duration_seconds)}`) : '–');
    const card = h('article', { class: 'card', 'aria-label': `Pipeline ${p.name}` },
      h('header', {}, h('h3', { text: p.name }), last ? badge(last.status) : h('span', { class: 'muted', text: 'never run' })),
      p.description ? h('p', { id: `d-${p.name}`, class: 'muted', text: p.description }) : null,
      h('dl', { class: 'kv' },
        h('dt', {}, 'Steps'), h('dd', { text: p.steps.map(x => x.name).join(' → ') }),
        h('dt', {}, 'Next run'), h('dd', { text: next.length ? next.join('; ') : (events.length ? events.join('; ') : 'by hand') }),
        h('dt', {}, 'Last run'), lastRun),
      h('div', { class: 'row' }, button, canTrigger() ? null : h('span', { class: 'muted' }, h('a', { href: '#/login' }, 'Log in'), ' to run')),
      area);
    grid.append(card);
  }
  main.append(results);
  await chartsSection(results, data);
}

// ---------- runs ----------
function runsTable(runs) {
  return h('div', { class: 'table-wrap' }, h('table', {},
    h('thead', {}, h('tr', {}, ['Run', 'Pipeline', 'Status', 'Trigger', 'Date', 'Queued', 'Took', 'Error'].map(t => h('th', { scope: 'col', text: t })))),
    h('tbody', {}, runs.map(r => h('tr', {},
      h('td', {}, h('a', { href: `#/runs/${r.id}` }, shortId(r.id))), h('td', { text: r.pipeline }), h('td', {}, badge(r.status)),
      h('td', { text: r.trigger }), h('td', { text: r.logical_date }), h('td', { text: when(r.queued_at) }),
      h('td', { class: 'num', text: secs(r.duration_seconds ?? (r.started_at && !r.finished_at ? between(r.started_at) : null)) }),
      h('td', { text: (r.error || '').split('\n')[0].slice(0, 120) }))))));
}

async function runsPage() {
  main.replaceChildren(h('h1', { text: 'Runs' }));
  const box = h('div', {}, h('p', { class: 'muted', text: 'Loading…' }));
  main.append(box);
  try {
    const list = await call('GET', '/api/runs?limit=50');
    box.replaceChildren(list.runs.length ? runsTable(list.runs) : h('p', { class: 'muted', text: 'No runs yet.' }));
  } catch (e) { box.replaceChildren(problem(e)); return; }
  const es = new EventSource('/api/events');
  streams.push(es);
  es.addEventListener('runs', async () => {
    try { const list = await call('GET', '/api/runs?limit=50'); box.replaceChildren(runsTable(list.runs)); } catch (_) { /* keep the last */ }
  });
}

function dag(tasks) {
  const level = {};
  const depth = t => {
    if (level[t.step] !== undefined) return level[t.step];
    level[t.step] = 0;
    const deps = t.depends_on.map(d => tasks.find(x => x.step === d)).filter(Boolean);
    return (level[t.step] = deps.length ? 1 + Math.max(...deps.map(depth)) : 0);
  };
  tasks.forEach(depth);
  const cols = {};
  tasks.forEach(t => (cols[level[t.step]] = cols[level[t.step]] || []).push(t));
  const W = 170, H = 46, GX = 50, GY = 18;
  const pos = {};
  Object.entries(cols).forEach(([l, ts]) => ts.forEach((t, i) => (pos[t.step] = { x: 10 + l * (W + GX), y: 10 + i * (H + GY) })));
  const width = 20 + (Math.max(...Object.keys(cols).map(Number)) + 1) * (W + GX) - GX;
  const height = 20 + Math.max(...Object.values(cols).map(c => c.length)) * (H + GY) - GY;
  const color = st => css({ success: '--ok', failed: '--bad', upstream_failed: '--bad', running: '--run' }[st] || '--wait');
  const svg = s('svg', { width, height, viewBox: `0 0 ${width} ${height}`, role: 'img', 'aria-label': 'The run\'s steps and their dependencies' });
  for (const t of tasks) for (const d of t.depends_on) {
    const a = pos[d], b = pos[t.step];
    if (!a || !b) continue;
    const x1 = a.x + W, y1 = a.y + H / 2, x2 = b.x, y2 = b.y + H / 2;
    svg.append(s('path', { class: 'edge', d: `M${x1},${y1} C${x1 + GX / 2},${y1} ${x2 - GX / 2},${y2} ${x2},${y2}` }));
  }
  for (const t of tasks) {
    const p = pos[t.step];
    svg.append(s('g', { class: 'node', transform: `translate(${p.x},${p.y})` },
      s('title', {}, `${t.step} (${t.kind}): ${t.status}`),
      s('rect', { width: W, height: H, rx: 7, stroke: color(t.status) }),
      s('text', { x: 10, y: 19, 'font-weight': 600 }, t.step.length > 22 ? t.step.slice(0, 21) + '…' : t.step),
      s('text', { x: 10, y: 36, fill: color(t.status) }, `${t.kind} · ${t.status.replace('_', ' ')}`)));
  }
  return h('div', { class: 'svgbox' }, svg);
}

function gantt(tasks) {
  const bars = [];
  tasks.forEach((t, row) => t.attempts.forEach(a => a.started_at && bars.push({ row, t, a, s: new Date(a.started_at), e: a.finished_at ? new Date(a.finished_at) : new Date() })));
  if (!bars.length) return h('p', { class: 'muted', text: 'No attempts yet.' });
  const t0 = Math.min(...bars.map(b => b.s)), t1 = Math.max(...bars.map(b => b.e));
  const span = Math.max(t1 - t0, 1);
  const L = 150, R = 70, RH = 26, W = 720;
  const height = 24 + tasks.length * RH;
  const x = d => L + ((d - t0) / span) * (W - L - R);
  const color = st => css({ success: '--ok', failed: '--bad', lost: '--warn', handed_back: '--warn', abandoned: '--warn', running: '--run' }[st] || '--wait');
  const svg = s('svg', { width: W, height, viewBox: `0 0 ${W} ${height}`, role: 'img', 'aria-label': 'Timeline of the run\'s attempts' });
  for (let i = 0; i <= 4; i++) {
    const xx = L + (i / 4) * (W - L - R);
    svg.append(s('line', { class: 'axis', x1: xx, x2: xx, y1: 0, y2: height - 18 }), s('text', { x: xx, y: height - 4, 'text-anchor': 'middle', fill: css('--muted') }, `${((span / 1000) * i / 4).toFixed(span < 4000 ? 2 : 1)} s`));
  }
  tasks.forEach((t, row) => svg.append(s('text', { x: 4, y: 8 + row * RH + 12 }, t.step.length > 20 ? t.step.slice(0, 19) + '…' : t.step)));
  for (const b of bars) {
    const w = Math.max(x(b.e) - x(b.s), 2);
    svg.append(s('g', {}, s('title', {}, `${b.t.step} attempt ${b.a.attempt}: ${b.a.status}, ${secs((b.e - b.s) / 1000)}${b.a.worker ? ' on ' + b.a.worker : ''}`),
      s('rect', { x: x(b.s), y: 6 + b.row * RH, width: w, height: RH - 10, rx: 3, fill: color(b.a.status) }),
      s('text', { x: x(b.s) + w + 4, y: 8 + b.row * RH + 12, fill: css('--muted') }, secs((b.e - b.s) / 1000))));
  }
  return h('div', { class: 'svgbox' }, svg);
}

function pct(f) { return `${(f * 100).toFixed(1)} %`; }
function details(t) { return (t.output && (t.output.details || t.output)) || {}; }

function facts(t) {
  const o = details(t);
  const out = [];
  if (t.kind === 'load' && o.table) {
    out.push(h('dl', { class: 'kv' },
      h('dt', {}, 'Table'), h('dd', { text: o.table }),
      h('dt', {}, 'Rows read'), h('dd', { text: o.read ?? '–' }),
      h('dt', {}, 'Rows loaded'), h('dd', { text: o.loaded ?? 0 }),
      h('dt', {}, 'Rows rejected'), h('dd', { text: o.rejected ?? 0 }),
      o.rejects_file ? [h('dt', {}, 'Rejects file'), h('dd', {}, h('code', { text: o.rejects_file }))] : null));
    if (o.first_rejects && o.first_rejects.length) {
      out.push(h('h3', { text: 'First rejected rows' }), rowsTable(
        ['file', 'line', 'column', 'value', 'reason'].map(n => ({ name: n, scale: null })), o.first_rejects));
    }
  }
  if (t.kind === 'clean' && o.quality) {
    const q = o.quality;
    out.push(h('dl', { class: 'kv' },
      h('dt', {}, 'Quality score'), h('dd', { text: `${q.score.toFixed(1)} / 100` }),
      h('dt', {}, 'Completeness · validity · uniqueness'), h('dd', { text: `${pct(q.completeness)} · ${pct(q.validity)} · ${pct(q.uniqueness)}` })));
  }
  if (t.kind === 'sql' && Array.isArray(o.models)) {
    out.push(h('p', { class: 'muted', text: `Models: ${o.models.map(m => `${m.model} (${m.status})`).join(', ')}` }));
  }
  return out;
}

function taskDetails(runId, t) {
  const logs = h('div', {}, h('p', { class: 'muted', text: 'Loading the log…' }));
  const d = h('details', { 'data-task': t.step },
    h('summary', {}, h('strong', { text: t.step }), h('span', { class: 'muted', text: t.kind }), badge(t.status),
      h('span', { class: 'muted', text: secs(between(t.started_at, t.finished_at)) }), t.summary ? h('span', { text: t.summary }) : null,
      t.pool && t.pool !== 'default' ? h('span', { class: 'muted', text: `pool ${t.pool}` }) : null),
    t.note ? h('p', { class: 'error', 'data-note': t.step, text: t.note }) : null,
    t.error ? h('pre', { class: 'error', text: t.error }) : null,
    facts(t),
    t.attempts.length ? [h('h3', { text: `Attempts (${t.attempts.length})` }), h('div', { class: 'table-wrap' }, h('table', {},
      h('thead', {}, h('tr', {}, ['#', 'Worker', 'Status', 'Started', 'Took', 'Error'].map(x => h('th', { scope: 'col', text: x })))),
      h('tbody', {}, t.attempts.map(a => h('tr', {}, h('td', { text: a.attempt }), h('td', { text: a.worker || '–' }), h('td', {}, badge(a.status)),
        h('td', { text: when(a.started_at) }), h('td', { class: 'num', text: secs(between(a.started_at, a.finished_at)) }), h('td', { text: a.error || '' }))))))] : null,
    h('h3', { text: 'Log' }), logs);
  d.addEventListener('toggle', async () => {
    if (!d.open) return;
    try {
      const l = await call('GET', `/api/runs/${encodeURIComponent(runId)}/tasks/${encodeURIComponent(t.step)}/logs`);
      const lines = l.logs.map(x => `${new Date(x.at).toLocaleTimeString()} ${x.level.toUpperCase().padEnd(5)} ${x.message}`);
      const o = details(t);
      const output = typeof o.output === 'string' && o.output ? o.output : null;
      logs.replaceChildren(lines.length ? h('pre', { text: lines.join('\n') }) : h('p', { class: 'muted', text: 'No log lines.' }));
      if (output) logs.append(h('h3', { text: 'Output (stdout and stderr)' }), h('pre', { text: output }));
    } catch (e) { logs.replaceChildren(problem(e)); }
  });
  return d;
}

async function runPage(id) {
  main.replaceChildren(h('p', { class: 'muted', text: 'Loading…' }));
  let run, tasks;
  try { [run, { tasks }] = await Promise.all([call('GET', `/api/runs/${encodeURIComponent(id)}`), call('GET', `/api/runs/${encodeURIComponent(id)}/tasks`)]); } catch (e) { main.replaceChildren(problem(e)); return; }
  const open = new Set();
  const paint = () => {
    main.querySelectorAll('details[data-task][open]').forEach(d => open.add(d.dataset.task));
    const running = ['queued', 'running'].includes(run.status);
    const cancel = running && canTrigger() ? h('button', { type: 'button', class: 'ghost', onclick: async () => {
      try { await call('POST', `/api/runs/${encodeURIComponent(id)}/cancel`); toast('Cancelled'); } catch (e) { toast(e.message); }
    } }, 'Cancel run') : null;
    main.replaceChildren(
      h('div', { class: 'row' }, h('h1', { text: `${run.pipeline} · run ${shortId(run.id)}` }), badge(run.status), h('span', { class: 'spacer' }), cancel),
      h('dl', { class: 'kv' },
        h('dt', {}, 'Run'), h('dd', {}, h('code', { text: run.id })),
        h('dt', {}, 'Trigger'), h('dd', { text: run.trigger }),
        h('dt', {}, 'Logical date'), h('dd', { text: run.logical_date }),
        h('dt', {}, 'Queued'), h('dd', { text: when(run.queued_at) }),
        h('dt', {}, 'Took'), h('dd', { text: secs(run.duration_seconds ?? between(run.started_at)) }),
        run.error ? [h('dt', {}, 'Error'), h('dd', { class: 'error', text: run.error })] : null),
      h('h2', { text: 'Steps' }), dag(tasks),
      h('h2', { text: 'Timeline' }), gantt(tasks),
      h('h2', { text: 'Tasks' }), h('div', { class: 'card' }, tasks.map(t => taskDetails(id, t))));
    main.querySelectorAll('details[data-task]').forEach(d => { if (open.has(d.dataset.task)) d.open = true; });
  };
  paint();
  if (['queued', 'running'].includes(run.status)) {
    const es = new EventSource(`/api/events?run=${encodeURIComponent(id)}`);
    streams.push(es);
    es.addEventListener('run', ev => { ({ run, tasks } = JSON.parse(ev.data)); paint(); if (!['queued', 'running'].includes(run.status)) es.close(); });
  }
}

// ---------- data ----------
async function dataPage() {
  main.replaceChildren(h('h1', { text: 'Data' }));
  let list;
  try { list = await call('GET', '/api/data'); } catch (e) { main.append(problem(e)); return; }
  await chartsSection(main, list);
  main.append(h('h2', { text: 'Published models' }));
  if (!list.models.length) { main.append(h('p', { class: 'muted', text: 'No published models: add `publish = true` to a model in models/*.toml.' })); return; }
  for (const m of list.models) {
    const preview = h('div', {}, h('p', { class: 'muted', text: 'Loading…' }));
    main.append(h('section', { class: 'card', 'aria-label': `Model ${m.name}` },
      h('header', {}, h('h3', { text: m.name }), h('span', { class: 'row' },
        h('a', { href: m.path }, 'JSON'), h('a', { href: `${m.path}?format=csv` }, 'CSV'))),
      m.description ? h('p', { class: 'muted', text: m.description }) : null,
      h('p', { class: 'muted' }, 'Endpoints: ', h('code', { text: `GET ${m.path}` }), ...m.routes.map(r => [', ', h('code', { text: `GET ${r}` })])),
      preview));
    call('GET', `${m.path}?limit=10`).then(p => preview.replaceChildren(rowsTable(p.columns.map(col), p.rows),
      h('p', { class: 'muted', text: p.next ? 'First 10 rows.' : `${p.count} rows.` }))).catch(e => preview.replaceChildren(problem(e)));
  }
}

// ---------- quality ----------
async function qualityPage() {
  main.replaceChildren(h('h1', { text: 'Data quality' }));
  let q;
  try { q = await call('GET', '/api/quality'); } catch (e) { main.append(problem(e)); return; }
  if (!q.tables.length) { main.append(h('p', { class: 'muted', text: 'No quality scores yet: they come from clean steps.' })); return; }
  const grid = h('div', { class: 'grid' });
  main.append(grid);
  for (const t of q.tables) {
    const last = t.points[t.points.length - 1];
    const canvas = h('canvas', { role: 'img', 'aria-label': `Quality of ${t.table} over time` });
    grid.append(h('section', { class: 'card', 'aria-label': `Quality of ${t.table}` },
      h('header', {}, h('h3', { text: t.table }), h('span', { class: 'badge', text: `${last.score.toFixed(1)} / 100` })),
      h('div', { class: 'chart' }, canvas),
      h('dl', { class: 'kv' },
        h('dt', {}, 'Last run'), h('dd', {}, h('a', { href: `#/runs/${last.run_id}` }, when(last.at))),
        h('dt', {}, 'Rows in → out'), h('dd', { text: `${last.rows_in} → ${last.rows_out}` }),
        h('dt', {}, 'Duplicates · rejected · outliers'), h('dd', { text: `${last.duplicates} · ${last.rejected} · ${last.outliers}` }))));
    Chart.defaults.color = css('--muted');
    Chart.defaults.borderColor = css('--line');
    const labels = t.points.map(p => new Date(p.at).toLocaleString(undefined, { dateStyle: 'short', timeStyle: 'short' }));
    // The score is 0–100; the parts are fractions, drawn as percentages.
    const ds = ['score', 'completeness', 'validity', 'uniqueness'].map((k, i) => ({ label: k === 'score' ? 'score' : `${k} %`, data: t.points.map(p => k === 'score' ? p[k] : p[k] * 100), borderColor: palette[i], backgroundColor: palette[i], borderWidth: k === 'score' ? 3 : 1.5, tension: 0.2 }));
    charts.push(new Chart(canvas, { type: 'line', data: { labels, datasets: ds }, options: { responsive: true, maintainAspectRatio: false, animation: false, scales: { y: { min: 0, max: 100 } } } }));
  }
}

// ---------- API reference ----------
async function apiPage() {
  main.replaceChildren(h('h1', { text: 'API' }));
  let doc;
  try { doc = await call('GET', '/api/openapi.json'); } catch (e) { main.append(problem(e)); return; }
  main.append(h('p', { class: 'muted', text: doc.info.description || '' }),
    h('p', {}, 'The OpenAPI document: ', h('a', { href: '/api/openapi.json' }, '/api/openapi.json'), ` (OpenAPI ${doc.openapi}, ${doc.info.title} ${doc.info.version}).`));
  const byTag = {};
  for (const [path, item] of Object.entries(doc.paths)) for (const [method, op] of Object.entries(item)) {
    (byTag[(op.tags || ['other'])[0]] = byTag[(op.tags || ['other'])[0]] || []).push({ path, method, op });
  }
  const schemaName = r => r && r.$ref ? r.$ref.split('/').pop() : (r && r.type) || '';
  for (const [tag, ops] of Object.entries(byTag)) {
    main.append(h('h2', { text: tag }));
    for (const { path, method, op } of ops) {
      const params = op.parameters || [];
      const body = op.requestBody && op.requestBody.content && Object.values(op.requestBody.content)[0];
      main.append(h('details', { class: 'op' },
        h('summary', {}, h('span', { class: `method m-${method}`, text: method.toUpperCase() }), h('code', { text: path }), h('span', { class: 'muted', text: op.summary || '' })),
        op.description ? h('p', { text: op.description }) : null,
        params.length ? h('div', { class: 'table-wrap' }, h('table', {},
          h('thead', {}, h('tr', {}, ['Parameter', 'In', 'Type', 'Description'].map(x => h('th', { scope: 'col', text: x })))),
          h('tbody', {}, params.map(p => h('tr', {}, h('td', {}, h('code', { text: p.name })), h('td', { text: p.in + (p.required ? ', required' : '') }),
            h('td', { text: schemaName(p.schema) }), h('td', { text: p.description || '' })))))) : null,
        body ? h('p', {}, 'Body: ', h('code', { text: schemaName(body.schema) })) : null,
        h('p', { class: 'muted', text: 'Answers: ' + Object.entries(op.responses || {}).map(([c, r]) => `${c} ${r.description || ''}`.trim()).join(' · ') })));
    }
  }
}

// ---------- login ----------
function loginPage() {
  const input = h('input', { type: 'password', id: 'token', name: 'token', autocomplete: 'off', required: true, placeholder: 'sluice_…' });
  const msg = h('p', { role: 'alert' });
  const form = h('form', { class: 'card', 'aria-labelledby': 'login-h' },
    h('h1', { id: 'login-h', text: 'Log in' }),
    h('p', { class: 'muted' }, 'Paste a token made with ', h('code', { text: 'sluice token create --scope trigger' }), '. It is sent once; the dashboard keeps a session cookie, not the token.'),
    h('label', { for: 'token' }, 'Token'), input, h('p', {}, h('button', { type: 'submit' }, 'Log in')), msg);
  form.addEventListener('submit', async ev => {
    ev.preventDefault();
    msg.textContent = ''; msg.className = '';
    try {
      await call('POST', '/login', { token: input.value.trim() });
      input.value = '';
      await loadSession();
      location.hash = '#/';
    } catch (e) { msg.className = 'error'; msg.textContent = e.message; }
  });
  main.replaceChildren(form);
  input.focus();
}

// ---------- routing ----------
async function route() {
  stopPage();
  const hash = location.hash.replace(/^#/, '') || '/';
  const parts = hash.split('/').filter(Boolean);
  const section = parts[0] || 'pipelines';
  document.querySelectorAll('#nav a').forEach(a => a.toggleAttribute('aria-current', a.dataset.nav === section));
  document.querySelectorAll('#nav a[aria-current]').forEach(a => a.setAttribute('aria-current', 'page'));
  document.title = `Sluice · ${section}`;
  if (section === 'runs' && parts[1]) return runPage(decodeURIComponent(parts[1]));
  const pages = { pipelines: pipelinesPage, runs: runsPage, data: dataPage, quality: qualityPage, api: apiPage, login: loginPage };
  return (pages[section] || pipelinesPage)();
}

window.addEventListener('hashchange', () => { route(); main.focus({ preventScroll: true }); });
applyTheme();
loadSession().then(route);
