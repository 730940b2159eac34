// socketeer hub dashboard: plain JavaScript, no build step, served from the binary.
// Everything a device sends (names, stream and field names, labels) reaches the page only as
// text nodes or canvas text, never as HTML; the Content-Security-Policy forbids inline script.
'use strict';

const token = new URLSearchParams(location.search).get('token');
const COLORS = ['#58a6ff', '#3fb950', '#d29922', '#f778ba', '#a371f7', '#39c5cf', '#ff7b72', '#e3b341'];
const WINDOWS = [['1 min', 60], ['5 min', 300], ['15 min', 900], ['1 h', 3600], ['6 h', 21600], ['24 h', 86400]];
const MAX_LATENCIES = 200000;
const byName = new Intl.Collator(undefined, { numeric: true });

// Hub-receive → browser latency of every live event (seconds), for the browser test.
window.socketeerLatency = [];
// Hub-receive → camera picture drawn (seconds), live frames only, for the browser test.
window.socketeerFrameLatency = [];

// ---- helpers ----------------------------------------------------------------------------

function url(path, query = {}) {
  const u = new URL(path, location.origin);
  for (const [k, v] of Object.entries(query)) {
    if (v !== undefined && v !== null && v !== '') u.searchParams.set(k, v);
  }
  if (token) u.searchParams.set('token', token);
  return u;
}

async function getJSON(path, query) {
  const response = await fetch(url(path, query));
  if (!response.ok) throw new Error(`${path}: ${response.status} ${await response.text()}`);
  return response.json();
}

// An element with attributes and children; strings become text nodes (never HTML).
function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === 'class') node.className = v;
    else if (k === 'style') node.style.cssText = v;
    else if (k.startsWith('on')) node.addEventListener(k.slice(2), v);
    else if (k === 'dataset') Object.assign(node.dataset, v);
    else node.setAttribute(k, v);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

const now = () => Date.now() / 1000;

function ago(ts) {
  const s = Math.max(0, now() - ts);
  if (s < 60) return `${s.toFixed(1)} s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
  return new Date(ts * 1000).toLocaleString();
}

function clock(ts, span) {
  const d = new Date(ts * 1000);
  return span > 86400 ? d.toLocaleString() : d.toLocaleTimeString();
}

function number(v) {
  if (!Number.isFinite(v)) return String(v);
  const a = Math.abs(v);
  if (a !== 0 && (a >= 1e6 || a < 1e-3)) return v.toExponential(3);
  return String(Math.round(v * 1000) / 1000);
}

function localInput(ts) {
  const d = new Date(ts * 1000 - new Date().getTimezoneOffset() * 60000);
  return d.toISOString().slice(0, 19);
}

// ---- the live feed ----------------------------------------------------------------------

const listeners = new Set();
let source = null;

function connectFeed() {
  const feed = document.getElementById('feed');
  source = new EventSource(url('/api/live'));
  source.onopen = () => { feed.textContent = 'live'; feed.className = 'feed on'; };
  source.onerror = () => { feed.textContent = 'reconnecting…'; feed.className = 'feed off'; };
  source.onmessage = (message) => {
    let event;
    try { event = JSON.parse(message.data); } catch { return; }
    const lat = window.socketeerLatency;
    if (lat.length < MAX_LATENCIES) lat.push(now() - event.recv_ts);
    for (const listener of listeners) listener(event);
  };
}

// ---- routing ------------------------------------------------------------------------------

let current = null; // the view shown: { stop() }

function route() {
  if (current) current.stop();
  const view = document.getElementById('view');
  view.replaceChildren();
  const crumb = document.getElementById('crumb');
  const match = location.hash.match(/^#\/d\/(.+)$/);
  if (match) {
    const device = decodeURIComponent(match[1]);
    crumb.replaceChildren('/ ', device);
    current = deviceView(view, device);
  } else {
    crumb.replaceChildren();
    current = fleetView(view);
  }
}

// ---- fleet ----------------------------------------------------------------------------------

// A clock offset for people: "+3600.002 s", "−12 ms".
function clockOffset(s) {
  const sign = s < 0 ? '−' : '+';
  const a = Math.abs(s);
  return a >= 1 ? `${sign}${a.toFixed(3)} s` : `${sign}${(a * 1000).toFixed(1)} ms`;
}

function fleetView(root) {
  const body = el('tbody');
  const table = el('table', { id: 'fleet' },
    el('thead', {}, el('tr', {},
      el('th', {}, 'device'), el('th', {}, 'status'), el('th', {}, 'last seen'),
      el('th', { class: 'num' }, 'records/s'), el('th', { class: 'num' }, 'records'),
      el('th', { class: 'num' }, 'auth failures'), el('th', { class: 'num' }, 'series'),
      el('th', { class: 'num', title: "what the hub adds to the device's times (its clock against the hub's), and the round trip" }, 'clock'))),
    body);
  const note = el('p', { class: 'empty' }, 'Loading…');
  root.append(el('div', { class: 'panel' }, el('h2', {}, 'Fleet'), table, note));
  const lastSeen = new Map(); // device -> receive time of its latest live event
  const onEvent = (event) => lastSeen.set(event.device, event.recv_ts);
  listeners.add(onEvent);
  let devices = [];

  function render() {
    body.replaceChildren(...devices.map((d) => {
      const seen = Math.max(d.last_seen, lastSeen.get(d.name) || 0);
      const online = d.online || now() - seen < 10;
      return el('tr', { dataset: { device: d.name } },
        el('td', {}, el('a', { href: `#/d/${encodeURIComponent(d.name)}` }, d.name)),
        el('td', { class: `status ${online ? 'online' : 'offline'}`, title: d.node ? `connected to hub node ${d.node}` : '' },
          online ? 'online' : 'offline', d.node ? el('span', { class: 'node' }, ` · ${d.node}`) : ''),
        el('td', {}, ago(seen)),
        el('td', { class: 'num' }, d.rate.toFixed(1)),
        el('td', { class: 'num' }, d.records),
        el('td', { class: `num${d.auth_failures ? ' bad' : ''}` }, d.auth_failures),
        el('td', { class: 'num' }, d.series),
        el('td', { class: 'num clock', title: d.clock ? `from ${d.clock.exchanges} time exchanges` : 'no time exchange lately' },
          d.clock ? `${clockOffset(d.clock.offset)} · ${(d.clock.rtt * 1000).toFixed(1)} ms` : '–'));
    }));
    note.textContent = devices.length ? '' : 'No device has sent anything yet.';
  }

  async function poll() {
    try {
      devices = (await getJSON('/api/devices')).devices.sort((a, b) => byName.compare(a.name, b.name));
      render();
    } catch (err) {
      note.textContent = String(err);
    }
  }
  poll();
  const timer = setInterval(poll, 2000);
  const ticker = setInterval(render, 1000);
  return { stop() { clearInterval(timer); clearInterval(ticker); listeners.delete(onEvent); } };
}

// ---- charts ---------------------------------------------------------------------------------

// One canvas per stream, every field a line; bucketed history draws its min..max band.
class Chart {
  constructor(stream, fields, units, onZoom) {
    this.stream = stream;
    this.fields = fields;
    this.data = new Map(fields.map((f) => [f, []])); // field -> [[ts, v, lo, hi], ...]
    this.canvas = el('canvas', { class: 'chart', dataset: { stream } });
    this.legend = el('div', { class: 'legend' });
    this.setUnits(units);
    this.node = el('div', { class: 'panel' }, el('h3', {}, stream), this.legend, this.canvas);
    this.range = [0, 1];
    this.drag = null;
    this.canvas.addEventListener('mousedown', (e) => { this.drag = [e.offsetX, e.offsetX]; });
    this.canvas.addEventListener('mousemove', (e) => { if (this.drag) { this.drag[1] = e.offsetX; this.draw(); } });
    window.addEventListener('mouseup', () => {
      if (!this.drag) return;
      const [a, b] = this.drag.sort((x, y) => x - y);
      this.drag = null;
      if (b - a > 4) onZoom(this.timeAt(a), this.timeAt(b)); else this.draw();
    });
    this.points = 0; // total points drawn, for tests
  }

  // Units by field, as the robot sent them: in the legend and on the scales.
  setUnits(units) {
    this.units = units || {};
    this.legend.replaceChildren(...this.fields.map((f, i) =>
      el('span', { style: `--c: ${COLORS[i % COLORS.length]}` }, f,
        this.units[f] ? el('small', { class: 'unit' }, ` ${this.units[f]}`) : null)));
  }

  timeAt(x) {
    const [t0, t1] = this.range;
    return t0 + (x / this.canvas.clientWidth) * (t1 - t0);
  }

  add(field, point) {
    const series = this.data.get(field);
    if (!series) return;
    // Keep time order: a late point goes into its place.
    if (series.length && series[series.length - 1][0] > point[0]) {
      let i = series.length - 1;
      while (i > 0 && series[i - 1][0] > point[0]) i--;
      series.splice(i, 0, point);
    } else series.push(point);
  }

  trim(before) {
    for (const series of this.data.values()) {
      let i = 0;
      while (i < series.length && series[i][0] < before) i++;
      if (i) series.splice(0, i);
    }
  }

  draw() {
    const c = this.canvas;
    const ratio = window.devicePixelRatio || 1;
    const w = c.clientWidth, h = c.clientHeight;
    if (!w || !h) return;
    if (c.width !== Math.round(w * ratio)) { c.width = Math.round(w * ratio); c.height = Math.round(h * ratio); }
    const g = c.getContext('2d');
    g.setTransform(ratio, 0, 0, ratio, 0, 0);
    g.clearRect(0, 0, w, h);
    const [t0, t1] = this.range;
    // Each field's range in view; fields of like ranges share a scale, others get their own
    // (an IMU's az near 9.8 beside ax near 0.1, a battery's percent beside its volts): no
    // field is drawn flatter than a quarter of the plot by another's range.
    const ranges = new Map();
    for (const [field, series] of this.data) {
      let lo = Infinity, hi = -Infinity;
      for (const p of series) {
        if (p[0] < t0 || p[0] > t1) continue;
        if (p[2] < lo) lo = p[2];
        if (p[3] > hi) hi = p[3];
      }
      if (Number.isFinite(lo)) ranges.set(field, [lo, hi]);
    }
    const scales = [];
    const spanOf = (lo, hi) => Math.max(hi - lo, Math.abs(hi) * 1e-6, 1e-9);
    for (const field of [...ranges.keys()].sort((a, b) => spanOf(...ranges.get(a)) - spanOf(...ranges.get(b)))) {
      const [flo, fhi] = ranges.get(field);
      const scale = scales.find((sc) => {
        const span = Math.max(sc.hi, fhi) - Math.min(sc.lo, flo);
        return span <= 4 * spanOf(flo, fhi) && span <= 4 * spanOf(sc.lo, sc.hi);
      });
      if (scale) { scale.lo = Math.min(scale.lo, flo); scale.hi = Math.max(scale.hi, fhi); scale.fields.push(field); }
      else scales.push({ lo: flo, hi: fhi, fields: [field] });
    }
    g.font = '11px system-ui, sans-serif';
    // A scale's ends carry its unit when all its fields share one.
    for (const sc of scales) {
      const unit = this.units[sc.fields[0]];
      sc.unit = unit && sc.fields.every((f) => this.units[f] === unit) ? ` ${unit}` : '';
    }
    const widest = Math.max(0, ...scales.map((sc) => Math.max(
      g.measureText(number(sc.hi) + sc.unit).width, g.measureText(number(sc.lo) + sc.unit).width)));
    const pad = { l: Math.max(56, Math.ceil(widest) + 10), r: 8, t: 6, b: 18 };
    g.fillStyle = '#8896a4';
    g.strokeStyle = '#2a3642';
    g.strokeRect(pad.l, pad.t, w - pad.l - pad.r, h - pad.t - pad.b);
    g.textBaseline = 'alphabetic';
    g.fillText(clock(t0, t1 - t0), pad.l, h - 4);
    const right = clock(t1, t1 - t0);
    g.fillText(right, w - pad.r - g.measureText(right).width, h - 4);
    if (!scales.length) {
      g.fillText('no data in this range', pad.l + 8, pad.t + 16);
      this.points = 0;
      return;
    }
    const scaleOf = new Map();
    scales.forEach((sc, i) => {
      if (sc.hi === sc.lo) { sc.hi += 1; sc.lo -= 1; }
      const span = sc.hi - sc.lo;
      sc.hi += span * 0.05; sc.lo -= span * 0.05;
      for (const field of sc.fields) scaleOf.set(field, sc);
      // Each scale's ends in the colour of its first field (one scale: the axis's grey).
      g.fillStyle = scales.length > 1 ? COLORS[this.fields.indexOf(sc.fields[0]) % COLORS.length] : '#8896a4';
      g.fillText(number(sc.hi) + sc.unit, 4, pad.t + 10 + i * 12);
      g.fillText(number(sc.lo) + sc.unit, 4, h - pad.b - i * 12);
    });
    const X = (t) => pad.l + ((t - t0) / (t1 - t0)) * (w - pad.l - pad.r);
    let Y = null;
    const extents = {};
    g.save();
    g.beginPath();
    g.rect(pad.l, pad.t, w - pad.l - pad.r, h - pad.t - pad.b);
    g.clip();
    let drawn = 0;
    this.fields.forEach((field, i) => {
      const series = this.data.get(field);
      const color = COLORS[i % COLORS.length];
      const sc = scaleOf.get(field);
      if (!sc) return;
      Y = (v) => pad.t + (1 - (v - sc.lo) / (sc.hi - sc.lo)) * (h - pad.t - pad.b);
      const [flo, fhi] = ranges.get(field);
      extents[field] = Math.round(Y(flo) - Y(fhi));
      g.strokeStyle = color;
      g.globalAlpha = 0.25;
      g.beginPath();
      for (const p of series) {
        if (p[2] !== p[3]) { g.moveTo(X(p[0]), Y(p[2])); g.lineTo(X(p[0]), Y(p[3])); }
      }
      g.stroke();
      g.globalAlpha = 1;
      g.lineWidth = 1.25;
      g.beginPath();
      // At most four path points per pixel column (first, min, max, last): thousands of
      // points in a few hundred pixels cost the canvas no more than the pixels, and every
      // spike still shows.
      let column = null, first = 0, min = 0, max = 0, last = 0, started = false;
      const flush = () => {
        if (column === null) return;
        if (!started) { g.moveTo(column, first); started = true; } else g.lineTo(column, first);
        if (min !== max) { g.lineTo(column, min); g.lineTo(column, max); }
        g.lineTo(column, last);
      };
      for (const p of series) {
        if (p[0] < t0 - (t1 - t0) || p[0] > t1 + (t1 - t0)) continue;
        const x = Math.round(X(p[0])), y = Y(p[1]);
        drawn++;
        if (x === column) {
          if (y < min) min = y;
          if (y > max) max = y;
          last = y;
          continue;
        }
        flush();
        column = x; first = min = max = last = y;
      }
      flush();
      g.stroke();
      // The newest point as a dot: a series of one point still shows.
      const head = series[series.length - 1];
      if (head && head[0] >= t0 && head[0] <= t1) {
        g.fillStyle = color;
        g.fillRect(X(head[0]) - 2, Y(head[1]) - 2, 4, 4);
      }
    });
    g.restore();
    if (this.drag) {
      g.fillStyle = 'rgba(88,166,255,0.2)';
      const [a, b] = [...this.drag].sort((x, y) => x - y);
      g.fillRect(a, pad.t, b - a, h - pad.t - pad.b);
    }
    this.points = drawn;
    c.dataset.points = drawn;
    // How tall each field's trace is, in pixels, and which fields share a scale (for tests).
    c.dataset.extents = JSON.stringify(extents);
    c.dataset.scales = JSON.stringify(scales.map((sc) => sc.fields));
    c.dataset.units = JSON.stringify(scales.map((sc) => sc.unit.trim()));
  }
}

// ---- the camera and its detections ----------------------------------------------------------

function drawFrame(canvas, frame, matches) {
  const ratio = window.devicePixelRatio || 1;
  const w = canvas.clientWidth || 640, h = canvas.clientHeight || 480;
  canvas.width = Math.round(w * ratio); canvas.height = Math.round(h * ratio);
  const g = canvas.getContext('2d');
  g.setTransform(ratio, 0, 0, ratio, 0, 0);
  g.fillStyle = '#0b0f14';
  g.fillRect(0, 0, w, h);
  if (!frame) {
    g.fillStyle = '#8896a4';
    g.fillText('no frame yet', 12, 20);
    canvas.dataset.boxes = 0;
    return;
  }
  const s = Math.min(w / frame.frame.w, h / frame.frame.h);
  const ox = (w - frame.frame.w * s) / 2, oy = (h - frame.frame.h * s) / 2;
  g.strokeStyle = '#2a3642';
  g.fillStyle = '#141b22';
  g.fillRect(ox, oy, frame.frame.w * s, frame.frame.h * s);
  // The picture the robot saw, under its boxes (boxes are in the frame's pixels).
  if (frame.bitmap) g.drawImage(frame.bitmap, ox, oy, frame.frame.w * s, frame.frame.h * s);
  canvas.dataset.image = frame.bitmap ? '1' : '0';
  canvas.dataset.ts = frame.ts;
  g.strokeRect(ox, oy, frame.frame.w * s, frame.frame.h * s);
  g.font = '12px system-ui, sans-serif';
  const labels = [];
  frame.detections.filter(matches).forEach((d) => {
    const color = COLORS[[...d.label].reduce((a, ch) => a + ch.charCodeAt(0), 0) % COLORS.length];
    const [x, y, bw, bh] = d.box;
    g.strokeStyle = color;
    g.lineWidth = 2;
    g.strokeRect(ox + x * s, oy + y * s, bw * s, bh * s);
    const text = `${d.label} ${d.score.toFixed(2)}`; // canvas text: never markup
    const tw = g.measureText(text).width + 6;
    g.fillStyle = color;
    g.fillRect(ox + x * s, oy + y * s - 16, tw, 16);
    g.fillStyle = '#0b0f14';
    g.fillText(text, ox + x * s + 3, oy + y * s - 4);
    labels.push(d.label);
  });
  canvas.dataset.boxes = labels.length;
  canvas.dataset.labels = JSON.stringify(labels);
  // Where the frame and its boxes are on the canvas (CSS pixels), for tests and tools.
  canvas.dataset.geometry = JSON.stringify({ ox, oy, s, ratio, boxes: frame.detections.filter(matches).map((d) => d.box) });
  g.fillStyle = '#8896a4';
  g.fillText(`${frame.stream} · ${clock(frame.ts, 0)}`, 8, h - 8);
}

// Loads the images of frames, latest only: one request at a time, and when it ends only the
// newest frame asked for meanwhile is fetched; older ones are skipped, never queued.
function imageLoader(device, shown) {
  let busy = false;
  let wanted = null;
  async function fetchOne(frame) {
    const response = await fetch(url('/api/frame', { device, stream: frame.stream, at: frame.ts }));
    if (!response.ok) return null;
    return createImageBitmap(await response.blob());
  }
  async function pump() {
    if (busy || !wanted) return;
    busy = true;
    const frame = wanted;
    wanted = null;
    try {
      const bitmap = await fetchOne(frame);
      if (bitmap) shown({ ...frame, bitmap });
    } catch (err) {
      // A frame that cannot be fetched is skipped; the next one is tried.
    }
    busy = false;
    pump();
  }
  return (frame) => { wanted = frame; pump(); };
}

// ---- one device -------------------------------------------------------------------------------

function deviceView(root, device) {
  const state = {
    live: true, window: 60, from: 0, to: 0, charts: new Map(), latest: new Map(), units: new Map(),
    frame: null, frameDirty: false, label: '', minScore: 0, stopped: false, generation: 0,
    timeline: [], detectionsAt: new Map(), playing: false,
    reloading: false,
  };
  let dirtyValues = false;
  const status = el('span', { class: 'status offline', id: 'device-status' }, 'offline');
  const rangeText = el('span', { class: 'range', id: 'range' });
  const windowButtons = WINDOWS.map(([name, secs]) =>
    el('button', { dataset: { window: secs }, onclick: () => { state.live = true; state.window = secs; load(); } }, name));
  const fromInput = el('input', { type: 'datetime-local', step: '1', id: 'from' });
  const toInput = el('input', { type: 'datetime-local', step: '1', id: 'to' });
  const csv = el('a', { class: 'button', id: 'csv', download: `${device}.csv`, href: '#' }, 'CSV of this range');
  csv.addEventListener('click', () => { const [f, t] = shown(); csv.href = url('/api/export.csv', { device, from: f, to: t }); });
  const bar = el('div', { class: 'bar' },
    el('span', {}, 'live: '), windowButtons,
    el('span', {}, ' history: '), fromInput, toInput,
    el('button', { onclick: () => showRange(new Date(fromInput.value) / 1000, new Date(toInput.value) / 1000) }, 'show'),
    csv, rangeText);
  const charts = el('div', { class: 'grid', id: 'charts' });
  const values = el('tbody');
  const camera = el('canvas', { class: 'camera', id: 'camera' });
  const scrub = el('input', { type: 'range', id: 'scrub', step: 0.01 });
  const scrubTime = el('span', { class: 'range', id: 'scrub-time' });
  const play = el('button', { id: 'play' }, '▶');
  const speed = el('select', { id: 'speed' }, ...[1, 4, 16, 64].map((x) => el('option', { value: x }, `${x}×`)));
  const scrubBar = el('div', { class: 'bar', id: 'scrub-bar', hidden: true }, play, speed, scrub, scrubTime);
  scrub.addEventListener('input', () => showAt(Number(scrub.value)));
  play.addEventListener('click', () => {
    state.playing = !state.playing;
    play.textContent = state.playing ? '⏸' : '▶';
    if (state.playing) {
      if (Number(scrub.value) >= Number(scrub.max)) scrub.value = scrub.min;
      playStep(null);
    }
  });
  const labelInput = el('input', { type: 'text', placeholder: 'label', id: 'label-filter', size: 12 });
  const scoreInput = el('input', { type: 'number', min: 0, max: 1, step: 0.05, value: 0, id: 'score-filter' });
  const list = el('tbody', { id: 'detections' });
  const refilter = () => {
    state.label = labelInput.value.trim();
    state.minScore = Number(scoreInput.value) || 0;
    loadDetections();
    drawFrame(camera, state.frame, matches);
  };
  labelInput.addEventListener('input', refilter);
  scoreInput.addEventListener('input', refilter);
  // A frame with an image is shown once its picture has arrived, with its own boxes.
  const showImage = imageLoader(device, (frame) => {
    if (state.stopped || (state.live && state.frame && state.frame.ts > frame.ts)) return;
    state.frame = frame;
    state.frameDirty = true;
    if (state.live && frame.recv_ts && window.socketeerFrameLatency.length < MAX_LATENCIES) {
      window.socketeerFrameLatency.push(Date.now() / 1000 - frame.recv_ts);
    }
    if (!state.live) drawFrame(camera, state.frame, matches);
  });
  const showFrame = (frame) => {
    if (frame.image) showImage(frame);
    else { state.frame = frame; state.frameDirty = true; }
  };
  root.append(
    el('div', { class: 'panel' }, el('h2', {}, device, ' ', status), bar),
    charts,
    el('div', { class: 'columns' },
      el('div', { class: 'panel' }, el('h3', {}, 'camera'), camera, scrubBar),
      el('div', { class: 'panel' },
        el('h3', {}, 'detections'),
        el('div', { class: 'bar' }, labelInput, el('span', {}, 'score ≥'), scoreInput),
        el('div', { class: 'scroll' }, el('table', {},
          el('thead', {}, el('tr', {}, el('th', {}, 'time'), el('th', {}, 'stream'), el('th', {}, 'label'),
            el('th', { class: 'num' }, 'score'), el('th', {}, 'box'))), list)))),
    el('div', { class: 'panel' }, el('h3', {}, 'latest values'),
      el('table', {}, el('thead', {}, el('tr', {}, el('th', {}, 'stream'), el('th', {}, 'field'),
        el('th', { class: 'num' }, 'value'), el('th', {}, 'time'))), values)));

  function matches(d) {
    return d.score >= state.minScore && (!state.label || d.label.includes(state.label));
  }

  function shown() {
    return state.live ? [now() - state.window, now()] : [state.from, state.to];
  }

  function showRange(from, to) {
    if (!(Number.isFinite(from) && Number.isFinite(to) && from < to)) return;
    state.live = false; state.from = from; state.to = to;
    load();
  }

  // History's camera: the frame at or before a chosen time, and play/pause at a speed
  // through the range.
  async function loadTimeline(from, to) {
    const [frames, found] = await Promise.all([
      getJSON('/api/frames', { device, from, to }).catch(() => null),
      getJSON('/api/detections', { device, from, to, limit: 1000 }).catch(() => null),
    ]);
    state.timeline = frames ? frames.frames : [];
    state.detectionsAt = new Map((found ? found.frames : []).map((f) => [`${f.stream}\u0000${f.ts}`, f.detections]));
    scrub.min = from; scrub.max = to; scrub.value = to;
    scrubBar.hidden = state.timeline.length === 0;
    showAt(to);
  }

  function showAt(t) {
    const list = state.timeline;
    let lo = 0, hi = list.length - 1, at = -1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      if (list[mid].ts <= t) { at = mid; lo = mid + 1; } else hi = mid - 1;
    }
    scrubTime.textContent = clock(t, 0);
    if (at < 0) return;
    const f = list[at];
    const frame = {
      stream: f.stream, ts: f.ts, frame: { w: f.w, h: f.h },
      detections: state.detectionsAt.get(`${f.stream}\u0000${f.ts}`) || [], image: !!f.image,
    };
    if (frame.image) showImage(frame);
    else { state.frame = frame; drawFrame(camera, frame, matches); }
  }

  function playStep(last) {
    if (!state.playing || state.live || state.stopped) return;
    requestAnimationFrame((now) => {
      const dt = last === null ? 0 : (now - last) / 1000;
      const t = Math.min(Number(scrub.value) + dt * Number(speed.value), Number(scrub.max));
      scrub.value = t;
      showAt(t);
      if (t >= Number(scrub.max)) { state.playing = false; play.textContent = '▶'; return; }
      playStep(now);
    });
  }

  async function load() {
    const generation = ++state.generation;
    for (const b of windowButtons) b.classList.toggle('active', state.live && Number(b.dataset.window) === state.window);
    const [from, to] = shown();
    fromInput.value = localInput(from); toInput.value = localInput(to);
    rangeText.textContent = state.live ? `last ${WINDOWS.find(([, s]) => s === state.window)[0]}, live` : `${new Date(from * 1000).toLocaleString()} – ${new Date(to * 1000).toLocaleString()}`;
    const streams = await getJSON('/api/streams', { device }).catch(() => ({ values: [], frames: [] }));
    if (generation !== state.generation) return;
    // History first, then the live tail joins it (events older than the last stored point
    // are already in the history).
    const built = new Map();
    learnUnits(streams.values);
    await Promise.all(streams.values.map(async ({ stream, fields }) => {
      built.set(stream, await buildChart(stream, fields, from, to));
    }));
    if (generation !== state.generation) return;
    // Latest values start from the newest stored point of each field.
    for (const [stream, chart] of built) {
      for (const [field, series] of chart.data) {
        const last = series[series.length - 1];
        const key = `${stream}\u0000${field}`;
        if (last && !(state.latest.get(key)?.[3] >= last[0])) state.latest.set(key, [stream, field, last[1], last[0]]);
      }
    }
    // Text states (a mode, a fix type) are shown as text among the latest values.
    for (const { stream, field, ts, text } of streams.texts || []) {
      const key = `${stream}\u0000${field}`;
      if (text != null && !(state.latest.get(key)?.[3] >= ts)) state.latest.set(key, [stream, field, text, ts]);
    }
    dirtyValues = true;
    state.charts = built;
    charts.replaceChildren(...[...built.values()].map((c) => c.node));
    for (const c of built.values()) c.draw();
    await loadDetections();
    if (state.live) { scrubBar.hidden = true; state.playing = false; play.textContent = '▶'; }
    else await loadTimeline(from, to);
  }

  // Units as the robot sent them, by stream and field (from /api/streams and live events).
  function learnUnits(list) {
    for (const { stream, units } of list) {
      for (const [field, unit] of Object.entries(units || {})) state.units.set(`${stream}\u0000${field}`, unit);
    }
  }
  const unitsOf = (stream, fields) =>
    Object.fromEntries(fields.map((f) => [f, state.units.get(`${stream}\u0000${f}`)]).filter(([, u]) => u));

  // One chart with its stored history for [from, to].
  async function buildChart(stream, fields, from, to) {
    const width = Math.max(200, Math.min(2000, Math.round((charts.clientWidth || 1000) / 2)));
    const chart = new Chart(stream, fields, unitsOf(stream, fields), (a, b) => showRange(a, b));
    chart.range = [from, to];
    await Promise.all(fields.map(async (field) => {
      const s = await getJSON('/api/series', { device, stream, field, from, to, points: width }).catch(() => null);
      if (!s) return;
      for (const p of s.points) chart.add(field, s.raw ? [p[0], p[1], p[1], p[1]] : [p[0] + s.bucket_secs / 2, p[3], p[1], p[2]]);
    }));
    return chart;
  }

  // A stream appeared while live: add its chart and leave the others alone (rebuilding them
  // would drop their points and break a drag in progress).
  async function addNewStreams() {
    const generation = state.generation;
    const streams = await getJSON('/api/streams', { device }).catch(() => null);
    if (!streams || generation !== state.generation || !state.live) return;
    learnUnits(streams.values);
    const [from, to] = shown();
    const added = await Promise.all(streams.values.filter(({ stream }) => !state.charts.has(stream))
      .map(({ stream, fields }) => buildChart(stream, fields, from, to)));
    if (generation !== state.generation || !state.live) return;
    for (const chart of added) {
      if (state.charts.has(chart.stream)) continue;
      state.charts.set(chart.stream, chart);
      charts.append(chart.node);
      chart.draw();
    }
    dirtyValues = true;
  }

  async function loadDetections() {
    const [from, to] = shown();
    const result = await getJSON('/api/detections', { device, label: state.label, min_score: state.minScore || undefined, from, to, limit: 100 }).catch(() => null);
    if (!result) return;
    // A row's click shows its frame (its picture, if it has one, with its boxes).
    const pick = (f) => () => {
      state.live = false;
      showImage({ stream: f.stream, ts: f.ts, frame: f.frame, detections: f.detections, image: true });
      state.frame = { stream: f.stream, ts: f.ts, frame: f.frame, detections: f.detections };
      drawFrame(camera, state.frame, matches);
    };
    list.replaceChildren(...result.frames.flatMap((f) => f.detections.filter(matches).map((d) =>
      el('tr', { class: 'pick', onclick: pick(f) }, el('td', {}, clock(f.ts, 0)), el('td', {}, f.stream), el('td', { class: 'label' }, d.label),
        el('td', { class: 'num' }, d.score.toFixed(2)), el('td', {}, d.box.map((v) => Math.round(v)).join(' '))))));
    if (!state.live && result.frames.length) {
      // In history, the newest frame of the range (its picture follows); live, the newest
      // frame received.
      const f = result.frames[0];
      state.frame = { stream: f.stream, ts: f.ts, frame: f.frame, detections: f.detections };
      showImage({ ...state.frame, image: true });
    }
    drawFrame(camera, state.frame, matches);
  }

  // Live events for this device.
  const onEvent = (event) => {
    if (event.device !== device) return;
    status.textContent = 'online'; status.className = 'status online';
    if (event.units) {
      const before = JSON.stringify(unitsOf(event.stream, Object.keys(event.units)));
      learnUnits([event]);
      const chart = state.charts.get(event.stream);
      if (before !== JSON.stringify(unitsOf(event.stream, Object.keys(event.units)))) {
        if (chart) chart.setUnits(unitsOf(event.stream, chart.fields));
        dirtyValues = true;
      }
    }
    if (event.values) {
      for (const [field, v] of Object.entries(event.values)) state.latest.set(`${event.stream}\u0000${field}`, [event.stream, field, v, event.ts]);
      dirtyValues = true;
      if (state.live) {
        const chart = state.charts.get(event.stream);
        if (chart) for (const [field, v] of Object.entries(event.values)) chart.add(field, [event.ts, v, v, v]);
        // A stream with no chart yet (the device is new, or added one): reload, once a second
        // at most however many events come.
        else if (!state.reloading) { state.reloading = true; setTimeout(() => { state.reloading = false; addNewStreams(); }, 1000); }
      }
    }
    if (event.texts) {
      for (const [field, text] of Object.entries(event.texts)) state.latest.set(`${event.stream}\u0000${field}`, [event.stream, field, text, event.ts]);
      dirtyValues = true;
    }
    if (event.frame && state.live) {
      showFrame({ stream: event.stream, ts: event.ts, recv_ts: event.recv_ts, frame: event.frame, detections: event.detections || [], image: !!event.image });
    }
  };
  listeners.add(onEvent);

  // Draw at the screen's pace, not per event: 20 streams x 50 Hz stays smooth.
  let raf = 0;
  const frameLoop = () => {
    if (state.stopped) return;
    if (state.live) {
      const t = now();
      for (const chart of state.charts.values()) {
        chart.range = [t - state.window, t];
        chart.trim(t - state.window * 1.1);
        chart.draw();
      }
      if (state.frameDirty) { state.frameDirty = false; drawFrame(camera, state.frame, matches); }
    }
    if (dirtyValues) {
      dirtyValues = false;
      const rows = [...state.latest.values()].sort((a, b) => (a[0] + a[1]).localeCompare(b[0] + b[1]));
      values.replaceChildren(...rows.map(([stream, field, v, ts]) =>
        el('tr', {}, el('td', {}, stream), el('td', {}, field), (typeof v === 'string' ? el('td', { class: 'text' }, v)
          : el('td', { class: 'num' }, number(v), state.units.has(`${stream}\u0000${field}`) ? el('small', { class: 'unit' }, ` ${state.units.get(`${stream}\u0000${field}`)}`) : null)),
        el('td', {}, clock(ts, 0)))));
    }
    raf = requestAnimationFrame(frameLoop);
  };
  raf = requestAnimationFrame(frameLoop);
  const detectionTimer = setInterval(() => { if (state.live) loadDetections(); }, 2000);
  const onResize = () => { for (const c of state.charts.values()) c.draw(); };
  window.addEventListener('resize', onResize);
  load();
  return {
    stop() {
      state.stopped = true;
      cancelAnimationFrame(raf);
      clearInterval(detectionTimer);
      listeners.delete(onEvent);
      window.removeEventListener('resize', onResize);
    },
  };
}

window.addEventListener('hashchange', route);
connectFeed();
route();
