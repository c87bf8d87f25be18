// grid.fl.host / grid.fl.join / grid.fl.simulate from notebook cells (src/extension/notebook/fl-bridge.ts) under a real
// kernel process, against a real grid node on 127.0.0.1 port 0: the process a cell hosts is the node's,
// a cell's worker trains on a local CSV in its own process and reports (the node averages it into a
// checkpoint), and a host cell given a held-out set draws each checkpoint's accuracy across cycles while
// workers join from elsewhere.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { copyFile, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { GridClient } from '../../src/core/client';
import { gridError } from '../../src/core/errors';
import { FlListProcesses } from '../../src/core/protocol/fl-messages';
import type { NodeEvent } from '../../src/core/protocol/messages';
import { runFlWorker } from '../../src/extension/fl-join';
import { flParams } from '../../src/federation';
import { serverLrPlan } from '../helpers/fl-fixtures';
import { NotebookGridBridge, type BridgeNode } from '../../src/extension/notebook/bridge';
import { METRICS_MIME, type MetricsPayload } from '../../src/kernel/metrics';
import type { CellOutput, KernelHost } from '../../src/kernel';
import { GridNode } from '../../src/node/server';
import { notebookDir, plainOf, run, startKernel, value } from './kernel-harness';
import { testDatabase } from '../helpers/postgres';

const ROOT = join(import.meta.dirname, '..', '..');
const PASSWORD = 'fl-notebook-password';

/** `p`, or a failure naming what was awaited after 120 s (a regression fails instead of hanging the run). */
function within<T>(p: Promise<T>, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => { timer = setTimeout(() => reject(new Error(`${what}: not within 120 s`)), 120_000); });
  return Promise.race([p, late]).finally(() => clearTimeout(timer));
}

function metricsOf(outputs: CellOutput[]): MetricsPayload[] {
  return outputs.flatMap((o) => (o.kind === 'display' && typeof o.data[METRICS_MIME] === 'string' ? [JSON.parse(o.data[METRICS_MIME]) as MetricsPayload] : []));
}

describe('grid.fl in notebook cells against a real node', () => {
  let node: GridNode;
  let admin: GridClient;
  let kernel: KernelHost;
  let nb: Awaited<ReturnType<typeof notebookDir>>;
  const clients: GridClient[] = [];

  before(async () => {
    nb = await notebookDir();
    node = await GridNode.start({ port: 0, dataDir: join(nb.dir, 'node'), adminPassword: PASSWORD, ...await testDatabase(join(nb.dir, 'node')) });
    admin = await GridClient.connect(node.url, { credentials: { username: 'admin', password: PASSWORD } });
    await copyFile(join(ROOT, 'media', 'samples', 'digits', 'digits-mlp.onnx'), join(nb.dir, 'digits-mlp.onnx'));
    // The digits rows split: 1,500 a worker trains on, 297 held out for the host's accuracy.
    const rows = gunzipSync(await readFile(join(ROOT, 'media', 'datasets', 'digits.csv.gz'))).toString().trim().split('\n');
    await writeFile(join(nb.dir, 'train.csv'), `${rows.slice(0, 1500).join('\n')}\n`);
    await writeFile(join(nb.dir, 'held-out.csv'), `${rows.slice(1500).join('\n')}\n`);
    const nodes: BridgeNode[] = [];
    const bridge = new NotebookGridBridge({
      cwd: nb.dir,
      nodes: {
        list: () => nodes,
        connect: async (target, credentials) => {
          if (target !== node.url) throw gridError('NOT_FOUND', `no node at ${String(target)}`);
          const client = await GridClient.connect(target, credentials ? { credentials } : {});
          clients.push(client);
          const n: BridgeNode = {
            name: credentials ? 'test node' : 'anonymous', url: target, local: false, state: credentials ? 'connected' : 'unauthenticated', isOpen: true,
            user: credentials?.username, client, datasets: [], models: [],
          };
          nodes.push(n);
          return n;
        },
        disconnect: () => undefined,
      },
      metricsIntervalMs: 0,
    });
    kernel = await startKernel({ bridge, cwd: nb.dir, interruptTimeoutMs: 60_000 });
  });

  after(async () => {
    await kernel.dispose();
    for (const c of clients) c.dispose();
    admin.dispose();
    await node.close();
    await nb.remove();
  });

  test('hosting needs a signed-in session, and says so in VS Code\'s words', async () => {
    await value(kernel, `await grid.connect(${JSON.stringify(node.url)})`);
    const { result } = await run(kernel, "await grid.fl.host('digits-mlp.onnx', { name: 'nb-digits', node: 'anonymous' })");
    assert.equal(result.error?.code, 'GRID_ERR_UNAUTHENTICATED');
    assert.match(result.error!.message, /sign in to anonymous \(Grid: Authenticate\)/);
    assert.doesNotMatch(result.error!.message, /--user|GRID_USER/);
  });

  test('grid.fl.host hosts the process on the node; grid.fl.join trains a local CSV, reports, and the node averages it', async () => {
    await value(kernel, `await grid.connect(${JSON.stringify(node.url)}, { username: 'admin', password: ${JSON.stringify(PASSWORD)} })`);
    const hosted = await value(kernel, "const h = await grid.fl.host('digits-mlp.onnx', { name: 'nb-digits', version: '1.0', serverConfig: { min_diffs: 1, max_diffs: 1, num_cycles: 2, cycle_length: 3600 }, clientConfig: { batch_size: 32, lr: 0.1 } });\n`${h.process.name}@${h.process.version} cycle ${h.process.cycle.sequence}`");
    assert.equal(hosted, 'nb-digits@1.0 cycle 1');
    const before = (await admin.socket.request(FlListProcesses, {})).processes.filter((p) => p.name === 'nb-digits');
    assert.deepEqual(before.map((p) => [p.owner, p.client_config.lr, p.checkpoints.length]), [['admin', 0.1, 1]]);

    // The node closes the cycle just after acknowledging the report: its event says when.
    const controller = new AbortController();
    const closed = new Promise<void>((resolve) => {
      admin.subscribe(['fl'], { signal: controller.signal }).subscribe({
        next: (ev: NodeEvent) => { if (ev.event === 'fl-process-updated' && ev.process.name === 'nb-digits' && ev.process.completed_cycles === 1) resolve(); },
        error: () => undefined,
      });
    });
    const { result, outputs } = await run(kernel, "const j = await grid.fl.join('nb-digits@1.0', { data: 'train.csv', featureScale: 1 / 16 });\n[j.kind, j.numSamples]");
    await within(closed, 'the node closing cycle 1');
    controller.abort();
    assert.equal(result.status, 'ok', result.error?.stack);
    const metrics = metricsOf(outputs);
    assert.ok(metrics.length >= 3, `${metrics.length} metrics outputs`);
    const last = metrics.at(-1)!;
    assert.equal(last.state, 'succeeded');
    assert.ok((last.series[0]?.points.length ?? 0) >= 10, 'the training curve is drawn per batch');
    assert.match(last.note ?? '', /^reported 1500 samples, \d+ updates in/);
    const after = (await admin.socket.request(FlListProcesses, {})).processes.filter((p) => p.name === 'nb-digits')[0]!;
    assert.equal(after.completed_cycles, 1, 'the node closed cycle 1 with the worker\'s report');
    assert.deepEqual(after.checkpoints.map((k) => [k.number, k.cycle, k.reports]), [[1, null, 0], [2, 1, 1]]);
  });

  test('interrupting a grid.fl.join cell stops its worker: the node has it assigned, never reported', async () => {
    await value(kernel, "await grid.fl.host('digits-mlp.onnx', { name: 'nb-long', version: '1.0', serverConfig: { max_diffs: 1, num_cycles: 1, cycle_length: 3600 }, clientConfig: { batch_size: 8, lr: 0.01, epochs: 500 } })");
    let sawProgress!: () => void;
    const progressed = new Promise<void>((resolve) => { sawProgress = resolve; });
    const running = run(kernel, "await grid.fl.join('nb-long@1.0', { data: 'train.csv', featureScale: 1 / 16 })", {
      onOutput: (o) => { if (metricsOf([o]).some((m) => (m.series[0]?.points.length ?? 0) > 0)) sawProgress(); },
    });
    await within(progressed, 'the worker\'s first training progress');
    await kernel.interrupt();
    const { result, outputs } = await running;
    assert.equal(result.status, 'interrupted');
    const last = metricsOf(outputs).at(-1)!;
    assert.equal(last.state, 'cancelled');
    assert.match(last.note ?? '', /cancelled; the worker reported nothing/);
    // The call settles when the worker process has exited: nothing can report after this.
    const cycle = (await admin.socket.request(FlListProcesses, {})).processes.filter((p) => p.name === 'nb-long')[0]!.cycle;
    assert.deepEqual([cycle?.assigned, cycle?.reported], [1, 0]);
  });

  test('a cell without data is told what grid.fl.join needs', async () => {
    const { result } = await run(kernel, "await grid.fl.join('nb-digits@1.0', {})");
    assert.equal(result.error?.code, 'GRID_ERR_INVALID_INPUT');
    assert.match(result.error!.message, /grid\.fl\.join needs \{ data \}/);
  });

  test('grid.fl.simulate runs N workers against the node: the cell draws held-out accuracy per cycle, the process is the signed-in user\'s, and the result has every cycle', async (t) => {
    await value(kernel, `await grid.connect(${JSON.stringify(node.url)}, { username: 'admin', password: ${JSON.stringify(PASSWORD)} })`);
    const { result, outputs } = await within(run(kernel, "const s = await grid.fl.simulate('digits-mlp.onnx', { name: 'nb-sim', data: 'train.csv', featureScale: 1 / 16, workers: 3, cycles: 2, seed: 4, clientConfig: { batch_size: 16, lr: 0.1, epochs: 2 } });\ns.cycles.map((c) => `cycle ${c.cycle}: ${c.reported}/${c.accepted} reported, ${c.averaged} averaged`).join('; ')"), 'the simulation cell');
    assert.equal(result.status, 'ok', result.error?.stack);
    assert.equal(plainOf(outputs).at(-1), 'cycle 1: 3/3 reported, 3 averaged; cycle 2: 3/3 reported, 3 averaged');
    const last = metricsOf(outputs).at(-1)!;
    assert.equal(last.state, 'succeeded');
    assert.deepEqual([last.unit, last.total], ['cycle', 2]);
    const points = last.series.find((x) => x.name === 'held-out')!.points;
    assert.deepEqual(points.map((p) => p.x), [0, 1, 2], 'the hosted model, then one point per cycle');
    t.diagnostic(`simulated held-out accuracy: ${points.map((p) => `${p.x}: ${(p.accuracy * 100).toFixed(1)}%`).join(', ')}`);
    assert.ok(points[2]!.accuracy > points[0]!.accuracy + 0.3, `accuracy across cycles: ${points.map((p) => p.accuracy.toFixed(3)).join(' → ')}`);
    assert.match(last.note ?? '', /^nb-sim@1\.0: held-out accuracy \d+\.\d% → \d+\.\d% after 2 cycles \([\d.]+ s\)$/);
    // Each cycle's progress was shown while it ran, not only at the end.
    assert.ok(metricsOf(outputs).some((m) => m.state === 'running' && /^cycle 1\/2: accuracy \d+\.\d% on 300 held-out rows · 3 reported, 3 averaged/.test(m.note ?? '')), 'a running chart noted cycle 1');
    // The result's numbers are the chart's; the node holds the process, owned by the notebook's user.
    assert.equal(await value(kernel, 's.cycles.map((c) => c.accuracy.toFixed(6)).join(",")'), points.slice(1).map((p) => p.accuracy.toFixed(6)).join(','));
    const p = (await admin.socket.request(FlListProcesses, {})).processes.find((q) => q.name === 'nb-sim')!;
    assert.deepEqual([p.owner, p.completed_cycles, p.checkpoints.map((k) => k.reports)], ['admin', 2, [0, 3, 3]]);
  });

  test('grid.fl.simulate says what it needs, and a node refusal reaches the cell with its code', async () => {
    const { result } = await run(kernel, "await grid.fl.simulate('digits-mlp.onnx', { workers: 3 })");
    assert.equal(result.error?.code, 'GRID_ERR_INVALID_INPUT');
    assert.match(result.error!.message, /grid\.fl\.simulate needs \{ data \}/);
    // The name is taken (the previous test's process): hosting fails on the node, the simulation stops.
    const dup = await run(kernel, "await grid.fl.simulate('digits-mlp.onnx', { name: 'nb-sim', data: 'train.csv', featureScale: 1 / 16, workers: 2, cycles: 1 })");
    assert.equal(dup.result.error?.code, 'GRID_ERR_ALREADY_EXISTS');
    assert.equal(metricsOf(dup.outputs).at(-1)!.state, 'failed');
  });

  test('interrupting a grid.fl.simulate cell stops its workers: the chart says cancelled, the process stays on the node with the checkpoints it has', async () => {
    await value(kernel, `await grid.connect(${JSON.stringify(node.url)}, { username: 'admin', password: ${JSON.stringify(PASSWORD)} })`);
    const connections = node.connectionCount;
    let sawCycle!: () => void;
    const cycled = new Promise<void>((resolve) => { sawCycle = resolve; });
    const running = run(kernel, "await grid.fl.simulate('digits-mlp.onnx', { name: 'nb-sim-long', data: 'train.csv', featureScale: 1 / 16, workers: 2, cycles: 50, clientConfig: { batch_size: 16, lr: 0.1 } })", {
      onOutput: (o) => { if (metricsOf([o]).some((m) => /^cycle 1\/50:/.test(m.note ?? ''))) sawCycle(); },
    });
    await within(cycled, 'the simulation\'s first cycle');
    await kernel.interrupt();
    const { result, outputs } = await within(running, 'the interrupted simulation cell');
    assert.equal(result.status, 'interrupted');
    const last = metricsOf(outputs).at(-1)!;
    assert.equal(last.state, 'cancelled');
    assert.match(last.note ?? '', /^the simulation was cancelled; nb-sim-long stays on test node with the checkpoints it has$/);
    // The worker process and its threads are gone: their connections (a reader and one per worker) close.
    await within((async () => { while (node.connectionCount > connections) await new Promise((r) => setTimeout(r, 50)); })(), 'the simulation\'s connections closing');
    const p = (await admin.socket.request(FlListProcesses, {})).processes.find((q) => q.name === 'nb-sim-long')!;
    assert.ok(p.completed_cycles >= 1 && p.completed_cycles < 50, `${p.completed_cycles} cycles completed`);
  });

  test('grid.fl.host { averagingPlan }: the node checks the plan against the model\'s parameters; a fitting one hosts, one that does not is refused in the cell with its code', async () => {
    await value(kernel, `await grid.connect(${JSON.stringify(node.url)}, { username: 'admin', password: ${JSON.stringify(PASSWORD)} })`);
    const params = flParams(await readFile(join(nb.dir, 'digits-mlp.onnx'))).map((p) => ({ name: p.name, dims: p.tensor.dims }));
    await writeFile(join(nb.dir, 'server-lr.onnx'), serverLrPlan(params, 0.5));
    await writeFile(join(nb.dir, 'short.onnx'), serverLrPlan(params.slice(1), 0.5));
    const bad = await run(kernel, "await grid.fl.host('digits-mlp.onnx', { name: 'nb-plan', averagingPlan: 'short.onnx' })");
    assert.equal(bad.result.error?.code, 'GRID_ERR_INVALID_AVERAGING_PLAN');
    assert.match(bad.result.error!.message, new RegExp(`no output for parameter "${params[0]!.name}"`));
    const missing = await run(kernel, "await grid.fl.host('digits-mlp.onnx', { name: 'nb-plan', averagingPlan: 'nowhere.onnx' })");
    assert.equal(missing.result.error?.code, 'GRID_ERR_INVALID_INPUT');
    assert.match(missing.result.error!.message, /\{ averagingPlan \}: no file nowhere\.onnx/);
    assert.equal(await value(kernel, "(await grid.fl.host('digits-mlp.onnx', { name: 'nb-plan', averagingPlan: 'server-lr.onnx' })).process.name"), 'nb-plan');
  });

  test('with a held-out set, the host cell draws each checkpoint\'s accuracy across cycles while workers join', async (t) => {
    // Workers join from outside the notebook once the node announces the process.
    const controller = new AbortController();
    const workers = new Promise<string[]>((resolve, reject) => {
      let started = false;
      admin.subscribe(['fl'], { signal: controller.signal }).subscribe({
        next: (ev: NodeEvent) => {
          if (started || ev.event !== 'fl-process-updated' || ev.process.name !== 'nb-eval') return;
          started = true;
          void (async () => {
            const outcomes: string[] = [];
            for (let i = 0; i < 2; i++) outcomes.push((await runFlWorker({ url: node.url, name: 'nb-eval', version: '1.0', data: join(nb.dir, 'train.csv'), featureScale: 1 / 16, seed: i })).kind);
            return outcomes;
          })().then(resolve, reject);
        },
        error: () => undefined,
      });
    });
    const { result, outputs } = await within(run(kernel, "const e = await grid.fl.host('digits-mlp.onnx', { name: 'nb-eval', version: '1.0', serverConfig: { max_diffs: 1, num_cycles: 2, cycle_length: 3600 }, clientConfig: { batch_size: 16, lr: 0.1, epochs: 2 }, evalData: 'held-out.csv', featureScale: 1 / 16 });"), 'the host cell following nb-eval to its last cycle');
    controller.abort();
    assert.equal(result.status, 'ok', result.error?.stack);
    assert.deepEqual(await within(workers, 'two outside workers reporting'), ['reported', 'reported']);
    const last = metricsOf(outputs).at(-1)!;
    assert.equal(last.unit, 'cycle');
    assert.equal(last.total, 2);
    assert.equal(last.state, 'succeeded');
    const points = last.series.find((s) => s.name === 'held-out')!.points;
    assert.deepEqual(points.map((p) => p.x), [0, 1, 2], 'the hosted model, then one point per completed cycle');
    t.diagnostic(`held-out accuracy by cycle: ${points.map((p) => `${p.x}: ${(p.accuracy * 100).toFixed(1)}%`).join(', ')}`);
    assert.ok(points[0]!.accuracy < 0.3, `the untrained model scores ${points[0]!.accuracy}`);
    assert.ok(points[2]!.accuracy > points[0]!.accuracy + 0.3, `accuracy across cycles: ${points.map((p) => p.accuracy.toFixed(3)).join(' → ')}`);
    assert.match(last.note ?? '', /^checkpoint 3 \(after cycle 2\): accuracy \d+\.\d% on 297 held-out rows$/);
    assert.equal(await value(kernel, "e.evaluations.map((v) => `checkpoint ${v.checkpoint} after cycle ${v.cycle}`).join(', ')"), 'checkpoint 1 after cycle 0, checkpoint 2 after cycle 1, checkpoint 3 after cycle 2');
  });
});
