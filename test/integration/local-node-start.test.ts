// Starting this user's local node or joining the one that runs (src/core/local-node-start.ts), the way
// the extension's Start Local Node does, against real `grid-node --local` processes: two starts at
// once end on one node; a record left by a crashed node whose pid now names a live process is not
// trusted (neither by a start nor by `grid-node --local`); a node that never listens is given up on.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import * as fs from 'node:fs';
import { createServer, type AddressInfo } from 'node:net';
import * as path from 'node:path';
import { WebSocketServer } from 'ws';
import { GridClient } from '../../src/core/client';
import type { GridError } from '../../src/core/errors';
import { findLocalNode, localNodeFile, writeLocalNodeRecord } from '../../src/core/local-node';
import { confirmedLocalNode, spawnLocalNode, startOrJoinLocalNode, waitForLocalNode, type LocalNodeStart } from '../../src/core/local-node-start';
import { StandaloneGridBridge } from '../../src/kernel/jupyter/grid-bridge';
import { mlpModel, tempDir } from '../helpers/node-fixtures';
import { startNodeScript } from '../helpers/processes';

const nodeScript = path.resolve(__dirname, '../../dist/grid-node.js');
const gridScript = path.resolve(__dirname, '../../dist/grid.js');

function localEnv(dir: string): NodeJS.ProcessEnv {
  return { ...process.env, GRID_RUNTIME_DIR: path.join(dir, 'runtime'), GRID_DATA_DIR: path.join(dir, 'data'), GRID_DATABASE: '' };
}

async function kill(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = once(child, 'exit');
  child.kill('SIGKILL');
  await exited;
}

/** A loopback port that nothing listens on (a port-0 server's, closed again). */
async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

async function nodeIdAt(url: string): Promise<string> {
  const c = await GridClient.connect(url, { reconnect: { enabled: false } });
  try {
    return (await c.getId()).id;
  } finally {
    c.dispose();
  }
}

test('two starts at once on the same directories end on one node: the second joins the first', async (t) => {
  const dir = tempDir('grid-local-race-');
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const env = localEnv(dir);
  const file = localNodeFile(env);
  const started: LocalNodeStart[] = [];
  t.after(async () => { for (const s of started) if (!s.joined) await kill(s.child); });
  const both = await Promise.allSettled([0, 1].map(() => startOrJoinLocalNode(file, { script: nodeScript, port: 0, env })));
  for (const r of both) if (r.status === 'fulfilled') started.push(r.value);
  for (const r of both) assert.equal(r.status, 'fulfilled', r.status === 'rejected' ? `a start failed: ${String((r.reason as Error).message)}` : '');
  const [a, b] = started as [LocalNodeStart, LocalNodeStart];
  assert.equal(a.url, b.url, 'both starts use one node');
  assert.deepEqual([a.joined, b.joined].sort(), [false, true], 'one started it, the other joined it');
  const owner = a.joined ? b : a;
  const record = findLocalNode(file);
  assert.equal(record?.url, owner.url);
  assert.equal(record?.pid, (owner as { child: ChildProcess }).child.pid);
  assert.equal(await nodeIdAt(a.url), record?.node_id);
});

test('a start that finds the data dir held by a start not yet listening waits for that node\'s record and joins it', async (t) => {
  const dir = tempDir('grid-local-held-');
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const env = localEnv(dir);
  const file = localNodeFile(env);
  // The first start holds the data dir (its lock names a live pid: this test's) and has no record yet.
  fs.mkdirSync(path.join(dir, 'data'), { recursive: true });
  fs.writeFileSync(path.join(dir, 'data', 'node.pid'), String(process.pid));
  let refused!: () => void;
  const wasRefused = new Promise<void>((resolve) => { refused = resolve; });
  const second = startOrJoinLocalNode(file, {
    script: nodeScript, port: 0, env,
    onStderrLine: (l) => { if (l.startsWith('grid-node: GRID_ERR_DATA_DIR_IN_USE')) refused(); },
  });
  t.after(async () => { const s = await second.catch(() => undefined); if (s && !s.joined) await kill(s.child); });
  await wasRefused;
  // The first start's node comes up now (the lock handed over to it) and writes its record.
  fs.rmSync(path.join(dir, 'data', 'node.pid'));
  const first = await startNodeScript(nodeScript, ['--local', '--log-level', 'warn'], { ...env, GRID_ADMIN_PASSWORD: '' });
  t.after(() => first.kill());
  const joined = await second;
  assert.equal(joined.joined, true, 'the second start joined instead of failing or starting another node');
  assert.equal(joined.url, first.url);
});

test('a record left by a crashed node, whose pid is now another live process, is replaced by a fresh node', async (t) => {
  const dir = tempDir('grid-local-stale-');
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const env = localEnv(dir);
  const file = localNodeFile(env);
  const dead = `ws://127.0.0.1:${await closedPort()}`;
  // This test's own pid stands in for a reused one: alive, but no node, and nothing at the URL.
  const stale = { url: dead, pid: process.pid, node_id: 'node-that-crashed', name: 'local', data_dir: path.join(dir, 'data'), token: 'stale-token', user: 'admin', started: new Date().toISOString() };
  writeLocalNodeRecord(file, stale);
  assert.equal(findLocalNode(file)?.url, dead, 'the record looks alive by its pid alone');

  const s = await startOrJoinLocalNode(file, { script: nodeScript, port: 0, env });
  t.after(async () => { if (!s.joined) await kill(s.child); });
  assert.equal(s.joined, false, 'a start must not join a URL where nothing listens');
  assert.notEqual(s.url, dead);
  const record = findLocalNode(file);
  assert.equal(record?.url, s.url, 'the fresh node replaced the record');
  assert.equal(await nodeIdAt(s.url), record?.node_id);
});

test('grid-node --local starts over a stale record instead of refusing as if a local node ran', async (t) => {
  const dir = tempDir('grid-local-stale-cli-');
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const env = localEnv(dir);
  const file = localNodeFile(env);
  writeLocalNodeRecord(file, { url: `ws://127.0.0.1:${await closedPort()}`, pid: process.pid, node_id: 'node-that-crashed', name: 'local', data_dir: path.join(dir, 'data'), token: 'stale-token', user: 'admin', started: new Date().toISOString() });
  const node = await startNodeScript(nodeScript, ['--local', '--log-level', 'warn'], { ...env, GRID_ADMIN_PASSWORD: '' });
  t.after(() => node.kill());
  assert.equal(findLocalNode(file)?.pid, node.child.pid);
  assert.equal(findLocalNode(file)?.url, node.url);
});

test('a local node that never prints its listening line is given up on with GRID_ERR_TIMEOUT, and killed', async (t) => {
  const dir = tempDir('grid-local-hang-');
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  // A program that runs and never listens (a node stuck opening its store, say).
  const hung = path.join(dir, 'hung.js');
  fs.writeFileSync(hung, 'process.stdout.write("starting\\n"); setInterval(() => {}, 1000);\n');
  const err = await spawnLocalNode({ script: hung, port: 0, env: localEnv(dir), startTimeoutMs: 1_500 }).then(
    () => assert.fail('a program that never listens was taken for a node'),
    (e: unknown) => e as { code?: string; message: string },
  );
  assert.equal(err.code, 'GRID_ERR_TIMEOUT');
  const m = /did not start listening within 2 s \(pid (\d+), killed\)/.exec(err.message);
  assert.ok(m, err.message);
  // Rejected only once the child exited: nothing is left running.
  assert.throws(() => process.kill(Number(m[1]), 0), { code: 'ESRCH' });
});

test('a record naming a live pid and another node\'s URL: the grid CLI does not hand that node the record\'s token', async (t) => {
  const dir = tempDir('grid-local-leak-');
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const env = localEnv(dir);
  const file = localNodeFile(env);
  // Another grid node (not the local one) now listens where the crashed local node did.
  const other = await startNodeScript(nodeScript, ['--port', '0', '--data-dir', path.join(dir, 'other'), '--log-level', 'warn'], { ...env, GRID_ADMIN_PASSWORD: 'other-admin-pw' });
  t.after(() => other.kill());
  // The token in the record is one the other node accepts: had the CLI sent it, that node would see an admin.
  const admin = await GridClient.connect(other.url, { credentials: { username: 'admin', password: 'other-admin-pw' }, reconnect: { enabled: false } });
  t.after(() => admin.dispose());
  const { token } = await admin.authenticate({ username: 'admin', password: 'other-admin-pw' });
  writeLocalNodeRecord(file, { url: other.url, pid: process.pid, node_id: 'node-that-crashed', name: 'local', data_dir: path.join(dir, 'data'), token, user: 'admin', started: new Date().toISOString() });
  assert.equal(findLocalNode(file)?.url, other.url, 'the record looks alive by its pid alone');

  const cliEnv = { ...env };
  for (const k of ['GRID_NODE', 'GRID_USER', 'GRID_PASSWORD']) delete cliEnv[k];
  const cli = (args: string[]) => spawnSync(process.execPath, [gridScript, '--node', other.url, '--timeout', '5000', ...args], { env: cliEnv, encoding: 'utf8' });
  const id = cli(['--json', 'id']);
  assert.equal(id.status, 0, id.stderr);
  assert.equal(JSON.parse(id.stdout).user, null, 'the other node saw the CLI signed in with the local record\'s token');
  fs.writeFileSync(path.join(dir, 'm.onnx'), mlpModel(4, 4, 2));
  const serve = cli(['serve', path.join(dir, 'm.onnx')]);
  assert.equal(serve.status, 1);
  assert.match(serve.stderr, /GRID_ERR_UNAUTHENTICATED: .*is not this user's local node/);

  // The Jupyter kernel's grid.connect(): no local node, and that URL as any other node (no token).
  const bridge = new StandaloneGridBridge({ cwd: dir, env: cliEnv });
  t.after(() => bridge.dispose());
  const cell = { signal: new AbortController().signal, executionCount: 1, output: () => undefined };
  await assert.rejects(bridge.call('connect', [], cell), (e: GridError) => e.code === 'GRID_ERR_NOT_CONNECTED');
  assert.deepEqual(await bridge.call('connect', [other.url], cell), { name: other.url, url: other.url, state: 'connected', local: false });
});

test('a record whose URL accepts connections but never answers get-id is given up on within the probe\'s 3 s, not the socket\'s 20 s', async (t) => {
  const dir = tempDir('grid-local-silent-');
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const file = localNodeFile(localEnv(dir));
  const silent = new WebSocketServer({ port: 0, host: '127.0.0.1' });
  await once(silent, 'listening');
  t.after(() => { for (const c of silent.clients) c.terminate(); silent.close(); });
  let asked = 0;
  silent.on('connection', (ws) => ws.on('message', () => { asked++; }));
  const url = `ws://127.0.0.1:${(silent.address() as AddressInfo).port}`;
  writeLocalNodeRecord(file, { url, pid: process.pid, node_id: 'silent-node', name: 'local', data_dir: path.join(dir, 'data'), token: 'silent-token', user: 'admin', started: new Date().toISOString() });

  let since = Date.now();
  assert.equal(await confirmedLocalNode(file), undefined);
  const probe = Date.now() - since;
  assert.ok(asked >= 1, 'the probe reached the server and asked get-id');
  assert.ok(probe < 10_000, `the probe took ${probe} ms`);
  // A wait of 1 s is not stretched by its probe either.
  since = Date.now();
  assert.equal(await waitForLocalNode(file, 1_000), undefined);
  const wait = Date.now() - since;
  assert.ok(wait < 8_000, `a 1 s wait took ${wait} ms`);
});

test('a start that finds the data dir held by a grid-node without --local fails within ~10 s, naming that process', async (t) => {
  const dir = tempDir('grid-local-plain-');
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const env = localEnv(dir);
  // `grid-node` with no flags on the per-user data dir: it holds the dir and never writes a local-node record.
  const plain = await startNodeScript(nodeScript, ['--port', '0', '--log-level', 'warn'], { ...env, GRID_ADMIN_PASSWORD: 'a-long-password-123' });
  t.after(() => plain.kill());
  const since = Date.now();
  const err = await startOrJoinLocalNode(localNodeFile(env), { script: nodeScript, port: 0, env }).then(
    (s) => { if (!s.joined) void kill(s.child); assert.fail(`started or joined ${s.url}`); },
    (e: unknown) => e as GridError,
  );
  const took = Date.now() - since;
  assert.equal(err.code, 'GRID_ERR_DATA_DIR_IN_USE');
  assert.match(err.message, new RegExp(`held by process ${plain.child.pid}, which is not a local node starting up`));
  assert.ok(took < 30_000, `the start gave up after ${took} ms (the holder wrote no record: ~10 s is enough)`);
});

test('a start that finds the data dir held by a start that then fails starts once more, and runs', async (t) => {
  const dir = tempDir('grid-local-failed-');
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const env = localEnv(dir);
  // The other start: a live process that holds the data dir's lock, then exits without a record.
  const holder = spawn(process.execPath, ['-e', 'setInterval(() => {}, 1000)'], { stdio: 'ignore' });
  t.after(() => kill(holder));
  fs.mkdirSync(path.join(dir, 'data'), { recursive: true });
  fs.writeFileSync(path.join(dir, 'data', 'node.pid'), String(holder.pid));
  const s = await startOrJoinLocalNode(localNodeFile(env), {
    script: nodeScript, port: 0, env,
    onStderrLine: (l) => { if (l.startsWith('grid-node: GRID_ERR_DATA_DIR_IN_USE')) void kill(holder); },
  });
  t.after(async () => { if (!s.joined) await kill(s.child); });
  assert.equal(s.joined, false, 'the second attempt started the node');
  assert.equal(await nodeIdAt(s.url), findLocalNode(localNodeFile(env))?.node_id);
});

test('a start waiting for another start\'s node gives up with GRID_ERR_ABORTED when cancelled (Stop Local Node, a closed window)', async (t) => {
  const dir = tempDir('grid-local-abort-');
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const env = localEnv(dir);
  // Another start holds the data dir (this test's live pid) and has not written its record.
  fs.mkdirSync(path.join(dir, 'data'), { recursive: true });
  fs.writeFileSync(path.join(dir, 'data', 'node.pid'), String(process.pid));
  const abort = new AbortController();
  let abortedAt = 0;
  const since = Date.now();
  const err = await startOrJoinLocalNode(localNodeFile(env), {
    script: nodeScript, port: 0, env, signal: abort.signal,
    onStderrLine: (l) => { if (l.startsWith('grid-node: GRID_ERR_DATA_DIR_IN_USE')) { abortedAt = Date.now(); abort.abort(); } },
  }).then(
    (s) => { if (!s.joined) void kill(s.child); assert.fail(`started or joined ${s.url}`); },
    (e: unknown) => e as GridError,
  );
  assert.equal(err.code, 'GRID_ERR_ABORTED');
  assert.ok(abortedAt > 0, 'the start was refused the data dir and waited');
  const after = Date.now() - abortedAt;
  assert.ok(after < 5_000, `the wait went on ${after} ms after the cancel (the holder wait is 10 s; started ${Date.now() - since} ms ago)`);
});

test('the grid CLI probes the local node only when it would use the record: --node elsewhere goes straight there; a live record that does not answer as itself is an error, not a fallback', async (t) => {
  const dir = tempDir('grid-local-cli-probe-');
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const env = localEnv(dir);
  const file = localNodeFile(env);
  // The record's URL: a server that accepts and never answers (a busy or stuck local node), counting connections.
  const silent = new WebSocketServer({ port: 0, host: '127.0.0.1' });
  await once(silent, 'listening');
  t.after(() => { for (const c of silent.clients) c.terminate(); silent.close(); });
  let connections = 0;
  silent.on('connection', () => { connections++; });
  const silentUrl = `ws://127.0.0.1:${(silent.address() as AddressInfo).port}`;
  writeLocalNodeRecord(file, { url: silentUrl, pid: process.pid, node_id: 'busy-node', name: 'local', data_dir: path.join(dir, 'data'), token: 'busy-token', user: 'admin', started: new Date().toISOString() });
  const other = await startNodeScript(nodeScript, ['--port', '0', '--data-dir', path.join(dir, 'other'), '--log-level', 'warn'], env);
  t.after(() => other.kill());

  const cliEnv = { ...env };
  for (const k of ['GRID_NODE', 'GRID_USER', 'GRID_PASSWORD']) delete cliEnv[k];
  // Run without blocking this process: the silent server lives in it and must accept while the CLI runs.
  const cli = async (args: string[]) => {
    const child = spawn(process.execPath, [gridScript, '--timeout', '5000', ...args], { env: cliEnv });
    let stderr = '';
    child.stderr.setEncoding('utf8').on('data', (d: string) => { stderr += d; });
    child.stdout.resume();
    const [status] = await once(child, 'close') as [number | null];
    return { status, stderr };
  };
  const id = await cli(['--node', other.url, '--json', 'id']);
  assert.equal(id.status, 0, id.stderr);
  assert.equal(connections, 0, 'the CLI probed the local node although --node named another');

  const local = await cli(['--json', 'id']);
  assert.equal(local.status, 1);
  assert.match(local.stderr, /GRID_ERR_NOT_CONNECTED: this user's local node \(pid \d+, ws:\/\/127\.0\.0\.1:\d+, record .*\) did not answer as itself/);
  assert.ok(connections >= 1, 'the record\'s node was probed when it would pick the node');
});
