// zeroflow console page (issue 11). Plain JS, no build step; charts are uPlot (uPlot.iife.min.js).
// Every URL is relative: the page is served at / by `zeroflow console` and under /console/ by
// `zeroflow serve`. A token, when the console has one, travels as the zf_console_token cookie the
// server set when the page was opened with ?token=T, so no request here carries it by hand.
//   api/runs            -> {now_unix, runs: [RUN, ...]} newest first, polled every 2 s
//   api/run/NAME        -> RUN + {config, x, keys, actors}, fetched when a run is shown
//   api/events/NAME?width=W  (SSE) snapshot | append | spans | gone, per shown run; a
//     Mixture-of-Experts run's snapshot or append may carry moe: {x, layers, load}, the latest
//     routing, drawn as the expert-load heatmap under the "MoE" heading
// The server already downsamples to about W buckets; the client only joins, draws, and decimates
// a live series that outgrew 4 W, so the page stays cheap however long the run is.
'use strict';
(() => {
  const POLL_MS = 2000;
  const SPAN_WINDOW_S = 60;
  const RETRY_MS = 3000;
  const CHART_H = 200;
  const CHART_MIN_W = 440;  // #charts' grid column minimum in console.css
  // Known metric groups, in display order: [group, keys or a key pattern]. Any other numeric key
  // (RL runs: reward, kl, ...) gets a chart of its own after these.
  const GROUPS = [
    ['loss', ['loss', 'val_loss']],
    ['lr', ['lr']],
    ['grad_norm', ['grad_norm']],
    ['tokens_per_s', ['tokens_per_s', 'prompt_tokens_per_s']],
    // data efficiency (issue 13): what the curriculum and random-LTD train on at each step
    ['tokens', ['tokens', 'layer_tokens']],
    ['seqlen', ['seqlen', 'ltd_keep']],
    ['difficulty', ['difficulty']],
    ['memory', ['param_bytes', 'grad_bytes', 'optim_bytes']],
    ['comm_bytes', ['comm_bytes']],
    ['waiting', ['data_wait_ms', 'ckpt_write_ms', 'step_ms']],
    ['queue', ['queue_depth', 'running']],
    ['kv', ['kv_blocks_used', 'kv_blocks_total']],
    ['prefix_hit_rate', ['prefix_hit_rate']],
    ['ttft', ['ttft_p50_ms', 'ttft_p90_ms', 'ttft_p99_ms']],
    ['tpot', ['tpot_p50_ms', 'tpot_p99_ms']],
    ['requests', /^requests_/],
    // Mixture-of-Experts routing (shown under the "MoE" heading, after the expert-load heatmap)
    ['moe_dropped', ['moe_dropped']],
    ['moe_imbalance', ['moe_imbalance']],
    ['moe_entropy', ['moe_entropy']],
    ['moe_balance_loss', ['moe_balance_loss']],
    ['moe_z_loss', ['moe_z_loss']],
    ['moe', /^moe_/],
  ];
  const is_moe_group = (g) => g === 'moe' || g.startsWith('moe_');
  // The heatmap's colors, fraction 0 -> light, the largest fraction shown -> dark.
  const HEAT_STOPS = [[239, 246, 255], [147, 197, 253], [59, 130, 246], [30, 58, 138]];
  const BYTE_GROUPS = new Set(['memory', 'comm_bytes']);
  const NOT_CHARTED = new Set(['unix', 'step', 't']);  // clocks and counters, the x of some run
  const COLORS = ['#2563eb', '#dc2626', '#059669', '#d97706', '#7c3aed', '#0891b2', '#db2777'];
  const DASHES = [[], [6, 4], [2, 3], [10, 3, 2, 3]];  // per key within a group; color is per run

  const state = {
    runs: [],            // RUN objects of api/runs, newest first
    clockSkew: 0,        // server now_unix - local now, for "updated N s ago"
    primary: null,       // the run shown (#run=NAME, else the newest)
    overlay: new Set(),  // checked runs, drawn over the primary's charts
    streams: new Map(),  // name -> stream (see open_stream)
    detail: null,        // api/run/NAME of the primary
    charts: new Map(),   // group -> {el, plot, sig}
    issues: new Map(),   // banner lines by source
    renderQueued: false,
    timeline: null,  // layout of the last timeline drawn, for the tooltip
  };
  const $ = (sel) => document.querySelector(sel);

  // ---- small helpers ----
  function set_issue(key, msg) {
    msg ? state.issues.set(key, msg) : state.issues.delete(key);
    const b = $('#banner');
    b.textContent = [...state.issues.values()].join(' · ');
    b.hidden = state.issues.size === 0;
  }
  function pad(n) { return String(n).padStart(2, '0'); }
  function fmt_time(unix, withDate) {
    if (typeof unix !== 'number') return '';
    const d = new Date(unix * 1000);
    const t = `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
    return withDate ? `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${t}` :
                      `${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${t}`;
  }
  function fmt_duration(s) {
    if (typeof s !== 'number' || !isFinite(s) || s < 0) return '';
    if (s < 60) return `${Math.round(s)} s`;
    if (s < 3600) return `${Math.floor(s / 60)} m ${pad(Math.round(s % 60))} s`;
    return `${Math.floor(s / 3600)} h ${pad(Math.floor((s % 3600) / 60))} m`;
  }
  function fmt_bytes(v) {
    if (v == null) return '';
    const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
    let i = 0;
    for (; Math.abs(v) >= 1024 && i < units.length - 1; i++) v /= 1024;
    return `${Number(v.toFixed(1))} ${units[i]}`;
  }
  function hash_run() {
    const v = new URLSearchParams(location.hash.slice(1)).get('run');
    return v || null;
  }
  function clear_hash() { history.replaceState(null, '', location.pathname + location.search); }
  // Axis numbers: uPlot's default keeps 3 decimals, which makes lr ticks 0.001, 0.002, 0.002.
  function fmt_num(v) {
    if (v == null) return '';
    const a = Math.abs(v);
    if (a >= 1e6) return `${Number((v / 1e6).toPrecision(4))}M`;
    if (a >= 1e4) return `${Number((v / 1e3).toPrecision(4))}k`;
    if (a && a < 1e-3) return v.toExponential(2).replace(/\.?0+e/, 'e');
    return String(+v.toPrecision(4));
  }
  // A color per span kind, in the order kinds first appear (distinct for the first ten).
  const SPAN_COLORS = [
    '#60a5fa', '#f59e0b', '#34d399', '#f472b6', '#a78bfa', '#f87171', '#2dd4bf', '#facc15',
    '#94a3b8', '#fb923c'
  ];
  const span_color = new Map();
  function color_of(what) {
    if (!span_color.has(what)) {
      const i = span_color.size;
      span_color.set(
          what, i < SPAN_COLORS.length ? SPAN_COLORS[i] : `hsl(${(i * 47) % 360}, 60%, 60%)`);
    }
    return span_color.get(what);
  }

  // A series reduced to min and max per bucket (in x order), first and last points kept: what the
  // server does, applied when appends made a live series over 4x the chart width.
  function decimate(xs, ys, buckets) {
    const n = xs.length;
    if (n <= 2 * buckets + 2) return {x: xs, y: ys};
    const ox = [xs[0]], oy = [ys[0]];
    for (let b = 0; b < buckets; b++) {
      const lo = 1 + Math.floor((b * (n - 2)) / buckets);
      const hi = 1 + Math.floor(((b + 1) * (n - 2)) / buckets);
      if (hi <= lo) continue;
      let mi = lo, ma = lo;
      for (let i = lo; i < hi; i++) {
        if (ys[i] < ys[mi]) mi = i;
        if (ys[i] > ys[ma]) ma = i;
      }
      ox.push(xs[Math.min(mi, ma)]), oy.push(ys[Math.min(mi, ma)]);
      if (mi !== ma) ox.push(xs[Math.max(mi, ma)]), oy.push(ys[Math.max(mi, ma)]);
    }
    ox.push(xs[n - 1]), oy.push(ys[n - 1]);
    return {x: ox, y: oy};
  }
  // {key: {x, y}} from an event -> the same with only well-formed numeric pairs.
  function clean_series(raw) {
    const out = {};
    if (!raw || typeof raw !== 'object') return out;
    for (const [k, v] of Object.entries(raw)) {
      if (!v || !Array.isArray(v.x) || !Array.isArray(v.y)) continue;
      const n = Math.min(v.x.length, v.y.length);
      const s = {x: [], y: []};
      for (let i = 0; i < n; i++) {
        if (typeof v.x[i] === 'number' && typeof v.y[i] === 'number')
          s.x.push(v.x[i]), s.y.push(v.y[i]);
      }
      out[k] = s;
    }
    return out;
  }
  // An event's moe -> {x, layers, load} with numbers or null in every cell; null when unusable.
  function clean_moe(raw) {
    if (!raw || typeof raw !== 'object' || !Array.isArray(raw.load)) return null;
    if (!raw.load.length) return null;
    const load = raw.load.map(
        (r) => (Array.isArray(r) ? r.map((v) => (typeof v === 'number' && isFinite(v) ? v : null)) :
                                   []));
    const ids = Array.isArray(raw.layers) ? raw.layers : [];
    const layers = load.map((_, i) => (typeof ids[i] === 'number' ? ids[i] : i));
    return {x: typeof raw.x === 'number' ? raw.x : null, layers, load};
  }
  // uPlot.join needs ascending x; a resumed run can repeat steps, so sort a copy when needed.
  function ascending(s) {
    for (let i = 1; i < s.x.length; i++) {
      if (s.x[i] < s.x[i - 1]) {
        const idx = s.x.map((_, j) => j).sort((a, b) => s.x[a] - s.x[b] || a - b);
        return {x: idx.map((j) => s.x[j]), y: idx.map((j) => s.y[j])};
      }
    }
    return s;
  }

  // ---- run list ----
  async function poll_runs() {
    try {
      const r = await fetch('api/runs', {cache: 'no-store'});
      if (!r.ok) throw new Error(`HTTP ${r.status}`);
      const body = await r.json();
      state.runs = Array.isArray(body.runs) ? body.runs.filter((x) => x && x.name) : [];
      if (typeof body.now_unix === 'number') state.clockSkew = body.now_unix - Date.now() / 1000;
      set_issue('runs', null);
      sync_runs();
    } catch (e) {
      set_issue('runs', `run list (api/runs): ${e.message}`);
    } finally {
      setTimeout(poll_runs, POLL_MS);
    }
  }
  // After the list or the hash changed: the rows, the primary run, the streams.
  function sync_runs() {
    const names = new Set(state.runs.map((r) => r.name));
    for (const n of [...state.overlay])
      if (!names.has(n)) state.overlay.delete(n);
    let wanted = hash_run();
    if (wanted && !names.has(wanted) && wanted === state.primary) {
      clear_hash();  // the linked run was shown and is gone (deleted): follow the newest again
      wanted = null;
    }
    set_issue('hash', wanted && !names.has(wanted) ? `no run named ${wanted}` : null);
    let primary = wanted && names.has(wanted) ? wanted : null;
    if (!primary) primary = state.runs.length ? state.runs[0].name : null;
    set_primary(primary);
    render_run_list();
    sync_streams();
    schedule_render();
  }
  function set_primary(name) {
    if (name === state.primary) return;
    state.primary = name;
    state.detail = null;
    if (name) fetch_detail(name);
  }
  async function fetch_detail(name) {
    try {
      const r = await fetch(`api/run/${encodeURIComponent(name)}`, {cache: 'no-store'});
      if (!r.ok) throw new Error(`HTTP ${r.status}`);
      const d = await r.json();
      if (state.primary !== name) return;
      state.detail = d;
      set_issue('detail', null);
      schedule_render();
    } catch (e) {
      if (state.primary === name) set_issue('detail', `run ${name}: ${e.message}`);
    }
  }
  function make_row(name) {
    const tr = document.createElement('tr');
    tr.dataset.run = name;
    tr.innerHTML =
        '<td><input type="checkbox" class="overlay" title="overlay on the charts"></td>' +
        '<td class="name"><a></a></td><td class="kind"></td>' +
        '<td class="state"><span class="run-state"></span></td><td class="start"></td>' +
        '<td class="step"></td><td class="eta"></td>' +
        '<td class="skipped" title="lines of metrics.jsonl that were not JSON, skipped"></td>';
    const a = tr.querySelector('a');
    a.textContent = name;
    a.href = '#run=' + encodeURIComponent(name);
    tr.querySelector('input').addEventListener('change', (e) => {
      e.target.checked ? state.overlay.add(name) : state.overlay.delete(name);
      sync_streams();
      schedule_render();
    });
    return tr;
  }
  function update_row(tr, run) {
    const cell = (c) => tr.querySelector('.' + c);
    const set = (el, text) => {
      if (el.textContent !== text) el.textContent = text;
    };
    const box = tr.querySelector('input');
    box.checked = run.name === state.primary || state.overlay.has(run.name);
    box.disabled = run.name === state.primary;
    tr.classList.toggle('primary', run.name === state.primary);
    set(cell('kind'), run.kind || '');
    const st = tr.querySelector('.run-state');
    set(st, run.state || 'unknown');
    st.className = `run-state state-${run.state || 'unknown'}`;
    set(cell('start'), fmt_time(run.start_unix, false));
    const step = run.last_step == null ? '' : String(run.last_step);
    set(cell('step'), run.total_steps ? `${step || 0}/${run.total_steps}` : step);
    set(cell('eta'), run.state === 'running' ? fmt_duration(run.eta_s) : '');
    set(cell('skipped'), run.skipped > 0 ? String(run.skipped) : '');
  }
  function render_run_list() {
    const body = $('#runs tbody');
    const rows = new Map([...body.children].map((tr) => [tr.dataset.run, tr]));
    for (const run of state.runs) {
      const tr = rows.get(run.name) || make_row(run.name);
      rows.delete(run.name);
      update_row(tr, run);
      body.appendChild(tr);  // moves an existing row into list order
    }
    for (const tr of rows.values()) tr.remove();
    $('#no-runs').hidden = state.runs.length > 0;
  }
  // A RUN carried by an event: fresher than the last poll.
  function merge_run(name, run) {
    if (!run || typeof run !== 'object') return;
    const i = state.runs.findIndex((r) => r.name === name);
    if (i < 0) return;
    state.runs[i] = Object.assign({}, state.runs[i], run, {name});
    const tr = [...$('#runs tbody').children].find((t) => t.dataset.run === name);
    if (tr) update_row(tr, state.runs[i]);
  }

  // ---- live streams ----
  function shown_names() {
    const out = state.primary ? [state.primary] : [];
    for (const r of state.runs)
      if (state.overlay.has(r.name) && r.name !== state.primary) out.push(r.name);
    return out;
  }
  function sync_streams() {
    const want = new Set(shown_names());
    for (const name of [...state.streams.keys()])
      if (!want.has(name)) close_stream(name);
    for (const name of want)
      if (!state.streams.has(name)) open_stream(name);
  }
  function chart_width() {
    const w = $('#charts').clientWidth || 900;
    const cols = Math.max(1, Math.floor(w / CHART_MIN_W));
    return Math.max(100, Math.floor(w / cols) - 24);
  }
  function open_stream(name) {
    const s = {
      name, x: null, series: {}, moe: null, spans: [], width: chart_width(), es: null, retry: null
    };
    state.streams.set(name, s);
    connect(s);
  }
  function connect(s) {
    const es = new EventSource(`api/events/${encodeURIComponent(s.name)}?width=${s.width}`);
    s.es = es;
    const on = (type, fn) => es.addEventListener(type, (e) => {
      if (state.streams.get(s.name) !== s) return;
      try {
        fn(s, JSON.parse(e.data));
        set_issue('data:' + s.name, null);
      } catch (err) {
        set_issue('data:' + s.name, `${s.name}: bad ${type} event (${err.message})`);
      }
    });
    on('snapshot', on_snapshot);
    on('append', on_append);
    on('spans', on_spans);
    on('gone', on_gone);
    es.onopen = () => set_issue('stream:' + s.name, null);
    es.onerror = () => {
      if (state.streams.get(s.name) !== s) return;
      set_issue('stream:' + s.name, `${s.name}: live stream lost, retrying`);
      // EventSource retries by itself after a dropped connection (CONNECTING), not after an
      // error status (CLOSED): then a fresh one, which starts from a snapshot.
      if (es.readyState === EventSource.CLOSED && !s.retry) {
        s.retry = setTimeout(() => {
          s.retry = null;
          if (state.streams.get(s.name) === s) connect(s);
        }, RETRY_MS);
      }
    };
  }
  function close_stream(name) {
    const s = state.streams.get(name);
    if (!s) return;
    state.streams.delete(name);
    s.es.close();
    clearTimeout(s.retry);
    for (const k of ['stream:', 'data:']) set_issue(k + name, null);
  }
  function on_snapshot(s, d) {  // at start, and whenever the server restarts the series
    if (typeof d.x === 'string') s.x = d.x;
    s.series = clean_series(d.series);
    s.moe = clean_moe(d.moe);
    merge_run(s.name, d.run);
    schedule_render();
  }
  function on_append(s, d) {
    for (const [k, add] of Object.entries(clean_series(d.series))) {
      const cur = s.series[k] || (s.series[k] = {x: [], y: []});
      for (let i = 0; i < add.x.length; i++) cur.x.push(add.x[i]), cur.y.push(add.y[i]);
      if (cur.x.length > 4 * s.width) s.series[k] = decimate(cur.x, cur.y, s.width);
    }
    if (d.moe) s.moe = clean_moe(d.moe);
    merge_run(s.name, d.run);
    schedule_render();
  }
  function on_spans(s, d) {
    if (!Array.isArray(d.spans)) throw new Error('no spans array');
    for (const sp of d.spans) {
      if (sp && typeof sp.t0 === 'number' && typeof sp.t1 === 'number' && sp.actor != null) {
        s.spans.push({actor: String(sp.actor), what: String(sp.what ?? ''), t0: sp.t0, t1: sp.t1});
      }
    }
    let end = -Infinity;
    for (const sp of s.spans) end = Math.max(end, sp.t1);
    s.spans = s.spans.filter((sp) => sp.t1 >= end - SPAN_WINDOW_S);
    schedule_render();
  }
  function on_gone(s) {  // the run folder was deleted: the server ends this stream
    close_stream(s.name);
    state.runs = state.runs.filter((r) => r.name !== s.name);
    state.overlay.delete(s.name);
    if (hash_run() === s.name) clear_hash();
    sync_runs();
  }

  // ---- charts ----
  function schedule_render() {
    if (state.renderQueued) return;
    state.renderQueued = true;
    requestAnimationFrame(() => {
      state.renderQueued = false;
      try {
        render_summary();
        render_charts();
        render_timeline();
      } catch (e) {
        set_issue('render', `drawing failed: ${e.message}`);
      }
    });
  }
  // [[group, [keys]]] of the keys these streams have, known groups first.
  function groups_of(streams) {
    const keys = new Set();
    for (const s of streams)
      for (const [k, v] of Object.entries(s.series))
        if (v.x.length && k !== s.x && !NOT_CHARTED.has(k)) keys.add(k);
    const out = [];
    for (const [g, spec] of GROUPS) {
      const ks = Array.isArray(spec) ? spec.filter((k) => keys.has(k)) :
                                       [...keys].filter((k) => spec.test(k)).sort();
      ks.forEach((k) => keys.delete(k));
      if (ks.length) out.push([g, ks]);
    }
    for (const k of [...keys].sort()) out.push([k, [k]]);
    return out;
  }
  function render_charts() {
    const prim = state.streams.get(state.primary);
    const xkey = prim && prim.x;
    const streams = shown_names()
                        .map((n) => state.streams.get(n))
                        .filter((s) => s && (!xkey || !s.x || s.x === xkey));
    const box = $('#charts');
    const seen = new Set();
    const groups = groups_of(streams);
    // The other charts first, then the MoE section: its heading, the primary run's expert-load
    // heatmap, its scalar charts.
    const moe = groups.filter(([g]) => is_moe_group(g));
    for (const [g, keys] of groups.filter(([g]) => !is_moe_group(g))) {
      seen.add(g);
      draw_group(g, keys, streams, prim, xkey);
      box.appendChild(state.charts.get(g).el);  // keeps group order
    }
    const heat = render_heatmap(prim, streams.length > 1);
    const heading = moe_heading();
    heading.hidden = !heat && !moe.length;
    box.appendChild(heading);
    if (heat) box.appendChild(heat);
    for (const [g, keys] of moe) {
      seen.add(g);
      draw_group(g, keys, streams, prim, xkey);
      box.appendChild(state.charts.get(g).el);
    }
    for (const [g, c] of state.charts) {
      if (seen.has(g)) continue;
      c.plot && c.plot.destroy();
      c.el.remove();
      state.charts.delete(g);
    }
  }
  function draw_group(g, keys, streams, prim, xkey) {
    const tables = [], series = [{label: xkey === 't' ? 'seconds' : xkey || 'step'}];
    streams.forEach((s, ri) => keys.forEach((k, ki) => {
      const d = s.series[k];
      if (!d || !d.x.length) return;
      const a = ascending(d);
      tables.push([a.x, a.y]);
      series.push({
        label: streams.length > 1 ? `${s.name} ${k}` : k,
        stroke: COLORS[ri % COLORS.length],
        dash: DASHES[ki % DASHES.length],
        width: 1.5,
        spanGaps: true
      });
    }));
    const data = tables.length === 1 ? tables[0] : uPlot.join(tables);
    let c = state.charts.get(g);
    if (!c) {
      c = {el: document.createElement('div'), plot: null, sig: ''};
      c.el.className = 'chart';
      c.el.dataset.chart = g;
      c.el.innerHTML = '<h3></h3><div class="plot"></div>';
      c.el.querySelector('h3').textContent = g;
      $('#charts').appendChild(c.el);
      state.charts.set(g, c);
    }
    const sig = series.map((s) => `${s.label}|${s.stroke}|${s.dash}`).join(',');
    if (c.plot && c.sig === sig) {
      c.plot.setData(data);
    } else {
      if (c.plot) c.plot.destroy();
      c.plot = new uPlot(plot_options(g, series, c.el), data, c.el.querySelector('.plot'));
      c.sig = sig;
    }
    // What the browser test reads: the primary run's first series of this group.
    const first = prim && keys.map((k) => prim.series[k]).find((d) => d && d.x.length);
    c.el.dataset.points = first ? String(first.x.length) : '0';
    c.el.dataset.last = first ? String(first.y[first.y.length - 1]) : '';
  }
  function moe_heading() {
    let h = $('#moe-heading');
    if (!h) {
      h = document.createElement('h2');
      h.id = 'moe-heading';
      h.className = 'section';
      h.textContent = 'MoE';
    }
    return h;
  }
  function heat_color(t) {  // t in [0, 1] -> rgb() along HEAT_STOPS
    const u = Math.min(1, Math.max(0, t)) * (HEAT_STOPS.length - 1);
    const i = Math.min(HEAT_STOPS.length - 2, Math.floor(u)), f = u - i;
    const c = HEAT_STOPS[i].map((v, k) => Math.round(v + (HEAT_STOPS[i + 1][k] - v) * f));
    return `rgb(${c.join(',')})`;
  }
  const pct = (v, digits) => `${(v * 100).toFixed(digits)}%`;
  // The primary run's latest moe_load as a table: a row per MoE layer (its id), a column per
  // expert, each cell colored by its fraction of the layer's token choices (0 to the largest
  // shown), its value in the cell when the columns are few and always in the cell's title.
  // Returns the element, or null (and removes it) when the run has no moe_load.
  function render_heatmap(prim, named) {
    let el = $('#moe-heatmap');
    const m = prim && prim.moe;
    if (!m) {
      if (el) el.remove();
      return null;
    }
    if (!el) {
      el = document.createElement('div');
      el.id = 'moe-heatmap';
      el.className = 'chart heatmap';
      el.dataset.chart = 'moe_load';
      el.innerHTML = '<h3></h3><div class="heat-scroll"><table></table></div>' +
          '<div class="heat-legend"><span class="lo"></span><i></i><span class="hi"></span>' +
          '<span class="note"></span></div>';
    }
    const title = `expert load${m.x == null ? '' : ` at ${prim.x || 'step'} ${m.x}`}` +
        (named ? ` · ${prim.name}` : '');
    el.querySelector('h3').textContent = title;
    if (el._moe === m) return el;  // drawn already
    el._moe = m;
    const experts = Math.max(...m.load.map((r) => r.length));
    let vmax = 0;
    for (const r of m.load)
      for (const v of r)
        if (v != null) vmax = Math.max(vmax, v);
    const hi = vmax > 0 ? vmax : 1;
    const digits = experts <= 8 ? 1 : 0;
    const table = el.querySelector('table');
    const head = document.createElement('tr');
    head.appendChild(document.createElement('th'));
    for (let j = 0; j < experts; j++) {
      const th = document.createElement('th');
      th.textContent = String(j);
      th.title = `expert ${j}`;
      head.appendChild(th);
    }
    const rows = [head];
    let cells = 0;
    m.load.forEach((r, i) => {
      const tr = document.createElement('tr');
      const th = document.createElement('th');
      th.textContent = `layer ${m.layers[i]}`;
      tr.appendChild(th);
      for (let j = 0; j < experts; j++) {
        const td = document.createElement('td');
        const v = r[j];
        if (j >= r.length) {
          td.className = 'none';
        } else if (v == null) {
          td.className = 'none';
          td.title = `layer ${m.layers[i]}, expert ${j}: no value`;
        } else {
          const t = v / hi;
          td.style.background = heat_color(t);
          if (t > 0.6) td.style.color = '#fff';
          if (experts <= 16) td.textContent = pct(v, digits);
          td.title = `layer ${m.layers[i]}, expert ${j}: ${pct(v, 1)} of token choices ` +
              `(even: ${pct(1 / r.length, 1)})`;
          td.dataset.v = String(v);
          cells++;
        }
        tr.appendChild(td);
      }
      rows.push(tr);
    });
    table.replaceChildren(...rows);
    el.querySelector('.heat-legend i').style.background =
        `linear-gradient(to right, ${[0, 1 / 3, 2 / 3, 1].map(heat_color).join(', ')})`;
    el.querySelector('.heat-legend .lo').textContent = '0%';
    el.querySelector('.heat-legend .hi').textContent = pct(hi, 1);
    el.querySelector('.heat-legend .note').textContent =
        `share of each layer's token choices; even = 1/${experts === 1 ? 1 : 'experts'}`;
    // What the browser test reads.
    el.dataset.step = m.x == null ? '' : String(m.x);
    el.dataset.layers = m.layers.join(',');
    el.dataset.experts = String(experts);
    el.dataset.cells = String(cells);
    return el;
  }
  function plot_options(g, series, el) {
    const yaxis = {
      size: 64,
      values: (u, vals) => vals.map(BYTE_GROUPS.has(g) ? fmt_bytes : fmt_num)
    };
    return {
      width: Math.max(100, el.clientWidth - 16),
      height: CHART_H,
      scales: {x: {time: false}},
      axes: [{}, yaxis],
      series,
      cursor: {sync: {key: 'zf'}},
      legend: {live: true},
    };
  }

  // ---- summary and timeline ----
  function render_summary() {
    const run = state.runs.find((r) => r.name === state.primary);
    $('#run').hidden = !state.primary;
    if (!run) return;
    $('#run-name').textContent = run.name;
    const st = $('#run-state');
    st.textContent = run.state || 'unknown';
    st.className = `run-state state-${run.state || 'unknown'}`;
    const parts = [run.kind || 'run'];
    if (run.start_unix != null) parts.push(`started ${fmt_time(run.start_unix, true)}`);
    if (run.last_step != null)
      parts.push(`step ${run.last_step}${run.total_steps ? '/' + run.total_steps : ''}`);
    if (run.state === 'running' && run.eta_s != null) parts.push(`ETA ${fmt_duration(run.eta_s)}`);
    if (run.loading) parts.push('reading its metrics…');
    if (run.end_unix != null && run.start_unix != null) {
      parts.push(`took ${fmt_duration(run.end_unix - run.start_unix)}`);
    } else if (run.updated_unix != null) {
      const ago = Date.now() / 1000 + state.clockSkew - run.updated_unix;
      parts.push(`updated ${fmt_duration(Math.max(0, ago))} ago`);
    }
    $('#run-times').textContent = parts.join(' · ');
    const msg = $('#run-message');
    msg.hidden = !run.message;
    msg.textContent = run.message || '';
    const cfg = (state.detail && state.detail.config) || '';  // detail is the primary's only
    const pre = $('#config pre');
    if (pre.textContent !== cfg) pre.textContent = cfg;
    $('#config').hidden = !cfg;
  }
  function timeline_actors(s) {  // api/run's actors, then any new one the spans name
    const listed = state.detail && Array.isArray(state.detail.actors) ? state.detail.actors : [];
    return [...new Set([...listed.map(String), ...(s ? s.spans.map((sp) => sp.actor) : [])])];
  }
  function render_timeline() {
    const s = state.streams.get(state.primary);
    const canvas = $('#timeline');
    const actors = timeline_actors(s);
    canvas.dataset.actors = actors.join(',');
    $('#timeline-box').hidden = actors.length === 0;
    if (!actors.length) return;
    const LABEL_W = 110, ROW_H = 18, AXIS_H = 18;
    const cssW = Math.max(200, $('#timeline-box').clientWidth),
          cssH = actors.length * ROW_H + AXIS_H;
    const dpr = window.devicePixelRatio || 1;
    if (canvas.width !== Math.round(cssW * dpr) || canvas.height !== Math.round(cssH * dpr)) {
      canvas.width = Math.round(cssW * dpr), canvas.height = Math.round(cssH * dpr);
      canvas.style.width = cssW + 'px', canvas.style.height = cssH + 'px';
    }
    const ctx = canvas.getContext('2d');
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.fillStyle = '#ffffff';
    ctx.fillRect(0, 0, cssW, cssH);
    const spans = s ? s.spans : [];
    let t0 = Infinity, t1 = -Infinity;
    for (const sp of spans) t0 = Math.min(t0, sp.t0), t1 = Math.max(t1, sp.t1);
    if (!spans.length) t0 = 0, t1 = 1;
    t0 = Math.max(t0, t1 - SPAN_WINDOW_S);
    if (t1 <= t0) t1 = t0 + 1e-3;
    const plotW = cssW - LABEL_W - 4;
    const xof = (t) => LABEL_W + ((t - t0) / (t1 - t0)) * plotW;
    const row = new Map(actors.map((a, i) => [a, i]));
    ctx.font = '12px system-ui, sans-serif';
    ctx.textBaseline = 'middle';
    actors.forEach((a, i) => {
      ctx.fillStyle = i % 2 ? '#f8fafc' : '#f1f5f9';
      ctx.fillRect(LABEL_W, i * ROW_H, plotW, ROW_H);
      ctx.fillStyle = '#334155';
      ctx.fillText(a.length > 16 ? a.slice(0, 15) + '…' : a, 4, i * ROW_H + ROW_H / 2);
    });
    for (const sp of spans) {
      if (sp.t1 < t0) continue;
      const x0 = xof(Math.max(sp.t0, t0));
      ctx.fillStyle = color_of(sp.what);
      ctx.fillRect(x0, row.get(sp.actor) * ROW_H + 2, Math.max(1, xof(sp.t1) - x0), ROW_H - 4);
    }
    draw_time_axis(ctx, t0, t1, xof, actors.length * ROW_H, AXIS_H);
    state.timeline = {t0, t1, LABEL_W, plotW, ROW_H, actors, spans};
    render_span_legend(spans);
  }
  function render_span_legend(spans) {
    const kinds = [...new Set(spans.map((sp) => sp.what))];
    const key = kinds.join('\n');
    const box = $('#timeline-legend');
    if (box.dataset.key === key) return;
    box.dataset.key = key;
    box.replaceChildren(...kinds.map((w) => {
      const item = document.createElement('span');
      const sw = document.createElement('i');
      sw.style.background = color_of(w);
      item.append(sw, w);
      return item;
    }));
  }
  function draw_time_axis(ctx, t0, t1, xof, y, h) {
    const span = t1 - t0;
    const step =
        [0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 30].find((v) => span / v <= 8) || 60;
    ctx.fillStyle = '#64748b';
    ctx.textAlign = 'center';
    for (let k = Math.ceil((t0 - t1) / step); k <= 0; k++) {  // seconds before the last span
      const x = xof(t1 + k * step);
      ctx.fillRect(x, y, 1, 4);
      ctx.fillText(`${Number((k * step).toFixed(2))} s`, Math.min(x, xof(t1) - 14), y + h / 2 + 2);
    }
    ctx.textAlign = 'start';
  }
  function on_timeline_move(e) {
    const tl = state.timeline;
    const tip = $('#tooltip');
    tip.hidden = true;
    if (!tl) return;
    const rect = e.target.getBoundingClientRect();
    const x = e.clientX - rect.left, y = e.clientY - rect.top;
    const actor = tl.actors[Math.floor(y / tl.ROW_H)];
    const t = tl.t0 + ((x - tl.LABEL_W) / tl.plotW) * (tl.t1 - tl.t0);
    const slack = (2 / tl.plotW) * (tl.t1 - tl.t0);  // 2 px either side, for thin spans
    const hit = actor != null && x >= tl.LABEL_W &&
        tl.spans.find((sp) => sp.actor === actor && sp.t0 - slack <= t && t <= sp.t1 + slack);
    if (!hit) return;
    const ms = (hit.t1 - hit.t0) * 1000;
    tip.textContent = `${hit.actor}: ${hit.what} ${ms < 10 ? ms.toFixed(2) : ms.toFixed(1)} ms`;
    tip.style.left = `${x + 12}px`;
    tip.style.top = `${y + 12}px`;
    tip.hidden = false;
  }

  // ---- start ----
  function start() {
    const q = new URLSearchParams(location.search);
    if (q.has('token')) {  // the server has set the cookie: keep the token out of the address bar
      q.delete('token');
      const rest = q.toString();
      history.replaceState(null, '', location.pathname + (rest ? '?' + rest : '') + location.hash);
    }
    const canvas = $('#timeline');
    canvas.addEventListener('mousemove', on_timeline_move);
    canvas.addEventListener('mouseleave', () => ($('#tooltip').hidden = true));
    window.addEventListener('hashchange', sync_runs);
    let resizeTimer = null;
    window.addEventListener('resize', () => {
      clearTimeout(resizeTimer);
      resizeTimer = setTimeout(() => {
        for (const c of state.charts.values()) {
          c.plot && c.plot.setSize({width: Math.max(100, c.el.clientWidth - 16), height: CHART_H});
        }
        schedule_render();
      }, 150);
    });
    const wanted = hash_run();
    if (wanted) {  // a linked run: start its stream while the list loads
      set_primary(wanted);
      sync_streams();
    }
    poll_runs();
  }
  if (typeof uPlot === 'undefined') {
    set_issue('uplot', 'uPlot.iife.min.js did not load (run scripts/setup)');
  } else {
    start();
  }
})();
