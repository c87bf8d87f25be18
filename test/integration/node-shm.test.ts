// Shared memory for local clients (issue 18): big tensors between a client and a node on one machine go
// through a region file registered per connection; only the envelope crosses the socket. The real node on
// 127.0.0.1:0, the real GridClient, real onnxruntime, region files in a private temp folder on tmpfs.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { GridClient } from '../../src/core/client';
import { ErrorCodes, GridError } from '../../src/core/errors';
import { RunInferenceShm, ShmRegister, ShmUnregister } from '../../src/core/protocol/shm-messages';
import type { NamedTensors } from '../../src/core/protocol/tensor';
import { RegionFile } from '../../src/core/shm-client';
import { GridSocket } from '../../src/core/socket/grid-socket';
import type { GridNode, GridNodeOptions } from '../../src/node/server';
import { ADMIN_PASSWORD, mlpModel, seededFloats, startTestNode } from '../helpers/node-fixtures';

/** A private (0700) folder for region files, on tmpfs where there is one. */
function shmDir(t: { after(fn: () => void): void }): string {
  const base = fs.existsSync('/dev/shm') ? '/dev/shm' : os.tmpdir();
  const dir = fs.mkdtempSync(path.join(base, 'grid-shm-test-'));
  fs.chmodSync(dir, 0o700);
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

async function startShmNode(t: { after(fn: () => Promise<void> | void): void }, dir: string, opts: GridNodeOptions = {}) {
  const n = await startTestNode({ ...opts, sharedMemory: { dir, ...opts.sharedMemory } });
  t.after(() => n.close());
  const clients: GridClient[] = [];
  t.after(() => { for (const c of clients) c.dispose(); });
  const connect = async (sharedMemory: boolean) => {
    const c = await GridClient.connect(n.node.url, {
      reconnect: { maxAttempts: 0 }, credentials: { username: 'admin', password: ADMIN_PASSWORD }, sharedMemory: { dir, enabled: sharedMemory },
    });
    clients.push(c);
    return c;
  };
  return { ...n, connect };
}

/** Requests of `type` the node answered, by outcome code ("ok" on success), from its own metrics. */
async function requestsOf(node: GridNode, type: string): Promise<Record<string, number>> {
  const { values } = await node.metrics.requests.get();
  const out: Record<string, number> = {};
  for (const v of values) if (v.labels.type === type) out[String(v.labels.code)] = (out[String(v.labels.code)] ?? 0) + v.value;
  return out;
}

async function rejectsWith(p: Promise<unknown>, code: string): Promise<GridError> {
  try {
    await p;
  } catch (err) {
    assert.ok(err instanceof GridError, `expected a GridError, got ${String(err)}`);
    assert.equal(err.code, code, err.message);
    return err;
  }
  assert.fail(`expected ${code}, but the request succeeded`);
}

const batch = (rows: number, seed: number): NamedTensors => ({ x: { dtype: 'float32', dims: [rows, 784], data: seededFloats(rows * 784, seed) } });
const regionFiles = (dir: string) => fs.readdirSync(dir).filter((f) => f.startsWith('region-'));

/** A signed-in GridSocket without GridClient's shared-memory logic: the protocol as a client sends it. */
async function rawSocket(t: { after(fn: () => void): void }, url: string): Promise<GridSocket> {
  const s = new GridSocket();
  t.after(() => s.dispose());
  await s.connect(url, {}, { maxAttempts: 0 });
  await s.authenticate({ username: 'admin', password: ADMIN_PASSWORD });
  return s;
}

test('batch-256 inference through shared memory returns the outputs the socket does, and only the envelope crosses the socket', async (t) => {
  const dir = shmDir(t);
  const n = await startShmNode(t, dir);
  const viaShm = await n.connect(true);
  const viaSocket = await n.connect(false);
  await viaShm.hostModel(mlpModel(), { id: 'mlp', allowRemoteInference: true });
  for (const seed of [1, 2, 3]) {
    const input = batch(256, seed);
    const [a, b] = await Promise.all([viaShm.runInference('mlp', input), viaSocket.runInference('mlp', input)]);
    assert.deepEqual(a.y!.dims, [256, 10]);
    assert.deepEqual(a.y!.dims, b.y!.dims);
    assert.deepEqual([...(a.y!.data as Float32Array)], [...(b.y!.data as Float32Array)]);
  }
  // Pipelined requests share the region without stepping on each other's spans.
  const inputs = [4, 5, 6, 7].map((s) => batch(256, s));
  const piped = await Promise.all(inputs.map((x) => viaShm.runInference('mlp', x)));
  for (const [i, x] of inputs.entries()) {
    const expected = await viaSocket.runInference('mlp', x);
    assert.deepEqual([...(piped[i]!.y!.data as Float32Array)], [...(expected.y!.data as Float32Array)], `pipelined request ${i}`);
  }
  assert.deepEqual(await requestsOf(n.node, 'run-inference-shm'), { ok: 7 }, 'the shared-memory client used run-inference-shm every time');
  assert.deepEqual(await requestsOf(n.node, 'run-inference'), { ok: 7 }, 'the socket client never did');
  assert.equal(regionFiles(dir).length, 1, 'one region, registered once for the connection');
  const region = viaShm.shm.currentRegion!;
  assert.equal(fs.statSync(region.path).mode & 0o777, 0o600);
  // Batch 1 stays on the socket: below the threshold, shared memory does not pay.
  await viaShm.runInference('mlp', batch(1, 9));
  assert.deepEqual(await requestsOf(n.node, 'run-inference'), { ok: 8 });
});

test('outputs that do not fit the span given for them come over the socket, and the next request makes room', async (t) => {
  const dir = shmDir(t);
  const n = await startShmNode(t, dir);
  const c = await n.connect(true);
  const plain = await n.connect(false);
  // Outputs twice the size of the inputs: the first request gives them room the size of its inputs (3 MiB
  // for 1024 rows), and they take 6 MiB.
  await c.hostModel(mlpModel(784, 16, 1568), { id: 'wide', allowRemoteInference: true });
  const x = batch(1024, 11);
  const first = await c.runInference('wide', x);
  const second = await c.runInference('wide', x);
  const expected = await plain.runInference('wide', x);
  assert.deepEqual([...(first.y!.data as Float32Array)], [...(expected.y!.data as Float32Array)]);
  assert.deepEqual([...(second.y!.data as Float32Array)], [...(expected.y!.data as Float32Array)]);
  assert.deepEqual(await requestsOf(n.node, 'run-inference-shm'), { ok: 2 });
});

test('a region reference out of bounds, unregistered or never registered is refused with a coded error', async (t) => {
  const dir = shmDir(t);
  const n = await startShmNode(t, dir);
  const owner = await n.connect(false);
  await owner.hostModel(mlpModel(), { id: 'mlp', allowRemoteInference: true });
  const s = await rawSocket(t, n.node.url);
  const region = RegionFile.create(dir, 64 * 1024);
  t.after(() => region.retire());
  await s.request(ShmRegister, { region: region.name, size: region.size, nonce: region.nonce });
  const run = (input: { offset: number; length: number }, output?: { offset: number; length: number }, name = region.name) =>
    s.request(RunInferenceShm, { model_id: 'mlp', region: name, input, ...(output && { output }) });
  const past = await rejectsWith(run({ offset: 64 * 1024 - 100, length: 200 }), ErrorCodes.SHM_OUT_OF_BOUNDS);
  assert.match(past.message, /input span \[65436, 65636\) reaches past the end of region/);
  await rejectsWith(run({ offset: 64, length: 64 }, { offset: 64 * 1024, length: 1 }), ErrorCodes.SHM_OUT_OF_BOUNDS);
  // In bounds but not tensors: a coded error, not a crash.
  await rejectsWith(run({ offset: 64, length: 64 }), ErrorCodes.INVALID_INPUT);
  region.write([Buffer.alloc(64, 0xff)], 64);
  await rejectsWith(run({ offset: 64, length: 64 }), ErrorCodes.INVALID_TENSOR);
  await rejectsWith(run({ offset: 64, length: 64 }, undefined, 'region-neverregisteredxyz'), ErrorCodes.SHM_REGION_NOT_FOUND);
  await s.request(ShmUnregister, { region: region.name });
  const after = await rejectsWith(run({ offset: 64, length: 64 }), ErrorCodes.SHM_REGION_NOT_FOUND);
  assert.match(after.message, /not registered on this connection/);
  // Registering twice on one connection is refused; on another connection a region is unknown.
  await s.request(ShmRegister, { region: region.name, size: region.size, nonce: region.nonce });
  await rejectsWith(s.request(ShmRegister, { region: region.name, size: region.size, nonce: region.nonce }), ErrorCodes.SHM_REGION_REFUSED);
  const other = await rawSocket(t, n.node.url);
  await rejectsWith(other.request(RunInferenceShm, { model_id: 'mlp', region: region.name, input: { offset: 64, length: 64 } }), ErrorCodes.SHM_REGION_NOT_FOUND);
  const anonymous = new GridSocket();
  t.after(() => anonymous.dispose());
  await anonymous.connect(n.node.url, {}, { maxAttempts: 0 });
  await rejectsWith(anonymous.request(ShmRegister, { region: region.name, size: region.size, nonce: region.nonce }), ErrorCodes.UNAUTHENTICATED);
});

test('a symlink, another user\'s file, a file others can read, a wrong nonce or an oversized region is refused', async (t) => {
  const dir = shmDir(t);
  const n = await startShmNode(t, dir, { sharedMemory: { maxRegionBytes: 1024 * 1024 } });
  const s = await rawSocket(t, n.node.url);
  const make = () => { const r = RegionFile.create(dir, 8192); t.after(() => r.retire()); return r; };
  const register = (r: { name: string; size: number; nonce: string }) => s.request(ShmRegister, { region: r.name, size: r.size, nonce: r.nonce });

  // A symlink in the folder, pointing at a real region file of this user.
  const target = make();
  const link = { name: 'region-symlinktoanotherfile', size: target.size, nonce: target.nonce };
  fs.symlinkSync(target.path, path.join(dir, link.name));
  const sym = await rejectsWith(register(link), ErrorCodes.SHM_REGION_REFUSED);
  assert.match(sym.message, /is a symlink/);

  const loose = make();
  fs.chmodSync(loose.path, 0o644);
  assert.match((await rejectsWith(register(loose), ErrorCodes.SHM_REGION_REFUSED)).message, /open to other users \(mode 644\)/);

  const wrongNonce = make();
  await rejectsWith(register({ ...wrongNonce, nonce: make().nonce }), ErrorCodes.SHM_UNAVAILABLE);

  const big = make();
  await rejectsWith(register({ ...big, size: 2 * 1024 * 1024 }), ErrorCodes.SHM_REGION_REFUSED);
  const short = make();
  assert.match((await rejectsWith(register({ ...short, size: 16384 }), ErrorCodes.SHM_REGION_REFUSED)).message, /holds 8192 bytes, fewer than the 16384 registered/);

  await rejectsWith(register({ name: 'region-notinthefolderatall', size: 8192, nonce: target.nonce }), ErrorCodes.SHM_UNAVAILABLE);

  await t.test('another user\'s file', { skip: process.getuid?.() !== 0 && 'needs root to give a file to another user' }, async () => {
    const foreign = make();
    fs.chownSync(foreign.path, 65534, 65534);
    const err = await rejectsWith(register(foreign), ErrorCodes.SHM_REGION_REFUSED);
    assert.match(err.message, /belongs to uid 65534, not to the node's user/);
  });

  // Nothing refused was kept: the good file still registers.
  await register(target);
});

test('a connection\'s regions are removed when it closes, and a disposed client removes its own', async (t) => {
  const dir = shmDir(t);
  const n = await startShmNode(t, dir);
  // A client that goes away without cleaning up (a crash): the node removes what it registered.
  const s = new GridSocket();
  await s.connect(n.node.url, {}, { maxAttempts: 0 });
  await s.authenticate({ username: 'admin', password: ADMIN_PASSWORD });
  const region = RegionFile.create(dir, 8192);
  await s.request(ShmRegister, { region: region.name, size: region.size, nonce: region.nonce });
  assert.deepEqual(regionFiles(dir), [region.name]);
  const before = n.node.connectionCount;
  s.dispose();
  while (n.node.connectionCount >= before) await new Promise((r) => setImmediate(r));
  assert.deepEqual(regionFiles(dir), [], 'the node removed the region file of the closed connection');

  // A client disposed normally removes its region itself.
  const c = await n.connect(true);
  await c.hostModel(mlpModel(), { id: 'mlp', allowRemoteInference: true });
  await c.runInference('mlp', batch(256, 1));
  assert.equal(regionFiles(dir).length, 1);
  c.dispose();
  assert.deepEqual(regionFiles(dir), []);
});

test('a node with shared memory off refuses it, and the client carries the tensors over the socket instead', async (t) => {
  const dir = shmDir(t);
  const n = await startShmNode(t, dir, { sharedMemory: { enabled: false } });
  const c = await n.connect(true);
  await c.hostModel(mlpModel(), { id: 'mlp', allowRemoteInference: true });
  const x = batch(256, 3);
  const a = await c.runInference('mlp', x);
  const b = await c.runInference('mlp', x);
  assert.deepEqual(a.y!.dims, [256, 10]);
  assert.deepEqual([...(a.y!.data as Float32Array)], [...(b.y!.data as Float32Array)]);
  assert.deepEqual(await requestsOf(n.node, 'shm-register'), { [ErrorCodes.SHM_UNAVAILABLE]: 1 }, 'asked once per connection, then not again');
  assert.deepEqual(await requestsOf(n.node, 'run-inference'), { ok: 2 });
  assert.deepEqual(regionFiles(dir), [], 'the refused region file was removed');
  const s = await rawSocket(t, n.node.url);
  const region = RegionFile.create(dir, 8192);
  t.after(() => region.retire());
  const err = await rejectsWith(s.request(ShmRegister, { region: region.name, size: region.size, nonce: region.nonce }), ErrorCodes.SHM_UNAVAILABLE);
  assert.match(err.message, /shared memory turned off/);
});

test('after a reconnect the client registers a new region and keeps using shared memory', async (t) => {
  const dir = shmDir(t);
  const n = await startTestNode({ sharedMemory: { dir } });
  t.after(() => n.close());
  const c = await GridClient.connect(n.node.url, { credentials: { username: 'admin', password: ADMIN_PASSWORD }, sharedMemory: { dir }, reconnect: { initialDelayMs: 10, maxAttempts: 20 } });
  t.after(() => c.dispose());
  await c.hostModel(mlpModel(), { id: 'mlp', allowRemoteInference: true });
  const x = batch(256, 5);
  const first = await c.runInference('mlp', x);
  const oldRegion = c.shm.currentRegion!.name;
  // The node drops every connection (as a restart of its network side would).
  const reopened = new Promise<void>((resolve) => {
    let dropped = false;
    const onStatus = (st: { state: string }) => {
      if (st.state !== 'open') dropped = true;
      else if (dropped) { c.socket.off('status', onStatus); resolve(); }
    };
    c.socket.on('status', onStatus);
  });
  for (const conn of (n.node as unknown as { grid: { connections: Set<{ close(code: number): Promise<void> }> } }).grid.connections) await conn.close(1012);
  await reopened;
  const again = await c.runInference('mlp', x);
  assert.deepEqual([...(again.y!.data as Float32Array)], [...(first.y!.data as Float32Array)]);
  assert.notEqual(c.shm.currentRegion?.name, undefined);
  assert.notEqual(c.shm.currentRegion!.name, oldRegion, 'a new region for the new connection');
  assert.deepEqual(regionFiles(dir), [c.shm.currentRegion!.name], 'the old region file is gone');
  assert.deepEqual(await requestsOf(n.node, 'run-inference-shm'), { ok: 2 });
});

test('a connection that does not come from the loopback is refused shared memory, and its client does not ask', async (t) => {
  const address = Object.values(os.networkInterfaces()).flat().find((a) => a !== undefined && a.family === 'IPv4' && !a.internal)?.address;
  if (address === undefined) { t.skip('this machine has no non-loopback IPv4 address'); return; }
  const dir = shmDir(t);
  const n = await startTestNode({ host: '0.0.0.0', sharedMemory: { dir } });
  t.after(() => n.close());
  const url = `ws://${address}:${n.node.port}`;
  const s = await rawSocket(t, url);
  const region = RegionFile.create(dir, 8192);
  t.after(() => region.retire());
  const err = await rejectsWith(s.request(ShmRegister, { region: region.name, size: region.size, nonce: region.nonce }), ErrorCodes.SHM_UNAVAILABLE);
  assert.match(err.message, /only from clients on its own machine/);
  const c = await GridClient.connect(url, { credentials: { username: 'admin', password: ADMIN_PASSWORD }, reconnect: { maxAttempts: 0 }, sharedMemory: { dir } });
  t.after(() => c.dispose());
  await c.hostModel(mlpModel(), { id: 'mlp', allowRemoteInference: true });
  assert.deepEqual((await c.runInference('mlp', batch(256, 1))).y!.dims, [256, 10]);
  assert.deepEqual(await requestsOf(n.node, 'shm-register'), { [ErrorCodes.SHM_UNAVAILABLE]: 1 }, 'only the raw request above asked');
  assert.deepEqual(await requestsOf(n.node, 'run-inference'), { ok: 1 });
});
