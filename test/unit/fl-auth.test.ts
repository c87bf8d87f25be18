// FL worker authentication (PyGrid's server_config.authentication): tokens signed here with jose, a real
// third-party endpoint on 127.0.0.1 port 0, and the host-time config check.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { generateKeyPairSync } from 'node:crypto';
import { SignJWT, exportSPKI, generateKeyPair } from 'jose';
import { AUTH_INVALID, AUTH_REQUIRED, AUTH_THIRD_PARTY_FAILED, checkFlAuthConfig, endpointAllowed, verifyWorkerToken } from '../../src/node/fl/auth';

const SECRET = 'a process secret shared with the token issuer';

function hs256(secret: string | Uint8Array, claims: Record<string, unknown> = {}, exp?: number): Promise<string> {
  const jwt = new SignJWT(claims).setProtectedHeader({ alg: 'HS256' }).setIssuedAt();
  if (exp !== undefined) jwt.setExpirationTime(exp);
  return jwt.sign(typeof secret === 'string' ? new TextEncoder().encode(secret) : secret);
}

const b64url = (v: object): string => Buffer.from(JSON.stringify(v)).toString('base64url');

test('no authentication configured: any token, or none, is accepted', async () => {
  assert.deepEqual(await verifyWorkerToken(undefined, undefined), { ok: true });
  assert.deepEqual(await verifyWorkerToken({}, 'garbage'), { ok: true });
  assert.deepEqual(await verifyWorkerToken({ type: 'jwt' }, undefined), { ok: true });
});

test('authentication configured and no token: PyGrid\'s "required" message', async () => {
  assert.deepEqual(await verifyWorkerToken({ secret: SECRET }, undefined), { ok: false, error: AUTH_REQUIRED });
  assert.deepEqual(await verifyWorkerToken({ secret: SECRET }, ''), { ok: false, error: AUTH_REQUIRED });
  assert.equal(AUTH_REQUIRED, "Authentication is required, please pass an 'auth_token'.");
});

test('secret: a good HS256 token passes; wrong secret, expired, not-yet-valid, alg none and junk fail', async () => {
  const config = { type: 'jwt', secret: SECRET };
  assert.deepEqual(await verifyWorkerToken(config, await hs256(SECRET)), { ok: true });
  assert.deepEqual(await verifyWorkerToken(config, await hs256(SECRET, { sub: 'w' }, Math.floor(Date.now() / 1000) + 3600)), { ok: true });

  const bad = { ok: false, error: AUTH_INVALID };
  assert.equal(AUTH_INVALID, "The 'auth_token' you sent is invalid.");
  assert.deepEqual(await verifyWorkerToken(config, await hs256('another secret')), bad);
  assert.deepEqual(await verifyWorkerToken(config, await hs256(SECRET, {}, Math.floor(Date.now() / 1000) - 3600)), bad, 'expired an hour ago');
  const notYet = await new SignJWT({}).setProtectedHeader({ alg: 'HS256' }).setNotBefore(Math.floor(Date.now() / 1000) + 3600).sign(new TextEncoder().encode(SECRET));
  assert.deepEqual(await verifyWorkerToken(config, notYet), bad, 'nbf an hour ahead');
  assert.deepEqual(await verifyWorkerToken(config, `${b64url({ alg: 'none', typ: 'JWT' })}.${b64url({})}.`), bad, 'alg none');
  const hs512 = await new SignJWT({}).setProtectedHeader({ alg: 'HS512' }).sign(new TextEncoder().encode(SECRET));
  assert.deepEqual(await verifyWorkerToken(config, hs512), bad, 'HS512 is not the pinned algorithm');
  for (const junk of ['x', 'a.b.c', 'x'.repeat(100_000)]) assert.deepEqual(await verifyWorkerToken(config, junk), bad);
});

test('pub_key: RS256 tokens from the matching private key pass (SPKI and PKCS#1 PEM); others fail', async () => {
  const { publicKey, privateKey } = await generateKeyPair('RS256', { modulusLength: 2048 });
  const pem = await exportSPKI(publicKey);
  const config = checkFlAuthConfig({ type: 'jwt', pub_key: pem });
  const token = await new SignJWT({}).setProtectedHeader({ alg: 'RS256' }).sign(privateKey);
  assert.deepEqual(await verifyWorkerToken(config, token), { ok: true });

  const other = await generateKeyPair('RS256', { modulusLength: 2048 });
  const foreign = await new SignJWT({}).setProtectedHeader({ alg: 'RS256' }).sign(other.privateKey);
  assert.deepEqual(await verifyWorkerToken(config, foreign), { ok: false, error: AUTH_INVALID });
  const expired = await new SignJWT({}).setProtectedHeader({ alg: 'RS256' }).setExpirationTime(Math.floor(Date.now() / 1000) - 3600).sign(privateKey);
  assert.deepEqual(await verifyWorkerToken(config, expired), { ok: false, error: AUTH_INVALID });

  const pkcs1 = generateKeyPairSync('rsa', { modulusLength: 2048, publicKeyEncoding: { type: 'pkcs1', format: 'pem' }, privateKeyEncoding: { type: 'pkcs8', format: 'pem' } });
  const { importPKCS8 } = await import('jose');
  const signed = await new SignJWT({}).setProtectedHeader({ alg: 'RS256' }).sign(await importPKCS8(pkcs1.privateKey, 'RS256'));
  assert.match(pkcs1.publicKey, /BEGIN RSA PUBLIC KEY/);
  assert.deepEqual(await verifyWorkerToken(checkFlAuthConfig({ pub_key: pkcs1.publicKey }), signed), { ok: true });
});

test('secret and pub_key: the secret is tried first, then the public key (PyGrid\'s fallback)', async () => {
  const { publicKey, privateKey } = await generateKeyPair('RS256', { modulusLength: 2048 });
  const config = checkFlAuthConfig({ secret: SECRET, pub_key: await exportSPKI(publicKey) });
  assert.deepEqual(await verifyWorkerToken(config, await hs256(SECRET)), { ok: true });
  assert.deepEqual(await verifyWorkerToken(config, await new SignJWT({}).setProtectedHeader({ alg: 'RS256' }).sign(privateKey)), { ok: true });
  assert.deepEqual(await verifyWorkerToken(config, await hs256('wrong')), { ok: false, error: AUTH_INVALID });
});

test('algorithm confusion: an HS256 token keyed with the public key PEM is refused', async () => {
  const { publicKey } = await generateKeyPair('RS256', { modulusLength: 2048 });
  const pem = await exportSPKI(publicKey);
  const forged = await hs256(new TextEncoder().encode(pem), { sub: 'attacker' });
  assert.deepEqual(await verifyWorkerToken(checkFlAuthConfig({ pub_key: pem }), forged), { ok: false, error: AUTH_INVALID });
});

interface Endpoint { url: string; bodies: { contentType: string | undefined; body: string }[]; close(): Promise<void> }

async function endpoint(answer: (body: string) => number | 'hang'): Promise<Endpoint> {
  const bodies: Endpoint['bodies'] = [];
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks).toString('utf8');
      bodies.push({ contentType: req.headers['content-type'], body });
      const status = answer(body);
      if (status === 'hang') return;
      res.writeHead(status, { 'content-type': 'application/json' }).end('{}');
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}/verify`,
    bodies,
    close: () => new Promise<void>((resolve) => { server.closeAllConnections(); server.close(() => resolve()); }),
  };
}

test('endpoint: the token is POSTed as JSON; 200 passes, 403 fails with the 3rd-party message', async () => {
  const ep = await endpoint((body) => ((JSON.parse(body) as { auth_token: string }).auth_token === 'good' ? 200 : 403));
  try {
    const config = checkFlAuthConfig({ endpoint: ep.url });
    assert.deepEqual(await verifyWorkerToken(config, 'good'), { ok: true });
    assert.deepEqual(await verifyWorkerToken(config, 'bad'), { ok: false, error: AUTH_THIRD_PARTY_FAILED });
    assert.equal(AUTH_THIRD_PARTY_FAILED, "The 'auth_token' you sent did not pass 3rd party validation.");
    assert.deepEqual(ep.bodies[0], { contentType: 'application/json', body: '{"auth_token":"good"}' });
    assert.deepEqual(await verifyWorkerToken(config, undefined), { ok: false, error: AUTH_REQUIRED });
    assert.equal(ep.bodies.length, 2, 'no token: the endpoint is not asked');
  } finally {
    await ep.close();
  }
});

test('secret and endpoint: both must pass, and a bad JWT never reaches the endpoint', async () => {
  let status = 200;
  const ep = await endpoint(() => status);
  try {
    const config = checkFlAuthConfig({ type: 'jwt', secret: SECRET, endpoint: ep.url });
    assert.deepEqual(await verifyWorkerToken(config, await hs256(SECRET)), { ok: true });
    assert.deepEqual(await verifyWorkerToken(config, await hs256('wrong')), { ok: false, error: AUTH_INVALID });
    assert.equal(ep.bodies.length, 1);
    status = 403;
    assert.deepEqual(await verifyWorkerToken(config, await hs256(SECRET)), { ok: false, error: AUTH_THIRD_PARTY_FAILED });
  } finally {
    await ep.close();
  }
});

test('an unreachable, hanging or aborted endpoint is a failed check, never a crash', async () => {
  const gone = await endpoint(() => 200);
  const url = gone.url;
  await gone.close();
  assert.deepEqual(await verifyWorkerToken({ endpoint: url }, 't'), { ok: false, error: AUTH_THIRD_PARTY_FAILED }, 'connection refused');
  assert.deepEqual(await verifyWorkerToken({ endpoint: 'http://unresolvable.invalid/verify' }, 't'), { ok: false, error: AUTH_THIRD_PARTY_FAILED }, 'no such host');

  const hang = await endpoint(() => 'hang');
  try {
    assert.deepEqual(await verifyWorkerToken({ endpoint: hang.url }, 't', { endpointTimeoutMs: 200 }), { ok: false, error: AUTH_THIRD_PARTY_FAILED }, 'timed out');
    const ac = new AbortController();
    const pending = verifyWorkerToken({ endpoint: hang.url }, 't', { endpointTimeoutMs: 600_000, signal: ac.signal });
    ac.abort();
    assert.deepEqual(await pending, { ok: false, error: AUTH_THIRD_PARTY_FAILED }, 'aborted');
  } finally {
    await hang.close();
  }
});

test('checkFlAuthConfig: absent is no authentication; each bad key is named with a coded error', () => {
  assert.deepEqual(checkFlAuthConfig(undefined), {});
  assert.deepEqual(checkFlAuthConfig(null), {});
  assert.deepEqual(checkFlAuthConfig({}), {});
  assert.deepEqual(checkFlAuthConfig({ type: 'jwt', secret: 's', pub_key: null }), { type: 'jwt', secret: 's' });
  const ec = generateKeyPairSync('ec', { namedCurve: 'P-256', publicKeyEncoding: { type: 'spki', format: 'pem' }, privateKeyEncoding: { type: 'pkcs8', format: 'pem' } });
  const small = generateKeyPairSync('rsa', { modulusLength: 1024, publicKeyEncoding: { type: 'spki', format: 'pem' }, privateKeyEncoding: { type: 'pkcs8', format: 'pem' } });
  const cases: [unknown, string][] = [
    ['jwt', 'server_config.authentication'],
    [[], 'server_config.authentication'],
    [{ type: 'jwt', pubkey: 'x' }, 'server_config.authentication.pubkey'],
    [{ secret: '' }, 'server_config.authentication.secret'],
    [{ secret: 42 }, 'server_config.authentication.secret'],
    [{ pub_key: 'not a key' }, 'server_config.authentication.pub_key'],
    [{ pub_key: ec.publicKey }, 'server_config.authentication.pub_key'],
    [{ pub_key: small.publicKey }, 'server_config.authentication.pub_key'],
    [{ endpoint: 'ftp://auth.example/verify' }, 'server_config.authentication.endpoint'],
    [{ endpoint: 'not a url' }, 'server_config.authentication.endpoint'],
    [{ type: 'jwt' }, 'server_config.authentication'],
  ];
  for (const [config, key] of cases) {
    assert.throws(() => checkFlAuthConfig(config), (err: any) => {
      assert.equal(err.code, 'GRID_ERR_INVALID_MESSAGE', JSON.stringify(config));
      assert.equal(err.details.key, key);
      assert.ok(err.message.includes(key), err.message);
      return true;
    });
  }
});

test('endpointAllowed: same scheme, host and port as a listed URL, and a path at or under its path; never with a user name', () => {
  const list = ['https://auth.example.org/fl/', 'http://10.0.0.5:8080/check'];
  for (const ok of ['https://auth.example.org/fl/', 'https://auth.example.org/fl/check?x=1', 'http://10.0.0.5:8080/check', 'http://10.0.0.5:8080/check/v2', 'https://AUTH.example.org/fl/x']) {
    assert.equal(endpointAllowed(ok, list), true, ok);
  }
  for (const no of ['http://auth.example.org/fl/check', 'https://auth.example.org:8443/fl/check', 'https://auth.example.org/admin', 'https://auth.example.org/flx',
    'http://10.0.0.5:8080/checkout', 'http://10.0.0.5:8081/check', 'https://auth.example.org.evil.test/fl/', 'https://user:pw@auth.example.org/fl/', 'http://169.254.169.254/', 'not a url']) {
    assert.equal(endpointAllowed(no, list), false, no);
  }
  assert.equal(endpointAllowed('https://auth.example.org/fl/', []), false);
});
