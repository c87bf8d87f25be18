// Issue 16 benchmark, second part: what replicas on PostgreSQL buy on this machine. One real PostgreSQL
// (test/helpers/postgres.ts); for N = 1, 2, 3 replicas (dist/grid-node.js processes, as docs/replicas.md
// runs them: one fresh database, one shared --blobs dir, each its own --data-dir and port) and, as the
// baseline of what PostgreSQL costs, the embedded node (one process, no database), measured in this run:
//   - remote inference, MLP 784-128-10, batch 1 and a moderate batch: requests/s of `clients` signed-in
//     GridClients spread round-robin over the replicas, each one request at a time, for `seconds` after a
//     warm-up;
//   - FL reports acknowledged/s: `workers` PyGrid-style workers (bench/servers/fl-clients.ts) spread
//     round-robin over the replicas, each reporting one ~0.5 MiB diff. The cycle is set never to close
//     (max_diffs above the worker count): the number does not depend on how replicas close a cycle.
// For each window: the CPU seconds each replica, PostgreSQL (all its processes) and this load generator
// used, the rest of the machine's, and throughput per replica-CPU-second (how well each core's work
// scales, whatever the machine's other load leaves us).
// Run: npm run bench:replicas [-- --seconds 6 --warmup 2 --clients 24 --batch 16 --workers 600 --replicas 1,2,3 --threads 2]

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
import { FlWorkers } from './fl-workers';
import { processCpuSeconds } from './rss';
import type { InferCmd, InferInit, InferMsg } from './servers/infer-clients';

function arg(name: string, fallback: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1]! : fallback;
}
const SECONDS = Number(arg('seconds', '6'));
const WARMUP = Number(arg('warmup', '2'));
const CLIENTS = Number(arg('clients', '24'));
const BATCH = Number(arg('batch', '16'));
const WORKERS = Number(arg('workers', '600'));
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
    return Promise.all(this.threads.map((w) => new Promise<Extract<InferMsg, { type: T }>>((resolve, reject) => {
      const on = (m: InferMsg) => {
        if (m.type !== reply) return;
        w.off('message', on);
        w.off('error', reject);
        resolve(m as Extract<InferMsg, { type: T }>);
      };
      w.on('message', on);
      w.once('error', reject);
      if (cmd !== undefined) w.postMessage(cmd);
    })));
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

// ---- one deployment: the embedded node, or N replicas on one database ----

interface Window { rate: number; seconds: number; failed: number; p50Ms: number; cpu: Cpu }
interface Row { label: string; replicas: number; postgres: boolean; infer1: Window; inferB: Window; reports: Window; joinsPerSecond: number }

const p50 = (xs: number[]) => (xs.length === 0 ? NaN : [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!);

async function deployment(n: number, server: TestPostgres | undefined, postmaster: number | undefined): Promise<Row> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'bench-replicas-'));
  const database = server === undefined ? undefined : await server.createDatabase();
  const env: NodeJS.ProcessEnv = { ...process.env, GRID_ADMIN_PASSWORD: PASSWORD };
  delete env.GRID_DATABASE;
  if (database !== undefined) env.GRID_DATABASE = database;
  const replicas: Started[] = [];
  let admin: GridClient | undefined;
  let infer: InferClients | undefined;
  let fl: FlWorkers | undefined;
  try {
    // Started together, as docs/replicas.md does: migrations run under an advisory lock.
    replicas.push(...await Promise.all(Array.from({ length: n }, (_, i) => startNodeScript(NODE_MAIN, [
      '--port', '0', '--data-dir', path.join(dir, `replica-${i + 1}`), '--log-level', 'warn', '--name', 'bench-replicas',
      ...(database !== undefined ? ['--blobs', path.join(dir, 'blobs')] : []),
    ], env))));
    const urls = replicas.map((r) => r.url);
    admin = await GridClient.connect(urls[0]!, { connect: { heartbeatMs: 0 }, reconnect: { maxAttempts: 0 }, sharedMemory: { enabled: false }, credentials: { username: 'admin', password: PASSWORD } });
    await admin.hostModel(mlpModel(COLS, 128, 10), { id: 'mlp', allowRemoteInference: true });
    const up = await admin.socket.upload(bufferSource(flModel));
    await admin.socket.request(FlHostTraining, {
      model_transfer_id: up.transfer_id, client_config: { name: 'bench', version: '1.0' },
      // max_diffs above the worker count: the cycle stays open through the measure (see the header).
      server_config: { max_workers: WORKERS, max_diffs: WORKERS + 1, num_cycles: 1, cycle_length: 3600 },
    }, { timeout: 120_000 });

    infer = new InferClients(urls);
    await infer.ready();
    const inference = async (rows: number): Promise<Window> => {
      await infer!.run(WARMUP * 1000, rows);
      const c0 = cpuNow(replicas, postmaster);
      const t0 = performance.now();
      const r = await infer!.run(SECONDS * 1000, rows);
      const seconds = (performance.now() - t0) / 1000;
      const cpu = cpuSince(c0, cpuNow(replicas, postmaster));
      if (r.failed > 0) console.error(`  ${r.failed} inference requests failed: ${r.errors.join(' | ')}`);
      return { rate: r.ok / seconds, seconds, failed: r.failed, p50Ms: p50(r.latenciesMs), cpu };
    };
    const infer1 = await inference(1);
    const inferB = await inference(BATCH);
    await infer.stop();
    infer = undefined;

    fl = new FlWorkers({ urls, workers: WORKERS, threads: THREADS, window: WINDOW, diffB64, baseline: false, name: 'bench', version: '1.0', spreadAddresses: true });
    const tj = performance.now();
    const accepted = await fl.join();
    const joinsPerSecond = accepted / ((performance.now() - tj) / 1000);
    if (accepted !== WORKERS) console.error(`  ${accepted} of ${WORKERS} workers accepted into the cycle`);
    const c0 = cpuNow(replicas, postmaster);
    const t0 = performance.now();
    const r = await fl.report();
    const seconds = (performance.now() - t0) / 1000;
    const reports: Window = { rate: r.ok / r.seconds, seconds, failed: r.failed, p50Ms: NaN, cpu: cpuSince(c0, cpuNow(replicas, postmaster)) };
    return { label: database === undefined ? 'embedded' : `postgres ×${n}`, replicas: n, postgres: database !== undefined, infer1, inferB, reports, joinsPerSecond };
  } finally {
    await infer?.stop();
    await fl?.stop();
    admin?.dispose();
    await Promise.all(replicas.map((r) => r.kill('SIGTERM')));
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

// ---- output ----

function table(title: string, unit: string, rows: Row[], pick: (r: Row) => Window): void {
  const cores = os.availableParallelism();
  const base = rows.find((r) => r.postgres && r.replicas === 1);
  const emb = rows.find((r) => !r.postgres);
  const perCpu = (w: Window) => w.rate / w.cpu.replicas.reduce((a, b) => a + b, 0);
  out(`\n${title}`);
  for (const r of rows) {
    const w = pick(r);
    const rep = w.cpu.replicas.reduce((a, b) => a + b, 0);
    const ours = rep + w.cpu.postgres + w.cpu.generator;
    const avail = cores * w.seconds;
    const vs = base === undefined || !r.postgres ? '' : `  ×${(w.rate / pick(base).rate).toFixed(2)} vs ×1 (per replica-CPU-s ×${(perCpu(w) / perCpu(pick(base))).toFixed(2)})`;
    const vsEmb = emb === undefined || !r.postgres || r.replicas !== 1 ? '' : `  = ×${(w.rate / pick(emb).rate).toFixed(2)} of embedded (per replica-CPU-s ×${(perCpu(w) / perCpu(pick(emb))).toFixed(2)})`;
    out(`  ${r.label.padEnd(12)} ${w.rate.toFixed(0).padStart(6)} ${unit}${Number.isNaN(w.p50Ms) ? '' : `  p50 ${w.p50Ms.toFixed(1)} ms`}${w.failed > 0 ? `  (${w.failed} failed)` : ''}${vs}${vsEmb}`);
    const busy = w.cpu.replicas.map((x) => `${((100 * x) / w.seconds).toFixed(0)}%`).join(' ');
    out(`  ${''.padEnd(12)} CPU s in ${w.seconds.toFixed(1)} s: replicas ${w.cpu.replicas.map((x) => x.toFixed(2)).join(' + ')} (busy ${busy} of a core)${r.postgres ? `, postgres ${w.cpu.postgres.toFixed(2)}` : ''}, load generator ${w.cpu.generator.toFixed(2)}, rest of machine ${Math.max(0, w.cpu.machine - ours).toFixed(2)} (of ${avail.toFixed(1)} on ${cores} cores)`);
    out(`  ${''.padEnd(12)} ${perCpu(w).toFixed(0)} ${unit} per replica-CPU-s, ${(w.rate / (rep + w.cpu.postgres)).toFixed(0)} per (replicas + postgres)-CPU-s`);
  }
}

async function main(): Promise<void> {
  const why = postgresUnavailable();
  if (why !== undefined) { out(`skipped: ${why}`); return; }
  const cores = os.availableParallelism();
  out(`replicas on one PostgreSQL vs the embedded node; MLP ${COLS}-128-10; ${CLIENTS} inference clients (${SECONDS} s after ${WARMUP} s warm-up), ${WORKERS} FL workers; ${THREADS} load-generator threads`);
  out(`machine: ${cores} cores, load average ${os.loadavg().map((l) => l.toFixed(1)).join(' ')} at start. The replicas, PostgreSQL and this load generator all share these ${cores} cores (and with whatever else runs here): past ${cores} busy processes, more replicas only split the same CPU.`);
  const server = await startPostgres();
  const rows: Row[] = [];
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
    rows.push(await deployment(1, undefined, undefined));
    out(`  embedded done (load average ${os.loadavg()[0]!.toFixed(1)})`);
    for (const n of REPLICAS) {
      rows.push(await deployment(n, server, postmaster));
      out(`  postgres ×${n} done (load average ${os.loadavg()[0]!.toFixed(1)})`);
    }
  } finally {
    await server.close();
  }
  table('remote inference, batch 1 (requests/s)', 'req/s', rows, (r) => r.infer1);
  table(`remote inference, batch ${BATCH} (requests/s)`, 'req/s', rows, (r) => r.inferB);
  table(`FL reports acknowledged/s (${WORKERS} workers, one ${(diffB64.length / 1024 / 1024).toFixed(2)} MiB report each; the cycle stays open)`, 'reports/s', rows, (r) => r.reports);
  out(`\nFL authenticate + cycle-request: ${rows.map((r) => `${r.label} ${r.joinsPerSecond.toFixed(0)} workers/s`).join(', ')}`);
  out(`machine load average at the end: ${os.loadavg().map((l) => l.toFixed(1)).join(' ')}`);
}

void main().catch((err: unknown) => { process.stderr.write(`${(err as Error).stack ?? String(err)}\n`); process.exit(1); });
