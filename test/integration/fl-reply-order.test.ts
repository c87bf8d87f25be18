// PyGrid-era clients (syft.js, KotlinSyft) send model-centric messages without a request_id and match the
// replies by their order on the socket. The node's handlers finish in any order (a token checked at a
// slow endpoint, a read of PostgreSQL): the node must still answer one socket's id-less requests in the
// order they came. Here the validator holds the first (good) token's answer until the node has refused
// the later (bad) ones, so a node that answered as its handlers finish would send the refusals first.

import { once } from 'node:events';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { WebSocket } from 'ws';
import { startTestNode } from '../helpers/node-fixtures';
import { hostProcess, PyGridSocket } from '../helpers/fl-fixtures';

const GOOD = 'held-then-let-in';

/** A validator: 403 at once for any token but GOOD, whose 200 waits for `release()`; `refused` resolves after `count` 403s went out. */
async function slowValidator(count: number) {
  let release!: () => void;
  const released = new Promise<void>((r) => { release = r; });
  let refusedCount = 0;
  let refused!: () => void;
  const allRefused = new Promise<void>((r) => { refused = r; });
  const server = http.createServer((req, res) => {
    const parts: Buffer[] = [];
    req.on('data', (c: Buffer) => parts.push(c));
    req.on('end', () => {
      const { auth_token: token } = JSON.parse(Buffer.concat(parts).toString('utf8')) as { auth_token?: unknown };
      if (token === GOOD) { void released.then(() => res.writeHead(200).end()); return; }
      res.writeHead(403).end(() => { if (++refusedCount === count) refused(); });
    });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as AddressInfo;
  return { url: `http://127.0.0.1:${port}/validate`, release, allRefused, close: () => new Promise<void>((r) => { server.closeAllConnections(); server.close(() => r()); }) };
}

test('a PyGrid-era socket gets its authenticate replies in the order it sent them, though the first token takes longest to check', { timeout: 60_000 }, async (t) => {
  const node = await startTestNode();
  t.after(() => node.close());
  const validator = await slowValidator(2);
  t.after(() => validator.close());
  const admin = await node.admin();
  assert.equal((await hostProcess(admin, { name: 'ordered', server: { authentication: { endpoint: validator.url } } })).status, 'success');

  const ws = new WebSocket(node.node.url);
  await once(ws, 'open');
  t.after(() => ws.close());
  const replies: Record<string, any>[] = [];
  const three = new Promise<void>((resolve) => ws.on('message', (raw) => { if (replies.push(JSON.parse(String(raw)) as Record<string, any>) === 3) resolve(); }));
  // As syft.js does: no request_id; three devices' tokens back to back on one socket.
  for (const token of [GOOD, 'bad-1', 'bad-2']) ws.send(JSON.stringify({ type: 'model-centric/authenticate', data: { model_name: 'ordered', model_version: '1.0', auth_token: token } }));

  // The node has read both refusals once a later round trip on another socket is answered; then the good token passes.
  await validator.allRefused;
  const probe = await PyGridSocket.open(node.node.url);
  t.after(() => probe.close());
  assert.deepEqual((await probe.call('socket-ping', {})), { alive: 'True' });
  validator.release();
  await three;

  assert.deepEqual(replies.map((r) => [r.type, r.data?.status]), [
    ['model-centric/authenticate', 'success'],
    ['model-centric/authenticate', 'rejected'],
    ['model-centric/authenticate', 'rejected'],
  ], 'the first reply answers the first (good) token; the old client would otherwise take a refusal for it');
  assert.equal(typeof replies[0]!.data.worker_id, 'string');
  for (const r of replies) assert.equal(r.request_id, undefined);
  assert.equal(replies[1]!.error.code, 'GRID_ERR_BAD_CREDENTIALS');
});
