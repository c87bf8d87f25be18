// Who may use a model, as users see it on a real node: the owner changes a model's flags later
// (set-model-permissions, `grid permissions`) and other users' downloads and inference follow; only the
// owner or an admin may change them; watchers hear the change; and a result made from a hosted model —
// a trained version, a FedAvg result, from the CLI, the client or the notebook — carries the source's
// flags unless the user says otherwise.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { PassThrough } from 'node:stream';
import { GridClient } from '../../src/core/client';
import { ErrorCodes, GridError } from '../../src/core/errors';
import type { NodeEvent } from '../../src/core/protocol/messages';
import { NotebookGridBridge, type BridgeNode } from '../../src/extension/notebook/bridge';
import type { GridCallContext } from '../../src/kernel';
import { runGrid } from '../../src/cli/grid';
import { mlpModel, seededFloats, startTestNode, tempDir, type TestNode } from '../helpers/node-fixtures';

const IRIS = path.join(__dirname, '../../media/datasets/iris.csv');
const PASSWORDS = { alice: 'alice-password-1', bob: 'bob-password-22' } as const;
type User = keyof typeof PASSWORDS;

let n: TestNode;
let dir: string;
const clients: GridClient[] = [];

before(async () => {
  n = await startTestNode({ datasets: [{ name: 'iris', path: IRIS, tags: ['iris'] }] });
  dir = tempDir('grid-permissions-');
  const admin = await n.admin();
  for (const [user, password] of Object.entries(PASSWORDS)) await admin.addUser(user, password);
});
after(async () => {
  for (const c of clients) c.dispose();
  await n.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

async function as(user: User): Promise<GridClient> {
  const c = await GridClient.connect(n.node.url, { reconnect: { maxAttempts: 0 }, credentials: { username: user, password: PASSWORDS[user] } });
  clients.push(c);
  return c;
}

async function grid(user: User, args: string[]): Promise<{ code: number; out: string; err: string }> {
  const out = new PassThrough();
  const err = new PassThrough();
  let o = '', e = '';
  out.on('data', (d: Buffer) => { o += d; });
  err.on('data', (d: Buffer) => { e += d; });
  const code = await runGrid(['node', 'grid', '--node', n.node.url, '--user', user, '--password', PASSWORDS[user], ...args], out, err);
  return { code, out: o, err: e };
}

const flagsOf = (m: { allow_download: boolean; allow_remote_inference: boolean }) => ({ download: m.allow_download, infer: m.allow_remote_inference });
const input = { x: { dtype: 'float32' as const, dims: [1, 4], data: seededFloats(4, 5) } };

/** Whether `c` may download and run model `id`: what a user would find out by trying. */
async function canUse(c: GridClient, id: string): Promise<{ download: boolean; infer: boolean }> {
  const tryIt = (p: Promise<unknown>) => p.then(() => true, (err: unknown) => {
    if (err instanceof GridError && err.code === ErrorCodes.FORBIDDEN) return false;
    throw err;
  });
  return {
    download: await tryIt(c.downloadModel(id, path.join(dir, `${id}-${Date.now()}.onnx`))),
    infer: await tryIt(c.runInference(id, input)),
  };
}

test('the owner changes the flags later and other users\' downloads and inference follow', { timeout: 60_000 }, async () => {
  const alice = await as('alice');
  const bob = await as('bob');
  await alice.hostModel(mlpModel(4, 8, 3), { id: 'flip' });
  assert.deepEqual(await canUse(bob, 'flip'), { download: false, infer: false });
  assert.deepEqual(await canUse(alice, 'flip'), { download: true, infer: true }, 'the owner always may');

  const m1 = await alice.setModelPermissions('flip', { allowRemoteInference: true });
  assert.deepEqual(flagsOf(m1), { download: false, infer: true });
  assert.deepEqual(await canUse(bob, 'flip'), { download: false, infer: true });

  const m2 = await alice.setModelPermissions('flip', { allowDownload: true });
  assert.deepEqual(flagsOf(m2), { download: true, infer: true }, 'a flag left out keeps its value');
  assert.deepEqual(await canUse(bob, 'flip'), { download: true, infer: true });

  await alice.setModelPermissions('flip', { allowRemoteInference: false });
  assert.deepEqual(await canUse(bob, 'flip'), { download: true, infer: false });
  assert.deepEqual(flagsOf(await bob.modelInfo('flip')), { download: true, infer: false }, 'everyone sees the new flags');
});

test('the flags set later survive a restart of the node', { timeout: 60_000 }, async (t) => {
  const dataDir = tempDir('grid-permissions-restart-');
  t.after(() => fs.rmSync(dataDir, { recursive: true, force: true }));
  let node = await startTestNode({ dataDir });
  const c = await node.admin();
  await c.hostModel(mlpModel(4, 8, 3), { id: 'kept' });
  await c.setModelPermissions('kept', { allowDownload: true, allowRemoteInference: true });
  await node.close();
  node = await startTestNode({ dataDir });
  t.after(() => node.close());
  const anyone = await node.anonymous();
  assert.deepEqual(flagsOf(await anyone.modelInfo('kept')), { download: true, infer: true });
});

test('only the owner or an admin may change the flags; others are refused, told whose model it is', { timeout: 60_000 }, async () => {
  const alice = await as('alice');
  const bob = await as('bob');
  await alice.hostModel(mlpModel(4, 8, 3), { id: 'alices' });
  await assert.rejects(bob.setModelPermissions('alices', { allowDownload: true }), (err: GridError) => {
    assert.equal(err.code, ErrorCodes.FORBIDDEN);
    assert.match(err.message, /refused to change the permissions of model "alices": it belongs to alice/);
    return true;
  });
  assert.deepEqual(flagsOf(await bob.modelInfo('alices')), { download: false, infer: false }, 'nothing changed');
  const anonymous = await n.anonymous();
  await assert.rejects(anonymous.setModelPermissions('alices', { allowDownload: true }), { code: ErrorCodes.UNAUTHENTICATED });
  await assert.rejects(alice.setModelPermissions('nope', { allowDownload: true }), { code: ErrorCodes.NOT_FOUND });
  const admin = await n.admin();
  assert.deepEqual(flagsOf(await admin.setModelPermissions('alices', { allowDownload: true })), { download: true, infer: false });
  assert.deepEqual(await canUse(bob, 'alices'), { download: true, infer: false });
});

test('grid permissions shows and changes the flags and prints the result; a non-owner gets FORBIDDEN and exit 1', { timeout: 60_000 }, async () => {
  const alice = await as('alice');
  await alice.hostModel(mlpModel(4, 8, 3), { id: 'cli-perm' });
  const shown = await grid('bob', ['permissions', 'cli-perm']);
  assert.equal(shown.code, 0, shown.err);
  assert.equal(shown.out, 'cli-perm (owner alice): download no, remote inference no\n');

  const set = await grid('alice', ['permissions', 'cli-perm', '--allow-download', '--allow-remote-inference']);
  assert.equal(set.code, 0, set.err);
  assert.equal(set.out, 'cli-perm (owner alice): download yes, remote inference yes\n');

  const off = await grid('alice', ['--json', 'permissions', 'cli-perm', '--no-allow-download']);
  assert.equal(off.code, 0, off.err);
  assert.deepEqual(JSON.parse(off.out), { model_id: 'cli-perm', owner: 'alice', allow_download: false, allow_remote_inference: true });

  const refused = await grid('bob', ['permissions', 'cli-perm', '--allow-download']);
  assert.equal(refused.code, 1);
  assert.match(refused.err, /^grid: GRID_ERR_FORBIDDEN: .*it belongs to alice/);
  assert.deepEqual(await canUse(await as('bob'), 'cli-perm'), { download: false, infer: true });
});

test('watchers hear model-updated with the new flags, and nothing for a change that changes nothing', { timeout: 60_000 }, async () => {
  const alice = await as('alice');
  await alice.hostModel(mlpModel(4, 8, 3), { id: 'watched' });
  const watcher = await n.anonymous();
  const stream = watcher.subscribe(['models']);
  const events: NodeEvent[] = [];
  const first = new Promise<void>((resolve) => { stream.subscribe({ next: (ev) => { events.push(ev); resolve(); } }); });
  // The subscription is registered once any request after it has been answered (one socket, in order).
  await watcher.getId();
  await alice.setModelPermissions('watched', { allowDownload: false }); // already false: no event
  await alice.setModelPermissions('watched', { allowRemoteInference: true });
  await first;
  stream.cancel();
  assert.equal(events[0]!.event, 'model-updated');
  assert.ok(events[0]!.event === 'model-updated');
  assert.equal(events[0]!.model.id, 'watched');
  assert.deepEqual(flagsOf(events[0]!.model), { download: false, infer: true });
});

test('a trained version inherits its parent\'s flags unless told otherwise (client and grid train)', { timeout: 120_000 }, async () => {
  const alice = await as('alice');
  const bob = await as('bob');
  await alice.hostModel(mlpModel(4, 8, 3), { id: 'parent', allowDownload: true });
  const train = { model: 'parent', dataset_id: 'iris', loss: 'cross_entropy', optimizer: 'sgd', epochs: 1, batch_size: 32 } as const;

  const inherited = (await alice.training.train({ ...train, output_model_id: 'parent-t1' })).result!.model!;
  assert.deepEqual(flagsOf(inherited), { download: true, infer: false });
  assert.deepEqual(await canUse(bob, 'parent-t1'), { download: true, infer: false });
  const told = (await alice.training.train({ ...train, output_model_id: 'parent-t2', allow_download: false, allow_remote_inference: true })).result!.model!;
  assert.deepEqual(flagsOf(told), { download: false, infer: true });

  const cli = await grid('alice', ['--json', 'train', 'parent', '-d', 'iris', '--epochs', '1', '--output-model-id', 'parent-t3']);
  assert.equal(cli.code, 0, cli.err);
  assert.deepEqual(flagsOf(await bob.modelInfo('parent-t3')), { download: true, infer: false });
  const cliNo = await grid('alice', ['--json', 'train', 'parent', '-d', 'iris', '--epochs', '1', '--output-model-id', 'parent-t4', '--no-allow-download', '--allow-remote-inference']);
  assert.equal(cliNo.code, 0, cliNo.err);
  assert.deepEqual(flagsOf(await bob.modelInfo('parent-t4')), { download: false, infer: true });
  assert.deepEqual(await canUse(bob, 'parent-t4'), { download: false, infer: true });
});

test('a FedAvg result inherits the source model\'s flags unless told otherwise (grid fedavg)', { timeout: 120_000 }, async () => {
  const alice = await as('alice');
  const bob = await as('bob');
  await alice.hostModel(mlpModel(4, 8, 3), { id: 'fed-src', allowRemoteInference: true });
  const fed = ['fedavg', 'fed-src', '--nodes', n.node.url, '--dataset', 'iris', '--rounds', '1'];

  const r = await grid('alice', ['--json', ...fed, '--output-model-id', 'fed-out']);
  assert.equal(r.code, 0, r.err);
  assert.deepEqual(await canUse(bob, 'fed-out'), { download: false, infer: true });
  const j = JSON.parse(r.out);
  assert.deepEqual({ id: j.model_id, download: j.allow_download, infer: j.allow_remote_inference }, { id: 'fed-out', download: false, infer: true });

  const told = await grid('alice', [...fed, '--output-model-id', 'fed-out2', '--allow-download', '--no-allow-remote-inference']);
  assert.equal(told.code, 0, told.err);
  assert.match(told.out, /model fed-out2@1 \(from fed-src@1\) on .* \(others may download: yes, run: no\)/);
  assert.deepEqual(await canUse(bob, 'fed-out2'), { download: true, infer: false });

  // A model from a file has no flags to inherit: the result is private unless the flags say otherwise.
  const file = path.join(dir, 'fresh.onnx');
  fs.writeFileSync(file, mlpModel(4, 8, 3));
  const fresh = await grid('alice', ['--json', 'fedavg', file, '--nodes', n.node.url, '--dataset', 'iris', '--rounds', '1', '--output-model-id', 'fed-fresh']);
  assert.equal(fresh.code, 0, fresh.err);
  assert.deepEqual(await canUse(bob, 'fed-fresh'), { download: false, infer: false });
});

test('the notebook\'s grid.train and grid.fedavg results inherit the source\'s flags unless the cell gives them', { timeout: 120_000 }, async () => {
  const alice = await as('alice');
  const bob = await as('bob');
  await alice.hostModel(mlpModel(4, 8, 3), { id: 'nb-src', allowDownload: true });
  // The extension's connection, reduced to what the bridge reads (as in notebook-bridge.test.ts).
  const node: BridgeNode = {
    name: 'test node', url: n.node.url, local: false, state: 'connected', isOpen: true, user: 'alice',
    client: alice, datasets: await alice.listDatasets(), models: await alice.listModels(),
  };
  const bridge = new NotebookGridBridge({ cwd: dir, nodes: { list: () => [node], connect: async () => node, disconnect: () => undefined }, metricsIntervalMs: 0 });
  const context: GridCallContext = { signal: AbortSignal.timeout(110_000), executionCount: 1, output: () => undefined };

  await bridge.call('train', ['nb-src', 'iris', { epochs: 1, outputId: 'nb-trained' }], context);
  assert.deepEqual(await canUse(bob, 'nb-trained'), { download: true, infer: false });
  await bridge.call('train', ['nb-src', 'iris', { epochs: 1, outputId: 'nb-trained-open', allowRemoteInference: true }], context);
  assert.deepEqual(await canUse(bob, 'nb-trained-open'), { download: true, infer: true });

  const fed = await bridge.call('fedavg', ['nb-src', 'iris', { rounds: 1, outputId: 'nb-fed' }], context) as { model: string };
  assert.equal(fed.model, 'nb-fed@1');
  assert.deepEqual(await canUse(bob, 'nb-fed'), { download: true, infer: false }, 'not hard-coded open');
  await bridge.call('fedavg', ['nb-src', 'iris', { rounds: 1, outputId: 'nb-fed-closed', allowDownload: false }], context);
  assert.deepEqual(await canUse(bob, 'nb-fed-closed'), { download: false, infer: false });
  await assert.rejects(bridge.call('train', ['nb-src', 'iris', { allowDownload: 'yes' }], context), (err: GridError) => {
    assert.equal(err.code, ErrorCodes.INVALID_INPUT);
    assert.match(err.message, /grid\.train expects \{ allowDownload \} to be true or false/);
    return true;
  });
});
