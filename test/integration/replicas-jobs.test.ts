// Training jobs on node replicas (issue 16): real grid-node processes on one real PostgreSQL database
// (test/helpers/postgres.ts) and one shared blob dir. A job is claimed by one replica; when that replica is
// killed (kill -9) another takes the job over once its lease runs out and finishes it under the same id;
// the result is stored once. Leases are short here (--claim-lease-ms) so takeovers come quickly.
// Skipped, with the reason, only where PostgreSQL is not installed.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import pg from 'pg';
import { mlp } from '../../src/compute/plan';
import type { JobEvent } from '../../src/core/protocol/training-messages';
import { ADMIN_PASSWORD, startTestNode, tempDir } from '../helpers/node-fixtures';
import { postgresUnavailable } from '../helpers/postgres';
import { startNodeScript, type Started } from '../helpers/processes';
import { admin, replica as replicaOn, sql, withPostgres, type Owner } from '../helpers/replicas';
import { DIGITS } from '../helpers/training-fixtures';

const NODE_MAIN = path.join(__dirname, '../../src/node/main.ts');
const LEASE_MS = 2000;
const scale = 1 / 16;
const skip = postgresUnavailable();
if (skip !== undefined) process.stdout.write(`# replicas-jobs tests skipped: ${skip}\n`);

/** A replica with the digits dataset (same path on every replica) and a short claim lease; killed (-9) after the test. */
const replica = (t: Owner, database: string, blobs: string): Promise<Started> => replicaOn(t, database, blobs, {
  args: ['--claim-lease-ms', String(LEASE_MS), '--dataset', `digits=${DIGITS}`],
  stopSignal: 'SIGKILL',
});

interface JobRowSeen { id: string; state: string; claimed_by: string | null; attempts: number }

async function jobRows(db: pg.Client): Promise<JobRowSeen[]> {
  return (await db.query<JobRowSeen>('SELECT id, state, claimed_by, attempts FROM training_jobs ORDER BY created_ms, id')).rows;
}

async function stateEvents(db: pg.Client, id: string): Promise<string[]> {
  const rows = (await db.query<{ event: string }>('SELECT event FROM training_job_events WHERE job_id = $1 ORDER BY seq', [id])).rows;
  return rows.map((r) => JSON.parse(r.event) as JobEvent).flatMap((e) => (e.kind === 'state' ? [e.state] : []));
}

/** The replica id a job row names is `host:pid:random`: which process holds it. */
const pidOf = (claimedBy: string | null) => Number(claimedBy?.split(':').at(-2));

const request = { dataset_id: 'digits', feature_scale: scale, loss: 'cross_entropy' as const, optimizer: 'sgd' as const, lr: 0.05, batch_size: 16, seed: 1 };

test('kill -9 the replica running a training job: another replica takes it over within the lease, finishes it under the same id, and exactly one model version is stored, with its lineage', { skip, timeout: 300_000 }, async (t) => {
  const pgServer = await withPostgres(t);
  const database = await pgServer.createDatabase();
  const blobs = tempDir('grid-shared-blobs-');
  t.after(() => fs.rmSync(blobs, { recursive: true, force: true }));
  const [a, b, c] = await Promise.all([replica(t, database, blobs), replica(t, database, blobs), replica(t, database, blobs)]);
  const db = await sql(t, database);
  const ca = await admin(t, a!.url);
  await ca.hostModel(mlp([64, 32, 10], { seed: 2 }), { id: 'digits-mlp', allowDownload: true });

  const job = await ca.training.start({ ...request, model: 'digits-mlp', epochs: 60 });
  const [row] = await jobRows(db);
  assert.equal(row!.id, job.id);
  assert.equal(pidOf(row!.claimed_by), a!.child.pid, 'the replica that took the request runs the job');

  // Watch through A until the job is well under way there, then kill A outright.
  let seen = 0;
  const onA = new AbortController();
  await new Promise<void>((resolve) => {
    void ca.training.wait(job.id, { signal: onA.signal, onEvent: (ev) => { seen = ev.seq; if (ev.kind === 'epoch' && ev.epoch >= 2) resolve(); } }).catch(() => {});
  });
  onA.abort();
  const killedAt = Date.now();
  await a!.kill('SIGKILL');

  // The client reconnects to B and reattaches: it sees the takeover (running again) and the end.
  const cb = await admin(t, b!.url);
  let takenOverAt: number | undefined;
  const after: JobEvent[] = [];
  const done = await cb.training.wait(job.id, { afterSeq: seen, onEvent: (ev) => {
    after.push(ev);
    if (ev.kind === 'state' && ev.state === 'running') takenOverAt ??= Date.now();
  } });
  assert.equal(done.id, job.id);
  assert.equal(done.state, 'succeeded');
  assert.ok(takenOverAt !== undefined, 'the watcher saw the job start again on another replica');
  t.diagnostic(`taken over ${takenOverAt - killedAt} ms after the kill (lease ${LEASE_MS} ms); ${after.length} events after the reattach`);
  assert.ok(takenOverAt - killedAt < LEASE_MS * 10, `taken over ${takenOverAt - killedAt} ms after the kill`);

  // Exactly one new version, with its lineage, seen the same from every replica still up.
  const model = done.result!.model!;
  assert.deepEqual([model.id, model.version, model.parent, model.job_id], ['digits-mlp', '2', 'digits-mlp@1', job.id]);
  const cc = await admin(t, c!.url);
  for (const client of [cb, cc]) {
    const versions = (await client.listModels({ allVersions: true })).filter((m) => m.id === 'digits-mlp');
    assert.deepEqual(versions.map((m) => [m.version, m.job_id ?? null]), [['1', null], ['2', job.id]]);
    assert.equal((await client.training.modelTraining('digits-mlp@2')).job_id, job.id);
    assert.equal((await client.training.jobInfo(job.id)).state, 'succeeded');
  }
  const [final] = await jobRows(db);
  assert.equal(final!.attempts, 2, 'run twice: on A, then once on its taker');
  assert.ok([b!.child.pid, c!.child.pid].includes(pidOf(final!.claimed_by)), `finished by B or C, not ${final!.claimed_by}`);
  assert.deepEqual(await stateEvents(db, job.id), ['queued', 'running', 'running', 'succeeded']);
});

test('replicas started together on queued jobs run each job once, and so do idle replicas woken together by a new job: never two runs of one job, every result stored once', { skip, timeout: 300_000 }, async (t) => {
  const pgServer = await withPostgres(t);
  const database = await pgServer.createDatabase();
  const blobs = tempDir('grid-shared-blobs-');
  t.after(() => fs.rmSync(blobs, { recursive: true, force: true }));
  const db = await sql(t, database);

  // A takes six jobs: it runs two and queues four; then it is killed with all six unfinished.
  const a = await replica(t, database, blobs);
  const ca = await admin(t, a.url);
  await ca.hostModel(mlp([64, 16, 10], { seed: 3 }), { id: 'base', allowDownload: true });
  const jobs = [];
  for (let i = 0; i < 6; i++) jobs.push(await ca.training.start({ ...request, model: 'base', epochs: 8, output_model_id: `out-${i}` }));
  await a.kill('SIGKILL');
  const before = await jobRows(db);
  assert.equal(before.filter((r) => r.state === 'succeeded').length, 0, 'no job finished before the kill (they are long enough)');
  const ranOnA = new Set(before.filter((r) => r.attempts > 0).map((r) => r.id));
  assert.ok(ranOnA.size <= 2, `A runs at most two at once (${ranOnA.size})`);

  // B and C start together: both race for the four queued jobs at once, and for A's two when their leases lapse.
  const [b, c] = await Promise.all([replica(t, database, blobs), replica(t, database, blobs)]);
  const [cb, cc] = await Promise.all([admin(t, b!.url), admin(t, c!.url)]);
  const finished = await Promise.all(jobs.map((j, i) => (i % 2 === 0 ? cb : cc).training.wait(j.id)));
  assert.deepEqual(finished.map((j) => j.state), Array(6).fill('succeeded'));

  const rows = await jobRows(db);
  for (const r of rows) {
    assert.equal(r.attempts, ranOnA.has(r.id) ? 2 : 1, `job ${r.id} was claimed ${r.attempts} times`);
    assert.ok([b!.child.pid, c!.child.pid].includes(pidOf(r.claimed_by)), `job ${r.id} finished on ${r.claimed_by}`);
    const states = await stateEvents(db, r.id);
    assert.deepEqual(states, ['queued', ...Array(r.attempts).fill('running'), 'succeeded'], `job ${r.id}: ${states.join(' → ')}`);
  }
  const byReplica = new Map<number, number>();
  for (const r of rows) byReplica.set(pidOf(r.claimed_by), (byReplica.get(pidOf(r.claimed_by)) ?? 0) + 1);
  t.diagnostic(`jobs finished per replica: ${[...byReplica.values()].join(', ')}`);

  const models = await cb.listModels({ allVersions: true });
  for (let i = 0; i < 6; i++) {
    const out = models.filter((m) => m.id === `out-${i}`);
    assert.deepEqual(out.map((m) => [m.version, m.parent, m.job_id]), [['1', 'base@1', jobs[i]!.id]], `out-${i} stored once, from its own job`);
  }
  assert.equal(models.length, 7, models.map((m) => `${m.id}@${m.version}`).join(', '));

  // Now B and C are idle and listen: a replica with no room queues six more jobs, and each one's
  // notification reaches B and C at the same moment; both reach for it, one gets it.
  const d = await replica(t, database, blobs);
  const cd = await admin(t, d.url);
  const busy = [];
  for (let i = 0; i < 2; i++) busy.push(await cd.training.start({ ...request, model: 'base', epochs: 100_000, output_model_id: `busy-${i}` }));
  const burst = [];
  for (let i = 0; i < 6; i++) burst.push(await cd.training.start({ ...request, model: 'base', epochs: 4, output_model_id: `burst-${i}` }));
  await Promise.all(burst.map((j) => cb.training.wait(j.id)));
  for (const j of burst) {
    const [r] = (await jobRows(db)).filter((x) => x.id === j.id);
    assert.equal(r!.attempts, 1, `job ${j.id} was claimed ${r!.attempts} times`);
    assert.ok([b!.child.pid, c!.child.pid].includes(pidOf(r!.claimed_by)), `job ${j.id} ran on ${r!.claimed_by}, not B or C`);
    assert.deepEqual(await stateEvents(db, j.id), ['queued', 'running', 'succeeded']);
  }
  for (const j of busy) assert.equal((await cd.training.cancelJob(j.id)).state, 'cancelled');
  assert.equal((await cb.listModels()).filter((m) => m.id.startsWith('burst-')).length, 6);
});

test('a replica paused past its lease (a zombie) cannot store a result once another replica took its job over', { skip, timeout: 300_000 }, async (t) => {
  const pgServer = await withPostgres(t);
  const database = await pgServer.createDatabase();
  const blobs = tempDir('grid-shared-blobs-');
  t.after(() => fs.rmSync(blobs, { recursive: true, force: true }));
  const [a, b] = await Promise.all([replica(t, database, blobs), replica(t, database, blobs)]);
  const ca = await admin(t, a!.url);
  const cb = await admin(t, b!.url);
  await ca.hostModel(mlp([64, 32, 10], { seed: 4 }), { id: 'zombie', allowDownload: true });
  const job = await ca.training.start({ ...request, model: 'zombie', epochs: 30 });

  // Pause A right after one of its writes reached B's watcher (between two writes: it holds no row lock).
  let seen = 0;
  const paused = new Promise<void>((resolve) => {
    void cb.training.wait(job.id, { onEvent: (ev) => {
      seen = ev.seq;
      if (ev.kind === 'epoch' && ev.epoch >= 1 && a!.child.signalCode === null) { a!.child.kill('SIGSTOP'); resolve(); }
    } }).catch(() => {});
  });
  await paused;
  t.after(() => { a!.child.kill('SIGCONT'); });
  const done = await cb.training.wait(job.id, { afterSeq: seen });
  assert.equal(done.state, 'succeeded');

  // A wakes up still believing it runs the job; it finds out at its next write or heartbeat and stops.
  const stoppedOnA = new Promise<void>((resolve) => {
    const onData = () => { if (a!.stderr().includes('another replica took it over')) { a!.child.stderr!.off('data', onData); resolve(); } };
    a!.child.stderr!.on('data', onData);
    onData();
  });
  // Or, were its writes not conditional on its claim, it would go on and store a second result.
  const models = cb.subscribe(['models']);
  const storedAgain = new Promise<void>((resolve) => {
    models.subscribe({ next: (ev) => { if (ev.event === 'model-added' && ev.model.id === 'zombie') resolve(); } });
  });
  await cb.getId();
  a!.child.kill('SIGCONT');
  await Promise.race([stoppedOnA, storedAgain]);
  models.cancel();
  // (A's clients may have given up on it while it was paused: ask through a fresh connection.)
  const again = await admin(t, a!.url);
  const versions = (await again.listModels({ allVersions: true })).filter((m) => m.id === 'zombie');
  assert.deepEqual(versions.map((m) => [m.version, m.job_id ?? null]), [['1', null], ['2', job.id]], 'one new version: the taker\'s');
  assert.equal((await again.training.jobInfo(job.id)).state, 'succeeded');
});

test('a job running on A is listed, shown and cancelled through B: A stops it, stores nothing, and A\'s watcher hears it was cancelled', { skip, timeout: 300_000 }, async (t) => {
  const pgServer = await withPostgres(t);
  const database = await pgServer.createDatabase();
  const blobs = tempDir('grid-shared-blobs-');
  t.after(() => fs.rmSync(blobs, { recursive: true, force: true }));
  const [a, b] = await Promise.all([replica(t, database, blobs), replica(t, database, blobs)]);
  const [ca, cb] = await Promise.all([admin(t, a!.url), admin(t, b!.url)]);
  await ca.hostModel(mlp([64, 32, 10], { seed: 5 }), { id: 'to-cancel', allowDownload: true });
  const job = await ca.training.start({ ...request, model: 'to-cancel', epochs: 1000 });
  let watching!: Promise<unknown>;
  await new Promise<void>((resolve) => {
    watching = ca.training.wait(job.id, { onEvent: (ev) => { if (ev.kind === 'epoch') resolve(); } });
    watching.catch(() => {});
  });

  const listed = (await cb.training.listJobs()).find((j) => j.id === job.id);
  assert.equal(listed?.state, 'running', 'B lists the job A runs');
  assert.ok((await cb.training.jobInfo(job.id)).progress!.epoch >= 1, 'with its progress');
  const cancelled = await cb.training.cancelJob(job.id);
  assert.equal(cancelled.state, 'cancelled');
  assert.equal(cancelled.error?.code, 'GRID_ERR_ABORTED');
  await assert.rejects(watching, (e: Error & { code?: string }) => e.code === 'GRID_ERR_ABORTED');
  assert.deepEqual((await ca.listModels({ allVersions: true })).map((m) => `${m.id}@${m.version}`), ['to-cancel@1'], 'nothing stored');
  assert.ok(cancelled.progress!.epoch < 1000);
});

const embeddedOnly = process.env.GRID_TEST_DATABASE === 'postgres' ? 'embedded store only (GRID_TEST_DATABASE=postgres)' : false;

test('embedded store: kill -9 the node while a job runs; the next start on the same data dir runs it again at once and stores its model once', { skip: embeddedOnly, timeout: 120_000 }, async (t) => {
  const dir = tempDir('grid-node-');
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  // A lease far longer than the test: the job runs again because the node knows its last process is gone, not because a lease ran out.
  const args = ['--port', '0', '--data-dir', dir, '--log-level', 'warn', '--dataset', `digits=${DIGITS}`, '--claim-lease-ms', '3600000'];
  const env = { ...process.env, GRID_ADMIN_PASSWORD: ADMIN_PASSWORD };
  const first = await startNodeScript(NODE_MAIN, args, env);
  t.after(() => first.kill('SIGKILL'));
  const c1 = await admin(t, first.url);
  await c1.hostModel(mlp([64, 32, 10], { seed: 6 }), { id: 'resumed', allowDownload: true });
  const job = await c1.training.start({ ...request, model: 'resumed', epochs: 25 });
  await new Promise<void>((resolve) => {
    void c1.training.wait(job.id, { onEvent: (ev) => { if (ev.kind === 'epoch') resolve(); } }).catch(() => {});
  });
  await first.kill('SIGKILL');

  const second = await startNodeScript(NODE_MAIN, args, env);
  t.after(() => second.kill('SIGKILL'));
  const c2 = await admin(t, second.url);
  const done = await c2.training.wait(job.id);
  assert.equal(done.state, 'succeeded');
  const versions = (await c2.listModels({ allVersions: true })).filter((m) => m.id === 'resumed');
  assert.deepEqual(versions.map((m) => [m.version, m.job_id ?? null]), [['1', null], ['2', job.id]]);
});

/** Bytes this process has handed to write calls so far (Linux); undefined elsewhere. */
function bytesWritten(): number | undefined {
  try {
    return Number(/wchar: (\d+)/.exec(fs.readFileSync('/proc/self/io', 'utf8'))![1]);
  } catch {
    return undefined;
  }
}

test('a node whose loop stalled past its lease while running a job keeps that job: a look for work right after does not start it again here, and it finishes as run 1', { timeout: 120_000 }, async (t) => {
  // In this process, so the test can stall the node's loop (as a suspended laptop or a long GC would).
  const tn = await startTestNode({ datasets: [{ name: 'digits', path: DIGITS }], training: { claimLeaseMs: 600 } });
  t.after(() => tn.close());
  const c = await tn.admin();
  const job = await c.training.start({ ...request, model: mlp([64, 16, 10], { seed: 4 }), epochs: 6 });
  const runs: number[] = [];
  const stop = new AbortController();
  let firstEpoch!: () => void;
  const epoch = new Promise<void>((resolve) => { firstEpoch = resolve; });
  const watching = c.training.wait(job.id, { signal: stop.signal, onEvent: (ev) => {
    if (ev.kind === 'epoch') firstEpoch();
    // A run started again here says 'running' again: stop watching at once rather than wait for restarts without end.
    if (ev.kind === 'state' && ev.state === 'running' && runs.push(ev.seq) > 1) stop.abort();
  } });
  await epoch;
  // The loop stalls for 2.5 leases, then the node looks for work (as when another job is submitted or
  // ends) before its heartbeat has run.
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 1500);
  (tn.node.training.jobs as unknown as { pump(): void }).pump();
  const done = await watching.catch((err: unknown) => { throw new Error(`the job was started again here (runs began at seq ${runs.join(', ')}): ${String(err)}`); });
  assert.equal(done.state, 'succeeded');
  assert.equal(runs.length, 1, 'one run');
  assert.equal((await tn.node.training.jobs.get(job.id))!.attempts, 1);
});

test('an uploaded model of a few MB is written once: heartbeats and progress writes while the job runs do not write it again', { timeout: 180_000 }, async (t) => {
  const before = bytesWritten();
  if (before === undefined) return t.skip('needs /proc/self/io (Linux)');
  // A short lease: a heartbeat every 200 ms; a progress write every 200 ms.
  const tn = await startTestNode({ datasets: [{ name: 'digits', path: DIGITS }], training: { claimLeaseMs: 600 } });
  t.after(() => tn.close());
  const c = await tn.admin();
  const model = mlp([64, 1024, 1024, 10], { seed: 4 });
  const job = await c.training.start({ ...request, model, epochs: 2, progress_every: 1, output: 'update' });
  const submitted = bytesWritten()!;
  let progress = 0;
  const done = await c.training.wait(job.id, { onEvent: (ev) => { if (ev.kind === 'batch') progress++; } });
  const written = bytesWritten()! - submitted;
  t.diagnostic(`model ${(model.length / 1e6).toFixed(1)} MB; ${progress} progress events; ${(written / 1e6).toFixed(1)} MB written while the job ran`);
  assert.equal(done.state, 'succeeded');
  assert.ok(progress > 20, `progress events: ${progress}`);
  // The result parameters (about the model's size) are written once at the end (log and database file: about
  // twice); the model is not written again. Before, every write rewrote the job's row with the model in it.
  assert.ok(written < 4 * model.length, `${written} bytes written while the job ran; the model is ${model.length}`);
});

test('embedded store: a queued job whose dataset file is gone by the time it runs fails with GRID_ERR_NOT_FOUND naming the dataset, rather than staying queued', { skip: embeddedOnly, timeout: 120_000 }, async (t) => {
  const dir = tempDir('grid-node-');
  const data = tempDir('grid-data-');
  t.after(() => { fs.rmSync(dir, { recursive: true, force: true }); fs.rmSync(data, { recursive: true, force: true }); });
  const file = path.join(data, path.basename(DIGITS));
  fs.copyFileSync(DIGITS, file);
  const first = await startTestNode({ dataDir: dir, datasets: [{ name: 'moved', path: file }] });
  const c1 = await first.admin();
  const job = await c1.training.start({ ...request, dataset_id: 'moved', model: mlp([64, 16, 10], { seed: 4 }), epochs: 1000 });
  await new Promise<void>((resolve) => {
    void c1.training.wait(job.id, { onEvent: (ev) => { if (ev.kind === 'batch') resolve(); } }).catch(() => {});
  });
  // Closing gives the job back to the queue; its dataset's file goes away before the next start.
  await first.close();
  fs.rmSync(file);

  const second = await startTestNode({ dataDir: dir });
  t.after(() => second.close());
  const c2 = await second.admin();
  await assert.rejects(c2.training.wait(job.id), (e: Error & { code?: string }) => {
    assert.equal(e.code, 'GRID_ERR_NOT_FOUND');
    assert.match(e.message, /dataset "moved"/);
    assert.ok(!e.message.includes(data), 'no server path');
    return true;
  });
  assert.equal((await second.node.training.jobs.get(job.id))!.state, 'failed');
});
