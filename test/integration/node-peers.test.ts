// Node-to-node links (connect-node / list-peers) between two real nodes, with the events a view sees.

import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import { WebSocketServer, type WebSocket } from 'ws';
import { GetId, ProveIdentity, type NodeEvent } from '../../src/core/protocol/messages';
import type { RequestOf } from '../../src/core/protocol/catalogue';
import { GridSocket } from '../../src/core/socket/grid-socket';
import { GridError } from '../../src/core/errors';
import type { Logger } from '../../src/core/logger';
import { GridClient } from '../../src/core/client';
import { GridNode, type GridNodeOptions } from '../../src/node/server';
import { nodeIdOf } from '../../src/node/identity';
import { EmbeddedStore } from '../../src/node/store/db';
import { startTestNode, tempDir, ADMIN_PASSWORD, type TestNode } from '../helpers/node-fixtures';

const ON_POSTGRES = process.env.GRID_TEST_DATABASE === 'postgres';
/** Replicas on one PostgreSQL database share the node key kept in it (identity.ts); there is no <data-dir>/node.key to lose. */
const KEY_IN_DATABASE = 'on PostgreSQL the node key is kept in the database (shared by replicas), not in <data-dir>/node.key';

test('connect-node links two nodes; list-peers shows it; subscribers hear connected and disconnected', async (t) => {
  const a = await startTestNode({ name: 'node-a' });
  t.after(() => a.close());
  const b = await startTestNode({ name: 'node-b' });
  let bClosed = false;
  t.after(async () => { if (!bClosed) await b.close(); });
  const watcher = await a.anonymous();
  const events: NodeEvent[] = [];
  let wake: (() => void) | undefined;
  watcher.subscribe(['peers']).subscribe({ next: (ev) => { events.push(ev); wake?.(); } });
  const until = async (n: number) => { while (events.length < n) await new Promise<void>((r) => { wake = r; }); };
  await watcher.getId();

  const c = await a.admin();
  const bId = (await (await b.anonymous()).getId()).id;
  const peer = await c.connectNode(b.node.url, { id: bId, auth: { username: 'admin', password: ADMIN_PASSWORD } });
  assert.deepEqual({ id: peer.id, name: peer.name, address: peer.address, status: peer.status }, { id: bId, name: 'node-b', address: b.node.url, status: 'open' });
  assert.deepEqual((await watcher.listPeers()).map((p) => p.id), [bId]);
  // Connecting again to the same address returns the existing link (if it is the node named).
  assert.equal((await c.connectNode(b.node.url)).connected_at, peer.connected_at);
  await assert.rejects(c.connectNode(b.node.url, { id: 'another-node' }), { code: 'GRID_ERR_PEER_UNVERIFIED' });
  await until(1);
  assert.equal(events[0]!.event, 'peer-connected');

  await b.close();
  bClosed = true;
  await until(2);
  assert.equal(events[1]!.event, 'peer-disconnected');
  assert.notEqual((await watcher.listPeers())[0]!.status, 'open');
});

test('connect-node reports an unreachable address, a wrong id and refused credentials', async (t) => {
  const a = await startTestNode();
  t.after(() => a.close());
  const b = await startTestNode();
  t.after(() => b.close());
  const c = await a.admin();
  await assert.rejects(c.connectNode('http://example.invalid'), { code: 'GRID_ERR_INVALID_URL' });
  const closed = await startTestNode();
  const deadUrl = closed.node.url;
  await closed.close();
  await assert.rejects(c.connectNode(deadUrl), (e: GridError) => e.code === 'GRID_ERR_NOT_CONNECTED' && e.message.includes(deadUrl));
  await assert.rejects(c.connectNode(b.node.url, { id: 'not-its-id' }), (e: GridError) => e.code === 'GRID_ERR_PEER_UNVERIFIED' && /not-its-id/.test(e.message));
  await assert.rejects(c.connectNode(b.node.url, { auth: { username: 'admin', password: 'wrong-password' } }), (e: GridError) =>
    e.code === 'GRID_ERR_BAD_CREDENTIALS' && e.message.includes(b.node.url));
  assert.deepEqual(await c.listPeers(), []);
});

// ---- identity: only an admin links nodes, and only a peer that proves its id is linked (issue 11, defect 8)

type Env = { type: string; request_id?: string; data?: Record<string, unknown> };

/** A raw `ws` server standing in for a node; `answer` sees every JSON message it gets. */
async function fakePeer(t: TestContext, answer: (env: Env, ws: WebSocket) => void): Promise<{ url: string; connections(): number }> {
  const wss = new WebSocketServer({ port: 0, host: '127.0.0.1' });
  await once(wss, 'listening');
  let connections = 0;
  wss.on('connection', (ws) => {
    connections++;
    ws.on('error', () => {});
    ws.on('message', (raw, isBinary) => {
      if (isBinary) return;
      let env: Env;
      try { env = JSON.parse(String(raw)) as Env; } catch { return; }
      answer(env, ws);
    });
  });
  t.after(() => new Promise<void>((resolve) => { for (const c of wss.clients) c.terminate(); wss.close(() => resolve()); }));
  return { url: `ws://127.0.0.1:${(wss.address() as AddressInfo).port}`, connections: () => connections };
}

const reply = (ws: WebSocket, env: Env, data: unknown) => ws.send(JSON.stringify({ type: env.type, request_id: env.request_id, data }));

/** Collects what arrives and lets a test wait for a condition on it (bounded by the test's timeout). */
function collector<T>() {
  const items: T[] = [];
  let wake: (() => void) | undefined;
  return {
    items,
    push(x: T) { items.push(x); wake?.(); },
    async until(pred: (items: T[]) => boolean) { while (!pred(items)) await new Promise<void>((r) => { wake = r; }); },
  };
}

/** A logger that hands warnings to the test, so it can wait for "the redial was refused". */
function warnings() {
  const seen = collector<{ code?: unknown; msg: string }>();
  const noop = () => {};
  const logger: Logger = { debug: noop, info: noop, error: noop, warn: (obj, msg) => seen.push({ ...(typeof obj === 'object' ? obj : {}), msg: msg ?? String(obj) }) };
  return { logger, seen };
}

async function tempNode(t: TestContext, opts: GridNodeOptions = {}): Promise<TestNode & { restart(more?: GridNodeOptions): Promise<TestNode> }> {
  const dir = opts.dataDir ?? tempDir();
  if (opts.dataDir === undefined) t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  let current = await startTestNode({ ...opts, dataDir: dir });
  t.after(() => current.close());
  const port = current.node.port;
  return {
    get node() { return current.node; }, dir,
    admin: () => current.admin(), anonymous: () => current.anonymous(), close: () => current.close(),
    // Same data dir, same port: to its peers, the same address.
    async restart(more: GridNodeOptions = {}) { current = await startTestNode({ ...opts, ...more, dataDir: dir, port }); return current; },
  };
}

test('connect-node needs the admin role: a signed-in user is refused, and nothing is dialled', { timeout: 30_000 }, async (t) => {
  const a = await tempNode(t);
  const fake = await fakePeer(t, () => {});
  await (await a.admin()).addUser('alice', 'alice password 1234');
  const alice = await GridClient.connect(a.node.url, { reconnect: { maxAttempts: 0 }, credentials: { username: 'alice', password: 'alice password 1234' } });
  t.after(() => alice.dispose());
  await assert.rejects(alice.connectNode(fake.url), (e: GridError) => e.code === 'GRID_ERR_FORBIDDEN' && /admin role/.test(e.message) && e.message.includes('alice'));
  assert.equal(fake.connections(), 0);
  assert.deepEqual(await alice.listPeers(), []);
});

test("a server claiming a linked node's id cannot prove it, is refused, and the admin's link stays", { timeout: 30_000 }, async (t) => {
  const a = await tempNode(t);
  const b = await tempNode(t, { name: 'node-b' });
  const admin = await a.admin();
  const bWho = await (await b.anonymous()).getId();
  assert.match(bWho.public_key ?? '', /^[A-Za-z0-9_-]{43}$/);
  const link = await admin.connectNode(b.node.url, { id: bWho.id });

  // Ways of claiming B without B's private key: not answering the challenge, a made-up signature over
  // B's (public) key, a valid signature by a key of its own.
  const own = crypto.generateKeyPairSync('ed25519');
  const ownKey = (own.publicKey.export({ format: 'jwk' }) as { x: string }).x;
  const proofs: Record<string, (env: Env) => unknown> = {
    'no proof': () => undefined,
    'a made-up signature': () => ({ id: bWho.id, public_key: bWho.public_key, signature: crypto.randomBytes(64).toString('base64url') }),
    'its own key': (env) => ({
      id: bWho.id, public_key: ownKey,
      signature: crypto.sign(null, Buffer.from(`grid-node-proof/v1\n${String(env.data!.challenge)}\n${bWho.id}\n${String(env.data!.verifier_id)}`), own.privateKey).toString('base64url'),
    }),
  };
  for (const [how, proof] of Object.entries(proofs)) {
    const fake = await fakePeer(t, (env, ws) => {
      if (env.type === 'get-id') reply(ws, env, { ...bWho, name: 'node-b' });
      else if (env.type === 'prove-identity' && proof(env) !== undefined) reply(ws, env, proof(env));
      else ws.send(JSON.stringify({ type: env.type, request_id: env.request_id, error: { code: 'GRID_ERR_UNKNOWN_TYPE', message: `unknown type ${env.type}` } }));
    });
    for (const id of [undefined, bWho.id]) {
      await assert.rejects(admin.connectNode(fake.url, { ...(id !== undefined && { id }) }), (e: GridError) =>
        e.code === 'GRID_ERR_PEER_UNVERIFIED' && e.message.includes(fake.url), how);
    }
    assert.ok(fake.connections() > 0, `${how}: the node dialled the fake`);
  }
  const peers = await admin.listPeers();
  assert.deepEqual(peers.map((p) => ({ id: p.id, address: p.address, status: p.status, connected_at: p.connected_at })),
    [{ id: bWho.id, address: b.node.url, status: 'open', connected_at: link.connected_at }]);
});

test('a peer that sends garbage or a frame over the limit is refused, and the node keeps serving', { timeout: 30_000 }, async (t) => {
  const a = await tempNode(t, { maxPayload: 1024 * 1024 });
  const b = await tempNode(t);
  const admin = await a.admin();
  const garbage = await fakePeer(t, (_env, ws) => ws.send('}{ not json'));
  const binary = await fakePeer(t, (_env, ws) => ws.send(crypto.randomBytes(64)));
  // Relays B's real proof, padded to 2 MiB: a valid proof, but over the 1 MiB A accepts from its clients.
  const toB = new GridSocket();
  t.after(() => toB.dispose());
  await toB.connect(b.node.url, { heartbeatMs: 0 }, { enabled: false });
  const huge = await fakePeer(t, (env, ws) => {
    void (async () => {
      const data = env.type === 'prove-identity' ? await toB.request(ProveIdentity, env.data as RequestOf<typeof ProveIdentity>) : await toB.request(GetId, undefined);
      reply(ws, env, { ...data, pad: 'x'.repeat(2 * 1024 * 1024) });
    })();
  });
  for (const fake of [garbage, binary, huge]) {
    const started = performance.now();
    await assert.rejects(admin.connectNode(fake.url), (e: GridError) => e.code === 'GRID_ERR_PEER_UNVERIFIED' && e.message.includes(fake.url));
    // Refused on the bad frame, not after the 10 s identity timeout.
    assert.ok(performance.now() - started < 5000, `refused after ${Math.round(performance.now() - started)} ms`);
  }
  assert.equal((await admin.getId()).id, a.node.identity.id);
  assert.deepEqual(await admin.listPeers(), []);
});

test('a node cannot link to itself', { timeout: 30_000 }, async (t) => {
  const a = await tempNode(t);
  await assert.rejects((await a.admin()).connectNode(a.node.url), (e: GridError) => e.code === 'GRID_ERR_INVALID_MESSAGE' && /cannot link to itself/.test(e.message));
});

test('the node key: created 0600 on first start, the id derived from it, both kept across restarts', { timeout: 30_000, skip: ON_POSTGRES && KEY_IN_DATABASE }, async (t) => {
  const a = await tempNode(t);
  const keyFile = path.join(a.dir, 'node.key');
  if (process.platform !== 'win32') assert.equal(fs.statSync(keyFile).mode & 0o777, 0o600);
  const who = await (await a.anonymous()).getId();
  assert.equal(who.id, a.node.identity.id);
  assert.equal(who.id, nodeIdOf(who.public_key!));
  await a.close();
  const again = await a.restart();
  assert.deepEqual(await (await again.anonymous()).getId().then((w) => [w.id, w.public_key]), [who.id, who.public_key]);
  // Replicas share one identity through keyFile (never created by the node).
  const replica = await tempNode(t, { keyFile });
  assert.equal(replica.node.identity.id, who.id);
  const elsewhere = tempDir();
  t.after(() => fs.rmSync(elsewhere, { recursive: true, force: true }));
  await assert.rejects(GridNode.start({ port: 0, dataDir: elsewhere, keyFile: path.join(a.dir, 'missing.key'), adminPassword: ADMIN_PASSWORD, processMetrics: false }),
    (e: GridError) => e.code === 'GRID_ERR_NOT_FOUND' && e.message.includes('missing.key'));
});

test('a linked node is verified again when it comes back; with another key it is refused', { timeout: 60_000, skip: ON_POSTGRES && KEY_IN_DATABASE }, async (t) => {
  const { logger, seen } = warnings();
  const a = await tempNode(t, { logger });
  const b = await tempNode(t, { name: 'node-b' });
  const bId = b.node.identity.id;
  const admin = await a.admin();
  const events = collector<NodeEvent>();
  admin.subscribe(['peers']).subscribe({ next: (ev) => events.push(ev) });
  await admin.listPeers(); // the subscription is in place
  await admin.connectNode(b.node.url, { id: bId, auth: { username: 'admin', password: ADMIN_PASSWORD } });
  await events.until((e) => e.length === 1);

  // Same data dir, same key: the same id, proven again; the link comes back by itself.
  await b.close();
  await events.until((e) => e.length === 2);
  await b.restart();
  await events.until((e) => e.length === 3);
  assert.deepEqual(events.items.map((e) => e.event), ['peer-connected', 'peer-disconnected', 'peer-connected']);
  assert.deepEqual((await admin.listPeers()).map((p) => [p.id, p.status]), [[bId, 'open']]);

  // node.key lost: B comes back as another node, and A's link to B's id refuses it.
  await b.close();
  await events.until((e) => e.length === 4);
  fs.rmSync(path.join(b.dir, 'node.key'));
  const b2 = await b.restart();
  assert.notEqual(b2.node.identity.id, bId);
  await seen.until((w) => w.some((x) => x.code === 'GRID_ERR_PEER_UNVERIFIED'));
  const [peer] = await admin.listPeers();
  assert.equal(peer!.id, bId);
  assert.notEqual(peer!.status, 'open');
  assert.equal(peer!.last_error?.code, 'GRID_ERR_PEER_UNVERIFIED');
  await assert.rejects(admin.connectNode(b.node.url, { id: bId }), (e: GridError) => e.code === 'GRID_ERR_PEER_UNVERIFIED' && e.message.includes(bId));
  assert.equal(events.items.length, 4);
});

test('a node from before keys keeps its UUID id; its key is pinned at the first link, across restarts', { timeout: 60_000, skip: ON_POSTGRES && 'starts from an embedded meta.db written before node keys; a PostgreSQL database starts with keys' }, async (t) => {
  const oldDir = tempDir();
  t.after(() => fs.rmSync(oldDir, { recursive: true, force: true }));
  const legacyId = crypto.randomUUID();
  const db = new EmbeddedStore(path.join(oldDir, 'meta.db'));
  await db.setMeta('node_id', legacyId);
  await db.close();
  const b = await tempNode(t, { dataDir: oldDir, name: 'old-node' });
  const bWho = await (await b.anonymous()).getId();
  assert.equal(bWho.id, legacyId);

  const a = await tempNode(t);
  await (await a.admin()).connectNode(b.node.url, { id: legacyId });
  await a.close();
  const a2 = await a.restart();
  const admin = await a2.admin();
  // Another key claiming the UUID, with a valid signature of its own: refused by the pin A keeps.
  const own = crypto.generateKeyPairSync('ed25519');
  const fake = await fakePeer(t, (env, ws) => {
    if (env.type === 'get-id') { reply(ws, env, bWho); return; }
    reply(ws, env, {
      id: legacyId, public_key: (own.publicKey.export({ format: 'jwk' }) as { x: string }).x,
      signature: crypto.sign(null, Buffer.from(`grid-node-proof/v1\n${String(env.data!.challenge)}\n${legacyId}\n${String(env.data!.verifier_id)}`), own.privateKey).toString('base64url'),
    });
  });
  await assert.rejects(admin.connectNode(fake.url, { id: legacyId }), (e: GridError) => e.code === 'GRID_ERR_PEER_UNVERIFIED' && /first linked/.test(e.message));
  // The real one, with the pinned key, still links.
  assert.equal((await admin.connectNode(b.node.url, { id: legacyId })).id, legacyId);
});
