// A Foxglove WebSocket load client for bench/foxglove.sh: CLIENTS connections (the Foxglove
// project's own client library, subprotocol foxglove.sdk.v1, which both servers speak), each
// subscribed to every channel whose topic matches TOPICS as it is advertised; after WARMUP
// seconds it counts for SECS seconds the messages delivered and how long each took from its
// send time (the message's timestamp) to here. Prints one JSON line.
//
//   node tests/browser/foxglove-bench.mjs ws://127.0.0.1:8765 [CLIENTS] [SECS] [WARMUP]
import foxglove from '@foxglove/ws-protocol';
import WebSocket from 'ws';

const { FoxgloveClient } = foxglove;
const [url, clients = '10', secs = '10', warmup = '3'] = process.argv.slice(2);
const topics = new RegExp(process.env.TOPICS || '/(imu|image)$');
const nowNs = () => BigInt(Math.round((performance.timeOrigin + performance.now()) * 1e6));
const latencies = [];
let delivered = 0;
let bytes = 0;
let counting = false;
const sockets = [];
for (let i = 0; i < Number(clients); i++) {
  const ws = new WebSocket(url, ['foxglove.sdk.v1'], { maxPayload: 64 * 1024 * 1024 });
  const client = new FoxgloveClient({ ws });
  const subscribed = new Set();
  client.on('advertise', (channels) => {
    for (const c of channels) if (topics.test(c.topic) && !subscribed.has(c.id)) { subscribed.add(c.id); client.subscribe(c.id); }
  });
  client.on('message', (m) => {
    if (!counting) return;
    delivered++;
    bytes += m.data.byteLength;
    if (latencies.length < 2_000_000) latencies.push(Number(nowNs() - m.timestamp) / 1e6);
  });
  client.on('error', (e) => { console.error(`client ${i}: ${e.message || e}`); });
  sockets.push(ws);
}
await new Promise((r) => setTimeout(r, Number(warmup) * 1000));
counting = true;
const start = performance.now();
await new Promise((r) => setTimeout(r, Number(secs) * 1000));
counting = false;
const elapsed = (performance.now() - start) / 1000;
latencies.sort((a, b) => a - b);
const pct = (p) => latencies.length ? latencies[Math.min(latencies.length - 1, Math.floor(p * latencies.length))] : null;
console.log(JSON.stringify({
  clients: Number(clients), messages_per_s: delivered / elapsed, mb_per_s: bytes / elapsed / 1e6,
  p50_ms: pct(0.5), p99_ms: pct(0.99), max_ms: pct(1),
}));
for (const ws of sockets) ws.terminate();
process.exit(0);
