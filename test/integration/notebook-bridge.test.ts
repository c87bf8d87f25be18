// The notebook's GridBridge (src/extension/notebook/bridge.ts) under a real kernel process, against a
// real grid node on 127.0.0.1 port 0 with the digits demo dataset: what a cell's `grid.*` call does on
// the node, what the cell gets back, the live metrics output of training, and an interrupt reaching
// the node as a cancelled job. The nodes are real GridClients, as the extension's connections hold.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { copyFile } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { GridClient } from '../../src/core/client';
import { gridError } from '../../src/core/errors';
import type { ModelInfo } from '../../src/core/protocol/messages';
import { NotebookGridBridge, type BridgeNode } from '../../src/extension/notebook/bridge';
import { METRICS_MIME, type MetricsPayload } from '../../src/kernel/metrics';
import type { CellOutput, KernelHost } from '../../src/kernel';
import { GridNode } from '../../src/node/server';
import { notebookDir, plainOf, run, startKernel, value } from './kernel-harness';
import { WebSocketServer } from 'ws';
import { testDatabase } from '../helpers/postgres';

const ROOT = join(import.meta.dirname, '..', '..');
const PASSWORD = 'bridge-test-password';

function metricsOf(outputs: CellOutput[]): { displayId?: string; update?: boolean; payload: MetricsPayload }[] {
  return outputs.flatMap((o) => (o.kind === 'display' && typeof o.data[METRICS_MIME] === 'string'
    ? [{ ...(o.displayId !== undefined && { displayId: o.displayId }), ...(o.update !== undefined && { update: o.update }), payload: JSON.parse(o.data[METRICS_MIME]) as MetricsPayload }]
    : []));
}

describe('notebook grid bridge against a real node', () => {
  let node: GridNode;
  let second: GridNode;
  let admin: GridClient;
  /** What the bridge told the sidebar about nodes sitting out FedAvg, by node name. */
  const droppedNotes: { node: string; note: unknown }[] = [];
  let kernel: KernelHost;
  let nb: Awaited<ReturnType<typeof notebookDir>>;
  const clients: GridClient[] = [];

  before(async () => {
    nb = await notebookDir();
    node = await GridNode.start({
      port: 0, dataDir: join(nb.dir, 'node'), adminPassword: PASSWORD, ...await testDatabase(join(nb.dir, 'node')),
      datasets: [{ name: 'digits', path: join(ROOT, 'media', 'datasets', 'digits.csv.gz'), label: '64', tags: ['digits', 'classification'], description: 'UCI digits' }],
    });
    second = await GridNode.start({ port: 0, dataDir: join(nb.dir, 'second'), adminPassword: PASSWORD, ...await testDatabase(join(nb.dir, 'second')), name: 'second', datasets: [{ name: 'digits', path: join(ROOT, 'media', 'datasets', 'digits.csv.gz'), label: '64', tags: ['digits'] }] });
    admin = await GridClient.connect(node.url, { credentials: { username: 'admin', password: PASSWORD } });
    await copyFile(join(ROOT, 'media', 'samples', 'digits', 'digits-mlp.onnx'), join(nb.dir, 'digits-mlp.onnx'));
    // The extension's connections, reduced to what the bridge reads: one shared client per node.
    const nodes: BridgeNode[] = [];
    const bridge = new NotebookGridBridge({
      cwd: nb.dir,
      nodes: {
        list: () => nodes,
        connect: async (target, credentials) => {
          if (target !== node.url && target !== second.url) throw gridError('NOT_FOUND', `no node at ${String(target)}`);
          const client = await GridClient.connect(target, credentials ? { credentials } : {});
          clients.push(client);
          // The same node connected without a sign-in is listed as "anonymous" (as a second entry would be).
          const name = target === second.url ? 'second node' : credentials ? 'test node' : 'anonymous';
          const n: BridgeNode = {
            name, url: target, local: false, state: credentials ? 'connected' : 'unauthenticated', isOpen: true, user: credentials?.username,
            client, datasets: await client.listDatasets(), models: [],
            noteDropped: (note) => { droppedNotes.push({ node: name, note }); },
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
    await second.close();
    await nb.remove();
  });

  test('before any connect, a grid call says how to connect', async () => {
    const { result } = await run(kernel, 'await grid.models()');
    assert.equal(result.error?.code, 'GRID_ERR_NOT_CONNECTED');
    assert.match(result.error!.message, /await grid\.connect\(\)/);
  });

  test('connect, serve a file relative to the notebook, infer with plain arrays: the node holds the model', async () => {
    const connected = await value(kernel, `const n = await grid.connect(${JSON.stringify(node.url)}, { username: 'admin', password: ${JSON.stringify(PASSWORD)} });\nn.user`);
    assert.equal(connected, 'admin');
    await value(kernel, "const m = await grid.serve('digits-mlp.onnx', { allowRemoteInference: true });");
    const hosted = await admin.listModels();
    assert.deepEqual(hosted.map((m) => m.id), ['digits-mlp'], 'the id defaults to the file name');
    assert.equal(hosted[0]!.allow_remote_inference, true);
    const out = await value(kernel, "const y = await grid.infer('digits-mlp', [Array.from({ length: 64 }, (_, i) => (i % 17) / 16)]);\n[y.dtype, y.dims.join('x'), y.data.constructor.name]");
    assert.equal(out, "[ 'float32', '1x10', 'Float32Array' ]");
  });

  test('bad calls are coded errors at the calling line, naming what was wrong', async () => {
    const unknownModel = await run(kernel, "const a = 1;\nawait grid.infer('no-such-model', [[1]]);");
    assert.equal(unknownModel.result.error?.code, 'GRID_ERR_NOT_FOUND');
    assert.equal(unknownModel.result.error?.line, 2);
    const unknownNode = await run(kernel, "await grid.models({ node: 'elsewhere' })");
    assert.equal(unknownNode.result.error?.code, 'GRID_ERR_NOT_FOUND');
    assert.match(unknownNode.result.error!.message, /no node named or at "elsewhere"; the nodes are "test node"/);
    const badServe = await run(kernel, 'await grid.serve(42)');
    assert.equal(badServe.result.error?.code, 'GRID_ERR_INVALID_INPUT');
    assert.match(badServe.result.error!.message, /grid\.serve expects an \.onnx file path or ONNX bytes/);
    const badShape = await run(kernel, "await grid.infer('digits-mlp', { nope: [1] })");
    assert.equal(badShape.result.error?.code, 'GRID_ERR_INVALID_INPUT');
    assert.match(badShape.result.error!.message, /model "digits-mlp" has no input "nope"; its inputs are "input"/);
  });

  test('training draws one metrics output, updated in place while the job runs, and stores the model', async () => {
    const { result, outputs } = await run(kernel, "const t = await grid.train('digits-mlp', 'digits', { epochs: 3, lr: 0.01, featureScale: 1 / 16 });\nt");
    assert.equal(result.status, 'ok', result.error?.stack);
    const metrics = metricsOf(outputs);
    assert.ok(metrics.length >= 4, `${metrics.length} metrics outputs`);
    assert.equal(new Set(metrics.map((m) => m.displayId)).size, 1, 'one display id');
    assert.equal(metrics[0]!.update, false, 'the first shows the output');
    assert.ok(metrics.slice(1).every((m) => m.update === true), 'the rest replace it');
    const running = metrics.filter((m) => m.payload.state === 'running').map((m) => m.payload.series[0]?.points.length ?? 0);
    assert.ok(running.some((n, i) => i > 0 && n > running[i - 1]!), 'the curve grows while the job runs');
    const last = metrics.at(-1)!.payload;
    assert.equal(last.state, 'succeeded');
    assert.ok(last.series.some((s) => s.name === 'test'), 'the held-out test metrics are drawn at the end');
    assert.match(last.note ?? '', /stored as digits-mlp@2, the next version of digits-mlp$/);
    const summary = plainOf(outputs).at(-1)!;
    const modelId = /model: '([^']+)'/.exec(summary)?.[1];
    assert.equal(modelId, 'digits-mlp@2', summary);
    const stored = await admin.modelInfo('digits-mlp');
    assert.deepEqual([stored.version, stored.parent], ['2', 'digits-mlp@1'], 'the node stores the next version with its lineage');
    // The summary's model is a ref the next cell infers with; the first version stays reachable.
    assert.equal(await value(kernel, "(await grid.infer(t.model!, [Array.from({ length: 64 }, () => 0.5)])).dims.join('x')"), '1x10');
    assert.equal(await value(kernel, "(await grid.models({ allVersions: true })).map((m) => `${m.id}@${m.version}`).join(' ')"), 'digits-mlp@1 digits-mlp@2');
  });

  test('FedAvg stores its result as the next version of the model it started from; one version is deleted by name@N', async () => {
    const fed = await value(kernel, "const f = await grid.fedavg('digits-mlp@1', 'digits', { rounds: 1, epochs: 1, featureScale: 1 / 16 });\nf.model");
    assert.equal(fed, 'digits-mlp@3');
    assert.equal((await admin.modelInfo('digits-mlp@3')).parent, 'digits-mlp@1');
    await value(kernel, "await grid.deleteModel('digits-mlp@3');");
    assert.equal((await admin.modelInfo('digits-mlp')).version, '2', 'the version before is the latest again');
  });

  test('interrupting a training cell cancels the job on the node; the cell keeps its state', async () => {
    let sawProgress!: () => void;
    const progressed = new Promise<void>((resolve) => { sawProgress = resolve; });
    const running = run(kernel, "await grid.train('digits-mlp', 'digits', { epochs: 500, lr: 0.01, featureScale: 1 / 16, progressEvery: 1 });", {
      onOutput: (o) => { if (metricsOf([o]).some((m) => (m.payload.series[0]?.points.length ?? 0) > 0)) sawProgress(); },
    });
    await progressed;
    await kernel.interrupt();
    const { result, outputs } = await running;
    assert.equal(result.status, 'interrupted');
    assert.equal(result.stateLost, false);
    assert.equal(metricsOf(outputs).at(-1)!.payload.state, 'cancelled');
    const job = (await admin.training.listJobs()).find((j) => j.epochs === 500);
    assert.ok(job, 'the job reached the node');
    await assert.rejects(admin.training.wait(job.id), { code: 'GRID_ERR_ABORTED' });
    assert.equal(await value(kernel, 'm.id'), 'digits-mlp');
  });

  test('a call refused for want of a sign-in names the VS Code action, not the CLI\'s flags', async () => {
    await value(kernel, `await grid.connect(${JSON.stringify(node.url)});`);
    const { result } = await run(kernel, "await grid.serve('digits-mlp.onnx', { node: 'anonymous', id: 'not-signed-in' })");
    assert.equal(result.error?.code, 'GRID_ERR_UNAUTHENTICATED');
    assert.match(result.error!.message, /sign in to anonymous \(Grid: Authenticate\)/);
    assert.doesNotMatch(result.error!.message, /--user|--password|GRID_USER|GRID_PASSWORD/);
  });

  test('grid.fedavg refuses one node named twice, naming both', async () => {
    const { result } = await run(kernel, "await grid.fedavg('digits-mlp', 'digits', { node: 'test node', nodes: ['test node', 'anonymous'], rounds: 1, featureScale: 1 / 16 })");
    assert.equal(result.error?.code, 'GRID_ERR_INVALID_INPUT');
    assert.match(result.error!.message, /"test node" and "anonymous" are the same dataset "digits" on the same node/);
  });

  test('grid.fedavg: a participant that sits out carries its reason, in the result, the live output and on the node', async () => {
    await value(kernel, `await grid.connect(${JSON.stringify(second.url)});`);
    const { result, outputs } = await run(kernel, "const f = await grid.fedavg('digits-mlp', 'digits', { node: 'test node', nodes: ['test node', 'second node'], rounds: 2, featureScale: 1 / 16, outputId: 'digits-fedavg' });");
    assert.equal(result.status, 'ok', result.error?.stack);
    // util.inspect cuts long strings: the cell answers in short strings.
    assert.equal(await value(kernel, "f.rounds.map((r) => r.dropped.map((d) => d.node + '/' + d.error.code).join(',')).join(';')"), 'second node/GRID_ERR_UNAUTHENTICATED;second node/GRID_ERR_UNAUTHENTICATED');
    assert.equal(await value(kernel, 'f.rounds.every((r) => /could not take the model at the start: .*sign in to second node \\(Grid: Authenticate\\)/.test(r.dropped[0].error.message))'), 'true');
    assert.ok(metricsOf(outputs).some((m) => /dropped: second node \(GRID_ERR_UNAUTHENTICATED: the node could not take the model at the start: .*sign in to second node/.test(m.payload.note ?? '')), 'the live output does not say why');
    const last = droppedNotes.filter((n) => n.node === 'second node').at(-1)?.note as { what: string; error: { code: string } } | undefined;
    assert.equal(last?.what, 'FedAvg of digits-mlp, rounds 1, 2');
    assert.equal(last?.error.code, 'GRID_ERR_UNAUTHENTICATED');
    // The same warning the CLI prints on stderr, in the cell's stderr, in VS Code's words.
    const warnings = outputs.flatMap((o) => (o.kind === 'stream' && o.stream === 'stderr' ? [o.text] : []));
    assert.ok(warnings.some((w) => /^warning: second node cannot take part: GRID_ERR_UNAUTHENTICATED: .*\(Grid: Authenticate\)/.test(w)), `stderr: ${JSON.stringify(warnings)}`);
    assert.ok(warnings.every((w) => !/--user|GRID_USER/.test(w)), 'no CLI flags in the cell');
  });

  test('grid.fedavg refuses a node the cell names that has no dataset with the tag, naming it (as the palette and the CLI do)', async () => {
    // Only the test node's digits carries "classification".
    const { result } = await run(kernel, "await grid.fedavg('digits-mlp', 'classification', { node: 'test node', nodes: ['test node', 'second node'], rounds: 1, featureScale: 1 / 16 })");
    assert.equal(result.error?.code, 'GRID_ERR_NOT_FOUND');
    assert.match(result.error!.message, /^second node has no dataset tagged "classification"/);
  });
});

describe('grid.infer and the grid.requestTimeoutMs setting', () => {
  test('a cell\'s infer gives up after the setting as it is when the call starts; the cell can still say otherwise', async (t) => {
    // A node that takes every request and never answers: only the deadline ends an inference.
    const silent = new WebSocketServer({ host: '127.0.0.1', port: 0 });
    await once(silent, 'listening');
    t.after(() => { for (const ws of silent.clients) ws.terminate(); silent.close(); });
    const url = `ws://127.0.0.1:${(silent.address() as AddressInfo).port}`;
    const client = await GridClient.connect(url);
    t.after(() => client.dispose());
    // Its model listing, as the sidebar would hold it, so infer binds the input without asking the node.
    const model: ModelInfo = {
      id: 'slow', name: 'slow', version: '1', size: 1, sha256: '0'.repeat(64), allow_download: false, allow_remote_inference: true, owner: 'admin', created: new Date(0).toISOString(),
      signature: { inputs: [{ name: 'x', dtype: 'float32', dims: [1, 2] }], outputs: [{ name: 'y', dtype: 'float32', dims: [1, 2] }] },
    };
    const quiet: BridgeNode = { name: 'quiet', url, local: false, state: 'connected', isOpen: true, user: 'admin', client, datasets: [], models: [model] };
    let settingMs = 1000;
    const bridge = new NotebookGridBridge({ cwd: ROOT, nodes: { list: () => [quiet], connect: async () => quiet, disconnect: () => undefined }, inferTimeoutMs: () => settingMs });
    const kernel = await startKernel({ bridge, cwd: ROOT });
    t.after(() => kernel.dispose());
    await value(kernel, 'await grid.connect("quiet");');

    const timedOut = async (cell: string) => {
      const t0 = performance.now();
      const { result } = await run(kernel, cell);
      return { result, ms: performance.now() - t0 };
    };
    let { result, ms } = await timedOut("await grid.infer('slow', [[1, 2]])");
    assert.equal(result.error?.code, 'GRID_ERR_TIMEOUT');
    assert.match(result.error!.message, / within 1000 ms$/);
    assert.ok(ms >= 1000, `gave up after ${ms.toFixed(0)} ms`);
    settingMs = 1500;
    ({ result, ms } = await timedOut("await grid.infer('slow', [[1, 2]])"));
    assert.match(result.error!.message, / within 1500 ms$/, 'the changed setting applies to the next call');
    assert.ok(ms >= 1500, `gave up after ${ms.toFixed(0)} ms`);
    ({ result } = await timedOut("await grid.infer('slow', [[1, 2]], { timeoutMs: 1200 })"));
    assert.match(result.error!.message, / within 1200 ms$/, 'the cell\'s own timeoutMs wins');
  });
});
