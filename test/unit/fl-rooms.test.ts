// WebRTC signalling rooms as the workers see them: each worker has an inbox (what the node would write to
// its socket); the registry is the real one. Offers, answers and candidates reach only members of the room,
// each in its own dialect (PyGrid's gateway messages, KotlinSyft's webrtc_internal / peer).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { RoomRegistry, parseRoomMessage, isRoomMessageType, type RoomLimits } from '../../src/node/fl/rooms';

const S = 'process-7-scope';
const OTHER = 'process-9-scope';

interface Grid {
  rooms: RoomRegistry;
  inbox(worker: string): any[];
  /** Workers whose sockets are gone: send() returns false for them. */
  offline: Set<string>;
}

/** `accepted` maps each worker to the scopes it may join (the processes it was accepted into). */
function grid(accepted: Record<string, string[]>, limits: Partial<RoomLimits> = {}): Grid {
  const inboxes = new Map<string, any[]>();
  const offline = new Set<string>();
  const inbox = (w: string): any[] => {
    let box = inboxes.get(w);
    if (!box) inboxes.set(w, (box = []));
    return box;
  };
  const rooms = new RoomRegistry(
    (w, message) => {
      if (offline.has(w)) return false;
      inbox(w).push(JSON.parse(JSON.stringify(message)));
      return true;
    },
    (w, scope) => accepted[w]?.includes(scope) ?? false,
    limits,
  );
  return { rooms, inbox, offline };
}

const join = (workerId: string, scopeId = S, extra: Record<string, unknown> = {}) => ({ type: 'webrtc: join-room', request_id: `r-${workerId}`, data: { workerId, scopeId, ...extra } });
const internal = (workerId: string, to: string, type: string, data: unknown, scopeId = S) => ({ type: 'webrtc: internal-message', data: { workerId, scopeId, to, type, data } });

test('two workers exchange offer, answer and candidates; a third outside the room gets nothing', () => {
  const g = grid({ a: [S], b: [S], c: [OTHER] });
  assert.deepEqual(g.rooms.handle('a', join('a')), { ok: true, dialect: 'pygrid', reply: { status: 'success', scopeId: S, peers: [] } });
  assert.deepEqual(g.rooms.handle('c', join('c', OTHER)).ok, true);
  // syft.js sets extra fields on its messages; the join reaches the other members as sent, minus request_id.
  assert.deepEqual(g.rooms.handle('b', join('b', S, { protocolId: 'p1' })), { ok: true, dialect: 'pygrid', reply: { status: 'success', scopeId: S, peers: ['a'] } });
  assert.deepEqual(g.inbox('a'), [{ type: 'webrtc: join-room', data: { workerId: 'b', scopeId: S, protocolId: 'p1' } }]);
  assert.deepEqual(g.inbox('b'), [], 'the joiner is not told about itself');

  const offer = internal('a', 'b', 'offer', { type: 'offer', sdp: 'v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\n' });
  assert.equal(g.rooms.handle('a', offer).ok, true);
  const answer = internal('b', 'a', 'answer', { type: 'answer', sdp: 'v=0\r\no=- 3 4 IN IP4 127.0.0.1\r\n' });
  assert.equal(g.rooms.handle('b', answer).ok, true);
  const candA = internal('a', 'b', 'candidate', { candidate: 'candidate:1 1 udp 2122260223 10.0.0.1 54321 typ host', sdpMLineIndex: 0, sdpMid: '0' });
  const candB = internal('b', 'a', 'candidate', { candidate: 'candidate:2 1 udp 2122260223 10.0.0.2 54322 typ host', sdpMLineIndex: 0, sdpMid: '0' });
  assert.equal(g.rooms.relay('a', candA).ok, true);
  assert.equal(g.rooms.relay('b', candB).ok, true);

  assert.deepEqual(g.inbox('b'), [offer, candA], 'verbatim, in order');
  assert.deepEqual(g.inbox('a').slice(1), [answer, candB]);
  assert.deepEqual(g.inbox('c'), [], 'the worker in another room hears nothing');

  // The outsider cannot reach in, and members cannot reach out.
  const intrusion = g.rooms.handle('c', internal('c', 'a', 'offer', { type: 'offer', sdp: 'x' }));
  assert.equal(intrusion.ok, false);
  assert.match((intrusion as { error: string }).error, /not in room/);
  const leak = g.rooms.handle('a', internal('a', 'c', 'offer', { type: 'offer', sdp: 'x' }));
  assert.equal(leak.ok, false);
  assert.match((leak as { error: string }).error, /"c" is not in room/);
  assert.deepEqual(g.inbox('c'), []);
  assert.equal(g.inbox('a').length, 3);
});

test('a worker cannot join a room of a process it was not accepted into', () => {
  const g = grid({ a: [S], c: [OTHER] });
  g.rooms.handle('a', join('a'));
  const refused = g.rooms.handle('c', join('c', S));
  assert.equal(refused.ok, false);
  assert.match((refused as { error: string }).error, /a worker can only join rooms of processes it was accepted into/);
  assert.deepEqual(g.rooms.members(S), ['a']);
  assert.deepEqual(g.inbox('a'), [], 'the members hear nothing of a refused join');
});

test('a closed socket (dropWorker) or a leave tells the others peer-left; the worker is unreachable after', () => {
  const g = grid({ a: [S, OTHER], b: [S], d: [OTHER] });
  g.rooms.join('a', S);
  g.rooms.join('b', S);
  g.rooms.join('a', OTHER);
  g.rooms.join('d', OTHER);
  g.inbox('a').length = 0;
  g.rooms.dropWorker('b');
  assert.deepEqual(g.inbox('a'), [{ type: 'webrtc: peer-left', data: { workerId: 'b', scopeId: S } }]);
  assert.deepEqual(g.rooms.members(S), ['a']);
  const late = g.rooms.relay('a', internal('a', 'b', 'candidate', { candidate: 'x' }));
  assert.equal(late.ok, false);

  // A client's own peer-left leaves that room only, and reaches the others as sent.
  const left = { type: 'webrtc: peer-left', data: { workerId: 'a', scopeId: OTHER } };
  assert.equal(g.rooms.handle('a', left).ok, true);
  assert.deepEqual(g.inbox('d'), [left]);
  assert.deepEqual(g.rooms.roomsOf('a'), [S]);
  assert.equal(g.rooms.leave('a', OTHER).ok, false, 'not in it any more');
  g.rooms.dropWorker('a');
  assert.deepEqual(g.rooms.members(S), [], 'an empty room is gone');
  g.rooms.dropWorker('nobody'); // a worker in no room: nothing to do, nothing thrown
});

test('KotlinSyft: toString join, webrtc_internal both ways, peer announcements; never a type it cannot parse', () => {
  const g = grid({ a: [S], k: [S], k2: [S], p: [S] });
  g.rooms.handle('a', join('a'));
  // KotlinSyft's join carries its data class's toString, and it cannot parse any reply to it.
  const kJoin = g.rooms.handle('k', { type: 'webrtc: join-room', data: 'JoinRoomRequest(workerId=k, scopeId=process-7-scope)' });
  assert.deepEqual(kJoin, { ok: true, dialect: 'kotlin', reply: undefined });
  assert.deepEqual(g.inbox('a'), [{ type: 'webrtc: join-room', data: { workerId: 'k', scopeId: S } }], 'PyGrid-dialect members get a JSON join');
  g.rooms.handle('p', join('p'));
  assert.deepEqual(g.inbox('k'), [{ type: 'peer', data: { worker_id: 'p' } }], 'KotlinSyft hears of new peers as `peer`');

  // KotlinSyft → PyGrid dialect: its SDP string becomes an RTCSessionDescriptionInit.
  const kOffer = { type: 'webrtc_internal', data: { worker_id: 'k', scope_id: S, target: 'a', type: 'offer', message: 'v=0 kotlin offer' } };
  assert.deepEqual(g.rooms.handle('k', kOffer), { ok: true, dialect: 'kotlin', reply: undefined });
  assert.deepEqual(g.inbox('a').at(-1), { type: 'webrtc: internal-message', data: { workerId: 'k', scopeId: S, to: 'a', type: 'offer', data: { type: 'offer', sdp: 'v=0 kotlin offer' } } });

  // PyGrid dialect → KotlinSyft: InternalMessageResponse {type, worker_id, sdp_string}.
  assert.equal(g.rooms.handle('a', internal('a', 'k', 'answer', { type: 'answer', sdp: 'v=0 answer' })).ok, true);
  const candidate = { candidate: 'candidate:1 1 udp 1 10.0.0.1 9 typ host', sdpMLineIndex: 0, sdpMid: '0' };
  assert.equal(g.rooms.handle('a', internal('a', 'k', 'candidate', candidate)).ok, true);
  assert.deepEqual(g.inbox('k').slice(1), [
    { type: 'webrtc_internal', data: { type: 'answer', worker_id: 'a', sdp_string: 'v=0 answer' } },
    { type: 'webrtc_internal', data: { type: 'candidate', worker_id: 'a', sdp_string: JSON.stringify(candidate) } },
  ]);

  // KotlinSyft → KotlinSyft: its message and its spelling of the type come back as sent (a round trip).
  g.rooms.handle('k2', { type: 'webrtc: join-room', data: 'JoinRoomRequest(workerId=k2, scopeId=process-7-scope)' });
  assert.equal(g.rooms.handle('k2', { type: 'webrtc_internal', data: { worker_id: 'k2', scope_id: S, target: 'k', type: 'OFFER', message: 'v=0 from k2' } }).ok, true);
  assert.deepEqual(g.inbox('k').at(-1), { type: 'webrtc_internal', data: { type: 'OFFER', worker_id: 'k2', sdp_string: 'v=0 from k2' } });
  // …and a KotlinSyft candidate string that holds JSON reaches a PyGrid peer as the candidate object.
  g.rooms.handle('k2', { type: 'webrtc_internal', data: { worker_id: 'k2', scope_id: S, target: 'p', type: 'candidate', message: JSON.stringify(candidate) } });
  assert.deepEqual(g.inbox('p').at(-1).data.data, candidate);

  g.rooms.dropWorker('a');
  assert.deepEqual(g.inbox('p').at(-1), { type: 'webrtc: peer-left', data: { workerId: 'a', scopeId: S } });
  for (const w of ['k', 'k2']) {
    for (const m of g.inbox(w)) assert.ok(m.type === 'peer' || m.type === 'webrtc_internal', `${w} was sent ${m.type}`);
  }
});

test('parseRoomMessage reads both dialects and refuses the rest with a reason, never throwing', () => {
  assert.deepEqual(parseRoomMessage({ type: 'webrtc: join-room', data: 'JoinRoomRequest(workerId=w-1, scopeId=s-1)' }), { ok: true, message: { kind: 'join', dialect: 'kotlin', workerId: 'w-1', scopeId: 's-1' } });
  assert.deepEqual(parseRoomMessage({ type: 'webrtc: join-room', data: { worker_id: 'w-1', scope_id: 's-1' } }), { ok: true, message: { kind: 'join', dialect: 'kotlin', workerId: 'w-1', scopeId: 's-1' } });
  assert.deepEqual(parseRoomMessage({ type: 'webrtc_internal', data: { worker_id: 'w', scope_id: 's', to: 't', type: 'answer', data: 'sdp' } }).ok, true, "an older KotlinSyft's `to`/`data`");
  assert.equal(isRoomMessageType('webrtc_internal'), true);
  assert.equal(isRoomMessageType('model-centric/report'), false);
  const bad: unknown[] = [
    null, 'x', 42, {}, { type: 'webrtc: join-room' }, { type: 'webrtc: join-room', data: 'JoinRoomRequest(workerId=a)' },
    { type: 'webrtc: join-room', data: { workerId: 'a', scopeId: 5 } }, { type: 'webrtc: internal-message', data: { workerId: 'a', scopeId: 's', to: 'b', type: 'renegotiate', data: {} } },
    { type: 'webrtc: internal-message', data: { workerId: 'a', scopeId: 's', type: 'offer', data: {} } }, { type: 'webrtc: internal-message', data: [] },
    { type: 'webrtc_internal', data: { worker_id: 'a', scope_id: 's', target: 'b', type: 'offer', message: { sdp: 1 } } }, { type: 'model-centric/report', data: {} },
  ];
  const g = grid({ a: ['s'] });
  g.rooms.join('a', 's');
  for (const m of bad) {
    const parsed = parseRoomMessage(m);
    assert.equal(parsed.ok, false, JSON.stringify(m));
    const handled = g.rooms.handle('a', m);
    assert.equal(handled.ok, false);
    assert.equal(typeof (handled as { error: string }).error, 'string');
  }
});

test('refusals: impersonation, self-signalling, an absent peer, and joins that are not relayed', () => {
  const g = grid({ a: [S], b: [S] });
  g.rooms.join('a', S);
  g.rooms.join('b', S);
  g.inbox('a').length = 0;
  const spoof = g.rooms.handle('a', internal('b', 'b', 'offer', { type: 'offer', sdp: 'x' }));
  assert.match((spoof as { error: string }).error, /not the worker this connection authenticated as/);
  const spoofJoin = g.rooms.handle('a', join('b'));
  assert.equal(spoofJoin.ok, false);
  assert.match((g.rooms.relay('a', internal('a', 'a', 'offer', { type: 'offer', sdp: 'x' })) as { error: string }).error, /itself/);
  assert.match((g.rooms.relay('a', join('a')) as { error: string }).error, /not relayed/);
  g.offline.add('b');
  assert.match((g.rooms.relay('a', internal('a', 'b', 'offer', { type: 'offer', sdp: 'x' })) as { error: string }).error, /not connected/);
  assert.deepEqual(g.inbox('b'), []);
  assert.deepEqual(g.inbox('a'), []);
});

test('bounds: members per room, rooms per worker, message size, scope id', () => {
  const scopes = ['s1', 's2', 's3'];
  const g = grid({ a: scopes, b: scopes, c: scopes }, { maxMembersPerRoom: 2, maxRoomsPerWorker: 2, maxMessageBytes: 2048 });
  assert.equal(g.rooms.join('a', 's1').ok, true);
  assert.equal(g.rooms.join('b', 's1').ok, true);
  const full = g.rooms.join('c', 's1');
  assert.match((full as { error: string }).error, /full/);
  assert.equal(g.rooms.join('a', 's1').ok, true, 'joining again is a no-op, not a second seat');
  assert.equal(g.rooms.join('a', 's2').ok, true);
  assert.match((g.rooms.join('a', 's3') as { error: string }).error, /already in 2 rooms/);
  assert.deepEqual(g.rooms.members('s1'), ['a', 'b']);

  const big = internal('a', 'b', 'offer', { type: 'offer', sdp: 'v'.repeat(4096) }, 's1');
  assert.match((g.rooms.handle('a', big) as { error: string }).error, /over the node's limit of 2048/);
  assert.match((g.rooms.relay('a', big) as { error: string }).error, /over the node's limit/);
  assert.equal(g.inbox('b').length, 0, 'nothing oversized was delivered');

  const g2 = grid({ a: ['x'.repeat(200), 'bad\nscope', ''] });
  for (const scope of ['x'.repeat(200), 'bad\nscope', '']) assert.equal(g2.rooms.join('a', scope).ok, false, JSON.stringify(scope));
});
