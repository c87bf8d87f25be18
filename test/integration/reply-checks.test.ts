// What a client sees when a node's handler builds a bad reply: the node sends replies without checking
// them (the hot path) and the client's own check refuses a malformed one with a coded error; with reply
// checks on (the tests' default, --check-replies) the node refuses to send it and answers INTERNAL.
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { z } from 'zod';
import { ErrorCodes } from '../../src/core/errors';
import { defineRequest, defineStream } from '../../src/core/protocol/catalogue';
import { GridSocket } from '../../src/core/socket/grid-socket';
import { GridRouter, GridServer, withAttachment } from '../../src/node/rpc/server';
import '../helpers/check-replies';
import { failure } from '../helpers/node-fixtures';

const Reply = z.object({ ok: z.boolean(), items: z.array(z.object({ name: z.string() })).optional() });
const Good = defineRequest('good', { request: z.object({}), reply: Reply });
const WrongType = defineRequest('wrong-type', { request: z.object({}), reply: Reply });
const ExtraField = defineRequest('extra-field', { request: z.object({}), reply: Reply });
const NestedExtra = defineRequest('nested-extra', { request: z.object({}), reply: Reply });
const BadEnd = defineStream('bad-end', { request: z.object({}), event: z.object({}), end: z.object({ total: z.number() }) });

interface Node { url: string; close(): Promise<void> }

async function startNode(dir: string, checkReplies: boolean | undefined): Promise<Node> {
  const router = new GridRouter()
    .handle(Good, () => withAttachment({ ok: true, items: [{ name: 'a' }] }, Buffer.from([1, 2, 3])))
    .handle(WrongType, () => ({ ok: 'yes' }) as unknown as { ok: boolean })
    // A stored record spread into a reply: its internals are not in the schema.
    .handle(ExtraField, async () => ({ ok: true, password_hash: 'scrypt$secret' }))
    .handle(NestedExtra, () => ({ ok: true, items: [{ name: 'a', owner_token: 'tok-secret' }] }))
    .stream(BadEnd, async () => ({ total: 'many' }) as unknown as { total: number });
  const server = new GridServer({ router, uploadsDir: join(dir, 'uploads'), heartbeatMs: 0, ...(checkReplies !== undefined && { checkReplies }) });
  const http: Server = createServer();
  http.on('upgrade', (req, socket, head) => server.handleUpgrade(req, socket, head));
  await new Promise<void>((resolve) => http.listen(0, '127.0.0.1', resolve));
  return {
    url: `ws://127.0.0.1:${(http.address() as AddressInfo).port}`,
    async close() {
      await server.close();
      await new Promise<void>((resolve) => http.close(() => resolve()));
    },
  };
}

let dir: string;
before(async () => { dir = await mkdtemp(join(tmpdir(), 'grid-reply-checks-')); });
after(async () => { await rm(dir, { recursive: true, force: true }); });

for (const mode of ['checked (--check-replies)', 'unchecked (the default)'] as const) {
  describe(`a node whose replies are ${mode}`, () => {
    const checked = mode.startsWith('checked');
    let node: Node;
    let socket: GridSocket;
    before(async () => {
      node = await startNode(join(dir, checked ? 'checked' : 'unchecked'), checked);
      socket = new GridSocket();
      await socket.connect(node.url, { heartbeatMs: 0 });
    });
    after(async () => {
      socket.dispose();
      await node.close();
    });

    test('a good reply arrives whole, with its attachment', async () => {
      const r = await socket.call(Good, {});
      assert.deepEqual(r.data, { ok: true, items: [{ name: 'a' }] });
      assert.deepEqual([...r.attachment!], [1, 2, 3]);
    });

    test('a reply of the wrong shape is refused with a coded error naming the field', async () => {
      const err = await failure(socket.request(WrongType, {}));
      // Checked: the node answers INTERNAL instead of sending it; unchecked: the client refuses what came.
      assert.equal(err.code, checked ? ErrorCodes.INTERNAL : ErrorCodes.INVALID_MESSAGE);
      assert.match(err.message, checked ? /wrong-type: the node built an invalid reply \(reply\.ok: / : /wrong-type: the node sent an invalid reply \(reply\.ok: /);
    });

    test('a stream end of the wrong shape is refused with a coded error', async () => {
      const stream = socket.stream(BadEnd, {});
      const err = await failure((async () => { for await (const _ of stream) { /* no events */ } })());
      assert.equal(err.code, checked ? ErrorCodes.INTERNAL : ErrorCodes.INVALID_MESSAGE);
      assert.match(err.message, /reply\.total|end\.total/);
    });

    test('a field the schema does not name never reaches the caller', async () => {
      for (const def of [ExtraField, NestedExtra]) {
        if (checked) {
          const err = await failure(socket.request(def, {}));
          assert.equal(err.code, ErrorCodes.INTERNAL);
          assert.match(err.message, /not in the reply's schema/);
          assert.doesNotMatch(err.message, /secret/);
        } else {
          // Sent as built, so the node's CPU is not spent on it; the client's parse drops what it does not know.
          const reply = await socket.request(def, {});
          assert.doesNotMatch(JSON.stringify(reply), /secret/);
        }
      }
    });
  });
}

test('under the test runner a node checks its replies unless told otherwise', async () => {
  assert.equal(process.env.GRID_CHECK_REPLIES, '1');
  const node = await startNode(join(dir, 'default'), undefined);
  const socket = new GridSocket();
  try {
    await socket.connect(node.url, { heartbeatMs: 0 });
    assert.equal((await failure(socket.request(ExtraField, {}))).code, ErrorCodes.INTERNAL);
  } finally {
    socket.dispose();
    await node.close();
  }
});
