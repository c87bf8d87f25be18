// Bad input gets a clear coded error, loses nothing, and never takes the node down. Each case is a test.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { randomBytes } from 'node:crypto';
import WebSocket from 'ws';
import { encodeChunk, encodeMessageFrame } from '../../src/core/protocol/envelope';
import { encodeNamedTensors } from '../../src/core/protocol/tensor';
import { GridError } from '../../src/core/errors';
import { mlpModel, seededFloats, startTestNode, ADMIN_PASSWORD, type TestNode } from '../helpers/node-fixtures';

/** A bare WebSocket speaking the envelope by hand, to send what GridSocket never would. */
class RawClient {
  readonly ws: WebSocket;
  private readonly inbox: Record<string, unknown>[] = [];
  private waiters: (() => void)[] = [];
  readonly closed: Promise<{ code: number }>;

  private constructor(ws: WebSocket) {
    this.ws = ws;
    ws.on('message', (raw, isBinary) => {
      if (!isBinary) this.inbox.push(JSON.parse(String(raw)) as Record<string, unknown>);
      for (const w of this.waiters.splice(0)) w();
    });
    this.closed = new Promise((resolve) => ws.once('close', (code) => { resolve({ code }); for (const w of this.waiters.splice(0)) w(); }));
  }

  static open(url: string): Promise<RawClient> {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(url, { maxPayload: 256 * 1024 * 1024 });
      ws.once('open', () => resolve(new RawClient(ws)));
      ws.once('error', reject);
    });
  }

  send(msg: unknown): void { this.ws.send(typeof msg === 'string' ? msg : JSON.stringify(msg)); }

  /** The next message matching `pred` (already received ones included). */
  async next(pred: (m: Record<string, unknown>) => boolean = () => true): Promise<Record<string, unknown>> {
    for (;;) {
      const i = this.inbox.findIndex(pred);
      if (i >= 0) return this.inbox.splice(i, 1)[0]!;
      if (this.ws.readyState === WebSocket.CLOSED) throw new Error('socket closed while waiting');
      await new Promise<void>((r) => this.waiters.push(r));
    }
  }

  async request(type: string, data: unknown, id = randomBytes(4).toString('hex')): Promise<Record<string, unknown>> {
    this.send({ type, request_id: id, data });
    return this.next((m) => m.request_id === id);
  }

  close(): void { this.ws.terminate(); }
}

const errorOf = (m: Record<string, unknown>) => m.error as { code: string; message: string };

async function withNode(t: { after(fn: () => unknown): void }, opts: Parameters<typeof startTestNode>[0] = {}): Promise<TestNode> {
  const n = await startTestNode(opts);
  t.after(() => n.close());
  return n;
}

async function stillServing(n: TestNode): Promise<void> {
  const c = await n.anonymous();
  assert.equal((await c.getId()).name, 'test-node');
}

test('malformed frames (not JSON, not an envelope, random binary) get MALFORMED_FRAME and the connection stays usable', async (t) => {
  const n = await withNode(t);
  const raw = await RawClient.open(n.node.url);
  t.after(() => raw.close());
  raw.send('{this is not json');
  assert.equal(errorOf(await raw.next()).code, 'GRID_ERR_MALFORMED_FRAME');
  raw.send('[1, 2, 3]');
  assert.equal(errorOf(await raw.next()).code, 'GRID_ERR_MALFORMED_FRAME');
  raw.send({ request_id: 'x', data: {} });
  assert.match(errorOf(await raw.next()).message, /type/);
  raw.ws.send(randomBytes(100));
  assert.equal(errorOf(await raw.next()).code, 'GRID_ERR_MALFORMED_FRAME');
  const ok = await raw.request('get-id', {});
  assert.equal((ok.data as { name: string }).name, 'test-node');
});

test('an oversized frame closes only that connection (1009); an oversized JSON text gets PAYLOAD_TOO_LARGE', async (t) => {
  const n = await withNode(t, { maxPayload: 1024 * 1024 });
  const raw = await RawClient.open(n.node.url);
  t.after(() => raw.close());
  raw.ws.send(Buffer.alloc(2 * 1024 * 1024));
  assert.equal((await raw.closed).code, 1009);
  await stillServing(n);

  const n2 = await withNode(t);
  const raw2 = await RawClient.open(n2.node.url);
  t.after(() => raw2.close());
  raw2.send({ type: 'get-id', request_id: 'big', data: { pad: 'x'.repeat(5 * 1024 * 1024) } });
  const reply = await raw2.next();
  assert.equal(errorOf(reply).code, 'GRID_ERR_PAYLOAD_TOO_LARGE');
  assert.equal((await raw2.request('get-id', {})).type, 'get-id');
});

test('unknown message types get UNKNOWN_TYPE naming the type', async (t) => {
  const n = await withNode(t);
  const raw = await RawClient.open(n.node.url);
  t.after(() => raw.close());
  const r = await raw.request('serve-model-please', {});
  assert.equal(errorOf(r).code, 'GRID_ERR_UNKNOWN_TYPE');
  assert.match(errorOf(r).message, /serve-model-please/);
});

test('wrong field types get INVALID_MESSAGE naming the field', async (t) => {
  const n = await withNode(t);
  const raw = await RawClient.open(n.node.url);
  t.after(() => raw.close());
  const r = await raw.request('model-info', { model_id: 42 });
  assert.equal(errorOf(r).code, 'GRID_ERR_INVALID_MESSAGE');
  assert.match(errorOf(r).message, /data\.model_id/);
  const r2 = await raw.request('search', { query: 'iris' });
  assert.match(errorOf(r2).message, /data\.query/);
  const r3 = await raw.request('list-models', { extra: true });
  assert.equal(errorOf(r3).code, 'GRID_ERR_INVALID_MESSAGE');
});

test("PyGrid compatibility: socket-ping answers {alive: 'True'}, and envelopes without request_id are answered", async (t) => {
  const n = await withNode(t);
  const raw = await RawClient.open(n.node.url);
  t.after(() => raw.close());
  raw.send({ type: 'socket-ping' });
  const pong = await raw.next((m) => m.type === 'socket-ping');
  assert.deepEqual(pong.data, { alive: 'True' });
  raw.send({ type: 'list-models' });
  const models = await raw.next((m) => m.type === 'list-models');
  assert.deepEqual(models.data, { models: [] });
  assert.equal(models.request_id, undefined);
});

test('truncated and random-bytes ONNX files are refused with INVALID_MODEL and leave nothing behind', async (t) => {
  const n = await withNode(t);
  const c = await n.admin();
  const good = mlpModel(16, 8, 2);
  for (const [what, bytes] of [['truncated', good.subarray(0, Math.floor(good.length * 0.6))], ['random', randomBytes(4096)], ['empty-ish', Buffer.from([0x08])]] as const) {
    await assert.rejects(c.hostModel(bytes, { id: `bad-${what}` }), (e: unknown) => {
      assert.ok(e instanceof GridError, String(e));
      assert.equal(e.code, 'GRID_ERR_INVALID_MODEL', `${what}: ${e.message}`);
      return true;
    });
  }
  assert.deepEqual(await c.listModels(), []);
  const leftovers = fs.readdirSync(path.join(n.dir, 'blobs'), { recursive: true }).filter((f) => /^[0-9a-f]{64}$/.test(path.basename(String(f))));
  assert.deepEqual(leftovers, []);
  assert.deepEqual(fs.readdirSync(path.join(n.dir, 'uploads')), []);
});

test('hosting a second model under a taken id is ALREADY_EXISTS and keeps the first one intact', async (t) => {
  const n = await withNode(t);
  const c = await n.admin();
  const first = await c.hostModel(mlpModel(4, 4, 2, 1), { id: 'taken', allowRemoteInference: true });
  await assert.rejects(c.hostModel(mlpModel(4, 4, 2, 2), { id: 'taken' }), (e: GridError) => e.code === 'GRID_ERR_ALREADY_EXISTS' && /delete it first/.test(e.message));
  // Two uploads racing for one new id: exactly one wins.
  const race = await Promise.allSettled([c.hostModel(mlpModel(4, 4, 2, 3), { id: 'raced' }), c.hostModel(mlpModel(4, 4, 2, 4), { id: 'raced' })]);
  assert.deepEqual(race.map((r) => r.status).sort(), ['fulfilled', 'rejected']);
  assert.equal((race.find((r) => r.status === 'rejected') as PromiseRejectedResult).reason.code, 'GRID_ERR_ALREADY_EXISTS');
  assert.deepEqual(await c.modelInfo('taken'), first);
  assert.deepEqual((await c.listModels()).map((m) => m.id), ['raced', 'taken']);
  assert.deepEqual(fs.readdirSync(path.join(n.dir, 'uploads')), []);
});

test('model ids with path characters are refused with INVALID_ID before anything is stored', async (t) => {
  const n = await withNode(t);
  const c = await n.admin();
  for (const id of ['../../etc/passwd', 'a/b', 'a\\b', 'has space', '..', 'x'.repeat(129), 'nul\u0000byte']) {
    await assert.rejects(c.hostModel(mlpModel(4, 4, 2), { id }), { code: 'GRID_ERR_INVALID_ID' }, id);
    await assert.rejects(c.modelInfo(id), { code: 'GRID_ERR_INVALID_ID' }, id);
  }
  assert.deepEqual(await c.listModels(), []);
  assert.deepEqual(fs.readdirSync(path.join(n.dir, 'uploads')), []);
});

test('inference inputs with a wrong name, dtype or shape get INVALID_INPUT naming the input', async (t) => {
  const n = await withNode(t);
  const c = await n.admin();
  await c.hostModel(mlpModel(16, 8, 2), { id: 'm', allowRemoteInference: true });
  const x = (dims: number[]) => ({ dtype: 'float32' as const, dims, data: seededFloats(dims.reduce((a, b) => a * b, 1), 1) });
  await assert.rejects(c.runInference('m', { input: x([1, 16]) }), (e: GridError) => e.code === 'GRID_ERR_INVALID_INPUT' && /no input "input"/.test(e.message));
  await assert.rejects(c.runInference('m', { x: { dtype: 'float64', dims: [1, 16], data: new Float64Array(16) } }), (e: GridError) => e.code === 'GRID_ERR_INVALID_INPUT' && /float32/.test(e.message));
  await assert.rejects(c.runInference('m', { x: x([1, 15]) }), (e: GridError) => e.code === 'GRID_ERR_INVALID_INPUT' && /shape/.test(e.message));
  await assert.rejects(c.runInference('m', {}), (e: GridError) => e.code === 'GRID_ERR_INVALID_INPUT' && /"x" is missing/.test(e.message));
  // Tensor bytes that do not decode: a raw MESSAGE frame with a corrupt attachment.
  const raw = await RawClient.open(n.node.url);
  t.after(() => raw.close());
  const auth = await raw.request('authenticate', { username: 'admin', password: ADMIN_PASSWORD });
  assert.equal(auth.error, undefined);
  const good = encodeNamedTensors({ x: x([1, 16]) });
  raw.ws.send(encodeMessageFrame({ type: 'run-inference', request_id: 'r1', data: { model_id: 'm' } }, good.subarray(0, good.length - 9)));
  const bad = await raw.next((m) => m.request_id === 'r1');
  assert.equal(errorOf(bad).code, 'GRID_ERR_INVALID_TENSOR');
  // No attachment at all.
  const none = await raw.request('run-inference', { model_id: 'm' });
  assert.equal(errorOf(none).code, 'GRID_ERR_INVALID_INPUT');
});

test('download and inference: the owner and admins always may; others only when the model allows it, and the message says why', async (t) => {
  const n = await withNode(t);
  const admin = await n.admin();
  await admin.addUser('alice', 'alice-password-1');
  await admin.addUser('bob', 'bob-password-1');
  const alice = await n.anonymous();
  await alice.authenticate({ username: 'alice', password: 'alice-password-1' });
  const bob = await n.anonymous();
  await bob.authenticate({ username: 'bob', password: 'bob-password-1' });
  await alice.hostModel(mlpModel(4, 4, 2), { id: 'locked' });
  const input = { x: { dtype: 'float32' as const, dims: [1, 4], data: new Float32Array(4) } };
  for (const [who, c] of [['owner', alice], ['admin', admin]] as const) {
    const dest = path.join(n.dir, `${who}.onnx`);
    await c.downloadModel('locked', dest);
    assert.ok(fs.statSync(dest).size > 0, `${who} downloads its model`);
    assert.deepEqual((await c.runInference('locked', input)).y!.dims, [1, 2], `${who} runs its model`);
  }
  await assert.rejects(bob.downloadModel('locked', path.join(n.dir, 'never.onnx')), (e: GridError) =>
    e.code === 'GRID_ERR_FORBIDDEN' && /allow_download is false/.test(e.message) && e.message.includes(`${n.node.host}:${n.node.port}`));
  assert.ok(!fs.existsSync(path.join(n.dir, 'never.onnx')) && !fs.existsSync(path.join(n.dir, 'never.onnx.partial')));
  await assert.rejects(bob.runInference('locked', input), (e: GridError) =>
    e.code === 'GRID_ERR_FORBIDDEN' && /allow_remote_inference is false/.test(e.message));
});

test('mutations without a session are UNAUTHENTICATED; wrong passwords BAD_CREDENTIALS; others cannot delete your model', async (t) => {
  const n = await withNode(t);
  const anon = await n.anonymous();
  await assert.rejects(anon.hostModel(mlpModel(4, 4, 2), { id: 'sneaky' }), { code: 'GRID_ERR_UNAUTHENTICATED' });
  await assert.rejects(anon.deleteModel('anything'), { code: 'GRID_ERR_UNAUTHENTICATED' });
  await assert.rejects(anon.runInference('anything', {}), { code: 'GRID_ERR_UNAUTHENTICATED' });
  await assert.rejects(anon.connectNode('ws://127.0.0.1:1'), { code: 'GRID_ERR_UNAUTHENTICATED' });
  assert.deepEqual(fs.readdirSync(path.join(n.dir, 'uploads')), [], 'an unauthenticated client cannot upload bytes');
  // Metadata reads are open.
  assert.deepEqual(await anon.listModels(), []);
  assert.deepEqual(await anon.listDatasets(), []);
  await assert.rejects(anon.authenticate({ username: 'admin', password: 'wrong password' }), { code: 'GRID_ERR_BAD_CREDENTIALS' });
  await assert.rejects(anon.authenticate({ username: 'nobody', password: 'wrong password' }), { code: 'GRID_ERR_BAD_CREDENTIALS' });
  await assert.rejects(anon.authenticate({ token: 'forged-token' }), { code: 'GRID_ERR_BAD_CREDENTIALS' });

  const admin = await n.admin();
  await admin.hostModel(mlpModel(4, 4, 2), { id: 'admins' });
  await assert.rejects(anon.addUser('mallory', 'mallory-password'), { code: 'GRID_ERR_UNAUTHENTICATED' });
  assert.deepEqual(await admin.addUser('alice', 'alice-password-1'), { username: 'alice', role: 'user' });
  await assert.rejects(admin.addUser('alice', 'another-password'), { code: 'GRID_ERR_ALREADY_EXISTS' });
  const alice = await n.anonymous();
  await alice.authenticate({ username: 'alice', password: 'alice-password-1' });
  await assert.rejects(alice.addUser('eve', 'eve-password-1'), (e: GridError) => e.code === 'GRID_ERR_FORBIDDEN' && /only an admin/.test(e.message));
  await assert.rejects(alice.deleteModel('admins'), (e: GridError) => e.code === 'GRID_ERR_FORBIDDEN' && /belongs to admin/.test(e.message));
  const mine = await alice.hostModel(mlpModel(4, 4, 2), { id: 'alices' });
  assert.equal(mine.owner, 'alice');
  await admin.deleteModel('alices'); // admin may delete anything
});

test('an upload is acknowledged as often as its transfer-begin asks (ack_bytes), and at the end; an ack_bytes over the limit is refused', async (t) => {
  const n = await withNode(t);
  const c = await RawClient.open(n.node.url);
  t.after(() => c.close());
  await c.request('authenticate', { username: 'admin', password: ADMIN_PASSWORD });
  const chunk = 1024 * 1024;
  const size = 16 * chunk + 1000;
  const tooMany = await c.request('transfer-begin', { size, chunk_size: chunk, ack_bytes: 2 ** 40 });
  assert.equal(errorOf(tooMany).code, 'GRID_ERR_INVALID_MESSAGE');
  assert.match(errorOf(tooMany).message, /ack_bytes/);
  const begin = await c.request('transfer-begin', { size, chunk_size: chunk, ack_bytes: 8 * chunk });
  const id = (begin.data as { transfer_id: string }).transfer_id;
  for (let i = 0; i * chunk < size; i++) c.ws.send(encodeChunk(id, i, randomBytes(Math.min(chunk, size - i * chunk)), (i + 1) * chunk >= size));
  const acks: number[] = [];
  while (acks.at(-1) !== size) acks.push(((await c.next((m) => m.type === 'transfer-ack')).data as { received: number }).received);
  // One ack per 8 MiB crossed (at 8 and 16 MiB, or later when writes finish together), and one at the end: not one per chunk.
  assert.ok(acks.length <= 3, `acks at ${acks.join(', ')}`);
  assert.ok(acks[0]! >= 8 * chunk, `first ack at ${acks[0]}`);
  await stillServing(n);
});

test('a client vanishing mid-upload: the partial upload is resumable for a while, then cleaned up', async (t) => {
  const n = await withNode(t, { uploadTtlMs: 1500 });
  const uploads = path.join(n.dir, 'uploads');
  const chunk = 1024 * 1024;
  const size = 8 * chunk;
  const first = await RawClient.open(n.node.url);
  const refused = await first.request('transfer-begin', { size, chunk_size: chunk });
  assert.equal(errorOf(refused).code, 'GRID_ERR_UNAUTHENTICATED', 'no bytes are accepted before authenticating');
  await first.request('authenticate', { username: 'admin', password: ADMIN_PASSWORD });
  const begin = await first.request('transfer-begin', { size, chunk_size: chunk });
  const id = (begin.data as { transfer_id: string }).transfer_id;
  for (let i = 0; i < 5; i++) first.ws.send(encodeChunk(id, i, randomBytes(chunk), false));
  // Wait until the node says it holds at least 4 chunks (however often it acknowledges).
  let acked = 0;
  while (acked < 4 * chunk) acked = ((await first.next((m) => m.type === 'transfer-ack')).data as { received: number }).received;
  // The next connection is ready (logged in) before the first vanishes, so the resume below is not
  // racing the TTL on a slow machine.
  const second = await RawClient.open(n.node.url);
  t.after(() => second.close());
  await second.request('authenticate', { username: 'admin', password: ADMIN_PASSWORD });
  first.close(); // vanish without a goodbye
  await first.closed;

  // Resumable: a new connection learns how much the node holds.
  const resumed = await second.request('transfer-begin', { transfer_id: id, size, chunk_size: chunk });
  assert.equal(resumed.error, undefined);
  assert.ok((resumed.data as { received: number }).received >= acked);
  assert.equal(fs.readdirSync(uploads).length, 1);

  // Then abandoned: the node removes it once the TTL passes (watched, not slept on).
  await new Promise<void>((resolve) => {
    const watcher = fs.watch(uploads, () => { if (fs.readdirSync(uploads).length === 0) { watcher.close(); resolve(); } });
    if (fs.readdirSync(uploads).length === 0) { watcher.close(); resolve(); }
  });
  const gone = await second.request('transfer-begin', { transfer_id: id, size, chunk_size: chunk });
  assert.equal(errorOf(gone).code, 'GRID_ERR_TRANSFER_NOT_FOUND');
  await stillServing(n);
});
