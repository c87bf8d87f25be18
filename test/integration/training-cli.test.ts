// `grid train`, `grid jobs`, `grid fedavg` against real nodes: progress on a TTY, --json with the final
// metrics (test accuracy included) and the trained model's id, coded failures with exit code 1.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import { PassThrough } from 'node:stream';
import { partitionDataset, readCsvDataset } from '../../src/compute/data';
import { runGrid } from '../../src/cli/grid';
import { ADMIN_PASSWORD, startTestNode, tempDir, type TestNode } from '../helpers/node-fixtures';
import { DIGITS, writeCsv } from '../helpers/training-fixtures';

let nodes: TestNode[] = [];
let dir: string;

before(async () => {
  dir = tempDir('grid-train-cli-');
  const parts = partitionDataset(await readCsvDataset(DIGITS), 2, 'iid', 1);
  nodes = await Promise.all(parts.map((p, k) => startTestNode({
    datasets: [{ name: `digits-${k}`, path: writeCsv(p, path.join(dir, `digits-${k}.csv`)), tags: ['digits'] }],
  })));
});
after(async () => {
  await Promise.all(nodes.map((n) => n.close()));
  fs.rmSync(dir, { recursive: true, force: true });
});

async function grid(args: string[], opts: { tty?: boolean; url?: string } = {}): Promise<{ code: number; out: string; err: string }> {
  const out = new PassThrough();
  const err = new PassThrough();
  if (opts.tty) Object.assign(err, { isTTY: true });
  let o = '', e = '';
  out.on('data', (d: Buffer) => { o += d; });
  err.on('data', (d: Buffer) => { e += d; });
  const code = await runGrid(['node', 'grid', '--node', opts.url ?? nodes[0]!.node.url, '--user', 'admin', '--password', ADMIN_PASSWORD, ...args], out, err);
  return { code, out: o, err: e };
}

test('grid train --json prints the final metrics with test accuracy and the new model id; a TTY shows progress', async () => {
  const r = await grid(['--json', 'train', 'mlp:64,32,10', '-d', 'digits-0', '--feature-scale', '0.0625', '--epochs', '8', '--lr', '0.005', '--test-split', '0.2', '--seed', '3']);
  assert.equal(r.code, 0, r.err);
  assert.equal(r.err, '', 'no progress with --json');
  const j = JSON.parse(r.out);
  assert.equal(j.state, 'succeeded');
  assert.match(j.model_id, /^trained-job-/);
  assert.ok(j.test.accuracy > 0.85, `test accuracy ${j.test.accuracy}`);
  assert.equal(j.samples, 899 - Math.round(899 * 0.2));

  const tty = await grid(['train', 'mlp:64,16,10', '-d', 'digits-0', '--feature-scale', '0.0625', '--epochs', '2', '--progress-every', '5', '--output-model-id', 'cli-mlp'], { tty: true });
  assert.equal(tty.code, 0, tty.err);
  assert.match(tty.err, /job job-\w+: running/);
  assert.match(tty.err, /epoch 2\/2 {2}batch 29\/29 {2}loss \d\.\d{4} {2}acc \d+\.\d\d% {2}\d+ rows\/s {2}ETA 0s/);
  assert.match(tty.out, /^job job-\w+ succeeded in [\d.]+ s: train acc [\d.]+%, validation -, test -\nmodel cli-mlp@1\n$/);

  const jobs = JSON.parse((await grid(['--json', 'jobs'])).out);
  assert.equal(jobs.jobs.length, 2);
});

test('grid fedavg over two nodes picked by tag serves the final model and prints its id and test accuracy', async () => {
  const urls = nodes.map((n) => n.node.url).join(',');
  const r = await grid(['--json', 'fedavg', 'mlp:64,32,10', '--nodes', urls, '--tag', 'digits', '--rounds', '3', '--local-epochs', '2', '--lr', '0.005',
    '--feature-scale', '0.0625', '--test-split', '0.2', '--output-model-id', 'digits-fed', '--serve-to', nodes[1]!.node.url]);
  assert.equal(r.code, 0, r.err);
  const j = JSON.parse(r.out);
  assert.equal(j.model_id, 'digits-fed');
  assert.equal(j.model, 'digits-fed@1');
  assert.equal(j.rounds, 3);
  assert.ok(j.test.accuracy > 0.8, `test accuracy ${j.test.accuracy}`);
  assert.deepEqual(j.dropped, []);
  const models = JSON.parse((await grid(['--json', 'models'], { url: nodes[1]!.node.url })).out).models.map((m: { id: string }) => m.id);
  assert.deepEqual(models, ['digits-fed']);
});

test('grid fedavg --tag also names a dataset by id or name, and refuses a node of --nodes that has none, naming it', async () => {
  // digits-0 is a dataset name on the first node only.
  const r = await grid(['--json', 'fedavg', 'mlp:64,8,10', '--nodes', nodes.map((n) => n.node.url).join(','), '--tag', 'digits-0', '--rounds', '1']);
  assert.equal(r.code, 1);
  const e = JSON.parse(r.out).error;
  assert.equal(e.code, 'GRID_ERR_NOT_FOUND');
  assert.equal(e.message, `${nodes[1]!.node.url} has no dataset tagged "digits-0"`);
});

test('grid train against a missing dataset exits 1 with the coded error', async () => {
  const r = await grid(['--json', 'train', 'mlp:64,8,10', '-d', 'nope']);
  assert.equal(r.code, 1);
  assert.equal(JSON.parse(r.out).error.code, 'GRID_ERR_NOT_FOUND');
  assert.match(r.err, /^grid: GRID_ERR_NOT_FOUND: dataset_id: no dataset "nope" on this node/);
  const f = await grid(['fedavg', 'mlp:64,8,10', '--nodes', nodes[0]!.node.url]);
  assert.equal(f.code, 1);
  assert.match(f.err, /exactly one of --dataset or --tag/);
});

test('grid train names a user mistake in mlp:… as INVALID_INPUT with the expected form, not an internal error', async () => {
  const r = await grid(['train', 'mlp:64', '-d', 'digits-0']);
  assert.equal(r.code, 1);
  assert.match(r.err, /^grid: GRID_ERR_INVALID_INPUT: mlp:64: .*at least two.*\(mlp:IN,HIDDEN,…,OUT, e\.g\. mlp:64,64,10\)/);
});

test('grid train and watch print progress lines when stderr is a pipe, and use the same defaults as the notebook', async () => {
  const r = await grid(['train', 'mlp:64,16,10', '-d', 'digits-0', '--feature-scale', '0.0625', '--output-model-id', 'piped']);
  assert.equal(r.code, 0, r.err);
  assert.doesNotMatch(r.err, /\r/, 'no carriage returns in a pipe');
  const epochs = r.err.split('\n').filter((l) => l.startsWith('epoch '));
  assert.deepEqual(epochs.map((l) => l.split(' ')[1]), ['1/5', '2/5', '3/5', '4/5', '5/5'], r.err);
  assert.match(r.err, /^job job-\w+: running$/m);
  const job = r.out.match(/^job (job-\w+) succeeded/)![1]!;
  const w = await grid(['watch', job]);
  assert.equal(w.code, 0, w.err);
  assert.match(w.err, /^epoch 5\/5 /m);
  const record = JSON.parse((await grid(['--json', 'jobs'])).out).jobs.find((j: { id: string }) => j.id === job);
  assert.equal(record.epochs, 5);
});

/** A loopback port nothing listens on: bound by the OS, then released. */
async function closedPort(): Promise<number> {
  const srv = net.createServer();
  await new Promise<void>((resolve) => srv.listen(0, '127.0.0.1', resolve));
  const { port } = srv.address() as net.AddressInfo;
  await new Promise<void>((resolve) => srv.close(() => resolve()));
  return port;
}

test('grid fedavg takes a hosted model id, and drops an unreachable node with its reason instead of aborting', async () => {
  const served = await grid(['--json', 'train', 'mlp:64,16,10', '-d', 'digits-0', '--feature-scale', '0.0625', '--epochs', '1', '--output-model-id', 'fed-start']);
  assert.equal(served.code, 0, served.err);
  const dead = `ws://127.0.0.1:${await closedPort()}`;
  const r = await grid(['--json', 'fedavg', 'fed-start', '--nodes', `${nodes[0]!.node.url},${dead},${nodes[1]!.node.url}`, '--tag', 'digits', '--rounds', '1',
    '--feature-scale', '0.0625', '--output-model-id', 'fed-from-hosted']);
  assert.equal(r.code, 0, r.err);
  const j = JSON.parse(r.out);
  assert.equal(j.model_id, 'fed-from-hosted');
  assert.equal(j.dropped.length, 1);
  assert.equal(j.dropped[0].name, dead);
  assert.equal(j.dropped[0].round, 0);
  assert.match(j.dropped[0].error.code, /^GRID_ERR_/);
  assert.ok(j.dropped[0].error.message.length > 0);
});
