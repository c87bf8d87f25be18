// A node behind a reverse proxy (--trust-proxy): per-address limits apply to each client that the proxy's
// X-Forwarded-For names, not to the proxy; from a peer that is not trusted the header is ignored; a proxied
// client never gets shared memory. Real node on port 0; the "proxy" is the test's own client on 127.0.0.1
// sending the header a proxy would (nginx's $proxy_add_x_forwarded_for). The sign-in clock is an option: no sleeps.

import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { GridClient } from '../../src/core/client';
import { GridError } from '../../src/core/errors';
import { ShmRegister } from '../../src/core/protocol/shm-messages';
import { GridNode } from '../../src/node/server';
import { ADMIN_PASSWORD, failure, startTestNode, tempDir, type TestNode } from '../helpers/node-fixtures';
import { startNodeScript } from '../helpers/processes';
import { startProxy } from '../helpers/proxy';

const PASSWORD = 'a-fine-password';

async function proxiedNode(t: TestContext, trustProxy: string[] | undefined) {
  const tn = await startTestNode({
    signInLimits: { now: () => Date.UTC(2030, 0, 1) },
    fl: { requestsPerMinute: 3 },
    ...(trustProxy !== undefined && { trustProxy }),
  });
  const clients: GridClient[] = [];
  t.after(async () => {
    for (const c of clients) c.dispose();
    await tn.close();
  });
  await (await tn.admin()).addUser('alice', PASSWORD);
  /** A client whose connection carries X-Forwarded-For: `forwardedFor` (as a proxy in front of the node would add). */
  const via = async (forwardedFor: string | undefined, url = tn.node.url) => {
    const c = await GridClient.connect(url, { reconnect: { maxAttempts: 0 }, ...(forwardedFor !== undefined && { connect: { headers: { 'x-forwarded-for': forwardedFor } } }) });
    clients.push(c);
    return c;
  };
  return { tn, via };
}

/** Five wrong passwords for alice, then the sixth attempt's refusal. */
async function lockOut(c: GridClient): Promise<GridError> {
  for (let i = 0; i < 5; i++) assert.equal((await failure(c.authenticate({ username: 'alice', password: `guess-${i}` }))).code, 'GRID_ERR_BAD_CREDENTIALS');
  return failure(c.authenticate({ username: 'alice', password: `guess-5` }));
}

/** POSTs /model-centric/authenticate with the header; the reply's status and our error code. */
async function flSignUp(tn: TestNode, forwardedFor: string): Promise<string> {
  const res = await fetch(`http://127.0.0.1:${tn.node.port}/model-centric/authenticate`, {
    method: 'POST', headers: { 'content-type': 'application/json', 'x-forwarded-for': forwardedFor }, body: JSON.stringify({ model_name: 'none', model_version: '1.0' }),
  });
  await res.arrayBuffer();
  return res.headers.get('x-grid-error-code') ?? String(res.status);
}

test('with --trust-proxy 127.0.0.1, each forwarded client has its own sign-in backoff and FL sign-up budget', async (t) => {
  const { tn, via } = await proxiedNode(t, ['127.0.0.1']);
  const guesser = await via('203.0.113.7');
  const locked = await lockOut(guesser);
  assert.equal(locked.code, 'GRID_ERR_RATE_LIMITED');
  assert.match(locked.message, /too many failed sign-ins for "alice" from 203\.0\.113\.7; try again in 1 s/);
  // A remote client's lockout, not the loopback's short one: it doubles on toward minutes.
  assert.equal(locked.details!.retry_after_ms, 1000);

  // Another client behind the same proxy is not locked out by the first one's failures.
  assert.equal((await (await via('203.0.113.8')).authenticate({ username: 'alice', password: PASSWORD })).user, 'alice');
  // The guesser cannot step around its lock by prepending addresses of its choice: the proxy appends the
  // address it saw, and that one (the rightmost not trusted) is the client.
  const spoofed = await failure((await via('198.51.100.1, 203.0.113.7')).authenticate({ username: 'alice', password: PASSWORD }));
  assert.equal(spoofed.code, 'GRID_ERR_RATE_LIMITED');
  assert.match(spoofed.message, /from 203\.0\.113\.7;/);

  // FL sign-ups over HTTP (here 3 a minute per address): one client's burst leaves the next client its own.
  const first = [];
  for (let i = 0; i < 4; i++) first.push(await flSignUp(tn, '203.0.113.7'));
  assert.deepEqual(first, ['GRID_ERR_NOT_FOUND', 'GRID_ERR_NOT_FOUND', 'GRID_ERR_NOT_FOUND', 'GRID_ERR_RATE_LIMITED']);
  assert.equal(await flSignUp(tn, '203.0.113.8'), 'GRID_ERR_NOT_FOUND', 'another client behind the proxy still reaches the process lookup');
});

test('without --trust-proxy the header is ignored: every client through it shares the lock', async (t) => {
  const { tn, via } = await proxiedNode(t, undefined);
  const locked = await lockOut(await via('203.0.113.7'));
  assert.match(locked.message, /for "alice" from (::ffff:)?127\.0\.0\.1;/);
  const other = await failure((await via('203.0.113.8')).authenticate({ username: 'alice', password: PASSWORD }));
  assert.equal(other.code, 'GRID_ERR_RATE_LIMITED', 'the second client is locked out with the first');
  const codes = [];
  for (let i = 0; i < 4; i++) codes.push(await flSignUp(tn, `203.0.113.${10 + i}`));
  assert.equal(codes[3], 'GRID_ERR_RATE_LIMITED', 'forwarded addresses do not buy more FL sign-ups');
});

test('a trusted proxy is believed only for its own connections: the same header from another peer is ignored', async (t) => {
  // Only 127.0.0.2 is a proxy; the test's client on 127.0.0.1 sending the header is just a client.
  const { tn, via } = await proxiedNode(t, ['127.0.0.2']);
  const locked = await lockOut(await via('203.0.113.7'));
  assert.match(locked.message, /from (::ffff:)?127\.0\.0\.1;/);
  // Through the trusted peer, the forwarded address counts.
  const proxy = await startProxy(tn.node.port, '127.0.0.1', '127.0.0.2');
  t.after(() => proxy.close());
  const viaProxy = await via('203.0.113.9', `ws://127.0.0.1:${proxy.port}`);
  const e = await lockOut(viaProxy);
  assert.match(e.message, /from 203\.0\.113\.9;/);
});

test('a client through a trusted proxy on this machine never gets shared memory; a direct local one may', async (t) => {
  const { via } = await proxiedNode(t, ['loopback']);
  const proxied = await via('203.0.113.7');
  const refused = await failure(proxied.socket.request(ShmRegister, { region: 'region-abcdefghijklmnop', size: 4096, nonce: 'A'.repeat(43) }));
  assert.equal(refused.code, 'GRID_ERR_SHM_UNAVAILABLE');
  assert.match(refused.message, /only from clients on its own machine \(this connection comes from 203\.0\.113\.7\)/);
  // A forwarded loopback address does not make a proxied client local either.
  const local = await failure((await via('127.0.0.1')).socket.request(ShmRegister, { region: 'region-abcdefghijklmnop', size: 4096, nonce: 'A'.repeat(43) }));
  assert.equal(local.code, 'GRID_ERR_SHM_UNAVAILABLE');
  // A direct client passes the machine check (and is then asked to sign in).
  const direct = await failure((await via(undefined)).socket.request(ShmRegister, { region: 'region-abcdefghijklmnop', size: 4096, nonce: 'A'.repeat(43) }));
  assert.equal(direct.code, 'GRID_ERR_UNAUTHENTICATED');
});

test('a --trust-proxy entry that is no address or range stops the start with a coded error, before any data dir exists', async () => {
  const dataDir = path.join(os.tmpdir(), `grid-trust-proxy-${process.pid}-never-created`);
  for (const bad of ['nginx.local', '10.0.0.0/33', '10.0.0.1/8/2', '::1/129']) {
    const e = await failure(GridNode.start({ port: 0, dataDir, trustProxy: ['loopback', bad] }));
    assert.equal(e.code, 'GRID_ERR_INVALID_MESSAGE');
    assert.equal(e.message, `--trust-proxy ${JSON.stringify(bad)} is not an address, a CIDR range (10.0.0.0/8, fd00::/8) or "loopback"`);
  }
  assert.equal(fs.existsSync(dataDir), false);
});

test('grid-node takes --trust-proxy, or GRID_TRUST_PROXY when the flag is not given; a bad entry stops it with the reason', { timeout: 120_000 }, async (t) => {
  const main = path.join(__dirname, '../../src/node/main.ts');
  const start = async (args: string[], env: NodeJS.ProcessEnv) => {
    const dir = tempDir('grid-trust-proxy-cli-');
    t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
    const node = await startNodeScript(main, ['--port', '0', '--data-dir', dir, '--log-level', 'warn', ...args], { ...process.env, GRID_ADMIN_PASSWORD: ADMIN_PASSWORD, ...env });
    t.after(() => node.kill('SIGTERM'));
    return node;
  };
  /** The address the node resolved for a client whose proxy says it is 203.0.113.7: shared memory's refusal names it. */
  const seenAs = async (url: string, forwardedFor: string | undefined) => {
    const c = await GridClient.connect(url, { reconnect: { maxAttempts: 0 }, ...(forwardedFor !== undefined && { connect: { headers: { 'x-forwarded-for': forwardedFor } } }) });
    t.after(() => c.dispose());
    const e = await failure(c.socket.request(ShmRegister, { region: 'region-abcdefghijklmnop', size: 4096, nonce: 'A'.repeat(43) }));
    return e.code === 'GRID_ERR_SHM_UNAVAILABLE' ? /comes from ([^)]+)\)/.exec(e.message)![1] : e.code;
  };
  const flag = await start(['--trust-proxy', '10.0.0.0/8,loopback'], { GRID_TRUST_PROXY: '' });
  assert.equal(await seenAs(flag.url, '203.0.113.7'), '203.0.113.7');
  const env = await start([], { GRID_TRUST_PROXY: '127.0.0.1' });
  assert.equal(await seenAs(env.url, '203.0.113.7'), '203.0.113.7');
  // Neither: the header is ignored (and the direct local client passes the machine check).
  const none = await start([], { GRID_TRUST_PROXY: '' });
  assert.equal(await seenAs(none.url, '203.0.113.7'), 'GRID_ERR_UNAUTHENTICATED');

  const dir = tempDir('grid-trust-proxy-bad-');
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  await assert.rejects(startNodeScript(main, ['--port', '0', '--data-dir', dir, '--trust-proxy', 'nginx.local'], { ...process.env, GRID_ADMIN_PASSWORD: ADMIN_PASSWORD }),
    /--trust-proxy "nginx\.local" is not an address, a CIDR range/);
});
