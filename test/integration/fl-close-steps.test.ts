// A cycle's close runs in steps (src/node/fl/cycles.ts closeCycle): a short transaction marks it closing,
// the averaging and the checkpoint's blob happen outside any transaction, a short transaction completes it.
// While a close averages, the node (and on PostgreSQL every replica) keeps answering; a closer stopped
// between its steps is taken over (a restart of the embedded node, another replica on PostgreSQL), and a
// closer that comes back late finds its last step matching nothing: the cycle is averaged once.
// GRID_TEST_DATABASE=postgres runs it on PostgreSQL with replicas sharing a blob dir.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { GridError } from '../../src/core/errors';
import { silentLogger } from '../../src/core/logger';
import { FlEngine, type CycleClosed } from '../../src/node/fl/cycles';
import { decodeState, encodeState, type StateTensor } from '../../src/node/fl/state';
import { FlStore } from '../../src/node/fl/store';
import { EmbeddedStore } from '../../src/node/store/db';
import { PostgresStore } from '../../src/node/store/postgres';
import type { Store } from '../../src/node/store/sql';
import { tempDir } from '../helpers/node-fixtures';
import { testDatabase } from '../helpers/postgres';

const model: StateTensor[] = [{ dims: [2, 3], data: Float32Array.from([1, 2, 3, 4, 5, 6]) }];
const diff = (v: number): StateTensor[] => [{ dims: [2, 3], data: Float32Array.from([v, 2 * v, 3 * v, 4 * v, 5 * v, 6 * v]) }];
const b64 = (t: StateTensor[]) => Buffer.from(encodeState(t)).toString('base64');
const postgres = process.env.GRID_TEST_DATABASE === 'postgres';

function deferred<T = void>() {
  let resolve!: (v: T) => void;
  const promise = new Promise<T>((r) => { resolve = r; });
  return { promise, resolve };
}

test('requests are answered while a close averages; a closer stopped between its steps is taken over and the cycle is averaged once', { timeout: 120_000 }, async (t) => {
  const dir = tempDir('grid-fl-close-');
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const blobs = path.join(dir, 'blobs');
  const { database } = await testDatabase(dir);
  const dbs: Store[] = [];
  const engines: FlEngine[] = [];
  // Replica A's close stops after writing the checkpoint blob, before its last step, until released.
  const written = deferred();
  const release = deferred();
  t.after(async () => {
    release.resolve();
    for (const e of engines) await e.close();
    for (const d of dbs) await d.close();
  });
  // The embedded node: one database (a restart opens the same file); PostgreSQL: a pool per replica.
  let embedded: EmbeddedStore | undefined;
  const openDb = async (): Promise<Store> => {
    if (!postgres) return embedded ??= (dbs.push(embedded = new EmbeddedStore(path.join(dir, 'meta.db'))), embedded);
    const db = await PostgresStore.open({ url: database!, log: silentLogger });
    dbs.push(db);
    return db;
  };
  const replica = async (name: string, opts: Partial<ConstructorParameters<typeof FlEngine>[0]> = {}) => {
    const local = path.join(dir, name);
    fs.mkdirSync(local, { recursive: true });
    const store = new FlStore(await openDb(), blobs, local);
    const engine = new FlEngine({ store, log: silentLogger, ...opts });
    engines.push(engine);
    await engine.start();
    return { store, engine };
  };

  const a = await replica('a', {
    closeStep: async (step) => {
      if (step !== 'written') return;
      written.resolve();
      await release.promise;
    },
  });
  const p = await a.engine.host({ owner: 'admin', model: encodeState(model), plans: {}, protocols: {}, averagingPlan: undefined, clientConfig: { name: 'steps', version: '1' }, serverConfig: { max_diffs: 2, max_workers: 4, cycle_length: 3600 } });
  const join = async (engine: FlEngine) => {
    const { worker_id } = await engine.authenticate({ model_name: 'steps', model_version: '1' }, '127.0.0.1');
    return { worker_id, reply: await engine.cycleRequest({ worker_id, model: 'steps', version: '1' }, '127.0.0.1') };
  };
  const workers = [];
  for (let i = 0; i < 3; i++) {
    const { worker_id, reply } = await join(a.engine);
    assert.equal(reply.status, 'accepted');
    workers.push({ worker_id, request_key: (reply as { request_key: string }).request_key });
  }
  // PostgreSQL: another replica that takes reports meanwhile (its report batch must not wait for the close).
  const c = postgres ? await replica('c') : undefined;

  await a.engine.report({ ...workers[0]!, diff: b64(diff(1)), num_samples: 3 });
  await a.engine.report({ ...workers[1]!, diff: b64(diff(5)), num_samples: 1 });
  await written.promise;

  // The close is between its steps: reports are refused as for a closed cycle, everything else answered.
  const closedError = (err: unknown) => err instanceof GridError && err.code === 'GRID_ERR_CYCLE_CLOSED';
  await assert.rejects(a.engine.report({ ...workers[2]!, diff: b64(diff(100)), num_samples: 1 }), closedError);
  if (c !== undefined) await assert.rejects(c.engine.report({ ...workers[2]!, diff: b64(diff(100)), num_samples: 1 }), closedError);
  assert.equal((await a.engine.checkpointBytes(p.id))?.number, 1);
  const late = await join(c?.engine ?? a.engine);
  assert.equal(late.reply.status, 'rejected');
  assert.match((late.reply as { reason: string }).reason, /closing/);

  // A stops here (as if killed). Another closer takes over: on the embedded node a restart (a new run on
  // the same database), on PostgreSQL a replica that finds the mark older than its takeover time.
  const b = await replica('b', { closeTakeoverMs: 0 });
  const closedByB = new Promise<CycleClosed>((resolve) => b.engine.once('cycle-closed', resolve));
  const closed = await closedByB;
  assert.deepEqual({ cycle: closed.cycle, checkpoint: closed.checkpoint, reports: closed.reports }, { cycle: 1, checkpoint: 2, reports: 2 });

  // A comes back and finishes its last step: it no longer holds the mark, so nothing is committed twice.
  let aClosed = false;
  a.engine.once('cycle-closed', () => { aClosed = true; });
  release.resolve();
  await a.engine.close();
  assert.equal(aClosed, false, 'the stopped closer did not close the cycle again');

  const checkpoints = await b.store.checkpoints(p.id);
  assert.deepEqual(checkpoints.map((x) => [x.number, x.cycle ?? null, x.reports]), [[1, null, 0], [2, 1, 2]]);
  // old − (3·1 + 1·5)/4 per unit of the pattern: only the two reports before the close.
  const after = decodeState((await b.engine.checkpointBytes(p.id))!.bytes)[0]!.data;
  model[0]!.data.forEach((v, k) => assert.equal(after[k], Math.fround(v - 2 * (k + 1)), `parameter ${k}`));
  const open = await b.store.openCycle(p.id);
  assert.equal(open?.sequence, 2);
  assert.equal(open?.closingMs, undefined);
  // The next cycle takes workers and reports again.
  const next = await join(b.engine);
  assert.equal(next.reply.status, 'accepted');
});
