// Issue 16 benchmark, second part: what replicas on PostgreSQL buy on this machine. One real PostgreSQL
// (test/helpers/postgres.ts); N = 1, 2, 3 replicas (dist/grid-node.js processes, as docs/replicas.md
// runs them: one fresh database per N, one shared --blobs dir, each its own --data-dir and port) and, as
// the baseline of what PostgreSQL costs, the embedded node (one process, no database). All deployments
// run through the whole bench; each measure takes them in turn, in `rounds` rounds (medians printed), so
// the machine's other load falls on all of them alike:
//   - remote inference, MLP 784-128-10, batch 1 and a moderate batch: requests/s of `clients` signed-in
//     GridClients spread round-robin over the replicas, each one request at a time, for `seconds` after a
//     warm-up;
//   - FL reports acknowledged/s: `workers` PyGrid-style workers (bench/servers/fl-clients.ts) spread
//     round-robin over the replicas, each reporting one ~0.5 MiB diff into a fresh FL process per round.
//     The cycle is set never to close (max_diffs above the worker count): the number does not depend on
//     how replicas close a cycle.
// For each window: the CPU seconds each replica, PostgreSQL (all its processes) and this load generator
// used, the rest of the machine's, and throughput per replica-CPU-second (how well each core's work
// scales, whatever the machine's other load leaves us).
// Run: npm run bench:replicas [-- --rounds 3 --seconds 4 --warmup 1 --clients 24 --batch 16 --workers 200 --replicas 1,2,3 --threads 2 --window 16]

import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Worker } from 'node:worker_threads';
import pg from 'pg';
import { GridClient } from '../src/core/client';
import { FlHostTraining } from '../src/core/protocol/fl-messages';
import { encodeState, type StateTensor } from '../src/core/protocol/syft-state';
import { bufferSource } from '../src/core/socket/transfer';
import { mlp } from '../src/compute/plan';
import { flParams } from '../src/federation';
import { mlpModel } from '../test/helpers/node-fixtures';
import { postgresUnavailable, startPostgres, type TestPostgres } from '../test/helpers/postgres';
import { startNodeScript, type Started } from '../test/helpers/processes';
import { FlWorkers, replyOf } from './fl-workers';
import { processCpuSeconds } from './rss';
import type { InferCmd, InferInit, InferMsg } from './servers/infer-clients';

function arg(name: string, fallback: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1]! : fallback;
}
const ROUNDS = Number(arg('rounds', '3'));
const SECONDS = Number(arg('seconds', '4'));
const WARMUP = Number(arg('warmup', '1'));
const CLIENTS = Number(arg('clients', '24'));
const BATCH = Number(arg('batch', '16'));
const WORKERS = Number(arg('workers', '200'));
const REPLICAS = arg('replicas', '1,2,3').split(',').map(Number);
const THREADS = Number(arg('threads', '2'));
const WINDOW = Number(arg('window', '16'));
const PASSWORD = 'bench-password-1';
const COLS = 784;
const out = (line: string) => process.stdout.write(`${line}\n`);

// Measured as shipped: npm run bench:replicas builds dist/ first; from source, the .ts entry through tsx.
const NODE_MAIN = fs.existsSync(path.join(__dirname, '../dist/grid-node.js')) ? path.join(__dirname, '../dist/grid-node.js') : path.join(__dirname, '../src/node/main.ts');

// The FL model and the diff every worker reports (as bench/fl-cycle.ts).
const flModel = mlp([COLS, 128, 10], { seed: 1 });
const diffB64 = Buffer.from(encodeState(flParams(flModel).map((p): StateTensor => ({
  dims: p.tensor.dims, data: Float32Array.from({ length: p.tensor.data.length }, (_, i) => ((i % 13) - 6) * 1e-3),
})))).toString('base64');

// ---- CPU accounting, from /proc (Linux) ----

/** CPU seconds of PostgreSQL so far: the postmaster, its live children, and the children it reaped. */
function postgresCpuSeconds(postmaster: number): number {
  const stat = (pid: number | string) => {
    try {
      const s = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
      return s.slice(s.lastIndexOf(')') + 2).split(' ');
    } catch { return undefined; }
  };
  const own = stat(postmaster);
  if (own === undefined) return NaN;
  // utime, stime, cutime, cstime are fields 14-17 of stat, 11-14 after the state (USER_HZ = 100).
  let ticks = Number(own[11]) + Number(own[12]) + Number(own[13]) + Number(own[14]);
  for (const pid of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(pid)) continue;
    const f = stat(pid);
    if (f !== undefined && Number(f[1]) === postmaster) ticks += Number(f[11]) + Number(f[12]);
  }
  return ticks / 100;
}

/** Busy CPU seconds of the whole machine (all cores) so far, from /proc/stat. */
function machineBusySeconds(): number {
  const f = fs.readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/).slice(1).map(Number);
  // user nice system idle iowait irq softirq steal: busy is all but idle and iowait (guest is inside user).
  return (f.slice(0, 8).reduce((a, b) => a + b, 0) - f[3]! - f[4]!) / 100;
}

interface Cpu { replicas: number[]; postgres: number; generator: number; machine: number }

function cpuNow(replicas: Started[], postmaster: number | undefined): Cpu {
  const u = process.cpuUsage();
  return {
    replicas: replicas.map((r) => processCpuSeconds(r.child.pid!)),
    postgres: postmaster === undefined ? 0 : postgresCpuSeconds(postmaster),
    generator: (u.user + u.system) / 1e6,
    machine: machineBusySeconds(),
  };
}

function cpuSince(a: Cpu, b: Cpu): Cpu {
  return { replicas: b.replicas.map((x, i) => x - a.replicas[i]!), postgres: b.postgres - a.postgres, generator: b.generator - a.generator, machine: b.machine - a.machine };
}

// ---- inference load: GridClients in worker threads ----

class InferClients {
  private readonly threads: Worker[];

  constructor(urls: string[]) {
    let first = 0;
    this.threads = Array.from({ length: Math.min(THREADS, CLIENTS) }, (_, t) => {
      const clients = Math.floor(CLIENTS / THREADS) + (t < CLIENTS % THREADS ? 1 : 0);
      const init: InferInit = { urls, first, clients, password: PASSWORD, modelId: 'mlp', cols: COLS };
      first += clients;
      return new Worker(path.join(__dirname, 'servers', 'infer-clients.js'), { workerData: init });
    });
  }

  private all<T extends InferMsg['type']>(reply: T, cmd?: InferCmd): Promise<Extract<InferMsg, { type: T }>[]> {
    return Promise.all(this.threads.map((w) => replyOf<InferMsg, T>(w, reply, cmd)));
  }

  async ready(): Promise<void> {
    const r = await this.all('ready');
    const connected = r.reduce((a, x) => a + x.connected, 0);
    if (connected !== CLIENTS) throw new Error(`${connected} of ${CLIENTS} inference clients connected: ${r.flatMap((x) => x.errors).join(' | ')}`);
  }

  async run(ms: number, rows: number): Promise<{ ok: number; failed: number; latenciesMs: number[]; errors: string[] }> {
    const r = await this.all('ran', { type: 'run', ms, rows });
    return { ok: r.reduce((a, x) => a + x.ok, 0), failed: r.reduce((a, x) => a + x.failed, 0), latenciesMs: r.flatMap((x) => x.latenciesMs), errors: r.flatMap((x) => x.errors) };
  }

  async stop(): Promise<void> {
    await Promise.all(this.threads.map((w) => new Promise((resolve) => { w.once('exit', resolve); w.postMessage({ type: 'stop' } satisfies InferCmd); })));
  }
}

// ---- a deployment: the embedded node, or N replicas on one database; all run through the whole bench ----

/** One measured window: `count` answered at `rate` a second over `seconds`, and the CPU used meanwhile. */
interface Window { count: number; rate: number; seconds: number; failed: number; p50Ms: number; cpu: Cpu }

const p50 = (xs: number[]) => (xs.length === 0 ? NaN : [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!);

class Deployment {
  readonly infer1: Window[] = [];
  readonly inferB: Window[] = [];
  readonly reports: Window[] = [];
  readonly joinsPerSecond: number[] = [];
  private infer: InferClients | undefined;
  private admin: GridClient | undefined;

  private constructor(readonly label: string, readonly postgres: boolean, private readonly dir: string, readonly replicas: Started[], private readonly postmaster: number | undefined) {}

  get urls(): string[] { return this.replicas.map((r) => r.url); }

  static async start(n: number, server: TestPostgres | undefined, postmaster: number | undefined): Promise<Deployment> {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'bench-replicas-'));
    const database = server === undefined ? undefined : await server.createDatabase();
    const env: NodeJS.ProcessEnv = { ...process.env, GRID_ADMIN_PASSWORD: PASSWORD };
    delete env.GRID_DATABASE;
    if (database !== undefined) env.GRID_DATABASE = database;
    // Started together, as docs/replicas.md does: migrations run under an advisory lock.
    const started = await Promise.allSettled(Array.from({ length: n }, (_, i) => startNodeScript(NODE_MAIN, [
      '--port', '0', '--data-dir', path.join(dir, `replica-${i + 1}`), '--log-level', 'warn', '--name', 'bench-replicas',
      ...(database !== undefined ? ['--blobs', path.join(dir, 'blobs')] : []),
    ], env)));
    const replicas = started.flatMap((r) => (r.status === 'fulfilled' ? [r.value] : []));
    const d = new Deployment(database === undefined ? 'embedded' : `postgres ×${n}`, database !== undefined, dir, replicas, postmaster);
    try {
      const failed = started.find((r) => r.status === 'rejected');
      if (failed !== undefined) throw failed.reason;
      d.admin = await GridClient.connect(d.urls[0]!, { connect: { heartbeatMs: 0 }, reconnect: { maxAttempts: 0 }, sharedMemory: { enabled: false }, credentials: { username: 'admin', password: PASSWORD } });
      await d.admin.hostModel(mlpModel(COLS, 128, 10), { id: 'mlp', allowRemoteInference: true });
      d.infer = new InferClients(d.urls);
      await d.infer.ready();
      return d;
    } catch (err) {
      await d.close();
      throw err;
    }
  }

  private cpu(): Cpu { return cpuNow(this.replicas, this.postmaster); }

  /** One inference window: warm-up, then `SECONDS` measured. */
  async inference(rows: number): Promise<Window> {
    await this.infer!.run(WARMUP * 1000, rows);
    const c0 = this.cpu();
    const t0 = performance.now();
    const r = await this.infer!.run(SECONDS * 1000, rows);
    const seconds = (performance.now() - t0) / 1000;
    const cpu = cpuSince(c0, this.cpu());
    if (r.failed > 0) console.error(`  ${this.label}: ${r.failed} inference requests failed: ${r.errors.join(' | ')}`);
    return { count: r.ok, rate: r.ok / seconds, seconds, failed: r.failed, p50Ms: p50(r.latenciesMs), cpu };
  }

  /** One FL round: a fresh FL process, WORKERS workers join its cycle, then each reports once. */
  async flRound(round: number): Promise<Window> {
    const name = `bench-${round}`;
    const up = await this.admin!.socket.upload(bufferSource(flModel));
    await this.admin!.socket.request(FlHostTraining, {
      model_transfer_id: up.transfer_id, client_config: { name, version: '1.0' },
      // max_diffs above the worker count: the cycle stays open through the measure (see the header).
      server_config: { max_workers: WORKERS, max_diffs: WORKERS + 1, num_cycles: 1, cycle_length: 3600 },
    }, { timeout: 120_000 });
    const fl = new FlWorkers({ urls: this.urls, workers: WORKERS, threads: THREADS, window: WINDOW, diffB64, baseline: false, name, version: '1.0', spreadAddresses: true });
    try {
      const tj = performance.now();
      const accepted = await fl.join();
      this.joinsPerSecond.push(accepted / ((performance.now() - tj) / 1000));
      if (accepted !== WORKERS) console.error(`  ${this.label}: ${accepted} of ${WORKERS} workers accepted into the cycle`);
      const c0 = this.cpu();
      const t0 = performance.now();
      const r = await fl.report();
      const seconds = (performance.now() - t0) / 1000;
      return { count: r.ok, rate: r.ok / r.seconds, seconds, failed: r.failed, p50Ms: NaN, cpu: cpuSince(c0, this.cpu()) };
    } finally {
      await fl.stop();
    }
  }

  async close(): Promise<void> {
    await this.infer?.stop();
    this.infer = undefined;
    this.admin?.dispose();
    await Promise.all(this.replicas.map((r) => r.kill('SIGTERM')));
    fs.rmSync(this.dir, { recursive: true, force: true });
  }
}

// ---- output ----

const replicaCpu = (w: Window) => w.cpu.replicas.reduce((a, b) => a + b, 0);
/** Answered per second of replica CPU. */
const perCpu = (w: Window) => w.count / replicaCpu(w);

/** The round whose rate is the median; its CPU is the one shown. */
function medianWindow(ws: Window[]): Window {
  return [...ws].sort((a, b) => a.rate - b.rate)[Math.floor(ws.length / 2)]!;
}

function table(title: string, unit: string, noun: string, ds: Deployment[], pick: (d: Deployment) => Window[]): void {
  const cores = os.availableParallelism();
  const rate = (d: Deployment) => medianWindow(pick(d)).rate;
  const cpuRate = (d: Deployment) => p50(pick(d).map(perCpu));
  const base = ds.find((d) => d.postgres && d.replicas.length === 1);
  const emb = ds.find((d) => !d.postgres);
  out(`\n${title}`);
  for (const d of ds) {
    const w = medianWindow(pick(d));
    const rep = replicaCpu(w);
    const ours = rep + w.cpu.postgres + w.cpu.generator;
    const vs = base === undefined || !d.postgres ? '' : `  ×${(rate(d) / rate(base)).toFixed(2)} of ×1; per replica-CPU-s ×${(cpuRate(d) / cpuRate(base)).toFixed(2)}`;
    const vsEmb = emb === undefined || d !== base ? '' : `  (= ×${(rate(d) / rate(emb)).toFixed(2)} of embedded; per replica-CPU-s ×${(cpuRate(d) / cpuRate(emb)).toFixed(2)})`;
    out(`  ${d.label.padEnd(12)} ${rate(d).toFixed(0).padStart(6)} ${unit}${Number.isNaN(w.p50Ms) ? '' : `  p50 ${w.p50Ms.toFixed(1)} ms`}  [rounds ${pick(d).map((x) => x.rate.toFixed(0)).join(' / ')}]${w.failed > 0 ? `  (${w.failed} failed)` : ''}${vs}${vsEmb}`);
    const busy = w.cpu.replicas.map((x) => `${((100 * x) / w.seconds).toFixed(0)}%`).join(' ');
    out(`  ${''.padEnd(12)} median round, CPU s in ${w.seconds.toFixed(1)} s: replicas ${w.cpu.replicas.map((x) => x.toFixed(2)).join(' + ')} (busy ${busy} of a core)${d.postgres ? `, postgres ${w.cpu.postgres.toFixed(2)}` : ''}, load generator ${w.cpu.generator.toFixed(2)}, rest of machine ${Math.max(0, w.cpu.machine - ours).toFixed(2)} (of ${(cores * w.seconds).toFixed(1)} on ${cores} cores)`);
    const each = w.count;
    out(`  ${''.padEnd(12)} per ${noun} in that round: ${((rep / each) * 1e6).toFixed(0)} µs of replica CPU${d.postgres ? ` + ${((w.cpu.postgres / each) * 1e6).toFixed(0)} µs of PostgreSQL's` : ''}, ${((w.cpu.generator / each) * 1e6).toFixed(0)} µs of the load generator's; ${cpuRate(d).toFixed(0)} ${noun}s per replica-CPU-s (median of rounds)`);
  }
}

async function main(): Promise<void> {
  const why = postgresUnavailable();
  if (why !== undefined) { out(`skipped: ${why}`); return; }
  const cores = os.availableParallelism();
  out(`replicas on one PostgreSQL vs the embedded node; MLP ${COLS}-128-10; ${CLIENTS} inference clients per deployment (${SECONDS} s windows after ${WARMUP} s warm-up), ${WORKERS} FL workers per round; ${ROUNDS} rounds, the deployments interleaved in each; ${THREADS} load-generator threads`);
  out(`machine: ${cores} cores, load average ${os.loadavg().map((l) => l.toFixed(1)).join(' ')} at start. The replicas, PostgreSQL and this load generator all share these ${cores} cores (and with whatever else runs here): past ${cores} busy processes, more replicas only split the same CPU. On a machine others load too, more processes also win a bigger share of it: read "per replica-CPU-s" for how the work itself scales.`);
  const server = await startPostgres();
  const ds: Deployment[] = [];
  try {
    // PostgreSQL's processes are the postmaster's children: found through one backend's parent.
    const c = new pg.Client({ connectionString: `postgres://grid@127.0.0.1:${server.port}/postgres` });
    await c.connect();
    let postmaster: number;
    try {
      // Read while the backend lives: it exits when the client ends.
      const backend = Number((await c.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0]!.pid);
      const s = fs.readFileSync(`/proc/${backend}/stat`, 'utf8');
      postmaster = Number(s.slice(s.lastIndexOf(')') + 2).split(' ')[1]);
    } finally {
      await c.end();
    }
    ds.push(await Deployment.start(1, undefined, undefined));
    for (const n of REPLICAS) ds.push(await Deployment.start(n, server, postmaster));
    out(`  started: ${ds.map((d) => `${d.label} (${d.replicas.length} process${d.replicas.length > 1 ? 'es' : ''})`).join(', ')}`);
    for (let round = 0; round < ROUNDS; round++) {
      // Each round starts with another deployment, so none always follows the same one.
      const order = ds.map((_, i) => ds[(i + round) % ds.length]!);
      for (const d of order) d.infer1.push(await d.inference(1));
      for (const d of order) d.inferB.push(await d.inference(BATCH));
      for (const d of order) d.reports.push(await d.flRound(round));
      out(`  round ${round + 1} of ${ROUNDS} done (load average ${os.loadavg()[0]!.toFixed(1)})`);
    }
  } finally {
    for (const d of ds) await d.close();
    await server.close();
  }
  table('remote inference, batch 1 (requests/s, median of rounds)', 'req/s', 'request', ds, (d) => d.infer1);
  table(`remote inference, batch ${BATCH} (requests/s, median of rounds)`, 'req/s', 'request', ds, (d) => d.inferB);
  table(`FL reports acknowledged/s (${WORKERS} workers a round, one ${(diffB64.length / 1024 / 1024).toFixed(2)} MiB report each; the cycle stays open)`, 'reports/s', 'report', ds, (d) => d.reports);
  out(`\nFL authenticate + cycle-request (median of rounds): ${ds.map((d) => `${d.label} ${p50(d.joinsPerSecond).toFixed(0)} workers/s`).join(', ')}`);
  out(`machine load average at the end: ${os.loadavg().map((l) => l.toFixed(1)).join(' ')}`);
}

void main().catch((err: unknown) => { process.stderr.write(`${(err as Error).stack ?? String(err)}\n`); process.exit(1); });
