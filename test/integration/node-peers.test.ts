// Node-to-node links (connect-node / list-peers) between two real nodes, with the events a view sees.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { NodeEvent } from '../../src/core/protocol/messages';
import { GridError } from '../../src/core/errors';
import { startTestNode, ADMIN_PASSWORD } from '../helpers/node-fixtures';

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
  // Connecting again to the same address returns the existing link.
  assert.equal((await c.connectNode(b.node.url)).connected_at, peer.connected_at);
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
