// The node's router (RedactingRouter): a handler's error that names a server path reaches the client without
// it, and the operator's log keeps the original, whether the handler threw, rejected, or its cache check
// failed. The server redacts once more before sending (the last line of defence), so the log line is what
// shows the router itself did it. Real GridServer on 127.0.0.1 port 0, real GridSocket.
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { z } from 'zod';
import { ErrorCodes } from '../../src/core/errors';
import type { Logger } from '../../src/core/logger';
import { defineRequest, defineStream } from '../../src/core/protocol/catalogue';
import { GridSocket } from '../../src/core/socket/grid-socket';
import { RedactingRouter } from '../../src/node/redacting-router';
import { GridServer } from '../../src/node/rpc/server';
import { failure } from '../helpers/node-fixtures';

const Throws = defineRequest('throws', { request: z.object({}), reply: z.object({}) });
const Rejects = defineRequest('rejects', { request: z.object({}), reply: z.object({}) });
const Fine = defineRequest('fine', { request: z.object({}), reply: z.object({ ok: z.boolean() }) });
const StreamRejects = defineStream('stream-rejects', { request: z.object({}), event: z.object({}), end: z.object({}) });

const ROOT = '/srv/grid node/data';
const enoent = (file: string) => Object.assign(new Error(`ENOENT: no such file or directory, open '${ROOT}/${file}'`), { code: 'ENOENT' });

let dir: string;
let http: Server;
let server: GridServer;
let socket: GridSocket;
const warnings: { obj: Record<string, unknown>; msg: string | undefined }[] = [];
/** What the cache check (`before`) does for the next request: nothing, or fail. */
let checkFails = false;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'grid-redacting-router-'));
  const log: Logger = { debug() {}, info() {}, error() {}, warn: (obj, msg) => { warnings.push({ obj: obj as Record<string, unknown>, msg }); } };
  const router = new RedactingRouter([ROOT], log, () => (checkFails ? Promise.reject(enoent('models.db')) : undefined))
    .handle(Throws, () => { throw enoent('blobs/ab/cdef'); })
    .handle(Rejects, async () => { throw enoent('uploads/x.part'); })
    .handle(Fine, () => ({ ok: true }))
    .stream(StreamRejects, async () => { throw enoent('jobs/j1/log'); });
  server = new GridServer({ router, uploadsDir: join(dir, 'uploads'), heartbeatMs: 0 });
  http = createServer();
  http.on('upgrade', (req, s, head) => server.handleUpgrade(req, s, head));
  await new Promise<void>((resolve) => http.listen(0, '127.0.0.1', resolve));
  socket = new GridSocket();
  await socket.connect(`ws://127.0.0.1:${(http.address() as AddressInfo).port}`, { heartbeatMs: 0 });
});

after(async () => {
  socket.dispose();
  await server.close();
  await new Promise<void>((resolve) => http.close(() => resolve()));
  await rm(dir, { recursive: true, force: true });
});

/** The request fails without the path, and the router logged the original with it. */
async function redactedAndLogged(p: Promise<unknown>, file: string): Promise<void> {
  warnings.length = 0;
  const err = await failure(p);
  assert.equal(err.code, ErrorCodes.INTERNAL);
  assert.match(err.message, /ENOENT: no such file or directory, open '/);
  assert.ok(!err.message.includes(ROOT), `a server path reached the client: ${err.message}`);
  const line = warnings.find((w) => w.msg === 'a server path was removed from an error sent to a client');
  assert.ok(line !== undefined, 'the router logged nothing');
  assert.equal(line.obj.err, `ENOENT: no such file or directory, open '${ROOT}/${file}'`);
}

test('a handler that throws: the client gets the error without the path, the log has it', async () => {
  await redactedAndLogged(socket.request(Throws, {}), 'blobs/ab/cdef');
});

test('a handler that rejects: the same', async () => {
  await redactedAndLogged(socket.request(Rejects, {}), 'uploads/x.part');
});

test('a stream that fails: the same', async () => {
  await redactedAndLogged(socket.stream(StreamRejects, {}).done, 'jobs/j1/log');
});

test('a cache check that fails before the handler: the same; one that passes leaves the answer alone', async () => {
  checkFails = true;
  try {
    await redactedAndLogged(socket.request(Fine, {}), 'models.db');
  } finally {
    checkFails = false;
  }
  warnings.length = 0;
  assert.deepEqual(await socket.request(Fine, {}), { ok: true });
  assert.equal(warnings.length, 0);
});
