// WebRTC signalling rooms ("scopes", §1.12): workers of one FL process find each other and trade SDP
// offers/answers and ICE candidates through the node, which relays them only between members of a room.
// Two dialects reach us: PyGrid's gateway messages (syft.js, SwiftSyft, ours) and KotlinSyft's. Each member
// gets every message in its own dialect, and never a type its parser does not know: KotlinSyft parses only
// `peer` and `webrtc_internal` here, and an unknown type ends its socket's message stream.

/** Message types (client → node and node → client). */
export const ROOM_TYPES = {
  JOIN: 'webrtc: join-room',
  PEER_LEFT: 'webrtc: peer-left',
  INTERNAL: 'webrtc: internal-message',
  /** KotlinSyft's internal message, both directions. */
  KOTLIN_INTERNAL: 'webrtc_internal',
  /** KotlinSyft's "a peer joined" (node → client only). */
  KOTLIN_PEER: 'peer',
} as const;

/** The types a client sends that belong to the room registry (route them to `handle`). */
export function isRoomMessageType(type: string): boolean {
  return type === ROOM_TYPES.JOIN || type === ROOM_TYPES.PEER_LEFT || type === ROOM_TYPES.INTERNAL || type === ROOM_TYPES.KOTLIN_INTERNAL;
}

export type RoomDialect = 'pygrid' | 'kotlin';
export type Signal = 'offer' | 'answer' | 'candidate';

export interface RoomLimits {
  /** Workers in one room (a WebRTC mesh of n peers holds n(n−1)/2 connections). */
  maxMembersPerRoom: number;
  /** Rooms one worker is in at once. */
  maxRoomsPerWorker: number;
  /** A room message's JSON, whole (an SDP offer is a few KiB, a candidate a few hundred bytes). */
  maxMessageBytes: number;
  maxScopeIdChars: number;
}

export const DEFAULT_ROOM_LIMITS: Readonly<RoomLimits> = {
  maxMembersPerRoom: 64,
  maxRoomsPerWorker: 8,
  maxMessageBytes: 64 * 1024,
  maxScopeIdChars: 128,
};

/**
 * What the sender gets. `reply` is the `data` of the reply to send back (echoing type and request_id), or
 * undefined when the sender must get nothing: KotlinSyft cannot parse a reply to these types. PyGrid's
 * gateway answered an empty string, and PyGrid-era clients route every frame of these types to their WebRTC
 * code, so send `reply` only to a client that correlates replies by request_id. A refusal's `error` goes in
 * a PyGrid-style `{"error": …}` reply (again: never to a KotlinSyft sender, whose dialect is in `dialect`).
 */
export type RoomResult =
  | { ok: true; dialect: RoomDialect; reply: Record<string, unknown> | undefined }
  | { ok: false; dialect: RoomDialect; error: string };

export type RoomMessage =
  | { kind: 'join'; dialect: RoomDialect; workerId: string | undefined; scopeId: string }
  | { kind: 'leave'; dialect: RoomDialect; workerId: string | undefined; scopeId: string }
  | {
      kind: 'signal';
      dialect: RoomDialect;
      workerId: string | undefined;
      scopeId: string;
      to: string;
      signal: Signal;
      /** As sent: KotlinSyft's exact `type` string (its enum spelling), PyGrid's lower case. */
      signalAs: string;
      /** PyGrid: the RTCSessionDescription / RTCIceCandidate object; KotlinSyft: its `message` string. */
      payload: unknown;
    };

type Envelope = { type: string; data: unknown };

// KotlinSyft sends the join request's Kotlin toString, not JSON (its WebRTC types are not serialised).
const KOTLIN_JOIN = /^JoinRoomRequest\(workerId=([^,()\s]*), scopeId=([^,()\s]*)\)$/;

/** Reads any room message of either dialect. Never throws. */
export function parseRoomMessage(message: unknown): { ok: true; message: RoomMessage } | { ok: false; error: string } {
  if (typeof message !== 'object' || message === null) return { ok: false, error: 'a room message is an object {"type", "data"}' };
  const { type, data } = message as Partial<Envelope>;
  const fail = (error: string): { ok: false; error: string } => ({ ok: false, error: `${String(type)}: ${error}` });
  switch (type) {
    case ROOM_TYPES.JOIN:
    case ROOM_TYPES.PEER_LEFT: {
      const kind = type === ROOM_TYPES.JOIN ? 'join' : 'leave';
      if (typeof data === 'string') {
        const m = KOTLIN_JOIN.exec(data.trim());
        if (m === null) return fail('data must be {"workerId", "scopeId"} (or KotlinSyft\'s "JoinRoomRequest(workerId=…, scopeId=…)")');
        return { ok: true, message: { kind, dialect: 'kotlin', workerId: m[1] || undefined, scopeId: m[2]! } };
      }
      if (!isObject(data)) return fail('data must be {"workerId", "scopeId"}');
      const kotlin = data.scopeId === undefined && data.scope_id !== undefined;
      const scopeId = kotlin ? data.scope_id : data.scopeId;
      const workerId = kotlin ? data.worker_id : data.workerId;
      if (typeof scopeId !== 'string') return fail('data.scopeId must be a string');
      if (workerId !== undefined && typeof workerId !== 'string') return fail('data.workerId must be a string');
      return { ok: true, message: { kind, dialect: kotlin ? 'kotlin' : 'pygrid', workerId, scopeId } };
    }
    case ROOM_TYPES.INTERNAL:
    case ROOM_TYPES.KOTLIN_INTERNAL: {
      if (!isObject(data)) return fail('data must be an object');
      const kotlin = type === ROOM_TYPES.KOTLIN_INTERNAL;
      // KotlinSyft: {worker_id, scope_id, target, type, message}; an older KotlinSyft said `to` and `data`.
      const workerId = kotlin ? data.worker_id : data.workerId;
      const scopeId = kotlin ? data.scope_id : data.scopeId;
      const to = kotlin ? (data.target ?? data.to) : data.to;
      const payload = kotlin ? (data.message ?? data.data) : data.data;
      const signalAs = data.type;
      if (workerId !== undefined && typeof workerId !== 'string') return fail(`data.${kotlin ? 'worker_id' : 'workerId'} must be a string`);
      if (typeof scopeId !== 'string') return fail(`data.${kotlin ? 'scope_id' : 'scopeId'} must be a string`);
      if (typeof to !== 'string' || to === '') return fail(`data.${kotlin ? 'target' : 'to'} must name the worker to deliver to`);
      const signal = typeof signalAs === 'string' ? signalAs.toLowerCase() : undefined;
      if (signal !== 'offer' && signal !== 'answer' && signal !== 'candidate') return fail('data.type must be "offer", "answer" or "candidate"');
      if (payload === undefined) return fail(`data.${kotlin ? 'message' : 'data'} is missing`);
      if (kotlin && typeof payload !== 'string') return fail('data.message must be a string');
      return { ok: true, message: { kind: 'signal', dialect: kotlin ? 'kotlin' : 'pygrid', workerId, scopeId, to, signal, signalAs: signalAs as string, payload } };
    }
    default:
      return fail('not a room message type');
  }
}

/**
 * The node's rooms. `send` delivers one message to a worker's socket (false: not connected). `mayJoin`
 * says whether a worker may join a scope (only rooms of processes it was accepted into).
 * The registry holds no sockets and no timers; the owner calls `dropWorker` when a worker's socket closes.
 */
export class RoomRegistry {
  private readonly send: (workerId: string, message: object) => boolean;
  private readonly mayJoin: (workerId: string, scopeId: string) => boolean;
  private readonly limits: RoomLimits;
  /** scopeId → members, in join order. */
  private readonly rooms = new Map<string, Set<string>>();
  /** workerId → the rooms it is in. */
  private readonly memberships = new Map<string, Set<string>>();
  /** workerId → the dialect it last spoke (what it is sent in). */
  private readonly dialects = new Map<string, RoomDialect>();

  constructor(send: (workerId: string, message: object) => boolean, mayJoin: (workerId: string, scopeId: string) => boolean, limits: Partial<RoomLimits> = {}) {
    this.send = send;
    this.mayJoin = mayJoin;
    this.limits = { ...DEFAULT_ROOM_LIMITS, ...limits };
  }

  /** Any message whose type passes isRoomMessageType, from the worker this connection authenticated as. */
  handle(workerId: string, message: unknown): RoomResult {
    const dialect = this.dialects.get(workerId) ?? 'pygrid';
    const size = jsonBytes(message);
    if (size > this.limits.maxMessageBytes) return { ok: false, dialect, error: `room message of ${size} bytes is over the node's limit of ${this.limits.maxMessageBytes}` };
    const parsed = parseRoomMessage(message);
    if (!parsed.ok) return { ok: false, dialect, error: parsed.error };
    const m = parsed.message;
    if (m.workerId !== undefined && m.workerId !== workerId) return { ok: false, dialect: m.dialect, error: impersonation(m.workerId) };
    const verbatim = envelopeOf(message);
    if (m.kind === 'join') return this.join(workerId, m.scopeId, { dialect: m.dialect, message: verbatim });
    if (m.kind === 'leave') return this.leave(workerId, m.scopeId, { dialect: m.dialect, message: verbatim });
    return this.relay(workerId, message);
  }

  /**
   * Puts a worker in a room and tells the other members: PyGrid-dialect members get the join message
   * (verbatim when the joiner sent one in their dialect), KotlinSyft members `peer {worker_id}`.
   * Joining a room twice is a no-op that succeeds.
   */
  join(workerId: string, scopeId: string, options: { dialect?: RoomDialect; message?: object } = {}): RoomResult {
    const dialect = options.dialect ?? this.dialects.get(workerId) ?? 'pygrid';
    this.dialects.set(workerId, dialect);
    const refuse = (error: string): RoomResult => ({ ok: false, dialect, error });
    const bad = this.checkScopeId(scopeId);
    if (bad !== undefined) return refuse(bad);
    const room = this.rooms.get(scopeId);
    if (room?.has(workerId)) return { ok: true, dialect, reply: this.replyFor(dialect, { status: 'success', scopeId, peers: [...room].filter((w) => w !== workerId) }) };
    if (!this.mayJoin(workerId, scopeId)) {
      return refuse(`worker ${workerId} may not join room ${JSON.stringify(scopeId)}: a worker can only join rooms of processes it was accepted into`);
    }
    const mine = this.memberships.get(workerId) ?? new Set<string>();
    if (mine.size >= this.limits.maxRoomsPerWorker) return refuse(`worker ${workerId} is already in ${mine.size} rooms, the most the node allows; leave one first`);
    if (room !== undefined && room.size >= this.limits.maxMembersPerRoom) return refuse(`room ${JSON.stringify(scopeId)} is full (${room.size} workers, the most the node allows)`);

    const members = room ?? new Set<string>();
    const peers = [...members];
    members.add(workerId);
    mine.add(scopeId);
    this.rooms.set(scopeId, members);
    this.memberships.set(workerId, mine);

    const canonical = { type: ROOM_TYPES.JOIN, data: { workerId, scopeId } };
    const asSent = dialect === 'pygrid' && options.message !== undefined ? envelopeOf(options.message) : canonical;
    for (const peer of peers) {
      this.send(peer, this.dialectOf(peer) === 'kotlin' ? { type: ROOM_TYPES.KOTLIN_PEER, data: { worker_id: workerId } } : asSent);
    }
    return { ok: true, dialect, reply: this.replyFor(dialect, { status: 'success', scopeId, peers }) };
  }

  /**
   * Delivers an offer, answer or candidate (`webrtc: internal-message` or KotlinSyft's `webrtc_internal`,
   * the whole `{type, data}` as received) to `to`, in the recipient's dialect. Only between two members of
   * the same room; anything else is refused with the reason.
   */
  relay(fromWorkerId: string, message: unknown): RoomResult {
    const senderDialect = this.dialects.get(fromWorkerId) ?? 'pygrid';
    const size = jsonBytes(message);
    if (size > this.limits.maxMessageBytes) return { ok: false, dialect: senderDialect, error: `room message of ${size} bytes is over the node's limit of ${this.limits.maxMessageBytes}` };
    const parsed = parseRoomMessage(message);
    if (!parsed.ok) return { ok: false, dialect: senderDialect, error: parsed.error };
    const m = parsed.message;
    const dialect = m.dialect;
    const refuse = (error: string): RoomResult => ({ ok: false, dialect, error });
    if (m.kind !== 'signal') return refuse(`${(message as Envelope).type} is not relayed; it joins or leaves a room`);
    if (m.workerId !== undefined && m.workerId !== fromWorkerId) return refuse(impersonation(m.workerId));
    const room = this.rooms.get(m.scopeId);
    if (room === undefined || !room.has(fromWorkerId)) return refuse(`worker ${fromWorkerId} is not in room ${JSON.stringify(m.scopeId.slice(0, this.limits.maxScopeIdChars))}; join it first`);
    if (m.to === fromWorkerId) return refuse('a worker cannot signal itself');
    if (!room.has(m.to)) return refuse(`worker ${JSON.stringify(m.to.slice(0, 64))} is not in room ${JSON.stringify(m.scopeId)}`);
    this.dialects.set(fromWorkerId, dialect);

    const out = this.dialectOf(m.to) === 'kotlin' ? toKotlin(fromWorkerId, m) : toPyGrid(fromWorkerId, m, message as Envelope);
    if (!this.send(m.to, out)) return refuse(`worker ${m.to} is not connected`);
    return { ok: true, dialect, reply: this.replyFor(dialect, { status: 'success' }) };
  }

  /**
   * Takes a worker out of one room (or, without scopeId, all of its rooms) and tells the remaining
   * PyGrid-dialect members `webrtc: peer-left` (KotlinSyft has no parser for it; see the file comment).
   */
  leave(workerId: string, scopeId?: string, options: { dialect?: RoomDialect; message?: object } = {}): RoomResult {
    const dialect = options.dialect ?? this.dialects.get(workerId) ?? 'pygrid';
    const mine = this.memberships.get(workerId);
    if (scopeId !== undefined && (mine === undefined || !mine.has(scopeId))) {
      return { ok: false, dialect, error: `worker ${workerId} is not in room ${JSON.stringify(scopeId.slice(0, this.limits.maxScopeIdChars))}` };
    }
    const scopes = scopeId !== undefined ? [scopeId] : [...(mine ?? [])];
    for (const scope of scopes) {
      const room = this.rooms.get(scope)!;
      room.delete(workerId);
      mine!.delete(scope);
      if (room.size === 0) this.rooms.delete(scope);
      const canonical = { type: ROOM_TYPES.PEER_LEFT, data: { workerId, scopeId: scope } };
      const asSent = dialect === 'pygrid' && options.message !== undefined && scopeId !== undefined ? envelopeOf(options.message) : canonical;
      for (const peer of room) {
        if (this.dialectOf(peer) === 'pygrid') this.send(peer, asSent);
      }
    }
    if (mine !== undefined && mine.size === 0) this.memberships.delete(workerId);
    return { ok: true, dialect, reply: this.replyFor(dialect, { status: 'success' }) };
  }

  /** The worker's socket closed: it leaves every room (the others hear peer-left) and is forgotten. */
  dropWorker(workerId: string): void {
    this.leave(workerId);
    this.dialects.delete(workerId);
  }

  /** The members of a room, in join order (empty when there is no such room). */
  members(scopeId: string): string[] {
    return [...(this.rooms.get(scopeId) ?? [])];
  }

  /** The rooms a worker is in. */
  roomsOf(workerId: string): string[] {
    return [...(this.memberships.get(workerId) ?? [])];
  }

  private dialectOf(workerId: string): RoomDialect {
    return this.dialects.get(workerId) ?? 'pygrid';
  }

  private replyFor(dialect: RoomDialect, data: Record<string, unknown>): Record<string, unknown> | undefined {
    return dialect === 'kotlin' ? undefined : data;
  }

  private checkScopeId(scopeId: unknown): string | undefined {
    if (typeof scopeId !== 'string' || scopeId.length === 0) return 'scopeId must be a non-empty string';
    if (scopeId.length > this.limits.maxScopeIdChars) return `scopeId is longer than ${this.limits.maxScopeIdChars} characters`;
    // eslint-disable-next-line no-control-regex
    if (/[\u0000-\u001f\u007f]/.test(scopeId)) return 'scopeId contains control characters';
    return undefined;
  }
}

// KotlinSyft's InternalMessageResponse {type, worker_id, sdp_string}. From a PyGrid-dialect sender the
// session description's `sdp` text is passed; a candidate (or anything else) goes as its JSON.
function toKotlin(from: string, m: Extract<RoomMessage, { kind: 'signal' }>): object {
  let sdp: string;
  if (typeof m.payload === 'string') sdp = m.payload;
  else if (m.signal !== 'candidate' && isObject(m.payload) && typeof m.payload.sdp === 'string') sdp = m.payload.sdp;
  else sdp = JSON.stringify(m.payload);
  return { type: ROOM_TYPES.KOTLIN_INTERNAL, data: { type: m.dialect === 'kotlin' ? m.signalAs : m.signal, worker_id: from, sdp_string: sdp } };
}

// PyGrid's gateway forwarded the message verbatim; from a KotlinSyft sender, its `message` string becomes
// an RTCSessionDescriptionInit ({type, sdp}) or, for a candidate, the candidate it encodes.
function toPyGrid(from: string, m: Extract<RoomMessage, { kind: 'signal' }>, original: Envelope): object {
  if (m.dialect === 'pygrid') return envelopeOf(original);
  const text = m.payload as string;
  const data = m.signal === 'candidate' ? (parseObject(text) ?? { candidate: text }) : { type: m.signal, sdp: text };
  return { type: ROOM_TYPES.INTERNAL, data: { workerId: from, scopeId: m.scopeId, to: m.to, type: m.signal, data } };
}

/** `{type, data}` only: the sender's request_id means nothing to the recipient. */
function envelopeOf(message: unknown): Envelope {
  const { type, data } = message as Envelope;
  return { type, data };
}

function impersonation(claimed: string): string {
  return `the message names worker ${JSON.stringify(claimed.slice(0, 64))}, not the worker this connection authenticated as`;
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function parseObject(text: string): Record<string, unknown> | undefined {
  try {
    const v: unknown = JSON.parse(text);
    return isObject(v) ? v : undefined;
  } catch {
    return undefined;
  }
}

function jsonBytes(message: unknown): number {
  try {
    return Buffer.byteLength(JSON.stringify(message) ?? '');
  } catch {
    return Number.POSITIVE_INFINITY; // cyclic or otherwise not JSON: not a message that came off a socket
  }
}
