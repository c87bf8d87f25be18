// An encrypted model's life after upload (docs/smpc.md "Lifecycle"): a share holder restarted on its data
// dir still serves it (and still refuses shares from different uploads); its owner deletes it from both
// holders with `grid delete`, which the tree hears as events; a user's models and bytes on a holder are
// bounded; a cancelled query frees both holders and the provider's randomness; the provider deals only
// for uploads it knows, without stalling the node while it deals.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { loadModel } from '../../src/compute/backend';
import { compileSmpcModel, paramCount, scheduleOf } from '../../src/compute/smpc';
import { GridClient } from '../../src/core/client';
import { ErrorCodes, GridError } from '../../src/core/errors';
import type { NodeEvent } from '../../src/core/protocol/messages';
import type { Tensor } from '../../src/core/protocol/tensor';
import { SmpcDeal, SmpcHostShare } from '../../src/core/protocol/smpc-messages';
import { deleteEncrypted, encryptedModelInfo, encryptedModels, inferEncrypted, serveEncrypted } from '../../src/federation/smpc';
import { runGrid } from '../../src/cli/grid';
import { attest } from '../../src/node/smpc/attest';
import { ADMIN_PASSWORD, startTestNode, tempDir, type TestNode } from '../helpers/node-fixtures';
import { startProxy, type CuttableProxy } from '../helpers/proxy';

const MODEL = fs.readFileSync(join(__dirname, '../../media/samples/digits/digits-mlp.onnx'));
const PARAMS = paramCount(compileSmpcModel(MODEL).plan);
const single = { intraOpNumThreads: 1 };

const dirs = [tempDir('grid-smpc-h0-'), tempDir('grid-smpc-h1-'), tempDir('grid-smpc-p-')];
let holder0: TestNode, holder1: TestNode, provider: TestNode;
let c0: GridClient, c1: GridClient, cp: GridClient;
/** The provider as the holders reach it: through a proxy that lets a test act when a deal is answered. */
let proxy: CuttableProxy;
let onDealt: (() => void) | undefined;

const holderOptions = { maxModelsPerOwner: 3, maxBytesPerOwner: 1 << 20, maxQueries: 1 };
const providerOptions = { provider: { maxBundles: 1 } };

function rows(n: number, seed = 0): Tensor<'float32'> {
  return { dtype: 'float32', dims: [n, 64], data: Float32Array.from({ length: n * 64 }, (_, i) => ((i * 7 + seed) % 17) / 16) };
}

async function plain(x: Tensor<'float32'>): Promise<Float32Array> {
  const h = await loadModel(MODEL, single);
  try {
    return (await h.run({ input: x })).logits!.data as Float32Array;
  } finally {
    await h.dispose();
  }
}

function maxAbs(a: Float32Array, b: Float32Array): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

function serve(id: string, clients: [GridClient, GridClient] = [c0, c1]) {
  return serveEncrypted(MODEL, {
    id, holders: [{ client: clients[0], url: holder0.node.url }, { client: clients[1], url: holder1.node.url }],
    provider: { client: cp, url: `ws://127.0.0.1:${proxy.port}` },
  });
}

async function grid(args: string[]): Promise<{ code: number; out: string; err: string }> {
  const out = new PassThrough(), err = new PassThrough();
  let o = '', e = '';
  out.on('data', (d: Buffer) => { o += d; });
  err.on('data', (d: Buffer) => { e += d; });
  const code = await runGrid(['node', 'grid', '--user', 'admin', '--password', ADMIN_PASSWORD, ...args], out, err);
  return { code, out: o, err: e };
}

/** The next event on `client`'s smpc topic that `match` accepts. */
function nextEvent(client: GridClient, match: (ev: NodeEvent) => boolean): { seen: Promise<NodeEvent>; subscribed: Promise<void> } {
  const controller = new AbortController();
  const stream = client.subscribe(['smpc'], { signal: controller.signal });
  const seen = new Promise<NodeEvent>((resolve, reject) => {
    // Bounded, so a missing event fails the test instead of hanging it.
    const timer = setTimeout(() => { controller.abort(); reject(new Error('no such smpc event within 60 s')); }, 60_000);
    stream.subscribe({
      next: (ev) => { if (match(ev)) { clearTimeout(timer); controller.abort(); resolve(ev); } },
      error: (err) => { if (err.code !== ErrorCodes.ABORTED) { clearTimeout(timer); reject(err); } },
    });
  });
  // The stream's first frame comes only with an event: a get-id round trip after it on the same socket
  // is answered after the node registered the subscription.
  return { seen, subscribed: client.getId().then(() => undefined) };
}

before(async () => {
  // One bundle at a time (pooled ones aside): a bundle a cancelled query left behind would refuse the next query.
  provider = await startTestNode({ name: 'provider', dataDir: dirs[2], smpc: providerOptions });
  proxy = await startProxy(Number(new URL(provider.node.url).port), '127.0.0.1', undefined, {
    fromNode: (chunk) => {
      if (onDealt !== undefined && chunk.includes('"smpc-deal"')) { const f = onDealt; onDealt = undefined; f(); }
      return chunk;
    },
  });
  [holder0, holder1] = await Promise.all([
    startTestNode({ name: 'holder-0', dataDir: dirs[0], smpc: holderOptions }),
    startTestNode({ name: 'holder-1', dataDir: dirs[1], smpc: holderOptions }),
  ]);
  [c0, c1, cp] = await Promise.all([holder0.admin(), holder1.admin(), provider.admin()]);
});

after(async () => {
  await Promise.all([holder0?.close(), holder1?.close(), provider?.close()]);
  await proxy?.close();
  for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
});

test('a share holder and the crypto provider restarted on their data dirs still hold the share and the upload and serve the model; shares of different uploads stay refused', async (t) => {
  await serve('durable');
  const x = rows(3);
  const before = await inferEncrypted('durable', x, { holders: [c0, c1] });
  assert.ok(maxAbs(before.data, await plain(x)) < 1e-2);
  // A pairing of two different uploads under one id (party 0 and 1 with different pair tags).
  const info0 = await encryptedModelInfo(c0, 'durable');
  const { plan } = compileSmpcModel(MODEL);
  const nonce = randomBytes(16).toString('hex');
  await c0.socket.request(SmpcHostShare, { model_id: 'split', party: 0, pair_tag: 'a'.repeat(32), mask_nonce: nonce, plan, peer: info0.peer, provider: info0.provider }, { attachment: new Uint8Array(PARAMS * 8) });
  await c1.socket.request(SmpcHostShare, { model_id: 'split', party: 1, pair_tag: 'b'.repeat(32), mask_nonce: nonce, plan, peer: { id: holder0.node.identity.id, address: holder0.node.url }, provider: info0.provider }, { attachment: new Uint8Array(PARAMS * 8) });
  const pairTag = (await encryptedModelInfo(c1, 'durable')).pair_tag;

  // Stop holder 1 and the provider, and start them again on their data dirs and ports (the others know
  // them by those addresses): the provider still knows the upload it deals for.
  const port = Number(new URL(holder1.node.url).port);
  const providerPort = Number(new URL(provider.node.url).port);
  await Promise.all([holder1.close(), provider.close()]);
  [holder1, provider] = await Promise.all([
    startTestNode({ name: 'holder-1', dataDir: dirs[1], port, smpc: holderOptions }),
    startTestNode({ name: 'provider', dataDir: dirs[2], port: providerPort, smpc: providerOptions }),
  ]);
  [c1, cp] = await Promise.all([holder1.admin(), provider.admin()]);
  assert.deepEqual((await encryptedModels(c1)).map((m) => m.model_id).sort(), ['durable', 'split']);
  assert.equal((await encryptedModelInfo(c1, 'durable')).pair_tag, pairTag, 'the pairing survives the restart');
  const started = performance.now();
  const after = await inferEncrypted('durable', x, { holders: [c0, c1] });
  t.diagnostic(`first query after the restart (opens W − B again): ${(performance.now() - started).toFixed(0)} ms`);
  assert.ok(maxAbs(after.data, await plain(x)) < 1e-2, 'the restarted holder answers like before');
  await assert.rejects(inferEncrypted('split', x, { holders: [c0, c1] }), (e: unknown) => e instanceof GridError && e.code === ErrorCodes.SMPC_SHARES_MISMATCH);
  await deleteEncrypted('split', [c0, c1]);
  await deleteEncrypted('durable', [c0, c1]);
});

test('grid delete removes an encrypted model from both share holders, and the holders announce it; a user is bounded in how many they place', async () => {
  // The owner: a plain user on both holders.
  for (const c of [c0, c1]) await c.addUser('alice', 'alice-password-1234');
  const alice = await Promise.all([holder0, holder1].map((h) => GridClient.connect(h.node.url, { reconnect: { maxAttempts: 0 }, credentials: { username: 'alice', password: 'alice-password-1234' } }))) as [GridClient, GridClient];
  try {
    const added = nextEvent(c1, (ev) => ev.event === 'smpc-model-added' && ev.model.model_id === 'alice-1');
    await added.subscribed;
    await serve('alice-1', alice);
    const ev = await added.seen;
    assert.equal(ev.event === 'smpc-model-added' && ev.model.owner, 'alice');
    await serve('alice-2', alice);
    await serve('alice-3', alice);
    await assert.rejects(serve('alice-4', alice), (e: unknown) => e instanceof GridError && e.code === ErrorCodes.QUOTA_EXCEEDED && /3 encrypted models of alice/.test(e.message));
    assert.deepEqual((await encryptedModels(c0)).map((m) => m.model_id).sort(), ['alice-1', 'alice-2', 'alice-3'], 'the refused upload left nothing on holder 0');
    // Another user's quota is their own.
    await serve('admin-1');
    // Only the owner or an admin deletes.
    const bob = await (async () => {
      await c0.addUser('bob', 'bob-password-12345');
      return GridClient.connect(holder0.node.url, { reconnect: { maxAttempts: 0 }, credentials: { username: 'bob', password: 'bob-password-12345' } });
    })();
    try {
      await assert.rejects(deleteEncrypted('alice-1', [bob]), (e: unknown) => e instanceof GridError && e.code === ErrorCodes.FORBIDDEN && /belongs to alice/.test(e.message));
    } finally {
      bob.dispose();
    }
    // grid delete, asked of holder 1, deletes from both; holder 0 announces it.
    const removed = nextEvent(c0, (e) => e.event === 'smpc-model-removed' && e.model_id === 'alice-1');
    await removed.subscribed;
    const r = await runGrid(['node', 'grid', '--user', 'alice', '--password', 'alice-password-1234', '--node', holder1.node.url, '--json', 'delete', 'alice-1'], new PassThrough(), new PassThrough());
    assert.equal(r, 0);
    await removed.seen;
    for (const c of [c0, c1]) assert.ok(!(await encryptedModels(c)).some((m) => m.model_id === 'alice-1'));
    await assert.rejects(inferEncrypted('alice-1', rows(1), { holders: alice }), (e: unknown) => e instanceof GridError && e.code === ErrorCodes.NOT_FOUND);
    // Bytes too (alice holds 2 models now): a wide layer (64 × 4096 weights: 4 MiB of share with its mask) is over alice's 1 MiB.
    for (const [i, c] of alice.entries()) {
      const wide = { input: { name: 'x', shape: [64] }, output: { name: 'y', shape: [4096] }, layers: [{ op: 'linear' as const, in: 64, out: 4096, weight: 0 }], params: [{ name: 'w', size: 64 * 4096 }] };
      const other = i === 0 ? holder1 : holder0;
      const refs = { peer: { id: other.node.identity.id, address: other.node.url }, provider: { id: provider.node.identity.id, address: provider.node.url } };
      await assert.rejects(
        c.socket.request(SmpcHostShare, { model_id: 'alice-wide', party: i as 0 | 1, pair_tag: 'e'.repeat(32), mask_nonce: 'f'.repeat(32), plan: wide, ...refs }, { attachment: new Uint8Array(64 * 4096 * 8) }),
        (e: unknown) => e instanceof GridError && e.code === ErrorCodes.QUOTA_EXCEEDED && /bytes of encrypted model shares of alice/.test(e.message),
      );
    }
    // The freed place takes a new model.
    await serve('alice-4', alice);
    const again = await grid(['--node', holder0.node.url, 'delete', 'no-such-model']);
    assert.notEqual(again.code, 0);
    assert.match(again.err, /GRID_ERR_NOT_FOUND/);
    for (const id of ['alice-2', 'alice-3', 'alice-4', 'admin-1']) await deleteEncrypted(id, [c0, c1]);
  } finally {
    for (const c of alice) c.dispose();
  }
});

test('a cancelled encrypted query frees both share holders and the randomness the provider reserved for it', async () => {
  await serve('cancel-me');
  const x = rows(256, 3);
  const controller = new AbortController();
  // Cancelled once the provider has answered a deal: the holders are mid-query.
  onDealt = () => controller.abort();
  await assert.rejects(
    inferEncrypted('cancel-me', x, { holders: [c0, c1], signal: controller.signal }),
    (e: unknown) => e instanceof GridError && e.code === ErrorCodes.ABORTED && /cancelled/.test(e.message),
  );
  assert.equal(onDealt, undefined, 'the query was cancelled mid-flight');
  // Each holder runs one query at a time (maxQueries 1) and the provider keeps one bundle (maxBundles 1):
  // any state left by the cancelled query would refuse the next with GRID_ERR_BUSY.
  const y = await inferEncrypted('cancel-me', x, { holders: [c0, c1] });
  assert.ok(maxAbs(y.data, await plain(x)) < 1e-2);
  await deleteEncrypted('cancel-me', [c0, c1]);
});

test('the crypto provider deals only for uploads it knows, to their holders, without stalling the node', async () => {
  // An upload with a nonce the test knows (the shares' values do not matter to the provider).
  const { plan } = compileSmpcModel(MODEL);
  const nonce = randomBytes(16).toString('hex');
  const pairTag = randomBytes(16).toString('hex');
  const provider_ = { id: provider.node.identity.id, address: `ws://127.0.0.1:${proxy.port}` };
  await Promise.all([
    c0.socket.request(SmpcHostShare, { model_id: 'known', party: 0, pair_tag: pairTag, mask_nonce: nonce, plan, peer: { id: holder1.node.identity.id, address: holder1.node.url }, provider: provider_ }, { attachment: new Uint8Array(PARAMS * 8) }),
    c1.socket.request(SmpcHostShare, { model_id: 'known', party: 1, pair_tag: pairTag, mask_nonce: nonce, plan, peer: { id: holder0.node.identity.id, address: holder0.node.url }, provider: provider_ }, { attachment: new Uint8Array(PARAMS * 8) }),
  ]);
  // A connection to the provider that proves holder 0's identity, as holder 0 would.
  const asHolder0 = await GridClient.connect(provider.node.url, { reconnect: { enabled: false } });
  try {
    await attest(asHolder0.socket, holder0.node.identity, provider.node.identity.id, 10_000);
    const deal = (o: { mask_nonce?: string; peer_id?: string; m?: number; masked?: boolean }) => asHolder0.socket.call(SmpcDeal, {
      bundle_id: randomBytes(16).toString('hex'), party: 0, peer_id: o.peer_id ?? holder1.node.identity.id,
      schedule: scheduleOf(plan, o.m ?? 1, o.masked ?? true),
      ...(o.mask_nonce !== undefined && { mask_nonce: o.mask_nonce }),
    });
    const unknown = (what: string) => (e: unknown) => {
      assert.ok(e instanceof GridError && e.code === ErrorCodes.SMPC_UNKNOWN_UPLOAD, `${what}: ${String(e)}`);
      return true;
    };
    await assert.rejects(deal({ mask_nonce: randomBytes(16).toString('hex') }), unknown('a made-up upload'));
    await assert.rejects(deal({}), unknown('no upload named'));
    await assert.rejects(deal({ mask_nonce: nonce, peer_id: provider.node.identity.id }), unknown('another holder pair'));
    await assert.rejects(deal({ mask_nonce: nonce, masked: false }), unknown('products by weights the upload does not have'));
    // A large deal it may make is dealt in slices: the node answers others meanwhile. The get-id goes on
    // the same connection, right behind the deal, so it reaches the provider after the deal started.
    let bigDone = false;
    const t0 = performance.now();
    const big = deal({ mask_nonce: nonce, m: 4096 }).finally(() => { bigDone = true; });
    await asHolder0.getId();
    const answered = performance.now() - t0;
    assert.equal(bigDone, false, 'get-id was answered before the large deal finished');
    const dealt = await big;
    const dealMs = performance.now() - t0;
    process.stdout.write(`# get-id answered in ${answered.toFixed(1)} ms while a 4096-row deal was under way (the deal took ${dealMs.toFixed(0)} ms)\n`);
    // Dealt at once, the get-id would wait for nearly all of it.
    assert.ok(answered < dealMs / 2, `get-id waited ${answered.toFixed(0)} ms of the deal's ${dealMs.toFixed(0)} ms`);
    assert.ok(dealt.attachment !== undefined && dealt.attachment.length > 4096 * 64 * 8);
    // Deleted: the provider deals no more for it.
    await deleteEncrypted('known', [c0, c1]);
    await assert.rejects(deal({ mask_nonce: nonce }), unknown('a deleted upload'));
  } finally {
    asHolder0.dispose();
  }
});
