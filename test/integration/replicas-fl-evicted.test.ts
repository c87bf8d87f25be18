// Model-centric FL on two replicas of one PostgreSQL database (issue 13): worker rows evicted to make room
// (src/node/fl/limits.ts WorkerRows) while the other replica assigns and takes reports.
// - A worker evicted on replica B while it asks replica A for the cycle: A waits for the eviction and tells
//   it its worker is gone; it is never given a request key whose assignment the eviction then deletes.
// - A worker whose key A knows and whose row is gone since: its report through A is refused with PyGrid's
//   "Invalid request key!" (so it authenticates again), not answered success with its diff counted by
//   nobody; the cycle closes on the other reports alone. A repeat of a report whose assignment is still
//   there stays a success, counted once, on the replica that knew the key as unreported.
// In-process grid nodes (for the per-address worker cap) on a PostgreSQL server of the test's own, each
// worker on its own loopback address; skipped, with the reason, where PostgreSQL is not installed.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import * as fs from 'node:fs';
import type pg from 'pg';
import type { CycleClosed } from '../../src/node/fl/cycles';
import { GridNode } from '../../src/node/server';
import { decodeState, diffOf, hostProcess, httpBase, PyGridSocket, smallModel, type StateTensor } from '../helpers/fl-fixtures';
import { ADMIN_PASSWORD, tempDir } from '../helpers/node-fixtures';
import { postgresUnavailable } from '../helpers/postgres';
import { admin, sql, withPostgres, type Owner } from '../helpers/replicas';

const skip = postgresUnavailable();
if (skip !== undefined) process.stdout.write(`# replicas FL eviction test skipped: ${skip}\n`);

/** A grid node in this process on `database`, blobs in `blobs`, one worker row per address and FL process. */
async function replicaNode(t: Owner, database: string, blobs: string): Promise<GridNode> {
  const dir = tempDir('grid-replica-');
  const node = await GridNode.start({ port: 0, dataDir: dir, adminPassword: ADMIN_PASSWORD, processMetrics: false, database, blobsDir: blobs, fl: { maxWorkersPerAddress: 1 } });
  t.after(async () => { await node.close(); fs.rmSync(dir, { recursive: true, force: true }); });
  return node;
}

/** A worker's socket to `node`, dialled from `address` (each loopback address is a machine of its own). */
async function worker(t: Owner, node: GridNode, address: string): Promise<PyGridSocket> {
  const s = await PyGridSocket.open(node.url, address);
  t.after(() => s.close());
  return s;
}

/**
 * Resolves once `n` of the replicas' statements wait on a lock (a row's or an advisory one), or `stop` says
 * the wait is moot. PostgreSQL announces no lock wait: its activity view is read until it shows one.
 */
async function untilWaiting(c: pg.Client, n: number, stop: { done: boolean } = { done: false }): Promise<void> {
  const waiting = async () => (await c.query<{ n: number }>(`SELECT count(*)::int AS n FROM pg_stat_activity
    WHERE datname = current_database() AND application_name = 'grid-node' AND wait_event_type = 'Lock'`)).rows[0]!.n;
  while (!stop.done && await waiting() < n) await new Promise((resolve) => setTimeout(resolve, 20));
}

/** The next cycle-closed of either replica. */
function closedOnEither(nodes: GridNode[]): Promise<CycleClosed> {
  return Promise.race(nodes.map((n) => once(n.fl.engine, 'cycle-closed').then(([c]) => c as CycleClosed)));
}

async function checkpoint(node: GridNode, name: string, number: number): Promise<StateTensor[]> {
  const res = await fetch(`${httpBase(node.url)}/model-centric/retrieve-model?name=${name}&version=1.0&checkpoint=${number}`);
  assert.equal(res.status, 200, `retrieve-model ${name} checkpoint ${number}: ${res.status}`);
  return decodeState(new Uint8Array(await res.arrayBuffer()));
}

/** Every parameter of smallModel() moved by −`by` (dyadic values: exact in float32 whatever the order of the sum). */
function movedBy(by: number): number[][] {
  return smallModel().map((p) => Array.from(p.data, (v) => v - by));
}

const all = (v: number) => [[v, v, v, v], [v, v]];

test('a worker evicted on replica B while it asks replica A is told it is gone, not assigned; a report whose assignment is gone is refused with "Invalid request key!" and the cycle closes on the other reports alone; a repeat of a present assignment stays success, counted once', { skip, timeout: 180_000 }, async (t) => {
  const server = await withPostgres(t);
  const database = await server.createDatabase();
  const blobs = tempDir('grid-shared-blobs-');
  t.after(() => fs.rmSync(blobs, { recursive: true, force: true }));
  const a = await replicaNode(t, database, blobs);
  const b = await replicaNode(t, database, blobs);
  const db = await sql(t, database);
  await hostProcess(await admin(t, a.url), { name: 'evict', server: { max_diffs: 2, num_cycles: 3, cycle_length: 3600 } });
  const join = async (s: PyGridSocket) => {
    const auth = await s.call('model-centric/authenticate', { model_name: 'evict', model_version: '1.0' });
    assert.equal(auth.status, 'success', JSON.stringify(auth));
    return auth.worker_id as string;
  };
  const ask = async (s: PyGridSocket, workerId: string) => {
    const reply = await s.call('model-centric/cycle-request', { worker_id: workerId, model: 'evict', version: '1.0', ping: 0, download: 0, upload: 0 });
    assert.equal(reply.status, 'accepted', JSON.stringify(reply));
    return reply.request_key as string;
  };
  const report = (s: PyGridSocket, workerId: string, requestKey: string, v: number, samples = 1) =>
    s.send('model-centric/report', { worker_id: workerId, request_key: requestKey, diff: diffOf(all(v)), num_samples: samples });

  // Cycle 1: W authenticates through A from 127.0.0.2 and sits it out; X1 and X2 take part through B,
  // so B closes it and opens cycle 2 itself (W's row is now older than the open cycle: stale).
  const sw = await worker(t, a, '127.0.0.2');
  const w = await join(sw);
  const closed1 = once(b.fl.engine, 'cycle-closed').then(([c]) => c as CycleClosed);
  for (const [address, v] of [['127.0.0.3', 1], ['127.0.0.4', 3]] as const) {
    const s = await worker(t, b, address);
    const id = await join(s);
    assert.deepEqual((await report(s, id, await ask(s, id), v)).data, { status: 'success' });
  }
  const c1 = await closed1;
  assert.deepEqual({ cycle: c1.cycle, checkpoint: c1.checkpoint, reports: c1.reports }, { cycle: 1, checkpoint: 2, reports: 2 });

  // The race, ordered by a lock rather than by time: the test holds a share lock on W's row. A newcomer
  // from W's address authenticates through B: B locks cycle 2 against assignments, picks W's row to make
  // room (no assignment in cycle 2 yet) and its delete waits on the test's lock. W asks through A
  // meanwhile: it must wait for B's eviction, not be assigned under it (the assignment's foreign-key check
  // takes only a key-share lock, which the test's lock does not block: unlocked, A would assign W and B's
  // delete would then take that assignment with it, after A had told W its request key).
  await db.query('BEGIN');
  await db.query('SELECT 1 FROM fl_workers WHERE id = $1 FOR SHARE', [w]);
  const newcomer = await worker(t, b, '127.0.0.2');
  const newcomerAuth = newcomer.call('model-centric/authenticate', { model_name: 'evict', model_version: '1.0' });
  await untilWaiting(db, 1);
  const asked = sw.call('model-centric/cycle-request', { worker_id: w, model: 'evict', version: '1.0', ping: 0, download: 0, upload: 0 });
  const stop = { done: false };
  const order = await Promise.race([asked.then((r) => `A answered W while B was evicting it: ${JSON.stringify(r)}`), untilWaiting(db, 2, stop).then(() => 'A waits for B')]);
  stop.done = true;
  assert.equal(order, 'A waits for B');
  await db.query('COMMIT');
  const v = await newcomerAuth;
  assert.equal(v.status, 'success', JSON.stringify(v));
  assert.notEqual(v.worker_id, w);
  assert.equal((await db.query('SELECT 1 FROM fl_workers WHERE id = $1', [w])).rowCount, 0, 'B evicted W to make room for the newcomer');
  // W is told its worker is gone (PyGrid's message), never given a request key of cycle 2.
  assert.deepEqual(await asked, { status: 'rejected', error: 'Not found any process related with this cycle and worker ID.' });

  // A worker whose key A knows, its row deleted afterwards (what an eviction deletes; no request does it to
  // a worker in the open cycle any more, so the test's SQL connection does): its report through A is
  // refused as an unknown key (PyGrid's message), every time, not answered success and counted by nobody.
  const sz = await worker(t, a, '127.0.0.7');
  const z = await join(sz);
  const key = await ask(sz, z);
  assert.equal((await db.query('DELETE FROM fl_workers WHERE id = $1', [z])).rowCount, 1);
  const refused = await report(sz, z, key, 100);
  assert.deepEqual(refused.data, { status: 'rejected', error: 'Invalid request key!' });
  assert.equal((refused.error as { code: string }).code, 'GRID_ERR_FORBIDDEN');
  assert.deepEqual((await report(sz, z, key, 100)).data, { status: 'rejected', error: 'Invalid request key!' });

  // Cycle 2 closes on Y1 and Y2 alone (max_diffs 2: had Z's report counted, Y1's would have closed it).
  // Y1 asks through A (A knows its key as unreported), reports through B, then repeats through A with
  // another diff: success, and the first report stands, counted once.
  const closed2 = closedOnEither([a, b]);
  const sy1a = await worker(t, a, '127.0.0.5');
  const y1 = await join(sy1a);
  const y1Key = await ask(sy1a, y1);
  assert.deepEqual((await report(await worker(t, b, '127.0.0.5'), y1, y1Key, 0.5, 3)).data, { status: 'success' });
  assert.deepEqual((await report(sy1a, y1, y1Key, 64, 3)).data, { status: 'success' });
  const sy2 = await worker(t, b, '127.0.0.6');
  const y2 = await join(sy2);
  assert.deepEqual((await report(sy2, y2, await ask(sy2, y2), 2.5, 1)).data, { status: 'success' });
  const c2 = await closed2;
  assert.deepEqual({ cycle: c2.cycle, checkpoint: c2.checkpoint, reports: c2.reports }, { cycle: 2, checkpoint: 3, reports: 2 });

  // Checkpoint 2 = old − mean(1, 3); checkpoint 3 = that − (3·0.5 + 1·2.5)/4: neither Z's 100 nor Y1's 64.
  for (const node of [a, b]) {
    assert.deepEqual((await checkpoint(node, 'evict', 2)).map((p) => Array.from(p.data)), movedBy(2), `checkpoint 2 through ${node.url}`);
    assert.deepEqual((await checkpoint(node, 'evict', 3)).map((p) => Array.from(p.data)), movedBy(3), `checkpoint 3 through ${node.url}`);
  }
});
