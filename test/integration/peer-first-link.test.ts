// First uses of a node-to-node link from several requests at once (docs/smpc.md, peers.ts): they share
// one dial — the peer answers one identity challenge, not one per request — and all of them succeed;
// a dial that fails fails every waiter with its real coded cause, and the next use dials again; a link
// that drops while an upload is proving this node's id on it is replaced by a fresh one, not an error.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { WebSocketServer, type WebSocket } from 'ws';
import { GridClient } from '../../src/core/client';
import { GridError } from '../../src/core/errors';
import { encryptedModels, inferEncrypted, serveEncrypted } from '../../src/federation/smpc';
import { startTestNode, type TestNode } from '../helpers/node-fixtures';
import { startProxy } from '../helpers/proxy';

const MODEL = fs.readFileSync(join(__dirname, '../../media/samples/digits/digits-mlp.onnx'));

let holder0: TestNode, holder1: TestNode, provider: TestNode;
let c0: GridClient, c1: GridClient, cp: GridClient;

/** Identity challenges a node answered: one per dial another node made to it. */
async function proofsServed(n: TestNode): Promise<number> {
  const text = await (await fetch(`${n.node.url.replace(/^ws/, 'http')}/metrics`)).text();
  let total = 0;
  for (const m of text.matchAll(/^grid_node_requests_total\{type="prove-identity",code="[^"]+"\} (\d+)/gm)) total += Number(m[1]);
  return total;
}

before(async () => {
  [holder0, holder1, provider] = await Promise.all([startTestNode({ name: 'holder-0' }), startTestNode({ name: 'holder-1' }), startTestNode({ name: 'provider' })]);
  [c0, c1, cp] = await Promise.all([holder0.admin(), holder1.admin(), provider.admin()]);
});

after(async () => {
  for (const c of [c0, c1, cp]) c?.dispose();
  await Promise.all([holder0?.close(), holder1?.close(), provider?.close()]);
});

test('five encrypted-model uploads at once to holders never linked before all succeed over one link per peer', { timeout: 120_000 }, async () => {
  const ids = ['first-1', 'first-2', 'first-3', 'first-4', 'first-5'];
  const results = await Promise.allSettled(ids.map((id) => serveEncrypted(MODEL, {
    id, holders: [{ client: c0, url: holder0.node.url }, { client: c1, url: holder1.node.url }],
    provider: { client: cp, url: provider.node.url },
  })));
  const failed = results.flatMap((r, i) => r.status === 'rejected' ? [`${ids[i]}: ${r.reason instanceof GridError ? `${r.reason.code}: ${r.reason.message}` : String(r.reason)}`] : []);
  assert.deepEqual(failed, [], 'every upload succeeded');
  for (const c of [c0, c1]) assert.deepEqual((await encryptedModels(c)).map((m) => m.model_id).sort(), ids);
  // Holder 0 dialled holder 1 once: one link, one identity challenge, for all five.
  const peers = await c0.listPeers();
  assert.deepEqual(peers.filter((p) => p.id === holder1.node.identity.id).map((p) => p.status), ['open']);
  assert.equal(await proofsServed(holder1), 1, 'holder 1 answered one identity challenge from holder 0');
  const x = { dtype: 'float32' as const, dims: [1, 64], data: new Float32Array(64).fill(0.5) };
  const outs = await Promise.all(['first-1', 'first-5'].map((id) => inferEncrypted(id, x, { holders: [c0, c1] })));
  for (const out of outs) assert.deepEqual(out.dims, [1, 10]);
});

test('connect-node from several requests at once: a failed dial fails them all with its cause, and the next one dials again', { timeout: 60_000 }, async () => {
  const a = await startTestNode({ name: 'node-a' });
  const b = await startTestNode({ name: 'node-b' });
  const [ca, cb] = await Promise.all([a.admin(), b.admin()]);
  try {
    const before = await proofsServed(b);
    const wrong = await Promise.allSettled(Array.from({ length: 4 }, () => ca.connectNode(b.node.url, { id: 'not-node-b' })));
    for (const r of wrong) {
      assert.equal(r.status, 'rejected');
      assert.equal((r as PromiseRejectedResult).reason.code, 'GRID_ERR_PEER_UNVERIFIED');
    }
    assert.equal(await proofsServed(b) - before, 1, 'one dial for the four requests');
    const right = await Promise.all(Array.from({ length: 4 }, () => ca.connectNode(b.node.url, { id: b.node.identity.id })));
    assert.deepEqual(right.map((p) => p.status), ['open', 'open', 'open', 'open']);
    assert.equal(new Set(right.map((p) => p.connected_at)).size, 1, 'one link for the four requests');
    assert.equal(await proofsServed(b) - before, 2, 'the next use dialled again, once');
  } finally {
    ca.dispose();
    cb.dispose();
    await Promise.all([a.close(), b.close()]);
  }
});

test('a peer link that drops while an upload proves this node on it: the upload goes on over a fresh link', { timeout: 120_000 }, async () => {
  const nodes = await Promise.all([startTestNode({ name: 'h0' }), startTestNode({ name: 'h1' }), startTestNode({ name: 'p' })]);
  const [h0, h1, p] = nodes;
  // Holder 0 reaches holder 1 through a proxy that drops the link the first time holder 1 hands out an
  // attestation challenge, i.e. while holder 0 is proving its id on it.
  let armed = true;
  const proxy = await startProxy(Number(new URL(h1.node.url).port), '127.0.0.1', undefined, {
    fromNode: (chunk) => {
      if (armed && chunk.includes('"type":"node-challenge"')) { armed = false; proxy.cut(); }
      return chunk;
    },
  });
  const [a0, a1, ap] = await Promise.all(nodes.map((n) => n.admin()));
  try {
    await serveEncrypted(MODEL, {
      id: 'through-a-drop', holders: [{ client: a0, url: h0.node.url }, { client: a1, url: `ws://127.0.0.1:${proxy.port}` }],
      provider: { client: ap, url: p.node.url },
    });
    assert.equal(armed, false, 'the link dropped mid-attestation');
    assert.deepEqual((await encryptedModels(a1)).map((m) => m.model_id), ['through-a-drop']);
    const out = await inferEncrypted('through-a-drop', { dtype: 'float32', dims: [1, 64], data: new Float32Array(64).fill(0.5) }, { holders: [a0, a1] });
    assert.deepEqual(out.dims, [1, 10]);
  } finally {
    for (const c of [a0, a1, ap]) c.dispose();
    await Promise.all(nodes.map((n) => n.close()));
    await proxy.close();
  }
});

test('connect-node from several requests at once: one cancelled leaves the shared dial to the others; all cancelled stops it', { timeout: 60_000 }, async () => {
  // A stand-in peer that holds the identity challenge until the test answers it (with an error).
  const wss = new WebSocketServer({ port: 0, host: '127.0.0.1' });
  await once(wss, 'listening');
  const held: { ws: WebSocket; request_id: string }[] = [];
  let heard: (() => void) | undefined;
  let closed = 0;
  wss.on('connection', (ws) => {
    ws.on('error', () => {});
    ws.on('close', () => { closed++; heard?.(); });
    ws.on('message', (raw) => {
      const env = JSON.parse(String(raw)) as { type: string; request_id: string };
      if (env.type === 'prove-identity') { held.push({ ws, request_id: env.request_id }); heard?.(); }
    });
  });
  const until = async (pred: () => boolean) => { while (!pred()) await new Promise<void>((r) => { heard = r; }); };
  const url = `ws://127.0.0.1:${(wss.address() as AddressInfo).port}`;
  const a = await startTestNode({ name: 'node-a' });
  const ca = await a.admin();
  try {
    const cancel = new AbortController();
    const cancelled = ca.connectNode(url, { signal: cancel.signal });
    const kept = ca.connectNode(url);
    await until(() => held.length === 1);
    await ca.listPeers(); // answered after both connect-node requests joined the dial
    cancel.abort();
    await assert.rejects(cancelled, { code: 'GRID_ERR_ABORTED' });
    await ca.listPeers(); // the node has handled the cancel
    assert.equal(closed, 0, 'the dial goes on for the request still waiting');
    const [{ ws, request_id }] = held as [{ ws: WebSocket; request_id: string }];
    ws.send(JSON.stringify({ type: 'prove-identity', request_id, error: { code: 'GRID_ERR_UNKNOWN_TYPE', message: 'unknown type prove-identity' } }));
    await assert.rejects(kept, { code: 'GRID_ERR_PEER_UNVERIFIED' });
    assert.equal(held.length, 1, 'one dial for both requests');

    // Both requests cancelled: nobody waits, the node hangs up on the peer.
    const both = [new AbortController(), new AbortController()];
    const calls = both.map((c) => ca.connectNode(url, { signal: c.signal }));
    await until(() => held.length === 2);
    await ca.listPeers();
    const closedBefore = closed;
    for (const c of both) c.abort();
    for (const call of calls) await assert.rejects(call, { code: 'GRID_ERR_ABORTED' });
    await until(() => closed > closedBefore);
    assert.equal(held.length, 2, 'still one dial for the two requests');
  } finally {
    ca.dispose();
    await a.close();
    for (const c of wss.clients) c.terminate();
    await new Promise<void>((resolve) => wss.close(() => resolve()));
  }
});
