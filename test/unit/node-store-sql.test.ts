// The storage seam's pure parts: PostgreSQL placeholders from the one dialect, and the embedded store's
// notifications (delivered at commit, dropped on rollback, as PostgreSQL's NOTIFY is).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { EmbeddedStore } from '../../src/node/store/db';
import { numbered, shownUrl } from '../../src/node/store/postgres';

test('placeholders are numbered outside quoted strings and identifiers', () => {
  assert.equal(numbered('SELECT * FROM t WHERE a = ? AND b = ?'), 'SELECT * FROM t WHERE a = $1 AND b = $2');
  assert.equal(numbered("UPDATE t SET alias = '?' WHERE id = ? AND \"we?rd\" = ?"), "UPDATE t SET alias = '?' WHERE id = $1 AND \"we?rd\" = $2");
  assert.equal(numbered("SELECT 'it''s ?', ?"), "SELECT 'it''s ?', $1");
});

test('a database URL is shown without its password', () => {
  assert.equal(shownUrl('postgres://grid:s3cret@db:5432/node'), 'postgres://grid:***@db:5432/node');
  assert.equal(shownUrl('postgres://grid@db/node'), 'postgres://grid@db/node');
});

test('embedded notifications arrive after commit, and not at all after a rollback', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'grid-store-sql-'));
  const db = new EmbeddedStore(path.join(dir, 'meta.db'));
  t.after(async () => { await db.close(); fs.rmSync(dir, { recursive: true, force: true }); });
  const heard: string[] = [];
  const stop = db.listen('models', (p) => heard.push(p));
  await db.transaction(async () => {
    await db.notify('models', 'committed');
    assert.deepEqual(heard, [], 'nothing before the commit');
  });
  await assert.rejects(db.transaction(async () => {
    await db.notify('models', 'rolled back');
    throw new Error('boom');
  }), /boom/);
  await db.notify('models', 'outside');
  stop();
  await db.notify('models', 'after stop');
  assert.deepEqual(heard, ['committed', 'outside']);
});

test('the embedded store reuses its statements: one that failed, one read to its first row, and a write after them all work again', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'grid-store-sql-'));
  const file = path.join(dir, 'meta.db');
  const db = new EmbeddedStore(file);
  t.after(async () => { await db.close(); fs.rmSync(dir, { recursive: true, force: true }); });
  await db.run('CREATE TABLE t (k TEXT PRIMARY KEY, v INTEGER)');
  const insert = 'INSERT INTO t (k, v) VALUES (?, ?)';
  await db.run(insert, ['a', 1]);
  await assert.rejects(db.run(insert, ['a', 2]), /UNIQUE/);
  assert.equal(await db.run(insert, ['b', 2]), 1, 'the statement that failed runs again');
  // A read stopped at its first row, then a write in a transaction: no statement is left running.
  assert.equal((await db.get('SELECT k FROM t ORDER BY k'))?.k, 'a');
  await db.transaction(async () => { await db.run(insert, ['c', 3]); });
  assert.deepEqual((await db.all('SELECT k FROM t ORDER BY k')).map((r) => r.k), ['a', 'b', 'c']);
  await db.close();
  // Everything committed is there after a reopen (close finalized the kept statements).
  const again = new EmbeddedStore(file);
  try {
    assert.deepEqual((await again.all('SELECT k, v FROM t ORDER BY k')).map((r) => `${r.k}${r.v}`), ['a1', 'b2', 'c3']);
  } finally {
    await again.close();
  }
});
