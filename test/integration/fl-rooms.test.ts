// WebRTC signalling rooms through a real node (src/node/fl/signalling.ts over rooms.ts): workers accepted
// into a process join its room (scopeId: the process's id, the `model_id` they were accepted with) and trade offer / answer / candidate through the
// node; a worker not accepted into it is refused and hears nothing; peer-left reaches the others when a
// member's socket closes. Both dialects: our FlWorker (PyGrid's messages, with request ids), a PyGrid-era
// socket without request ids (syft.js), and KotlinSyft's `webrtc_internal`.

import { once } from 'node:events';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { WebSocket } from 'ws';
import { FlWorker, type FlRoomMessage } from '../../src/core/fl-worker';
import { startTestNode } from '../helpers/node-fixtures';
import { hostProcess } from '../helpers/fl-fixtures';

/** A connected FlWorker that authenticated for `name` (and, when `accept`, was accepted into its cycle); its room messages in order. */
async function member(url: string, name = 'mnist', accept = true, version = '1.0') {
  const w = await FlWorker.connect(url);
  const { worker_id: id } = await w.authenticate({ modelName: name, modelVersion: version });
  if (accept) assert.equal((await w.getCycle({ workerId: id, modelName: name, modelVersion: version })).status, 'accepted');
  const heard: FlRoomMessage[] = [];
  const waiters: (() => void)[] = [];
  w.on('room-message', (m) => { heard.push(m); for (const f of waiters.splice(0)) f(); });
  /** The next room message past the `n` already read. */
  const next = async (n: number): Promise<FlRoomMessage> => {
    while (heard.length <= n) await new Promise<void>((r) => waiters.push(r));
    return heard[n]!;
  };
  return { w, id, heard, next };
}

/** A bare socket: every frame it receives, in order. */
async function bare(url: string) {
  const ws = new WebSocket(url);
  await once(ws, 'open');
  const frames: Record<string, any>[] = [];
  const waiters: (() => void)[] = [];
  ws.on('message', (raw) => { frames.push(JSON.parse(String(raw)) as Record<string, any>); for (const f of waiters.splice(0)) f(); });
  const next = async (n: number) => {
    while (frames.length <= n) await new Promise<void>((r) => waiters.push(r));
    return frames[n]!;
  };
  const send = (type: string, data: unknown) => ws.send(JSON.stringify({ type, data }));
  return { ws, frames, next, send };
}

test('two accepted FlWorkers trade offer / answer / candidate through the node; an unaccepted worker is refused and hears nothing; peer-left on disconnect', { timeout: 60_000 }, async (t) => {
  const n = await startTestNode();
  t.after(() => n.close());
  const admin = await n.admin();
  const SCOPE = String((await hostProcess(admin, { server: { max_workers: 10, max_diffs: 5 } })).model_id);
  const OTHER = String((await hostProcess(admin, { name: 'other', server: { max_workers: 10, max_diffs: 5 } })).model_id);
  const a = await member(n.node.url);
  const b = await member(n.node.url);
  const c = await member(n.node.url, 'mnist', false); // authenticated, never accepted
  const d = await member(n.node.url, 'other'); // accepted, into another process
  t.after(() => { for (const x of [a, b, c, d]) x.w.dispose(); });

  assert.deepEqual(await a.w.joinRoom({ workerId: a.id, scopeId: SCOPE }), { peers: [] });
  assert.deepEqual(await b.w.joinRoom({ workerId: b.id, scopeId: SCOPE }), { peers: [a.id] });
  assert.deepEqual(await a.next(0), { type: 'webrtc: join-room', data: { workerId: b.id, scopeId: SCOPE } });

  // Refused joining: not accepted into mnist; accepted into another process; the room of a process it is not in.
  await assert.rejects(c.w.joinRoom({ workerId: c.id, scopeId: SCOPE }), (e: Error & { code?: string }) => e.code === 'GRID_ERR_FORBIDDEN' && /may not join/.test(e.message));
  await assert.rejects(d.w.joinRoom({ workerId: d.id, scopeId: SCOPE }), /may not join/);
  assert.deepEqual(await d.w.joinRoom({ workerId: d.id, scopeId: OTHER }), { peers: [] });
  // Speaking as another worker, or to a room it is not in.
  await assert.rejects(c.w.sendInternalMessage({ workerId: a.id, scopeId: SCOPE, to: b.id, type: 'offer', data: {} }), /did not authenticate on this connection/);
  await assert.rejects(c.w.sendInternalMessage({ workerId: c.id, scopeId: SCOPE, to: a.id, type: 'offer', data: { type: 'offer', sdp: 'v=0' } }), /not in room/);
  await assert.rejects(d.w.sendInternalMessage({ workerId: d.id, scopeId: OTHER, to: a.id, type: 'offer', data: { type: 'offer', sdp: 'v=0' } }), /not in room/);

  const offer = { type: 'offer', sdp: 'v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\n' };
  const answer = { type: 'answer', sdp: 'v=0\r\no=- 3 4 IN IP4 127.0.0.1\r\n' };
  const candidate = { candidate: 'candidate:1 1 UDP 2122252543 127.0.0.1 50000 typ host', sdpMid: '0', sdpMLineIndex: 0 };
  await b.w.sendInternalMessage({ workerId: b.id, scopeId: SCOPE, to: a.id, type: 'offer', data: offer });
  assert.deepEqual(await a.next(1), { type: 'webrtc: internal-message', data: { workerId: b.id, scopeId: SCOPE, to: a.id, type: 'offer', data: offer } });
  await a.w.sendInternalMessage({ workerId: a.id, scopeId: SCOPE, to: b.id, type: 'answer', data: answer });
  assert.deepEqual(await b.next(0), { type: 'webrtc: internal-message', data: { workerId: a.id, scopeId: SCOPE, to: b.id, type: 'answer', data: answer } });
  await b.w.sendInternalMessage({ workerId: b.id, scopeId: SCOPE, to: a.id, type: 'candidate', data: candidate });
  assert.deepEqual((await a.next(2)).data.data, candidate);

  // The outsiders heard nothing: a round trip on each after everything above was relayed.
  for (const x of [c, d]) await x.w.authenticate({ modelName: 'other', modelVersion: '1.0' });
  assert.deepEqual(c.heard, []);
  assert.deepEqual(d.heard, []);

  // B's socket closes: A hears peer-left and B is out of the room.
  b.w.dispose();
  assert.deepEqual(await a.next(3), { type: 'webrtc: peer-left', data: { workerId: b.id, scopeId: SCOPE } });
  assert.deepEqual(n.node.fl.signalling.rooms.members(SCOPE), [a.id]);
});

test('PyGrid-era frames without request_id (syft.js) get no reply; KotlinSyft joins and hears in its own dialect', { timeout: 60_000 }, async (t) => {
  const n = await startTestNode();
  t.after(() => n.close());
  const admin = await n.admin();
  const SCOPE = String((await hostProcess(admin, { server: { max_workers: 10, max_diffs: 5 } })).model_id);
  const a = await member(n.node.url);
  t.after(() => a.w.dispose());
  assert.deepEqual(await a.w.joinRoom({ workerId: a.id, scopeId: SCOPE }), { peers: [] });

  const accepted = async (s: Awaited<ReturnType<typeof bare>>) => {
    const at = s.frames.length;
    s.send('model-centric/authenticate', { model_name: 'mnist', model_version: '1.0' });
    const id = (await s.next(at)).data.worker_id as string;
    s.send('model-centric/cycle-request', { worker_id: id, model: 'mnist', version: '1.0', ping: 0, download: 0, upload: 0 });
    assert.equal((await s.next(at + 1)).data.status, 'accepted');
    return id;
  };

  // syft.js: joins with {workerId, scopeId} and no request_id; A hears it, the joiner is sent nothing back.
  const s = await bare(n.node.url);
  t.after(() => s.ws.close());
  const sid = await accepted(s);
  s.send('webrtc: join-room', { workerId: sid, scopeId: SCOPE });
  assert.deepEqual(await a.next(0), { type: 'webrtc: join-room', data: { workerId: sid, scopeId: SCOPE } });
  s.send('socket-ping', {});
  assert.equal((await s.next(2)).type, 'socket-ping', 'the join got a reply');
  // A refused join (another process's room) is not answered either.
  s.send('webrtc: join-room', { workerId: sid, scopeId: `${SCOPE}0` });
  s.send('socket-ping', {});
  assert.equal((await s.next(3)).type, 'socket-ping');

  // KotlinSyft: {worker_id, scope_id}; it is told of nothing it cannot parse, and hears A's offer as webrtc_internal.
  const k = await bare(n.node.url);
  t.after(() => k.ws.close());
  const kid = await accepted(k);
  k.send('webrtc: join-room', { worker_id: kid, scope_id: SCOPE });
  assert.deepEqual(await a.next(1), { type: 'webrtc: join-room', data: { workerId: kid, scopeId: SCOPE } });
  await a.w.sendInternalMessage({ workerId: a.id, scopeId: SCOPE, to: kid, type: 'offer', data: { type: 'offer', sdp: 'v=0 kotlin' } });
  assert.deepEqual(await k.next(2), { type: 'webrtc_internal', data: { type: 'offer', worker_id: a.id, sdp_string: 'v=0 kotlin' } });
  k.send('webrtc_internal', { worker_id: kid, scope_id: SCOPE, target: a.id, type: 'ANSWER', message: 'v=0 answer' });
  assert.deepEqual(await a.next(2), { type: 'webrtc: internal-message', data: { workerId: kid, scopeId: SCOPE, to: a.id, type: 'answer', data: { type: 'answer', sdp: 'v=0 answer' } } });

  // The syft.js socket closes: A hears peer-left (KotlinSyft, which cannot parse it, is not sent it).
  s.ws.close();
  assert.deepEqual(await a.next(3), { type: 'webrtc: peer-left', data: { workerId: sid, scopeId: SCOPE } });
  k.send('socket-ping', {});
  assert.equal((await k.next(3)).type, 'socket-ping', 'KotlinSyft was sent a frame it cannot parse');
});

test('a room is its process, by id: "a@b" version "c" and "a" version "b@c" are two rooms; 128-character names and versions have a room too', { timeout: 60_000 }, async (t) => {
  const n = await startTestNode();
  t.after(() => n.close());
  const admin = await n.admin();
  const server = { max_workers: 10, max_diffs: 5 };
  const p1 = String((await hostProcess(admin, { name: 'a@b', version: 'c', server })).model_id);
  const p2 = String((await hostProcess(admin, { name: 'a', version: 'b@c', server })).model_id);
  const long = { name: 'n'.repeat(128), version: 'v'.repeat(128) };
  const p3 = String((await hostProcess(admin, { ...long, server })).model_id);
  const x = await member(n.node.url, 'a@b', true, 'c');
  const y = await member(n.node.url, 'a', true, 'b@c');
  const z1 = await member(n.node.url, long.name, true, long.version);
  const z2 = await member(n.node.url, long.name, true, long.version);
  t.after(() => { for (const m of [x, y, z1, z2]) m.w.dispose(); });

  // The spelling both processes shared is no room at all now.
  for (const m of [x, y]) await assert.rejects(m.w.joinRoom({ workerId: m.id, scopeId: 'a@b@c' }), /may not join/);
  assert.deepEqual(await x.w.joinRoom({ workerId: x.id, scopeId: p1 }), { peers: [] });
  assert.deepEqual(await y.w.joinRoom({ workerId: y.id, scopeId: p2 }), { peers: [] });
  await assert.rejects(y.w.joinRoom({ workerId: y.id, scopeId: p1 }), /may not join/);
  await assert.rejects(y.w.sendInternalMessage({ workerId: y.id, scopeId: p2, to: x.id, type: 'offer', data: { type: 'offer', sdp: 'v=0' } }), /is not in room/);
  await assert.rejects(y.w.sendInternalMessage({ workerId: y.id, scopeId: p1, to: x.id, type: 'offer', data: { type: 'offer', sdp: 'v=0' } }), /is not in room/);

  // Longest name and version: the two workers meet in their room and signal.
  assert.deepEqual(await z1.w.joinRoom({ workerId: z1.id, scopeId: p3 }), { peers: [] });
  assert.deepEqual(await z2.w.joinRoom({ workerId: z2.id, scopeId: p3 }), { peers: [z1.id] });
  await z2.w.sendInternalMessage({ workerId: z2.id, scopeId: p3, to: z1.id, type: 'offer', data: { type: 'offer', sdp: 'v=0 long' } });
  assert.deepEqual((await z1.next(1)).data, { workerId: z2.id, scopeId: p3, to: z1.id, type: 'offer', data: { type: 'offer', sdp: 'v=0 long' } });
  // X heard nothing of Y (a round trip on its socket first).
  await x.w.authenticate({ modelName: 'a@b', modelVersion: 'c' });
  assert.deepEqual(x.heard, []);
});
