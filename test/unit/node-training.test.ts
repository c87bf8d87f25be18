// Node training pieces without sockets: a job's row in a real embedded store (its bounded event history,
// what a reattaching client gets; claims and their leases) and how a train request's label names a dataset column.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { JobRows } from '../../src/node/training/rows';
import { EmbeddedStore } from '../../src/node/store/db';
import type { JobEvent, JobState } from '../../src/core/protocol/training-messages';
import { labelColumn } from '../../src/node/training/data';
import type { DatasetInfo } from '../../src/node/datasets';
import { GridError } from '../../src/core/errors';

const request = { dataset_id: 'd', loss: 'cross_entropy' as const, optimizer: 'sgd' as const, batch_size: 1, epochs: 1 };
const progress = (seq: number): JobEvent => ({ kind: 'batch', seq, job_id: 'job-1', epoch: 1, epochs: 1, batch: seq, batches: 100, loss: 1, accuracy: 0, samples_per_second: 1, eta_seconds: 1 });
const state = (seq: number, s: JobState): JobEvent => ({ kind: 'state', seq, job_id: 'job-1', state: s });

function store(t: { after(fn: () => unknown): void }): EmbeddedStore {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'grid-jobs-'));
  const db = new EmbeddedStore(path.join(dir, 'meta.db'));
  t.after(async () => { await db.close(); fs.rmSync(dir, { recursive: true, force: true }); });
  return db;
}

test('a job keeps its last maxEvents events; a client behind them is told how many it missed', async (t) => {
  const rows = new JobRows(store(t));
  await rows.insert('job-1', { owner: 'u', role: 'user', request, label: 'y' }, {}, state(1, 'queued'));
  const got = await rows.claim('r1', 60_000, async () => true);
  assert.ok(got);
  await rows.append(got.claim, [state(2, 'running'), ...[3, 4, 5, 6, 7, 8, 9, 10].map(progress)], undefined, 5);
  assert.equal((await rows.get('job-1'))!.lastSeq, 10);
  const fromStart = await rows.since('job-1', 0);
  assert.equal(fromStart.missed, 5);
  assert.deepEqual(fromStart.events.map((e) => e.seq), [6, 7, 8, 9, 10]);
  const caughtUp = await rows.since('job-1', 7);
  assert.equal(caughtUp.missed, 0);
  assert.deepEqual(caughtUp.events.map((e) => e.seq), [8, 9, 10]);
  assert.deepEqual(await rows.since('job-1', 10), { missed: 0, events: [] });
});

test('a job is claimed once; a run that lost its claim writes nothing, and the run that holds it ends it', async (t) => {
  const rows = new JobRows(store(t));
  await rows.insert('job-1', { owner: 'u', role: 'user', request, label: 'y' }, { model: new Uint8Array([1, 2, 3]) }, state(1, 'queued'));
  const first = await rows.claim('r1', 60_000, async () => true);
  assert.deepEqual(first?.inputs.model, new Uint8Array([1, 2, 3]), 'the uploaded bytes come with the claim');
  assert.equal(await rows.claim('r2', 60_000, async () => true), undefined, 'a claimed job under a live lease is nobody else\'s');
  await rows.expireAll();
  const second = await rows.claim('r2', 60_000, async () => true);
  assert.equal(second?.claim.attempt, 2, 'an expired lease is taken over');
  await assert.rejects(rows.finish(first!.claim, { state: 'succeeded' }, [state(2, 'succeeded')], undefined, 100), (e: GridError) => e.code === 'GRID_ERR_ABORTED');
  await assert.rejects(rows.append(first!.claim, [progress(2)], undefined, 100), (e: GridError) => e.code === 'GRID_ERR_ABORTED');
  assert.equal((await rows.get('job-1'))!.state, 'running');
  await rows.finish(second!.claim, { state: 'succeeded' }, [state(2, 'running'), state(3, 'succeeded')], undefined, 100);
  const done = (await rows.get('job-1'))!;
  assert.equal(done.state, 'succeeded');
  assert.equal(done.claimedBy, 'r2');
  assert.deepEqual((await rows.since('job-1', 0)).events.map((e) => e.kind === 'state' && e.state), ['queued', 'running', 'succeeded']);
});

test('a claim looks past the oldest jobs this replica cannot run (more than a page of them) to a newer one it can, and never claims a job it runs itself', async (t) => {
  const rows = new JobRows(store(t));
  const ids = Array.from({ length: 40 }, (_, i) => `job-${String(i).padStart(2, '0')}`);
  // The 38 oldest train on a dataset this replica cannot read; the two newest on one it can.
  for (const [i, id] of ids.entries()) {
    await rows.insert(id, { owner: 'u', role: 'user', request: { ...request, dataset_id: i < 38 ? 'elsewhere' : 'here' }, label: 'y' }, {}, { ...state(1, 'queued'), job_id: id });
  }
  const readable = async (row: { spec: { request: { dataset_id: string } } }) => row.spec.request.dataset_id === 'here';
  const got = await rows.claim('r1', 60_000, readable);
  assert.equal(got?.row.id, 'job-38');
  // Its lease lapses while r1 still runs it: r1 leaves it (its heartbeat renews it) and takes the next one.
  await rows.expireAll();
  const next = await rows.claim('r1', 60_000, readable, new Set(['job-38']));
  assert.equal(next?.row.id, 'job-39');
  assert.equal((await rows.get('job-38'))!.attempts, 1);
  await rows.expireAll();
  assert.equal(await rows.claim('r1', 60_000, readable, new Set(['job-38', 'job-39'])), undefined, 'nothing else it can run');
});

const info = (columns: string[], label?: string): DatasetInfo => ({
  id: 'd', name: 'd', description: '', tags: [], format: 'csv', size: 1, created: '',
  schema: { rows: 1, columns: columns.map((name) => ({ name, dtype: 'int64' as const })), ...(label !== undefined && { label }) },
});

test('the label column is named, indexed, the dataset\'s own label, or else the last column', () => {
  assert.deepEqual(labelColumn(info(['a', 'b', 'c']), undefined), { index: 2, name: 'c' });
  assert.deepEqual(labelColumn(info(['a', 'target', 'c'], 'target'), undefined), { index: 1, name: 'target' });
  assert.deepEqual(labelColumn(info(['a', 'b', 'c']), 'a'), { index: 0, name: 'a' });
  assert.deepEqual(labelColumn(info(['a', 'b', 'c']), '1'), { index: 1, name: 'b' });
  assert.throws(() => labelColumn(info(['a', 'b']), 'species'), (e: unknown) => e instanceof GridError && e.code === 'GRID_ERR_INVALID_INPUT' && /no column "species".*columns are a, b/.test(e.message));
  assert.throws(() => labelColumn(info(['a', 'b']), '2'), (e: unknown) => e instanceof GridError && e.code === 'GRID_ERR_INVALID_INPUT');
});
