// WebRTC signalling rooms on the node's WebSocket (rooms.ts does the rooms; this file binds them to
// connections). A worker id is bound to the connection that authenticated it (model-centric/authenticate
// over WS), which is where the node delivers that worker's room messages and from which alone it may
// speak as that worker. A room's scopeId is its FL process's id (the `model_id` of an accepted cycle-request,
// in decimal): one process, one room, whatever its name and version hold (`name@version` made "a@b" version
// "c" and "a" version "b@c" one room, and long names overran the scope id limit). A worker may join only the
// room of the process it authenticated for, and only once it has been accepted into one of its cycles.

import { gridError } from '../../core/errors';
import type { IncomingMessage } from '../../core/protocol/envelope';
import type { GridConnection, GridRouter, RawAnswer } from '../rpc/server';
import { isRoomMessageType, parseRoomMessage, RoomRegistry, type RoomLimits } from './rooms';
import type { FlStore } from './store';

/** The room (scopeId) of an FL process: its id, as workers get it in `model_id`. */
export function processScopeId(p: { id: number }): string {
  return String(p.id);
}

export class FlSignalling {
  readonly rooms: RoomRegistry;
  private readonly store: FlStore;
  private readonly connections = new Map<string, GridConnection>();
  private readonly workersOf = new Map<GridConnection, Set<string>>();
  /** Joins decided from the store (mayJoin) for the message being handled: the rooms ask synchronously. */
  private readonly decided = new Map<string, boolean>();
  /** Per connection, the message being handled: its room messages are handled in the order they came. */
  private readonly queues = new WeakMap<GridConnection, Promise<unknown>>();

  constructor(store: FlStore, limits: Partial<RoomLimits> = {}) {
    this.store = store;
    this.rooms = new RoomRegistry(
      (workerId, message) => {
        const conn = this.connections.get(workerId);
        if (conn === undefined || !conn.isOpen) return false;
        const { type, data } = message as { type: string; data: unknown };
        conn.push(type, data);
        return true;
      },
      (workerId, scopeId) => this.decided.get(`${workerId}\n${scopeId}`) === true,
      limits,
    );
  }

  /** Routes the room message types (both dialects) of every connection here. */
  register(router: GridRouter): void {
    router.handleRaw(isRoomMessageType, (msg, conn) => this.handle(msg, conn));
  }

  /** `workerId` authenticated on `conn`: its room messages go there; when `conn` closes it leaves its rooms. */
  bind(workerId: string, conn: GridConnection): void {
    let mine = this.workersOf.get(conn);
    if (mine === undefined) {
      mine = new Set();
      this.workersOf.set(conn, mine);
      conn.onClosed(() => this.dropConnection(conn));
    }
    mine.add(workerId);
    this.connections.set(workerId, conn);
  }

  /** A worker may join the room of the process it authenticated for once accepted into one of its cycles. */
  async mayJoin(workerId: string, scopeId: string): Promise<boolean> {
    const worker = await this.store.worker(workerId);
    const p = worker === undefined ? undefined : await this.store.process(worker.processId);
    if (p === undefined || processScopeId(p) !== scopeId) return false;
    return this.store.everWorked(p.id, workerId);
  }

  private handle(msg: IncomingMessage, conn: GridConnection): Promise<RawAnswer> {
    const prev = this.queues.get(conn) ?? Promise.resolve();
    const next = prev.then(() => this.handleInOrder(msg, conn));
    this.queues.set(conn, next.catch(() => undefined));
    return next;
  }

  private async handleInOrder(msg: IncomingMessage, conn: GridConnection): Promise<RawAnswer> {
    // Only clients that correlate replies by request_id get one: PyGrid-era clients (syft.js's WebRTC
    // code) route every frame of these types to their WebRTC handlers, and KotlinSyft cannot parse one.
    const answer = msg.request_id !== undefined;
    const parsed = parseRoomMessage(msg);
    if (!parsed.ok) return answer ? { error: gridError('INVALID_MESSAGE', parsed.error) } : undefined;
    const mine = this.workersOf.get(conn);
    const named = parsed.message.workerId;
    let workerId: string | undefined;
    if (named !== undefined) workerId = mine?.has(named) ? named : undefined;
    else if (mine?.size === 1) workerId = [...mine][0];
    if (workerId === undefined) {
      const why = named !== undefined
        ? `worker ${JSON.stringify(named.slice(0, 64))} did not authenticate on this connection; send model-centric/authenticate on this socket first`
        : 'this message names no worker and this connection has not authenticated exactly one: name the worker (workerId)';
      return answer ? { error: gridError('FORBIDDEN', why) } : undefined;
    }
    const key = parsed.message.kind === 'join' ? `${workerId}\n${parsed.message.scopeId}` : undefined;
    if (key !== undefined) this.decided.set(key, await this.mayJoin(workerId, parsed.message.scopeId));
    let result;
    try {
      result = this.rooms.handle(workerId, msg);
    } finally {
      if (key !== undefined) this.decided.delete(key);
    }
    if (!answer || result.dialect === 'kotlin') return undefined;
    if (!result.ok) return { error: gridError('FORBIDDEN', result.error) };
    return { reply: result.reply ?? {} };
  }

  private dropConnection(conn: GridConnection): void {
    for (const workerId of this.workersOf.get(conn) ?? []) {
      if (this.connections.get(workerId) === conn) this.connections.delete(workerId);
      this.rooms.dropWorker(workerId);
    }
    this.workersOf.delete(conn);
  }
}
