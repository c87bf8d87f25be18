// Soak: N clients of mixed traffic against one grid-node process for minutes, to see that the node keeps
// its latency and ends flat in memory. Not a test (nothing asserts); it prints numbers.
//   npm run bench:soak -- [--duration 3m] [--clients 16] [--baseline 20s] [--seed N]
// The mix per client: ping, list-models, inference on a small MLP, upload + host + delete of a small model,
// subscribe (open, confirm, cancel), and a few malformed frames on a raw socket of its own. Every client
// also holds one long-lived subscription, so each host/delete is an event fanned out to all of them.
// Baseline, measured in this same run first: the same mix from a single client.
// Reported: throughput and p50/p99 per op type, the node's RSS over time, and its slope over the second
// half (MiB/min; near 0 means it ends flat).

import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import WebSocket from 'ws';
import { GridClient } from '../src/core/client';
import { GridError } from '../src/core/errors';
import { Ping } from '../src/core/protocol/catalogue';
import type { NamedTensors } from '../src/core/protocol/tensor';
import { mlpModel, seededFloats } from '../test/helpers/node-fixtures';
import { startNodeScript, type Started } from '../test/helpers/processes';
import { processRss, rssSampler } from './rss';

// As shipped when built (npm run bench:soak builds first); from source otherwise.
const NODE_MAIN = fs.existsSync(path.join(__dirname, '../dist/grid-node.js')) ? path.join(__dirname, '../dist/grid-node.js') : path.join(__dirname, '../src/node/main.ts');
const PASSWORD = 'soak-admin-password';
const MiB = 1024 * 1024;
const out = (line: string) => process.stdout.write(`${line}\n`);

/** "90", "90s", "3m" → seconds. */
function seconds(v: string): number {
  const m = /^(\d+(?:\.\d+)?)(s|m)?$/.exec(v.trim());
  if (!m) throw new RangeError(`expected a duration like 90, 90s or 3m, got ${JSON.stringify(v)}`);
  return Number(m[1]) * (m[2] === 'm' ? 60 : 1);
}

function flag(name: string): string | undefined {
  const i = process.argv.indexOf(name);
  return i >= 0 ? process.argv[i + 1] : undefined;
}

const DURATION_S = seconds(flag('--duration') ?? '3m');
const CLIENTS = Number(flag('--clients') ?? 16);
const BASELINE_S = seconds(flag('--baseline') ?? String(Math.max(10, Math.min(30, DURATION_S / 6))));
const SEED = Number(flag('--seed') ?? 1);
if (!Number.isInteger(CLIENTS) || CLIENTS < 1 || CLIENTS > 1000) throw new RangeError('--clients must be an integer from 1 to 1000');

const OPS = ['ping', 'list', 'infer', 'host', 'delete', 'subscribe', 'malformed'] as const;
type Op = (typeof OPS)[number];
/** Weights of the mix; 'host' is followed by 'delete' of the same model, so it is one slot. */
const MIX: readonly [Op, number][] = [['ping', 30], ['list', 20], ['infer', 30], ['host', 4], ['subscribe', 10], ['malformed', 6]];
const MIX_TOTAL = MIX.reduce((a, [, w]) => a + w, 0);

function prng(seed: number): () => number {
  let s = seed >>> 0 || 1;
  return () => { s ^= s << 13; s >>>= 0; s ^= s >>> 17; s ^= s << 5; s >>>= 0; return s / 0x100000000; };
}

class Stats {
  readonly times = new Map<Op, number[]>(OPS.map((o) => [o, []]));
  readonly errors = new Map<string, number>();
  events = 0;
  add(op: Op, ms: number): void { this.times.get(op)!.push(ms); }
  fail(op: Op, err: unknown): void {
    const key = `${op} ${err instanceof GridError ? err.code : (err as Error).message}`;
    this.errors.set(key, (this.errors.get(key) ?? 0) + 1);
  }
  get total(): number { return [...this.times.values()].reduce((a, t) => a + t.length, 0); }
}

const pct = (xs: number[], p: number) => {
  if (xs.length === 0) return NaN;
  const s = Float64Array.from(xs).sort();
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))]!;
};

/** Least-squares slope of (seconds, bytes) samples, in MiB per minute. */
function slopeMbPerMin(samples: readonly { t: number; rss: number }[]): number {
  const n = samples.length;
  if (n < 2) return NaN;
  const mt = samples.reduce((a, s) => a + s.t, 0) / n;
  const mr = samples.reduce((a, s) => a + s.rss, 0) / n;
  let num = 0, den = 0;
  for (const s of samples) { num += (s.t - mt) * (s.rss - mr); den += (s.t - mt) ** 2; }
  return (num / den) * 60 / MiB;
}

/** A raw socket for malformed frames: each gets a coded error back (or a close, after which we reopen). */
class RawSocket {
  private ws: WebSocket | undefined;
  constructor(private readonly url: string) {}
  private async open(): Promise<WebSocket> {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) return this.ws;
    const ws = new WebSocket(this.url, { perMessageDeflate: false });
    await new Promise<void>((resolve, reject) => { ws.once('open', () => resolve()); ws.once('error', reject); });
    ws.on('error', () => {});
    this.ws = ws;
    return ws;
  }
  async send(frame: string | Buffer): Promise<void> {
    const ws = await this.open();
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => { cleanup(); reject(new Error('no answer to a malformed frame within 10 s')); }, 10_000);
      const cleanup = () => { clearTimeout(timer); ws.off('message', onMessage); ws.off('close', onClose); };
      const onMessage = () => { cleanup(); resolve(); };
      const onClose = () => { cleanup(); resolve(); };
      ws.on('message', onMessage);
      ws.on('close', onClose);
      ws.send(frame);
    });
  }
  close(): void { this.ws?.terminate(); }
}

function malformedFrame(rnd: () => number): string | Buffer {
  const k = Math.floor(rnd() * 5);
  if (k === 0) return '{not json';
  if (k === 1) return JSON.stringify({ type: 'no-such-type', request_id: 'x', data: {} });
  if (k === 2) return JSON.stringify({ type: 'run-inference', request_id: 'y', data: { model_id: 42 } });
  if (k === 3) return JSON.stringify([1, 2, 3]);
  return Buffer.from(Array.from({ length: 8 + Math.floor(rnd() * 56) }, () => Math.floor(rnd() * 256)));
}

interface Worker { client: GridClient; raw: RawSocket; rnd: () => number; name: string; n: number }

async function openWorker(url: string, i: number, stats: Stats): Promise<Worker> {
  const name = `soak-${i}`;
  const client = await GridClient.connect(url, { reconnect: { maxAttempts: 0 }, connect: { heartbeatMs: 0 }, credentials: { username: name, password: PASSWORD } });
  // One long-lived subscription per client: host/delete events fan out to everyone.
  client.subscribe().subscribe({ next: () => { stats.events++; } });
  return { client, raw: new RawSocket(url), rnd: prng(SEED * 7919 + i), name, n: 0 };
}

const FEEDS: NamedTensors = { x: { dtype: 'float32', dims: [1, 16], data: seededFloats(16, 3) } };

async function step(w: Worker, stats: Stats): Promise<void> {
  let r = w.rnd() * MIX_TOTAL;
  let op: Op = 'ping';
  for (const [o, weight] of MIX) { if ((r -= weight) < 0) { op = o; break; } }
  const t0 = performance.now();
  try {
    switch (op) {
      case 'ping': await w.client.socket.request(Ping, undefined); break;
      case 'list': await w.client.listModels(); break;
      case 'infer': await w.client.runInference('soak-mlp', FEEDS); break;
      case 'subscribe': {
        const s = w.client.subscribe(['models']);
        await w.client.socket.request(Ping, undefined); // the node has the subscription once this comes back
        s.cancel();
        break;
      }
      case 'malformed': await w.raw.send(malformedFrame(w.rnd)); break;
      case 'host': {
        const id = `${w.name}-m${w.n++}`;
        await w.client.hostModel(mlpModel(16, 8 + Math.floor(w.rnd() * 24), 4, w.n), { id, allowRemoteInference: true });
        stats.add('host', performance.now() - t0);
        const t1 = performance.now();
        try {
          await w.client.deleteModel(id);
          stats.add('delete', performance.now() - t1);
        } catch (err) { stats.fail('delete', err); }
        return;
      }
    }
    stats.add(op, performance.now() - t0);
  } catch (err) {
    stats.fail(op, err);
  }
}

async function phase(workers: Worker[], secs: number, stats: Stats): Promise<number> {
  const end = performance.now() + secs * 1000;
  const t0 = performance.now();
  await Promise.all(workers.map(async (w) => { while (performance.now() < end) await step(w, stats); }));
  return (performance.now() - t0) / 1000;
}

function report(label: string, stats: Stats, secs: number): void {
  out(`${label}: ${stats.total} ops in ${secs.toFixed(1)} s = ${(stats.total / secs).toFixed(0)} ops/s`);
  out('  op          ops/s     p50 ms    p99 ms');
  for (const op of OPS) {
    const t = stats.times.get(op)!;
    out(`  ${op.padEnd(10)} ${(t.length / secs).toFixed(1).padStart(7)} ${pct(t, 50).toFixed(2).padStart(9)} ${pct(t, 99).toFixed(2).padStart(9)}`);
  }
  const errs = [...stats.errors.entries()].map(([k, v]) => `${k} ×${v}`);
  out(`  errors: ${errs.length === 0 ? 'none' : errs.join(', ')}; subscription events received: ${stats.events}`);
}

async function main(): Promise<void> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'bench-soak-'));
  let node: Started | undefined;
  const workers: Worker[] = [];
  try {
    // error level: malformed frames are logged as warnings, and a soak would otherwise buffer their stderr here.
    node = await startNodeScript(NODE_MAIN, ['--port', '0', '--data-dir', path.join(dir, 'node'), '--log-level', 'error'], { ...process.env, GRID_ADMIN_PASSWORD: PASSWORD });
    const pid = node.child.pid!;
    out(`machine: ${os.availableParallelism()} cores, load average ${os.loadavg().map((l) => l.toFixed(1)).join(' ')} at start`);
    out(`soak: ${CLIENTS} clients for ${DURATION_S} s after a ${BASELINE_S} s single-client baseline; seed ${SEED}; node ${path.relative(process.cwd(), NODE_MAIN)}`);
    const admin = await GridClient.connect(node.url, { reconnect: { maxAttempts: 0 }, credentials: { username: 'admin', password: PASSWORD } });
    await admin.hostModel(mlpModel(16, 32, 4), { id: 'soak-mlp', allowRemoteInference: true });
    for (let i = 0; i <= CLIENTS; i++) await admin.addUser(`soak-${i}`, PASSWORD);
    admin.dispose();

    // Baseline: the same mix from one client, in this run.
    const baseStats = new Stats();
    const solo = await openWorker(node.url, CLIENTS, baseStats);
    const baseSecs = await phase([solo], BASELINE_S, baseStats);
    solo.client.dispose();
    solo.raw.close();
    report('baseline, 1 client', baseStats, baseSecs);

    const stats = new Stats();
    for (let i = 0; i < CLIENTS; i++) workers.push(await openWorker(node.url, i, stats));
    const samples: { t: number; rss: number }[] = [];
    const t0 = performance.now();
    const sampleRss = () => { const rss = processRss(pid); if (Number.isFinite(rss)) samples.push({ t: (performance.now() - t0) / 1000, rss }); };
    sampleRss();
    const sampler = setInterval(sampleRss, 1000);
    const own = rssSampler();
    const secs = await phase(workers, DURATION_S, stats);
    clearInterval(sampler);
    sampleRss();
    const ownGrowth = own.stop();
    report(`soak, ${CLIENTS} clients`, stats, secs);

    const ratio = (stats.total / secs) / (baseStats.total / baseSecs);
    const p99 = (s: Stats) => pct([...s.times.values()].flat(), 99);
    out(`  ratio ${CLIENTS} clients / 1 client: throughput ${ratio.toFixed(2)}×, p99 over all ops ${(p99(stats) / p99(baseStats)).toFixed(2)}× (${p99(baseStats).toFixed(2)} → ${p99(stats).toFixed(2)} ms)`);
    const tenth = Math.max(1, Math.floor(samples.length / 10));
    const series = samples.filter((_, i) => i % tenth === 0 || i === samples.length - 1).map((s) => `${s.t.toFixed(0)}s ${(s.rss / MiB).toFixed(0)}`);
    out(`node RSS (MiB) over the soak: ${series.join(', ')}`);
    const second = samples.filter((s) => s.t >= secs / 2);
    const min = Math.min(...samples.map((s) => s.rss)), max = Math.max(...samples.map((s) => s.rss));
    out(`node RSS: start ${(samples[0]!.rss / MiB).toFixed(0)} MiB, peak ${(max / MiB).toFixed(0)} MiB, end ${(samples.at(-1)!.rss / MiB).toFixed(0)} MiB (range ${((max - min) / MiB).toFixed(0)} MiB)`);
    out(`node RSS slope over the second half: ${slopeMbPerMin(second).toFixed(2)} MiB/min over ${second.length} samples (near 0: ends flat); this client's RSS grew ${(ownGrowth / MiB).toFixed(0)} MiB at peak`);
    out(`machine load average at the end: ${os.loadavg().map((l) => l.toFixed(1)).join(' ')}`);
  } finally {
    for (const w of workers) { w.client.dispose(); w.raw.close(); }
    await node?.kill('SIGTERM');
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

void main().catch((err: unknown) => { process.stderr.write(`soak failed: ${(err as Error).stack ?? String(err)}\n`); process.exitCode = 1; });
