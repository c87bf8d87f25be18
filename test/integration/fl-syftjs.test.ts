// The real syft.js 0.1.4 (npm) as a worker against our node: authenticate → cycle-request → get-model →
// report over ws://, then the checkpoint the node serves is old − mean(diff). Under Node, syft.js needs a
// global WebSocket (ws) and `verbose: true` to keep ws:// and http://.

import { once } from 'node:events';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { WebSocket } from 'ws';
import { startTestNode } from '../helpers/node-fixtures';
import { decodeState, hostProcess, httpBase, smallModel } from '../helpers/fl-fixtures';

// eslint-disable-next-line @typescript-eslint/no-require-imports
const tf = require('@tensorflow/tfjs-core') as typeof import('@tensorflow/tfjs-core');
// eslint-disable-next-line @typescript-eslint/no-require-imports
require('@tensorflow/tfjs-backend-cpu');
// syft.js was written for tfjs-core 1.x, where `tensor.sub()` is always there; 4.x adds chained ops on request.
// eslint-disable-next-line @typescript-eslint/no-require-imports
require('@tensorflow/tfjs-core/dist/public/chained_ops/register_all_chained_ops');
// eslint-disable-next-line @typescript-eslint/no-require-imports
const { Syft } = require('@openmined/syft.js') as { Syft: new (o: Record<string, unknown>) => any };

(globalThis as { WebSocket?: unknown }).WebSocket = WebSocket;

/** One syft.js worker: joins, moves every parameter by `step` (new = old − step), reports; resolves with what it saw. */
async function syftWorker(url: string, step: number[][], modelName = 'mnist'): Promise<{ params: number[][]; clientConfig: Record<string, unknown> }> {
  const syft = new Syft({ url, verbose: true });
  // verbose keeps ws:// and http:// (and would log every frame): its one shared Logger is quietened.
  syft.logger.verbose = false;
  const job = await syft.newJob({ modelName, modelVersion: '1.0' });
  return new Promise((resolve, reject) => {
    job.on('accepted', async ({ model, clientConfig }: { model: { params: any[]; createSerializedDiff(p: any[]): Promise<ArrayBuffer> }; clientConfig: Record<string, unknown> }) => {
      try {
        const params = await Promise.all(model.params.map(async (p) => Array.from(await p.data() as Float32Array)));
        const updated = model.params.map((p, i) => tf.sub(p, tf.tensor(step[i]!, p.shape)));
        const diff = await model.createSerializedDiff(updated);
        await job.report(diff);
        resolve({ params, clientConfig });
      } catch (err) {
        reject(err as Error);
      }
    });
    job.on('rejected', (r: unknown) => reject(new Error(`rejected: ${JSON.stringify(r)}`)));
    job.on('error', (err: Error) => reject(err));
    void job.start();
  });
}

test('syft.js 0.1.4 workers complete a cycle against our node and the checkpoint is old − mean(diff)', { timeout: 120_000 }, async (t) => {
  const node = await startTestNode();
  t.after(() => node.close());
  const admin = await node.admin();
  const hosted = await hostProcess(admin, { server: { max_diffs: 2, num_cycles: 2 } });
  assert.equal(hosted.status, 'success');

  const old = smallModel();
  const stepA = [[0.5, 0.5, 0.5, 0.5], [1, 1]];
  const stepB = [[-0.5, 1.5, 0.25, 0], [0, -1]];
  const a = await syftWorker(node.node.url, stepA);
  // The worker downloaded the hosted State intact.
  assert.deepEqual(a.params, old.map((p) => Array.from(p.data)));
  assert.equal(a.clientConfig.name, 'mnist');
  assert.equal(a.clientConfig.batch_size, 8);

  // The cycle closes on the second report (max_diffs 2).
  const closed = once(node.node.fl.engine, 'cycle-closed');
  await syftWorker(node.node.url, stepB);
  await closed;

  const res = await fetch(`${httpBase(node.node.url)}/model-centric/retrieve-model?name=mnist&version=1.0`);
  assert.equal(res.status, 200);
  const latest = decodeState(new Uint8Array(await res.arrayBuffer()));
  latest.forEach((tensor, i) => {
    const expected = old[i]!.data.map((v, k) => v - (stepA[i]![k]! + stepB[i]![k]!) / 2);
    for (let k = 0; k < expected.length; k++) assert.ok(Math.abs(tensor.data[k]! - expected[k]!) < 1e-6, `param ${i}[${k}] = ${tensor.data[k]}, expected ${expected[k]}`);
  });
  // Checkpoint 1 is still the hosted model.
  const first = decodeState(new Uint8Array(await (await fetch(`${httpBase(node.node.url)}/model-centric/retrieve-model?name=mnist&version=1.0&checkpoint=1`)).arrayBuffer()));
  assert.deepEqual(Array.from(first[0]!.data), Array.from(old[0]!.data));
});

test('syft.js 0.1.4 in HTTP mode (bare JSON bodies) completes a cycle too', { timeout: 120_000 }, async (t) => {
  const node = await startTestNode();
  t.after(() => node.close());
  const admin = await node.admin();
  await hostProcess(admin, { name: 'mnist-http', server: { max_diffs: 1, num_cycles: 1 } });
  const step = [[1, 2, 3, 4], [-1, -2]];
  const closed = once(node.node.fl.engine, 'cycle-closed');
  const seen = await syftWorker(httpBase(node.node.url), step, 'mnist-http');
  assert.equal(seen.clientConfig.name, 'mnist-http');
  await closed;
  const res = await fetch(`${httpBase(node.node.url)}/model-centric/retrieve-model?name=mnist-http`);
  const latest = decodeState(new Uint8Array(await res.arrayBuffer()));
  const old = smallModel();
  latest.forEach((tensor, i) => {
    for (let k = 0; k < tensor.data.length; k++) assert.ok(Math.abs(tensor.data[k]! - (old[i]!.data[k]! - step[i]![k]!)) < 1e-6);
  });
});

test('syft.js 0.1.4 reads our refusals: an auth error as PyGrid\'s message, a full cycle as `rejected` with its timeout', { timeout: 120_000 }, async (t) => {
  const node = await startTestNode();
  t.after(() => node.close());
  const admin = await node.admin();
  await hostProcess(admin, { name: 'locked', server: { max_diffs: 1, authentication: { type: 'jwt', secret: 'x' } } });
  await hostProcess(admin, { name: 'tiny', server: { max_diffs: 5, max_workers: 1, cycle_length: 600 } });
  const syft = new Syft({ url: node.node.url, verbose: true, authToken: 'not-a-jwt' });
  syft.logger.verbose = false;
  await assert.rejects(syft.newJob({ modelName: 'locked', modelVersion: '1.0' }), /The 'auth_token' you sent is invalid\./);

  const jobs: any[] = [];
  for (let i = 0; i < 2; i++) {
    const s = new Syft({ url: node.node.url, verbose: true });
    s.logger.verbose = false;
    jobs.push(await s.newJob({ modelName: 'tiny', modelVersion: '1.0' }));
  }
  const first = new Promise((resolve, reject) => { jobs[0].on('accepted', resolve); jobs[0].on('rejected', reject); jobs[0].on('error', reject); });
  void jobs[0].start();
  await first;
  const second = await new Promise<{ timeout: string }>((resolve, reject) => { jobs[1].on('rejected', resolve); jobs[1].on('accepted', () => reject(new Error('accepted past max_workers'))); jobs[1].on('error', reject); void jobs[1].start(); });
  assert.match(second.timeout, /^0:(09|10):\d\d/);
});
