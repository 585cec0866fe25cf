// molt dashboard: plain JavaScript, no build step. All API text is put in the
// page through textContent / DOM nodes, never through innerHTML.
'use strict';
(() => {
  const $ = (sel, root = document) => root.querySelector(sel);
  const MONO = 'ui-monospace, SFMono-Regular, Menlo, Consolas, "DejaVu Sans Mono", monospace';
  const WINDOW_MS = 5 * 60 * 1000;
  const TOKEN_KEY = 'molt-admin-token';

  // ---------- DOM helpers ----------
  function el(tag, attrs, ...kids) {
    const e = document.createElement(tag);
    if (attrs) {
      for (const [k, v] of Object.entries(attrs)) {
        if (v == null || v === false) continue;
        if (k === 'class') e.className = v;
        else if (k === 'text') e.textContent = v;
        else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
        else e.setAttribute(k, v === true ? '' : v);
      }
    }
    for (const c of kids.flat()) {
      if (c == null || c === false) continue;
      e.append(c instanceof Node ? c : String(c)); // strings become text nodes
    }
    return e;
  }
  const td = (text, cls, title) => el('td', { class: cls, title }, text);
  const num = (n) => (n == null ? '–' : String(n));
  function table(id, heads, cls) {
    const t = el('table', { id, class: 'grid ' + (cls || '') });
    // a heading starting with '#' is a right-aligned number column
    t.append(el('thead', null, el('tr', null, heads.map((h) => (h[0] === '#' ? el('th', { class: 'num' }, h.slice(1)) : el('th', null, h))))), el('tbody'));
    return t;
  }
  function fillBody(tbl, rows, empty) {
    const frag = document.createDocumentFragment();
    for (const r of rows) frag.append(r);
    if (!rows.length) frag.append(el('tr', { class: 'empty' }, el('td', { colspan: tbl.tHead.rows[0].cells.length }, empty || 'none')));
    tbl.tBodies[0].replaceChildren(frag);
  }

  // ---------- formatting ----------
  function fmtBytes(n) {
    if (n == null) return '–';
    const u = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
    let v = n, i = 0;
    while (v >= 1024 && i < u.length - 1) { v /= 1024; i++; }
    return (i === 0 ? String(v) : v.toFixed(v < 10 ? 2 : v < 100 ? 1 : 0)) + ' ' + u[i];
  }
  function fmtCount(v) {
    if (v == null || !isFinite(v)) return '–';
    const a = Math.abs(v);
    if (a >= 1e9) return (v / 1e9).toFixed(a >= 1e10 ? 0 : 1) + 'G';
    if (a >= 1e6) return (v / 1e6).toFixed(a >= 1e7 ? 0 : 1) + 'M';
    if (a >= 1e3) return (v / 1e3).toFixed(a >= 1e4 ? 0 : 1) + 'k';
    if (a === 0 || Number.isInteger(v)) return String(v);
    return v.toFixed(a < 10 ? 1 : 0);
  }
  const fmtRate = (v) => fmtCount(v) + '/s';
  function fmtDur(ms) {
    if (ms == null) return '–';
    let s = Math.floor(ms / 1000);
    const d = Math.floor(s / 86400); s -= d * 86400;
    const h = Math.floor(s / 3600); s -= h * 3600;
    const m = Math.floor(s / 60); s -= m * 60;
    const p = (x) => String(x).padStart(2, '0');
    if (d) return `${d}d ${p(h)}h ${p(m)}m`;
    if (h) return `${h}h ${p(m)}m ${p(s)}s`;
    if (m) return `${m}m ${p(s)}s`;
    return `${s}s`;
  }
  const fmtAgo = (ms) => (ms < 1000 ? ms + ' ms' : ms < 60e3 ? (ms / 1000).toFixed(1) + ' s'
    : ms < 3600e3 ? Math.floor(ms / 60e3) + ' min' : (ms / 3600e3).toFixed(1) + ' h');
  const fmtUs = (us) => (us == null ? '–' : us < 1000 ? us + ' µs' : us < 1e6 ? (us / 1000).toFixed(us < 1e4 ? 2 : 1) + ' ms' : (us / 1e6).toFixed(2) + ' s');
  function fmtTime(ms) {
    const d = new Date(ms), p = (x) => String(x).padStart(2, '0');
    const t = `${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
    return d.toDateString() === new Date().toDateString() ? t : `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ${t}`;
  }

  // ---------- state ----------
  const S = {
    local: '',           // this node's name
    node: '',            // the node viewed ('' = this node)
    token: sessionStorage.getItem(TOKEN_KEY) || '',
    sort: 'pid', limit: 100, q: '',
    hist: [], histNode: null, // samples for the Home charts, of histNode ('' = this node, from SSE)
    lastSse: 0, nodesText: '',
  };

  // ---------- API ----------
  function apiUrl(path, params, here) {
    const p = new URLSearchParams();
    if (S.node && !here) p.set('node', S.node);
    for (const [k, v] of Object.entries(params || {})) if (v !== '' && v != null) p.set(k, v);
    const qs = p.toString();
    return 'api/' + path + (qs ? '?' + qs : '');
  }
  async function getJSON(path, params, here) {
    let r;
    try {
      r = await fetch(apiUrl(path, params, here), { cache: 'no-store', headers: { Accept: 'application/json' } });
    } catch (e) {
      throw Object.assign(new Error('cannot reach this node'), { status: 0 });
    }
    const text = await r.text();
    let json = null;
    try { json = JSON.parse(text); } catch (e) { /* not JSON */ }
    if (!r.ok || json === null) {
      const msg = (json && json.error) || (r.ok ? 'bad answer (not JSON)' : `HTTP ${r.status} ${r.statusText}`);
      throw Object.assign(new Error(msg), { status: r.status });
    }
    return { text, json };
  }

  // ---------- routing ----------
  let ctx = null;
  const main = $('#main');
  function parseHash() {
    const h = location.hash.replace(/^#/, '') || '/';
    const qi = h.indexOf('?');
    return { path: (qi >= 0 ? h.slice(0, qi) : h) || '/', query: new URLSearchParams(qi >= 0 ? h.slice(qi + 1) : '') };
  }
  const href = (path) => '#' + path + (S.node ? '?node=' + encodeURIComponent(S.node) : '');
  const procHref = (pid) => href('/process/' + encodeURIComponent(pid));
  const pidLink = (pid) => (pid ? el('a', { class: 'pid', href: procHref(pid) }, pid) : el('span', { class: 'muted' }, '–'));

  function loaded(name) {
    if (document.body.dataset.loaded !== name) document.body.dataset.loaded = name;
  }

  function setNode(n) {
    n = n && n !== S.local ? n : '';
    if (n === S.node) return false;
    S.node = n;
    S.hist = []; S.histNode = null;
    return true;
  }

  const PAGES = {
    '': ['home', pageHome, 'nav-home'], nodes: ['nodes', pageNodes, 'nav-nodes'],
    processes: ['processes', pageProcesses, 'nav-processes'], process: ['process', pageProcess, 'nav-processes'],
    modules: ['modules', pageModules, 'nav-modules'], tree: ['tree', pageTree, 'nav-tree'],
    coordination: ['coordination', pageCoordination, 'nav-coordination'], tables: ['tables', pageTables, 'nav-tables'],
  };

  function route() {
    const { path, query } = parseHash();
    if (query.has('node')) setNode(query.get('node'));
    else if (S.node) { // keep the viewed node in the URL across page changes
      history.replaceState(null, '', href(path));
    }
    if (ctx) { ctx.alive = false; ctx.timers.forEach(clearInterval); }
    ctx = { alive: true, timers: [] };
    delete document.body.dataset.loaded;
    const segs = path.split('/').filter(Boolean);
    const entry = PAGES[segs[0] || ''] || PAGES[''];
    for (const a of document.querySelectorAll('#nav a')) {
      a.classList.toggle('active', a.id === entry[2]);
      a.setAttribute('href', href(a.id === 'nav-home' ? '/' : '/' + a.id.slice(4)));
    }
    syncSelect();
    updateFooter();
    main.replaceChildren();
    let arg = segs.slice(1).join('/');
    try { arg = decodeURIComponent(arg); } catch (e) { /* keep as is */ }
    entry[1](ctx, arg);
    window.scrollTo(0, 0);
  }

  // Run fn now and every ms while the page is shown (skipped while the tab is hidden).
  function every(c, ms, fn) {
    let busy = false;
    const tick = async (force) => {
      if (!c.alive || busy || (document.hidden && force !== true)) return;
      busy = true;
      try { await fn(); } finally { busy = false; }
    };
    tick(true);
    c.timers.push(setInterval(tick, ms));
    return tick;
  }

  // A page section that shows an API error; calm (grey) or alarming (red).
  function status(c) {
    const box = el('div', { class: 'status', hidden: true });
    box.show = (e, calm) => {
      if (box.onShow) box.onShow();
      box.hidden = false;
      box.className = 'status ' + (calm ? 'calm' : 'err');
      box.textContent = typeof e === 'string' ? e : e.message;
    };
    box.clear = () => { box.hidden = true; };
    return box;
  }

  // Fetch path every ms; render(json) only when the JSON text changed.
  function poll(c, name, ms, path, params, render, st) {
    let last = null;
    return every(c, ms, async () => {
      try {
        const { text, json } = await getJSON(path, typeof params === 'function' ? params() : params);
        if (!c.alive) return;
        st && st.clear();
        if (text !== last) { last = text; render(json); }
      } catch (e) {
        if (!c.alive) return;
        last = null;
        st && st.show(e, e.status === 503 || e.status === 404);
      }
      loaded(name);
    });
  }

  // ---------- header: node selector, token, live dot, footer ----------
  const select = $('#node-select');
  const tokenInput = $('#admin-token');
  tokenInput.value = S.token;
  tokenInput.addEventListener('input', () => {
    S.token = tokenInput.value;
    if (S.token) sessionStorage.setItem(TOKEN_KEY, S.token); else sessionStorage.removeItem(TOKEN_KEY);
  });
  select.addEventListener('change', () => {
    setNode(select.value);
    const { path } = parseHash();
    location.hash = href(path);
  });
  function syncSelect() {
    const want = S.node || S.local;
    if (want && ![...select.options].some((o) => o.value === want)) select.append(el('option', { value: want }, want));
    if (want) select.value = want;
  }
  async function loadNodes() {
    try {
      const { text, json } = await getJSON('nodes', null, true);
      if (text === S.nodesText) return;
      S.nodesText = text;
      if (!S.local && json.length) { S.local = json[0]; if (S.node === S.local) S.node = ''; }
      select.replaceChildren(...json.map((n, i) => el('option', { value: n }, i === 0 ? n + ' (this node)' : n)));
      syncSelect();
      updateFooter();
    } catch (e) { /* keep the old list */ }
  }
  function updateFooter() {
    $('#local-node').textContent = S.local;
    $('#footer-node').textContent = S.local + (S.node ? ' — viewing ' + S.node : '');
    document.title = 'molt ' + (S.node || S.local);
  }
  function setLive(on) {
    const d = $('#live');
    d.classList.toggle('on', on);
    d.title = 'event stream: ' + (on ? 'connected' : 'disconnected');
  }

  // ---------- samples for Home charts ----------
  function pushSample(v) {
    const n = S.node || '';
    if (S.histNode !== n) { S.hist = []; S.histNode = n; }
    const h = S.hist, last = h[h.length - 1], now = Date.now();
    if (last && v.uptime_ms === last.up) return false; // the same sample twice
    const s = { t: now, up: v.uptime_ms, procs: v.processes, ml: v.messages_local, mo: v.messages_remote_out, mi: v.messages_remote_in, rl: null, ro: null, ri: null };
    if (last && v.uptime_ms > last.up) {
      const dt = (v.uptime_ms - last.up) / 1000;
      s.rl = Math.max(0, s.ml - last.ml) / dt;
      s.ro = Math.max(0, s.mo - last.mo) / dt;
      s.ri = Math.max(0, s.mi - last.mi) / dt;
    }
    h.push(s);
    while (h.length && h[0].t < now - WINDOW_MS - 2000) h.shift();
    return true;
  }

  function onSseNode(v) {
    S.lastSse = Date.now();
    S.lastView = v;
    setLive(true);
    if (!S.local && v.name) { S.local = v.name; updateFooter(); syncSelect(); }
    if (S.node) return; // Home polls the viewed node instead
    pushSample(v);
    if (ctx && ctx.home) ctx.home(v);
  }

  function startEvents() {
    if (!window.EventSource) return;
    const es = new EventSource('api/events');
    es.addEventListener('open', () => setLive(true));
    es.addEventListener('error', () => setLive(false));
    es.addEventListener('node', (e) => { try { onSseNode(JSON.parse(e.data)); } catch (err) { /* ignore a bad event */ } });
    es.addEventListener('code', () => { if (ctx && ctx.onCode && !S.node) ctx.onCode(); });
  }

  // ---------- charts ----------
  function niceMax(v) {
    if (!(v > 0)) return 1;
    const e = 10 ** Math.floor(Math.log10(v));
    for (const m of [1, 2, 2.5, 5, 10]) if (v <= m * e) return m * e;
    return 10 * e;
  }
  function drawChart(cv, series, fmt) {
    const dpr = window.devicePixelRatio || 1, w = cv.clientWidth, h = cv.clientHeight;
    if (!w || !h) return;
    if (cv.width !== Math.round(w * dpr) || cv.height !== Math.round(h * dpr)) {
      cv.width = Math.round(w * dpr); cv.height = Math.round(h * dpr);
    }
    const g = cv.getContext('2d');
    g.setTransform(dpr, 0, 0, dpr, 0, 0);
    g.clearRect(0, 0, w, h);
    const L = 56, R = 10, T = 10, B = 20, pw = w - L - R, ph = h - T - B;
    const now = Date.now(), t0 = now - WINDOW_MS;
    let max = 0;
    for (const s of series) for (const p of s.points) if (p[1] > max) max = p[1];
    const top = niceMax(max);
    g.font = '11px ' + MONO;
    g.lineWidth = 1;
    g.textBaseline = 'middle';
    for (let i = 0; i <= 4; i++) {
      const y = Math.round(T + ph - (ph * i) / 4) + 0.5;
      g.strokeStyle = i ? '#e6e8ec' : '#b8bec8';
      g.beginPath(); g.moveTo(L, y); g.lineTo(L + pw, y); g.stroke();
      g.fillStyle = '#6b7280'; g.textAlign = 'right';
      g.fillText(fmt((top * i) / 4), L - 6, y);
    }
    g.textBaseline = 'top';
    for (let k = 0; k <= 5; k++) {
      const x = L + (pw * k) / 5;
      g.textAlign = k === 0 ? 'left' : k === 5 ? 'right' : 'center';
      g.fillText(k === 5 ? 'now' : `-${5 - k}m`, x, T + ph + 5);
    }
    g.save();
    g.beginPath(); g.rect(L, T - 2, pw, ph + 4); g.clip();
    g.lineWidth = 1.6; g.lineJoin = 'round';
    for (const s of series) {
      g.strokeStyle = s.color;
      g.beginPath();
      let on = false;
      for (const [t, v] of s.points) {
        if (v == null) { on = false; continue; }
        const x = L + ((t - t0) / WINDOW_MS) * pw, y = T + ph - (v / top) * ph;
        if (on) g.lineTo(x, y); else { g.moveTo(x, y); on = true; }
      }
      g.stroke();
    }
    g.restore();
    if (S.hist.length < 2) {
      g.fillStyle = '#9aa1ac'; g.textAlign = 'center'; g.textBaseline = 'middle'; g.font = '12px system-ui, sans-serif';
      g.fillText('collecting samples…', L + pw / 2, T + ph / 2);
    }
  }

  // ---------- Home ----------
  function pageHome(c) {
    const stat = (id, label) => el('div', { class: 'stat' }, el('div', { class: 'label' }, label), el('div', { id, class: 'value mono' }, '–'), el('div', { class: 'sub', 'data-sub': id }));
    const st = status(c);
    const rateKeys = [['rl', 'messages local', '#2563eb'], ['ro', 'remote out', '#d97706'], ['ri', 'remote in', '#059669']];
    const legend = el('div', { class: 'legend' }, rateKeys.map(([k, l, col]) => el('span', null, el('i', { style: 'background:' + col }), l + ' ', el('b', { class: 'mono', 'data-rate': k }, '–'))));
    const cvRates = el('canvas', { id: 'chart-rates', class: 'chart' });
    const cvProcs = el('canvas', { id: 'chart-processes', class: 'chart' });
    const exits = el('div', { class: 'kv mono', id: 'home-exits' });
    main.append(
      el('h1', null, 'Node'), st,
      el('div', { class: 'stats' }, stat('stat-node', 'node'), stat('stat-uptime', 'uptime'), stat('stat-processes', 'processes'),
        stat('stat-memory', 'memory'), stat('stat-mailbox', 'queued messages'), stat('stat-received', 'messages received'),
        stat('stat-peers', 'peers'), stat('stat-code', 'upgrades')),
      el('div', { class: 'charts' },
        el('section', { class: 'card' }, el('h2', null, 'Message rates ', el('small', null, 'last 5 minutes')), legend, cvRates),
        el('section', { class: 'card' }, el('h2', null, 'Processes ', el('small', null, 'last 5 minutes')), el('div', { class: 'legend' }, el('span', null, el('i', { style: 'background:#7c3aed' }), 'alive ', el('b', { class: 'mono', 'data-rate': 'procs' }, '–'))), cvProcs)),
      el('section', { class: 'card' }, el('h2', null, 'Exits by reason'), exits));
    const set = (id, v, sub) => {
      $('#' + id).textContent = v;
      if (sub != null) $(`[data-sub="${id}"]`).textContent = sub;
    };
    const draw = () => {
      const h = S.hist;
      drawChart(cvRates, rateKeys.map(([k, , color]) => ({ color, points: h.map((s) => [s.t, s[k]]) })), fmtCount);
      drawChart(cvProcs, [{ color: '#7c3aed', points: h.map((s) => [s.t, s.procs]) }], fmtCount);
      const s = h[h.length - 1];
      for (const b of main.querySelectorAll('[data-rate]')) b.textContent = s ? (b.dataset.rate === 'procs' ? String(s.procs) : fmtRate(s[b.dataset.rate])) : '–';
    };
    const show = (v) => {
      if (!c.alive) return;
      st.clear();
      set('stat-node', v.name, S.node ? 'viewed through ' + S.local : 'this node');
      set('stat-uptime', fmtDur(v.uptime_ms));
      set('stat-processes', String(v.processes), `spawned ${v.spawned} · initialized ${v.initialized} · exited ${v.exited}`);
      set('stat-memory', fmtBytes(v.memory_bytes), `${v.memory_bytes} bytes`);
      set('stat-mailbox', String(v.mailbox_messages), 'in all mailboxes');
      set('stat-received', fmtCount(v.messages_received), `local ${fmtCount(v.messages_local)} · out ${fmtCount(v.messages_remote_out)} · in ${fmtCount(v.messages_remote_in)}`);
      const peers = v.peers || [];
      set('stat-peers', String(peers.length), peers.filter((p) => p.hidden).length + ' hidden');
      set('stat-code', String(v.upgrades), `failed migrations ${v.failed_migrations} · purges ${v.purges}`);
      exits.replaceChildren(...Object.entries(v.exits || {}).map(([k, n]) => el('span', { class: n && k !== 'normal' && k !== 'shutdown' ? 'warn' : '' }, k + ' ', el('b', null, String(n)))));
      draw();
      loaded('home');
    };
    c.home = show;
    if (!S.node && S.lastView && Date.now() - S.lastSse < 2500) show(S.lastView);
    const onResize = () => c.alive ? draw() : window.removeEventListener('resize', onResize);
    window.addEventListener('resize', onResize);
    // Another node, or no SSE for a while: poll /api/node every second.
    every(c, 1000, async () => {
      if (!S.node && Date.now() - S.lastSse < 2500 && S.hist.length) { draw(); return; }
      try {
        const { json } = await getJSON('node');
        if (!c.alive) return;
        if (S.node || Date.now() - S.lastSse >= 2500) pushSample(json);
        show(json);
      } catch (e) { if (c.alive) { st.show(e); loaded('home'); } }
    });
  }

  // ---------- Nodes ----------
  function pageNodes(c) {
    const st = status(c);
    const cluster = el('ul', { id: 'cluster-list', class: 'chips' });
    const peers = table('peer-table', ['peer', 'hidden', 'RTT', 'bytes out', 'bytes in', 'frames out', 'frames in', 'queued', 'congestion', 'lost packets', 'up', 'last heard', 'reconnects'], 'numeric');
    main.append(el('h1', null, 'Nodes'), st,
      el('section', { class: 'card' }, el('h2', null, 'Cluster ', el('small', null, 'as the viewed node sees it')), cluster),
      el('section', { class: 'card' }, el('h2', null, 'Peers of ', el('span', { class: 'mono', id: 'peers-of' }, S.node || S.local)), peers));
    poll(c, 'nodes', 2000, 'nodes', null, (names) => {
      cluster.replaceChildren(...names.map((n) => el('li', null,
        el('a', { href: '#', class: 'mono', onclick: (e) => { e.preventDefault(); setNode(n); location.hash = href('/nodes'); } }, n),
        n === S.local ? el('small', null, ' this node') : null, n === (S.node || S.local) ? el('small', { class: 'badge' }, 'viewing') : null)));
    }, st);
    poll(c, 'nodes', 1000, 'node', null, (v) => {
      $('#peers-of').textContent = v.name;
      fillBody(peers, (v.peers || []).map((p) => el('tr', { class: p.lost_packets || p.congestion_events ? 'warnrow' : null },
        td(p.name, 'mono left'), td(p.hidden ? 'yes' : 'no', 'left'), td(fmtUs(p.rtt_us)),
        td(fmtBytes(p.bytes_out)), td(fmtBytes(p.bytes_in)), td(num(p.frames_out)), td(num(p.frames_in)),
        td(fmtBytes(p.queued_bytes)), td(num(p.congestion_events)), td(num(p.lost_packets)),
        td(fmtAgo(p.connected_ms)), td(p.last_heard_ms == null ? '–' : fmtAgo(p.last_heard_ms) + ' ago'),
        td(num(p.reconnects)))), 'no peers connected');
    }, st);
  }

  // ---------- Processes ----------
  const SORTS = ['pid', 'memory', 'mailbox', 'messages', 'cpu'];
  // A process row's cells: [text, class, title]. Rows are updated in place so a
  // refresh of 10,000 rows only touches the cells that changed.
  function procCells(p) {
    const mod = p.module == null ? null : p.version == null ? p.module : p.module + '@' + p.version;
    return [[p.pid, 'left'], [p.name == null ? '' : p.name, 'left name', p.name],
      mod == null ? ['–', 'left muted', 'host mailbox (no module)'] : [mod, 'left', mod],
      [p.status, 'left status-' + p.status + (p.upgrade_failure ? ' upgrade-failed' : ''), p.upgrade_failure ? 'upgrade failed: ' + p.upgrade_failure : null],
      [String(p.mailbox), p.mailbox > 0 ? 'mailbox busy' : 'mailbox'], [fmtBytes(p.memory_bytes), 'mem', p.memory_bytes + ' bytes'],
      [String(p.messages_in), ''], [String(p.messages_out), ''], [String(p.cpu_us), '']];
  }
  function setRow(tr, p) {
    if (tr.dataset.pid !== p.pid) tr.dataset.pid = p.pid;
    const vals = procCells(p);
    if (!tr.cells.length) {
      for (let i = 0; i < vals.length; i++) tr.append(document.createElement('td'));
      tr.cells[0].append(el('a', { class: 'pid' }));
    }
    vals.forEach(([text, cls, title], i) => {
      const c = tr.cells[i], t = i === 0 ? c.firstChild : c;
      if (t.textContent !== text) t.textContent = text;
      if (c.className !== cls) c.className = cls;
      if (title != null) { if (c.title !== String(title)) c.title = title; } else if (c.hasAttribute('title')) c.removeAttribute('title');
    });
    const a = tr.cells[0].firstChild, h = procHref(p.pid);
    if (a.getAttribute('href') !== h) a.setAttribute('href', h);
  }
  function renderProcs(tb, list, emptyText) {
    const old = tb.querySelector('tr.empty');
    if (old) old.remove();
    const rows = tb.rows, keep = Math.min(rows.length, list.length);
    for (let i = 0; i < keep; i++) setRow(rows[i], list[i]);
    if (rows.length > list.length) {
      const r = document.createRange();
      r.setStartBefore(rows[list.length]); r.setEndAfter(tb.lastChild); r.deleteContents();
    }
    const frag = document.createDocumentFragment();
    for (let i = keep; i < list.length; i++) { const tr = document.createElement('tr'); setRow(tr, list[i]); frag.append(tr); }
    if (!list.length) frag.append(el('tr', { class: 'empty' }, el('td', { colspan: 9 }, emptyText)));
    tb.append(frag);
  }
  function pageProcesses(c) {
    const st = status(c);
    const buttons = SORTS.map((s) => el('button', { id: 'sort-' + s, type: 'button', class: s === S.sort ? 'active' : null, 'data-sort': s }, s));
    const search = el('input', { id: 'search', type: 'search', placeholder: 'pid, module or name', value: S.q, autocomplete: 'off', spellcheck: 'false' });
    const limit = el('select', { id: 'limit' }, [100, 1000, 10000].map((n) => el('option', { value: n }, String(n))));
    limit.value = String(S.limit);
    const count = el('span', { id: 'process-count', class: 'muted mono' });
    const tbl = table('process-table', ['pid', 'name', 'module@version', 'status', 'mailbox', 'memory', 'msgs in', 'msgs out', 'cpu µs'], 'numeric procs');
    tbl.prepend(el('colgroup', null, ['9em', '14%', '18%', '7em', '6em', '7em', '7em', '7em', '8em'].map((w) => el('col', { style: 'width:' + w }))));
    main.append(el('h1', null, 'Processes'), el('div', { class: 'toolbar' }, el('span', { class: 'muted' }, 'sort by'), el('span', { class: 'seg' }, buttons), search,
      el('label', null, 'show ', limit), count), st, tbl);
    let last = null, busy = false, again = false;
    const key = () => `${S.sort}|${S.limit}|${S.q}|${S.node}`;
    async function load() {
      if (busy) { again = true; return; }
      busy = true;
      const k = key();
      try {
        const { text, json } = await getJSON('processes', { sort: S.sort, limit: S.limit, q: S.q });
        if (!c.alive || k !== key()) return;
        st.clear();
        if (text !== last) {
          last = text;
          renderProcs(tbl.tBodies[0], json.processes, S.q ? 'no process matches' : 'no processes');
          count.textContent = `showing ${json.processes.length} of ${json.total} (matched ${json.matched})`;
        }
        loaded('processes');
      } catch (e) {
        if (!c.alive) return;
        last = null; st.show(e); loaded('processes');
      } finally {
        busy = false;
        if (again && c.alive) { again = false; load(); }
      }
    }
    const reload = () => { last = null; load(); };
    for (const b of buttons) {
      b.addEventListener('click', () => {
        S.sort = b.dataset.sort;
        for (const x of buttons) x.classList.toggle('active', x === b);
        reload();
      });
    }
    let timer = 0;
    search.addEventListener('input', () => {
      clearTimeout(timer);
      timer = setTimeout(() => { S.q = search.value.trim(); reload(); }, 200);
    });
    limit.addEventListener('change', () => { S.limit = Number(limit.value); reload(); });
    tbl.tBodies[0].addEventListener('click', (e) => {
      const tr = e.target.closest('tr[data-pid]');
      if (!tr || e.target.closest('a') || window.getSelection().toString()) return;
      location.hash = procHref(tr.dataset.pid);
    });
    every(c, 1000, load);
  }

  // ---------- Process detail ----------
  function pageProcess(c, pid) {
    if (/^\d+\.\d+\.\d+$/.test(pid)) pid = '<' + pid + '>';
    const st = status(c);
    const result = el('span', { id: 'action-result', role: 'status' });
    const killBtn = el('button', { id: 'kill', type: 'button', class: 'danger', title: 'send the exit signal killed (needs the admin token; acts on this node\'s processes)' }, 'Kill');
    const msgBtn = el('button', { id: 'show-messages', type: 'button' }, 'show messages');
    const body = el('div', { class: 'detail-body' });
    const msgs = el('div', { id: 'detail-messages' });
    main.append(el('div', { id: 'process-detail' },
      el('div', { class: 'detail-head' }, el('h1', null, 'Process ', el('span', { class: 'mono' }, pid)),
        el('div', { class: 'actions' }, msgBtn, killBtn, result)), st, body, msgs));
    const links = (list) => el('ul', { class: 'pids' }, (list || []).length ? list.map((p) => el('li', null, pidLink(p))) : el('li', { class: 'muted' }, 'none'));
    const row = (label, value, id) => [el('dt', null, label), el('dd', { id }, value)];
    function render(d) {
      const p = d.process || {};
      body.classList.remove('gone');
      const mod = p.module == null ? '–' : p.version == null ? p.module : p.module + '@' + p.version;
      const linksList = links(d.links); linksList.id = 'detail-links';
      const mons = el('ul', { class: 'pids', id: 'detail-monitors' }, (d.monitors || []).length
        ? d.monitors.map((m) => el('li', null, pidLink(m.pid), el('span', { class: 'muted mono' }, ' ' + m.reference))) : el('li', { class: 'muted' }, 'none'));
      const by = links(d.monitored_by); by.id = 'detail-monitored-by';
      body.replaceChildren(el('dl', { class: 'props' },
        row('pid', el('span', { class: 'mono' }, p.pid), 'detail-pid'),
        row('name', p.name == null ? '–' : p.name, 'detail-name'),
        row('module', el('span', { class: 'mono' }, mod), 'detail-module'),
        row('status', p.status, 'detail-status'),
        row('upgrade failure', p.upgrade_failure == null ? '–' : p.upgrade_failure, 'detail-upgrade-failure'),
        row('mailbox', el('span', { class: 'mono' }, String(p.mailbox)), 'detail-mailbox'),
        row('memory', el('span', { class: 'mono', title: p.memory_bytes + ' bytes' }, fmtBytes(p.memory_bytes)), 'detail-memory'),
        row('messages in / out', el('span', { class: 'mono' }, `${p.messages_in} / ${p.messages_out}`), 'detail-messages-count'),
        row('cpu', el('span', { class: 'mono' }, `${p.cpu_us} µs`), 'detail-cpu'),
        row('parent', pidLink(d.parent), 'detail-parent'),
        row('trap_exit', String(d.trap_exit), 'detail-trap-exit'),
        row('links', linksList), row('monitors', mons), row('monitored by', by)),
        d.answered === false ? el('p', { class: 'status calm' }, 'the process did not answer the inspection in time: links, monitors and messages are unknown') : null);
      if (d.messages && d.messages.length) showMessages(d.messages);
    }
    function showMessages(list) {
      const t = table('messages-table', ['tag', 'bytes', 'preview']);
      fillBody(t, list.map((m) => el('tr', null, td(num(m.tag), 'mono'), td(num(m.bytes), 'mono'), td(m.preview, 'preview mono'))), 'the mailbox is empty');
      msgs.replaceChildren(el('h2', null, 'Messages ', el('small', null, `first ${list.length}, at ${fmtTime(Date.now())}`)), t);
    }
    const path = 'processes/' + encodeURIComponent(pid);
    st.onShow = () => body.classList.add('gone'); // keep the last known state, dimmed
    poll(c, 'process', 2000, path, null, render, st);
    msgBtn.addEventListener('click', async () => {
      try {
        const { json } = await getJSON(path, { messages: 20 });
        if (c.alive) showMessages(json.messages || []);
      } catch (e) { if (c.alive) msgs.replaceChildren(el('div', { class: 'status err' }, e.message)); }
    });
    killBtn.addEventListener('click', () => act('api/' + path + '/kill', result));
  }

  // An action (POST with the admin token); its answer or refusal in `result`.
  async function act(url, result) {
    result.className = 'muted'; result.textContent = 'sending…';
    const headers = { Accept: 'application/json' };
    const token = tokenInput.value; // no header at all when the field is empty
    if (token) headers.Authorization = 'Bearer ' + token;
    try {
      const r = await fetch(url, { method: 'POST', headers, cache: 'no-store' });
      const text = await r.text();
      let j = null;
      try { j = JSON.parse(text); } catch (e) { /* not JSON */ }
      if (r.ok) { result.className = 'ok'; result.textContent = (j && j.done) || 'done'; }
      else { result.className = 'err'; result.textContent = `refused (${r.status}): ` + ((j && j.error) || text || r.statusText); }
    } catch (e) { result.className = 'err'; result.textContent = 'cannot reach this node'; }
  }

  // ---------- Modules ----------
  function pageModules(c) {
    const st = status(c);
    const mods = table('module-table', ['module', 'version', 'kind', 'hash', '#processes', 'old version', '#old processes', '']);
    const purged = el('div', { id: 'module-action-result', class: 'muted' });
    const events = table('code-events', ['time', 'module', 'event']);
    main.append(el('h1', null, 'Modules'), st, el('section', { class: 'card' }, mods, purged),
      el('section', { class: 'card' }, el('h2', null, 'Recent code events ', el('small', null, 'newest first')), events));
    const refresh = poll(c, 'modules', 3000, 'modules', null, (v) => {
      const list = [...(v.modules || [])].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
      fillBody(mods, list.map((m) => {
        const cur = m.current || {}, old = m.old;
        return el('tr', { class: old ? 'has-old' : null }, td(m.name, 'mono'), td(cur.version, 'mono'), td(cur.kind),
          td(cur.hash ? String(cur.hash).slice(0, 12) : '–', 'mono muted', cur.hash), td(num(cur.processes), 'mono num'),
          td(old ? old.version : '–', 'mono'), td(old ? num(old.processes) : '–', 'mono num'),
          el('td', null, old ? el('button', {
            class: 'purge', 'data-module': m.name,
            onclick: () => act('api/modules/' + encodeURIComponent(m.name) + '/purge'
              + (S.node ? '?node=' + encodeURIComponent(S.node) : ''), purged),
          }, 'purge old') : null));
      }), 'no modules loaded');
      const evs = [...(v.events || [])].sort((a, b) => b.at_ms - a.at_ms);
      fillBody(events, evs.map((e) => el('tr', { class: e.failure ? 'failure' : null },
        td(fmtTime(e.at_ms), 'mono nowrap', new Date(e.at_ms).toISOString()), td(e.module, 'mono'), td(e.what))), 'no code events yet');
    }, st);
    c.onCode = () => refresh(true);

    // Across the cluster: each module's current version on every node, so
    // a rollout's progress (or a node left behind) shows at a glance.
    const across = el('div');
    main.append(el('section', { class: 'card' }, el('h2', null, 'Across the cluster ',
      el('small', null, 'current version on each node')), across));
    every(c, 3000, async () => {
      let nodes;
      try { nodes = (await getJSON('nodes')).json; } catch (e) { return; }
      const reports = await Promise.all(nodes.map((n) => getJSON('modules', { node: n }, true)
        .then((r) => r.json).catch((e) => ({ error: e.message }))));
      if (!c.alive) return;
      const names = new Set();
      for (const r of reports) for (const m of r.modules || []) names.add(m.name);
      const rows = [...names].sort().map((name) => {
        const versions = reports.map((r) => (r.modules || []).find((m) => m.name === name));
        const current = new Set(versions.filter((m) => m && m.current).map((m) => m.current.version));
        return el('tr', { 'data-module': name, class: current.size > 1 ? 'warnrow' : null },
          td(name, 'mono left'),
          ...versions.map((m, i) => td(reports[i].error ? 'no answer'
            : !m ? '–' : (m.current ? m.current.version : '–') + (m.old ? ' (old ' + m.old.version + ')' : ''), 'mono')),
          td(current.size > 1 ? 'versions differ' : 'same everywhere', 'left'));
      });
      const t = el('table', { id: 'cluster-modules-table', class: 'grid numeric' },
        el('thead', null, el('tr', null, el('th', null, 'module'), ...nodes.map((n) => el('th', { class: 'mono' }, n)), el('th', null, ''))),
        el('tbody', null, ...rows));
      across.replaceChildren(rows.length ? t : el('p', { class: 'muted' }, 'no modules loaded'));
    });
  }

  // ---------- Tree ----------
  function pageTree(c) {
    const st = status(c);
    const root = el('div', { id: 'tree', class: 'card tree' });
    const info = el('p', { class: 'muted' });
    main.append(el('h1', null, 'Supervision trees'), st, info, root);
    const MAX = 5000;
    poll(c, 'tree', 3000, 'tree', null, (trees) => {
      let shown = 0, total = 0;
      const label = (n) => [pidLink(n.pid), ' ', el('span', { class: 'mono mod' }, n.module == null ? '' : n.module), n.name == null ? '' : el('span', { class: 'regname' }, ' ' + n.name)];
      const build = (nodes, depth) => {
        const ul = el('ul');
        for (const n of nodes) {
          total++;
          if (shown >= MAX) continue;
          shown++;
          const kids = n.children || [];
          const li = el('li', { 'data-pid': n.pid });
          if (kids.length) {
            const d = el('details', { open: depth < 3 }, el('summary', null, label(n), el('small', { class: 'muted' }, ` (${kids.length})`)));
            d.append(build(kids, depth + 1));
            li.append(d);
          } else li.append(el('span', { class: 'leaf' }, label(n)));
          ul.append(li);
        }
        return ul;
      };
      const ul = build(trees || [], 0);
      root.replaceChildren(trees && trees.length ? ul : el('p', { class: 'muted' }, 'no supervision trees'));
      info.textContent = `${(trees || []).length} roots, ${total} processes` + (total > shown ? ` (first ${shown} shown)` : '');
    }, st);
  }

  // ---------- Coordination ----------
  function pageCoordination(c) {
    const st = status(c);
    const kv = el('dl', { class: 'props', id: 'cluster-status' });
    const names = table('names-table', ['name', 'pid', 'token']);
    const locks = table('locks-table', ['lock', 'holders', 'queue']);
    const elections = table('elections-table', ['group', 'leader', 'term', 'candidates']);
    main.append(el('h1', null, 'Coordination'), st,
      el('section', { class: 'card' }, el('h2', null, 'Cluster'), kv),
      el('div', { class: 'cols' }, el('section', { class: 'card' }, el('h2', null, 'Names'), names),
        el('section', { class: 'card' }, el('h2', null, 'Locks'), locks)),
      el('section', { class: 'card' }, el('h2', null, 'Elections'), elections));
    const last = {};
    const pidList = (list) => el('span', null, (list || []).flatMap((p, i) => [i ? ', ' : '', pidLink(p)]));
    const hold = (list) => el('span', null, (list || []).flatMap((h, i) => [i ? ', ' : '', pidLink(h[0]), el('span', { class: 'muted' }, ' ' + h.slice(1).join(' '))]));
    const describe = (m) => (m && typeof m === 'object' ? Object.entries(m).map(([k, v]) => (k === 'name' ? String(v) : `${k}=${typeof v === 'object' ? JSON.stringify(v) : v}`)).join(' ') : String(m));
    every(c, 2000, async () => {
      const parts = ['cluster', 'names', 'locks', 'elections'];
      const res = await Promise.allSettled(parts.map((p) => getJSON(p)));
      if (!c.alive) return;
      const bad = res.find((r) => r.status === 'rejected');
      if (bad) st.show(bad.reason, bad.reason.status === 503); else st.clear();
      const got = {};
      parts.forEach((p, i) => {
        const r = res[i];
        const text = r.status === 'fulfilled' ? r.value.text : 'error';
        if (text !== last[p]) { last[p] = text; got[p] = r.status === 'fulfilled' ? r.value.json : null; }
      });
      if ('cluster' in got) {
        const v = got.cluster;
        if (!v) kv.replaceChildren(el('dt', null, 'status'), el('dd', { class: 'muted' }, res[0].reason.status === 503 ? 'this node runs no coordination' : 'unavailable'));
        else kv.replaceChildren(...[['cluster', v.cluster], ['node', v.node], ['member', v.member], ['role', v.role], ['term', v.term], ['leader', v.leader],
          ['voters', (v.voters || []).map(describe).join(', ')], ['learners', (v.learners || []).map(describe).join(', ')],
          ['last log index', v.last_log_index], ['applied index', v.applied_index], ['log mode', v.log_mode],
          ['sessions', Array.isArray(v.sessions) ? String(v.sessions.length) : v.sessions]]
          .flatMap(([k, x]) => [el('dt', null, k), el('dd', { class: 'mono' }, x == null || x === '' ? '–' : String(x))]));
      }
      if ('names' in got) fillBody(names, (got.names || []).map((n) => el('tr', null, td(n.name, 'mono'), el('td', null, pidLink(n.pid)), td(num(n.token), 'mono'))), 'no names');
      if ('locks' in got) fillBody(locks, (got.locks || []).map((l) => el('tr', null, td(l.lock, 'mono'), el('td', null, hold(l.holders)), el('td', null, hold(l.queue)))), 'no locks');
      if ('elections' in got) fillBody(elections, (got.elections || []).map((e) => el('tr', null, td(e.group, 'mono'),
        el('td', null, e.leader ? pidLink(e.leader[0]) : el('span', { class: 'muted' }, 'none')), td(e.leader ? num(e.leader[1]) : '–', 'mono'),
        el('td', null, pidList(e.candidates)))), 'no elections');
      loaded('coordination');
    });
  }

  // ---------- Tables ----------
  function pageTables(c) {
    const st = status(c);
    const t = table('tables-table', ['table', '#records', 'copy', 'replicated', '#applied', '#subscribers']);
    main.append(el('h1', null, 'Tables'), st, el('section', { class: 'card' }, t));
    poll(c, 'tables', 2000, 'tables', null, (list) => {
      fillBody(t, (list || []).map((x) => el('tr', null, td(x.name, 'mono'), td(num(x.records), 'mono num'), td(x.copy),
        td(x.replicated ? 'yes' : 'no'), td(num(x.applied), 'mono num'), td(num(x.subscribers), 'mono num'))), 'no tables');
    }, st);
  }

  // ---------- start ----------
  window.addEventListener('hashchange', route);
  route();
  loadNodes();
  setInterval(loadNodes, 10000);
  startEvents();
})();
