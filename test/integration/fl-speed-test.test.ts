// PyGrid's /model-centric/speed-test as an FL worker meets it: a real HTTP server on 127.0.0.1 port 0 whose
// only route is the real handler. The 64 MiB sample is read whole (size, content type, every byte) while the
// node's memory and its send buffer are watched; pings and uploads answer `{}`; bad requests are refused.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Socket } from 'node:net';
import { once } from 'node:events';
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import path from 'node:path';
import { handleSpeedTest, SPEED_TEST_MAX_UPLOAD_BYTES, SPEED_TEST_SAMPLE_BYTES } from '../../src/node/fl/speed-test';

const WORKER = 'b3c9a6a2-5a4e-4f0e-9d7f-0d5f1e2a7c11';
const CORS = { 'access-control-allow-origin': 'https://app.example', vary: 'Origin' };
const MiB = 1024 * 1024;

let server: http.Server;
let base: string;
/** What the route saw of the latest request: the response (to watch its send buffer) and the socket. */
let latest: { res: http.ServerResponse; socket: Socket } | undefined;

before(async () => {
  server = http.createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://node');
    if (url.pathname !== '/model-centric/speed-test') return void res.writeHead(404).end();
    latest = { res, socket: req.socket };
    handleSpeedTest(req, res, url.searchParams, (id) => id === WORKER, CORS);
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}/model-centric/speed-test`;
});

after(async () => {
  server.closeAllConnections();
  await new Promise<void>((resolve) => server.close(() => resolve()));
});

interface Answer { status: number; headers: http.IncomingHttpHeaders; body: string }

function request(method: string, url: string, body?: (req: http.ClientRequest) => void): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString('utf8') }));
      res.on('error', reject);
    });
    req.on('error', reject);
    if (body === undefined) req.end();
    else body(req);
  });
}

test('GET streams a 64 MiB multipart `sample` of "x" with constant memory and a bounded send buffer', async (t) => {
  // The node side runs in its own process, so its memory figure holds only what serving the sample costs.
  const child = spawn(process.execPath, ['--import', 'tsx', path.join(__dirname, '../helpers/fl-speed-test-server.ts'), WORKER], { stdio: ['ignore', 'pipe', 'inherit'] });
  t.after(() => { if (child.exitCode === null && child.signalCode === null) child.kill(); });
  // Lines are queued as they come: the stats line may arrive before the client has read its last byte.
  const queued: string[] = [];
  const waiting: ((line: string) => void)[] = [];
  createInterface({ input: child.stdout! }).on('line', (line) => { const w = waiting.shift(); if (w) w(line); else queued.push(line); });
  const nextLine = (): Promise<string> => new Promise((resolve, reject) => {
    const line = queued.shift();
    if (line !== undefined) return resolve(line);
    const onExit = (code: number | null): void => reject(new Error(`speed-test server exited with ${code}`));
    child.once('exit', onExit);
    waiting.push((l) => { child.off('exit', onExit); resolve(l); });
  });
  const listening = /^listening on (http:\/\/\S+)$/.exec(await nextLine());
  assert.ok(listening, 'the server says where it listens');
  const url = `${listening[1]}/model-centric/speed-test`;

  const xs = Buffer.alloc(MiB, 'x');
  const answer = await new Promise<{ status: number; contentType: string; length: number; total: number; head: string; tail: string; allX: boolean }>((resolve, reject) => {
    http.get(`${url}?worker_id=${WORKER}&random=0.42?0.17`, { agent: false }, (res) => {
      const contentType = String(res.headers['content-type']);
      const boundary = /boundary=([0-9a-f]+)$/.exec(contentType)?.[1] ?? '';
      const head = Buffer.from(`--${boundary}\r\nContent-Disposition: form-data; name="sample"\r\n\r\n`);
      const tailText = `\r\n--${boundary}--\r\n`;
      let total = 0;
      let allX = true;
      let headSeen = '';
      let tail = '';
      res.on('data', (c: Buffer) => {
        // Split each piece into (head | sample | tail) by absolute offset, and compare the sample part to "x"s.
        const start = total;
        total += c.length;
        const sampleStart = head.length;
        const sampleEnd = head.length + SPEED_TEST_SAMPLE_BYTES;
        if (start < sampleStart) headSeen += c.subarray(0, Math.min(c.length, sampleStart - start)).toString('latin1');
        const from = Math.max(start, sampleStart) - start;
        const to = Math.min(total, sampleEnd) - start;
        for (let i = from; i < to; i += MiB) {
          const part = c.subarray(i, Math.min(to, i + MiB));
          if (!part.equals(xs.subarray(0, part.length))) allX = false;
        }
        if (total > sampleEnd) tail += c.subarray(Math.max(0, sampleEnd - start)).toString('latin1');
      });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, contentType, length: Number(res.headers['content-length']), total, head: headSeen, tail: tail === tailText ? 'ok' : tail, allX }));
      res.on('error', reject);
    }).on('error', reject);
  });
  const stats = JSON.parse(await nextLine()) as { baseRss: number; peakRss: number; peakBuffered: number; finished: boolean };

  assert.equal(answer.status, 200);
  assert.match(answer.contentType, /^multipart\/form-data; boundary=[0-9a-f]{32}$/);
  assert.match(answer.head, /^--[0-9a-f]{32}\r\nContent-Disposition: form-data; name="sample"\r\n\r\n$/);
  assert.equal(answer.tail, 'ok');
  assert.equal(answer.total, answer.length, 'content-length announces the whole body');
  assert.equal(answer.total - answer.head.length - `\r\n--${'0'.repeat(32)}--\r\n`.length, SPEED_TEST_SAMPLE_BYTES);
  assert.ok(answer.allX, 'every sample byte is "x"');
  assert.equal(stats.finished, true);
  const grewMiB = (stats.peakRss - stats.baseRss) / MiB;
  console.log(`speed-test download: node RSS growth ${grewMiB.toFixed(1)} MiB (base ${(stats.baseRss / MiB).toFixed(0)} MiB), peak send buffer ${(stats.peakBuffered / MiB).toFixed(2)} MiB`);
  assert.ok(grewMiB < 32, `the node's RSS grew by ${grewMiB.toFixed(1)} MiB while serving a 64 MiB sample (materialised?)`);
  assert.ok(stats.peakBuffered <= 4 * MiB, `the node buffered ${(stats.peakBuffered / MiB).toFixed(1)} MiB for its reader (backpressure ignored?)`);
});

test('a standard multipart parser reads the sample as one field `sample` of 64 MiB "x"', async () => {
  const res = await fetch(`${base}?worker_id=${WORKER}&random=1`);
  assert.equal(res.status, 200);
  assert.equal(res.headers.get('access-control-allow-origin'), 'https://app.example');
  const form = await res.formData();
  assert.deepEqual([...form.keys()], ['sample']);
  const sample = form.get('sample') as string;
  assert.equal(sample.length, SPEED_TEST_SAMPLE_BYTES);
  assert.equal(sample.replaceAll('x', ''), '');
});

test('a worker that stops reading mid-download ends the transfer on the node', async () => {
  const closed = new Promise<http.ServerResponse>((resolve, reject) => {
    const req = http.get(`${base}?worker_id=${WORKER}&random=2`, { agent: false }, (res) => {
      res.once('data', () => {
        const serverRes = latest!.res;
        serverRes.once('close', () => resolve(serverRes));
        req.destroy();
      });
    });
    req.on('error', (err) => { if ((err as NodeJS.ErrnoException).code !== 'ECONNRESET') reject(err); });
  });
  const res = await closed;
  assert.equal(res.writableFinished, false, 'the sample was not finished');
  assert.equal(res.listenerCount('drain'), 0, 'nothing is left waiting to write more');
  const ping = await request('GET', `${base}?is_ping=1&worker_id=${WORKER}&random=3`);
  assert.equal(ping.status, 200, 'the node still answers');
});

test('GET ?is_ping=1 (syft.js URL with its appended ?random) answers 200 {}', async () => {
  const ping = await request('GET', `${base}?is_ping=1&worker_id=${encodeURIComponent(WORKER)}&random=0.3141?0.2718`);
  assert.equal(ping.status, 200);
  assert.equal(ping.headers['content-type'], 'application/json');
  assert.equal(ping.headers['access-control-allow-origin'], 'https://app.example');
  assert.deepEqual(JSON.parse(ping.body), {});
});

test('POST: a 64 MiB raw upload (syft.js) and a multipart upload (KotlinSyft) are drained and answered {}', async () => {
  const raw = await request('POST', `${base}?worker_id=${WORKER}&random=0.5`, (req) => {
    const piece = Buffer.alloc(MiB, 7);
    let left = 64;
    const write = (): void => {
      while (left > 0) {
        left--;
        if (!req.write(piece)) return void req.once('drain', write);
      }
      req.end();
    };
    write();
  });
  assert.equal(raw.status, 200);
  assert.deepEqual(JSON.parse(raw.body), {});

  const boundary = 'kotlinsyft-boundary';
  const parts = Buffer.concat([
    Buffer.from(`--${boundary}\r\nContent-Disposition: form-data; name="description"\r\nContent-Type: text/plain\r\n\r\nspeed test\r\n`),
    Buffer.from(`--${boundary}\r\nContent-Disposition: form-data; name="sample"; filename="sample"\r\nContent-Type: application/octet-stream\r\n\r\n`),
    Buffer.alloc(4 * MiB, 'x'),
    Buffer.from(`\r\n--${boundary}--\r\n`),
  ]);
  const multipart = await request('POST', `${base}?worker_id=${WORKER}&random=6`, (req) => {
    req.setHeader('content-type', `multipart/form-data; boundary=${boundary}`);
    req.end(parts);
  });
  assert.equal(multipart.status, 200);
  assert.deepEqual(JSON.parse(multipart.body), {});
});

test(`POST: an upload past ${SPEED_TEST_MAX_UPLOAD_BYTES / MiB} MiB is not read to its end`, async () => {
  const piece = Buffer.alloc(MiB, 1);
  const limit = SPEED_TEST_MAX_UPLOAD_BYTES / MiB + 128;
  const outcome = await new Promise<{ status: number | undefined; body: string; sentMiB: number }>((resolve) => {
    let sent = 0;
    let settled = false;
    const settle = (status: number | undefined, body: string): void => {
      if (settled) return;
      settled = true;
      resolve({ status, body, sentMiB: sent });
    };
    const req = http.request(`${base}?worker_id=${WORKER}&random=9`, { method: 'POST', agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => settle(res.statusCode, Buffer.concat(chunks).toString('utf8')));
      res.on('error', () => settle(res.statusCode, ''));
    });
    req.on('error', () => settle(undefined, '')); // the node may close while we are still sending
    const write = (): void => {
      while (sent < limit && !req.destroyed) {
        sent++;
        if (!req.write(piece)) return void req.once('drain', write);
      }
      if (!req.destroyed) req.end();
    };
    write();
  });
  const readMiB = latest!.socket.bytesRead / MiB;
  console.log(`speed-test oversized upload: answer ${outcome.status}, client sent ${outcome.sentMiB} MiB, node read ${readMiB.toFixed(1)} MiB`);
  if (outcome.status !== undefined) {
    assert.equal(outcome.status, 413);
    assert.match(JSON.parse(outcome.body).error, /at most/);
  }
  assert.ok(readMiB < SPEED_TEST_MAX_UPLOAD_BYTES / MiB + 16, `the node read ${readMiB.toFixed(1)} MiB`);
  assert.ok(latest!.socket.destroyed || (await once(latest!.socket, 'close'), true), 'the connection is closed');
});

test('missing worker_id or random: 400 naming what is missing; unknown worker: 401; other methods: 405', async () => {
  const noWorker = await request('GET', `${base}?random=1`);
  assert.equal(noWorker.status, 400);
  assert.match(JSON.parse(noWorker.body).error, /worker_id/);
  assert.doesNotMatch(JSON.parse(noWorker.body).error, /random and|and random/);

  const noRandom = await request('GET', `${base}?is_ping=1&worker_id=${WORKER}`);
  assert.equal(noRandom.status, 400);
  assert.match(JSON.parse(noRandom.body).error, /\brandom\b/);
  assert.doesNotMatch(JSON.parse(noRandom.body).error, /parameters worker_id/);

  const neither = await request('POST', `${base}`, (req) => req.end('abc'));
  assert.equal(neither.status, 400);
  assert.match(JSON.parse(neither.body).error, /worker_id and random/);
  assert.equal(neither.headers.connection, 'close', 'an unread body closes the connection');

  const empty = await request('GET', `${base}?worker_id=&random=`);
  assert.equal(empty.status, 400);

  const stranger = await request('GET', `${base}?worker_id=someone-else&random=1`);
  assert.equal(stranger.status, 401);
  assert.match(JSON.parse(stranger.body).error, /authenticate/);
  assert.equal(stranger.headers['access-control-allow-origin'], 'https://app.example');

  const put = await request('PUT', `${base}?worker_id=${WORKER}&random=1`);
  assert.equal(put.status, 405);
  assert.equal(put.headers.allow, 'GET, POST');
});
