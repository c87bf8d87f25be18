// Replicas on one PostgreSQL database (issue 16), the cache of model rows each replica keeps: a permission
// change or a delete through replica A while replica B hosts a new version of the same model must not drop
// B's version from A's cache. And text listings come back in one order on both stores, whatever the
// PostgreSQL database's collation. Real grid-node processes (the race) and in-process nodes (the order) on
// a real PostgreSQL started by the test; skipped, with the reason, where PostgreSQL (or the en_US locale)
// is missing.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import pg from 'pg';
import { GridClient } from '../../src/core/client';
import type { NamedTensors } from '../../src/core/protocol/tensor';
import { GridNode } from '../../src/node/server';
import { ADMIN_PASSWORD, mlpModel, seededFloats, tempDir } from '../helpers/node-fixtures';
import { postgresUnavailable } from '../helpers/postgres';
import { admin, replica, sql, withPostgres } from '../helpers/replicas';

const skip = postgresUnavailable();
if (skip !== undefined) process.stdout.write(`# replica cache tests skipped: ${skip}\n`);

/** How many of the replicas' statements wait on a lock in this database now. */
async function lockWaiters(c: pg.Client): Promise<number> {
  const r = await c.query<{ n: number }>(`SELECT count(*)::int AS n FROM pg_stat_activity
    WHERE datname = current_database() AND application_name = 'grid-node' AND wait_event_type = 'Lock'`);
  return r.rows[0]!.n;
}

/** Resolves once `n` of the replicas' statements wait on a lock (or `stop` says the wait is moot). */
async function untilWaiting(c: pg.Client, n: number, stop: { done: boolean } = { done: false }): Promise<void> {
  // PostgreSQL announces no lock wait: its activity view is read until it shows one (each read a round trip).
  while (!stop.done && await lockWaiters(c) < n) await new Promise((resolve) => setTimeout(resolve, 20));
}

const feeds = (): NamedTensors => ({ x: { dtype: 'float32', dims: [2, 6], data: seededFloats(12, 7) } });
const bytes = (out: NamedTensors) => { const y = out.y!.data as Float32Array; return Buffer.from(y.buffer, y.byteOffset, y.byteLength); };

test('a permission change or a delete through A while B hosts a new version of that model: A lists and runs B\'s version right after', { skip, timeout: 240_000 }, async (t) => {
  const server = await withPostgres(t);
  const database = await server.createDatabase();
  const blobs = tempDir('grid-shared-blobs-');
  t.after(() => fs.rmSync(blobs, { recursive: true, force: true }));
  const [a, b] = await Promise.all([replica(t, database, blobs), replica(t, database, blobs)]);
  // Two clients on A: one waits on the change, the other asks A what it lists meanwhile.
  const [ca, ca2, cb] = await Promise.all([admin(t, a.url), admin(t, a.url), admin(t, b.url)]);
  const db = await sql(t, database);

  const scenarios: { id: string; change: (c: GridClient, id: string) => Promise<unknown>; versions: string[] }[] = [
    { id: 'perm', change: (c, id) => c.setModelPermissions(`${id}@1`, { allowDownload: true }), versions: ['1', '2', '3'] },
    { id: 'del', change: (c, id) => c.deleteModel(`${id}@1`), versions: ['2', '3'] },
  ];
  for (const { id, change, versions } of scenarios) {
    await ca.hostModel(mlpModel(6, 5, 3, 1), { id, allowRemoteInference: true });
    await cb.hostModel(mlpModel(6, 5, 3, 2), { id, newVersion: true, allowRemoteInference: true });
    assert.deepEqual((await ca.listModels({ allVersions: true })).filter((m) => m.id === id).map((m) => m.version), ['1', '2']);

    // The interleaving, ordered by locks rather than by time: the test holds version 1's row, so A's change
    // (which writes that row) stops inside its transaction, after it began.
    await db.query('BEGIN');
    await db.query('SELECT 1 FROM models WHERE id = $1 AND version = 1 FOR UPDATE', [id]);
    const changing = change(ca, id);
    changing.catch(() => undefined);
    await untilWaiting(db, 1);
    // B hosts version 3 meanwhile. It either commits at once, or (the model's writers queue on its
    // model_names row) waits behind A's transaction: either way, A's change is under way when B's starts.
    const hosting = cb.hostModel(mlpModel(6, 5, 3, 3), { id, newVersion: true, allowRemoteInference: true });
    hosting.catch(() => undefined);
    const stop = { done: false };
    const order = await Promise.race([hosting.then(() => 'B committed first'), untilWaiting(db, 2, stop).then(() => 'B waits behind A')]);
    stop.done = true;
    // A answers a request meanwhile: when B committed, A re-reads its models now (the cache a stale
    // write-back would later overwrite while the generation says it is current).
    const meanwhile = (await ca2.listModels({ allVersions: true })).filter((m) => m.id === id).map((m) => m.version);
    assert.deepEqual(meanwhile, order === 'B committed first' ? ['1', '2', '3'] : ['1', '2'], order);
    await db.query('COMMIT');
    await changing;
    const hosted = await hosting;
    assert.equal(hosted.version, '3');

    // Right after, through A: B's version is listed, is the latest, and runs.
    assert.deepEqual((await ca.listModels({ allVersions: true })).filter((m) => m.id === id).map((m) => m.version), versions, `${id}: A lists B's version (${order})`);
    const latest = await ca.modelInfo(id);
    assert.equal(latest.version, '3', `${id}: A's latest is B's version`);
    assert.equal(latest.versions, versions.length);
    const onB = bytes(await cb.runInference(`${id}@3`, feeds()));
    assert.ok(bytes(await ca.runInference(`${id}@3`, feeds())).equals(onB), `${id}: A runs B's version`);
    assert.ok(bytes(await ca.runInference(id, feeds())).equals(onB), `${id}: A's plain name runs B's version`);
    if (id === 'perm') assert.equal((await ca.modelInfo(`${id}@1`)).allow_download, true, 'the permission change itself holds');
    else await assert.rejects(ca.modelInfo(`${id}@1`), /no version 1/);
    process.stdout.write(`# ${id}: ${order}\n`);
  }
});

/** Why a database with en_US collation cannot be made here, or undefined when it can. */
function enUsUnavailable(): string | undefined {
  if (skip !== undefined) return skip;
  let locales: string;
  try { locales = execFileSync('locale', ['-a'], { encoding: 'utf8' }); } catch { return 'no `locale` command to list the system locales'; }
  return /^en_US\.utf-?8$/im.test(locales) ? undefined : 'the en_US.UTF-8 locale is not installed (locale -a), so no database can collate by it';
}
const enUsSkip = enUsUnavailable();
if (enUsSkip !== undefined) process.stdout.write(`# collation test skipped: ${enUsSkip}\n`);

test('on a PostgreSQL database collating by en_US, models, users and datasets list in the same (code point) order as on the embedded store', { skip: enUsSkip, timeout: 120_000 }, async (t) => {
  const server = await withPostgres(t);
  const root = `postgres://grid@127.0.0.1:${server.port}`;
  const adminDb = await sql(t, `${root}/postgres`);
  await adminDb.query(`CREATE DATABASE grid_en_us LC_COLLATE 'en_US.UTF-8' LC_CTYPE 'en_US.UTF-8' TEMPLATE template0`);
  const enUs = await sql(t, `${root}/grid_en_us`);
  // The database really orders text otherwise than byte by byte: what the test is about.
  const plain = (await enUs.query<{ x: string }>("SELECT x FROM (VALUES ('B'), ('a'), ('_x')) AS v(x) ORDER BY x")).rows.map((r) => r.x);
  assert.notDeepEqual(plain, ['B', '_x', 'a'], `en_US collation orders ${plain.join(' ')}`);

  const names = ['B', 'a', '_x'];
  const csv = path.join(tempDir('grid-datasets-'), 'd.csv');
  fs.writeFileSync(csv, 'x,y\n1,0\n2,1\n');
  t.after(() => fs.rmSync(path.dirname(csv), { recursive: true, force: true }));
  const listings = async (opts: { database?: string }) => {
    const dir = tempDir('grid-order-');
    const node = await GridNode.start({ port: 0, dataDir: dir, adminPassword: ADMIN_PASSWORD, processMetrics: false, ...opts });
    t.after(async () => { await node.close(); fs.rmSync(dir, { recursive: true, force: true }); });
    const c = await admin(t, node.url);
    for (const name of names) {
      await c.hostModel(mlpModel(6, 5, 3), { id: name });
      await node.auth.addUser(name, 'a-password-of-length');
      await node.registerDataset({ name, path: csv });
    }
    return {
      models: (await c.listModels()).map((m) => m.id),
      users: (await node.auth.listUsers()).map((u) => u.username),
      datasets: (await c.listDatasets()).map((d) => d.id),
    };
  };
  const embedded = await listings({});
  const postgres = await listings({ database: `${root}/grid_en_us` });
  assert.deepEqual(embedded.models, ['B', '_x', 'a'], 'the embedded store lists by code point');
  assert.deepEqual(postgres, embedded, 'PostgreSQL with en_US collation lists as the embedded store does');
});
