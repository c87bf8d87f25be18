// Model versions against the real node, client, CLI and onnxruntime: a model name has versions 1..N, `name`
// is the latest and `name@N` one version, wherever a model is named; training and FedAvg store the next
// version with its lineage; one version or all are deleted; an old data dir (no versions) migrates.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { createHash } from 'node:crypto';
import { PassThrough } from 'node:stream';
import { loadModel } from '../../src/compute/backend';
import { mlp } from '../../src/compute/plan';
import { GridClient } from '../../src/core/client';
import { GridError } from '../../src/core/errors';
import type { NodeEvent } from '../../src/core/protocol/messages';
import type { NamedTensors } from '../../src/core/protocol/tensor';
import { runGrid } from '../../src/cli/grid';
import { ADMIN_PASSWORD, seededFloats, startTestNode, tempDir, type TestNode } from '../helpers/node-fixtures';
import { DIGITS } from '../helpers/training-fixtures';

const FIXTURE = path.join(__dirname, '../fixtures/data-dir-v1');
const digits = [{ name: 'digits', path: DIGITS, tags: ['digits'] }];
const train = { dataset_id: 'digits', feature_scale: 1 / 16, loss: 'cross_entropy', optimizer: 'adam', lr: 0.01, epochs: 1, batch_size: 64, seed: 1 } as const;
const sha = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');
const row: NamedTensors = { input: { dtype: 'float32', dims: [2, 64], data: seededFloats(128, 7).map((v) => v + 0.5) } };

let tn: TestNode;
let dir: string;
before(async () => {
  tn = await startTestNode({ datasets: digits });
  dir = tempDir('grid-versions-');
});
after(async () => {
  await tn.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

async function runLocally(bytes: Uint8Array, feeds: NamedTensors): Promise<number[]> {
  const h = await loadModel(bytes);
  try { return Array.from((await h.run(feeds)).logits!.data as Float32Array); } finally { await h.dispose(); }
}

async function trainOnce(c: GridClient, model: string) {
  const job = await c.training.start({ model, ...train });
  const done = await c.training.wait(job.id);
  assert.equal(done.state, 'succeeded', JSON.stringify(done.error));
  return { job: done, model: done.result!.model! };
}

const failure = (p: Promise<unknown>) => p.then(() => assert.fail('expected a failure'), (e: unknown) => e as GridError);

async function grid(args: string[], url = tn.node.url): Promise<{ code: number; out: string; err: string }> {
  const out = new PassThrough();
  const err = new PassThrough();
  let o = '', e = '';
  out.on('data', (d: Buffer) => { o += d; });
  err.on('data', (d: Buffer) => { e += d; });
  const code = await runGrid(['node', 'grid', '--node', url, '--user', 'admin', '--password', ADMIN_PASSWORD, ...args], out, err);
  return { code, out: o, err: e };
}

test('host v1, train → v2 with lineage; name is the latest, name@1 the first; infer and download by both; delete @2 → v1 is latest again; delete all', async (t) => {
  const c = await tn.admin();
  const watcher = await tn.anonymous();
  const events: NodeEvent[] = [];
  let heard: () => void = () => {};
  const stream = watcher.subscribe(['models']);
  stream.subscribe({ next: (ev) => { events.push(ev); heard(); } });
  t.after(() => stream.cancel());
  /** Resolves once `n` events arrived; fails after 10 s. */
  const eventCount = (n: number) => new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`heard ${events.length} of ${n} model events`)), 10_000);
    heard = () => { if (events.length >= n) { clearTimeout(timer); resolve(); } };
    heard();
  });
  const v1bytes = mlp([64, 8, 10], { seed: 1 });
  const v1 = await c.hostModel(v1bytes, { id: 'digits-mlp', allowDownload: true, allowRemoteInference: true });
  assert.deepEqual([v1.id, v1.version, v1.versions, v1.latest_version, v1.parent], ['digits-mlp', '1', 1, '1', undefined]);

  const { job, model: v2 } = await trainOnce(c, 'digits-mlp');
  assert.deepEqual([v2.id, v2.version, v2.versions, v2.parent, v2.job_id], ['digits-mlp', '2', 2, 'digits-mlp@1', job.id]);
  assert.equal(job.model_id, 'digits-mlp@1', 'the job names the version it trained');
  assert.equal(v2.allow_remote_inference, true);
  const record = await c.training.modelTraining('digits-mlp@2');
  assert.deepEqual([record.model_id, record.model_version, record.parent_model_id, record.job_id], ['digits-mlp', '2', 'digits-mlp@1', job.id]);
  assert.deepEqual(await c.training.modelTraining('digits-mlp'), record, 'the plain name is the latest version');

  // Resolution: the name is the latest, name@N that version.
  assert.equal((await c.modelInfo('digits-mlp')).version, '2');
  assert.equal((await c.modelInfo('digits-mlp@1')).sha256, sha(v1bytes));
  assert.equal((await c.modelInfo('digits-mlp@1')).latest_version, '2');
  assert.deepEqual((await c.listModels()).map((m) => [m.id, m.version, m.versions]), [['digits-mlp', '2', 2]]);
  assert.deepEqual((await c.listModels({ allVersions: true })).map((m) => `${m.id}@${m.version}`), ['digits-mlp@1', 'digits-mlp@2']);

  // Download and inference by both refs give each version's own bytes and answers.
  const f1 = path.join(dir, 'v1.onnx');
  const f2 = path.join(dir, 'latest.onnx');
  assert.equal((await c.downloadModel('digits-mlp@1', f1)).version, '1');
  assert.equal((await c.downloadModel('digits-mlp', f2)).version, '2');
  const v2bytes = fs.readFileSync(f2);
  assert.ok(fs.readFileSync(f1).equals(Buffer.from(v1bytes)));
  assert.equal(sha(v2bytes), v2.sha256);
  const want1 = await runLocally(v1bytes, row);
  const want2 = await runLocally(v2bytes, row);
  assert.notDeepEqual(want1, want2, 'training changed the model');
  assert.deepEqual(Array.from((await c.runInference('digits-mlp@1', row)).logits!.data as Float32Array), want1);
  assert.deepEqual(Array.from((await c.runInference('digits-mlp', row)).logits!.data as Float32Array), want2);

  // The plain name of a model with several versions deletes nothing: it says how.
  const ambiguous = await failure(c.deleteModel('digits-mlp'));
  assert.equal(ambiguous.code, 'GRID_ERR_INVALID_INPUT');
  assert.match(ambiguous.message, /has 2 versions \(1, 2\): delete one as digits-mlp@N, or all of them with all_versions/);
  const del = await c.deleteModel('digits-mlp@2');
  assert.deepEqual([del.versions, del.latest_version], [['2'], '1']);
  assert.equal((await c.modelInfo('digits-mlp')).version, '1', 'the previous version is the latest again');
  assert.deepEqual(Array.from((await c.runInference('digits-mlp', row)).logits!.data as Float32Array), want1);
  const gone = await failure(c.modelInfo('digits-mlp@2'));
  assert.equal(gone.code, 'GRID_ERR_NOT_FOUND');
  assert.match(gone.message, /model "digits-mlp" has no version 2 on this node; its versions are 1/);

  // Version numbers are not reused while the model exists: the next training stores version 3.
  const { model: v3 } = await trainOnce(c, 'digits-mlp@1');
  assert.deepEqual([v3.version, v3.parent, v3.versions], ['3', 'digits-mlp@1', 2]);
  const all = await c.deleteModel('digits-mlp', { allVersions: true });
  assert.deepEqual([all.versions, all.latest_version], [['1', '3'], null]);
  assert.deepEqual(await c.listModels({ allVersions: true }), []);
  const blobs = fs.readdirSync(path.join(tn.dir, 'blobs'), { recursive: true }).filter((f) => /^[0-9a-f]{64}$/.test(path.basename(String(f))));
  assert.deepEqual(blobs, [], 'the bytes went with the last version using them');
  // A name deleted with all its versions starts again at 1.
  assert.equal((await c.hostModel(v1bytes, { id: 'digits-mlp' })).version, '1');
  await c.deleteModel('digits-mlp');

  // Watchers heard each version come and go, and the whole model go at the end.
  await eventCount(7);
  assert.deepEqual(events.map((e) => (e.event === 'model-added' ? `+${e.model.id}@${e.model.version}` : e.event === 'model-removed' ? `-${e.model_id}${e.version ? `@${e.version}` : ''}` : e.event)),
    ['+digits-mlp@1', '+digits-mlp@2', '-digits-mlp@2', '+digits-mlp@3', '-digits-mlp', '+digits-mlp@1', '-digits-mlp']);
});

test('host-model of an existing id: refused unless a new version is asked for; version numbers only go up; refs are checked', async () => {
  const c = await tn.admin();
  const a = mlp([64, 8, 10], { seed: 2 });
  const b = mlp([64, 8, 10], { seed: 3 });
  await c.hostModel(a, { id: 'hosted' });
  const taken = await failure(c.hostModel(b, { id: 'hosted' }));
  assert.equal(taken.code, 'GRID_ERR_ALREADY_EXISTS');
  assert.match(taken.message, /next version \(new_version: true, grid serve --new-version\)/);
  const v2 = await c.hostModel(b, { id: 'hosted', newVersion: true, parent: 'elsewhere@4' });
  assert.deepEqual([v2.version, v2.parent, v2.versions], ['2', 'elsewhere@4', 2]);
  assert.equal((await c.hostModel(a, { id: 'hosted', version: '5' })).version, '5', 'a named version above the latest is a new version');
  assert.equal((await failure(c.hostModel(a, { id: 'hosted', version: '5' }))).code, 'GRID_ERR_ALREADY_EXISTS');
  assert.equal((await failure(c.hostModel(a, { id: 'hosted', version: '4', newVersion: true }))).code, 'GRID_ERR_INVALID_INPUT');
  assert.equal((await failure(c.hostModel(a, { id: 'hosted', version: '1.0.0' }))).code, 'GRID_ERR_INVALID_INPUT');
  assert.equal((await c.hostModel(a, { id: 'fresh', newVersion: true })).version, '1', 'new_version on a new id creates version 1');
  // Uploads racing to add versions each get their own number.
  const raced = await Promise.all([1, 2, 3].map((s) => c.hostModel(mlp([64, 8, 10], { seed: 10 + s }), { id: 'fresh', newVersion: true })));
  assert.deepEqual(raced.map((m) => m.version).sort(), ['2', '3', '4']);
  for (const ref of ['hosted@0', 'hosted@', 'hosted@1@2', 'hosted@x', '../x@1', '@1', '..@1']) {
    assert.equal((await failure(c.modelInfo(ref))).code, 'GRID_ERR_INVALID_ID', ref);
  }
  assert.match((await failure(c.modelInfo('hosted@0'))).message, /a version is written name@N with N a whole number from 1/);
  assert.match((await failure(c.modelInfo('..@1'))).message, /is a path part/);
  assert.equal((await failure(c.hostModel(a, { id: 'hosted@6' }))).code, 'GRID_ERR_INVALID_ID', 'a new id names no version');
  assert.equal((await failure(c.deleteModel('hosted@2', { allVersions: true }))).code, 'GRID_ERR_INVALID_INPUT');
  assert.deepEqual(fs.readdirSync(path.join(tn.dir, 'uploads')), []);
  await c.deleteModel('hosted', { allVersions: true });
  await c.deleteModel('fresh', { allVersions: true });
});

test('only the owner or an admin adds versions: another user\'s upload is refused, their training and FedAvg results become models of their own with the lineage', async () => {
  const c = await tn.admin();
  await c.addUser('bob', 'bob-password-1');
  const bob = await GridClient.connect(tn.node.url, { reconnect: { maxAttempts: 0 }, credentials: { username: 'bob', password: 'bob-password-1' } });
  try {
    await c.hostModel(mlp([64, 8, 10], { seed: 5 }), { id: 'owned', allowDownload: true, allowRemoteInference: true });
    const refused = await failure(bob.hostModel(mlp([64, 8, 10], { seed: 6 }), { id: 'owned', newVersion: true }));
    assert.equal(refused.code, 'GRID_ERR_FORBIDDEN');
    assert.match(refused.message, /model "owned" belongs to admin: only its owner or an admin adds versions to it/);
    const { job, model } = await trainOnce(bob, 'owned');
    assert.deepEqual([model.id, model.version, model.parent, model.owner], [`trained-${job.id}`, '1', 'owned@1', 'bob']);
    const fed = await grid(['--json', '--user', 'bob', '--password', 'bob-password-1', 'fedavg', 'owned', '--nodes', tn.node.url, '--dataset', 'digits', '--rounds', '1', '--feature-scale', '0.0625']);
    assert.equal(fed.code, 0, fed.err);
    const served = JSON.parse(fed.out);
    assert.match(served.model, /^fedavg-\d{14}@1$/);
    assert.equal((await c.modelInfo(served.model)).parent, 'owned@1');
    assert.deepEqual((await c.modelInfo('owned')).versions, 1, "admin's model is as it was");
    // An admin may add a version to anyone's model.
    assert.equal((await c.hostModel(mlp([64, 8, 10], { seed: 7 }), { id: model.id, newVersion: true })).version, '2');
    for (const id of ['owned', model.id, served.model.split('@')[0]]) await c.deleteModel(id, { allVersions: true });
  } finally {
    bob.dispose();
  }
});

test('the CLI names models as name@version: serve --new-version, models [--all], info/infer/download/delete with name@N or --version, train and fedavg store the next version', async () => {
  const file = path.join(dir, 'cli-mlp.onnx');
  fs.writeFileSync(file, mlp([64, 8, 10], { seed: 4 }));
  assert.match((await grid(['serve', file, '--allow-download', '--allow-remote-inference'])).out, /^hosted cli-mlp@1 \(/);
  const again = await grid(['serve', file]);
  assert.equal(again.code, 1);
  assert.match(again.err, /GRID_ERR_ALREADY_EXISTS: a model "cli-mlp" is already on this node; host the bytes as its next version/);
  assert.match((await grid(['serve', file, '--new-version'])).out, /^hosted cli-mlp@2 \(/);

  const trained = await grid(['train', 'cli-mlp', '--version', '1', '-d', 'digits', '--feature-scale', '0.0625', '--epochs', '1']);
  assert.equal(trained.code, 0, trained.err);
  assert.match(trained.out, /\nmodel cli-mlp@3 \(from cli-mlp@1\)\n$/);
  const json = JSON.parse((await grid(['--json', 'train', 'cli-mlp@3', '-d', 'digits', '--feature-scale', '0.0625', '--epochs', '1'])).out);
  assert.deepEqual([json.model_id, json.model], ['cli-mlp', 'cli-mlp@4']);
  const fed = await grid(['fedavg', 'cli-mlp', '--nodes', tn.node.url, '--dataset', 'digits', '--rounds', '1', '--feature-scale', '0.0625']);
  assert.equal(fed.code, 0, fed.err);
  assert.match(fed.out, new RegExp(`\\nmodel cli-mlp@5 \\(from cli-mlp@4\\) on ${tn.node.url} \\(others may download: yes, run: yes\\)\\n$`));

  assert.match((await grid(['models'])).out, /^MODEL\s+VERSIONS\s+SIZE\s+DOWNLOAD\s+INFERENCE\s+OWNER\s+CREATED\ncli-mlp@5\s+5\s+/);
  const all = (await grid(['models', '--all'])).out.split('\n');
  assert.match(all[0]!, /^MODEL\s+LATEST\s+FROM\s+JOB\s+SIZE/);
  assert.deepEqual(all.slice(1, 6).map((l) => l.split(/\s+/).slice(0, 2).join(' ')), ['cli-mlp@1 -', 'cli-mlp@2 -', 'cli-mlp@3 cli-mlp@1', 'cli-mlp@4 cli-mlp@3', 'cli-mlp@5 yes']);
  assert.match((await grid(['info', 'cli-mlp', '--version', '3'])).out, /^cli-mlp@3 \(latest is cli-mlp@5\) .*\nfrom cli-mlp@1 \(training job job-\w+\)\n/);
  assert.match((await grid(['info', 'cli-mlp'])).out, /^cli-mlp@5 \(latest of 5\) /);
  const bad = await grid(['info', 'cli-mlp@2', '--version', '3']);
  assert.equal(bad.code, 1);
  assert.match(bad.err, /names a version already/);

  const input = path.join(dir, 'x.json');
  fs.writeFileSync(input, JSON.stringify([Array.from({ length: 64 }, (_, i) => (i % 16) / 16)]));
  const first = await grid(['infer', 'cli-mlp@1', '-i', input]);
  const byFlag = await grid(['infer', 'cli-mlp', '--version', '1', '-i', input]);
  const latest = await grid(['infer', 'cli-mlp', '-i', input]);
  assert.equal(first.code, 0, first.err);
  assert.equal(byFlag.out, first.out);
  assert.notEqual(latest.out, first.out);
  const dl = await grid(['download', 'cli-mlp', '--version', '1', '-o', `${dir}/`]);
  assert.match(dl.out, /^downloaded cli-mlp@1 to /);
  assert.ok(fs.readFileSync(path.join(dir, 'cli-mlp@1.onnx')).equals(fs.readFileSync(file)));

  const one = await grid(['delete', 'cli-mlp@5']);
  assert.equal(one.out, 'deleted cli-mlp@5; cli-mlp@4 is the latest\n');
  const plain = await grid(['delete', 'cli-mlp']);
  assert.equal(plain.code, 1);
  assert.match(plain.err, /grid delete cli-mlp --all/);
  assert.equal((await grid(['delete', 'cli-mlp', '--all'])).out, 'deleted cli-mlp (versions 1, 2, 3, 4)\n');
  assert.equal((await grid(['models'])).out, 'no models\n');
});

test('an old data dir (models without versions) migrates on start: every model is version 1 of its id, trained ones keep their lineage, and training goes on from there', { skip: process.env.GRID_TEST_DATABASE === 'postgres' && 'migrates an embedded meta.db: a PostgreSQL database starts versioned' }, async (t) => {
  const data = tempDir('grid-old-data-');
  fs.cpSync(FIXTURE, data, { recursive: true });
  fs.rmSync(path.join(data, 'README.md'));
  const old = await startTestNode({ dataDir: data, datasets: digits });
  const later: TestNode[] = [];
  t.after(async () => {
    await old.close();
    for (const n of later) await n.close();
    fs.rmSync(data, { recursive: true, force: true });
  });
  const c = await old.admin();
  const models = await c.listModels({ allVersions: true });
  assert.deepEqual(models.map((m) => [m.id, m.version, m.name, m.parent ?? null, m.allow_download]),
    [['digits-mlp', '1', 'digits-mlp', null, true], ['digits-mlp-v2', '1', 'digits-mlp', 'digits-mlp@1', true]]);
  assert.match(models[1]!.job_id!, /^job-\w+$/);
  // Every id a user knew still resolves and runs; the old training record is still found.
  for (const ref of ['digits-mlp', 'digits-mlp-v2', 'digits-mlp@1', 'digits-mlp-v2@1']) {
    assert.deepEqual((await c.runInference(ref, row)).logits!.dims, [2, 10], ref);
  }
  const record = await c.training.modelTraining('digits-mlp-v2');
  assert.deepEqual([record.model_id, record.parent_model_id, record.job_id], ['digits-mlp-v2', 'digits-mlp', models[1]!.job_id]);
  const { model } = await trainOnce(c, 'digits-mlp');
  assert.deepEqual([model.id, model.version, model.parent], ['digits-mlp', '2', 'digits-mlp@1']);
  // A second start finds the migrated database as it left it.
  await old.close();
  const reopened = await startTestNode({ dataDir: data });
  later.push(reopened);
  const c2 = await reopened.admin();
  assert.deepEqual((await c2.listModels({ allVersions: true })).map((m) => `${m.id}@${m.version}`), ['digits-mlp@1', 'digits-mlp@2', 'digits-mlp-v2@1']);
});
