// End-to-end test of the hub dashboard in headless Chromium, driven by playwright-core.
//
//   SOCKETEER_BIN=target/debug/socketeer node tests/browser/dashboard.mjs [OUT_DIR]
//
// Starts `socketeer hub --demo` (ROBOTS robots at RATE Hz, default 20 x 50), opens the
// dashboard, and checks what a person would: devices come online, a plot updates, boxes are
// drawn for detections, the label filter works, the CSV download has the data, and a label
// holding markup shows as text and runs nothing. Prints hub-receive → browser latency
// percentiles as FIGURE lines, and leaves screenshots in OUT_DIR. Exits non-zero on failure.
import { spawn } from 'node:child_process';
import { readFileSync, mkdirSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { chromium } from 'playwright-core';

const bin = process.env.SOCKETEER_BIN || 'target/debug/socketeer';
const out = process.argv[2] || '.';
const robots = Number(process.env.ROBOTS || 20);
const rate = Number(process.env.RATE || 50);
const latencySecs = Number(process.env.LATENCY_SECS || 10);
const cameraFps = Number(process.env.CAMERA_FPS || 5);
const deadline = 30000; // per step, ms
mkdirSync(out, { recursive: true });

function fail(why) {
  console.error(`dashboard test: FAILED: ${why}`);
  process.exitCode = 1;
  throw new Error(why);
}

const hub = spawn(bin, ['hub', '--demo', '--demo-robots', String(robots), '--demo-rate', String(rate), '--demo-camera-fps', String(cameraFps),
  '--listen', '127.0.0.1:0', '--http', '127.0.0.1:0', '--no-influx', '--http-token', 'browser-test-token'],
{ stdio: ['ignore', 'pipe', 'inherit'] });
let ingest = null; // the robots' endpoint, as the hub prints it
const dashboard = await new Promise((resolve, reject) => {
  const timer = setTimeout(() => reject(new Error('the hub printed no dashboard URL')), deadline);
  createInterface({ input: hub.stdout }).on('line', (line) => {
    const robots = line.match(/^listening on tcp:\/\/(\S+)/);
    if (robots && !ingest) ingest = robots[1];
    const m = line.match(/^open the dashboard: (\S+)/);
    if (m) { clearTimeout(timer); resolve(m[1]); }
  });
  hub.on('exit', (code) => reject(new Error(`the hub exited (${code})`)));
});
console.log(`dashboard at ${dashboard}`);
// The page was given the token in its URL and must pass it on to every API call and the feed.
if (!dashboard.includes('?token=browser-test-token')) throw new Error(`no token in ${dashboard}`);
const api = (path) => { const u = new URL(path, dashboard); u.searchParams.set('token', 'browser-test-token'); return u; };

let browser;
try {
  // A device whose detection labels hold markup, sent over HTTP like any robot could.
  const evil = [
    '<script>window.__pwned = 1</script>',
    '<img src=x onerror="window.__pwned = 2">',
  ];
  const body = JSON.stringify({
    stream: 'cam', seq: 1, frame: { w: 640, h: 480 },
    detections: evil.map((label, i) => ({ label, score: 0.9, box: [40 + 200 * i, 60, 150, 120] })),
  }) + '\n';
  const posted = await fetch(api('/api/ingest?device=intruder&session=s'), {
    method: 'POST', body, headers: { 'Content-Type': 'application/x-ndjson' },
  });
  const answer = await posted.text();
  if (!posted.ok || !answer.includes('"ack":1')) fail(`ingest of the markup labels: ${posted.status} ${answer}`);

  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync'],
  });
  const page = await browser.newPage({ viewport: { width: 1400, height: 1100 }, acceptDownloads: true });
  const errors = [];
  page.on('pageerror', (err) => errors.push(String(err)));
  page.on('dialog', (dialog) => { errors.push(`a dialog opened: ${dialog.message()}`); dialog.dismiss(); });

  // 1. The fleet: every robot comes online.
  await page.goto(dashboard);
  await page.waitForFunction((n) => document.querySelectorAll('#fleet td.status.online').length >= n,
    robots, { timeout: deadline }).catch(() => fail(`fewer than ${robots} devices online`));
  const rows = await page.$$eval('#fleet tbody tr', (trs) => trs.map((tr) => tr.dataset.device));
  console.log(`fleet: ${rows.length} devices (${rows.slice(0, 3).join(', ')}, ...)`);
  // Each robot's clock against the hub's, from the time exchanges its link runs.
  await page.waitForFunction(() => /ms$/.test(document.querySelector('#fleet tr[data-device="robot-1"] td.clock')?.textContent || ''),
    null, { timeout: deadline }).catch(async () => fail(`no clock offset shown: ${await page.$eval('#fleet tr[data-device="robot-1"]', (tr) => tr.textContent)}`));
  console.log(`fleet: robot-1's clock ${await page.$eval('#fleet tr[data-device="robot-1"] td.clock', (td) => td.textContent)}`);
  await page.waitForFunction(() => [...document.querySelectorAll('#fleet tbody tr')].some((tr) => Number(tr.cells[3].textContent) > 0),
    null, { timeout: deadline }).catch(() => fail('no device shows a rate'));
  await page.screenshot({ path: `${out}/dashboard-fleet.png` });

  // 2. One robot: a plot that updates, boxes on the camera frame.
  await page.click('#fleet a >> text=robot-1');
  await page.waitForSelector('canvas.chart[data-stream="imu"][data-points]', { timeout: deadline })
    .catch(() => fail('no imu chart drawn'));
  await page.waitForFunction(() => Number(document.querySelector('canvas.chart[data-stream="imu"]').dataset.points) > 10,
    null, { timeout: deadline }).catch(() => fail('the imu plot stays empty'));
  // While live, a stream that appears later gets its own chart; the others stay as they are.
  await page.$eval('canvas.chart[data-stream="imu"]', (c) => { c.dataset.kept = 'yes'; });
  const valueBefore = await page.$$eval('.panel table tbody tr', (trs) => trs.map((tr) => tr.textContent).join('|'));
  await page.waitForFunction((old) => [...document.querySelectorAll('.panel table tbody tr')].map((tr) => tr.textContent).join('|') !== old,
    valueBefore, { timeout: deadline }).catch(() => fail('latest values never change'));
  const firstTime = await page.$eval('canvas.chart[data-stream="imu"]', (c) => c.toDataURL());
  await page.waitForFunction((old) => document.querySelector('canvas.chart[data-stream="imu"]').toDataURL() !== old,
    firstTime, { timeout: deadline }).catch(() => fail('the imu plot is not redrawn'));
  const charts = await page.$$eval('canvas.chart', (cs) => cs.map((c) => `${c.dataset.stream}:${c.dataset.points}`));
  console.log(`charts: ${charts.join(' ')}`);
  // Fields of very different ranges do not flatten each other: the IMU's ax (near 0) and az
  // (near 9.8) both move visibly, each on its own scale.
  await page.waitForFunction(() => {
    const e = JSON.parse(document.querySelector('canvas.chart[data-stream="imu"]').dataset.extents || '{}');
    return e.ax > 20 && e.az > 20;
  }, null, { timeout: deadline }).catch(async () => fail(`a field is drawn flat: ${await page.$eval('canvas.chart[data-stream="imu"]', (c) => c.dataset.extents + ' ' + c.dataset.scales)}`));
  const scales = await page.$eval('canvas.chart[data-stream="imu"]', (c) => c.dataset.scales);
  console.log(`imu scales: ${scales}`);
  // Units as the robot sent them: in the legend, on the scales, among the latest values.
  await page.waitForFunction(() => {
    const c = document.querySelector('canvas.chart[data-stream="imu"]');
    return JSON.parse(c.dataset.units || '[]').includes('m/s²')
      && c.closest('.panel').querySelector('.legend').textContent.includes('az m/s²');
  }, null, { timeout: deadline }).catch(async () => fail(`imu units not shown: ${await page.$eval('canvas.chart[data-stream="imu"]', (c) => c.dataset.units + ' / ' + c.closest('.panel').querySelector('.legend').textContent)}`));
  await page.waitForFunction(() => [...document.querySelectorAll('.panel table tbody tr')].some((tr) => /percent.*%/.test(tr.textContent)),
    null, { timeout: deadline }).catch(() => fail('the battery percent is shown without its unit'));
  await page.waitForFunction(() => Number(document.querySelector('#camera').dataset.boxes) > 0,
    null, { timeout: deadline }).catch(() => fail('no detection boxes drawn'));
  // A stream robot-1 has never sent: its chart must appear, and the IMU chart stay the same.
  const probe = await fetch(api('/api/ingest?device=robot-1&session=probe'),
    { method: 'POST', headers: { 'Content-Type': 'application/x-ndjson' }, body: JSON.stringify({ stream: 'probe', seq: 1, values: { x: 1 } }) + '\n' });
  const probed = await probe.text();
  if (!probe.ok || !probed.includes('"ack":1')) fail(`ingest of a new stream: ${probe.status} ${probed}`);
  await page.waitForSelector('canvas.chart[data-stream="probe"]', { timeout: deadline })
    .catch(() => fail('a stream that appeared while live got no chart'));
  if (await page.$eval('canvas.chart[data-stream="imu"]', (c) => c.dataset.kept) !== 'yes') {
    fail('the imu chart was rebuilt when a stream appeared');
  }
  const drawn = await page.$eval('#camera', (c) => JSON.parse(c.dataset.labels));
  console.log(`camera: boxes for ${drawn.join(', ')}`);
  // The picture the robot sent is drawn under its boxes: inside a box the pixels are the
  // object's colour, not the background's.
  await page.waitForFunction(() => document.querySelector('#camera').dataset.image === '1',
    null, { timeout: deadline }).catch(() => fail('no camera picture drawn'));
  const contrast = await page.$eval('#camera', (c) => {
    const g = JSON.parse(c.dataset.geometry);
    const ctx = c.getContext('2d');
    const at = (x, y) => [...ctx.getImageData(Math.round((g.ox + x * g.s) * g.ratio), Math.round((g.oy + y * g.s) * g.ratio), 1, 1).data];
    // Five points well inside each box (another object, its outline or a label may cover
    // one where boxes overlap): the one most unlike the background counts.
    const spots = [[0.5, 0.5], [0.3, 0.3], [0.7, 0.3], [0.3, 0.7], [0.7, 0.7]];
    const inside = g.boxes.map(([x, y, w, h]) => spots.map(([fx, fy]) => at(x + w * fx, y + h * fy)));
    const inBox = (x, y) => g.boxes.some(([bx, by, bw, bh]) => x >= bx - 4 && x <= bx + bw + 4 && y >= by - 20 && y <= by + bh + 4);
    // A background point: the first of a grid that no box (or its label) covers.
    let outside = null;
    for (let y = 20; y < 480 && !outside; y += 40) for (let x = 20; x < 640 && !outside; x += 40) if (!inBox(x, y)) outside = at(x, y);
    const diff = (a, b) => Math.abs(a[0] - b[0]) + Math.abs(a[1] - b[1]) + Math.abs(a[2] - b[2]);
    return { min: Math.min(...inside.map((ps) => Math.max(...ps.map((p) => diff(p, outside))))), inside, outside };
  });
  if (!(contrast.min > 60)) fail(`the pixels inside the boxes look like the background: ${JSON.stringify(contrast)}`);
  console.log(`camera: picture drawn (inside a box vs background: colour difference ${contrast.min} at least)`);
  await page.locator('#camera').screenshot({ path: `${out}/camera.png` });

  // Zoom: dragging across a plot shows that stretch of history, and Live returns.
  // (A locator, not an element handle: it finds the chart as it is at the moment of use.)
  const box = await page.locator('canvas.chart[data-stream="imu"]').boundingBox({ timeout: deadline });
  if (!box) fail('the imu chart is not on the page');
  await page.mouse.move(box.x + box.width * 0.80, box.y + box.height / 2);
  await page.mouse.down();
  await page.mouse.move(box.x + box.width * 0.95, box.y + box.height / 2, { steps: 5 });
  await page.mouse.up();
  await page.waitForFunction(() => !document.querySelector('#range').textContent.includes('live'),
    null, { timeout: deadline }).catch(() => fail('dragging across a plot did not zoom into history'));
  console.log(`zoom: ${await page.$eval('#range', (e) => e.textContent)}`);
  // In history the camera scrubs: over a range of stored frames, a time chosen on its slider
  // shows the newest frame at or before it, with its picture; play runs the range forward.
  const stored = (await (await fetch(api('/api/frames?device=robot-1&from=0&to=4000000000'))).json()).frames;
  if (stored.length < 10) fail(`too few frames stored: ${stored.length}`);
  await page.$eval('#from', (e, t) => { e.value = localInput(t); }, Math.floor(stored[0].ts));
  await page.$eval('#to', (e, t) => { e.value = localInput(t); }, Math.ceil(stored[stored.length - 1].ts) + 1);
  await page.click('button:text-is("show")');
  // (The zoom above may have shown a slider already: wait for this range's.)
  const [first, last] = [stored[0].ts, stored[stored.length - 1].ts];
  await page.waitForFunction(([a, b]) => {
    const bar = document.querySelector('#scrub-bar');
    const r = document.querySelector('#scrub');
    return !bar.hidden && Number(r.min) <= a && Number(r.max) >= b;
  }, [first, last], { timeout: deadline }).catch(() => fail('no camera slider over the range shown'));
  // Between stored frames (every frame up to it is known), not after the last.
  const when = first + (last - first) / 2;
  const expected = stored.filter((f) => f.ts <= when && f.image).pop();
  if (!expected) fail(`no frame with a picture before ${when}`);
  await page.$eval('#scrub', (r, t) => { r.value = t; r.dispatchEvent(new Event('input')); }, when);
  await page.waitForFunction((ts) => {
    const c = document.querySelector('#camera');
    return c.dataset.image === '1' && Number(c.dataset.ts) === ts;
  }, expected.ts, { timeout: deadline }).catch(async () => fail(`scrubbing to ${when} did not show the frame of ${expected.ts}: ${await page.$eval('#camera', (c) => c.dataset.ts)}`));
  console.log(`scrub: the frame of ${expected.ts} shown for ${when.toFixed(2)}`);
  await page.click('#play');
  await page.waitForFunction((ts) => Number(document.querySelector('#camera').dataset.ts) > ts,
    expected.ts, { timeout: deadline }).catch(() => fail('play does not move the camera on'));
  console.log('play: the camera moves on');
  await page.click('button[data-window="60"]');
  await page.waitForFunction(() => document.querySelector('#range').textContent.includes('live'),
    null, { timeout: deadline }).catch(() => fail('Live did not return'));

  // 3. Filter detections by label and score.
  await page.fill('#label-filter', 'forklift');
  await page.fill('#score-filter', '0.5');
  await page.waitForFunction(() => {
    const cells = [...document.querySelectorAll('#detections td.label')];
    return cells.length > 0 && cells.every((td) => td.textContent === 'forklift');
  }, null, { timeout: deadline }).catch(() => fail('the label filter does not leave only forklifts'));
  const scores = await page.$$eval('#detections tr', (trs) => trs.map((tr) => Number(tr.cells[3].textContent)));
  if (scores.some((s) => s < 0.5)) fail(`a detection under the minimum score is listed: ${scores}`);
  await page.waitForFunction(() => {
    const labels = JSON.parse(document.querySelector('#camera').dataset.labels || '[]');
    return labels.every((l) => l === 'forklift');
  }, null, { timeout: deadline }).catch(() => fail('the camera still draws other labels'));
  await page.screenshot({ path: `${out}/dashboard-device.png`, fullPage: true });

  // 4. CSV of what is on screen.
  const [download] = await Promise.all([page.waitForEvent('download', { timeout: deadline }), page.click('#csv')]);
  const csv = readFileSync(await download.path(), 'utf8').trim().split('\n');
  if (csv[0] !== 'ts,recv_ts,device,stream,field,value') fail(`CSV header: ${csv[0]}`);
  if (csv.length < 10 || !csv.slice(1).every((l) => l.split(',')[2] === 'robot-1')) fail(`CSV rows: ${csv.length}`);
  console.log(`csv: ${csv.length - 1} rows`);

  // 5. Markup in a label is text.
  await page.fill('#label-filter', '');
  await page.fill('#score-filter', '0');
  await page.evaluate(() => { location.hash = '#/d/intruder'; });
  await page.waitForFunction((labels) => {
    const cells = [...document.querySelectorAll('#detections td.label')].map((td) => td.textContent);
    return labels.every((l) => cells.includes(l));
  }, evil, { timeout: deadline }).catch(() => fail('the markup labels are not listed as text'));
  const pwned = await page.evaluate(() => window.__pwned);
  const scripts = await page.$$eval('script', (s) => s.length);
  const images = await page.$$eval('img', (s) => s.length);
  if (pwned !== undefined || scripts !== 1 || images !== 0) fail(`markup ran: pwned=${pwned} scripts=${scripts} images=${images}`);
  console.log('markup: shown as text, nothing ran');

  // 5b. A page of another site, even one that knows the address and the token, cannot write:
  // the browser's drive-by POST (no-cors, text/plain, Origin of that page) is refused.
  const other = await browser.newPage();
  await other.setContent('<p>another site</p>');
  await other.evaluate(async (url) => {
    try {
      await fetch(url, { method: 'POST', mode: 'no-cors', body: '{"stream":"s","values":{"v":1}}\n' });
    } catch { /* refused or blocked: either way, nothing is written */ }
  }, api('/api/ingest?device=drive-by').toString());
  await other.close();
  const listed = await (await fetch(api('/api/devices'))).json();
  if (listed.devices.some((d) => d.name === 'drive-by')) fail('a page of another site wrote a reading');
  console.log('cross-site: a drive-by POST from another page wrote nothing');

  // 5c. A robot whose clock is an hour ahead is shown at the right time: its readings fall in
  // the live window (they would be an hour to its right without the time exchange), and the
  // fleet view shows its offset.
  if (!ingest) fail('the hub printed no ingest endpoint');
  const late = spawn(bin, ['simulate', ingest, '--devices', '1', '--prefix', 'late', '--rate', '20',
    '--camera-fps', '1', '--clock-offset', '3600', '--duration', '60'], { stdio: 'ignore' });
  try {
    await page.evaluate(() => { location.hash = '#/d/late-1'; });
    await page.waitForFunction(() => Number(document.querySelector('canvas.chart[data-stream="imu"]')?.dataset.points) > 10,
      null, { timeout: deadline }).catch(() => fail('the robot an hour ahead is not in the live window'));
    await page.evaluate(() => { location.hash = '#/'; });
    await page.waitForFunction(() => /^−(3599\.9[5-9]\d|3600\.0[0-4]\d) s/.test(document.querySelector('#fleet tr[data-device="late-1"] td.clock')?.textContent || ''),
      null, { timeout: deadline }).catch(async () => fail(`late-1's offset not shown: ${await page.$eval('#fleet', (t) => t.textContent)}`));
    console.log(`clock: late-1 (an hour ahead) plotted live; fleet view: ${await page.$eval('#fleet tr[data-device="late-1"] td.clock', (td) => td.textContent)}`);
  } finally {
    late.kill('SIGTERM');
  }

  // 6. Latency: hub receive → browser, on a device view with its plots live.
  await page.evaluate(() => {
    location.hash = '#/d/robot-2';
    window.socketeerLatency.length = 0;
    window.socketeerFrameLatency.length = 0;
  });
  await page.waitForSelector('canvas.chart[data-stream="imu"][data-points]', { timeout: deadline });
  // Frames the page paints meanwhile, and the longest gap between two: smoothness.
  await page.evaluate(() => {
    const frames = window.socketeerFrames = { count: 0, worst: 0, last: performance.now() };
    const tick = (t) => { frames.count++; frames.worst = Math.max(frames.worst, t - frames.last); frames.last = t; requestAnimationFrame(tick); };
    requestAnimationFrame(tick);
  });
  await page.waitForTimeout(latencySecs * 1000); // the measuring window, not a synchronisation
  const frames = await page.evaluate(() => window.socketeerFrames);
  const lat = (await page.evaluate(() => window.socketeerLatency)).map((s) => s * 1000).sort((a, b) => a - b);
  if (lat.length < 100) fail(`only ${lat.length} live events in ${latencySecs} s`);
  const pct = (p) => lat[Math.min(lat.length - 1, Math.floor(lat.length * p))].toFixed(1);
  console.log(`FIGURE dashboard_events=${lat.length} in ${latencySecs} s (${robots} robots at ${rate} Hz)`);
  console.log(`FIGURE dashboard_latency_p50=${pct(0.5)} ms`);
  console.log(`FIGURE dashboard_latency_p99=${pct(0.99)} ms`);
  console.log(`FIGURE dashboard_latency_max=${lat[lat.length - 1].toFixed(1)} ms`);
  // Camera pictures: hub receive → drawn (fetched by the page, the newest only, as they come).
  const flat = (await page.evaluate(() => window.socketeerFrameLatency)).map((s) => s * 1000).sort((a, b) => a - b);
  if (!flat.length) fail(`no live camera picture drawn in ${latencySecs} s`);
  const fpct = (p) => flat[Math.min(flat.length - 1, Math.floor(flat.length * p))].toFixed(1);
  console.log(`FIGURE dashboard_pictures=${flat.length} in ${latencySecs} s (one robot's camera at ${cameraFps} frames/s, ${robots} robots)`);
  console.log(`FIGURE dashboard_picture_latency_p50=${fpct(0.5)} ms p99=${fpct(0.99)} ms`);
  console.log(`FIGURE dashboard_fps=${(frames.count / latencySecs).toFixed(1)} (longest frame ${frames.worst.toFixed(1)} ms)`);
  if (errors.length) fail(`page errors: ${errors.join('; ')}`);
  console.log('dashboard test: ok');
} finally {
  if (browser) await browser.close();
  // Stop the hub and wait for it: it drains, commits, and removes its demo database.
  const exited = new Promise((resolve) => hub.on('exit', resolve));
  hub.kill('SIGTERM');
  await Promise.race([exited, new Promise((resolve) => setTimeout(resolve, deadline))]);
}
