// The node's HTTP side as an attacker or a browser sees it: any request target, method or header gets an
// answer (never a crash), web pages from origins the operator did not allow are refused (WebSocket and
// HTTP), TLS (https + wss on one port) with clients that report certificate failures as such, and a
// start that fails on its options leaves nothing behind.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as https from 'node:https';
import * as net from 'node:net';
import * as path from 'node:path';
import { spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import WebSocket from 'ws';
import { GridClient } from '../../src/core/client';
import { GridError, isErrorCode } from '../../src/core/errors';
import { GridSocket } from '../../src/core/socket/grid-socket';
import { GridNode } from '../../src/node/server';
import { startTestNode, tempDir, ADMIN_PASSWORD } from '../helpers/node-fixtures';
import { startNodeScript } from '../helpers/processes';

interface RawAnswer {
  /** Undefined when the node closed the connection without an HTTP answer. */
  status: number | undefined;
  head: string;
  body: string;
}

/** Sends raw bytes (anything at all as the request line and headers) and reads until the node closes. */
function rawHttp(port: number, request: string | Buffer, timeoutMs = 5_000): Promise<RawAnswer> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1');
    const chunks: Buffer[] = [];
    const timer = setTimeout(() => { socket.destroy(); reject(new Error(`no answer within ${timeoutMs} ms to ${JSON.stringify(request.toString().slice(0, 200))}`)); }, timeoutMs);
    socket.on('data', (d: Buffer) => chunks.push(d));
    // A reset after the node answered and closed is not a failure: the answer is what counts.
    socket.on('error', () => {});
    socket.on('close', () => {
      clearTimeout(timer);
      const text = Buffer.concat(chunks).toString('latin1');
      const split = text.indexOf('\r\n\r\n');
      const head = split < 0 ? text : text.slice(0, split);
      const m = /^HTTP\/1\.[01] (\d{3})/.exec(text);
      resolve({ status: m ? Number(m[1]) : undefined, head, body: split < 0 ? '' : text.slice(split + 4) });
    });
    // Half-close: the node sees the whole request, then the end of input, and must still answer.
    socket.end(request);
  });
}

const request = (method: string, target: string, headers: string[] = []) =>
  `${method} ${target} HTTP/1.1\r\nHost: 127.0.0.1\r\n${headers.map((h) => `${h}\r\n`).join('')}Connection: close\r\n\r\n`;

async function assertHealthy(node: GridNode, why: string): Promise<void> {
  const res = await fetch(`http://127.0.0.1:${node.port}/health`);
  assert.equal(res.status, 200, `the node still answers /health ${why}`);
  assert.equal(((await res.json()) as { status: string }).status, 'ok');
}

test('request targets and methods that used to kill the node get a 4xx; the node keeps serving', async (t) => {
  const n = await startTestNode();
  t.after(() => n.close());
  const { port } = n.node;
  const cases: [string, string | Buffer, number][] = [
    // The reported killers: a protocol-relative target with a bad port, and unparsable hosts.
    ['GET //x:y', request('GET', '//x:y'), 404],
    ['GET //[', request('GET', '//['), 404],
    ['GET http://[', request('GET', 'http://['), 400],
    ['GET http://[/health', request('GET', 'http://[/health'), 400],
    ['POST //x:y', request('POST', '//x:y', ['Content-Length: 2']) + '{}', 405],
    ['GET *', request('GET', '*'), 400],
    ['GET authority-form', request('GET', 'example.com:80'), 400],
    ['GET ftp://x/health', request('GET', 'ftp://x/health'), 400],
    ['CONNECT', request('CONNECT', 'example.com:443'), 405],
    ['PROPFIND', request('PROPFIND', '/health'), 405],
    ['an unknown method', request('FROB', '/health'), 400],
    ['a lower-case method', request('get', '/health'), 400],
    ['headers past the 16 KiB limit', request('GET', '/health', [`X-Big: ${'a'.repeat(20_000)}`]), 431],
    ['a 20 KiB target', request('GET', `/${'a'.repeat(20_000)}`), 431],
    ['a body past the /search limit', request('POST', '/search', ['Content-Length: 70000']) + 'x'.repeat(70_000), 413],
    ['a chunked body past the /search limit', request('POST', '/search', ['Transfer-Encoding: chunked']) + `11170\r\n${'x'.repeat(70_000)}\r\n0\r\n\r\n`, 413],
    ['a /search body that is not JSON', request('POST', '/search', ['Content-Length: 3']) + '{{{', 400],
    ['a body shorter than its Content-Length', request('POST', '/search', ['Content-Length: 100']) + '{}', 400],
    ['not HTTP at all', Buffer.from([0, 1, 2, 255, 13, 10, 13, 10]), 400],
    ['a WebSocket upgrade without a key', request('GET', '//x:y', ['Upgrade: websocket', 'Connection: Upgrade']), 400],
  ];
  for (const [what, req, status] of cases) {
    const answer = await rawHttp(port, req);
    assert.equal(answer.status, status, `${what}: ${answer.head}`);
    if (answer.status !== 431 && answer.status !== 400 || /content-type: application\/json/i.test(answer.head)) {
      // Our own answers are coded; the HTTP parser's own (400/431 on bytes that are not HTTP) have no body.
      if (answer.body !== '') {
        const { error } = JSON.parse(answer.body) as { error?: { code?: unknown; message?: unknown } };
        assert.ok(isErrorCode(error?.code) && typeof error.message === 'string' && error.message !== '', `${what}: a catalogued code and a message, got ${answer.body}`);
      }
    }
  }
  // The absolute form HTTP/1.1 requires servers to accept reaches the route.
  assert.equal((await rawHttp(port, request('GET', 'http://anything/health'))).status, 200);
  await assertHealthy(n.node, 'after every bad request');
});

/** xorshift32: a fuzz run is reproducible from its seed. */
function prng(seed: number): () => number {
  let s = seed >>> 0 || 1;
  return () => { s ^= s << 13; s >>>= 0; s ^= s >>> 17; s ^= s << 5; s >>>= 0; return s / 0x100000000; };
}

function fuzzRequest(rand: () => number, port: number): Buffer {
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rand() * xs.length)]!;
  // Mostly requests that reach the node's own handler; a tenth the HTTP parser refuses before it.
  const methods = ['GET', 'GET', 'GET', 'HEAD', 'POST', 'POST', 'PUT', 'DELETE', 'OPTIONS', 'PATCH', 'CONNECT', 'TRACE', 'PROPFIND', 'M-SEARCH'];
  const badMethods = ['get', 'G ET', '', 'GET\0', 'X'.repeat(40)];
  const targets = ['/health', '/metrics', '/models/', '/models', '/dataset-tags', '/search', '/', '//x:y', '//[', 'http://[', `http://127.0.0.1:${port}/health`, 'https://h/models', '*', 'a:1', '/%', '/%zz', '/..%2f..%2fetc', '/?q=[', '/#x', '/ü', '//', '///x', '\\\\x', 'http://', 'http://@/', 'http://a:b@c/d'];
  // Mostly characters a URL parser trips on; now and then one the HTTP parser refuses outright.
  const urlish = [':', '/', '[', ']', '@', '%', '?', '#', '\\', '..', '%00', '%2f', '::', '//'];
  const breaking = [' ', '\t', '\u00ff', '"', '<', '{', '\r', '\n'];
  let target = pick(targets);
  for (let k = Math.floor(rand() * 4); k > 0; k--) {
    // Mostly after the first character: a target that does not start with / or a scheme stops at the parser.
    const at = rand() < 0.9 ? 1 + Math.floor(rand() * target.length) : 0;
    const op = rand();
    if (op < 0.6) target = target.slice(0, at) + pick(rand() < 0.9 ? urlish : breaking) + target.slice(at);
    else if (op < 0.8) target = target.slice(0, at);
    else target = target + target.slice(at);
  }
  const headers: string[] = [];
  if (rand() < 0.95) headers.push(`Host: ${pick(['127.0.0.1', 'x', '', '[', 'a:b:c', 'evil.example'])}`);
  if (rand() < 0.3) headers.push(`Origin: ${pick(['https://evil.example', 'null', 'http://127.0.0.1', `http://127.0.0.1:${port}`, '', 'x'])}`);
  if (rand() < 0.15) headers.push('Upgrade: websocket', 'Connection: Upgrade', 'Sec-WebSocket-Version: 13', ...(rand() < 0.5 ? ['Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ=='] : []));
  if (rand() < 0.1) headers.push(`X-Big: ${'b'.repeat(rand() < 0.5 ? 17_000 : 100)}`);
  if (rand() < 0.1) headers.push(pick(['Bad Header: x', 'X-Ctl: \x01', ': empty', 'Content-Length: -1', 'Content-Length: 1, 2', 'Transfer-Encoding: gzip', 'Transfer-Encoding: chunked', 'Access-Control-Request-Method: POST']));
  let body = '';
  if (rand() < 0.3) {
    body = pick(['{"query":["uci"]}', '{"query":[1]}', '[', 'null', '{"query":' + '['.repeat(200), 'x'.repeat(Math.floor(rand() * 2000))]);
    const declared = rand() < 0.8 ? Buffer.byteLength(body) : Math.floor(rand() * 3000);
    headers.push(`Content-Length: ${declared}`);
  }
  const version = rand() < 0.95 ? 'HTTP/1.1' : pick(['HTTP/1.0', 'HTTP/2.0', 'HTTP/1.1 x', 'FOO', '']);
  const method = rand() < 0.9 ? pick(methods) : pick(badMethods);
  return Buffer.from(`${method} ${target} ${version}\r\n${headers.map((h) => `${h}\r\n`).join('')}Connection: close\r\n\r\n${body}`, 'latin1');
}

test('HTTP fuzz: thousands of mutated targets, methods and headers each get an answer below 500, never a wildcard CORS header', async (t) => {
  const seed = Number(process.env.GRID_HTTP_FUZZ_SEED ?? Date.now() % 2 ** 31);
  const count = Number(process.env.GRID_HTTP_FUZZ_COUNT ?? 3000);
  const n = await startTestNode({ datasets: [] });
  t.after(() => n.close());
  const rand = prng(seed);
  const { port } = n.node;
  const requests = Array.from({ length: count }, () => fuzzRequest(rand, port));
  const statuses = new Map<string, number>();
  let next = 0;
  const started = Date.now();
  const worker = async () => {
    while (next < requests.length) {
      const i = next++;
      const req = requests[i]!;
      const a = await rawHttp(port, req);
      const where = `seed ${seed} (GRID_HTTP_FUZZ_SEED=${seed}), request ${i}: ${JSON.stringify(req.toString('latin1').slice(0, 300))}`;
      // 101: a well-formed WebSocket handshake; the half-closed socket then ends it.
      assert.ok(a.status !== undefined, `no HTTP answer; ${where}`);
      assert.ok(a.status < 500, `status ${a.status}; ${where}\n${a.head}`);
      assert.doesNotMatch(a.head, /access-control-allow-origin: \*/i, where);
      // Whether the node's handler answered (JSON) or Node's HTTP parser / the ws handshake refused first.
      const key = `${a.status}${a.status < 300 || /content-type: application\/json/i.test(a.head) ? '' : ' early'}`;
      statuses.set(key, (statuses.get(key) ?? 0) + 1);
    }
  };
  await Promise.all(Array.from({ length: 16 }, worker));
  const ms = Date.now() - started;
  t.diagnostic(`seed ${seed}: ${count} requests in ${ms} ms; statuses ${JSON.stringify(Object.fromEntries([...statuses].sort()))}`);
  await assertHealthy(n.node, `after the fuzz (seed ${seed})`);
});

/** Opens a raw WebSocket the way a browser page would, with an Origin; resolves with the handshake's outcome. */
function openFrom(url: string, origin: string | undefined): Promise<{ opened: true } | { opened: false; status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, { ...(origin !== undefined && { origin }) });
    ws.once('open', () => { ws.close(); resolve({ opened: true }); });
    ws.once('unexpected-response', (_req, res) => {
      let body = '';
      res.setEncoding('utf8').on('data', (d: string) => { body += d; }).on('end', () => resolve({ opened: false, status: res.statusCode ?? 0, body }));
    });
    ws.once('error', (err) => reject(err));
  });
}

test('a web page from an origin that is not allowed cannot open a WebSocket or call HTTP routes; no Origin is unaffected', async (t) => {
  const n = await startTestNode();
  t.after(() => n.close());
  const url = n.node.url;
  const http = `http://127.0.0.1:${n.node.port}`;
  for (const origin of ['https://evil.example', 'null', http]) {
    const r = await openFrom(url, origin);
    assert.equal(r.opened, false, `${origin} must not open a WebSocket by default`);
    if (r.opened) continue;
    assert.equal(r.status, 403);
    assert.equal((JSON.parse(r.body) as { error: { code: string } }).error.code, 'GRID_ERR_ORIGIN_NOT_ALLOWED');
  }
  // The CLI, the extension host and workers send no Origin.
  assert.deepEqual(await openFrom(url, undefined), { opened: true });
  const c = await n.admin();
  assert.equal((await c.getId()).name, 'test-node');
  // HTTP routes: refused for a foreign page, and never a permissive CORS header.
  for (const route of ['/health', '/models/', '/dataset-tags', '/metrics', '/nope']) {
    const res = await fetch(http + route, { headers: { origin: 'https://evil.example' } });
    assert.equal(res.status, 403, route);
    assert.equal(res.headers.get('access-control-allow-origin'), null, route);
    assert.equal(((await res.json()) as { error: { code: string } }).error.code, 'GRID_ERR_ORIGIN_NOT_ALLOWED');
    const plain = await fetch(http + route);
    assert.equal(plain.headers.get('access-control-allow-origin'), null, `${route} without Origin`);
    await plain.arrayBuffer();
  }
  const search = await fetch(`${http}/search`, { method: 'POST', headers: { origin: 'https://evil.example', 'content-type': 'text/plain' }, body: '{"query":["uci"]}' });
  assert.equal(search.status, 403, 'a cross-site form POST is refused');
  const pre = await fetch(`${http}/search`, { method: 'OPTIONS', headers: { origin: 'https://evil.example', 'access-control-request-method': 'POST' } });
  assert.equal(pre.status, 403);
  assert.equal(pre.headers.get('access-control-allow-origin'), null);
});

test('an allowed origin opens a WebSocket and gets CORS answers for exactly that origin', async (t) => {
  const n = await startTestNode({ allowOrigins: ['https://app.example', 'http://localhost:3000/'] });
  t.after(() => n.close());
  const http = `http://127.0.0.1:${n.node.port}`;
  assert.deepEqual(await openFrom(n.node.url, 'https://app.example'), { opened: true });
  assert.deepEqual(await openFrom(n.node.url, 'http://localhost:3000'), { opened: true });
  const other = await openFrom(n.node.url, 'https://app.example.evil');
  assert.equal(other.opened, false);
  // The shared client works from an allowed page too (a browser worker would send its Origin).
  const s = new GridSocket();
  t.after(() => s.dispose());
  await s.connect(n.node.url, { headers: { origin: 'https://app.example' } }, { maxAttempts: 0 });
  const c = new GridClient(s);
  assert.equal((await c.getId()).name, 'test-node');

  const res = await fetch(`${http}/health`, { headers: { origin: 'https://app.example' } });
  assert.equal(res.status, 200);
  assert.equal(res.headers.get('access-control-allow-origin'), 'https://app.example');
  assert.match(res.headers.get('vary') ?? '', /Origin/);
  await res.arrayBuffer();
  const pre = await fetch(`${http}/search`, { method: 'OPTIONS', headers: { origin: 'http://localhost:3000', 'access-control-request-method': 'POST', 'access-control-request-headers': 'content-type' } });
  assert.equal(pre.status, 204);
  assert.equal(pre.headers.get('access-control-allow-origin'), 'http://localhost:3000');
  assert.match(pre.headers.get('access-control-allow-methods') ?? '', /POST/);
  assert.match(pre.headers.get('access-control-allow-headers') ?? '', /content-type/);
});

test('an allow-list entry that is not an origin is refused before the node creates anything', async (t) => {
  const dir = tempDir();
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const dataDir = path.join(dir, 'node');
  for (const bad of ['*', 'null', 'https://app.example/path', 'app.example', 'ftp://x']) {
    await assert.rejects(GridNode.start({ port: 0, dataDir, adminPassword: ADMIN_PASSWORD, processMetrics: false, allowOrigins: [bad] }),
      (e: unknown) => e instanceof GridError && e.code === 'GRID_ERR_INVALID_URL' && e.message.includes(JSON.stringify(bad)), bad);
  }
  assert.equal(fs.existsSync(dataDir), false);
});

/** A self-signed certificate for `san` made by openssl (on the test machine, at test time). */
function selfSigned(dir: string, name: string, san: string): { cert: Buffer; key: Buffer } {
  const cert = path.join(dir, `${name}.crt`);
  const key = path.join(dir, `${name}.key`);
  const r = spawnSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-days', '2',
    '-subj', `/CN=${name}`, '-addext', `subjectAltName=${san}`, '-keyout', key, '-out', cert], { encoding: 'utf8' });
  assert.equal(r.status, 0, `openssl is needed to make a test certificate: ${r.error?.message ?? r.stderr}`);
  return { cert: fs.readFileSync(cert), key: fs.readFileSync(key) };
}

test('TLS: a node with a certificate serves wss and https; clients that do not trust it get TLS_ERROR at once', async (t) => {
  const dir = tempDir();
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const good = selfSigned(dir, 'grid-node', 'IP:127.0.0.1');
  const n = await startTestNode({ tls: good });
  t.after(() => n.close());
  assert.match(n.node.url, /^wss:\/\/127\.0\.0\.1:\d+$/);
  assert.equal(n.node.secure, true);

  const c = await GridClient.connect(n.node.url, { connect: { ca: good.cert }, reconnect: { maxAttempts: 0 }, credentials: { username: 'admin', password: ADMIN_PASSWORD } });
  t.after(() => c.dispose());
  assert.equal((await c.getId()).name, 'test-node');
  const health = await new Promise<number>((resolve, reject) => {
    https.get(`https://127.0.0.1:${n.node.port}/health`, { ca: good.cert }, (res) => { res.resume(); resolve(res.statusCode ?? 0); }).on('error', reject);
  });
  assert.equal(health, 200);

  // Default reconnect policy (unlimited attempts): a certificate failure must still end the connect.
  const started = Date.now();
  await assert.rejects(GridClient.connect(n.node.url), (e: unknown) => {
    assert.ok(e instanceof GridError);
    assert.equal(e.code, 'GRID_ERR_TLS_ERROR', e.message);
    assert.match(e.message, /self-signed certificate/);
    return true;
  });
  const took = Date.now() - started;
  assert.ok(took < 3_000, `TLS_ERROR came after ${took} ms`);
  t.diagnostic(`an untrusted certificate failed the connect with TLS_ERROR in ${took} ms`);

  // Trusted, but issued for another name: a mismatch, named as such.
  const other = selfSigned(dir, 'elsewhere', 'DNS:grid.invalid');
  const m = await startTestNode({ tls: other });
  t.after(() => m.close());
  const s = new GridSocket();
  t.after(() => s.dispose());
  await assert.rejects(s.connect(m.node.url, { ca: other.cert }), (e: unknown) =>
    e instanceof GridError && e.code === 'GRID_ERR_TLS_ERROR' && /ERR_TLS_CERT_ALTNAME_INVALID/.test(e.message) && e.details?.reason === 'ERR_TLS_CERT_ALTNAME_INVALID');
  assert.equal(s.status.state, 'closed');
  assert.equal(s.status.reconnectionLimitReached, false);
});

test('a certificate and key that do not load are refused before the node creates anything', async (t) => {
  const dir = tempDir();
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const a = selfSigned(dir, 'a', 'IP:127.0.0.1');
  const b = selfSigned(dir, 'b', 'IP:127.0.0.1');
  const dataDir = path.join(dir, 'node');
  for (const tls of [{ cert: 'not a certificate', key: a.key }, { cert: a.cert, key: b.key }]) {
    await assert.rejects(GridNode.start({ port: 0, dataDir, adminPassword: ADMIN_PASSWORD, processMetrics: false, tls }), { code: 'GRID_ERR_TLS_ERROR' });
  }
  assert.equal(fs.existsSync(dataDir), false);
});

test('a short admin password names its source and the rule, and leaves no data dir or meta.db', async (t) => {
  const dir = tempDir();
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const dataDir = path.join(dir, 'node');
  await assert.rejects(GridNode.start({ port: 0, dataDir, adminPassword: 'short', processMetrics: false }), (e: unknown) =>
    e instanceof GridError && /adminPassword/.test(e.message) && /at least 8 characters/.test(e.message));
  assert.equal(fs.existsSync(path.join(dataDir, 'meta.db')), false);
  assert.equal(fs.existsSync(dataDir), false);
});

// ---- the grid-node CLI as shipped (dist/grid-node.js; `node scripts/build.mjs` builds it) ----

const CLI = path.join(__dirname, '../../dist/grid-node.js');

function runCli(args: string[], env: NodeJS.ProcessEnv): Promise<{ code: number | null; stdout: string; stderr: string }> {
  assert.ok(fs.existsSync(CLI), `${CLI} is missing: run node scripts/build.mjs`);
  const child = spawn(process.execPath, [CLI, ...args], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (d: string) => { stdout += d; });
  child.stderr.setEncoding('utf8').on('data', (d: string) => { stderr += d; });
  return once(child, 'exit').then(([code]) => ({ code: code as number | null, stdout, stderr }));
}

test('grid-node: the request that killed it is answered, on all interfaces it prints a usable url and warns about TLS', async (t) => {
  assert.ok(fs.existsSync(CLI), `${CLI} is missing: run node scripts/build.mjs`);
  const dir = tempDir();
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const p = await startNodeScript(CLI, ['--host', '0.0.0.0', '--port', '0', '--data-dir', dir, '--log-level', 'warn'], { ...process.env, GRID_ADMIN_PASSWORD: ADMIN_PASSWORD });
  t.after(() => p.kill());
  for (const target of ['//x:y', '//[', 'http://[']) {
    const a = await rawHttp(p.port, request('GET', target));
    assert.ok(a.status !== undefined && a.status >= 400 && a.status < 500, `${target}: ${a.head || 'no answer'}\n${p.stderr()}`);
  }
  assert.doesNotMatch(p.url, /0\.0\.0\.0/, 'the printed url is one a client can dial');
  const c = await GridClient.connect(p.url, { reconnect: { maxAttempts: 0 } });
  t.after(() => c.dispose());
  assert.equal(typeof (await c.getId()).id, 'string');
  assert.equal(p.child.exitCode, null, 'the node is still running');
  assert.match(p.stderr(), /listening on all interfaces/);
  assert.match(p.stderr(), /WARNING: this grid node listens on all interfaces without TLS/);
  assert.match(p.stderr(), /"level":40.*without TLS/, 'the warning is in the log too');
});

test('grid-node: an unhandled rejection is logged and the node keeps serving', async (t) => {
  const dir = tempDir();
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const script = path.join(__dirname, '../fixtures/grid-node-with-stray-rejection.ts');
  const p = await startNodeScript(script, ['--port', '0', '--data-dir', dir, '--log-level', 'warn'], { ...process.env, GRID_ADMIN_PASSWORD: ADMIN_PASSWORD });
  t.after(() => p.kill());
  const deadline = Date.now() + 10_000;
  while (!p.stderr().includes('a stray rejection')) {
    assert.ok(Date.now() < deadline && p.child.exitCode === null, `the rejection was not logged:\n${p.stderr()}`);
    await Promise.race([once(p.child.stderr!, 'data'), once(p.child, 'exit')]);
  }
  assert.match(p.stderr(), /"level":50.*unhandled rejection.*the node keeps serving/);
  const res = await fetch(`http://127.0.0.1:${p.port}/health`);
  assert.equal(res.status, 200);
  await res.arrayBuffer();
  assert.equal(p.child.exitCode, null);
});

test('grid-node: a short GRID_ADMIN_PASSWORD is named with its rule, creates nothing, and --help states the rule', async (t) => {
  const dir = tempDir();
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const dataDir = path.join(dir, 'node');
  const r = await runCli(['--port', '0', '--data-dir', dataDir], { GRID_ADMIN_PASSWORD: 'short' });
  assert.equal(r.code, 1);
  assert.equal(r.stdout, '');
  assert.match(r.stderr, /grid-node: GRID_ERR_INVALID_MESSAGE: GRID_ADMIN_PASSWORD is too short \(5 characters\): the admin password needs at least 8 characters/);
  assert.equal(fs.existsSync(path.join(dataDir, 'meta.db')), false);
  assert.equal(fs.existsSync(dataDir), false);
  const help = await runCli(['--help'], {});
  assert.equal(help.code, 0);
  assert.match(help.stdout, /GRID_ADMIN_PASSWORD[\s\S]*at least 8 characters/);
  assert.match(help.stdout, /--allow-origin/);
  assert.match(help.stdout, /--tls-cert/);
});

test('grid-node: --tls-cert/--tls-key serve wss on the printed url, --allow-origin lets exactly that page in', async (t) => {
  assert.ok(fs.existsSync(CLI), `${CLI} is missing: run node scripts/build.mjs`);
  const dir = tempDir();
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const { cert } = selfSigned(dir, 'cli', 'IP:127.0.0.1');
  const certFile = path.join(dir, 'cli.crt');
  const keyFile = path.join(dir, 'cli.key');
  const half = await runCli(['--port', '0', '--data-dir', path.join(dir, 'half'), '--tls-cert', certFile], { GRID_ADMIN_PASSWORD: ADMIN_PASSWORD });
  assert.equal(half.code, 1);
  assert.match(half.stderr, /GRID_ERR_TLS_ERROR: TLS needs both --tls-cert and --tls-key/);
  assert.equal(fs.existsSync(path.join(dir, 'half')), false);

  const p = await startNodeScript(CLI, ['--port', '0', '--data-dir', path.join(dir, 'node'), '--log-level', 'warn',
    '--tls-cert', certFile, '--tls-key', keyFile, '--allow-origin', 'https://app.example'], { ...process.env, GRID_ADMIN_PASSWORD: ADMIN_PASSWORD });
  t.after(() => p.kill());
  assert.match(p.url, /^wss:\/\/127\.0\.0\.1:\d+$/);
  assert.doesNotMatch(p.stderr(), /without TLS/, 'a loopback node is not warned about');
  const c = await GridClient.connect(p.url, { connect: { ca: cert }, reconnect: { maxAttempts: 0 } });
  t.after(() => c.dispose());
  assert.equal(typeof (await c.getId()).id, 'string');
  const page = (origin: string) => new Promise<number>((resolve, reject) => {
    const ws = new WebSocket(p.url, { origin, ca: cert });
    ws.once('open', () => { ws.close(); resolve(101); });
    ws.once('unexpected-response', (_req, res) => { res.resume(); resolve(res.statusCode ?? 0); });
    ws.once('error', reject);
  });
  assert.equal(await page('https://app.example'), 101);
  assert.equal(await page('https://evil.example'), 403);
});
