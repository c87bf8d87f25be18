// GridSocket against the real GridServer over real sockets on 127.0.0.1, port 0.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { createServer as createHttpServer } from 'node:http';
import { createServer as createTcpServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { once } from 'node:events';
import { after, before, describe, test } from 'node:test';
import { GridClient } from '../../src/core/client';
import { ErrorCodes, GridError } from '../../src/core/errors';
import { GridSocket, type SocketStatus } from '../../src/core/socket/grid-socket';
import type { IncomingMessage } from '../../src/core/protocol/envelope';
import { generatedSha256, generatedSource, randomSeed } from '../helpers/bytes';
import { startNodeScript } from '../helpers/processes';
import { ADMIN_PASSWORD, mlpModel, startTestNode as startGridNode } from '../helpers/node-fixtures';
import { corruptingLink, startProxy } from '../helpers/proxy';
import { WebSocketServer } from 'ws';
import {
  Claim, Count, Double, Echo, EchoIdempotent, Garbage, Hang, Held, Offer, Release, Stats, Tick, Ticks, WhoAmI,
  startTestNode, type TestNode,
} from '../fixtures/test-node';

const fast = { initialDelayMs: 10, maxDelayMs: 50 };
const FIXTURE = join(__dirname, '../fixtures/test-node-main.ts');

function statusUntil(socket: GridSocket, pred: (s: SocketStatus) => boolean): Promise<SocketStatus> {
  if (pred(socket.status)) return Promise.resolve(socket.status);
  return new Promise((resolve) => {
    const on = (s: SocketStatus) => { if (pred(s)) { socket.off('status', on); resolve(s); } };
    socket.on('status', on);
  });
}

async function rejectsWith(p: Promise<unknown>, code: string): Promise<GridError> {
  try {
    await p;
  } catch (err) {
    assert.ok(err instanceof GridError, `expected a GridError, got ${err}`);
    assert.equal(err.code, code, err.message);
    return err;
  }
  assert.fail(`expected rejection with ${code}`);
}

let dir: string;
let node: TestNode;
before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'grid-socket-'));
  node = await startTestNode({ dir: join(dir, 'inproc') });
});
after(async () => {
  await node.close();
  await rm(dir, { recursive: true, force: true });
});

async function connected(url = node.url, reconnect = fast): Promise<GridSocket> {
  const s = new GridSocket();
  await s.connect(url, { heartbeatMs: 0 }, reconnect);
  return s;
}

describe('requests', () => {
  test('interleaved concurrent requests each get their own reply', async () => {
    const s = await connected();
    const values = Array.from({ length: 300 }, (_, i) => ({ i, text: `v${i}`.repeat(i % 7) }));
    // Different yield counts make the node answer in a different order than asked.
    const replies = await Promise.all(values.map((v, i) => s.request(Echo, { value: v, turns: (i * 37) % 11 })));
    assert.deepEqual(replies.map((r) => r.value), values);
    s.dispose();
  });

  test('a request with no reply times out with GRID_ERR_TIMEOUT, and its late reply is dropped', async () => {
    const s = await connected();
    const late = new Promise<IncomingMessage>((resolve) => s.onMessage((m) => { if (m.type === 'held') resolve(m); }));
    const err = await rejectsWith(s.request(Held, { tag: 'late' }, { timeout: 30 }), ErrorCodes.TIMEOUT);
    assert.match(err.message, /held got no reply .* within 30 ms/);
    assert.deepEqual(await s.request(Release, { tag: 'late' }), { released: true });
    // The late reply reaches the socket but resolves nothing; the next request gets its own reply.
    assert.deepEqual((await late).data, { tag: 'late' });
    assert.deepEqual(await s.request(Echo, { value: 'mine' }), { value: 'mine' });
    s.dispose();
  });

  test('each request keeps its own deadline: a short one sent after a long one times out alone', async () => {
    const s = await connected();
    const settled: string[] = [];
    const long = s.request(Held, { tag: 'long' }, { timeout: 60_000 }).then((r) => { settled.push('long'); return r; });
    const short = rejectsWith(s.request(Held, { tag: 'short' }, { timeout: 30 }), ErrorCodes.TIMEOUT).then((e) => { settled.push('short'); return e; });
    assert.match((await short).message, /within 30 ms/);
    assert.deepEqual(settled, ['short'], 'the long request is still waiting');
    // The long one was not failed by the timer that fired for the short one: its reply still arrives.
    assert.deepEqual(await s.request(Release, { tag: 'long' }), { released: true });
    assert.equal((await long).tag, 'long');
    assert.deepEqual(settled, ['short', 'long']);
    s.dispose();
  });

  test('requests already waiting when the first deadline fires each still time out on their own deadline, in order', async () => {
    // A server that accepts the connection and never answers anything.
    const silent = new WebSocketServer({ port: 0, host: '127.0.0.1' });
    await once(silent, 'listening');
    const s = await connected(`ws://127.0.0.1:${(silent.address() as AddressInfo).port}`);
    const timeouts = [100, 400, 700, 1000];
    const failed: { timeout: number; afterMs: number; code: string }[] = [];
    const t0 = performance.now();
    const all = Promise.all(timeouts.map((timeout) => s.request('never-answered', { timeout }, { timeout }).then(
      () => assert.fail('a silent server answered'),
      (err: GridError) => { failed.push({ timeout, afterMs: performance.now() - t0, code: err.code }); },
    )));
    // A bound, not a sleep: requests that never time out fail the test instead of hanging it.
    let guard: NodeJS.Timeout | undefined;
    const stuck = new Promise<never>((_, reject) => {
      guard = setTimeout(() => reject(new Error(`still waiting 10 s after the last deadline; timed out so far: ${JSON.stringify(failed)}`)), timeouts.at(-1)! + 10_000);
    });
    try {
      await Promise.race([all, stuck]);
    } finally {
      clearTimeout(guard);
      s.dispose();
      silent.close();
    }
    assert.deepEqual(failed.map((f) => f.timeout), timeouts, 'each request timed out, earliest deadline first');
    for (const f of failed) {
      assert.equal(f.code, ErrorCodes.TIMEOUT);
      assert.ok(f.afterMs >= f.timeout, `the ${f.timeout} ms request failed early, after ${f.afterMs.toFixed(0)} ms`);
      // Generous: the machine may be loaded; a timer that was never re-armed misses by ever, not by seconds.
      assert.ok(f.afterMs < f.timeout + 5000, `the ${f.timeout} ms request failed only after ${f.afterMs.toFixed(0)} ms`);
    }
  });

  test('an aborted request rejects with GRID_ERR_ABORTED and the node sees the cancel', async () => {
    const s = await connected();
    const ac = new AbortController();
    const p = s.request(Hang, { tag: 'abort-1' }, { signal: ac.signal });
    await s.request(Echo, { value: 1 }); // the hang request has reached the node
    ac.abort();
    await rejectsWith(p, ErrorCodes.ABORTED);
    const stats = await s.request(Stats, {});
    assert.ok(stats.aborted.includes('abort-1'), `node saw: ${stats.aborted}`);
    s.dispose();
  });

  test('invalid request data is refused before sending, naming the field', async () => {
    const s = await connected();
    const err = await rejectsWith(s.request(Hang, { tag: 42 } as never), ErrorCodes.INVALID_MESSAGE);
    assert.match(err.message, /data\.tag/);
    s.dispose();
  });

  test('the node answers unknown types and wrong field types with coded errors', async () => {
    const s = await connected();
    await rejectsWith(s.request('no-such-thing', {}), ErrorCodes.UNKNOWN_TYPE);
    const err = await rejectsWith(s.request('hang', { tag: 7 }), ErrorCodes.INVALID_MESSAGE);
    assert.match(err.message, /hang: data\.tag/);
    assert.deepEqual(await s.request(Echo, { value: 'still alive' }), { value: 'still alive' });
    s.dispose();
  });

  test('binary attachments travel with the request and the reply', async () => {
    const s = await connected();
    const bytes = Buffer.from([1, 2, 3, 250]);
    const r = await s.call(Double, {}, { attachment: bytes });
    assert.deepEqual(r.data, { ok: true });
    assert.deepEqual([...r.attachment!], [1, 2, 3, 250, 1, 2, 3, 250]);
    s.dispose();
  });

  test('an attachment in parts goes out as it was when the request was made, even when the request waits for the connection', async () => {
    const s = new GridSocket();
    const opening = s.connect(node.url, { heartbeatMs: 0 }, fast);
    const head = new Uint8Array([1, 2]);
    const tail = new Uint8Array([3, 250]);
    const reply = s.call(Double, {}, { attachment: [head, tail] });
    // The caller reuses its arrays before the frame could go out.
    head[0] = 99;
    tail[1] = 99;
    await opening;
    const r = await reply;
    assert.deepEqual([...r.attachment!], [1, 2, 3, 250, 1, 2, 3, 250]);
    s.dispose();
  });

  test('malformed frames from the node are reported as protocol errors, not thrown', async () => {
    const s = await connected();
    const errors: GridError[] = [];
    s.on('protocol-error', (e: GridError) => errors.push(e));
    assert.deepEqual(await s.request(Garbage, {}), { ok: true });
    assert.equal(errors.length, 3);
    assert.ok(errors.every((e) => e.code === ErrorCodes.MALFORMED_FRAME));
    assert.match(errors[0]!.message, /not JSON/);
    assert.deepEqual(await s.request(Echo, { value: 2 }), { value: 2 });
    s.dispose();
  });
});

describe('streams', () => {
  test('a stream delivers every event in order, then its end', async () => {
    const s = await connected();
    const st = s.stream(Count, { count: 1000 });
    const got: number[] = [];
    for await (const ev of st) got.push(ev.i);
    assert.deepEqual(got, Array.from({ length: 1000 }, (_, i) => i));
    assert.deepEqual(await st.done, { total: 1000 });
    s.dispose();
  });

  test('breaking out of a stream cancels it and the node sees the teardown', async () => {
    const s = await connected();
    const st = s.stream(Ticks, { tag: 'cancel-1' });
    await s.request(Tick, { tag: 'cancel-1' });
    await s.request(Tick, { tag: 'cancel-1' });
    let n = 0;
    for await (const _ev of st) if (++n === 2) break;
    const stats = await s.request(Stats, {});
    assert.ok(stats.aborted.includes('ticks:cancel-1'), `node saw: ${stats.aborted}`);
    await rejectsWith(st.done, ErrorCodes.ABORTED);
    s.dispose();
  });

  test('a stream opened without teardown is not cancelled on the node', async () => {
    const s = await connected();
    const st = s.stream(Ticks, { tag: 'keep-1' }, { teardown: false });
    await s.request(Tick, { tag: 'keep-1' });
    const events: unknown[] = [];
    st.subscribe({ next: (e) => events.push(e) });
    st.cancel();
    // The node still has the stream: ticking it still works, and it saw no cancel.
    assert.deepEqual(await s.request(Tick, { tag: 'keep-1' }), { delivered: 1 });
    const stats = await s.request(Stats, {});
    assert.ok(!stats.aborted.includes('ticks:keep-1'));
    s.dispose();
  });
});

describe('reconnect', () => {
  test('after the node process restarts: status, stream resumed, token re-sent, requests retried or rejected', async () => {
    const nodeDir = join(dir, 'restart');
    let proc = await startNodeScript(FIXTURE, ['--port', '0', '--dir', nodeDir]);
    const s = new GridSocket();
    const states: string[] = [];
    s.on('status', (st: SocketStatus) => states.push(st.state));
    await s.connect(proc.url, { heartbeatMs: 0 }, fast);
    await s.authenticate({ username: 'ada', password: 'lovelace' });
    const st = s.stream(Ticks, { tag: 'survivor' });
    const it = st[Symbol.asyncIterator]();
    await s.request(Tick, { tag: 'survivor' });
    const first = (await it.next()).value as { pid: number };
    assert.equal(first.pid, proc.child.pid);

    const held = rejectsWith(s.request(Held, { tag: 'not-idempotent' }), ErrorCodes.CONNECTION_DROPPED);
    const retried = s.request(Held, { tag: 'idempotent' }, { idempotent: true, timeout: 60_000 });
    await s.request(Echo, { value: 0 }); // both are on the node now
    const reconnecting = statusUntil(s, (x) => x.state === 'reconnecting');
    await proc.kill('SIGKILL');
    const dropped = await reconnecting;
    assert.equal(dropped.closedClean, false);
    assert.equal(dropped.closedCode, 1006);
    await held;

    const reopened = statusUntil(s, (x) => x.state === 'open');
    proc = await startNodeScript(FIXTURE, ['--port', String(proc.port), '--dir', nodeDir]);
    await reopened;
    assert.deepEqual(await s.request(WhoAmI, {}), { user: 'ada' });
    assert.deepEqual(await s.request(Release, { tag: 'idempotent' }), { released: true });
    assert.deepEqual(await retried, { tag: 'idempotent' });
    await s.request(Tick, { tag: 'survivor' });
    const second = (await it.next()).value as { pid: number };
    assert.equal(second.pid, proc.child.pid, 'the event came from the restarted node on the same stream');
    const stats = await s.request(Stats, {});
    assert.equal(stats.ticksStarted, 1, 'the stream was re-subscribed once');
    assert.equal(stats.authByPassword, 1, 'the new node did not know the old token; the password was used');
    assert.ok(states.includes('reconnecting') && states.at(-1) === 'open', states.join(','));
    s.dispose();
    await proc.kill('SIGTERM');
  });

  test('a cut connection re-sends the session token', async () => {
    const proxy = await startProxy(node.port);
    const s = await connected(`ws://127.0.0.1:${proxy.port}`);
    await s.authenticate({ username: 'ada', password: 'lovelace' });
    const before = await s.request(Stats, {});
    const reopened = statusUntil(s, (x) => x.state === 'reconnecting').then(() => statusUntil(s, (x) => x.state === 'open'));
    proxy.cut();
    await reopened;
    assert.deepEqual(await s.request(WhoAmI, {}), { user: 'ada' });
    const afterStats = await s.request(Stats, {});
    assert.equal(afterStats.authByToken, before.authByToken + 1);
    assert.equal(afterStats.authByPassword, before.authByPassword);
    assert.equal(s.status.authenticated, true);
    s.dispose();
    await proxy.close();
  });

  test('reconnect attempts stop at the limit, with the status saying so', async () => {
    // A port nothing listens on: take one, then close it.
    const proxy = await startProxy(1);
    const port = proxy.port;
    await proxy.close();
    const s = new GridSocket();
    const attempts: number[] = [];
    s.on('status', (st: SocketStatus) => { if (st.state === 'reconnecting') attempts.push(st.attempt); });
    const err = await rejectsWith(s.connect(`ws://127.0.0.1:${port}`, { heartbeatMs: 0 }, { maxAttempts: 3, initialDelayMs: 1, maxDelayMs: 4 }), ErrorCodes.RECONNECT_LIMIT);
    assert.match(err.message, /after 3 attempts/);
    assert.equal(s.status.state, 'closed');
    assert.equal(s.status.reconnectionLimitReached, true);
    assert.deepEqual([...new Set(attempts)], [1, 2, 3]);
    await rejectsWith(s.request(Echo, { value: 1 }), ErrorCodes.RECONNECT_LIMIT);
    s.dispose();
  });

  test('a node that stops answering pings is treated as dead and reconnected', async () => {
    const proxy = await startProxy(node.port);
    const s = new GridSocket();
    await s.connect(`ws://127.0.0.1:${proxy.port}`, { heartbeatMs: 40 }, fast);
    // Freeze the link without closing it: pongs stop coming back.
    const stalled = statusUntil(s, (x) => x.state === 'reconnecting');
    const frozen = await freezeLink(proxy.port, s);
    const st = await stalled;
    assert.equal(st.closedCode, 1006);
    frozen();
    s.dispose();
    await proxy.close();
  });
});

/** A port on 127.0.0.1 that nothing listens on: taken, then closed. */
async function closedPort(): Promise<number> {
  const server = createTcpServer();
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address() as AddressInfo;
  await new Promise((r) => server.close(r));
  return port;
}

async function listening<S extends Server | import('node:http').Server>(server: S): Promise<number> {
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return (server.address() as AddressInfo).port;
}

function closeServer(server: Server | import('node:http').Server): Promise<void> {
  return new Promise((r) => server.close(() => r()));
}

describe('why a connection could not be made', () => {
  test('a refused connection says so, names the address and carries ECONNREFUSED; status fires once per attempt', async () => {
    const port = await closedPort();
    const s = new GridSocket();
    const seen: string[] = [];
    const failures = new Set<string | undefined>();
    s.on('status', (st: SocketStatus) => {
      seen.push(`${st.state}:${st.attempt}`);
      if (st.state === 'reconnecting') failures.add(st.failure);
    });
    const err = await rejectsWith(s.connect(`ws://127.0.0.1:${port}`, { heartbeatMs: 0 }, { maxAttempts: 3, initialDelayMs: 1, maxDelayMs: 4 }), ErrorCodes.RECONNECT_LIMIT);
    assert.equal(err.message, `gave up reconnecting to ws://127.0.0.1:${port} after 3 attempts: connection refused by 127.0.0.1:${port}: nothing listens there — is the node running?`);
    assert.equal(err.details?.cause, 'ECONNREFUSED');
    // One event per real change: connecting, each attempt once, then closed.
    assert.deepEqual(seen, ['connecting:0', 'reconnecting:1', 'reconnecting:2', 'reconnecting:3', 'closed:3']);
    assert.deepEqual([...failures], [`connection refused by 127.0.0.1:${port}: nothing listens there — is the node running?`], 'the sidebar can show why while it retries');
    const later = await rejectsWith(s.request(Echo, { value: 1 }), ErrorCodes.RECONNECT_LIMIT);
    assert.match(later.message, /^not connected: gave up reconnecting .*connection refused/);
    s.dispose();
  });

  test('an address that accepts TCP but never answers the handshake says it did not answer in time', async () => {
    const held = new Set<Socket>();
    const server = createTcpServer((sock) => { held.add(sock); sock.on('error', () => {}); });
    const port = await listening(server);
    const s = new GridSocket();
    const err = await rejectsWith(s.connect(`ws://127.0.0.1:${port}`, { heartbeatMs: 0, handshakeTimeoutMs: 150 }, { maxAttempts: 1, initialDelayMs: 1 }), ErrorCodes.RECONNECT_LIMIT);
    assert.match(err.message, new RegExp(`after 1 attempts: 127\\.0\\.0\\.1:${port} did not complete the WebSocket handshake within 150 ms`));
    assert.equal(err.details?.cause, 'HANDSHAKE_TIMEOUT');
    s.dispose();
    for (const sock of held) sock.destroy();
    await closeServer(server);
  });

  test('a host name that does not resolve is named as not found', async () => {
    const s = new GridSocket();
    // .invalid never resolves (RFC 6761); a machine without DNS answers EAI_AGAIN instead.
    const err = await rejectsWith(s.connect('ws://no-such-node.invalid:5000', { heartbeatMs: 0 }, { enabled: false }), ErrorCodes.CONNECTION_DROPPED);
    assert.ok(['ENOTFOUND', 'EAI_AGAIN'].includes(err.details?.cause as string), String(err.details?.cause));
    assert.match(err.message, /^could not connect to ws:\/\/no-such-node\.invalid:5000: the host name no-such-node\.invalid (was not found|could not be looked up)/);
    s.dispose();
  });

  test('a node refusing the page\'s origin (HTTP 403) fails at once with its own code and message, without retrying', async () => {
    const n = await startGridNode();
    try {
      const s = new GridSocket();
      const states: string[] = [];
      s.on('status', (st: SocketStatus) => states.push(st.state));
      const err = await rejectsWith(s.connect(n.node.url, { heartbeatMs: 0, headers: { origin: 'https://evil.example' } }, fast), ErrorCodes.ORIGIN_NOT_ALLOWED);
      assert.match(err.message, /refused the connection \(HTTP 403 Forbidden\): this node does not accept web pages from https:\/\/evil\.example; its operator can allow them with --allow-origin/);
      assert.deepEqual(err.details, { cause: 'HTTP_403', status: 403, node_code: ErrorCodes.ORIGIN_NOT_ALLOWED });
      assert.deepEqual(states, ['connecting', 'closed'], 'a deliberate refusal is not retried');
      assert.equal(s.status.reconnectionLimitReached, false);
      await rejectsWith(s.request(Echo, { value: 1 }), ErrorCodes.NOT_CONNECTED);
      s.dispose();
    } finally {
      await n.close();
    }
  });

  test('a web server that is not a grid node (HTTP 404) is named as such and not retried; a 503 is retried', async () => {
    let requests = 0;
    let status = 404;
    const server = createHttpServer((_req, res) => { requests++; res.writeHead(status, { 'content-type': 'text/html' }).end('<h1>nothing here</h1>'); });
    server.on('upgrade', (_req, sock: Socket) => {
      requests++;
      sock.end(`HTTP/1.1 ${status} ${status === 404 ? 'Not Found' : 'Service Unavailable'}\r\ncontent-type: text/html\r\ncontent-length: 9\r\nconnection: close\r\n\r\nnot here!`);
    });
    const port = await listening(server);
    const url = `ws://127.0.0.1:${port}`;
    const s = new GridSocket();
    const err = await rejectsWith(s.connect(url, { heartbeatMs: 0 }, fast), ErrorCodes.NOT_CONNECTED);
    assert.equal(err.message, `${url} answered HTTP 404 Not Found instead of opening a WebSocket: it is not a grid node, or the URL's path is wrong`);
    assert.equal(err.details?.cause, 'HTTP_404');
    assert.equal(requests, 1);
    status = 503;
    const again = await rejectsWith(s.connect(url, { heartbeatMs: 0 }, { maxAttempts: 2, initialDelayMs: 1, maxDelayMs: 2 }), ErrorCodes.RECONNECT_LIMIT);
    assert.match(again.message, /after 2 attempts: .* answered HTTP 503 Service Unavailable instead of opening a WebSocket/);
    assert.equal(requests, 4);
    s.dispose();
    await closeServer(server);
  });
});

describe('closedClean', () => {
  test('a node closing with 4001 completes the closing handshake: closedClean is true; a dropped TCP connection is not clean', async () => {
    const wss = new WebSocketServer({ port: 0, host: '127.0.0.1' });
    await new Promise((r) => wss.once('listening', r));
    let mode: 'close' | 'drop' = 'close';
    wss.on('connection', (ws) => {
      if (mode === 'close') ws.close(4001, 'session expired');
      else (ws as unknown as { _socket: Socket })._socket.destroy();
    });
    const url = `ws://127.0.0.1:${(wss.address() as AddressInfo).port}`;
    for (const [m, code, clean] of [['close', 4001, true], ['drop', 1006, false]] as const) {
      mode = m;
      const s = new GridSocket();
      const dropped = statusUntil(s, (x) => x.state === 'reconnecting');
      // The first open may resolve before the server's close arrives, or not: either is fine here.
      s.connect(url, { heartbeatMs: 0 }, { maxAttempts: 1, initialDelayMs: 1 }).catch(() => {});
      const st = await dropped;
      assert.equal(st.closedCode, code, m);
      assert.equal(st.closedClean, clean, m);
      if (m === 'close') assert.equal(st.closedReason, 'session expired');
      s.dispose();
    }
    await new Promise((r) => wss.close(r));
  });
});

/** Pauses the client's TCP socket reads so the peer's pongs never arrive; returns an undo. */
async function freezeLink(_port: number, s: GridSocket): Promise<() => void> {
  const ws = (s as unknown as { ws: { _socket: import('node:net').Socket } }).ws;
  ws._socket.pause();
  return () => ws._socket.resume();
}

describe('transfers', () => {
  test('a 1 GiB upload cut mid-way resumes from the last acknowledged chunk and matches its sha256', async () => {
    const proxy = await startProxy(node.port);
    const s = await connected(`ws://127.0.0.1:${proxy.port}`);
    const size = 1024 ** 3;
    const seed = randomSeed();
    let cutAt = -1;
    let maxDone = 0;
    const result = await s.upload(generatedSource(seed, size), {
      onProgress: (done) => {
        if (done < maxDone) assert.fail('progress went backwards');
        maxDone = done;
        if (cutAt < 0 && done >= size / 2) { cutAt = done; proxy.cut(); }
      },
    });
    assert.ok(cutAt > 0, 'the connection was cut');
    const expected = generatedSha256(seed, size);
    assert.equal(result.sha256, expected);
    assert.deepEqual(await s.request(Claim, { transfer_id: result.transfer_id }), { size, sha256: expected });
    assert.ok(s.status.attempt === 0 && s.status.state === 'open');
    s.dispose();
    await proxy.close();
  });

  test('what the node stores is byte for byte what was uploaded, whole blocks and odd tails alike', async () => {
    // 1 MiB chunks are written straight to disk (O_DIRECT) from aligned buffers; the 1234-byte tail and
    // 10000-byte chunks (not whole 4 KiB blocks) go through the page cache. The claim hashes the file on disk.
    const s = await connected(node.url);
    for (const [size, chunkSize] of [[5 * 1024 * 1024 + 1234, undefined], [300_000, 10_000]] as const) {
      const seed = randomSeed();
      const result = await s.upload(generatedSource(seed, size), chunkSize === undefined ? {} : { chunkSize });
      const expected = generatedSha256(seed, size);
      assert.equal(result.sha256, expected);
      assert.deepEqual(await s.request(Claim, { transfer_id: result.transfer_id }), { size, sha256: expected }, `upload of ${size} bytes in ${chunkSize ?? 'default'} chunks`);
    }
    s.dispose();
  });

  test('a download cut mid-way resumes and verifies its sha256; bytes arrive in order', async () => {
    const proxy = await startProxy(node.port);
    const s = await connected(`ws://127.0.0.1:${proxy.port}`);
    const size = 96 * 1024 * 1024 + 12345;
    const offer = await s.request(Offer, { seed: 7, size });
    const h = createHash('sha256');
    let written = 0;
    let cut = false;
    const r = await s.download(offer, {
      async write(bytes, offset) {
        assert.equal(offset, written, 'a resumed download restarts exactly where writing stopped');
        h.update(bytes);
        written += bytes.length;
        if (!cut && written > size / 3) { cut = true; proxy.cut(); }
      },
    });
    assert.ok(cut);
    assert.equal(r.size, size);
    assert.equal(h.digest('hex'), offer.sha256);
    s.dispose();
    await proxy.close();
  });

  test('a model download altered on its way fails with GRID_ERR_CHECKSUM_MISMATCH and leaves no file behind', async () => {
    const n = await startGridNode();
    const link = corruptingLink();
    const proxy = await startProxy(n.node.port, '127.0.0.1', undefined, { fromNode: link.fromNode });
    const out = await mkdtemp(join(dir, 'download-'));
    try {
      // ~3.2 MB: four 1 MiB chunks, so the first (altered) one is followed by good ones, all written before the check.
      const bytes = mlpModel(784, 1024);
      const admin = await n.admin();
      const model = await admin.hostModel(bytes, { id: 'fragile', allowDownload: true });
      const c = await GridClient.connect(`ws://127.0.0.1:${proxy.port}`, { connect: { heartbeatMs: 0 }, reconnect: { maxAttempts: 0 }, credentials: { username: 'admin', password: ADMIN_PASSWORD } });
      const dest = join(out, 'fragile.onnx');
      let written = 0;
      try {
        const err = await rejectsWith(c.downloadModel('fragile', dest, { onProgress: (done) => { written = done; } }), ErrorCodes.CHECKSUM_MISMATCH);
        assert.match(err.message, new RegExp(`downloaded bytes hash to [0-9a-f]{64}, the node announced ${model.sha256}`));
      } finally {
        c.dispose();
      }
      assert.ok(link.flipped, 'the link altered a byte of the download');
      assert.equal(written, bytes.length, 'every byte arrived and was written before the check');
      assert.equal(existsSync(dest), false, 'no model at the destination');
      assert.deepEqual(await readdir(out), [], 'no half-written file either');
      // The model itself is whole: over a clean link the same download succeeds and matches.
      await admin.downloadModel('fragile', dest);
      assert.ok((await readFile(dest)).equals(bytes));
      assert.equal(model.sha256, createHash('sha256').update(bytes).digest('hex'));
    } finally {
      await proxy.close();
      await n.close();
    }
  });

  test('a node that offers bytes hashed differently from the model it names is refused before anything is written', async () => {
    const n = await startGridNode();
    const admin = await n.admin();
    const model = await admin.hostModel(mlpModel(4, 3, 2), { id: 'named', allowDownload: true });
    await n.close();
    // A node that answers download-model with that model's metadata but an offer of other bytes, and
    // refuses anything else (so a client that went on to download would fail with another code).
    const lying = new WebSocketServer({ port: 0, host: '127.0.0.1' });
    await once(lying, 'listening');
    lying.on('connection', (ws) => ws.on('message', (raw) => {
      const env = JSON.parse(String(raw)) as { type: string; request_id: string };
      if (env.type === 'download-model') {
        ws.send(JSON.stringify({ ...env, data: { model, download: { transfer_id: 'other-bytes', size: model.size, sha256: 'f'.repeat(64) } } }));
      } else {
        ws.send(JSON.stringify({ ...env, error: { code: ErrorCodes.NOT_FOUND, message: `${env.type} is not served here` } }));
      }
    }));
    const out = await mkdtemp(join(dir, 'offer-'));
    const c = await GridClient.connect(`ws://127.0.0.1:${(lying.address() as AddressInfo).port}`, { connect: { heartbeatMs: 0 }, reconnect: { maxAttempts: 0 } });
    try {
      const err = await rejectsWith(c.downloadModel('named', join(out, 'named.onnx')), ErrorCodes.CHECKSUM_MISMATCH);
      assert.match(err.message, new RegExp(`offered bytes with sha256 f{64} for model "named", whose metadata says ${model.sha256}`));
      assert.deepEqual(await readdir(out), [], 'nothing written at the destination');
    } finally {
      c.dispose();
      lying.close();
    }
  });

  test('an upload whose bytes do not match is refused with GRID_ERR_CHECKSUM_MISMATCH', async () => {
    const s = await connected();
    // A source that returns different bytes the second time a range is read cannot happen on one pass;
    // corrupt on purpose by lying about the checksum through the raw messages.
    const begin = await s.request('transfer-begin', { size: 0, chunk_size: 1024 }) as { transfer_id: string };
    await rejectsWith(s.request('transfer-commit', { transfer_id: begin.transfer_id, sha256: '0'.repeat(64) }), ErrorCodes.CHECKSUM_MISMATCH);
    s.dispose();
  });
});

describe('lifecycle', () => {
  test('dispose is idempotent and leaves no sockets or timers behind', async () => {
    const baseline = process.getActiveResourcesInfo().filter((r) => r === 'TCPSocketWrap' || r === 'Timeout').length;
    const s = new GridSocket();
    await s.connect(node.url, { heartbeatMs: 1000 }, fast);
    const st = s.stream(Ticks, { tag: 'dispose-1' });
    const pending = rejectsWith(s.request(Hang, { tag: 'dispose-1' }), ErrorCodes.DISPOSED);
    s.dispose();
    s.dispose();
    assert.equal(s.isDisposed, true);
    await pending;
    await rejectsWith(st.done, ErrorCodes.DISPOSED);
    await rejectsWith(s.connect(node.url), ErrorCodes.DISPOSED);
    await rejectsWith(s.request(Echo, { value: 1 }), ErrorCodes.DISPOSED);
    // The client's TCP socket closes once the close handshake finishes; wait for the node to see it.
    while (node.server.connections.size > 0) await new Promise((r) => setImmediate(r));
    const left = process.getActiveResourcesInfo().filter((r) => r === 'TCPSocketWrap' || r === 'Timeout').length;
    assert.ok(left <= baseline, `resources before ${baseline}, after ${left}: ${process.getActiveResourcesInfo().join(', ')}`);
  });

  test('reset disconnects and clears subscriptions; the socket can connect again', async () => {
    const s = await connected();
    let messages = 0;
    s.onMessage(() => { messages++; });
    const st = s.stream(Ticks, { tag: 'reset-1' });
    s.reset();
    s.reset();
    await rejectsWith(st.done, ErrorCodes.ABORTED);
    assert.equal(s.status.state, 'idle');
    await s.connect(node.url, { heartbeatMs: 0 }, fast);
    const before = messages;
    assert.deepEqual(await s.request(EchoIdempotent, { value: 'again' }), { value: 'again' });
    assert.equal(messages, before, 'message listeners were cleared by reset');
    s.dispose();
  });

  test('a bad URL is refused with GRID_ERR_INVALID_URL', async () => {
    const s = new GridSocket();
    await rejectsWith(s.connect('http://127.0.0.1:1'), ErrorCodes.INVALID_URL);
    await rejectsWith(s.connect('not a url'), ErrorCodes.INVALID_URL);
    s.dispose();
  });
});
