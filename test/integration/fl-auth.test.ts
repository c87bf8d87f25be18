// Worker authentication on a real node (server_config.authentication, src/node/fl/auth.ts): each mode —
// none, secret (HS256), pub_key (RS256), endpoint (a real HTTP server answering 200/403) — with tokens
// signed here with jose, through our FlWorker, a bare PyGrid-era socket, the HTTP route and the real
// syft.js 0.1.4. PyGrid's exact strings reach the worker; a bad config is refused at host time.

import { generateKeyPairSync } from 'node:crypto';
import { once } from 'node:events';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { SignJWT } from 'jose';
import { WebSocket } from 'ws';
import { GridClient } from '../../src/core/client';
import { FlWorker } from '../../src/core/fl-worker';
import { startTestNode } from '../helpers/node-fixtures';
import { hostProcess, httpBase, PyGridSocket } from '../helpers/fl-fixtures';

// eslint-disable-next-line @typescript-eslint/no-require-imports
require('@tensorflow/tfjs-core');
// eslint-disable-next-line @typescript-eslint/no-require-imports
require('@tensorflow/tfjs-backend-cpu');
// syft.js was written for tfjs-core 1.x, where `tensor.sub()` is always there; 4.x adds chained ops on request.
// eslint-disable-next-line @typescript-eslint/no-require-imports
require('@tensorflow/tfjs-core/dist/public/chained_ops/register_all_chained_ops');
// eslint-disable-next-line @typescript-eslint/no-require-imports
const { Syft } = require('@openmined/syft.js') as { Syft: new (o: Record<string, unknown>) => any };

(globalThis as { WebSocket?: unknown }).WebSocket = WebSocket;

const REQUIRED = "Authentication is required, please pass an 'auth_token'.";
const INVALID = "The 'auth_token' you sent is invalid.";
const THIRD_PARTY = "The 'auth_token' you sent did not pass 3rd party validation.";

const SECRET = 'a shared secret of the process owner';
const rsa = () => generateKeyPairSync('rsa', { modulusLength: 2048 });

async function hs256(secret: string): Promise<string> {
  return new SignJWT({ sub: 'worker' }).setProtectedHeader({ alg: 'HS256' }).setIssuedAt().setExpirationTime('1h').sign(new TextEncoder().encode(secret));
}

async function rs256(key: ReturnType<typeof rsa>['privateKey']): Promise<string> {
  return new SignJWT({ sub: 'worker' }).setProtectedHeader({ alg: 'RS256' }).setIssuedAt().setExpirationTime('1h').sign(key);
}

/** A third-party validator on 127.0.0.1 port 0: 200 for `good`, 403 for anything else; records what it got. */
async function validator(good: string): Promise<{ url: string; seen: unknown[]; close(): Promise<void> }> {
  const seen: unknown[] = [];
  const server = http.createServer((req, res) => {
    const parts: Buffer[] = [];
    req.on('data', (c: Buffer) => parts.push(c));
    req.on('end', () => {
      const body = JSON.parse(Buffer.concat(parts).toString('utf8')) as { auth_token?: unknown };
      seen.push(body);
      res.writeHead(body.auth_token === good ? 200 : 403).end();
    });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as AddressInfo;
  return { url: `http://127.0.0.1:${port}/validate`, seen, close: () => new Promise((r) => server.close(() => r())) };
}

/** The message FlWorker.authenticate is refused with (undefined: it was accepted). */
async function flWorkerAuth(url: string, name: string, authToken?: string): Promise<string | undefined> {
  const w = await FlWorker.connect(url);
  try {
    const reply = await w.authenticate({ modelName: name, modelVersion: '1.0', ...(authToken !== undefined && { authToken }) });
    assert.equal(reply.status, 'success');
    assert.equal(typeof reply.worker_id, 'string');
    return undefined;
  } catch (err) {
    return (err as Error).message;
  } finally {
    w.dispose();
  }
}

/** syft.js 0.1.4: authenticate, then a cycle-request; the error message, or 'accepted'. */
async function syftAuth(url: string, name: string, authToken?: string): Promise<string> {
  const syft = new Syft({ url, verbose: true, ...(authToken !== undefined && { authToken }) });
  syft.logger.verbose = false;
  try {
    const job = await syft.newJob({ modelName: name, modelVersion: '1.0' });
    const outcome = new Promise<string>((resolve) => {
      job.on('accepted', () => resolve('accepted'));
      job.on('rejected', (r: unknown) => resolve(`rejected ${JSON.stringify(r)}`));
      job.on('error', (e: Error) => resolve(`error ${e.message}`));
    });
    void job.start();
    return await outcome;
  } catch (err) {
    return (err as Error).message;
  } finally {
    syft.gridClient?.ws?.close?.();
  }
}

test('worker authentication: none, secret (HS256), pub_key (RS256) and endpoint, through FlWorker, a PyGrid-era socket, HTTP and syft.js 0.1.4', { timeout: 180_000 }, async (t) => {
  const n = await startTestNode();
  t.after(() => n.close());
  const good = rsa();
  const other = rsa();
  const endpoint = await validator('let-me-in');
  t.after(() => endpoint.close());
  const admin = await n.admin();
  const pem = good.publicKey.export({ type: 'spki', format: 'pem' }).toString();
  for (const [name, authentication] of [
    ['open', undefined],
    ['secret', { type: 'jwt', secret: SECRET }],
    ['pubkey', { type: 'jwt', pub_key: pem }],
    ['endpoint', { endpoint: endpoint.url }],
  ] as const) {
    const hosted = await hostProcess(admin, { name, server: authentication === undefined ? {} : { authentication } });
    assert.equal(hosted.status, 'success', name);
  }
  const url = n.node.url;

  // none: no token needed, and a stray one is ignored.
  assert.equal(await flWorkerAuth(url, 'open'), undefined);
  assert.equal(await flWorkerAuth(url, 'open', 'anything'), undefined);
  assert.equal(await syftAuth(url, 'open'), 'accepted');

  // secret: HS256 with the process's secret only.
  assert.equal(await flWorkerAuth(url, 'secret'), REQUIRED);
  assert.equal(await flWorkerAuth(url, 'secret', await hs256('another secret')), INVALID);
  assert.equal(await flWorkerAuth(url, 'secret', await rs256(good.privateKey)), INVALID);
  assert.equal(await flWorkerAuth(url, 'secret', await hs256(SECRET)), undefined);
  assert.equal(await syftAuth(url, 'secret'), REQUIRED);
  assert.equal(await syftAuth(url, 'secret', await hs256('another secret')), INVALID);
  assert.equal(await syftAuth(url, 'secret', await hs256(SECRET)), 'accepted');

  // pub_key: RS256 signed by the matching private key only.
  assert.equal(await flWorkerAuth(url, 'pubkey'), REQUIRED);
  assert.equal(await flWorkerAuth(url, 'pubkey', await rs256(other.privateKey)), INVALID);
  assert.equal(await flWorkerAuth(url, 'pubkey', await hs256(SECRET)), INVALID);
  assert.equal(await flWorkerAuth(url, 'pubkey', await rs256(good.privateKey)), undefined);
  assert.equal(await syftAuth(url, 'pubkey', await rs256(other.privateKey)), INVALID);
  assert.equal(await syftAuth(url, 'pubkey', await rs256(good.privateKey)), 'accepted');

  // endpoint: the validator's 200 / 403 decides, and it saw the token as {"auth_token": …}.
  assert.equal(await flWorkerAuth(url, 'endpoint'), REQUIRED);
  assert.equal(await flWorkerAuth(url, 'endpoint', 'not-this-one'), THIRD_PARTY);
  assert.equal(await flWorkerAuth(url, 'endpoint', 'let-me-in'), undefined);
  assert.equal(await syftAuth(url, 'endpoint', 'not-this-one'), THIRD_PARTY);
  assert.equal(await syftAuth(url, 'endpoint', 'let-me-in'), 'accepted');
  assert.deepEqual(endpoint.seen, [{ auth_token: 'not-this-one' }, { auth_token: 'let-me-in' }, { auth_token: 'not-this-one' }, { auth_token: 'let-me-in' }]);

  // A PyGrid-era socket (no request_id) reads data.error and data.status (KotlinSyft reads status first).
  const raw = await PyGridSocket.open(url);
  t.after(() => raw.close());
  const refused = await raw.send('model-centric/authenticate', { model_name: 'secret', model_version: '1.0', auth_token: await hs256('nope') });
  assert.deepEqual(refused.data, { status: 'rejected', error: INVALID });
  assert.equal(refused.error !== undefined, true);
  const ok = await raw.call('model-centric/authenticate', { model_name: 'secret', model_version: '1.0', auth_token: await hs256(SECRET) });
  assert.equal(ok.status, 'success');

  // HTTP: 400 {"error"} with PyGrid's string.
  const post = (body: unknown) => fetch(`${httpBase(url)}/model-centric/authenticate`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
  const bad = await post({ model_name: 'pubkey', model_version: '1.0', auth_token: await rs256(other.privateKey) });
  assert.equal(bad.status, 400);
  assert.deepEqual(await bad.json(), { status: 'rejected', error: INVALID });
  const missing = await post({ model_name: 'endpoint', model_version: '1.0' });
  assert.equal(missing.status, 400);
  assert.equal(((await missing.json()) as { error: string }).error, REQUIRED);
  const fine = await post({ model_name: 'pubkey', model_version: '1.0', auth_token: await rs256(good.privateKey) });
  assert.equal(fine.status, 200);
  assert.equal(((await fine.json()) as { status: string }).status, 'success');
});

test('host-training refuses an authentication config that would leave workers unauthenticated, naming the bad key', { timeout: 60_000 }, async (t) => {
  const n = await startTestNode();
  t.after(() => n.close());
  const admin = await n.admin();
  const weak = generateKeyPairSync('rsa', { modulusLength: 1024 }).publicKey.export({ type: 'spki', format: 'pem' }).toString();
  for (const [authentication, key] of [
    [{ type: 'jwt', pubkey: 'x' }, 'server_config.authentication.pubkey'],
    [{ type: 'jwt', secret: '' }, 'server_config.authentication.secret'],
    [{ type: 'jwt' }, 'server_config.authentication'],
    [{ pub_key: weak }, 'server_config.authentication.pub_key'],
    [{ endpoint: 'ftp://example.org/check' }, 'server_config.authentication.endpoint'],
  ] as const) {
    await assert.rejects(hostProcess(admin, { name: `bad-${key}`, server: { authentication } }), (err: Error & { code?: string }) => {
      assert.equal(err.code, 'GRID_ERR_INVALID_MESSAGE', err.message);
      assert.ok(err.message.includes(key), err.message);
      return true;
    });
  }
  // Nothing was hosted; an empty object means no authentication, as in PyGrid.
  const hosted = await hostProcess(admin, { name: 'empty', server: { authentication: {} } });
  assert.equal(hosted.status, 'success');
  assert.equal(await flWorkerAuth(n.node.url, 'empty'), undefined);
});

/** An endpoint that answers per `mode`: never (hangs), or 200 with a body that never ends; `closed` resolves when the node hangs up. */
async function misbehaving(mode: 'hang' | 'endless'): Promise<{ url: string; written: () => number; closed: Promise<void>; close(): Promise<void> }> {
  let written = 0;
  let hungUp!: () => void;
  const closed = new Promise<void>((r) => { hungUp = r; });
  const server = http.createServer((_req, res) => {
    res.on('close', () => hungUp());
    if (mode === 'hang') return;
    res.writeHead(200, { 'content-type': 'application/octet-stream' });
    const chunk = Buffer.alloc(64 * 1024, 0x61);
    const pump = () => { while (!res.destroyed) { written += chunk.length; if (!res.write(chunk)) break; } };
    res.on('drain', pump);
    pump();
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as AddressInfo;
  return { url: `http://127.0.0.1:${port}/check`, written: () => written, closed, close: () => new Promise((r) => { server.closeAllConnections(); server.close(() => r()); }) };
}

test('endpoint authentication: a user who is not an admin may only name an endpoint the operator listed; the check gives up at its timeout and never reads the answer\'s body', { timeout: 60_000 }, async (t) => {
  const hang = await misbehaving('hang');
  const endless = await misbehaving('endless');
  const allowed = await validator('let-me-in');
  t.after(async () => { await hang.close(); await endless.close(); await allowed.close(); });
  const listed = new URL(allowed.url);
  const n = await startTestNode({ fl: { authEndpoints: [`${listed.origin}/validate`, new URL(hang.url).origin + '/', new URL(endless.url).origin + '/'], authEndpointTimeoutMs: 500 } });
  t.after(() => n.close());
  const admin = await n.admin();
  await admin.addUser('bob', 'bob-long-password');
  const bob = await GridClient.connect(n.node.url, { credentials: { username: 'bob', password: 'bob-long-password' }, reconnect: { maxAttempts: 0 } });
  t.after(() => bob.dispose());

  // Bob (a user) may not make the node POST tokens to an address the operator did not list: a metadata
  // service, another port of the listed host, a sibling path, a look-alike host.
  for (const endpoint of ['http://169.254.169.254/latest/meta-data/', `http://127.0.0.1:${Number(listed.port) === 65535 ? 1 : Number(listed.port) + 1}/validate`, `${listed.origin}/validate-admin`, `http://user@${listed.host}/validate`]) {
    await assert.rejects(hostProcess(bob, { name: 'ssrf', server: { authentication: { endpoint } } }), (e: Error & { code?: string }) => {
      assert.equal(e.code, 'GRID_ERR_FORBIDDEN', `${endpoint}: ${e.message}`);
      assert.match(e.message, /is not one this node's operator allows .*only an admin may host/);
      return true;
    });
  }
  assert.equal(await n.node.fl.store.findProcess('ssrf'), undefined);
  // A listed endpoint (or under it) is fine for bob; an admin may name any.
  assert.equal((await hostProcess(bob, { name: 'listed', server: { authentication: { endpoint: allowed.url } } })).status, 'success');
  assert.equal((await hostProcess(bob, { name: 'listed-below', server: { authentication: { endpoint: `${allowed.url}/v2?x=1` } } })).status, 'success');
  assert.equal((await hostProcess(admin, { name: 'admin-any', server: { authentication: { endpoint: 'http://127.0.0.1:9/anything' } } })).status, 'success');
  assert.equal(await flWorkerAuth(n.node.url, 'listed', 'let-me-in'), undefined);
  assert.equal(await flWorkerAuth(n.node.url, 'listed', 'nope'), THIRD_PARTY);

  // An endpoint that never answers: refused at the node's timeout (500 ms here, 5 s by default).
  await hostProcess(admin, { name: 'hang', server: { authentication: { endpoint: hang.url } } });
  const started = Date.now();
  assert.equal(await flWorkerAuth(n.node.url, 'hang', 'token'), THIRD_PARTY);
  const took = Date.now() - started;
  assert.ok(took < 4500, `the check took ${took} ms with a 500 ms timeout`);
  await hang.closed;
  // An endpoint answering 200 with a body that never ends: the status decides, the body is never read
  // (the node hangs up at once instead of downloading it).
  // (A node with the default 5 s timeout: reading until then would take hundreds of MiB off loopback;
  // unread, the endpoint fills the socket buffers, a few MiB, and is hung up on.)
  const n5 = await startTestNode();
  t.after(() => n5.close());
  await hostProcess(await n5.admin(), { name: 'endless', server: { authentication: { endpoint: endless.url } } });
  assert.equal(await flWorkerAuth(n5.node.url, 'endless', 'token'), undefined);
  await endless.closed;
  assert.ok(endless.written() < 16 * 1024 * 1024, `the endpoint wrote ${endless.written()} bytes before the node hung up`);
});
