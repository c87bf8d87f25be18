// An open cycle's reports are durable as its stored running sum (src/node/fl/store.ts). A data dir from a
// node that stored each report's diff as a row keeps counting those reports: the engine adds them at
// start, the first sum it stores holds them and clears the rows, and a later start counts each once.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { silentLogger } from '../../src/core/logger';
import { packDiff } from '../../src/node/fl/averaging';
import { FlEngine, type CycleClosed, type CycleSumLost } from '../../src/node/fl/cycles';
import { decodeState, encodeState, type StateTensor } from '../../src/node/fl/state';
import { FlStore } from '../../src/node/fl/store';
import { EmbeddedStore } from '../../src/node/store/db';
import { MIGRATIONS } from '../../src/node/store/migrations';
import { tempDir } from '../helpers/node-fixtures';

const model: StateTensor[] = [{ dims: [2, 3], data: Float32Array.from([1, 2, 3, 4, 5, 6]) }];
const diff = (v: number): StateTensor[] => [{ dims: [2, 3], data: Float32Array.from([v, 2 * v, 3 * v, 4 * v, 5 * v, 6 * v]) }];
const b64 = (t: StateTensor[]) => Buffer.from(encodeState(t)).toString('base64');


/**
 * Makes an embedded meta.db look like an older node's (schema 4): without fl_partials (migration 5) and
 * what the migrations after it add (6 uploads, 7 training jobs, 8 sign-ins, 9 closing marks, 10 job bytes).
 * A new migration adds its undo here.
 */
async function toSchema4(db: EmbeddedStore): Promise<void> {
  for (const table of ['fl_partials', 'uploads', 'blob_pins', 'training_job_blobs', 'training_job_events', 'training_jobs', 'signin_failures']) await db.run(`DROP TABLE ${table}`);
  for (const column of ['closing_ms', 'closer']) await db.run(`ALTER TABLE fl_cycles DROP COLUMN ${column}`);
  assert.equal(MIGRATIONS.length, 10, 'a migration was added: undo it in toSchema4 too');
  await db.run('PRAGMA user_version = 4');
}

test('diffs an older node stored as rows are counted once: added at start, held by the first stored sum, cleared from their rows', { timeout: 60_000 }, async (t) => {
  const dir = tempDir('grid-fl-sum-');
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const file = path.join(dir, 'meta.db');
  let db = new EmbeddedStore(file);
  const open = async () => { const store = new FlStore(db, dir); await store.sweepSums(); const engine = new FlEngine({ store, log: silentLogger }); await engine.start(); return { store, engine }; };
  let { engine } = await open();
  await engine.host({ owner: 'admin', model: encodeState(model), plans: {}, protocols: {}, averagingPlan: undefined, clientConfig: { name: 'old', version: '1' }, serverConfig: { max_diffs: 3, max_workers: 3, cycle_length: 3600 } });
  const workers = [];
  for (let i = 0; i < 3; i++) {
    const { worker_id } = await engine.authenticate({ model_name: 'old', model_version: '1' }, '127.0.0.1');
    const reply = await engine.cycleRequest({ worker_id, model: 'old', version: '1' }, '127.0.0.1');
    assert.equal(reply.status, 'accepted');
    workers.push({ worker_id, request_key: (reply as { request_key: string }).request_key });
  }
  // Worker 0's report as an older node stored it: the diff in its assignment row, weight 2.
  await db.run('UPDATE fl_assignments SET reported_ms = ?, weight = ?, diff = ? WHERE request_key = ?', [Date.now(), 2, packDiff(diff(1)), workers[0]!.request_key]);
  await engine.close();
  await db.close();

  db = new EmbeddedStore(file);
  ({ engine } = await open());
  await engine.report({ ...workers[1]!, diff: b64(diff(4)), num_samples: 1 });
  assert.equal(Number((await db.get('SELECT COUNT(*) AS n FROM fl_assignments WHERE diff IS NOT NULL'))!.n), 0, 'the row diff is in the stored sum now');
  await engine.close();
  await db.close();

  db = new EmbeddedStore(file);
  const reopened = await open();
  const store = reopened.store;
  engine = reopened.engine;
  const closed = new Promise((resolve) => engine.once('cycle-closed', resolve));
  await engine.report({ ...workers[2]!, diff: b64(diff(8)), num_samples: 1 });
  await closed;
  const c = await engine.checkpointBytes((await store.findProcess('old', '1'))!.id);
  assert.equal(c?.number, 2);
  // old − (2·1 + 1·4 + 1·8)/4 per unit of the pattern: 3.5 each, not 4 (worker 0 counted twice).
  const after = decodeState(c!.bytes)[0]!.data;
  model[0]!.data.forEach((v, k) => assert.ok(Math.abs(after[k]! - (v - 3.5 * (k + 1))) < 1e-6, `parameter ${k}: ${after[k]}, expected ${v - 3.5 * (k + 1)}`));
  await engine.close();
  await db.close();
});

test('a running sum an older node stored (meta fl.sum.<cycle>, file <cycle>.<slot>) still counts after the upgrade: it becomes a partial sum the close adds, once', { timeout: 60_000 }, async (t) => {
  const dir = tempDir('grid-fl-sum-');
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const file = path.join(dir, 'meta.db');
  let db = new EmbeddedStore(file);
  let store = new FlStore(db, dir);
  let engine = new FlEngine({ store, log: silentLogger });
  await engine.start();
  await engine.host({ owner: 'admin', model: encodeState(model), plans: {}, protocols: {}, averagingPlan: undefined, clientConfig: { name: 'older', version: '1' }, serverConfig: { max_diffs: 3, max_workers: 3, cycle_length: 3600 } });
  const workers = [];
  for (let i = 0; i < 3; i++) {
    const { worker_id } = await engine.authenticate({ model_name: 'older', model_version: '1' }, '127.0.0.1');
    const reply = await engine.cycleRequest({ worker_id, model: 'older', version: '1' }, '127.0.0.1');
    workers.push({ worker_id, request_key: (reply as { request_key: string }).request_key });
  }
  await engine.report({ ...workers[0]!, diff: b64(diff(1)), num_samples: 2 });
  await engine.close();

  // Turn the stored sum into an older node's: its record in meta, its file without a replica, schema 4.
  const part = (await db.get('SELECT cycle_id, replica, slot, reports, weight FROM fl_partials'))!;
  const sums = path.join(dir, 'fl-sums');
  fs.renameSync(path.join(sums, `${part.cycle_id}.${part.replica}.${part.slot}`), path.join(sums, `${part.cycle_id}.${part.slot}`));
  await db.setMeta(`fl.sum.${part.cycle_id}`, JSON.stringify({ slot: Number(part.slot), reports: Number(part.reports), weight: Number(part.weight) }));
  await toSchema4(db);
  await db.close();

  db = new EmbeddedStore(file);
  assert.equal(await db.getMeta(`fl.sum.${part.cycle_id}`), undefined, 'the migration moved the record');
  store = new FlStore(db, dir);
  await store.sweepSums();
  engine = new FlEngine({ store, log: silentLogger });
  await engine.start();
  const closed = new Promise((resolve) => engine.once('cycle-closed', resolve));
  await engine.report({ ...workers[1]!, diff: b64(diff(4)), num_samples: 1 });
  await engine.report({ ...workers[2]!, diff: b64(diff(8)), num_samples: 1 });
  await closed;
  const c = await engine.checkpointBytes((await store.findProcess('older', '1'))!.id);
  // old − (2·1 + 1·4 + 1·8)/4 per unit of the pattern: the older sum counted once.
  const after = decodeState(c!.bytes)[0]!.data;
  model[0]!.data.forEach((v, k) => assert.equal(after[k], Math.fround(v - 3.5 * (k + 1)), `parameter ${k}`));
  assert.deepEqual(fs.readdirSync(sums), [], 'the closed cycle\'s sum files are gone');
  await engine.close();
  await db.close();
});

/** An embedded data dir whose open cycle has a running sum as an older node stored it, its file at `olderFile(cycle, slot)`. */
async function olderSum(dir: string, blobs: string, name: string, olderFile: (cycle: number, slot: number) => string) {
  const file = path.join(dir, 'meta.db');
  let db = new EmbeddedStore(file);
  const store = new FlStore(db, blobs, dir);
  const engine = new FlEngine({ store, log: silentLogger });
  await engine.start();
  await engine.host({ owner: 'admin', model: encodeState(model), plans: {}, protocols: {}, averagingPlan: undefined, clientConfig: { name, version: '1' }, serverConfig: { max_diffs: 3, max_workers: 3, cycle_length: 3600 } });
  const workers = [];
  for (let i = 0; i < 3; i++) {
    const { worker_id } = await engine.authenticate({ model_name: name, model_version: '1' }, '127.0.0.1');
    const reply = await engine.cycleRequest({ worker_id, model: name, version: '1' }, '127.0.0.1');
    workers.push({ worker_id, request_key: (reply as { request_key: string }).request_key });
  }
  await engine.report({ ...workers[0]!, diff: b64(diff(1)), num_samples: 2 });
  await engine.close();
  const part = (await db.get('SELECT cycle_id, replica, slot, reports, weight FROM fl_partials'))!;
  const older = olderFile(Number(part.cycle_id), Number(part.slot));
  fs.mkdirSync(path.dirname(older), { recursive: true });
  fs.renameSync(path.join(blobs, 'fl-sums', `${part.cycle_id}.${part.replica}.${part.slot}`), older);
  await db.setMeta(`fl.sum.${part.cycle_id}`, JSON.stringify({ slot: Number(part.slot), reports: Number(part.reports), weight: Number(part.weight) }));
  await toSchema4(db);
  await db.close();
  db = new EmbeddedStore(file);
  return { db, workers, older };
}

test('with a separate blob dir (--blobs), an older node\'s running sum in <data-dir>/fl-sums moves to <blobs>/fl-sums at start and still counts, once', { timeout: 60_000 }, async (t) => {
  const dir = tempDir('grid-fl-sum-');
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const blobs = path.join(dir, 'blobs');
  // An older node kept its sums in its own data dir, whatever --blobs said.
  const { db, workers, older } = await olderSum(dir, blobs, 'blobs', (cycle, slot) => path.join(dir, 'fl-sums', `${cycle}.${slot}`));
  t.after(() => db.close());
  const store = new FlStore(db, blobs, dir);
  await store.sweepSums();
  assert.equal(fs.existsSync(older), false, 'moved out of the data dir');
  const engine = new FlEngine({ store, log: silentLogger });
  await engine.start();
  const closed = new Promise((resolve) => engine.once('cycle-closed', resolve));
  await engine.report({ ...workers[1]!, diff: b64(diff(4)), num_samples: 1 });
  await engine.report({ ...workers[2]!, diff: b64(diff(8)), num_samples: 1 });
  await closed;
  const after = decodeState((await engine.checkpointBytes((await store.findProcess('blobs', '1'))!.id))!.bytes)[0]!.data;
  // old − (2·1 + 1·4 + 1·8)/4 per unit of the pattern: the older sum counted once.
  model[0]!.data.forEach((v, k) => assert.equal(after[k], Math.fround(v - 3.5 * (k + 1)), `parameter ${k}`));
  assert.deepEqual(fs.readdirSync(path.join(blobs, 'fl-sums')), [], 'the closed cycle\'s sum files are gone');
  await engine.close();
});

test('a running sum whose file is lost does not hold its cycle: the close says which file (coded), leaves its reports out and closes once', { timeout: 60_000 }, async (t) => {
  const dir = tempDir('grid-fl-sum-');
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const blobs = path.join(dir, 'blobs');
  const { db, workers, older } = await olderSum(dir, blobs, 'lost', (cycle, slot) => path.join(dir, 'elsewhere', `${cycle}.${slot}`));
  t.after(() => db.close());
  const store = new FlStore(db, blobs, dir);
  await store.sweepSums();
  const engine = new FlEngine({ store, log: silentLogger });
  const lost: CycleSumLost[] = [];
  engine.on('cycle-sum-lost', (l) => lost.push(l));
  await engine.start();
  const closed = new Promise<CycleClosed>((resolve) => engine.once('cycle-closed', resolve));
  await engine.report({ ...workers[1]!, diff: b64(diff(4)), num_samples: 1 });
  await engine.report({ ...workers[2]!, diff: b64(diff(8)), num_samples: 1 });
  const c = await closed;
  assert.equal(lost.length, 1);
  assert.equal(lost[0]!.error.code, 'GRID_ERR_NOT_FOUND');
  assert.equal(lost[0]!.reports, 1);
  assert.match(lost[0]!.error.message, new RegExp(`FL cycle ${c.cycle}.*${path.basename(older)}`));
  // The two reports that remain: old − (4 + 8)/2 per unit of the pattern.
  assert.equal(c.reports, 2);
  const after = decodeState((await engine.checkpointBytes(c.processId))!.bytes)[0]!.data;
  model[0]!.data.forEach((v, k) => assert.equal(after[k], Math.fround(v - 6 * (k + 1)), `parameter ${k}`));
  assert.equal((await store.checkpoints(c.processId)).length, 2);
  assert.equal((await store.openCycle(c.processId))?.sequence, 2);
  await engine.close();
});
