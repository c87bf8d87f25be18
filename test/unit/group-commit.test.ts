// Group commit on the async store (store/group-commit.ts): one transaction per batch, a savepoint per item,
// callers answered after COMMIT, one batch at a time, and no one else's statement inside a batch.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { silentLogger } from '../../src/core/logger';
import { EmbeddedStore } from '../../src/node/store/db';
import { GroupCommit } from '../../src/node/store/group-commit';
import { PostgresStore } from '../../src/node/store/postgres';
import type { Store } from '../../src/node/store/sql';
import { postgresUnavailable, sharedPostgres } from '../helpers/postgres';

type After = { after(fn: () => Promise<void>): void };

async function store(t: After): Promise<Store> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'grid-group-commit-'));
  const db = new EmbeddedStore(path.join(dir, 'meta.db'));
  t.after(async () => { await db.close(); fs.rmSync(dir, { recursive: true, force: true }); });
  await db.run('CREATE TABLE items (name TEXT PRIMARY KEY)');
  return db;
}

async function postgres(t: After): Promise<Store> {
  const db = await PostgresStore.open({ url: await (await sharedPostgres()).createDatabase(), log: silentLogger });
  t.after(() => db.close());
  await db.run('CREATE TABLE items (name TEXT PRIMARY KEY)');
  return db;
}

const names = async (db: Store) => (await db.all('SELECT name FROM items ORDER BY name')).map((r) => String(r.name));

test('one batch: each item sees the ones before it, a failing item undoes only its own writes, answers come after COMMIT', async (t) => {
  const db = await store(t);
  const log: string[] = [];
  const commits = new GroupCommit(db, { committed: () => log.push('committed') });
  const add = (name: string, fail = false) => commits.run(async () => {
    await db.run('INSERT INTO items (name) VALUES (?)', [name]);
    if (fail) throw new Error(`no ${name}`);
    return Number((await db.get('SELECT COUNT(*) AS n FROM items'))!.n);
  }).then((n) => { log.push(`${name}:${n}`); return n; });
  const results = await Promise.allSettled([add('a'), add('b', true), add('c')]);
  assert.deepEqual(results.map((r) => r.status), ['fulfilled', 'rejected', 'fulfilled']);
  assert.deepEqual(log, ['committed', 'a:1', 'c:2'], 'c counted a but not the undone b; everyone answered after the commit');
  assert.deepEqual(await names(db), ['a', 'c']);
});

async function oneBatchAtATime(db: Store): Promise<void> {
  let fail = true;
  const order: string[] = [];
  const commits = new GroupCommit(db, { beforeCommit: () => { if (fail) throw new Error('disk full'); } });
  let release!: () => void;
  const gate = new Promise<void>((resolve) => { release = resolve; });
  let entered!: () => void;
  const inBatch = new Promise<void>((resolve) => { entered = resolve; });
  const first = commits.run(async () => {
    order.push('first started');
    await db.run("INSERT INTO items (name) VALUES ('first')");
    entered();
    await gate;
    order.push('first done');
  });
  await inBatch;
  // Queued while the first batch is open: the next batch, not a second transaction beside it.
  const second = commits.run(async () => { order.push('second started'); await db.run("INSERT INTO items (name) VALUES ('second')"); });
  // Someone else's write meanwhile: it waits for the batch instead of joining it.
  const outside = db.run("INSERT INTO items (name) VALUES ('outside')");
  // PostgreSQL runs it on another connection at once; and ten more round trips are time enough for a
  // second batch to open its own transaction beside the first, were it allowed to.
  if (db.kind === 'postgres') {
    await outside;
    for (let i = 0; i < 10; i++) await db.get('SELECT 1 AS one');
  }
  await new Promise((resolve) => setImmediate(resolve));
  assert.deepEqual(order, ['first started']);
  release();
  fail = true;
  await assert.rejects(first, /disk full/);
  fail = false;
  await second;
  await outside;
  assert.deepEqual(order, ['first started', 'first done', 'second started']);
  assert.deepEqual(await names(db), ['outside', 'second'], 'the failed batch took only its own row with it');
}

test('work queued while a batch runs waits for its COMMIT; a statement from outside never lands in (or rolls back with) the batch', async (t) => {
  await oneBatchAtATime(await store(t));
});

test('the same on PostgreSQL, where another batch could open a transaction beside the first', { skip: postgresUnavailable() ?? false, timeout: 120_000 }, async (t) => {
  await oneBatchAtATime(await postgres(t));
});

test('a committed hook that throws: the batch stays committed and every caller is still answered', async (t) => {
  const db = await store(t);
  let hookCalls = 0;
  const commits = new GroupCommit(db, { committed: () => { hookCalls++; throw new Error('a listener failed'); } });
  const a = commits.run(() => db.run('INSERT INTO items (name) VALUES (?)', ['a']));
  const b = commits.run(() => { throw new Error('b refused'); });
  const c = commits.run(() => db.run('INSERT INTO items (name) VALUES (?)', ['c']));
  // flush is what the queued setImmediate calls; the hook's error reaches it, after the callers are settled.
  await assert.rejects(commits.flush(), /a listener failed/);
  assert.equal(hookCalls, 1);
  assert.equal(await a, 1);
  await assert.rejects(b, /b refused/);
  assert.equal(await c, 1);
  assert.deepEqual(await names(db), ['a', 'c']);
});
