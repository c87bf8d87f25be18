// The client's CPU per sequential round trip, GridSocket against the raw ws client of bench/socket.ts (the
// baseline, measured in the same run): what the client adds per request (issue 18), without the servers'
// share. Servers are bench/servers/socket-peer.ts processes, one per client.
// Run: node scripts/bench.mjs bench/rr-client.ts [blocks] [round trips per block] [clients]
//   clients, comma-separated: raw (the bench's raw ws client, echo server), json (same, JSON server), grid
//   (GridSocket.request with BenchEcho), grid-str (by type name: no schemas), sio (socket.io), lean (one
//   listener and a Map of pending requests over raw ws, echo server), lean-g (the same against GridServer),
//   m<letters> (lean against GridServer plus GridSocket's pieces: Z zod both ways, M loopback mask hook,
//   R request record + deadline + Reply, E envelope checks + listener count, T cached text head).
//   Blocks by default (each client's round trips in a row: warm caches); RR_TURNS=1 takes turns in a
//   shuffled order as bench/socket.ts does; RR_THRASH=BYTES walks that much memory between round trips,
//   outside their measurement (cold caches, as after an idle wait on a quiet machine).
//   RR_CORES=0 (default: client and servers on core 0) or RR_CORES=0,1 (client on 0, servers on 1).
//   Profile one client: node --cpu-prof .bench-out/rr-client.js 3 20000 grid

import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import WebSocket from 'ws';
import { GridSocket } from '../src/core/socket/grid-socket';
import { startNodeScript } from '../test/helpers/processes';
import { BenchEcho } from './servers/defs';

const PEER = existsSync(`${__dirname}/servers/socket-peer.js`) ? `${__dirname}/servers/socket-peer.js` : `${__dirname}/servers/socket-peer.ts`;
const blocks = Number(process.argv[2] ?? 10);
const rounds = Number(process.argv[3] ?? 10_000);
const names = (process.argv[4] ?? 'raw,grid').split(',');
const cores = (process.env.RR_CORES ?? '0').split(',');
const clientCore = cores[0]!;
const serverCore = cores[1] ?? clientCore;

function payload(n: number) {
  return { n, text: 'model-info request for digits-mlp' };
}

interface Client { once(i: number): Promise<void>; close(): void }

async function raw(url: string, type = 'bench-echo'): Promise<Client> {
  const ws = new WebSocket(url, { perMessageDeflate: false });
  await new Promise((r) => ws.once('open', r));
  return {
    async once(i) {
      const reply = new Promise<Buffer>((r) => ws.once('message', (d) => r(d as Buffer)));
      ws.send(Buffer.from(JSON.stringify({ type, request_id: String(i), data: payload(i) })), { binary: false });
      const msg = JSON.parse((await reply).toString());
      if (msg.request_id !== String(i)) throw new Error('raw ws echo out of order');
    },
    close: () => ws.close(),
  };
}

/** GridSocket's shape without GridSocket: one listener, pending requests by id in a Map. */
async function lean(url: string, zod: boolean): Promise<Client> {
  const ws = new WebSocket(url, { perMessageDeflate: false });
  await new Promise((r) => ws.once('open', r));
  const pending = new Map<string, { resolve: (d: unknown) => void }>();
  let next = 0;
  ws.on('message', (raw: Buffer) => {
    const env = JSON.parse(raw.toString()) as { request_id: string; data: unknown };
    const p = pending.get(env.request_id);
    if (p === undefined) return;
    pending.delete(env.request_id);
    p.resolve(zod ? BenchEcho.reply.parse(env.data) : env.data);
  });
  const request = (data: unknown) => new Promise<unknown>((resolve) => {
    const id = `abcdef01-${(next++).toString(36)}`;
    pending.set(id, { resolve });
    ws.send(Buffer.from(JSON.stringify({ type: 'bench-echo', request_id: id, data: zod ? BenchEcho.request.parse(data) : data })), { binary: false });
  });
  return {
    async once(i) { const r = (await request(payload(i))) as { n: number }; if (r.n !== i) throw new Error('lean echo mismatch'); },
    close: () => ws.close(),
  };
}

/** Ablation: lean plus GridSocket's features by letter (Z zod, M mask hook, R record, E envelope checks, T text). */
async function mimic(url: string, f: string): Promise<Client> {
  const { EventEmitter } = await import('node:events');
  const { checkEnvelope } = await import('../src/core/protocol/envelope');
  const host = new EventEmitter();
  let small = false;
  const ws = new WebSocket(url, { perMessageDeflate: false, ...(f.includes('M') && { generateMask: (m: Buffer) => { if (small) m.writeUInt32LE(0x5a5a5a5a, 0); else m.fill(0); } }) });
  await new Promise((r) => ws.once('open', r));
  const Z = f.includes('Z'), R = f.includes('R'), E = f.includes('E'), T = f.includes('T');
  const pending = new Map<string, any>();
  let next = 0;
  const heads = new WeakMap<object, string>();
  ws.on('message', (raw: Buffer) => {
    const buf = E ? (Buffer.isBuffer(raw) ? raw : Buffer.from(raw)) : raw;
    let env = JSON.parse(buf.toString('utf8')) as { request_id: string; data: unknown; error?: unknown; attachment?: unknown };
    if (E) env = checkEnvelope(env) as any;
    const p = pending.get(env.request_id);
    if (p === undefined) return;
    pending.delete(env.request_id);
    if (E && env.error) return;
    const data = Z ? BenchEcho.reply.parse(env.data) : env.data;
    if (R) {
      const reply = { data, attachment: env.attachment };
      if (p.onAbort) p.signal.removeEventListener('abort', p.onAbort);
      p.onSettled?.();
      p.resolve(p.whole ? reply : reply.data);
    } else p.resolve(data);
    if (E && host.listenerCount('message') > 0) host.emit('message', env);
  });
  const request = (data: unknown, options: { timeout?: number; signal?: AbortSignal; attachment?: Uint8Array; idempotent?: boolean } = {}) => {
    if (Z) data = BenchEcho.request.parse(data);
    const id = R ? `abcdef01-${(next++).toString(36)}` : String(next++);
    const env = { type: 'bench-echo', request_id: id } as { type: string; request_id: string; data?: unknown };
    env.data = data;
    const timeout = options.timeout ?? 20_000;
    const deadline = R ? (timeout > 0 && Number.isFinite(timeout) ? performance.now() + timeout : Infinity) : 0;
    return new Promise<unknown>((resolve, reject) => {
      const p = R ? { id, env, def: BenchEcho, whole: false, deadline, timeout, resolve, reject, attachment: options.attachment, idempotent: options.idempotent ?? false, signal: options.signal, onAbort: undefined, sent: false } : { resolve };
      pending.set(id, p);
      if (R) (p as { sent: boolean }).sent = true;
      let text: string;
      if (T) {
        let head = heads.get(BenchEcho);
        if (head === undefined) { head = `{"type":${JSON.stringify(env.type)},"request_id":"`; heads.set(BenchEcho, head); }
        text = `${head}${id}","data":${JSON.stringify(env.data)}}`;
        small = true;
        try { ws.send(Buffer.from(text), { binary: false }); } finally { small = false; }
      } else ws.send(Buffer.from(JSON.stringify(env)), { binary: false });
    });
  };
  return {
    async once(i) { const r = (await request(payload(i))) as { n: number }; if (r.n !== i) throw new Error('mimic echo mismatch'); },
    close: () => ws.close(),
  };
}

async function socketIo(url: string): Promise<Client> {
  const { io } = await import('socket.io-client');
  const sock = io(url.replace('ws://', 'http://'), { transports: ['websocket'] });
  await new Promise((r) => sock.once('connect', () => r(undefined)));
  return {
    async once(i) { const r = (await sock.emitWithAck('echo', payload(i))) as { n: number }; if (r.n !== i) throw new Error('socket.io echo mismatch'); },
    close: () => { sock.close(); },
  };
}

async function grid(url: string, typed: boolean): Promise<Client> {
  const s = new GridSocket();
  await s.connect(url, { heartbeatMs: 0 });
  return {
    once: typed
      ? async (i) => { const r = await s.request(BenchEcho, payload(i)); if (r.n !== i) throw new Error('grid echo mismatch'); }
      : async (i) => { const r = (await s.request('bench-echo', payload(i))) as { n: number }; if (r.n !== i) throw new Error('grid echo mismatch'); },
    close: () => s.dispose(),
  };
}

function pin(pid: number, cpus: string): void {
  const r = spawnSync('taskset', ['-a', '-p', '-c', cpus, String(pid)], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`taskset failed: ${r.stderr || r.error?.message}`);
}

const thrash = process.env.RR_THRASH ? new Int32Array(Number(process.env.RR_THRASH) / 4) : undefined;
let sink = 0;

async function main(): Promise<void> {
  const peers = await Promise.all(names.map((n) => startNodeScript(PEER, [n === 'raw' || n === 'json' || n === 'lean' || n === 'lean-zod' ? 'ws' : n === 'sio' ? 'socketio' : 'grid'])));
  try {
    for (const p of peers) pin(p.child.pid!, serverCore);
    pin(process.pid, clientCore);
    const clients = await Promise.all(names.map((n, k) => (n === 'raw' ? raw(peers[k]!.url) : n.startsWith('m') ? mimic(peers[k]!.url, n.slice(1)) : n.startsWith('lean') ? lean(peers[k]!.url, n === 'lean-zod' || n === 'lean-gzod') : n === 'json' ? raw(peers[k]!.url, 'bench-json') : n === 'sio' ? socketIo(peers[k]!.url) : grid(peers[k]!.url, n === 'grid'))));
    const cpu: number[][] = names.map(() => []);
    if (process.env.RR_TURNS === '1') {
      // As bench/socket.ts measures: each round, every client once, in a shuffled order (cold caches).
      const order = clients.map((_, k) => k);
      let seed = 0x2545f491;
      for (let b = -1; b < blocks; b++) {
        const used = clients.map(() => 0);
        for (let i = 0; i < rounds; i++) {
          for (let k = order.length - 1; k > 0; k--) {
            seed ^= seed << 13; seed ^= seed >>> 17; seed ^= seed << 5;
            const j = (seed >>> 0) % (k + 1);
            [order[k], order[j]] = [order[j]!, order[k]!];
          }
          for (const c of order) {
            const at = process.cpuUsage();
            await clients[c]!.once(i);
            const d = process.cpuUsage(at);
            used[c]! += d.user + d.system;
            if (thrash !== undefined) { let x = 0; for (let q = 0; q < thrash.length; q += 16) x += thrash[q]!++; sink += x; }
          }
        }
        if (b >= 0) for (let k = 0; k < clients.length; k++) cpu[k]!.push(used[k]! / rounds);
      }
    } else for (let b = -1; b < blocks; b++) {
      for (let k = 0; k < clients.length; k++) {
        const c = clients[(k + b + 1) % clients.length]!;
        const at = process.cpuUsage();
        for (let i = 0; i < rounds; i++) await c.once(i);
        const d = process.cpuUsage(at);
        if (b >= 0) cpu[(k + b + 1) % clients.length]!.push((d.user + d.system) / rounds);
      }
    }
    for (let k = 0; k < names.length; k++) {
      const xs = [...cpu[k]!].sort((a, b) => a - b);
      console.log(`${names[k]!.padEnd(9)} client CPU per round trip: median ${xs[xs.length >> 1]!.toFixed(2)} µs, min ${xs[0]!.toFixed(2)}, blocks ${cpu[k]!.map((x) => x.toFixed(1)).join(' ')}`);
    }
    for (const c of clients) c.close();
    if (sink === 0.5) console.log(sink);
  } finally {
    await Promise.all(peers.map((p) => p.kill('SIGTERM')));
  }
}

void main();
