// Issue "Foundation" benchmark: GridSocket against baselines measured in the same run, each server in
// its own process.
//   sequential request/response: GridSocket+GridServer vs raw `ws` echo (target ≥ 0.85×) and vs
//   socket.io with acks (target ≥ 1.7×);
//   one-way bulk transfer of 1 GiB: GridSocket.upload (chunked, acked, sha256 on both ends, written to
//   disk on the node) vs raw `ws` binary frames into a sink (target ≥ 0.6×), with peak RSS growth per side.
// Run: npm run bench:socket  (BENCH_QUICK=1 for a short smoke run)

import WebSocket from 'ws';
import { GridSocket } from '../src/core/socket/grid-socket';
import { generatedBytes, generatedSource } from '../test/helpers/bytes';
import { startNodeScript, type Started } from '../test/helpers/processes';
import { BenchClaim, BenchEcho } from './servers/defs';

const quick = process.env.BENCH_QUICK === '1';
const ROUNDS = quick ? 2000 : 20_000;
const BULK = quick ? 128 * 1024 * 1024 : 1024 ** 3;
const CHUNK = 1024 * 1024;
const PEER = `${__dirname}/servers/socket-peer.ts`;
const MiB = 1024 * 1024;

function payload(n: number) {
  return { n, text: 'model-info request for digits-mlp' };
}

/** One round trip per client, taking turns, so load from the rest of the machine hits all alike. */
interface RoundTripper { name: string; once(i: number): Promise<void>; close(): void }

async function rawWsClient(url: string): Promise<RoundTripper> {
  const ws = new WebSocket(url, { perMessageDeflate: false });
  await new Promise((r) => ws.once('open', r));
  return {
    name: 'raw ws echo',
    async once(i) {
      const reply = new Promise<Buffer>((r) => ws.once('message', (d) => r(d as Buffer)));
      // The same work a real client does: build an envelope, parse the reply.
      ws.send(JSON.stringify({ type: 'bench-echo', request_id: String(i), data: payload(i) }));
      const msg = JSON.parse((await reply).toString());
      if (msg.request_id !== String(i)) throw new Error('raw ws echo out of order');
    },
    close: () => ws.close(),
  };
}

async function gridClient(url: string): Promise<RoundTripper> {
  const s = new GridSocket();
  await s.connect(url, { heartbeatMs: 0 });
  return {
    name: 'GridSocket',
    async once(i) {
      const r = await s.request(BenchEcho, payload(i));
      if (r.n !== i) throw new Error('grid echo mismatch');
    },
    close: () => s.dispose(),
  };
}

async function socketIoClient(url: string): Promise<RoundTripper> {
  const { io } = await import('socket.io-client');
  const sock = io(url.replace('ws://', 'http://'), { transports: ['websocket'] });
  await new Promise((r) => sock.once('connect', () => r(undefined)));
  return {
    name: 'socket.io + acks',
    async once(i) {
      const r = (await sock.emitWithAck('echo', payload(i))) as { n: number };
      if (r.n !== i) throw new Error('socket.io echo mismatch');
    },
    close: () => { sock.close(); },
  };
}

/** Median round-trip time of each client in microseconds, measured in turns. */
async function roundTrips(clients: RoundTripper[], rounds: number): Promise<number[]> {
  const lat = clients.map(() => new Float64Array(rounds));
  for (let i = 0; i < rounds; i++) {
    for (let c = 0; c < clients.length; c++) {
      const t0 = performance.now();
      await clients[c]!.once(i);
      lat[c]![i] = (performance.now() - t0) * 1000;
    }
  }
  return lat.map((l) => [...l].sort((a, b) => a - b)[Math.floor(rounds / 2)]!);
}

function rssSampler() {
  const base = process.memoryUsage().rss;
  let peak = base;
  const t = setInterval(() => { peak = Math.max(peak, process.memoryUsage().rss); }, 20);
  return { stop: () => { clearInterval(t); return Math.max(peak, process.memoryUsage().rss) - base; } };
}

async function rawWsBulk(url: string, size: number): Promise<{ mbps: number; clientRss: number; serverRss: number }> {
  const ws = new WebSocket(url, { perMessageDeflate: false });
  await new Promise((r) => ws.once('open', r));
  ws.send(JSON.stringify({ sink: true }));
  await new Promise((r) => ws.once('message', r));
  const rss = rssSampler();
  const t0 = performance.now();
  for (let pos = 0; pos < size; pos += CHUNK) {
    const len = Math.min(CHUNK, size - pos);
    const bytes = generatedBytes(3, pos, len);
    // Same flow control as GridSocket: wait for the socket's buffer only when it holds a lot.
    bytes[0] = pos + len === size ? 1 : 0;
    if (ws.bufferedAmount < 4 * MiB) ws.send(bytes);
    else await new Promise<void>((r) => ws.send(bytes, () => r()));
  }
  const done = JSON.parse((await new Promise<Buffer>((r) => ws.once('message', (d) => r(d as Buffer)))).toString());
  const secs = (performance.now() - t0) / 1000;
  if (done.received !== size) throw new Error(`raw sink got ${done.received}`);
  ws.close();
  return { mbps: size / MiB / secs, clientRss: rss.stop(), serverRss: done.rssPeak - done.rssBase };
}

async function gridBulk(url: string, size: number): Promise<{ mbps: number; clientRss: number; serverRss: number }> {
  const s = new GridSocket();
  await s.connect(url, { heartbeatMs: 0 });
  const rss = rssSampler();
  const t0 = performance.now();
  const up = await s.upload(generatedSource(3, size));
  const claim = await s.request(BenchClaim, { transfer_id: up.transfer_id });
  const secs = (performance.now() - t0) / 1000;
  if (claim.size !== size || claim.sha256 !== up.sha256) throw new Error('upload mismatch');
  s.dispose();
  return { mbps: size / MiB / secs, clientRss: rss.stop(), serverRss: claim.rssPeak - claim.rssBase };
}

async function main(): Promise<void> {
  const peers: Started[] = [];
  try {
    const [raw, grid, sio] = await Promise.all([
      startNodeScript(PEER, ['ws']), startNodeScript(PEER, ['grid']), startNodeScript(PEER, ['socketio']),
    ]);
    peers.push(raw, grid, sio);
    const clients = [await rawWsClient(raw.url), await gridClient(grid.url), await socketIoClient(sio.url)];
    await roundTrips(clients, 1000); // warm-up: JIT on both sides
    const [tRaw, tGrid, tSio] = await roundTrips(clients, ROUNDS);
    for (const c of clients) c.close();
    console.log(`sequential request/response (${ROUNDS} round trips each, taking turns; median latency)`);
    console.log(`  raw ws echo        ${tRaw!.toFixed(1)} µs  (${(1e6 / tRaw!).toFixed(0)} req/s)`);
    console.log(`  socket.io + acks   ${tSio!.toFixed(1)} µs  (${(1e6 / tSio!).toFixed(0)} req/s)`);
    console.log(`  GridSocket         ${tGrid!.toFixed(1)} µs  (${(1e6 / tGrid!).toFixed(0)} req/s)`);
    console.log(`  ratio vs raw ws    ${(tRaw! / tGrid!).toFixed(2)}×  (target ≥ 0.85×)`);
    console.log(`  ratio vs socket.io ${(tSio! / tGrid!).toFixed(2)}×  (target ≥ 1.7×)`);

    const rawBulk = await rawWsBulk(raw.url, BULK);
    const gridB = await gridBulk(grid.url, BULK);
    console.log(`one-way bulk transfer of ${(BULK / MiB).toFixed(0)} MiB`);
    console.log(`  raw ws binary      ${rawBulk.mbps.toFixed(0)} MiB/s  (RSS growth client ${(rawBulk.clientRss / MiB).toFixed(1)} MiB, server ${(rawBulk.serverRss / MiB).toFixed(1)} MiB)`);
    console.log(`  GridSocket.upload  ${gridB.mbps.toFixed(0)} MiB/s  (RSS growth client ${(gridB.clientRss / MiB).toFixed(1)} MiB, node ${(gridB.serverRss / MiB).toFixed(1)} MiB; sha256 both ends, fsync'd on the node)`);
    console.log(`  ratio vs raw ws    ${(gridB.mbps / rawBulk.mbps).toFixed(2)}×  (target ≥ 0.6×; RSS growth target < 64 MiB per side)`);
  } finally {
    await Promise.all(peers.map((p) => p.kill('SIGTERM')));
  }
}

void main();
