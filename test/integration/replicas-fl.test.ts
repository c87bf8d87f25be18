// Model-centric FL on node replicas (issue 16): real grid-node processes on one real PostgreSQL database
// and one shared blob dir. A worker authenticates, asks for a cycle and reports through any replica;
// every committed report is averaged exactly once, a cycle is closed by exactly one replica, and when
// the replica that took reports is killed (-9) another closes the cycle on time with every committed
// report, reading the dead replica's partial sum. Skipped, with the reason, only where PostgreSQL is not
// installed.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import pg from 'pg';
import { modelParams } from '../../src/compute/plan/params';
import { GridClient } from '../../src/core/client';
import type { NodeEvent } from '../../src/core/protocol/messages';
import { FlHostTraining, FlListProcesses, type FlProcessInfo } from '../../src/core/protocol/fl-messages';
import { bufferSource } from '../../src/core/socket/transfer';
import { base64, httpBase, PyGridSocket, type StateTensor } from '../helpers/fl-fixtures';
import { mlpModel, tempDir } from '../helpers/node-fixtures';
import { postgresUnavailable } from '../helpers/postgres';
import type { Started } from '../helpers/processes';
import { admin, replica, withPostgres, type Owner } from '../helpers/replicas';

const skip = postgresUnavailable();
if (skip !== undefined) process.stdout.write(`# replicas FL tests skipped: ${skip}\n`);

/** Three grid-node processes on one new database and one shared blob dir, each with its own data dir. */
async function threeReplicas(t: Owner): Promise<{ replicas: Started[]; database: string }> {
  const server = await withPostgres(t);
  const database = await server.createDatabase();
  const blobs = tempDir('grid-shared-blobs-');
  t.after(() => fs.rmSync(blobs, { recursive: true, force: true }));
  return { replicas: await Promise.all([replica(t, database, blobs), replica(t, database, blobs), replica(t, database, blobs)]), database };
}

async function pyGrid(t: Owner, url: string): Promise<PyGridSocket> {
  const s = await PyGridSocket.open(url);
  t.after(() => s.close());
  return s;
}

/** Resolves with the first fl-process-updated event of `name` that `pick` accepts, heard by `c`. */
async function flUpdate(c: GridClient, name: string, pick: (p: FlProcessInfo) => boolean): Promise<{ seen: Promise<FlProcessInfo> }> {
  const stream = c.subscribe(['fl']);
  const seen = new Promise<FlProcessInfo>((resolve) => {
    stream.subscribe({
      next: (ev: NodeEvent) => {
        if (ev.event === 'fl-process-updated' && ev.process.name === name && pick(ev.process)) { stream.cancel(); resolve(ev.process); }
      },
    });
  });
  // The subscription is registered once a later request on the same socket is answered.
  await c.getId();
  return { seen };
}

/** Hosts `onnx` as an FL process through `c` (the model as an upload, as our hosts send it). */
async function host(c: GridClient, onnx: Uint8Array, name: string, serverConfig: Record<string, unknown>) {
  const upload = await c.socket.upload(bufferSource(onnx));
  return c.socket.request(FlHostTraining, { model_transfer_id: upload.transfer_id, client_config: { name, version: '1' }, server_config: serverConfig });
}

/**
 * Worker `i`'s diff: dyadic values (k mod 7 − 3)·(i+1)/16, so every float64 sum of weighted diffs is exact
 * whichever replica adds which report first, and the checkpoint can be compared bit for bit.
 */
function diffFor(params: Record<string, { dims: readonly number[]; data: unknown }>, i: number): StateTensor[] {
  return Object.values(params).map((p) => ({ dims: [...p.dims], data: (p.data as Float32Array).map((_, k) => ((k % 7) - 3) * (i + 1) / 16) }));
}

/** old − Σ wᵢ·diffᵢ / Σ wᵢ in float64, rounded to float32 as the node stores it. */
function expectedParams(old: Record<string, { data: unknown }>, reports: { diff: StateTensor[]; weight: number }[]): Float32Array[] {
  const weight = reports.reduce((a, r) => a + r.weight, 0);
  return Object.values(old).map((p, n) => {
    const before = p.data as Float32Array;
    return before.map((v, k) => v - reports.reduce((s, r) => s + r.weight * r.diff[n]!.data[k]!, 0) / weight);
  });
}

async function checkpointParams(url: string, name: string): Promise<Float32Array[]> {
  const res = await fetch(`${httpBase(url)}/model-centric/retrieve-model?name=${name}&version=1`);
  assert.equal(res.status, 200);
  return Object.values(modelParams(new Uint8Array(await res.arrayBuffer()))).map((p) => p.data as Float32Array);
}

async function cycleRows(database: string, name: string): Promise<{ sequence: number; completed: boolean }[]> {
  const c = new pg.Client({ connectionString: database });
  await c.connect();
  try {
    const r = await c.query<{ sequence: string; completed_ms: string | null }>('SELECT c.sequence, c.completed_ms FROM fl_cycles c JOIN fl_processes p ON p.id = c.process_id WHERE p.name = $1 ORDER BY c.sequence', [name]);
    return r.rows.map((x) => ({ sequence: Number(x.sequence), completed: x.completed_ms !== null }));
  } finally {
    await c.end();
  }
}

async function processOn(c: GridClient, name: string): Promise<FlProcessInfo> {
  return (await c.socket.request(FlListProcesses, {})).processes.find((p) => p.name === name)!;
}

test('three replicas: workers authenticate, ask and report through different replicas; max_workers holds across them; each report counts once (a resend to another replica too); one replica closes the cycle and a subscriber on C hears it', { skip, timeout: 300_000 }, async (t) => {
  const { replicas, database } = await threeReplicas(t);
  const [a, b, c] = replicas as [Started, Started, Started];
  const ca = await admin(t, a.url);
  const cc = await admin(t, c.url);
  const onnx = mlpModel(4, 3, 2, 5);
  const old = modelParams(onnx);
  await host(ca, onnx, 'spread', { max_diffs: 6, max_workers: 6, cycle_length: 3600, num_cycles: 3 });
  const sockets = await Promise.all([pyGrid(t, a.url), pyGrid(t, b.url), pyGrid(t, c.url)]);
  const at = (i: number) => sockets[i % 3]!;

  // Workers 0-2 one at a time: authenticate on one replica, ask on the next.
  const workers: { workerId: string; requestKey: string }[] = [];
  for (let i = 0; i < 3; i++) {
    const auth = await at(i).call('model-centric/authenticate', { model_name: 'spread', model_version: '1' });
    const reply = await at(i + 1).call('model-centric/cycle-request', { worker_id: auth.worker_id, model: 'spread', version: '1', ping: 0, download: 0, upload: 0 });
    assert.equal(reply.status, 'accepted', JSON.stringify(reply));
    workers.push({ workerId: auth.worker_id as string, requestKey: reply.request_key as string });
  }
  // Six more ask at once, two through each replica, for the three places left: exactly three get one.
  const askers = await Promise.all(Array.from({ length: 6 }, async (_, i) => {
    const s = await pyGrid(t, replicas[i % 3]!.url);
    const auth = await s.call('model-centric/authenticate', { model_name: 'spread', model_version: '1' });
    return { s, workerId: auth.worker_id as string };
  }));
  const answers = await Promise.all(askers.map(({ s, workerId }) => s.call('model-centric/cycle-request', { worker_id: workerId, model: 'spread', version: '1', ping: 0, download: 0, upload: 0 })));
  const accepted = answers.flatMap((r, i) => (r.status === 'accepted' ? [{ workerId: askers[i]!.workerId, requestKey: r.request_key as string }] : []));
  assert.equal(accepted.length, 3, `max_workers 6 with 3 assigned: 3 of 6 concurrent askers accepted across replicas, got ${answers.map((r) => r.status).join(', ')}`);
  for (const r of answers) if (r.status === 'rejected') assert.match(String(r.reason), /cycle is full/);
  workers.push(...accepted);
  assert.equal((await processOn(cc, 'spread')).cycle?.assigned, 6);

  const closed = await flUpdate(cc, 'spread', (p) => p.completed_cycles === 1);
  const sent: { diff: StateTensor[]; weight: number }[] = [];
  for (const [i, w] of workers.entries()) {
    const diff = diffFor(old, i);
    const weight = (i % 3) + 1;
    // Worker i reports through replica i + 2: never the one it asked through.
    const report = { worker_id: w.workerId, request_key: w.requestKey, diff: base64(diff), num_samples: weight };
    assert.deepEqual(await at(i + 2).call('model-centric/report', report), { status: 'success' });
    sent.push({ diff, weight });
    // The same report again through another replica: answered success, counted once (else the sixth
    // distinct report would come after the close).
    if (i < 2) assert.deepEqual(await at(i).call('model-centric/report', report), { status: 'success' });
  }
  const info = await closed.seen;
  assert.equal(info.checkpoints.at(-1)!.reports, 6, 'the checkpoint holds the six distinct reports');
  assert.deepEqual(info.checkpoints.map((x) => x.number), [1, 2], 'one checkpoint for the cycle');
  assert.equal(info.cycle?.sequence, 2);

  const expected = expectedParams(old, sent);
  for (const r of replicas) {
    const got = await checkpointParams(r.url, 'spread');
    got.forEach((p, n) => assert.deepEqual(Array.from(p), Array.from(expected[n]!), `parameter ${n} through ${r.url}: old − mean(diff) of every report once`));
  }
  assert.deepEqual(await cycleRows(database, 'spread'), [{ sequence: 1, completed: true }, { sequence: 2, completed: false }], 'closed once, the next cycle opened once');
  // A report of the closed cycle through any replica: a repeat is success, a new one is not possible (all reported).
  assert.deepEqual(await at(1).call('model-centric/report', { worker_id: workers[0]!.workerId, request_key: workers[0]!.requestKey, diff: base64(sent[0]!.diff) }), { status: 'success' });
});

test('kill -9 the replica that took reports mid-cycle: a survivor closes the cycle on time with every committed report, the dead replica\'s included, exactly once', { skip, timeout: 300_000 }, async (t) => {
  const { replicas, database } = await threeReplicas(t);
  const [a, b, c] = replicas as [Started, Started, Started];
  const ca = await admin(t, a.url);
  const cc = await admin(t, c.url);
  const onnx = mlpModel(4, 3, 2, 9);
  const old = modelParams(onnx);
  const cycleLength = 20;
  // Closes by time only (no max_diffs), and only with five reports.
  await host(ca, onnx, 'survive', { min_diffs: 5, cycle_length: cycleLength, num_cycles: 2 });
  const hosted = await processOn(cc, 'survive');
  const end = Date.parse(hosted.cycle!.end!);
  const [sa, sb, sc] = await Promise.all([pyGrid(t, a.url), pyGrid(t, b.url), pyGrid(t, c.url)]);

  // Each worker its own connection (one connection authenticating again is the same worker).
  const join = async (replica: Started) => {
    const s = await pyGrid(t, replica.url);
    const auth = await s.call('model-centric/authenticate', { model_name: 'survive', model_version: '1' });
    const reply = await s.call('model-centric/cycle-request', { worker_id: auth.worker_id, model: 'survive', version: '1', ping: 0, download: 0, upload: 0 });
    assert.equal(reply.status, 'accepted', JSON.stringify(reply));
    return { workerId: auth.worker_id as string, requestKey: reply.request_key as string };
  };
  // Workers 0-2 join and report through A, 3 through B; worker 4 joins through A and reports later.
  const workers = [await join(a), await join(a), await join(a), await join(b), await join(a)];
  const sent: { diff: StateTensor[]; weight: number }[] = [];
  const report = async (s: PyGridSocket, i: number) => {
    const diff = diffFor(old, i);
    const weight = i + 1;
    assert.deepEqual(await s.call('model-centric/report', { worker_id: workers[i]!.workerId, request_key: workers[i]!.requestKey, diff: base64(diff), num_samples: weight }), { status: 'success' });
    sent.push({ diff, weight });
  };
  for (let i = 0; i < 3; i++) await report(sa, i);
  await report(sb, 3);
  const closed = await flUpdate(cc, 'survive', (p) => p.completed_cycles === 1);

  // A holds three committed reports in its partial sum; it dies without a word.
  await a.kill('SIGKILL');
  assert.ok(Date.now() < end, `the cycle must still be open when A dies (the machine was too slow for a ${cycleLength} s cycle)`);
  assert.equal((await processOn(cc, 'survive')).completed_cycles, 0);
  // Worker 4 (assigned through A) reports through C: five reports, so the cycle closes when its time is up.
  await report(sc, 4);

  const info = await closed.seen;
  const checkpoint = info.checkpoints.at(-1)!;
  assert.equal(checkpoint.reports, 5, 'A\'s three reports, B\'s and C\'s: each once');
  const closedAt = Date.parse(checkpoint.created);
  assert.ok(closedAt >= end, `closed at its end (${new Date(end).toISOString()}), not before: ${checkpoint.created}`);
  assert.ok(closedAt - end < 15_000, `closed on time: ${closedAt - end} ms after its end`);
  const expected = expectedParams(old, sent);
  for (const r of [b, c]) {
    const got = await checkpointParams(r.url, 'survive');
    got.forEach((p, n) => assert.deepEqual(Array.from(p), Array.from(expected[n]!), `parameter ${n} through ${r.url}`));
  }
  // B and C both had the cycle's timer: one closed it, one next cycle opened.
  assert.deepEqual(await cycleRows(database, 'survive'), [{ sequence: 1, completed: true }, { sequence: 2, completed: false }]);
  assert.deepEqual((await processOn(cc, 'survive')).checkpoints.map((x) => x.number), [1, 2]);
  // The new cycle is served by the survivors: a worker joins it through B.
  assert.equal((await join(b)).requestKey.length, 64);
});
