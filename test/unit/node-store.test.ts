// The node's storage pieces on real files in a temp dir: auth, the metadata db, blobs, the data dir lock.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import { Readable } from 'node:stream';
import { createHash } from 'node:crypto';
import { Auth, hashPassword, verifyPassword } from '../../src/node/auth';
import { EmbeddedStore } from '../../src/node/store/db';
import { BlobStore } from '../../src/node/store/blobs';
import { lockDataDir } from '../../src/node/store/lock';
import { GridError } from '../../src/core/errors';
import { tempDir } from '../helpers/node-fixtures';

function freshDir(t: { after(fn: () => void): void }): string {
  const dir = tempDir('grid-store-');
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

test('passwords are scrypt hashes with a per-user salt, and verify only the right password', async () => {
  const a = await hashPassword('hunter2-hunter2');
  const b = await hashPassword('hunter2-hunter2');
  assert.match(a, /^scrypt\$16384\$8\$1\$/);
  assert.notEqual(a, b, 'salted: the same password hashes differently');
  assert.equal(await verifyPassword('hunter2-hunter2', a), true);
  assert.equal(await verifyPassword('hunter2-hunter3', a), false);
  assert.equal(await verifyPassword('x', 'not-a-hash'), false);
});

test('sessions: tokens work until they expire, are stored only as hashes, and a new password revokes them', async (t) => {
  const dir = freshDir(t);
  const db = new EmbeddedStore(path.join(dir, 'meta.db'));
  t.after(() => db.close());
  const auth = new Auth(db, { sessionTtlMs: 60_000 });
  const generated = await auth.ensureAdmin(undefined);
  assert.ok(generated && generated.length >= 16, 'a strong password is generated when none is given');
  assert.equal(await auth.ensureAdmin('other-password'), undefined, 'admin is created once');
  const s = await auth.login('admin', generated);
  assert.equal((await auth.resume(s.token)).user, 'admin');
  assert.equal(s.role, 'admin');
  const raw = fs.readFileSync(path.join(dir, 'meta.db'));
  assert.equal(raw.includes(Buffer.from(s.token)), false, 'the token itself is not in the database file');
  assert.equal(raw.includes(Buffer.from(generated)), false, 'nor the password');
  await assert.rejects(auth.login('admin', 'wrong-password'), { code: 'GRID_ERR_BAD_CREDENTIALS' });
  await auth.setPassword('admin', 'a-new-password');
  await assert.rejects(auth.resume(s.token), { code: 'GRID_ERR_BAD_CREDENTIALS' });

  const short = new Auth(db, { sessionTtlMs: -1 });
  const expired = await short.login('admin', 'a-new-password');
  await assert.rejects(short.resume(expired.token), (e: GridError) => e.code === 'GRID_ERR_BAD_CREDENTIALS' && /expired/.test(e.message));
  await assert.rejects(auth.addUser('bad/name', 'long-enough-pw'), { code: 'GRID_ERR_INVALID_ID' });
  await assert.rejects(auth.addUser('bob', 'short'), { code: 'GRID_ERR_INVALID_MESSAGE' });
  await auth.addUser('bob', 'long-enough-pw');
  await assert.rejects(auth.addUser('bob', 'long-enough-pw'), { code: 'GRID_ERR_ALREADY_EXISTS' });
  assert.deepEqual((await auth.listUsers()).map((u) => [u.username, u.role]), [['admin', 'admin'], ['bob', 'user']]);
});

test('a failed transaction leaves the database as it was', async (t) => {
  const dir = freshDir(t);
  const db = new EmbeddedStore(path.join(dir, 'meta.db'));
  t.after(() => db.close());
  await db.setMeta('k', 'before');
  await assert.rejects(db.transaction(async () => {
    await db.setMeta('k', 'during');
    throw new Error('boom');
  }), /boom/);
  assert.equal(await db.getMeta('k'), 'before');
});

test('a write from outside an open transaction waits for it, and is not rolled back with it', async (t) => {
  const dir = freshDir(t);
  const db = new EmbeddedStore(path.join(dir, 'meta.db'));
  t.after(() => db.close());
  let release!: () => void;
  let began!: () => void;
  const held = new Promise<void>((resolve) => { release = resolve; });
  const inside = new Promise<void>((resolve) => { began = resolve; });
  const failing = db.transaction(async () => {
    await db.setMeta('in', 'rolled back');
    began();
    await held;
    throw new Error('boom');
  });
  await inside;
  const outside = db.setMeta('out', 'kept');
  release();
  await assert.rejects(failing, /boom/);
  await outside;
  assert.equal(await db.getMeta('in'), undefined);
  assert.equal(await db.getMeta('out'), 'kept');
});

test('a write from outside that waited for one transaction does not run inside the next one, nor go with its rollback', async (t) => {
  const dir = freshDir(t);
  const db = new EmbeddedStore(path.join(dir, 'meta.db'));
  t.after(() => db.close());
  let release!: () => void;
  const held = new Promise<void>((resolve) => { release = resolve; });
  const first = db.transaction(async () => { await held; });
  const outside = db.setMeta('out', 'kept'); // waits for the first transaction
  // Waits alongside it; takes the connection when the first ends, then rolls back a turn later.
  const next = db.transaction(async () => {
    await new Promise((resolve) => setImmediate(resolve));
    throw new Error('boom');
  });
  release();
  await first;
  await outside;
  await assert.rejects(next, /boom/);
  assert.equal(await db.getMeta('out'), 'kept');
});

test('blobs are content-addressed, appear whole by rename, and unreferenced ones are swept', async (t) => {
  const dir = freshDir(t);
  const store = new BlobStore(dir);
  const bytes = Buffer.from('model bytes');
  const sha = createHash('sha256').update(bytes).digest('hex');
  const written = await store.write(Readable.from([bytes]));
  assert.deepEqual({ sha256: written.sha256, size: written.size }, { sha256: sha, size: bytes.length });
  assert.ok(fs.readFileSync(store.pathOf(sha)).equals(bytes));
  assert.equal(path.relative(dir, store.pathOf(sha)), path.join('blobs', sha.slice(0, 2), sha));
  // The same bytes again: stored once.
  const tmp = store.tempPath();
  fs.writeFileSync(tmp, bytes);
  await store.adopt(tmp, sha);
  assert.ok(!fs.existsSync(tmp));
  const other = await store.write(Readable.from([Buffer.from('other')]));
  assert.equal(store.sweep(new Set([sha])), 1);
  assert.ok(store.has(sha));
  assert.ok(!store.has(other.sha256));
  assert.throws(() => store.pathOf('../../etc/passwd'), RangeError);
  // Leftover temp files from a crash are removed when the store opens.
  fs.writeFileSync(store.tempPath(), 'half');
  new BlobStore(dir);
  assert.deepEqual(fs.readdirSync(path.join(dir, 'tmp')), []);
});

test('the data dir lock refuses a live owner and takes over from a dead one, removing its stale sqlite lock', async (t) => {
  const dir = freshDir(t);
  const sqliteLock = path.join(dir, 'meta.db.lock');
  const lock = lockDataDir(dir, [sqliteLock]);
  assert.throws(() => lockDataDir(dir, [sqliteLock]), { code: 'GRID_ERR_DATA_DIR_IN_USE' });
  lock.release();
  lock.release(); // idempotent
  assert.ok(!fs.existsSync(lock.pidFile));

  // A pid that certainly belongs to no live process: a child that has already exited.
  const dead = spawnSync(process.execPath, ['-e', '0']).pid!;
  fs.writeFileSync(path.join(dir, 'node.pid'), String(dead));
  fs.mkdirSync(sqliteLock); // what node-sqlite3-wasm leaves behind after a kill -9 mid-transaction
  const taken = lockDataDir(dir, [sqliteLock]);
  assert.ok(!fs.existsSync(sqliteLock));
  assert.equal(fs.readFileSync(taken.pidFile, 'utf8'), String(process.pid));
  // And the database is writable again.
  const db = new EmbeddedStore(path.join(dir, 'meta.db'));
  await db.setMeta('ok', 'yes');
  assert.equal(await db.getMeta('ok'), 'yes');
  await db.close();
  taken.release();
});
