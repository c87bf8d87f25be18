// Uploads across node replicas (issue 16): an upload cut off with its replica resumes through another,
// and the shared blob dir is swept only of what no replica can still need. Real grid-node processes (and
// one in this process, whose sweep the test runs) on one real PostgreSQL and one shared blob dir, behind a
// real TCP balancer. Skipped, with the reason, only where PostgreSQL is not installed.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import pg from 'pg';
import { GridClient } from '../../src/core/client';
import type { GridError } from '../../src/core/errors';
import type { ByteSource } from '../../src/core/socket/transfer';
import { TransferBegin } from '../../src/core/protocol/catalogue';
import { GridNode } from '../../src/node/server';
import { PostgresStore } from '../../src/node/store/postgres';
import { BlobPins } from '../../src/node/store/shared-sweep';
import { silentLogger, type Logger } from '../../src/core/logger';
import type { NamedTensors } from '../../src/core/protocol/tensor';
import type { UploadQuotas } from '../../src/node/rpc/uploads';
import { startBalancer } from '../helpers/balancer';
import { hostProcess } from '../helpers/fl-fixtures';
import { ADMIN_PASSWORD, mlpModel, seededFloats, tempDir, writeBigModel } from '../helpers/node-fixtures';
import { postgresUnavailable } from '../helpers/postgres';
import { admin, replica, sql as sqlClient, withPostgres, type Owner } from '../helpers/replicas';

const MiB = 1024 * 1024;
const DAY_MS = 24 * 3600_000;
const skip = postgresUnavailable();
if (skip !== undefined) process.stdout.write(`# replica upload tests skipped: ${skip}\n`);

function sha256(file: string): string {
  return createHash('sha256').update(fs.readFileSync(file)).digest('hex');
}

/** Every file under `dir`, relative, sorted. */
function filesUnder(dir: string): string[] {
  if (!fs.existsSync(dir)) return [];
  return (fs.readdirSync(dir, { recursive: true }) as string[]).filter((f) => fs.statSync(path.join(dir, f)).isFile()).sort();
}

/** A client uploads through a balancer to A; A gets `signal` mid-upload; the upload goes on through B. */
const resumedElsewhere = (signal: 'SIGKILL' | 'SIGTERM') => async (t: Owner) => {
  const pgServer = await withPostgres(t);
  const database = await pgServer.createDatabase();
  const blobs = tempDir('grid-shared-blobs-');
  t.after(() => fs.rmSync(blobs, { recursive: true, force: true }));
  const dirA = tempDir('grid-replica-a-');
  let a = await replica(t, database, blobs, { dir: dirA });
  const b = await replica(t, database, blobs);
  // A first while it answers, as a balancer's primary; a dead A refuses and its clients land on B.
  const balancer = await startBalancer(() => [a.port, b.port]);
  t.after(() => balancer.close());

  const work = tempDir('grid-upload-src-');
  t.after(() => fs.rmSync(work, { recursive: true, force: true }));
  const file = path.join(work, 'big.onnx');
  writeBigModel(file, 24 * MiB);
  const size = fs.statSync(file).size;
  const expected = sha256(file);

  const client = await admin(t, balancer.url, { reconnect: true });
  let killedAt = -1;
  let killed: Promise<void> | undefined;
  let progress = 0;
  const info = await client.hostModel(file, {
    id: 'big',
    onProgress: (done) => {
      assert.ok(done >= progress, `progress went back from ${progress} to ${done}`);
      progress = done;
      // Some chunks acknowledged by A (it acknowledges every MiB): kill it where it stands.
      if (killedAt < 0 && done >= 6 * MiB) { killedAt = done; killed = a.kill(signal); }
    },
  });
  await killed;
  assert.ok(killedAt >= 6 * MiB && killedAt < size, `A was killed mid-upload (${killedAt} of ${size} bytes acknowledged)`);
  assert.ok(balancer.connectionsTo(b.port) >= 1, 'the client reconnected through B');
  assert.equal(info.sha256, expected, 'the sha256 covers the bytes sent to A and to B');
  assert.equal(info.size, size);
  // What went to B is what A had not acknowledged, plus requests and frame headers (well under 256 KiB).
  const toB = balancer.bytesTo(b.port);
  assert.ok(toB < size - killedAt + 256 * 1024, `B received ${toB} bytes; ${size - killedAt} were left to send after the ${killedAt} A acknowledged`);
  assert.ok(balancer.bytesTo(a.port) >= killedAt);

  // A comes back on its data dir; both list the one model, stored once, and the stored bytes are the file's.
  a = await replica(t, database, blobs, { dir: dirA });
  for (const url of [a.url, b.url]) {
    const models = await (await admin(t, url)).listModels({ allVersions: true });
    assert.deepEqual(models.map((m) => [m.id, m.version, m.sha256, m.size]), [['big', '1', expected, size]], `models listed through ${url}`);
  }
  assert.deepEqual(filesUnder(path.join(blobs, 'blobs')), [path.join(expected.slice(0, 2), expected)], 'one blob: the model, stored once');
  assert.equal(sha256(path.join(blobs, 'blobs', expected.slice(0, 2), expected)), expected);
  assert.deepEqual(filesUnder(path.join(blobs, 'uploads')).filter((f) => f.endsWith('.part')), [], 'no partial upload left behind');
};

test('an upload cut off by kill -9 of its replica resumes through another from the bytes acknowledged; the model is stored once, with its sha256', { skip, timeout: 300_000 }, resumedElsewhere('SIGKILL'));

// A rolling restart: the replica shuts down and leaves its uploads in flight (files and records) to the others.
test('an upload cut off by a shutdown of its replica resumes through another the same way', { skip, timeout: 300_000 }, resumedElsewhere('SIGTERM'));

test('an upload whose connection is cut twice goes on through B, then through A again: A drops what it held, and no acknowledged byte is sent twice', { skip, timeout: 300_000 }, async (t) => {
  const pgServer = await withPostgres(t);
  const database = await pgServer.createDatabase();
  const blobs = tempDir('grid-shared-blobs-');
  t.after(() => fs.rmSync(blobs, { recursive: true, force: true }));
  const [a, b] = await Promise.all([replica(t, database, blobs), replica(t, database, blobs)]);
  let backends = [a.port];
  const balancer = await startBalancer(() => backends);
  t.after(() => balancer.close());
  const work = tempDir('grid-upload-src-');
  t.after(() => fs.rmSync(work, { recursive: true, force: true }));
  const file = path.join(work, 'big.onnx');
  writeBigModel(file, 32 * MiB);
  const size = fs.statSync(file).size;
  const expected = sha256(file);

  const client = await admin(t, balancer.url, { reconnect: true });
  // Each leg: where it went, the bytes acknowledged when it began (its resume point at the latest), and
  // the bytes its replica had received from clients by then.
  const legs: { port: number; ackedAtStart: number; bytesAtStart: number }[] = [{ port: a.port, ackedAtStart: 0, bytesAtStart: 0 }];
  const switchTo = (port: number, acked: number) => {
    legs.push({ port, ackedAtStart: acked, bytesAtStart: balancer.bytesTo(port) });
    backends = [port];
    balancer.cut();
  };
  // A, alive, still holds the upload in memory when the client comes back to it: it must not go on from there.
  const info = await client.hostModel(file, {
    id: 'twice',
    onProgress: (done) => {
      if (legs.length === 1 && done >= 6 * MiB) switchTo(b.port, done);
      else if (legs.length === 2 && done >= legs[1]!.ackedAtStart + 8 * MiB && balancer.connectionsTo(b.port) >= 1) switchTo(a.port, done);
    },
  });
  assert.equal(legs.length, 3, 'the upload went A, B, A');
  assert.equal(info.sha256, expected);
  for (const leg of legs.slice(1)) {
    const sent = balancer.bytesTo(leg.port) - leg.bytesAtStart;
    // A leg that ended in a cut is counted up to the end of the upload, an over-estimate; still under what was left.
    assert.ok(sent < size - leg.ackedAtStart + 256 * 1024, `after the cut at ${leg.ackedAtStart} acknowledged bytes, port ${leg.port} received ${sent}`);
  }
  for (const url of [a.url, b.url]) {
    const models = await (await admin(t, url)).listModels();
    assert.deepEqual(models.map((m) => [m.id, m.sha256]), [['twice', expected]]);
  }
  assert.equal(sha256(path.join(blobs, 'blobs', expected.slice(0, 2), expected)), expected);
  assert.deepEqual(filesUnder(path.join(blobs, 'uploads')).filter((f) => f.endsWith('.part')), []);
});

/** 8 MiB of which the first 2 MiB can be read; the rest waits until `stop` (an upload that stalls mid-way). */
function stallingSource(stop: AbortSignal): ByteSource {
  const bytes = randomBytes(2 * MiB);
  return {
    size: 8 * MiB,
    read(offset, length) {
      if (offset + length <= bytes.length) return Promise.resolve(bytes.subarray(offset, offset + length));
      return new Promise((_resolve, reject) => stop.addEventListener('abort', () => reject(stop.reason as Error), { once: true }));
    },
  };
}

/** Begins an upload that stalls after 2 MiB through `c`; resolves once the node acknowledged (and recorded) those. */
async function stalledUpload(c: GridClient, stop: AbortSignal): Promise<void> {
  let acked!: () => void;
  const seen = new Promise<void>((resolve) => { acked = resolve; });
  // A 2 MiB window: the node acknowledges every MiB then (a bigger window may batch acknowledgements past 2 MiB).
  c.socket.upload(stallingSource(stop), { signal: stop, windowBytes: 2 * MiB, onProgress: (done) => { if (done >= 2 * MiB) acked(); } }).catch(() => {});
  await seen;
}

test('the shared sweep removes an expired partial upload, an orphan one and old unreferenced blobs; it keeps referenced blobs (model, FL checkpoint), a pinned one, a young one and an upload in progress', { skip, timeout: 240_000 }, async (t) => {
  const pgServer = await withPostgres(t);
  const database = await pgServer.createDatabase();
  const blobs = tempDir('grid-shared-blobs-');
  t.after(() => fs.rmSync(blobs, { recursive: true, force: true }));
  const a = await replica(t, database, blobs);
  // The replica whose sweep the test runs (an hour's expiry and grace: only what is made old below is old).
  const sweeperDir = tempDir('grid-replica-s-');
  const s = await GridNode.start({ port: 0, dataDir: sweeperDir, database, blobsDir: blobs, adminPassword: ADMIN_PASSWORD, processMetrics: false, uploadExpiryMs: 3600_000, blobGraceMs: 3600_000 });
  t.after(async () => { await s.close(); fs.rmSync(sweeperDir, { recursive: true, force: true }); });
  const sql = await sqlClient(t, database);
  const ids = async () => new Set((await sql.query<{ id: string }>('SELECT id FROM uploads')).rows.map((r) => r.id));
  const twoDaysAgo = new Date(Date.now() - 2 * DAY_MS);
  const age = (file: string) => fs.utimesSync(file, twoDaysAgo, twoDaysAgo);
  const part = (id: string) => path.join(blobs, 'uploads', `${id}.part`);

  // A model hosted through A: its blob is old, and referenced.
  const ca = await admin(t, a.url);
  const hosted = await ca.hostModel(mlpModel(6, 5, 3), { id: 'kept' });
  const referenced = path.join(blobs, 'blobs', hosted.sha256.slice(0, 2), hosted.sha256);
  age(referenced);
  // An FL process hosted through A: its first checkpoint's blob, old and referenced.
  await hostProcess(ca);
  const checkpoints = filesUnder(path.join(blobs, 'fl', 'blobs')).map((f) => path.join(blobs, 'fl', 'blobs', f));
  assert.equal(checkpoints.length, 1, 'the FL process\'s checkpoint is in the shared blob dir');
  age(checkpoints[0]!);

  // Blobs no row names: an old one, an old one a replica pinned just now (about to commit its row), a young one.
  const blob = (content: Buffer, old: boolean, dir = path.join(blobs, 'blobs')) => {
    const sha = createHash('sha256').update(content).digest('hex');
    const f = path.join(dir, sha.slice(0, 2), sha);
    fs.mkdirSync(path.dirname(f), { recursive: true });
    fs.writeFileSync(f, content);
    if (old) age(f);
    return { sha, file: f };
  };
  const unreferenced = blob(randomBytes(1000), true);
  const pinned = blob(randomBytes(1000), true);
  const young = blob(randomBytes(1000), false);
  const unreferencedCheckpoint = blob(randomBytes(1000), true, path.join(blobs, 'fl', 'blobs'));
  const store = await PostgresStore.open({ url: database, log: silentLogger });
  t.after(() => store.close());
  // Two days have passed for the pins the hosting above took, too; then a replica pins one blob now.
  await sql.query('UPDATE blob_pins SET pinned_ms = $1', [Date.now() - 2 * DAY_MS]);
  await new BlobPins(store).pin(pinned.sha);

  // Uploads on A: one in progress, one abandoned two days ago (its record and file made that old).
  const stop = new AbortController();
  t.after(() => stop.abort());
  const newUpload = async (c: GridClient, signal: AbortSignal) => {
    const before = await ids();
    await stalledUpload(c, signal);
    return [...await ids()].find((id) => !before.has(id));
  };
  const inProgress = await newUpload(await admin(t, a.url), stop.signal);
  const abandon = new AbortController();
  const abandoned = await newUpload(await admin(t, a.url), abandon.signal);
  abandon.abort();
  assert.ok(inProgress !== undefined && abandoned !== undefined && fs.existsSync(part(inProgress)) && fs.existsSync(part(abandoned)));
  await sql.query('UPDATE uploads SET touched_ms = $1 WHERE id = $2', [Date.now() - 2 * DAY_MS, abandoned]);
  age(part(abandoned));
  // A partial file with no record, two days old (its replica died before it could remove it), and a young one.
  const orphan = part('orphan-upload');
  fs.writeFileSync(orphan, randomBytes(4096));
  age(orphan);
  const youngOrphan = part('young-orphan');
  fs.writeFileSync(youngOrphan, randomBytes(4096));

  const swept = await s.sharedSweep!.sweep();
  assert.deepEqual(swept, { uploads: 2, records: 0, blobs: 2 });
  assert.ok(!fs.existsSync(part(abandoned)), 'the expired partial upload is removed');
  assert.ok(!fs.existsSync(orphan), 'the old partial file without a record is removed');
  assert.ok(!fs.existsSync(unreferenced.file), 'the old blob nothing refers to is removed');
  assert.ok(!fs.existsSync(unreferencedCheckpoint.file), 'the old checkpoint blob nothing refers to is removed');
  assert.ok(fs.existsSync(referenced), 'the blob of a hosted model stays, however old');
  assert.ok(fs.existsSync(checkpoints[0]!), 'the blob of an FL checkpoint stays, however old');
  assert.ok(fs.existsSync(pinned.file), 'a blob a replica pinned (about to commit its row) stays');
  assert.ok(fs.existsSync(young.file), 'a blob younger than the grace period stays');
  assert.ok(fs.existsSync(part(inProgress)), 'the upload in progress stays');
  assert.ok(fs.existsSync(youngOrphan), 'a young partial file without a record stays');
  const left = await ids();
  assert.ok(left.has(inProgress!) && !left.has(abandoned!), 'the expired upload\'s record is gone, the one in progress stays');

  // The abandoned upload cannot be resumed any more, on any replica; the model still runs.
  for (const url of [a.url, s.url]) {
    const c = await admin(t, url);
    await assert.rejects(c.socket.request(TransferBegin, { transfer_id: abandoned!, size: 8 * MiB, chunk_size: MiB }), (e: GridError) => e.code === 'GRID_ERR_TRANSFER_NOT_FOUND');
    assert.equal((await c.modelInfo('kept')).sha256, hosted.sha256);
  }
});

/** A logger that keeps the replica's "resuming an upload another replica began" lines: one per re-read of an upload. */
function rehashLog(): { logger: Logger; rehashes: { transfer: string; received: number }[] } {
  const rehashes: { transfer: string; received: number }[] = [];
  const noop = () => {};
  return {
    rehashes,
    logger: {
      debug: noop, warn: noop, error: noop,
      info: (obj, msg) => {
        if (msg === 'resuming an upload another replica began') rehashes.push(obj as { transfer: string; received: number });
      },
    },
  };
}

/** Two replicas in this process on one PostgreSQL and one shared blob dir, with a SQL client on the database. */
async function twoReplicas(t: Owner, quotas: { a?: UploadQuotas; b?: UploadQuotas } = {}) {
  const pgServer = await withPostgres(t);
  const database = await pgServer.createDatabase();
  const blobs = tempDir('grid-shared-blobs-');
  t.after(() => fs.rmSync(blobs, { recursive: true, force: true }));
  const start = async (q: UploadQuotas | undefined) => {
    const dir = tempDir('grid-replica-');
    const log = rehashLog();
    const node = await GridNode.start({ port: 0, dataDir: dir, database, blobsDir: blobs, adminPassword: ADMIN_PASSWORD, processMetrics: false, logger: log.logger, ...(q && { uploadQuotas: q }) });
    t.after(async () => { await node.close(); fs.rmSync(dir, { recursive: true, force: true }); });
    return { node, rehashes: log.rehashes };
  };
  const a = await start(quotas.a);
  const b = await start(quotas.b);
  const sql = await sqlClient(t, database);
  return { a, b, sql, blobs, database };
}

/** Begins an upload through `c` that stalls after 2 MiB; its transfer id, once those are recorded. */
async function stalledUploadId(t: Owner, c: GridClient, sql: pg.Client): Promise<string> {
  const stop = new AbortController();
  t.after(() => stop.abort());
  const before = new Set((await sql.query<{ id: string }>('SELECT id FROM uploads')).rows.map((r) => r.id));
  await stalledUpload(c, stop.signal);
  const id = (await sql.query<{ id: string }>('SELECT id FROM uploads')).rows.map((r) => r.id).find((x) => !before.has(x));
  assert.ok(id !== undefined, 'the upload has a record');
  return id;
}

const resumeOn = (c: GridClient, id: string) => c.socket.request(TransferBegin, { transfer_id: id, size: 8 * MiB, chunk_size: MiB });

test('a resume that takes an upload over from another replica is charged to the resuming replica\'s quotas and disk: past them it gets QUOTA_EXCEEDED or INSUFFICIENT_STORAGE, and the upload stays with its replica', { skip, timeout: 240_000 }, async (t) => {
  // B lets one upload per user be in flight; the admin already has one there.
  const { a, b, sql, database, blobs } = await twoReplicas(t, { b: { maxUploadsPerOwner: 1 } });
  await stalledUploadId(t, await admin(t, b.node.url), sql);
  const id = await stalledUploadId(t, await admin(t, a.node.url), sql);
  // C's disk has no room for the 6 MiB still to come.
  const dirC = tempDir('grid-replica-c-');
  const c = await GridNode.start({ port: 0, dataDir: dirC, database, blobsDir: blobs, adminPassword: ADMIN_PASSWORD, processMetrics: false, uploadQuotas: { freeBytes: () => Promise.resolve(4 * MiB), freeSpaceMarginBytes: 0 } });
  t.after(async () => { await c.close(); fs.rmSync(dirC, { recursive: true, force: true }); });
  const full: GridError = await resumeOn(await admin(t, c.url), id).then(() => assert.fail('the resume on C was admitted'), (e: GridError) => e);
  assert.equal(full.code, 'GRID_ERR_INSUFFICIENT_STORAGE', full.message);

  const refused: GridError = await resumeOn(await admin(t, b.node.url), id).then(() => assert.fail('the resume on B was admitted'), (e: GridError) => e);
  assert.equal(refused.code, 'GRID_ERR_QUOTA_EXCEEDED');
  assert.equal(refused.details?.quota, 'uploads_per_user');
  assert.deepEqual(b.rehashes, [], 'B read nothing back from disk');
  // The refused resume did not take the upload from A: it goes on there from what A holds, without a re-read.
  assert.deepEqual(await resumeOn(await admin(t, a.node.url), id), { transfer_id: id, received: 2 * MiB });
  assert.deepEqual(a.rehashes, []);
});

test('resumes alternated between two replicas re-read the upload once: the replica that lost it gets RATE_LIMITED with retry_after_ms, and nothing is read again', { skip, timeout: 240_000 }, async (t) => {
  const quotas: UploadQuotas = { takeoverIntervalMs: 60_000 };
  const { a, b, sql } = await twoReplicas(t, { a: quotas, b: quotas });
  const id = await stalledUploadId(t, await admin(t, a.node.url), sql);
  const [onA, onB] = [await admin(t, a.node.url), await admin(t, b.node.url)];

  assert.deepEqual(await resumeOn(onB, id), { transfer_id: id, received: 2 * MiB }, 'the first takeover goes ahead');
  assert.deepEqual(b.rehashes.map((r) => [r.transfer, r.received]), [[id, 2 * MiB]], 'B re-read the 2 MiB once');
  // A, which began it moments ago, refuses to take it back (and leaves it with B); B, holding the current
  // claim, resumes it from memory: alternating costs no re-read.
  for (let i = 0; i < 4; i++) {
    const refused: GridError = await resumeOn(onA, id).then(() => assert.fail(`resume ${i + 1} on A was admitted`), (e: GridError) => e);
    assert.equal(refused.code, 'GRID_ERR_RATE_LIMITED', refused.message);
    const wait = refused.details?.retry_after_ms;
    assert.ok(typeof wait === 'number' && wait > 0 && wait <= 60_000, `retry_after_ms ${String(wait)}`);
    assert.deepEqual(await resumeOn(onB, id), { transfer_id: id, received: 2 * MiB });
  }
  assert.deepEqual(a.rehashes, [], 'A read nothing back');
  assert.equal(b.rehashes.length, 1, 'B read the upload back once, for its one takeover');
});

const feeds = (): NamedTensors => ({ x: { dtype: 'float32', dims: [2, 6], data: seededFloats(12, 7) } });

test('deleting a model on A while B reuses the same bytes for a model it is committing leaves B\'s model runnable; the shared sweep removes the blob once no model names it', { skip, timeout: 240_000 }, async (t) => {
  const { a, b, sql, blobs, database } = await twoReplicas(t);
  const [ca, cb] = [await admin(t, a.node.url), await admin(t, b.node.url)];
  const bytes = mlpModel(6, 5, 3);
  await cb.hostModel(mlpModel(6, 5, 3, 2), { id: 'b' });
  const onA = await ca.hostModel(bytes, { id: 'a' });
  const blob = path.join(blobs, 'blobs', onA.sha256.slice(0, 2), onA.sha256);

  // B hosts the same bytes as b@2: it pins the blob, finds A's file and reuses it, then waits (the test
  // holds b's version counter locked) before it commits its row.
  const lock = new pg.Client({ connectionString: database });
  lock.on('error', () => {});
  await lock.connect();
  t.after(() => lock.end().catch(() => {}));
  await lock.query('BEGIN');
  await lock.query('SELECT 1 FROM model_names WHERE id = $1 FOR UPDATE', ['b']);
  const hosting = cb.hostModel(bytes, { id: 'b', newVersion: true });
  hosting.catch(() => {});
  for (let i = 0; ; i++) {
    const { rows } = await sql.query<{ n: string }>('SELECT count(*) AS n FROM pg_locks WHERE NOT granted');
    if (Number(rows[0]!.n) > 0) break;
    assert.ok(i < 100_000, 'B came to commit its row');
  }
  // Meanwhile A deletes its model: no committed row names the bytes any more.
  await ca.deleteModel('a');
  await lock.query('COMMIT');
  const onB = await hosting;
  assert.equal(onB.version, '2');
  assert.equal(onB.sha256, onA.sha256);
  assert.ok((await cb.runInference('b@2', feeds())).y !== undefined, 'b@2 runs on B');

  // Once b@2 is deleted too, the blob is an orphan: kept by the delete, removed by the sweep after its grace.
  await cb.deleteModel('b@2');
  assert.ok(fs.existsSync(blob), 'a delete leaves a shared blob to the sweep');
  const old = new Date(Date.now() - 2 * DAY_MS);
  fs.utimesSync(blob, old, old);
  await sql.query('UPDATE blob_pins SET pinned_ms = $1', [Date.now() - 2 * DAY_MS]);
  const swept = await a.node.sharedSweep!.sweep();
  assert.equal(swept.blobs, 1);
  assert.ok(!fs.existsSync(blob), 'the sweep removed the orphan blob');
  assert.ok((await ca.runInference('b', feeds())).y !== undefined, 'b@1 still runs');
});

test('a client sent back to a replica that refuses to take its upload over yet (RATE_LIMITED) waits as told, resumes there, and completes the upload', { skip, timeout: 240_000 }, async (t) => {
  // A, where the upload begins, takes it back at the earliest 10 s after it began it.
  const { a, b } = await twoReplicas(t, { a: { takeoverIntervalMs: 10_000 } });
  let backends = [a.node.port];
  const balancer = await startBalancer(() => backends);
  t.after(() => balancer.close());
  const waits: number[] = [];
  const noop = () => {};
  const client = await GridClient.connect(balancer.url, {
    reconnect: { initialDelayMs: 20, maxDelayMs: 200, maxAttempts: 100 },
    credentials: { username: 'admin', password: ADMIN_PASSWORD },
    logger: { debug: noop, warn: noop, error: noop, info: (obj, msg) => { if (msg === 'the node asks to wait before resuming the upload') waits.push((obj as { retry_after_ms: number }).retry_after_ms); } },
  });
  t.after(() => client.dispose());
  const bytes = randomBytes(12 * MiB);
  const source: ByteSource = { size: bytes.length, read: (offset, length) => Promise.resolve(bytes.subarray(offset, offset + length)) };
  let leg = 1;
  const result = await client.socket.upload(source, {
    windowBytes: 2 * MiB,
    onProgress: (done) => {
      // A → B after 2 MiB, B → A after 2 more: A began it moments ago, so it refuses at first.
      if (leg === 1 && done >= 2 * MiB) { leg = 2; backends = [b.node.port]; balancer.cut(); }
      else if (leg === 2 && done >= 4 * MiB && balancer.connectionsTo(b.node.port) >= 1) { leg = 3; backends = [a.node.port]; balancer.cut(); }
    },
  });
  assert.equal(leg, 3, 'the upload went A, B, A');
  assert.equal(result.sha256, createHash('sha256').update(bytes).digest('hex'));
  assert.ok(waits.length >= 1 && waits.every((w) => w > 0 && w <= 10_000), `the client waited as told (${waits.join(', ')} ms)`);
  assert.equal(b.rehashes.length, 1, 'B re-read the upload once');
  assert.equal(a.rehashes.length, 1, 'A re-read it once, after the wait');
});
