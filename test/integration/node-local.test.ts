// This user's local node: `grid-node --local` records itself (URL, pid, an admin token) in a 0600 file in a
// 0700 folder; the CLI with no --node finds it and is signed in by it; a second --local is refused; the
// record goes (and its token stops working) when the node stops; records others could read are ignored.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { PassThrough } from 'node:stream';
import { GridClient } from '../../src/core/client';
import { findLocalNode, localNodeFile } from '../../src/core/local-node';
import { runGrid } from '../../src/cli/grid';
import { GridNode } from '../../src/node/server';
import { mlpModel, tempDir } from '../helpers/node-fixtures';
import { startNodeScript } from '../helpers/processes';
import { testDatabase } from '../helpers/postgres';

const nodeScript = path.resolve(__dirname, '../../dist/grid-node.js');

async function grid(args: string[], env: NodeJS.ProcessEnv): Promise<{ code: number; out: string; err: string }> {
  const saved = { ...process.env };
  Object.assign(process.env, env);
  for (const k of ['GRID_NODE', 'GRID_USER', 'GRID_PASSWORD']) delete process.env[k];
  const out = new PassThrough(), err = new PassThrough();
  let o = '', e = '';
  out.on('data', (d: Buffer) => { o += d; });
  err.on('data', (d: Buffer) => { e += d; });
  try {
    const code = await runGrid(['node', 'grid', ...args], out, err);
    return { code, out: o, err: e };
  } finally {
    for (const k of Object.keys(process.env)) if (!(k in saved)) delete process.env[k];
    Object.assign(process.env, saved);
  }
}

test('grid-node --local records itself for this user only; the CLI finds it and is signed in as admin; a second --local is refused', async (t) => {
  const dir = tempDir('grid-local-');
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const env = { ...process.env, GRID_RUNTIME_DIR: path.join(dir, 'runtime'), GRID_DATA_DIR: path.join(dir, 'data'), GRID_ADMIN_PASSWORD: '' };
  const node = await startNodeScript(nodeScript, ['--local', '--log-level', 'warn'], env);
  t.after(() => node.kill());
  const file = localNodeFile(env);
  assert.equal(file, path.join(dir, 'runtime', 'local-node.json'));
  assert.equal(fs.statSync(file).mode & 0o777, 0o600, 'the record is readable by this user only');
  assert.equal(fs.statSync(path.dirname(file)).mode & 0o777, 0o700);
  const record = findLocalNode(file)!;
  assert.equal(record.url, node.url);
  assert.equal(record.pid, node.child.pid);
  assert.equal(record.data_dir, path.join(dir, 'data'));
  assert.match(node.url, /^ws:\/\/127\.0\.0\.1:\d+$/);

  // No --node, no user or password: the local node, signed in (serving needs a session).
  const model = path.join(dir, 'm.onnx');
  fs.writeFileSync(model, mlpModel(4, 4, 2));
  const served = await grid(['serve', model, '--id', 'by-record'], env);
  assert.equal(served.code, 0, served.err);
  const info = await grid(['--json', 'info', 'by-record'], env);
  assert.equal(JSON.parse(info.out).model.owner, 'admin');
  const local = await grid(['--json', 'local'], env);
  assert.equal(JSON.parse(local.out).url, node.url);
  assert.equal(JSON.parse(local.out).token, undefined, 'grid local never prints the token');

  // One local node per user: a second is refused, naming the first.
  const second = spawnSync(process.execPath, [nodeScript, '--local', '--data-dir', path.join(dir, 'other-data')], { env, encoding: 'utf8' });
  assert.equal(second.status, 1);
  assert.match(second.stderr, new RegExp(`GRID_ERR_ALREADY_EXISTS: a local node already runs at ${node.url.replace(/[.]/g, '\\.')} \\(pid ${node.child.pid}`));
  assert.equal(findLocalNode(file)?.pid, node.child.pid, 'the refused node did not touch the record');
  // --local is loopback only.
  const exposed = spawnSync(process.execPath, [nodeScript, '--local', '--host', '0.0.0.0'], { env, encoding: 'utf8' });
  assert.equal(exposed.status, 1);
  assert.match(exposed.stderr, /--local listens on 127\.0\.0\.1 only/);

  // Stopped, the record is gone and its token no longer signs anyone in.
  await node.kill('SIGTERM');
  assert.equal(fs.existsSync(file), false, 'the record outlived its node');
  const restarted = await GridNode.start({ port: 0, dataDir: path.join(dir, 'data'), ...await testDatabase(path.join(dir, 'data')) });
  t.after(() => restarted.close());
  const c = await GridClient.connect(restarted.url);
  t.after(() => c.dispose());
  await assert.rejects(c.authenticate({ token: record.token }), { code: 'GRID_ERR_BAD_CREDENTIALS' });
});

test('a record others could read, of a process that is gone, or damaged is not trusted', async (t) => {
  const dir = tempDir('grid-local-trust-');
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const node = await GridNode.start({ port: 0, dataDir: path.join(dir, 'data'), ...await testDatabase(path.join(dir, 'data')), localRecordFile: path.join(dir, 'rt', 'local-node.json') });
  t.after(() => node.close());
  const file = path.join(dir, 'rt', 'local-node.json');
  assert.equal(findLocalNode(file)?.url, node.url);
  fs.chmodSync(file, 0o644);
  assert.equal(findLocalNode(file), undefined, 'a world-readable record would hand out the admin token');
  fs.chmodSync(file, 0o600);
  const rec = JSON.parse(fs.readFileSync(file, 'utf8')) as Record<string, unknown>;
  const dead = spawnSync(process.execPath, ['-e', 'process.exit(0)']).pid;
  fs.writeFileSync(file, JSON.stringify({ ...rec, pid: dead }), { mode: 0o600 });
  assert.equal(findLocalNode(file), undefined, 'a record of an exited process');
  fs.writeFileSync(file, '{"url": "ws://127.0.0.1:1", "pi', { mode: 0o600 });
  assert.equal(findLocalNode(file), undefined, 'a damaged record');
  // The token signs in as admin while the node runs.
  const c = await GridClient.connect(node.url);
  t.after(() => c.dispose());
  const s = await c.authenticate({ token: String(rec.token) });
  assert.equal(s.user, 'admin');
});
