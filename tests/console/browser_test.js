// The console page (console/) in a real browser against a real `zeroflow console` (issue 11):
// run list, live charts, live appends, bad lines, timeline, a Mixture-of-Experts run's expert-load
// heatmap, state changes, a deleted run, the token, path safety. Headless Chromium driven by playwright-core (scripts/setup installs both).
// Usage: node browser_test.js ZEROFLOW_BINARY BUILD_DIR   (CTest: console_browser)
// Writes BUILD_DIR/console-screenshot.png. Exits nonzero with a message naming the failed step.
'use strict';
const fs = require('fs');
const os = require('os');
const path = require('path');
const http = require('http');
const {spawn} = require('child_process');

const CHROMIUM = '/usr/lib/chromium/chromium';
const SETUP_HINT = 'run scripts/setup (installs chromium and playwright-core)';

function load_playwright() {
  for (const where
           of ['playwright-core',
               path.join(__dirname, '..', '..', 'build-node', 'node_modules', 'playwright-core')]) {
    try {
      return require(where);
    } catch (e) {
      if (e.code !== 'MODULE_NOT_FOUND') throw e;
    }
  }
  return null;
}

// ---- helpers ----
const t_start = Date.now();
const children = new Set();
let step_no = 0;

async function step(name, fn) {
  step_no++;
  const t0 = Date.now();
  process.stdout.write(`[console_browser] step ${step_no}: ${name} ... `);
  try {
    const note = await fn();
    console.log(`ok (${Date.now() - t0} ms${note ? ', ' + note : ''})`);
  } catch (e) {
    console.log('FAILED');
    e.message = `step ${step_no} (${name}): ${e.message}`;
    throw e;
  }
}
function sleep(ms) { return new Promise((r) => setTimeout(r, ms)); }
// Polls fn() (sync or async) until it returns a truthy value; returns {value, ms}. On timeout
// throws "WHAT not within N ms (last: ...)", last being what describe() says of the last value.
async function wait_for(what, timeout_ms, fn, describe = (v) => JSON.stringify(v)) {
  const t0 = Date.now();
  let last;
  for (;;) {
    last = await fn();
    if (last && last.ok !== false) return {value: last, ms: Date.now() - t0};
    if (Date.now() - t0 > timeout_ms)
      throw new Error(`${what} not within ${timeout_ms} ms (last: ${describe(last)})`);
    await sleep(50);
  }
}
function expect(cond, msg) {
  if (!cond) throw new Error(msg);
}

// Starts `zeroflow console --runs RUNS --port 0 ...`; resolves {proc, port} once it printed
// "console: http://127.0.0.1:PORT/".
function start_console(zeroflow, runs, extra) {
  return new Promise((resolve, reject) => {
    const proc = spawn(
        zeroflow, ['console', '--runs', runs, '--port', '0', ...extra],
        {stdio: ['ignore', 'pipe', 'pipe']});
    children.add(proc);
    let out = '', err = '';
    const timer = setTimeout(
        () => reject(
            new Error(`zeroflow console printed no URL in 15 s (stdout: ${out}, stderr: ${err})`)),
        15000);
    proc.stdout.on('data', (d) => {
      out += d;
      const m = out.match(/console: http:\/\/127\.0\.0\.1:(\d+)\//);
      if (m) clearTimeout(timer), resolve({proc, port: Number(m[1])});
    });
    proc.stderr.on('data', (d) => (err += d));
    proc.on(
        'error',
        (e) => (clearTimeout(timer), reject(new Error(`cannot start ${zeroflow}: ${e.message}`))));
    proc.on('exit', (code) => {
      children.delete(proc);
      clearTimeout(timer);
      reject(
          new Error(`zeroflow console exited with ${code} before printing its URL: ${err.trim()}`));
    });
  });
}
function stop(proc) {
  if (!proc || proc.exitCode !== null || proc.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    const kill = setTimeout(() => proc.kill('SIGKILL'), 3000);
    proc.once('exit', () => (clearTimeout(kill), resolve()));
    proc.kill('SIGTERM');
  });
}
// GET with the path sent byte for byte (no URL normalization of "..").
function http_get(port, raw_path, headers = {}) {
  return new Promise((resolve, reject) => {
    const req =
        http.request({host: '127.0.0.1', port, path: raw_path, method: 'GET', headers}, (res) => {
          let body = '';
          res.on('data', (d) => (body += d));
          res.on('end', () => resolve({status: res.statusCode, body, headers: res.headers}));
        });
    req.on('error', reject);
    req.setTimeout(5000, () => req.destroy(new Error(`GET ${raw_path} timed out`)));
    req.end();
  });
}

// ---- the run folders ----
const metric_line = (i) =>
    JSON.stringify(
        {step: i, loss: 5 - i * 0.03, lr: 0.001, tokens_per_s: 1000 + i, elapsed_s: i * 0.5,
         seqlen: Math.min(128, 64 + 8 * i), ltd_keep: 64}) +
    '\n';
const moe_line = (i, first) => JSON.stringify({
  step: i,
  loss: 10.5 - i * 0.01,
  moe_layers: [1, 3],
  moe_load: [[first, 0.21, 0.27, 1 - 0.48 - first], [0.42, 0.06, 0.17, 0.35]],
  moe_dropped: 0.07,
  moe_imbalance: 1.69,
  moe_entropy: 1.38,
  moe_balance_loss: 2.02,
  moe_z_loss: 3.6
}) + '\n';
function write_json_atomic(file, obj) {  // as run_status_writer does: never half a file
  fs.writeFileSync(file + '.tmp', JSON.stringify(obj));
  fs.renameSync(file + '.tmp', file);
}
function make_runs(runs) {
  const now = Date.now() / 1000;
  const t1 = path.join(runs, 't1'), t0 = path.join(runs, 't0');
  fs.mkdirSync(t1, {recursive: true});
  fs.mkdirSync(t0, {recursive: true});
  const status = {
    kind: 'train',
    state: 'running',
    pid: process.pid,
    host: os.hostname(),
    start_unix: now - 60,
    end_unix: null,
    total_steps: 100,
    message: '',
    config: '[train]\nsteps = 100\n'
  };
  write_json_atomic(path.join(t1, 'run.json'), status);
  let m = '';
  for (let i = 1; i <= 50; i++) m += metric_line(i);
  fs.writeFileSync(path.join(t1, 'metrics.jsonl'), m);
  // 20 s of spans: rank0 and rank1 busy 0.3 s of every 0.5 s, the sampler 0.1 s between them.
  let s = JSON.stringify({start_unix: now - 30}) + '\n';
  for (let k = 0; k < 40; k++) {
    const b = k * 0.5;
    for (const actor of ['rank0', 'rank1'])
      s += JSON.stringify({actor, what: 'forward_backward', t0: b, t1: b + 0.3}) + '\n';
    s += JSON.stringify({actor: 'sampler', what: 'sample', t0: b + 0.3, t1: b + 0.4}) + '\n';
  }
  fs.writeFileSync(path.join(t1, 'spans.jsonl'), s);
  write_json_atomic(path.join(t0, 'run.json'), {
    ...status,
    state: 'finished',
    start_unix: now - 3600,
    end_unix: now - 3000,
    total_steps: 20
  });
  m = '';
  for (let i = 1; i <= 20; i++) m += JSON.stringify({step: i, loss: 6 - i * 0.1, lr: 0.002}) + '\n';
  fs.writeFileSync(path.join(t0, 'metrics.jsonl'), m);
  // m1: a Mixture-of-Experts run (older than t1, so t1 stays the newest): its scalar moe_* keys
  // and, per step, moe_load (2 MoE layers x 4 experts) with the layers' ids.
  const m1 = path.join(runs, 'm1');
  fs.mkdirSync(m1, {recursive: true});
  write_json_atomic(path.join(m1, 'run.json'), {
    ...status,
    state: 'finished',
    start_unix: now - 120,
    end_unix: now - 100,
    total_steps: 10
  });
  m = '';
  for (let i = 1; i <= 10; i++) m += moe_line(i, 0.24);
  fs.writeFileSync(path.join(m1, 'metrics.jsonl'), m);
  return {t0, t1, m1, status};
}

// ---- what the page shows ----
const chart_attrs = (page, group) => page.evaluate((g) => {
  const el = document.querySelector(`.chart[data-chart="${g}"]`);
  return el ? {
    points: Number(el.dataset.points),
    last: Number(el.dataset.last),
    series: el.querySelectorAll('.u-legend .u-series').length - 1
  } :
              null;
}, group);
const row_info = (page, name) => page.evaluate((n) => {
  const tr = document.querySelector(`#runs tr[data-run="${n}"]`);
  if (!tr) return null;
  const st = tr.querySelector('.run-state');
  return {
    state: st ? st.textContent.trim() : null,
    skipped: tr.querySelector('.skipped')?.textContent.trim() || ''
  };
}, name);
function chart_is(points, last) {
  return (a) => a && a.points === points && Math.abs(a.last - last) <= 1e-9;
}
// Pixels of the timeline canvas that differ from its most common color (the background).
const timeline_pixels = (page) => page.evaluate(() => {
  const c = document.getElementById('timeline');
  if (!c || !c.width || !c.height) return {total: 0, other: 0, colors: 0};
  const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  const counts = new Map();
  for (let i = 0; i < d.length; i += 4) {
    const k = (d[i] << 16) | (d[i + 1] << 8) | d[i + 2];
    counts.set(k, (counts.get(k) || 0) + 1);
  }
  const top = Math.max(...counts.values());
  return {total: d.length / 4, other: d.length / 4 - top, colors: counts.size};
});

// ---- the steps ----
// What every step shares: c = {zeroflow, build_dir, tmp, runs, t0, t1, status, browser, errors}.
function watch(c, page, label) {  // page errors and console errors go to c.errors
  page.on('pageerror', (e) => c.errors.push(`${label}: uncaught ${e.message}`));
  page.on('console', (m) => {
    if (m.type() === 'error') c.errors.push(`${label}: console error: ${m.text()}`);
  });
}
function no_errors(c) {
  expect(c.errors.length === 0, `the page logged errors:\n  ${c.errors.join('\n  ')}`);
}

// The expert-load heatmap as the page shows it (null: none).
const heatmap_info = (page) => page.evaluate(() => {
  const el = document.querySelector('.chart[data-chart="moe_load"]');
  if (!el) return null;
  const tds = [...el.querySelectorAll('td[data-v]')];
  const cell = (layer, expert) => el.querySelectorAll('tr')[1 + layer]?.children[1 + expert];
  return {
    step: el.dataset.step,
    layers: el.dataset.layers,
    experts: Number(el.dataset.experts),
    cells: tds.length,
    colors: new Set(tds.map((td) => getComputedStyle(td).backgroundColor)).size,
    title: cell(1, 1)?.title || '',
    legend: !!el.querySelector('.heat-legend i') &&
        getComputedStyle(el.querySelector('.heat-legend i')).backgroundImage.includes('gradient'),
    heading: !document.getElementById('moe-heading')?.hidden,
    width: el.getBoundingClientRect().width,
  };
});

// Steps 1-8: one console without a token, one page.
async function page_steps(c) {
  const {t0, t1, status} = c;
  const con = await start_console(c.zeroflow, c.runs, []);
  const base = `http://127.0.0.1:${con.port}/`;
  const ctx = await c.browser.newContext({viewport: {width: 1200, height: 800}});
  const page = await ctx.newPage();
  watch(c, page, 'page');

  await step('page lists both runs (opened on #run=t0)', async () => {
    await page.goto(base + '#run=t0');
    const {ms} = await wait_for('rows t1 running and t0 finished', 5000, async () => {
      const a = await row_info(page, 't1'), b = await row_info(page, 't0');
      return {ok: a?.state === 'running' && b?.state === 'finished', a, b};
    });
    no_errors(c);
    return `${ms} ms after load`;
  });
  await step('charts of the linked run, then of the clicked one', async () => {
    await wait_for('t0 loss chart: 20 points, last 4', 5000, async () => {
      const a = await chart_attrs(page, 'loss');
      return chart_is(20, 6 - 20 * 0.1)(a) ? a : {ok: false, a};
    });
    await page.click('#runs tr[data-run="t1"] a');
    const {ms} = await wait_for('t1 loss chart: 50 points, last 3.5', 5000, async () => {
      const a = await chart_attrs(page, 'loss');
      return chart_is(50, 5 - 50 * 0.03)(a) ? a : {ok: false, a};
    });
    const hash = await page.evaluate(() => location.hash);
    expect(hash === '#run=t1', `clicking t1 set the hash to ${hash}, expected #run=t1`);
    for (const g of ['lr', 'tokens_per_s']) expect(await chart_attrs(page, g), `no ${g} chart`);
    // a curriculum's sequence length and random-LTD's kept tokens share one chart
    const sl = await chart_attrs(page, 'seqlen');
    expect(sl && sl.series === 2 && sl.last === 128,
           `seqlen chart: ${JSON.stringify(sl)}, expected 2 series (seqlen, ltd_keep), last 128`);
    expect(!(await chart_attrs(page, 'ltd_keep')), 'ltd_keep has a chart of its own');
    no_errors(c);
    return `${ms} ms after the click`;
  });
  await step('appended lines reach the chart within 2 s', async () => {
    let m = '';
    for (let i = 51; i <= 60; i++) m += metric_line(i);
    fs.appendFileSync(path.join(t1, 'metrics.jsonl'), m);
    const {ms} = await wait_for('loss chart: 60 points, last 5-60*0.03', 2000, async () => {
      const a = await chart_attrs(page, 'loss');
      return chart_is(60, 5 - 60 * 0.03)(a) ? a : {ok: false, a};
    });
    // A garbage line and a line cut short (no newline yet: pending, as a writer mid-line).
    fs.appendFileSync(path.join(t1, 'metrics.jsonl'), 'garbage\n{"step": 61, "loss": 1.');
    const skipped = await wait_for('the run list showing skipped >= 1 for t1', 5000, async () => {
      const r = await row_info(page, 't1');
      return parseInt(r?.skipped, 10) >= 1 ? r : {ok: false, r};
    });
    const a = await chart_attrs(page, 'loss');
    expect(
        chart_is(60, 5 - 60 * 0.03)(a),
        `after the bad lines the loss chart shows ${JSON.stringify(a)}`);
    no_errors(c);
    return `${ms} ms to the chart, skipped shown after ${skipped.ms} ms more`;
  });
  await step('actor timeline', async () => {
    const {value} = await wait_for('timeline data-actors rank0,rank1,sampler', 3000, async () => {
      const v =
          await page.evaluate(() => document.getElementById('timeline')?.dataset.actors || '');
      return v.split(',').sort().join(',') === 'rank0,rank1,sampler' ? {v} : {ok: false, v};
    });
    const px = await timeline_pixels(page);
    // Busy spans fill about 3/5 of two rows and 1/5 of the third: far more than labels alone.
    expect(
        px.colors >= 3 && px.other > px.total * 0.05,
        `the timeline canvas looks blank: ${JSON.stringify(px)} (actors ${value.v})`);
    return `${px.other} of ${px.total} pixels drawn`;
  });
  await step('an MoE run: expert-load heatmap, moe charts, live update; none for t1', async () => {
    await page.click('#runs tr[data-run="m1"] a');
    const {value: h, ms} = await wait_for('m1 heatmap at step 10', 5000, async () => {
      const v = await heatmap_info(page);
      return v && v.step === '10' ? v : {ok: false, v};
    });
    expect(
        h.layers === '1,3' && h.experts === 4 && h.cells === 8,
        `heatmap ${JSON.stringify(h)}: expected layers 1,3, 4 experts, 8 cells`);
    expect(h.colors >= 4, `the heatmap's cells share ${h.colors} colors: not colored by value`);
    expect(
        /layer 3, expert 1: 6\.0%/.test(h.title), `cell (layer 3, expert 1) title: ${h.title}`);
    expect(h.legend && h.heading && h.width > 100, `heatmap ${JSON.stringify(h)}: no legend/heading`);
    for (const g of ['moe_dropped', 'moe_imbalance', 'moe_entropy', 'moe_balance_loss',
                     'moe_z_loss']) {
      const a = await chart_attrs(page, g);
      expect(a && a.points === 10, `${g} chart: ${JSON.stringify(a)}, expected 10 points`);
    }
    // The MoE section comes after the other charts: heading, heatmap, moe_* charts.
    const order = await page.evaluate(
        () => [...document.getElementById('charts').children].map(
            (e) => e.id === 'moe-heading' ? 'heading' : e.dataset.chart));
    const at = (k) => order.indexOf(k);
    expect(
        at('loss') < at('heading') && at('heading') < at('moe_load') &&
            at('moe_load') < at('moe_dropped'),
        `chart order ${order.join(',')}`);
    fs.appendFileSync(path.join(c.m1, 'metrics.jsonl'), moe_line(11, 0.02));
    const live = await wait_for('the heatmap at step 11 within 2 s', 2000, async () => {
      const v = await heatmap_info(page);
      return v && v.step === '11' ? v : {ok: false, v};
    });
    await page.screenshot({path: path.join(c.build_dir, 'console-moe-screenshot.png')});
    await page.click('#runs tr[data-run="t1"] a');
    await wait_for('t1 loss chart again', 5000, async () => {
      const a = await chart_attrs(page, 'loss');
      return chart_is(60, 5 - 60 * 0.03)(a) ? a : {ok: false, a};
    });
    expect(!(await heatmap_info(page)), 'the dense run t1 shows a heatmap');
    const heading = await page.evaluate(() => !document.getElementById('moe-heading')?.hidden);
    expect(!heading, 'the dense run t1 shows the MoE heading');
    no_errors(c);
    return `${ms} ms to the heatmap, ${live.ms} ms to its update`;
  });
  await step('a finished run.json shows within 3 s', async () => {
    write_json_atomic(
        path.join(t1, 'run.json'), {...status, state: 'finished', end_unix: Date.now() / 1000});
    const {ms} = await wait_for('t1 state finished', 3000, async () => {
      const r = await row_info(page, 't1');
      return r?.state === 'finished' ? r : {ok: false, r};
    });
    return `${ms} ms`;
  });
  await step('overlay t0 and screenshot', async () => {
    await page.check('#runs tr[data-run="t0"] input[type=checkbox]');
    await wait_for('two series on the loss chart', 3000, async () => {
      const a = await chart_attrs(page, 'loss');
      return a && a.series === 2 && chart_is(60, 5 - 60 * 0.03)(a) ? a : {ok: false, a};
    });
    const shot = path.join(c.build_dir, 'console-screenshot.png');
    await page.screenshot({path: shot});
    return shot;
  });
  await step('a deleted run leaves the list within 3 s', async () => {
    fs.rmSync(t0, {recursive: true, force: true});
    const {ms} =
        await wait_for('row t0 gone', 3000, async () => ((await row_info(page, 't0')) === null));
    await wait_for(
        'one series on the loss chart', 2000,
        async () => (await chart_attrs(page, 'loss'))?.series === 1);
    await sleep(300);  // an error from the ended stream would come right after
    no_errors(c);
    return `${ms} ms`;
  });
  await ctx.close();  // before its server goes, so the page logs no lost connections
  await stop(con.proc);
}

// Steps 9-10: a console with a token.
async function token_steps(c) {
  const token_file = path.join(c.tmp, 'token');
  const token = 'tok-' + require('crypto').randomBytes(16).toString('hex');  // 36 characters
  fs.writeFileSync(token_file, token);
  const con = await start_console(c.zeroflow, c.runs, ['--token', token_file]);
  await step('token: 401 without it or with a wrong one, the page with ?token=', async () => {
    const get = (p, h) => http_get(con.port, p, h);
    expect((await get('/')).status === 401, 'GET / without a token is not 401');
    expect((await get('/api/runs')).status === 401, 'GET /api/runs without a token is not 401');
    expect(
        (await get('/', {Authorization: 'Bearer wrong'})).status === 401,
        'a wrong bearer token is not 401');
    expect(
        (await get('/', {Cookie: 'zf_console_token=wrong'})).status === 401,
        'a wrong cookie is not 401');
    const ok = await get('/', {Authorization: `Bearer ${token}`});
    expect(ok.status === 200 && /<html/i.test(ok.body), `GET / with the token: ${ok.status}`);
    const ctx2 = await c.browser.newContext({viewport: {width: 1200, height: 800}});
    const p2 = await ctx2.newPage();
    watch(c, p2, 'page with ?token');
    await p2.goto(`http://127.0.0.1:${con.port}/?token=${token}`);
    await wait_for(
        'run t1 listed through the cookie', 5000,
        async () => (await row_info(p2, 't1'))?.state === 'finished');
    await wait_for(
        't1 loss chart through the cookie', 5000,
        async () => chart_is(60, 5 - 60 * 0.03)(await chart_attrs(p2, 'loss')));
    no_errors(c);
    await ctx2.close();
  });
  await step('path safety: names that leave the runs folder are 404', async () => {
    const auth = {Authorization: `Bearer ${token}`};
    const good = await http_get(con.port, '/api/run/t1', auth);
    expect(good.status === 200, `GET /api/run/t1: ${good.status}, expected 200`);
    for (const p
             of ['/api/run/..%2F..%2Fetc', '/api/run/../t1', '/api/run/..%2Ft1', '/api/run/%2e%2e',
                 '/api/run/..', '/api/events/..%2F..%2Fetc', '/api/run/t1%2F..%2F..%2Fetc',
                 '/api/run/nosuchrun']) {
      const r = await http_get(con.port, p, auth);
      expect(r.status === 404, `GET ${p}: ${r.status}, expected 404 (${r.body.slice(0, 80)})`);
    }
  });
  await stop(con.proc);
}

async function run_steps(zeroflow, build_dir, tmp, browser) {
  const runs = path.join(tmp, 'runs');
  const c = {zeroflow, build_dir, tmp, runs, browser, errors: [], ...make_runs(runs)};
  await page_steps(c);
  await token_steps(c);
}

async function main() {
  const [zeroflow, build_dir] = process.argv.slice(2);
  if (!zeroflow || !build_dir)
    throw new Error('usage: node browser_test.js ZEROFLOW_BINARY BUILD_DIR');
  const pw = load_playwright();
  if (!pw || !fs.existsSync(CHROMIUM)) {
    throw new Error(`${!pw ? 'playwright-core' : CHROMIUM} is missing: ${SETUP_HINT}`);
  }
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'zf-console-'));
  let browser = null;
  try {
    browser = await pw.chromium.launch(
        {executablePath: CHROMIUM, args: ['--no-sandbox', '--headless=new', '--disable-dev-shm-usage', '--disable-gpu']});
    await run_steps(zeroflow, build_dir, tmp, browser);
  } finally {
    if (browser) await browser.close().catch(() => {});
    for (const p of [...children]) await stop(p);
    fs.rmSync(tmp, {recursive: true, force: true});
  }
  console.log(`[console_browser] all steps passed in ${Date.now() - t_start} ms`);
}

main().then(() => process.exit(0), (e) => {
  console.error(`[console_browser] FAILED: ${e.message}`);
  for (const p of children) p.kill('SIGKILL');
  process.exit(1);
});
