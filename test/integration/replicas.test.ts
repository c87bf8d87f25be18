// Node replicas on PostgreSQL (issue 16): real grid-node processes on one real PostgreSQL database
// (started by the test with initdb/pg_ctl, test/helpers/postgres.ts) and one shared blob dir, each with
// its own data dir. Skipped, with the reason, only where PostgreSQL is not installed.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { GridClient } from '../../src/core/client';
import type { GridError } from '../../src/core/errors';
import type { NodeEvent } from '../../src/core/protocol/messages';
import type { NamedTensors } from '../../src/core/protocol/tensor';
import { GridNode } from '../../src/node/server';
import { ADMIN_PASSWORD, mlpModel, seededFloats, tempDir } from '../helpers/node-fixtures';
import { freePort, postgresUnavailable } from '../helpers/postgres';
import { admin, replica, withPostgres } from '../helpers/replicas';

const skip = postgresUnavailable();
if (skip !== undefined) process.stdout.write(`# replicas tests skipped: ${skip}\n`);

/** Resolves with the first event `pick` accepts. */
function nextEvent(c: GridClient, pick: (ev: NodeEvent) => boolean): { seen: Promise<NodeEvent>; ready: Promise<unknown> } {
  const stream = c.subscribe(['models']);
  const seen = new Promise<NodeEvent>((resolve) => {
    stream.subscribe({ next: (ev) => { if (pick(ev)) { stream.cancel(); resolve(ev); } } });
  });
  // The subscription is registered once any later request on the same socket is answered.
  return { seen, ready: c.getId() };
}

const feeds = (): NamedTensors => ({ x: { dtype: 'float32', dims: [2, 6], data: seededFloats(12, 7) } });
const bytes = (out: NamedTensors) => { const y = out.y!.data as Float32Array; return Buffer.from(y.buffer, y.byteOffset, y.byteLength); };

test('three replicas on one database: a model served through A is listed and runs on B and C, C hears of it, and a delete through B is seen everywhere', { skip, timeout: 240_000 }, async (t) => {
  const pg = await withPostgres(t);
  const database = await pg.createDatabase();
  const blobs = tempDir('grid-shared-blobs-');
  t.after(() => fs.rmSync(blobs, { recursive: true, force: true }));
  // Started together on a new database: one migrates, one creates admin and the node key, all agree.
  const [a, b, c] = await Promise.all([replica(t, database, blobs), replica(t, database, blobs), replica(t, database, blobs)]);
  const [ca, cb, cc] = await Promise.all([admin(t, a!.url), admin(t, b!.url), admin(t, c!.url)]);
  const ids = await Promise.all([ca.getId(), cb.getId(), cc.getId()]);
  assert.equal(new Set(ids.map((i) => i.id)).size, 1, `the replicas are one node: ${ids.map((i) => i.id).join(', ')}`);

  const added = nextEvent(cc, (ev) => ev.event === 'model-added' && ev.model.id === 'shared');
  await added.ready;
  const info = await ca.hostModel(mlpModel(6, 5, 3), { id: 'shared', allowRemoteInference: true });
  const heard = await added.seen;
  assert.equal(heard.event === 'model-added' && heard.model.sha256, info.sha256, 'the subscriber on C heard of the model A hosted');

  for (const other of [cb, cc]) {
    assert.deepEqual((await other.listModels()).map((m) => m.id), ['shared']);
    assert.equal((await other.modelInfo('shared')).sha256, info.sha256);
  }
  const onA = await ca.runInference('shared', feeds());
  for (const other of [cb, cc]) assert.ok(bytes(await other.runInference('shared', feeds())).equals(bytes(onA)), 'B and C run the bytes A stored');

  // A permission change through C holds on A at once (no replica answers from a stale cache).
  await admin(t, c!.url).then((x) => x.addUser('bob', 'bob-password-123'));
  const bob = await GridClient.connect(a!.url, { reconnect: { maxAttempts: 0 }, credentials: { username: 'bob', password: 'bob-password-123' } });
  t.after(() => bob.dispose());
  assert.equal(bytes(await bob.runInference('shared', feeds())).length, bytes(onA).length);
  await cc.setModelPermissions('shared', { allowRemoteInference: false });
  await assert.rejects(bob.runInference('shared', feeds()), (e: GridError) => e.code === 'GRID_ERR_FORBIDDEN');

  const removed = nextEvent(ca, (ev) => ev.event === 'model-removed' && ev.model_id === 'shared');
  await removed.ready;
  await cb.deleteModel('shared');
  await removed.seen;
  for (const any of [ca, cb, cc]) {
    assert.deepEqual(await any.listModels(), []);
    await assert.rejects(any.runInference('shared', feeds()), (e: GridError) => e.code === 'GRID_ERR_NOT_FOUND');
  }
  // On a shared blob dir a delete leaves the bytes to the sweep (after --blob-grace, under the pin lock):
  // another replica may be reusing them this instant (replicas-uploads tests the sweep and that race).
  assert.deepEqual(fs.readdirSync(path.join(blobs, 'blobs')).flatMap((d) => fs.readdirSync(path.join(blobs, 'blobs', d))), [info.sha256], 'the shared blob stays for the sweep');
});

test('a node whose database cannot be reached fails to start with GRID_ERR_DATABASE_UNAVAILABLE, quickly, and leaves its data dir free', { skip, timeout: 60_000 }, async (t) => {
  // A port nothing listens on.
  const port = await freePort();
  const dir = tempDir('grid-replica-');
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const started = Date.now();
  await assert.rejects(GridNode.start({ port: 0, dataDir: dir, adminPassword: ADMIN_PASSWORD, processMetrics: false, database: `postgres://grid@127.0.0.1:${port}/nothing` }),
    (e: GridError) => e.code === 'GRID_ERR_DATABASE_UNAVAILABLE' && e.message.includes(`127.0.0.1:${port}`));
  assert.ok(Date.now() - started < 20_000, 'refused, not hung');
  assert.ok(!fs.existsSync(path.join(dir, 'node.pid')), 'the data dir is free again');
  assert.ok(!fs.existsSync(path.join(dir, 'meta.db')), 'no embedded database was made instead');
});

test('PostgreSQL stopped under load: requests end with GRID_ERR_DATABASE_UNAVAILABLE, none hangs; once it is back the replicas serve again and nothing committed is lost', { skip, timeout: 240_000 }, async (t) => {
  const pg = await withPostgres(t);
  const database = await pg.createDatabase();
  const blobs = tempDir('grid-shared-blobs-');
  t.after(() => fs.rmSync(blobs, { recursive: true, force: true }));
  const [a, b] = await Promise.all([replica(t, database, blobs), replica(t, database, blobs)]);
  const [ca, cb] = await Promise.all([admin(t, a!.url), admin(t, b!.url)]);
  await ca.hostModel(mlpModel(6, 5, 3), { id: 'before-stop', allowRemoteInference: true });
  const expected = bytes(await ca.runInference('before-stop', feeds()));

  // Load on both replicas while the database goes away: every request gets an answer, right or coded.
  let stopped = false;
  const outcomes: string[] = [];
  const load = async (c: GridClient) => {
    for (let i = 0; !stopped || i < 5; i++) {
      const started = Date.now();
      try {
        const out = await c.runInference('before-stop', feeds());
        assert.ok(bytes(out).equals(expected));
        outcomes.push('ok');
      } catch (err) {
        assert.equal((err as GridError).code, 'GRID_ERR_DATABASE_UNAVAILABLE', `a request failed with ${(err as Error).message}`);
        outcomes.push('unavailable');
      }
      assert.ok(Date.now() - started < 40_000, 'a request hung while the database was down');
      if (i > 500) break;
    }
  };
  const loaded = Promise.all([load(ca), load(cb), load(ca)]);
  await pg.stop('fast');
  stopped = true;
  await loaded;
  assert.ok(outcomes.includes('unavailable'), `requests after the stop are refused with a code (${outcomes.length} answered)`);
  await assert.rejects(cb.hostModel(mlpModel(4, 4, 2), { id: 'during-stop' }), (e: GridError) => e.code === 'GRID_ERR_DATABASE_UNAVAILABLE');

  await pg.start();
  // The pools reconnect on the next request: no replica needs a restart.
  for (const c of [ca, cb]) {
    assert.deepEqual((await c.listModels()).map((m) => m.id), ['before-stop'], 'what was committed before the stop is there, and nothing half-written');
    assert.ok(bytes(await c.runInference('before-stop', feeds())).equals(expected));
  }
  await cb.hostModel(mlpModel(4, 4, 2), { id: 'after-restart', allowRemoteInference: true });
  assert.deepEqual((await ca.listModels()).map((m) => m.id), ['after-restart', 'before-stop']);
});
