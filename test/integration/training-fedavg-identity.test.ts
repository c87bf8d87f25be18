// FedAvg knows its participants' nodes by their node id (get-id), not by the address they were reached
// at: the same node reached as ws://127.0.0.1:P and ws://localhost:P, with the same dataset, is refused
// before anything is sent, naming both entries; a participant that sits out always says why.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import * as path from 'node:path';
import { readCsvDataset, splitDataset } from '../../src/compute/data';
import { mlp } from '../../src/compute/plan';
import { GridClient } from '../../src/core/client';
import { fedAvgTrain, participantsByTag, type RoundReport } from '../../src/federation';
import { ADMIN_PASSWORD, startTestNode, tempDir, type TestNode } from '../helpers/node-fixtures';
import { DIGITS, writeCsv } from '../helpers/training-fixtures';

const scale = 1 / 16;
let a: TestNode;
let b: TestNode;
let viaIp: GridClient;
let viaName: GridClient;
let other: GridClient;
const opened: GridClient[] = [];

before(async () => {
  const { train } = splitDataset(await readCsvDataset(DIGITS), 0.5, 3);
  const dir = tempDir('grid-fedavg-identity-');
  const csv = writeCsv(train, path.join(dir, 'digits-half.csv'));
  const datasets = [{ name: 'digits-half', path: csv, tags: ['digits'] }, { name: 'digits-other', path: csv, tags: ['other'] }];
  [a, b] = await Promise.all([startTestNode({ name: 'node-a', datasets }), startTestNode({ name: 'node-b', datasets })]);
  const credentials = { username: 'admin', password: ADMIN_PASSWORD };
  viaIp = await a.admin();
  // The same node under its other name: a different URL, a different socket.
  viaName = await GridClient.connect(a.node.url.replace('127.0.0.1', 'localhost'), { credentials, reconnect: { maxAttempts: 0 } });
  other = await b.admin();
  opened.push(viaName);
});
after(async () => {
  for (const c of opened) c.dispose();
  await Promise.all([a.close(), b.close()]);
});

const base = { model: mlp([64, 8, 10], { seed: 2 }), rounds: 1, localEpochs: 1, loss: 'cross_entropy', optimizer: 'sgd', lr: 0.1, batchSize: 64, featureScale: scale } as const;

test('the same node under two URLs with the same dataset is refused before anything runs, naming both entries', async () => {
  assert.notEqual(viaIp.socket.status.url, viaName.socket.status.url);
  const started = performance.now();
  await assert.rejects(fedAvgTrain({
    ...base,
    participants: [
      { client: viaIp, datasetId: 'digits-half', name: 'Local node' },
      { client: other, datasetId: 'digits-half', name: 'node-b' },
      { client: viaName, datasetId: 'digits-half', name: 'local-again' },
    ],
  }), (e: unknown) => {
    const err = e as { code?: string; message: string };
    assert.equal(err.code, 'GRID_ERR_INVALID_INPUT');
    assert.match(err.message, /"Local node" and "local-again" are the same dataset "digits-half" on the same node/);
    return true;
  });
  const ms = performance.now() - started;
  // Refused up front: no model was sent to any node, no job ran.
  for (const c of [viaIp, other]) {
    assert.deepEqual((await c.listModels()).filter((m) => m.id.startsWith('fedavg-')), []);
    assert.deepEqual(await c.training.listJobs(), []);
  }
  assert.ok(ms < 5_000, `refusal took ${ms} ms`);
});

test('participants found by tag over two URLs of one node are refused too (the CLI\'s --nodes --tag path)', async () => {
  const participants = await participantsByTag([viaIp, viaName], ['digits']);
  assert.equal(participants.length, 2);
  await assert.rejects(fedAvgTrain({ ...base, participants }), (e: unknown) => {
    const err = e as { code?: string; message: string };
    assert.equal(err.code, 'GRID_ERR_INVALID_INPUT');
    // Named as the nodes were given (one dataset each: no `#dataset` suffix).
    assert.ok(err.message.includes(`"${viaIp.socket.status.url}" and "${viaName.socket.status.url}" are the same dataset "digits-half"`), err.message);
    return true;
  });
});

test('two different datasets of one node are two participants, not a duplicate', async () => {
  const reports: RoundReport[] = [];
  await fedAvgTrain({
    ...base,
    participants: [{ client: viaIp, datasetId: 'digits-half', name: 'half' }, { client: viaName, datasetId: 'digits-other', name: 'other' }],
    onRound: (r) => reports.push(r),
  });
  assert.deepEqual(reports[0]!.dropped, []);
  assert.deepEqual(reports[0]!.participants.map((p) => p.name).sort(), ['half', 'other']);
  assert.deepEqual(reports[0]!.dropped, []);
});

test('a node that cannot take the model sits out every round with the node\'s own reason', async () => {
  const anonymous = await b.anonymous();
  const reports: RoundReport[] = [];
  const warnings: string[] = [];
  await fedAvgTrain({
    ...base, rounds: 2,
    participants: [{ client: viaIp, datasetId: 'digits-half', name: 'signed-in' }, { client: anonymous, datasetId: 'digits-half', name: 'anonymous' }],
    onRound: (r) => reports.push(r), onWarning: (m) => warnings.push(m),
  });
  assert.equal(reports.length, 2);
  for (const r of reports) {
    assert.equal(r.dropped.length, 1);
    const d = r.dropped[0]!;
    assert.equal(d.name, 'anonymous');
    assert.equal(d.participant, 1);
    assert.equal(d.error.code, 'GRID_ERR_UNAUTHENTICATED');
    assert.match(d.error.message, /could not take the model at the start: .*needs an authenticated session/);
  }
  assert.match(warnings[0]!, /^anonymous cannot take part: GRID_ERR_UNAUTHENTICATED/);
});
