// The node's `fl` events (src/node/fl/events.ts), which the Grid tree follows: on a real node on
// 127.0.0.1 port 0 with real workers, a subscriber sees the process hosted, each worker's answer
// (accepted, rejected with the node's reason) and report, and the checkpoint its cycle's close wrote;
// a subscriber to other topics sees none of it.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { GridClient } from '../../src/core/client';
import { FlWorker } from '../../src/core/fl-worker';
import type { NodeEvent } from '../../src/core/protocol/messages';
import { hostFlProcess } from '../../src/extension/fl';
import { flParams } from '../../src/federation';
import { GridNode } from '../../src/node/server';
import { testDatabase } from '../helpers/postgres';
import '../helpers/check-replies';

const ROOT = join(import.meta.dirname, '..', '..');
const PASSWORD = 'fl-events-password';

/** The events of one subscription, and a wait for the next that fits. */
function collect(client: GridClient, topics: Parameters<GridClient['subscribe']>[0], signal: AbortSignal) {
  const seen: NodeEvent[] = [];
  const waiters: { pred(e: NodeEvent): boolean; resolve(e: NodeEvent): void }[] = [];
  client.subscribe(topics, { signal }).subscribe({
    next: (e) => {
      seen.push(e);
      for (const w of [...waiters]) if (w.pred(e)) { waiters.splice(waiters.indexOf(w), 1); w.resolve(e); }
    },
    error: () => undefined,
  });
  return {
    seen,
    /** The first event (seen or to come) that fits; fails after 60 s naming what it waited for, with what came. */
    next: (pred: (e: NodeEvent) => boolean, what: string) => {
      const found = seen.find(pred);
      if (found) return Promise.resolve(found);
      return new Promise<NodeEvent>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`no ${what} within 60 s; events: ${seen.map((e) => e.event).join(', ')}`)), 60_000);
        waiters.push({ pred, resolve: (e) => { clearTimeout(timer); resolve(e); } });
      });
    },
  };
}

describe('the node announces FL changes on the fl topic', () => {
  let dir: string;
  let node: GridNode;
  let admin: GridClient;
  let other: GridClient;
  const controller = new AbortController();
  const workers: FlWorker[] = [];

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'grid-fl-events-'));
    node = await GridNode.start({ port: 0, dataDir: dir, adminPassword: PASSWORD, ...await testDatabase(dir) });
    admin = await GridClient.connect(node.url, { credentials: { username: 'admin', password: PASSWORD } });
    other = await GridClient.connect(node.url);
  });

  after(async () => {
    controller.abort();
    for (const w of workers) w.dispose();
    admin.dispose();
    other.dispose();
    await node.close();
    await rm(dir, { recursive: true, force: true });
  });

  test('hosted, accepted, rejected with its reason, reported, and the checkpoint of the closed cycle', async () => {
    const fl = collect(admin, ['fl'], controller.signal);
    const models = collect(other, ['models'], controller.signal);
    // Not signed in: the process records, never a worker's id (with it one could ask for its place in a cycle).
    const anonymous = collect(other, ['fl'], controller.signal);
    const modelFile = join(ROOT, 'media', 'samples', 'digits', 'digits-mlp.onnx');
    // One place per cycle; the cycle closes at its one report.
    const p = await hostFlProcess(admin, modelFile, { name: 'ev', version: '1.0', serverConfig: { max_workers: 1, max_diffs: 1, num_cycles: 2, cycle_length: 3600 } });
    const hosted = await fl.next((e) => e.event === 'fl-process-updated' && e.process.model_id === p.model_id, 'hosted event');
    assert.ok(hosted.event === 'fl-process-updated');
    assert.deepEqual([hosted.process.name, hosted.process.cycle?.sequence, hosted.process.checkpoints.length], ['ev', 1, 1]);

    const a = await FlWorker.connect(node.url);
    const b = await FlWorker.connect(node.url);
    workers.push(a, b);
    const jobA = a.newJob({ modelName: 'ev', modelVersion: '1.0' });
    const outA = await jobA.start();
    assert.equal(outA.status, 'accepted');
    if (outA.status !== 'accepted') return;
    const outB = await b.newJob({ modelName: 'ev', modelVersion: '1.0' }).start();
    assert.equal(outB.status, 'rejected');
    const accepted = await fl.next((e) => e.event === 'fl-worker' && e.worker_id === outA.cycle.workerId, 'accepted event');
    assert.deepEqual(accepted, { event: 'fl-worker', process_id: p.model_id, cycle: 1, worker_id: outA.cycle.workerId, status: 'accepted' });
    const rejected = await fl.next((e) => e.event === 'fl-worker' && e.status === 'rejected', 'rejected event');
    assert.ok(rejected.event === 'fl-worker');
    assert.deepEqual([rejected.cycle, rejected.reason], [1, 'the cycle is full (1 of 1 workers)']);
    const assigned = await fl.next((e) => e.event === 'fl-process-updated' && e.process.cycle?.assigned === 1, 'assigned count');
    assert.ok(assigned.event === 'fl-process-updated');

    // A zero diff: the averaged checkpoint has the old parameters, and the cycle closes by count.
    await jobA.report(flParams(await readFile(modelFile)).map(({ tensor }) => ({ dims: tensor.dims, data: new Float32Array(tensor.data.length) })), 10);
    const reported = await fl.next((e) => e.event === 'fl-worker' && e.status === 'reported', 'reported event');
    assert.deepEqual(reported, { event: 'fl-worker', process_id: p.model_id, cycle: 1, worker_id: outA.cycle.workerId, status: 'reported' });
    const closed = await fl.next((e) => e.event === 'fl-process-updated' && e.process.completed_cycles === 1, 'cycle 1 closed');
    await anonymous.next((e) => e.event === 'fl-process-updated' && e.process.completed_cycles === 1, 'cycle 1 closed, seen without signing in');
    assert.deepEqual(anonymous.seen.filter((e) => e.event === 'fl-worker'), [], 'fl-worker events reach only the owner and admins');
    assert.ok(closed.event === 'fl-process-updated');
    assert.deepEqual(closed.process.checkpoints.map((k) => [k.number, k.cycle, k.reports]), [[1, null, 0], [2, 1, 1]]);
    assert.equal(closed.process.cycle?.sequence, 2);
    assert.deepEqual(models.seen.filter((e) => e.event.startsWith('fl-')), [], 'a subscriber to models got FL events');
  });
});
