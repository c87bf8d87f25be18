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
