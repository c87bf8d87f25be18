// Hostile traffic against a real node: a seeded fuzz of mutated frames (text and binary, anonymous and
// signed in), and the per-connection bounds it relies on: one JSON limit for both frame kinds (size,
// depth, containers; checked before parsing), open streams, and a client that stops reading.
//
// GRID_FUZZ_SEED=<n> replays a run; the seed of every run is printed (and named in every failure).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomInt } from 'node:crypto';
import * as v8 from 'node:v8';
import * as vm from 'node:vm';
import WebSocket from 'ws';
import { ErrorCodes, isErrorCode } from '../../src/core/errors';
import { decodeBinaryFrame, encodeChunk, FrameKind, type Envelope } from '../../src/core/protocol/envelope';
import { encodeNamedTensors } from '../../src/core/protocol/tensor';
import { GridClient } from '../../src/core/client';
import type { Logger } from '../../src/core/logger';
import { seededRandom } from '../../src/compute/plan/models';
import { ADMIN_PASSWORD, mlpModel, seededFloats, startTestNode, type TestNode } from '../helpers/node-fixtures';

const MiB = 1024 * 1024;

/** A full collection, with or without --expose-gc on the test runner. */
function forceGc(): void {
  const exposed = (globalThis as { gc?: () => void }).gc;
  if (exposed) return exposed();
  v8.setFlagsFromString('--expose-gc');
  (vm.runInNewContext('gc') as () => void)();
}

function heapAfterGc(): { heap: number; rss: number } {
  forceGc();
  forceGc();
  return { heap: v8.getHeapStatistics().used_heap_size, rss: process.memoryUsage().rss };
}

const mb = (n: number) => `${(n / MiB).toFixed(1)} MiB`;

async function until(what: string, cond: () => boolean, ms: number): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise<void>((r) => setTimeout(r, 5));
  }
}

/** A bare WebSocket speaking the envelope by hand, to send what GridSocket never would. */
class RawClient {
  readonly ws: WebSocket;
  readonly closed: Promise<{ code: number; reason: string }>;
  /** Text replies and decoded binary replies, in arrival order. */
  readonly inbox: Envelope[] = [];
  /** Replies that break the protocol (not JSON, not an envelope, an uncatalogued error code). */
  readonly violations: string[] = [];
  readonly codes = new Map<string, number>();
  replies = 0;
  private waiters: (() => void)[] = [];
  private readonly keep: boolean;

  private constructor(ws: WebSocket, keep: boolean) {
    this.ws = ws;
    this.keep = keep;
    ws.on('message', (raw: Buffer, isBinary) => this.onMessage(raw, isBinary));
    this.closed = new Promise((resolve) => ws.once('close', (code, reason) => {
      resolve({ code, reason: reason.toString() });
      for (const w of this.waiters.splice(0)) w();
    }));
    ws.on('error', () => { /* the close that follows is what counts */ });
  }

  /** `keep`: hold every reply in the inbox (the fuzz only counts and checks them). */
  static open(url: string, keep = true): Promise<RawClient> {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(url, { maxPayload: 256 * MiB });
      ws.once('open', () => resolve(new RawClient(ws, keep)));
      ws.once('error', reject);
    });
  }

  get open(): boolean {
    return this.ws.readyState === WebSocket.OPEN;
  }

  private onMessage(raw: Buffer, isBinary: boolean): void {
    this.replies++;
    let env: Envelope;
    try {
      if (isBinary) {
        const frame = decodeBinaryFrame(raw);
        if (frame.kind !== FrameKind.MESSAGE) return;
        env = frame.message;
      } else {
        env = JSON.parse(raw.toString('utf8')) as Envelope;
      }
    } catch (err) {
      this.violations.push(`unparseable reply: ${(err as Error).message}`);
      return;
    }
    if (typeof env !== 'object' || env === null || typeof env.type !== 'string') {
      this.violations.push(`reply is not an envelope: ${raw.toString('utf8', 0, 200)}`);
      return;
    }
    if (env.error !== undefined) {
      const code = (env.error as { code?: unknown }).code;
      if (!isErrorCode(code)) this.violations.push(`uncatalogued error code ${String(code)} in ${JSON.stringify(env).slice(0, 300)}`);
      else this.codes.set(code, (this.codes.get(code) ?? 0) + 1);
    }
    if (this.keep || (typeof env.request_id === 'string' && env.request_id.startsWith('sync-'))) this.inbox.push(env);
    for (const w of this.waiters.splice(0)) w();
  }

  send(msg: unknown): void {
    this.ws.send(typeof msg === 'string' || Buffer.isBuffer(msg) ? msg : JSON.stringify(msg));
  }

  /** The next reply matching `pred` within `ms` (already received ones included). */
  async next(pred: (m: Envelope) => boolean, ms = 10_000): Promise<Envelope> {
    const deadline = Date.now() + ms;
    for (;;) {
      const i = this.inbox.findIndex(pred);
      if (i >= 0) return this.inbox.splice(i, 1)[0]!;
      if (this.ws.readyState === WebSocket.CLOSED) throw new Error('socket closed while waiting for a reply');
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`no reply within ${ms} ms`);
      await new Promise<void>((r) => {
        const t = setTimeout(r, left);
        this.waiters.push(() => { clearTimeout(t); r(); });
      });
    }
  }

  async request(type: string, data: unknown, id: string, ms?: number): Promise<Envelope> {
    this.send({ type, request_id: id, data });
    return this.next((m) => m.request_id === id, ms);
  }

  terminate(): void {
    this.ws.terminate();
  }
}

const codeOf = (m: Envelope) => m.error?.code;

// ---- the fuzz -------------------------------------------------------------------------------------

class Fuzzer {
  readonly random: () => number;
  constructor(seed: number) { this.random = seededRandom(seed); }
  int(n: number): number { return Math.floor(this.random() * n); }
  pick<T>(xs: readonly T[]): T { return xs[this.int(xs.length)]!; }
  chance(p: number): boolean { return this.random() < p; }
  bytes(n: number): Buffer {
    const b = Buffer.allocUnsafe(n);
    for (let i = 0; i < n; i++) b[i] = this.int(256);
    return b;
  }

  /** A value of some JSON type, often the wrong one for where it lands. */
  junk(): unknown {
    switch (this.int(12)) {
      case 0: return null;
      case 1: return this.chance(0.5);
      case 2: return this.pick([0, -1, 1.5, 2 ** 53 + 1, -(2 ** 63), 1e308, 4294967296, Number.MAX_SAFE_INTEGER]);
      case 3: return '';
      case 4: return 'x'.repeat(this.pick([1, 255, 256, 1025, 70_000]));
      case 5: return '../../etc/passwd';
      case 6: return [];
      case 7: return [this.junk(), this.junk()];
      case 8: return {};
      case 9: return { nested: this.junk() };
      case 10: return '\u0000\ud800\uffff';
      default: return this.int(1000);
    }
  }

  nested(depth: number): unknown {
    let v: unknown = 1;
    for (let i = 0; i < depth; i++) v = this.chance(0.5) ? [v] : { a: v };
    return v;
  }

  /** A structural mutation of a valid envelope (types, fields, numbers, nesting, unknown types). */
  mutateEnvelope(env: Record<string, unknown>): Record<string, unknown> {
    const out: Record<string, unknown> = structuredClone(env);
    const data = (typeof out.data === 'object' && out.data !== null ? out.data : {}) as Record<string, unknown>;
    const keys = Object.keys(data);
    switch (this.int(11)) {
      case 0: if (keys.length > 0) data[this.pick(keys)] = this.junk(); else out.data = this.junk(); break;
      case 1: if (keys.length > 0) delete data[this.pick(keys)]; else data.extra = 1; break;
      case 2: data[this.pick(['extra', '__proto__', 'constructor', 'model_id', 'transfer_id'])] = this.junk(); break;
      case 3: out.type = this.pick([this.junk(), 'no-such-type', 'x'.repeat(129), 'PING', 'ping ', 'cancel', 'transfer-ack']); break;
      case 4: out.request_id = this.junk(); break;
      case 5: out.data = this.nested(this.pick([8, 40, 63, 65, 200])); break; // deeper ones: mutateText
      case 6: out.stream = this.junk(); break;
      case 7: out.error = this.junk(); break;
      case 8: out.data = this.junk(); break;
      case 9: if (keys.length > 0) data[this.pick(keys)] = this.pick([1e308, -1, 2 ** 64, 0.5, -0, 2 ** 31]); break;
      default: delete out.type; break;
    }
    if (out.data !== undefined && typeof out.data === 'object' && out.data === data) out.data = data;
    return out;
  }

  /** A byte-level mutation of JSON text: flips, truncation, insertion, splicing, huge literals. */
  mutateText(text: string): Buffer | string {
    const b = Buffer.from(text, 'utf8');
    switch (this.int(7)) {
      case 0: {
        for (let k = 1 + this.int(4); k > 0; k--) { const i = this.int(b.length); b[i] = b[i]! ^ (1 << this.int(7)); }
        return b.toString('latin1');
      }
      case 1: return text.slice(0, this.int(text.length));
      case 2: { const i = this.int(text.length); return text.slice(0, i) + this.pick(['{', '}', '[', ']', '"', '\\', ',', ':', '1e99999', '-', 'null', '\u2028']) + text.slice(i); }
      case 3: return text + text;
      case 4: return text.replace(/\d+/, this.pick(['1e400', '-0', '99999999999999999999999999', '0x10', 'NaN', 'Infinity']));
      case 5: return text.replace(/"([a-z_]+)":/, '"$1":"$1":');
      default: return '['.repeat(this.pick([65, 1000, 100_000])) + text;
    }
  }
}

interface Template { env: Record<string, unknown>; attachment?: Uint8Array; signedOnly?: boolean; anonymousOnly?: boolean }

const SHA = 'ab'.repeat(32);

/** Valid envelopes of real message types from the catalogue, the seeds of every mutation. */
function templates(inference: Uint8Array): Template[] {
  const t = (type: string, data: unknown, extra: Partial<Template> = {}): Template => ({ env: { type, request_id: 'r1', data }, ...extra });
  const train = { dataset_id: 'no-such-dataset', model_id: 'mlp', loss: 'cross_entropy', optimizer: 'sgd', batch_size: 8, epochs: 1 };
  return [
    t('ping', {}), t('socket-ping', {}), t('get-id', {}), t('list-models', {}), t('model-info', { model_id: 'mlp' }),
    t('download-model', { model_id: 'mlp' }), t('delete-model', { model_id: 'no-such-model' }), t('list-datasets', {}),
    t('search', { query: ['demo', 'iris'] }), t('dataset-tags', {}), t('list-peers', {}), t('subscribe', { topics: ['models', 'peers'] }),
    t('cancel', { request_id: 'r1' }), t('transfer-ack', { transfer_id: 'tx-unknown', received: 1024 }),
    t('transfer-begin', { size: 4096, chunk_size: 1024 }), t('transfer-commit', { transfer_id: 'tx-unknown', sha256: SHA }),
    t('transfer-read', { transfer_id: 'tx-unknown', offset: 0 }), t('host-model', { model_id: 'fuzzed', transfer_id: 'tx-unknown' }),
    t('list-jobs', {}), t('job-info', { job_id: 'job-1' }), t('cancel-job', { job_id: 'job-1' }), t('job-params', { job_id: 'job-1' }),
    t('watch-job', { job_id: 'job-1', after_seq: 0 }), t('model-training', { model_id: 'mlp' }),
    t('evaluate', { dataset_id: 'no-such-dataset', model_id: 'mlp', loss: 'mse' }), t('train', train),
    t('authenticate', { token: 'not-a-token' }),
    t('run-inference', { model_id: 'mlp' }, { attachment: inference }),
    // Refused before any work only without a session: a password check costs scrypt, a new user
    // costs scrypt, and a peer link dials out.
    t('authenticate', { username: 'fuzz-user', password: 'wrong' }, { anonymousOnly: true }),
    t('add-user', { username: 'fuzz-user', password: 'a long enough password' }, { anonymousOnly: true }),
    t('connect-node', { address: 'ws://127.0.0.1:1' }, { anonymousOnly: true }),
  ];
}

/** A binary MESSAGE frame carrying `json` as its envelope (what encodeMessageFrame builds, from bytes). */
function messageFrame(json: Buffer, attachment: Uint8Array = Buffer.alloc(0)): Buffer {
  const padded = (json.length + 7) & ~7;
  const head = Buffer.alloc(16);
  head.write('GW', 0, 'latin1');
  head[2] = 1; head[3] = FrameKind.MESSAGE; head[5] = 0;
  head.writeUInt32LE(json.length, 12);
  return Buffer.concat([head, json, Buffer.alloc(padded - json.length, 0x20), attachment]);
}

/** One hostile frame: a mutated text envelope, a mutated binary MESSAGE frame, or a bad CHUNK frame. */
function hostileFrame(f: Fuzzer, pool: Template[]): Buffer | string {
  const tpl = f.pick(pool);
  const roll = f.random();
  if (roll < 0.5) {
    const env = f.chance(0.85) ? f.mutateEnvelope(tpl.env) : tpl.env;
    const text = JSON.stringify(env) ?? 'null';
    return f.chance(0.35) ? f.mutateText(text) : text;
  }
  if (roll < 0.8) {
    const env = f.chance(0.6) ? f.mutateEnvelope(tpl.env) : tpl.env;
    const attachment = tpl.attachment !== undefined && f.chance(0.7) ? Buffer.from(tpl.attachment) : f.bytes(f.int(64));
    if (tpl.attachment !== undefined && f.chance(0.5)) {
      // Tensor bytes with a corrupted dtype code, dims or lengths.
      for (let k = 1 + f.int(3); k > 0; k--) attachment[f.int(attachment.length)] = f.int(256);
    }
    // Built by hand: encodeMessageFrame would refuse a mutated request id.
    return mutateHeader(f, messageFrame(Buffer.from(JSON.stringify(env) ?? 'null'), attachment));
  }
  const id = f.pick(['tx-unknown', 'x', 'a'.repeat(200), '', '\u00e9t\u00e9', 'transfer_1']);
  const frame = encodeChunk(id, f.pick([0, 1, 7, 0xffffffff]), f.bytes(f.int(2048)), f.chance(0.5));
  return mutateHeader(f, frame);
}

/** Binary header damage: magic, version, kind, flags, id length, JSON/body length, truncation. */
function mutateHeader(f: Fuzzer, frame: Buffer): Buffer {
  if (f.chance(0.35)) return frame;
  const b = Buffer.from(frame);
  switch (f.int(7)) {
    case 0: b[f.int(4)] = f.int(256); return b;
    case 1: b[5] = f.int(256); return b;
    case 2: b.writeUInt32LE(f.pick([0, 1, 0xffffffff, b.length, b.length * 2, 65 * MiB]), 12); return b;
    case 3: b.writeUInt32LE(f.int(0x100000000), 8); return b;
    case 4: return b.subarray(0, f.int(b.length));
    case 5: return Buffer.concat([b.subarray(0, 16), f.bytes(f.int(300))]);
    default: { for (let k = 1 + f.int(5); k > 0; k--) b[f.int(b.length)] = f.int(256); return b; }
  }
}

test('fuzz: 20,000+ mutated frames, text and binary, anonymous and signed in: coded replies or a close, never a crash, memory bounded', { timeout: 120_000 }, async (t) => {
  const seed = process.env.GRID_FUZZ_SEED !== undefined ? Number(process.env.GRID_FUZZ_SEED) : randomInt(2 ** 31);
  assert.ok(Number.isSafeInteger(seed), `GRID_FUZZ_SEED must be an integer, not "${process.env.GRID_FUZZ_SEED}"`);
  const tag = `GRID_FUZZ_SEED=${seed}`;
  t.diagnostic(tag);
  const f = new Fuzzer(seed);
  // The fuzz sends thousands of bad sign-ins from the loopback; the backoff (tested in node-limits) would
  // then refuse the fresh connections' token sign-in this test needs. Here it is out of the way.
  const n: TestNode = await startTestNode({ signInLimits: { pairFreeFailures: 1e9, addressFreeFailures: 1e9 } });
  t.after(() => n.close());
  const admin = await n.admin();
  await admin.hostModel(mlpModel(4, 8, 3, 7), { id: 'mlp', allowRemoteInference: true, allowDownload: true });
  const inference = encodeNamedTensors({ x: { dtype: 'float32', dims: [2, 4], data: seededFloats(8, 3) } });
  const all = templates(inference);
  const anonymousPool = all.filter((x) => !x.signedOnly);
  const signedPool = all.filter((x) => !x.anonymousOnly);
  const login = await admin.socket.request('authenticate', { username: 'admin', password: ADMIN_PASSWORD }) as { token: string };

  const opened: RawClient[] = [];
  let closes = 0;
  const openClient = async (signed: boolean): Promise<RawClient> => {
    const c = await RawClient.open(n.node.url, false);
    opened.push(c);
    if (signed) {
      // A token, not the password: password guesses by the fuzz must not lock the admin out.
      const r = await c.request('authenticate', { token: login.token }, 'sync-login');
      assert.equal(codeOf(r), undefined, `${tag}: a fresh connection could not resume the admin session`);
    }
    return c;
  };
  const clients = [await openClient(false), await openClient(false), await openClient(true), await openClient(true)];

  const TOTAL = 20_000;
  const BATCH = 200;
  let sent = 0;
  let batches = 0;
  let before: { heap: number; rss: number } | undefined;
  const started = performance.now();
  while (sent < TOTAL) {
    const slot = batches % clients.length;
    let c = clients[slot]!;
    if (!c.open) {
      const { code } = await c.closed;
      assert.ok([1000, 1001, 1002, 1006, 1007, 1008, 1009].includes(code), `${tag}: the node closed a connection with ${code}`);
      closes++;
      c = clients[slot] = await openClient(slot >= 2);
    }
    const pool = slot >= 2 ? signedPool : anonymousPool;
    for (let i = 0; i < BATCH; i++) c.send(hostileFrame(f, pool));
    sent += BATCH;
    batches++;
    if (f.chance(0.04)) {
      // Last in its batch: a text frame that is not UTF-8, which ws answers by closing (1007).
      const b = Buffer.from(JSON.stringify(f.pick(pool).env));
      b[f.int(b.length)] = 0xc0 | f.int(64); // a lead byte without its continuation
      c.ws.send(b, { binary: false });
      sent++;
      const closed = await Promise.race([c.closed, new Promise<undefined>((r) => setTimeout(() => r(undefined), 10_000))]);
      assert.equal(closed?.code, 1007, `${tag}: invalid UTF-8 in a text frame closes the connection`);
      continue;
    }
    // A ping behind the batch: its answer means the node has taken every frame before it.
    const id = `sync-${batches}`;
    c.send({ type: 'ping', request_id: id, data: {} });
    await c.next((m) => m.request_id === id, 20_000).catch(async (err: Error) => {
      if (c.open) throw new Error(`${tag}: the node did not answer a ping after batch ${batches}: ${err.message}`);
    });
    if (before === undefined && batches >= 5) before = heapAfterGc(); // after warm-up: caches, JIT and pools are filled
  }
  const seconds = (performance.now() - started) / 1000;

  for (const c of opened) c.terminate();
  await until('the node to drop the fuzz connections', () => n.node.connectionCount <= 1, 10_000);
  const after = heapAfterGc();

  const violations = opened.flatMap((c) => c.violations);
  const codes = new Map<string, number>();
  for (const c of opened) for (const [k, v] of c.codes) codes.set(k, (codes.get(k) ?? 0) + v);
  const replies = opened.reduce((a, c) => a + c.replies, 0);
  t.diagnostic(`${sent} frames in ${seconds.toFixed(1)} s, ${replies} replies, ${closes} connections closed by the node`);
  t.diagnostic(`error codes: ${[...codes].sort((a, b) => b[1] - a[1]).map(([k, v]) => `${k.replace('GRID_ERR_', '')} ${v}`).join(', ')}`);
  t.diagnostic(`heap after GC ${mb(before!.heap)} → ${mb(after.heap)}; RSS ${mb(before!.rss)} → ${mb(after.rss)}`);

  assert.ok(sent >= 20_000, tag);
  assert.deepEqual(violations.slice(0, 5), [], `${tag}: every reply is an envelope with a catalogued code`);
  assert.ok(codes.get(ErrorCodes.MALFORMED_FRAME)! > 0 && codes.get(ErrorCodes.INVALID_MESSAGE)! > 0, `${tag}: the fuzz reached the parser and the schemas`);
  assert.ok(after.heap - before!.heap < 32 * MiB, `${tag}: heap grew ${mb(after.heap - before!.heap)} over the fuzz`);
  assert.ok(after.rss - before!.rss < 256 * MiB, `${tag}: RSS grew ${mb(after.rss - before!.rss)} over the fuzz`);

  // The node still serves a fresh client as before.
  const fresh = await GridClient.connect(n.node.url, { reconnect: { maxAttempts: 0 } });
  t.after(() => fresh.dispose());
  assert.equal(typeof (await fresh.socket.request('ping', {}) as { time: number }).time, 'number');
  assert.ok((await fresh.listModels()).some((m) => m.id === 'mlp'), `${tag}: the hosted model is still listed`);
});

// ---- one JSON limit for both frame kinds (#2) -----------------------------------------------------

/** `{"type":"ping","request_id":id,"data":[[[…]]]}` nested `depth` deep, as bytes. */
function nestedPing(id: string, depth: number): Buffer {
  return Buffer.from(`{"type":"ping","request_id":"${id}","data":${'['.repeat(depth)}${']'.repeat(depth)}}`);
}

/** Sends `frame` on `hostile` while `other` pings; returns the hostile reply and the slowest ping. */
async function refusedWhileOthersPing(hostile: RawClient, other: RawClient, frame: Buffer | string, binary: boolean): Promise<{ reply: Envelope; ms: number; slowestPing: number }> {
  let pinging = true;
  let slowestPing = 0;
  const pinger = (async () => {
    for (let i = 0; pinging; i++) {
      const t0 = performance.now();
      await other.request('ping', {}, `p${i}`, 30_000);
      slowestPing = Math.max(slowestPing, performance.now() - t0);
    }
  })();
  await other.request('ping', {}, 'warm');
  const t0 = performance.now();
  hostile.ws.send(frame, { binary });
  const reply = await hostile.next((m) => m.error !== undefined, 30_000);
  const ms = performance.now() - t0;
  pinging = false;
  await pinger;
  return { reply, ms, slowestPing };
}

test('#2 a binary MESSAGE frame obeys the same JSON limit as a text frame: an oversized envelope is refused from its header, another client keeps its pings', { timeout: 60_000 }, async (t) => {
  const n = await startTestNode();
  t.after(() => n.close());
  const hostile = await RawClient.open(n.node.url);
  const other = await RawClient.open(n.node.url);
  t.after(() => { hostile.terminate(); other.terminate(); });

  // 24 MiB of nested JSON inside a binary frame: parsed before the fix (seconds of a blocked node).
  const big = nestedPing('big', 12 * MiB);
  const r = await refusedWhileOthersPing(hostile, other, messageFrame(big), true);
  t.diagnostic(`24 MiB JSON in a MESSAGE frame refused in ${r.ms.toFixed(0)} ms; slowest concurrent ping ${r.slowestPing.toFixed(0)} ms`);
  assert.equal(codeOf(r.reply), ErrorCodes.PAYLOAD_TOO_LARGE);
  assert.match(r.reply.error!.message, /limit is 4194304 bytes/);
  assert.ok(r.slowestPing < 2000, `another client's ping waited ${r.slowestPing.toFixed(0)} ms`);

  // The same limit for text frames, and the connection stays usable.
  hostile.send(big.subarray(0, 5 * MiB).toString('latin1'));
  assert.equal(codeOf(await hostile.next((m) => m.error !== undefined)), ErrorCodes.PAYLOAD_TOO_LARGE);
  assert.equal(codeOf(await hostile.request('ping', {}, 'after')), undefined);
});

test('#2 deeply nested JSON is refused before parsing, in text and binary frames: MALFORMED_FRAME naming the depth limit, another client keeps its pings', { timeout: 60_000 }, async (t) => {
  const n = await startTestNode();
  t.after(() => n.close());
  const hostile = await RawClient.open(n.node.url);
  const other = await RawClient.open(n.node.url);
  t.after(() => { hostile.terminate(); other.terminate(); });

  // Just under the 4 MiB limit, 2 M levels deep: ~1 s of JSON.parse for everyone before the fix.
  const deep = nestedPing('deep', 2 * MiB - 40);
  assert.ok(deep.length <= 4 * MiB);
  for (const binary of [false, true]) {
    const r = await refusedWhileOthersPing(hostile, other, binary ? messageFrame(deep) : deep.toString('latin1'), binary);
    t.diagnostic(`${binary ? 'binary' : 'text'}: 4 MiB nested JSON refused in ${r.ms.toFixed(0)} ms; slowest concurrent ping ${r.slowestPing.toFixed(0)} ms`);
    assert.equal(codeOf(r.reply), ErrorCodes.MALFORMED_FRAME);
    assert.match(r.reply.error!.message, /nested deeper than this node's limit of 64 levels/);
    assert.ok(r.slowestPing < 1000, `another client's ping waited ${r.slowestPing.toFixed(0)} ms`);
  }
  // At the limit it is an ordinary message (a schema error here, not a frame error).
  hostile.send(nestedPing('ok', 62).toString());
  assert.equal(codeOf(await hostile.next((m) => m.request_id === 'ok')), ErrorCodes.INVALID_MESSAGE);
  // Brackets inside strings are text, not nesting.
  assert.equal(codeOf(await hostile.request('model-info', { model_id: '['.repeat(100) }, 'str')), ErrorCodes.INVALID_ID);
});

// ---- streams and unread replies per connection (#3) -----------------------------------------------

test('#3 a connection gets CONNECTION_LIMIT past its pending requests, naming the limit; once they are answered it takes requests again', { timeout: 60_000 }, async (t) => {
  const n = await startTestNode({ limits: { maxPendingRequests: 2 } });
  t.after(() => n.close());
  const c = await RawClient.open(n.node.url);
  t.after(() => c.terminate());
  // A password check takes tens of milliseconds (scrypt off the event loop): ten sent at once overlap.
  for (let i = 0; i < 10; i++) c.send({ type: 'authenticate', request_id: `a${i}`, data: { username: 'nobody', password: 'wrong' } });
  const replies = await Promise.all(Array.from({ length: 10 }, (_, i) => c.next((m) => m.request_id === `a${i}`)));
  const limited = replies.filter((m) => codeOf(m) === ErrorCodes.CONNECTION_LIMIT);
  assert.ok(limited.length >= 5, `only ${limited.length} of 10 overlapping requests were refused`);
  assert.match(limited[0]!.error!.message, /2 requests awaiting replies/);
  assert.ok(replies.some((m) => codeOf(m) === ErrorCodes.BAD_CREDENTIALS), 'the first ones were answered');
  // Once answered, the connection takes requests again.
  assert.equal(codeOf(await c.request('authenticate', { username: 'nobody', password: 'wrong' }, 'again')), ErrorCodes.BAD_CREDENTIALS);
});

test('#3 a connection gets CONNECTION_LIMIT past its open streams; cancelling one makes room', { timeout: 60_000 }, async (t) => {
  const n = await startTestNode({ limits: { maxStreams: 16 } });
  t.after(() => n.close());
  const c = await RawClient.open(n.node.url);
  t.after(() => c.terminate());
  for (let i = 0; i < 16; i++) c.send({ type: 'subscribe', request_id: `s${i}`, data: {} });
  // Repeating a request id does not get around the bound (it is counted per stream, not per id).
  c.send({ type: 'subscribe', request_id: 's0', data: {} });
  const refused = await c.next((m) => m.request_id === 's0' && m.error !== undefined);
  assert.equal(codeOf(refused), ErrorCodes.CONNECTION_LIMIT);
  assert.match(refused.error!.message, /16 open streams/);
  c.send({ type: 'cancel', data: { request_id: 's3' } });
  await c.request('ping', {}, 'p');
  c.send({ type: 'subscribe', request_id: 's16', data: {} });
  await c.request('ping', {}, 'p2');
  n.node.events.emit({ event: 'model-removed', model_id: 'm' });
  const ev = await c.next((m) => m.request_id === 's16');
  assert.equal(ev.stream, 'event');
  // Other clients are not affected by this one's streams.
  const other = await n.anonymous();
  assert.equal(typeof (await other.socket.request('ping', {}) as { time: number }).time, 'number');
});

test('#3 streams opened under a repeated request id all end when the client disconnects (none stays subscribed)', { timeout: 60_000 }, async (t) => {
  const n = await startTestNode();
  t.after(() => n.close());
  const c = await RawClient.open(n.node.url);
  for (let i = 0; i < 50; i++) c.send({ type: 'subscribe', request_id: 'same', data: {} });
  await c.request('ping', {}, 'p');
  assert.equal(n.node.events.subscriberCount, 50);
  c.terminate();
  await until('every subscription of the closed connection to end', () => n.node.events.subscriberCount === 0, 5000);
});

test('#3 a client that stops reading is disconnected once its unread replies pass the bound, and the node\'s memory stays bounded', { timeout: 60_000 }, async (t) => {
  const limit = 4 * MiB;
  const n = await startTestNode({ limits: { maxBufferedBytes: limit } });
  t.after(() => n.close());
  const reader = await n.anonymous();
  const sink = await RawClient.open(n.node.url, false);
  t.after(() => sink.terminate());
  for (let i = 0; i < 200; i++) sink.send({ type: 'subscribe', request_id: `s${i}`, data: {} });
  sink.send({ type: 'ping', request_id: 'sync-ready', data: {} });
  await sink.next((m) => m.request_id === 'sync-ready');
  sink.ws.pause(); // stops reading: the kernel buffers fill, then the node's
  const base = heapAfterGc();

  // Each event goes to 200 streams: ~0.8 MB of unread frames per event. 2,000 events would be 1.6 GB.
  const event = { event: 'model-removed' as const, model_id: 'x'.repeat(4000) };
  let emitted = 0;
  while (n.node.connectionCount > 1 && emitted < 2000) {
    n.node.events.emit(event);
    emitted++;
    await new Promise<void>((r) => setImmediate(r)); // let the socket write what it can
  }
  await until('the node to drop the non-reading client', () => n.node.connectionCount === 1, 10_000);
  t.diagnostic(`${emitted} events emitted (${mb(emitted * 200 * 4060)} for an unread connection); the node dropped it`);
  const after = heapAfterGc();
  t.diagnostic(`RSS ${mb(base.rss)} → ${mb(after.rss)}; heap ${mb(base.heap)} → ${mb(after.heap)}`);
  assert.ok(after.rss - base.rss < 128 * MiB, `RSS grew ${mb(after.rss - base.rss)}`);
  // Everyone else is served on.
  assert.ok(Array.isArray(await reader.listModels()));
  // What the client finds once it reads again: the close code and reason say why.
  sink.ws.resume();
  const closed = await Promise.race([sink.closed, new Promise<undefined>((r) => setTimeout(() => r(undefined), 5000))]);
  t.diagnostic(`the client saw close ${closed?.code} ${closed?.reason}`);
});

// ---- logs a client can cause (#12) ----------------------------------------------------------------

test('#12 a flood of malformed frames writes a few warn lines and then one summary with the count, not a line per frame', { timeout: 60_000 }, async (t) => {
  const lines: { level: string; obj: Record<string, unknown>; msg: string }[] = [];
  const at = (level: string) => (obj: object | string, msg?: string) => {
    lines.push({ level, obj: typeof obj === 'string' ? {} : obj as Record<string, unknown>, msg: typeof obj === 'string' ? obj : msg ?? '' });
  };
  const logger: Logger = { debug: at('debug'), info: at('info'), warn: at('warn'), error: at('error') };
  // One interval longer than any flood takes on a loaded machine: the summary comes when the connection
  // closes (a flood that outlasts an interval gets one summary per interval, the limiter's unit test).
  const n = await startTestNode({ logger, limits: { logLimit: { burst: 10, intervalMs: 600_000 } } });
  t.after(() => n.close());
  const c = await RawClient.open(n.node.url, false);
  t.after(() => c.terminate());
  for (let i = 0; i < 5000; i++) c.send('{not json');
  c.send({ type: 'ping', request_id: 'sync-flood', data: {} });
  await c.next((m) => m.request_id === 'sync-flood');
  const malformed = () => lines.filter((l) => l.level === 'warn' && l.obj.code === ErrorCodes.MALFORMED_FRAME);
  assert.equal(malformed().length, 10, 'the first 10 bad frames are logged, no more');
  c.terminate();
  await until('the summary line when the connection closes', () => malformed().some((l) => l.obj.suppressed !== undefined), 5000);
  const summary = malformed().find((l) => l.obj.suppressed !== undefined)!;
  assert.equal(summary.obj.suppressed, 4990);
  assert.equal(summary.obj.connection, malformed()[0]!.obj.connection);
  assert.match(summary.msg, /4990 more "GRID_ERR_MALFORMED_FRAME" lines suppressed/);
});
