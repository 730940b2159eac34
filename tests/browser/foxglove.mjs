// The hub's Foxglove WebSocket against the Foxglove project's own client library
// (@foxglove/ws-protocol), and against hostile clients.
//
//   SOCKETEER_BIN=target/debug/socketeer node tests/browser/foxglove.mjs
//
// Starts `socketeer hub` on free ports, sends a robot's readings and a camera frame (a PNG with
// detections) over the ingest link, and for each subprotocol (foxglove.sdk.v1 and
// foxglove.websocket.v1) connects FoxgloveClient: serverInfo, advertisements of what the store
// holds and of a stream that appears later, subscriptions, and messages decoded and compared
// with what was sent. Then hostile clients: no subprotocol, another site's page, malformed
// JSON, unknown ops, unknown channels, thousands of subscriptions, an oversized message, binary
// messages. Exits non-zero on failure.
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { connect } from 'node:net';
import { deflateSync } from 'node:zlib';
import foxglove from '@foxglove/ws-protocol';
import WebSocket from 'ws';

const { FoxgloveClient } = foxglove;

const bin = process.env.SOCKETEER_BIN || 'target/debug/socketeer';
const deadline = 20000; // per step, ms
const dir = process.env.TMPDIR || '/tmp';
const db = `${dir}/socketeer-foxglove-${process.pid}.db`;

function fail(why) {
  console.error(`foxglove test: FAILED: ${why}`);
  process.exitCode = 1;
  throw new Error(why);
}

function within(what, promise) {
  let timer;
  return Promise.race([
    promise,
    new Promise((_, reject) => { timer = setTimeout(() => reject(new Error(`timed out: ${what}`)), deadline); }),
  ]).finally(() => clearTimeout(timer));
}

// A real PNG of w x h pixels of one colour.
function png(w, h, [r, g, b]) {
  const table = Array.from({ length: 256 }, (_, n) => {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    return c >>> 0;
  });
  const crc = (buf) => { let c = 0xffffffff; for (const x of buf) c = table[(c ^ x) & 0xff] ^ (c >>> 8); return (c ^ 0xffffffff) >>> 0; };
  const chunk = (type, data) => {
    const head = Buffer.alloc(8); head.writeUInt32BE(data.length, 0); head.write(type, 4, 'ascii');
    const tail = Buffer.alloc(4); tail.writeUInt32BE(crc(Buffer.concat([head.subarray(4), data])), 0);
    return Buffer.concat([head, data, tail]);
  };
  const ihdr = Buffer.alloc(13); ihdr.writeUInt32BE(w, 0); ihdr.writeUInt32BE(h, 4); ihdr[8] = 8; ihdr[9] = 2;
  const rows = Buffer.alloc((w * 3 + 1) * h);
  for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) rows.set([r, g, b], y * (w * 3 + 1) + 1 + x * 3);
  return Buffer.concat([Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]), chunk('IHDR', ihdr), chunk('IDAT', deflateSync(rows)), chunk('IEND', Buffer.alloc(0))]);
}

const hub = spawn(bin, ['hub', '--no-auth', '--listen', '127.0.0.1:0', '--http', '127.0.0.1:0', '--no-influx', '--db', db],
  { stdio: ['ignore', 'pipe', 'inherit'] });
// Whatever happens, the hub this started ends with it.
process.on('exit', () => { if (hub.exitCode === null) hub.kill('SIGKILL'); });
process.on('uncaughtException', (e) => { console.error(`foxglove test: FAILED: ${e.stack || e}`); process.exit(1); });
process.on('unhandledRejection', (e) => { console.error(`foxglove test: FAILED: ${e.stack || e}`); process.exit(1); });
const [ingestAddr, httpAddr] = await within('the hub listening', new Promise((resolve, reject) => {
  const found = [];
  createInterface({ input: hub.stdout }).on('line', (line) => {
    const m = line.match(/^listening on (?:tcp|http):\/\/(\S+?)\/?(\s|$)/);
    if (m) found.push(m[1]);
    if (found.length === 2) resolve(found);
  });
  hub.on('exit', (code) => reject(new Error(`the hub exited (${code})`)));
}));

// A robot on the ingest link: lines (and an image's bytes), each acknowledged.
const robot = connect({ host: ingestAddr.split(':')[0], port: Number(ingestAddr.split(':')[1]) });
const acks = [];
let waiting = null;
createInterface({ input: robot }).on('line', (line) => { acks.push(JSON.parse(line)); if (waiting) waiting(); });
async function send({ parts, seq }) {
  for (const p of parts) robot.write(p);
  await within(`ack ${seq}`, new Promise((resolve) => {
    const check = () => { if (acks.some((a) => a.ack === seq)) { waiting = null; resolve(); } else if (acks.some((a) => a.error)) fail(`refused: ${JSON.stringify(acks)}`); };
    waiting = check; check();
  }));
}
robot.write('{"device":"rover"}\n{"session":"fox"}\n');
let seq = 0;
const reading = (ts, ax) => ({ seq: ++seq, parts: [JSON.stringify({ stream: 'imu', ts, seq, values: { ax, pose: { x: 1.5 }, mode: 'RTK' } }) + '\n'] });
const image = png(64, 48, [200, 40, 40]);
const frame = (ts) => ({ seq: ++seq, parts: [JSON.stringify({ stream: 'camera', ts, seq, detections: [{ label: 'person', score: 0.93, box: [4, 6, 20, 30] }],
  image: { format: 'png', bytes: image.length } }) + '\n', image] });
// Before any client: the store holds these channels when one connects.
await send(reading(1800000000.5, 0.25));
await send(frame(1800000001.25));

const url = `ws://${httpAddr}/foxglove`;

// A client speaking `protocol`, with what it has seen so far.
function client(protocol) {
  const ws = new WebSocket(url, [protocol]);
  const fox = new FoxgloveClient({ ws });
  const seen = { info: null, channels: new Map(), messages: [], statuses: [], times: 0, protocol: null };
  const waiters = new Set();
  const changed = () => { for (const w of [...waiters]) w(); };
  ws.on('open', () => { seen.protocol = ws.protocol; changed(); });
  fox.on('serverInfo', (info) => { seen.info = info; changed(); });
  fox.on('advertise', (channels) => { for (const c of channels) seen.channels.set(c.topic, c); changed(); });
  fox.on('message', (m) => { seen.messages.push(m); changed(); });
  fox.on('status', (s) => { seen.statuses.push(s); changed(); });
  fox.on('time', () => { seen.times++; changed(); });
  fox.on('error', (e) => { seen.error = e; changed(); });
  const until = (what, test) => within(what, new Promise((resolve) => {
    const check = () => { const v = test(seen); if (v) { waiters.delete(check); resolve(v); } };
    waiters.add(check); check();
  }));
  return { ws, fox, seen, until };
}

const decode = (m) => JSON.parse(new TextDecoder().decode(m.data));
let sessions = new Set();
for (const protocol of ['foxglove.sdk.v1', 'foxglove.websocket.v1']) {
  const c = client(protocol);
  const info = await c.until('serverInfo', (s) => s.info);
  if (c.seen.protocol !== protocol) fail(`asked for ${protocol}, got ${c.seen.protocol}`);
  if (!info.capabilities.includes('time') || !info.sessionId) fail(`serverInfo: ${JSON.stringify(info)}`);
  sessions.add(info.sessionId);
  const topics = ['/rover/imu', '/rover/camera/image', '/rover/camera/annotations'];
  await c.until('the stored channels advertised', (s) => topics.every((t) => s.channels.has(t)));
  const imu = c.seen.channels.get('/rover/imu');
  const img = c.seen.channels.get('/rover/camera/image');
  const ann = c.seen.channels.get('/rover/camera/annotations');
  const schema = JSON.parse(imu.schema);
  if (imu.encoding !== 'json' || imu.schemaEncoding !== 'jsonschema' || schema.type !== 'object'
    || schema.properties.ax?.type !== 'number' || schema.properties.pose?.properties?.x?.type !== 'number'
    || schema.properties.mode?.type !== 'string') fail(`imu channel: ${JSON.stringify(imu)}`);
  if (img.schemaName !== 'foxglove.CompressedImage' || ann.schemaName !== 'foxglove.ImageAnnotations') fail('camera channels\' schemas');
  for (const ch of [img, ann]) if (JSON.parse(ch.schema).type !== 'object') fail(`${ch.topic}: schema not an object`);
  await c.until('time messages', (s) => s.times >= 2);
  const subs = new Map([[c.fox.subscribe(imu.id), 'imu'], [c.fox.subscribe(img.id), 'image'], [c.fox.subscribe(ann.id), 'annotations']]);
  // The server answers in order: once it has answered this, the subscriptions are in place.
  c.ws.send(JSON.stringify({ op: `marker-${protocol}` }));
  await c.until('the marker answered', (s) => s.statuses.some((st) => st.message.includes(`marker-${protocol}`)));
  // A new subscription gets its stream's newest at once (the picture sent before), not only
  // what comes next.
  await c.until('the newest picture at once', (s) => s.messages.some((m) => subs.get(m.subscriptionId) === 'image'));
  const ts = 1800000010 + (protocol.length % 7);
  const sentFrom = c.seen.messages.length;
  await send(reading(ts, 0.75));
  await send(frame(ts + 0.5));
  const got = await c.until('a reading, a picture and its annotations', (s) => {
    // Only what came after the sends (not the newest sent at subscribe).
    const by = (kind) => s.messages.slice(sentFrom).find((m) => subs.get(m.subscriptionId) === kind && (kind !== 'imu' || decode(m).ax === 0.75));
    const [r, i, a] = ['imu', 'image', 'annotations'].map(by);
    return r && i && a ? { r, i, a } : null;
  });
  const r = decode(got.r);
  if (r.ax !== 0.75 || r.pose.x !== 1.5 || r.mode !== 'RTK') fail(`reading: ${JSON.stringify(r)}`);
  if (got.r.timestamp !== BigInt(ts) * 1000000000n) fail(`reading time ${got.r.timestamp} for ${ts}`);
  const pic = decode(got.i);
  if (pic.format !== 'png' || !Buffer.from(pic.data, 'base64').equals(image)) fail('the picture is not the bytes sent');
  const boxes = decode(got.a);
  const loop = boxes.points[0];
  if (loop.type !== 2 || JSON.stringify(loop.points) !== JSON.stringify([{ x: 4, y: 6 }, { x: 24, y: 6 }, { x: 24, y: 36 }, { x: 4, y: 36 }])) fail(`box: ${JSON.stringify(loop)}`);
  if (!boxes.texts[0].text.startsWith('person')) fail(`label: ${JSON.stringify(boxes.texts)}`);
  // The annotations carry exactly their frame's timestamp, as does the picture.
  if (JSON.stringify(loop.timestamp) !== JSON.stringify(pic.timestamp) || got.i.timestamp !== got.a.timestamp) fail('frame and annotations differ in time');
  if (pic.timestamp.sec !== Math.floor(ts + 0.5) || pic.timestamp.nsec !== 500000000) fail(`picture time ${JSON.stringify(pic.timestamp)}`);
  // A stream that appears while connected is advertised as it appears.
  await send({ seq: ++seq, parts: [JSON.stringify({ stream: 'battery', seq, values: { volts: 24.1 } }) + '\n'] });
  await c.until('a new stream advertised', (s) => s.channels.has('/rover/battery'));
  // Unsubscribed: nothing more of it.
  for (const [id, kind] of subs) if (kind === 'imu') c.fox.unsubscribe(id);
  c.ws.send(JSON.stringify({ op: `after-unsubscribe-${protocol}` }));
  await c.until('unsubscribe answered', (s) => s.statuses.some((st) => st.message.includes(`after-unsubscribe-${protocol}`)));
  const before = c.seen.messages.length;
  await send(reading(ts + 1, 0.5));
  await send(frame(ts + 1.5));
  await c.until('the next picture', (s) => s.messages.slice(before).some((m) => subs.get(m.subscriptionId) === 'image'));
  if (c.seen.messages.slice(before).some((m) => subs.get(m.subscriptionId) === 'imu')) fail('a reading came after unsubscribing');
  console.log(`${protocol}: serverInfo, ${c.seen.channels.size} channels, reading, picture (${image.length} bytes) and annotations decoded`);
  c.fox.close();
}
if (sessions.size !== 1) fail('two session ids in one hub run');

// ---- hostile clients -----------------------------------------------------------------------

// Without a Foxglove subprotocol: refused before the upgrade.
const refused = await within('a client without a subprotocol', new Promise((resolve) => {
  const ws = new WebSocket(url);
  ws.on('unexpected-response', (_req, res) => resolve(res.statusCode));
  ws.on('open', () => resolve('opened'));
  ws.on('error', () => {});
}));
if (refused !== 400) fail(`no subprotocol: ${refused}`);
// A page of another site (no token on this hub): refused; the Foxglove app's page: taken.
for (const [origin, want] of [['https://evil.example', 403], ['https://app.foxglove.dev', 'opened']]) {
  const got = await within(`origin ${origin}`, new Promise((resolve) => {
    const ws = new WebSocket(url, ['foxglove.sdk.v1'], { headers: { Origin: origin } });
    ws.on('unexpected-response', (_req, res) => resolve(res.statusCode));
    ws.on('open', () => { resolve('opened'); ws.close(); });
    ws.on('error', () => {});
  }));
  if (got !== want) fail(`origin ${origin}: ${got}, expected ${want}`);
}
// Bad messages get a status; the connection goes on.
{
  const c = client('foxglove.sdk.v1');
  await c.until('serverInfo', (s) => s.info);
  const bad = [
    ['{not json', 2, 'not valid JSON'],
    ['[1,2,3]', 2, 'JSON object'],
    ['{"op":"getParameters","parameterNames":[]}', 1, 'not supported'],
    ['{"op":"subscribe","subscriptions":[{"id":1,"channelId":999999}]}', 2, 'no channel'],
    ['{"op":"subscribe","subscriptions":"all"}', 2, 'subscribe needs'],
    ['{"no":"op"}', 2, 'needs "op"'],
  ];
  for (const [text, level, why] of bad) {
    const n = c.seen.statuses.length;
    c.ws.send(text);
    const st = await c.until(`status for ${text}`, (s) => s.statuses[n]);
    if (st.level !== level || !st.message.includes(why)) fail(`${text}: ${JSON.stringify(st)}`);
  }
  const n = c.seen.statuses.length;
  c.ws.send(Buffer.from([1, 0, 0, 0, 0]));
  await c.until('status for a binary message', (s) => s.statuses[n]?.message.includes('no client messages'));
  // Thousands of subscriptions: 4,096 taken, the rest refused with a status each.
  const channel = c.seen.channels.get('/rover/imu').id;
  const many = Array.from({ length: 5000 }, (_, id) => ({ id, channelId: channel }));
  const m = c.seen.statuses.length;
  c.ws.send(JSON.stringify({ op: 'subscribe', subscriptions: many }));
  await c.until('904 refusals', (s) => s.statuses.slice(m).filter((st) => st.message.includes('at most 4096')).length === 904);
  // Still served: a reading reaches the subscriptions (once per subscription).
  const before = c.seen.messages.length;
  await send(reading(1800000100, 0.125));
  await c.until('the reading on 4,096 subscriptions', (s) => s.messages.length - before >= 4096);
  console.log('hostile messages: each answered with a status, the client still served');
  // An oversized message closes it.
  const code = await within('close for an oversized message', new Promise((resolve) => {
    c.ws.on('close', (code) => resolve(code));
    c.ws.send('{"op":"subscribe","subscriptions":[' + '{"id":1,"channelId":1},'.repeat(20000) + '{"id":1,"channelId":1}]}');
  }));
  if (code !== 1009 && code !== 1006) fail(`oversized message: close ${code}`);
  console.log(`oversized message: closed (${code})`);
}
// The hub is unharmed: another client connects and is told everything.
{
  const c = client('foxglove.websocket.v1');
  await c.until('the channels again', (s) => s.channels.has('/rover/battery'));
  c.fox.close();
}
robot.end();
hub.kill('SIGTERM');
const status = await new Promise((resolve) => hub.on('exit', (code) => resolve(code)));
if (status !== 0) fail(`the hub exited ${status}`);
console.log('foxglove test: ok');
