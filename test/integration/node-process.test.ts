// The grid-node process: its one stdout line, graceful shutdown, the admin password shown once,
// one node per data dir, and kill -9 in the middle of an upload never leaving a half model visible.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { spawn, type ChildProcessByStdio } from 'node:child_process';
import type { Readable } from 'node:stream';
import { GridClient } from '../../src/core/client';
import { GridSocket } from '../../src/core/socket/grid-socket';
import { bufferSource } from '../../src/core/socket/transfer';
import { HostModel } from '../../src/core/protocol/messages';
import { GridError } from '../../src/core/errors';
import { GridNode } from '../../src/node/server';
import { mlpModel, seededFloats, tempDir, ADMIN_PASSWORD } from '../helpers/node-fixtures';
import { nodeProcessEnv, testDatabase } from '../helpers/postgres';

const MAIN = path.join(__dirname, '../../src/node/main.ts');

interface NodeProcess {
  child: ChildProcessByStdio<null, Readable, Readable>;
  url: string;
  stdout: () => string;
  stderr: () => string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

async function startNodeProcess(dir: string, env: Record<string, string> = { GRID_ADMIN_PASSWORD: ADMIN_PASSWORD }, extra: string[] = []): Promise<NodeProcess> {
  const args = ['--port', '0', '--data-dir', dir, '--log-level', 'warn', ...extra];
  const child = spawn(process.execPath, ['--import', 'tsx', MAIN, ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: await nodeProcessEnv(args, { ...process.env, GRID_ADMIN_PASSWORD: '', ...env }),
  });
  let out = '';
  let err = '';
  child.stderr.on('data', (d: Buffer) => { err += d; });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
  return new Promise((resolve, reject) => {
    child.stdout.on('data', (d: Buffer) => {
      out += d;
      const m = /^listening on (ws:\/\/127\.0\.0\.1:\d+)\n/.exec(out);
      if (m) resolve({ child, url: m[1]!, stdout: () => out, stderr: () => err, exited });
    });
    void exited.then(({ code }) => reject(new Error(`grid-node exited (${code}) before listening: ${err}`)));
  });
}

test('grid-node prints exactly one stdout line, serves, and exits 0 on SIGTERM', async (t) => {
  const dir = tempDir();
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const p = await startNodeProcess(dir, { GRID_ADMIN_PASSWORD: ADMIN_PASSWORD }, ['--demo-datasets', '--log-level', 'info']);
  const c = await GridClient.connect(p.url, { reconnect: { maxAttempts: 0 }, credentials: { username: 'admin', password: ADMIN_PASSWORD } });
  assert.deepEqual((await c.listDatasets()).map((d) => d.id), ['breast_cancer', 'digits', 'iris', 'wine']);
  const health = await fetch(p.url.replace('ws://', 'http://') + '/health').then((r) => r.json()) as { status: string; datasets: number };
  assert.equal(health.status, 'ok');
  assert.equal(health.datasets, 4);
  const metricsText = () => fetch(p.url.replace('ws://', 'http://') + '/metrics').then((r) => r.text());
  assert.match(await metricsText(), /grid_node_requests_total\{type="list-datasets",code="ok"\} 1/);
  // Every request is counted under its type and outcome, and a hosted model's inference runs are timed
  // until the model is deleted.
  await c.listDatasets();
  await assert.rejects(c.modelInfo('no-such-model'), { code: 'GRID_ERR_NOT_FOUND' });
  await c.hostModel(mlpModel(4, 3, 2), { id: 'tiny', allowRemoteInference: true });
  await c.runInference('tiny', { x: { dtype: 'float32', dims: [1, 4], data: seededFloats(4, 5) } });
  let metrics = await metricsText();
  assert.match(metrics, /grid_node_requests_total\{type="list-datasets",code="ok"\} 2/);
  assert.match(metrics, /grid_node_requests_total\{type="model-info",code="GRID_ERR_NOT_FOUND"\} 1/);
  assert.match(metrics, /grid_node_inference_seconds_count\{model_id="tiny"\} 1/);
  await c.deleteModel('tiny');
  metrics = await metricsText();
  assert.doesNotMatch(metrics, /model_id="tiny"/);
  assert.match(metrics, /grid_node_requests_total\{type="delete-model",code="ok"\} 1/);
  c.dispose();
  p.child.kill('SIGTERM');
  const { code } = await p.exited;
  assert.equal(code, 0);
  assert.equal(p.stdout(), `listening on ${p.url}\n`, 'stdout holds only the listening line');
  assert.match(p.stderr(), /"msg":"grid node shutting down"/, 'logs go to stderr as JSON lines');
  assert.ok(!fs.existsSync(path.join(dir, 'node.pid')), 'the data dir is released');
});

test('datasets come from --config (paths relative to it) and --dataset flags, and a bad one stops the start with its code', async (t) => {
  const dir = tempDir();
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  fs.mkdirSync(path.join(dir, 'conf', 'files'), { recursive: true });
  fs.writeFileSync(path.join(dir, 'conf', 'files', 'p.csv'), 'age,income,label\n30,1000,1\n40,2000,0\n');
  fs.writeFileSync(path.join(dir, 'conf', 'node.json'), JSON.stringify({
    name: 'configured', datasets: [{ name: 'people', path: 'files/p.csv', tags: ['census'], description: 'two people' }],
  }));
  const p = await startNodeProcess(path.join(dir, 'data'), { GRID_ADMIN_PASSWORD: ADMIN_PASSWORD },
    ['--config', path.join(dir, 'conf', 'node.json'), '--dataset', `more=${path.join(dir, 'conf', 'files', 'p.csv')}:label=age:tags=x,y`]);
  const c = await GridClient.connect(p.url, { reconnect: { maxAttempts: 0 } });
  assert.equal((await c.getId()).name, 'configured');
  const ds = await c.listDatasets();
  assert.deepEqual(ds.map((d) => [d.id, d.tags, d.schema.label, d.schema.rows]), [['more', ['x', 'y'], 'age', 2], ['people', ['census'], 'label', 2]]);
  assert.deepEqual((await c.searchDatasets(['census'])).map((d) => d.id), ['people']);
  c.dispose();
  p.child.kill('SIGTERM');
  await p.exited;

  const badArgs = ['--port', '0', '--data-dir', path.join(dir, 'data'), '--dataset', `oops=${path.join(dir, 'nope.csv')}`];
  const bad = spawn(process.execPath, ['--import', 'tsx', MAIN, ...badArgs], { stdio: ['ignore', 'pipe', 'pipe'], env: await nodeProcessEnv(badArgs) });
  let err = '';
  bad.stderr.on('data', (d: Buffer) => { err += d; });
  assert.equal(await new Promise<number | null>((resolve) => bad.once('exit', resolve)), 1);
  assert.match(err, /grid-node: GRID_ERR_INVALID_DATASET: dataset oops: no file at /);
});

test('without GRID_ADMIN_PASSWORD the admin password is generated, shown once on stderr, and works', async (t) => {
  const dir = tempDir();
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const p = await startNodeProcess(dir, {});
  const m = /password: (\S+)/.exec(p.stderr()) ?? await new Promise<RegExpExecArray>((resolve) => {
    p.child.stderr.on('data', () => { const r = /password: (\S+)/.exec(p.stderr()); if (r) resolve(r); });
  });
  const password = m[1]!;
  const c = await GridClient.connect(p.url, { reconnect: { maxAttempts: 0 }, credentials: { username: 'admin', password } });
  assert.equal((await c.getId()).user, 'admin');
  c.dispose();
  p.child.kill('SIGINT');
  assert.equal((await p.exited).code, 0);
  const again = await startNodeProcess(dir, {});
  assert.doesNotMatch(again.stderr(), /password:/);
  again.child.kill('SIGTERM');
  await again.exited;
  assert.doesNotMatch(again.stderr(), /password:/, 'shown only on the first run');
});

test('a second node on the same data dir is refused with DATA_DIR_IN_USE', async (t) => {
  const dir = tempDir();
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const p = await startNodeProcess(dir);
  t.after(async () => { p.child.kill('SIGTERM'); await p.exited; });
  await assert.rejects(GridNode.start({ port: 0, dataDir: dir, adminPassword: ADMIN_PASSWORD, ...await testDatabase(dir) }), (e: GridError) =>
    e.code === 'GRID_ERR_DATA_DIR_IN_USE' && e.message.includes(String(p.child.pid)));
  const secondArgs = ['--port', '0', '--data-dir', dir];
  const second = spawn(process.execPath, ['--import', 'tsx', MAIN, ...secondArgs], { stdio: ['ignore', 'pipe', 'pipe'], env: await nodeProcessEnv(secondArgs) });
  let err = '';
  second.stderr.on('data', (d: Buffer) => { err += d; });
  const code = await new Promise<number | null>((resolve) => second.once('exit', resolve));
  assert.equal(code, 1);
  assert.match(err, /grid-node: GRID_ERR_DATA_DIR_IN_USE: /);
});

test('a port already in use is PORT_IN_USE, and the data dir is released for the next try', async (t) => {
  const dirA = tempDir();
  const dirB = tempDir();
  t.after(() => { fs.rmSync(dirA, { recursive: true, force: true }); fs.rmSync(dirB, { recursive: true, force: true }); });
  const a = await GridNode.start({ port: 0, dataDir: dirA, adminPassword: ADMIN_PASSWORD, processMetrics: false, ...await testDatabase(dirA) });
  t.after(() => a.close());
  await assert.rejects(GridNode.start({ port: a.port, dataDir: dirB, adminPassword: ADMIN_PASSWORD, processMetrics: false, ...await testDatabase(dirB) }), (e: GridError) =>
    e.code === 'GRID_ERR_PORT_IN_USE' && e.message.includes(String(a.port)) && /--port 0/.test(e.message));
  const b = await GridNode.start({ port: 0, dataDir: dirB, adminPassword: ADMIN_PASSWORD, processMetrics: false, ...await testDatabase(dirB) });
  await b.close();
});

test('kill -9 mid-upload and mid-hosting, then restart: no half model is ever visible and the dir is clean', async (t) => {
  const dir = tempDir();
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const big = mlpModel(784, 4096, 10, 5); // ~13 MB: many chunks
  const creds = { username: 'admin', password: ADMIN_PASSWORD };

  // 1. Killed while the bytes are still arriving.
  let p = await startNodeProcess(dir);
  const c = await GridClient.connect(p.url, { reconnect: { maxAttempts: 0 }, credentials: creds });
  let killed = false;
  const upload = c.hostModel(big, { id: 'big', allowRemoteInference: true, onProgress: (done) => {
    if (!killed && done > 0 && done < big.length) { killed = true; p.child.kill('SIGKILL'); }
  } });
  await assert.rejects(upload, (e: GridError) => e instanceof GridError);
  assert.ok(killed, 'the node was killed during the transfer');
  await p.exited;
  c.dispose();

  // 2. Killed right after the host-model request went out (validating / moving / recording the model).
  p = await startNodeProcess(dir);
  const s = new GridSocket();
  await s.connect(p.url, {}, { maxAttempts: 0 });
  await s.authenticate(creds);
  const up = await s.upload(bufferSource(big));
  const hosting = s.request(HostModel, { model_id: 'big', transfer_id: up.transfer_id, allow_remote_inference: true }).catch((e: unknown) => e);
  p.child.kill('SIGKILL');
  await p.exited;
  await hosting;
  s.dispose();

  // 3. Restart: the model is either fully there and runnable, or absent; nothing half-written lingers.
  p = await startNodeProcess(dir);
  t.after(async () => { p.child.kill('SIGTERM'); await p.exited; });
  const c2 = await GridClient.connect(p.url, { reconnect: { maxAttempts: 0 }, credentials: creds });
  t.after(() => c2.dispose());
  const models = await c2.listModels();
  const blobFiles = () => fs.readdirSync(path.join(dir, 'blobs'), { recursive: true }).map(String).filter((f) => /[0-9a-f]{64}$/.test(f));
  if (models.length === 1) {
    const y = await c2.runInference('big', { x: { dtype: 'float32', dims: [1, 784], data: seededFloats(784, 2) } });
    assert.deepEqual(y.y!.dims, [1, 10]);
    assert.equal(blobFiles().length, 1);
  } else {
    assert.deepEqual(models, []);
    assert.deepEqual(blobFiles(), [], 'no orphan blob');
    await c2.hostModel(big, { id: 'big', allowRemoteInference: true });
  }
  assert.deepEqual(fs.readdirSync(path.join(dir, 'uploads')), []);
  assert.deepEqual(fs.readdirSync(path.join(dir, 'tmp')), []);
  assert.equal((await c2.modelInfo('big')).size, big.length);
});
