// Node-to-node links (PyGrid's connect-node): this node opens its own GridSocket to a peer and keeps the
// link up. On every dial, first and after each drop, the peer must prove the id it claims (a signed
// fresh challenge, identity.ts) before credentials go out or the link is used; a link is never replaced
// by a connection that did not. Subscribers hear peer-connected / peer-disconnected as links change.

import { randomBytes, verify as verifySignature } from 'node:crypto';
import { ErrorCodes, GridError, gridError, toGridError } from '../core/errors';
import type { Logger } from '../core/logger';
import { GetId, ProveIdentity, type PeerInfo } from '../core/protocol/messages';
import { backoffDelay, resolveReconnect } from '../core/socket/backoff';
import { GridSocket, type SocketStatus } from '../core/socket/grid-socket';
import type { NodeEvents } from './events';
import { importPublicKey, isDerivedId, nodeIdOf, proofMessage, type NodeIdentity, type PeerPins } from './identity';

type Credentials = { username: string; password: string } | { token: string };

interface Link {
  info: PeerInfo;
  /** The key the peer proved; every redial must prove the same one. */
  publicKey: string;
  /** Kept to sign in again after a redial (the session token first, the password if that fails). */
  credentials: Credentials | undefined;
  token: string | undefined;
  /** The current, verified connection; undefined while redialling. */
  socket: GridSocket | undefined;
  attempt: number;
  timer: NodeJS.Timeout | undefined;
  dialing: AbortController | undefined;
}

export interface ConnectPeerOptions {
  /** The peer's id, if known: the id the peer proves must be this one. */
  id?: string;
  auth?: Credentials;
  signal?: AbortSignal;
  /** How long the first connection (with its identity check) may take. Default 10 s. */
  timeoutMs?: number;
}

interface Verified { id: string; publicKey: string }

interface Flight {
  /** The id the dial requires the peer to prove, if any. */
  id: string | undefined;
  abort: AbortController;
  /** Callers still waiting; the dial stops when the last of them cancels. */
  waiters: number;
  link: Promise<PeerInfo>;
}

type Phase = 'connect' | 'prove' | 'check' | 'authenticate' | 'describe';

interface Dialed extends Verified {
  socket: GridSocket;
  name: string;
  token: string | undefined;
}

export const DEFAULT_PEER_TIMEOUT_MS = 10_000;
/** Redial after a drop: 250 ms, doubling, at most 30 s apart, without a limit (a restarting node comes back). */
const REDIAL = resolveReconnect({ initialDelayMs: 250, maxDelayMs: 30_000 });
const HEARTBEAT_MS = 15_000;

export class PeerLinks {
  private readonly links = new Map<string, Link>();
  private readonly dials = new Set<AbortController>();
  /** First dials in flight, by address: concurrent connects share one. */
  private readonly flights = new Map<string, Flight>();
  private readonly self: NodeIdentity;
  private readonly events: NodeEvents;
  private readonly log: Logger;
  private readonly pins: PeerPins;
  private readonly maxPayload: number;
  private closed = false;

  constructor(opts: { self: NodeIdentity; events: NodeEvents; log: Logger; pins?: PeerPins; maxPayload?: number }) {
    this.self = opts.self;
    this.events = opts.events;
    this.log = opts.log;
    this.pins = opts.pins ?? memoryPins();
    // A peer's frames obey the limit the node sets for its clients' frames.
    this.maxPayload = opts.maxPayload ?? 64 * 1024 * 1024;
  }

  list(): PeerInfo[] {
    return [...this.links.values()].map((l) => copy(l.info));
  }

  /**
   * Links to the node at `address`, or returns its open link. Calls for one address at once share one
   * dial (single flight): they all get its link or its error; a failed dial is not kept, the next call
   * dials again. A call that names another id than the dial in flight waits for it, then decides.
   */
  async connect(address: string, opts: ConnectPeerOptions = {}): Promise<PeerInfo> {
    for (;;) {
      if (this.closed) throw gridError('DISPOSED', 'the node is shutting down');
      if (opts.signal?.aborted) throw gridError('ABORTED', `connect-node to ${address} was cancelled`);
      const existing = [...this.links.values()].find((l) => l.info.address === address);
      if (existing !== undefined && existing.info.status === 'open') {
        if (opts.id !== undefined && opts.id !== existing.info.id) {
          throw gridError('PEER_UNVERIFIED', `the node at ${address} is linked and proved that it is ${existing.info.id}, not ${opts.id}`, { expected: opts.id, actual: existing.info.id });
        }
        return copy(existing.info);
      }
      let flight = this.flights.get(address);
      if (flight !== undefined && flight.id !== opts.id) {
        await this.join(address, flight, opts.signal).catch(() => {});
        continue;
      }
      if (flight === undefined) {
        const abort = new AbortController();
        // Forgotten before any waiter hears the outcome: a failed dial is not reused.
        const link: Promise<PeerInfo> = this.open(address, opts, abort).finally(() => {
          if (this.flights.get(address)?.link === link) this.flights.delete(address);
        });
        link.catch(() => {});
        flight = { id: opts.id, abort, waiters: 0, link };
        this.flights.set(address, flight);
      }
      return copy(await this.join(address, flight, opts.signal));
    }
  }

  /** Waits for a dial in flight; a cancel drops only that waiter, and stops the dial once nobody waits. */
  private async join(address: string, flight: Flight, signal: AbortSignal | undefined): Promise<PeerInfo> {
    flight.waiters += 1;
    let waiting = true;
    const leave = () => {
      if (!waiting) return;
      waiting = false;
      if (--flight.waiters === 0) flight.abort.abort();
    };
    let onAbort = () => {};
    const cancelled = new Promise<never>((_, reject) => {
      onAbort = () => { leave(); reject(gridError('ABORTED', `connect-node to ${address} was cancelled`)); };
    });
    cancelled.catch(() => {});
    if (signal?.aborted) onAbort();
    signal?.addEventListener('abort', onAbort, { once: true });
    try {
      return await Promise.race([flight.link, cancelled]);
    } finally {
      signal?.removeEventListener('abort', onAbort);
      // The dial is over (or this waiter left): its abort is a no-op then.
      leave();
    }
  }

  private async open(address: string, opts: ConnectPeerOptions, abort: AbortController): Promise<PeerInfo> {
    this.dials.add(abort);
    let dialed: Dialed;
    try {
      dialed = await this.dial(address, {
        signal: abort.signal,
        timeoutMs: opts.timeoutMs ?? DEFAULT_PEER_TIMEOUT_MS,
        credentials: opts.auth,
        token: undefined,
        accept: (v) => {
          if (opts.id !== undefined && opts.id !== v.id) {
            throw gridError('PEER_UNVERIFIED', `the node at ${address} proved that it is ${v.id}, not ${opts.id}`, { expected: opts.id, actual: v.id });
          }
        },
      });
    } finally {
      this.dials.delete(abort);
    }
    if (this.closed) {
      dialed.socket.dispose();
      throw gridError('DISPOSED', 'the node is shutting down');
    }
    const old = this.links.get(dialed.id);
    if (old !== undefined) this.drop(old);
    const link: Link = {
      info: { id: dialed.id, name: dialed.name, address, status: 'open', connected_at: new Date().toISOString() },
      publicKey: dialed.publicKey, credentials: opts.auth, token: dialed.token,
      socket: undefined, attempt: 0, timer: undefined, dialing: undefined,
    };
    this.links.set(dialed.id, link);
    this.attach(link, dialed.socket);
    this.log.info({ peer: dialed.id, address }, 'peer connected');
    this.events.emit({ event: 'peer-connected', peer: copy(link.info) });
    return copy(link.info);
  }

  /** The live, verified socket to a peer, for node-to-node operations. */
  socketOf(id: string): GridSocket | undefined {
    return this.links.get(id)?.socket;
  }

  get selfId(): string {
    return this.self.id;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const d of this.dials) d.abort();
    for (const l of this.links.values()) this.drop(l);
    this.links.clear();
  }

  /**
   * Opens a connection to `address` and has the peer prove its identity; only then signs in and asks
   * its name. `accept` may refuse the verified identity. Never leaves a socket behind on failure.
   */
  private async dial(address: string, o: {
    signal: AbortSignal; timeoutMs: number; credentials: Credentials | undefined; token: string | undefined; accept(v: Verified): void;
  }): Promise<Dialed> {
    const socket = new GridSocket({ logger: this.log });
    let phase: Phase = 'connect';
    let stop: GridError | undefined;
    const stopped = new AbortController();
    const halt = (e: GridError) => { stop ??= e; stopped.abort(); };
    const timer = setTimeout(() => halt(phase === 'connect'
      ? gridError('NOT_CONNECTED', `could not reach peer ${address} within ${o.timeoutMs} ms`)
      : phase === 'prove'
        ? gridError('PEER_UNVERIFIED', `peer ${address} did not answer the identity challenge within ${o.timeoutMs} ms; refused`)
        : gridError('TIMEOUT', `peer ${address} did not finish linking (${phase}) within ${o.timeoutMs} ms`)), o.timeoutMs);
    const onAbort = () => halt(gridError('ABORTED', `dialling peer ${address} was cancelled`));
    if (o.signal.aborted) onAbort();
    o.signal.addEventListener('abort', onAbort, { once: true });
    // A peer that sends what is not our protocol is refused at once, not after the timeout.
    const onProtocolError = (e: GridError) => halt(gridError('PEER_UNVERIFIED', `peer ${address} sent a frame that is not the grid protocol (${e.message}); it was refused`));
    socket.on('protocol-error', onProtocolError);
    const halted = new Promise<never>((_, reject) => stopped.signal.addEventListener('abort', () => reject(stop), { once: true }));
    halted.catch(() => {});
    const step = <T>(p: Promise<T>): Promise<T> => Promise.race([p, halted]);
    try {
      // Redials are ours: GridSocket must not reconnect (and re-send credentials) before a proof.
      await step(socket.connect(address, { heartbeatMs: HEARTBEAT_MS, maxPayload: this.maxPayload, handshakeTimeoutMs: o.timeoutMs }, { enabled: false }));
      phase = 'prove';
      const challenge = randomBytes(32).toString('base64url');
      const proof = await step(socket.request(ProveIdentity, { challenge, verifier_id: this.self.id }, { signal: stopped.signal, timeout: o.timeoutMs }));
      const v = await this.verify(address, challenge, proof);
      phase = 'check';
      if (v.id === this.self.id) throw gridError('INVALID_MESSAGE', `a node cannot link to itself: ${address} is this node (${v.id})`);
      o.accept(v);
      phase = 'authenticate';
      let token: string | undefined;
      if (o.token !== undefined || o.credentials !== undefined) token = await step(this.signIn(socket, address, o.token, o.credentials, stopped.signal, o.timeoutMs));
      phase = 'describe';
      const who = await step(socket.request(GetId, undefined, { signal: stopped.signal, timeout: o.timeoutMs }));
      if (who.id !== v.id) throw gridError('PEER_UNVERIFIED', `peer ${address} proved id ${v.id} but get-id says ${who.id}; refused`);
      // Pin a pre-key peer's key once the whole link is up (trust on first use).
      if (!isDerivedId(v.id) && await this.pins.get(v.id) === undefined) await this.pins.set(v.id, v.publicKey);
      socket.off('protocol-error', onProtocolError);
      return { ...v, socket, name: who.name, token };
    } catch (err) {
      socket.dispose();
      throw explain(address, phase, stop ?? toGridError(err));
    } finally {
      clearTimeout(timer);
      o.signal.removeEventListener('abort', onAbort);
    }
  }

  private async verify(address: string, challenge: string, proof: { id: string; public_key: string; signature: string }): Promise<Verified> {
    const imported = importPublicKey(proof.public_key);
    if (imported === undefined) throw gridError('PEER_UNVERIFIED', `peer ${address} sent a public key that is not an Ed25519 key; refused`);
    let signed = false;
    try {
      signed = verifySignature(null, proofMessage(challenge, proof.id, this.self.id), imported.key, Buffer.from(proof.signature, 'base64url'));
    } catch { /* a malformed signature is a wrong one */ }
    if (!signed) {
      throw gridError('PEER_UNVERIFIED', `the node at ${address} claims id ${proof.id} but could not prove it: its signature of this link's challenge does not verify`, { id: proof.id });
    }
    if (isDerivedId(proof.id)) {
      if (nodeIdOf(imported.canonical) !== proof.id) {
        throw gridError('PEER_UNVERIFIED', `the node at ${address} claims id ${proof.id}, but the key it signed with belongs to id ${nodeIdOf(imported.canonical)}; refused`, { id: proof.id });
      }
    } else {
      const pinned = await this.pins.get(proof.id);
      if (pinned !== undefined && pinned !== imported.canonical) {
        throw gridError('PEER_UNVERIFIED', `the node at ${address} claims id ${proof.id}, but its key is not the one ${proof.id} proved when it was first linked; refused`, { id: proof.id });
      }
    }
    return { id: proof.id, publicKey: imported.canonical };
  }

  private async signIn(socket: GridSocket, address: string, token: string | undefined, credentials: Credentials | undefined, signal: AbortSignal, timeout: number): Promise<string> {
    const attempt = async (c: Credentials) => (await socket.authenticate(c, { signal, timeout })).token;
    try {
      if (token !== undefined) {
        try {
          return await attempt({ token });
        } catch (err) {
          // A token the peer no longer knows (sessions expire): the password, if we have one.
          if (credentials === undefined || !('password' in credentials) || toGridError(err).code !== ErrorCodes.BAD_CREDENTIALS) throw err;
        }
      }
      return await attempt(credentials!);
    } catch (err) {
      const e = toGridError(err);
      if (e.code !== ErrorCodes.BAD_CREDENTIALS) throw e;
      throw new GridError(e.code, `peer ${address} refused the credentials: ${e.message}`, e.details);
    }
  }

  private attach(link: Link, socket: GridSocket): void {
    link.socket = socket;
    socket.on('status', (st: SocketStatus) => {
      if (link.socket === socket && (st.state === 'closed' || st.state === 'idle')) this.lost(link, socket);
    });
  }

  private lost(link: Link, socket: GridSocket): void {
    // Cleared first: dispose() reports the socket idle, which must not count as a second loss.
    link.socket = undefined;
    socket.dispose();
    if (this.closed) return;
    const wasOpen = link.info.status === 'open';
    link.info.status = 'reconnecting';
    if (wasOpen) {
      this.log.info({ peer: link.info.id, address: link.info.address }, 'peer disconnected; redialling');
      this.events.emit({ event: 'peer-disconnected', peer: copy(link.info) });
    }
    this.scheduleRedial(link);
  }

  private scheduleRedial(link: Link): void {
    if (this.closed || this.links.get(link.info.id) !== link || link.timer !== undefined || link.socket !== undefined) return;
    link.attempt += 1;
    link.timer = setTimeout(() => void this.redial(link), backoffDelay(link.attempt, REDIAL));
    link.timer.unref();
  }

  private async redial(link: Link): Promise<void> {
    link.timer = undefined;
    if (this.closed || this.links.get(link.info.id) !== link) return;
    const abort = new AbortController();
    link.dialing = abort;
    const { id, address } = link.info;
    try {
      const dialed = await this.dial(address, {
        signal: abort.signal,
        timeoutMs: DEFAULT_PEER_TIMEOUT_MS,
        credentials: link.credentials,
        token: link.token,
        accept: (v) => {
          if (v.id !== id || v.publicKey !== link.publicKey) {
            throw gridError('PEER_UNVERIFIED', `the node now at ${address} proved that it is ${v.id}${v.id === id ? ' with another key' : ''}, not the linked ${id}; the link stays down`, { expected: id, actual: v.id });
          }
        },
      });
      if (this.closed || this.links.get(id) !== link) { dialed.socket.dispose(); return; }
      link.attempt = 0;
      link.token = dialed.token ?? link.token;
      link.info.name = dialed.name;
      delete link.info.last_error;
      link.info.status = 'open';
      this.attach(link, dialed.socket);
      this.log.info({ peer: id, address }, 'peer reconnected');
      this.events.emit({ event: 'peer-connected', peer: copy(link.info) });
    } catch (err) {
      if (this.closed || this.links.get(id) !== link) return;
      const e = toGridError(err);
      // Say it once per kind of failure, not once per redial.
      if (link.info.last_error?.code !== e.code) this.log.warn({ peer: id, address, code: e.code }, e.message);
      link.info.last_error = { code: e.code, message: e.message };
      this.scheduleRedial(link);
    } finally {
      if (link.dialing === abort) link.dialing = undefined;
    }
  }

  private drop(link: Link): void {
    if (link.timer !== undefined) clearTimeout(link.timer);
    link.timer = undefined;
    link.dialing?.abort();
    const socket = link.socket;
    link.socket = undefined;
    socket?.dispose();
    link.info.status = 'closed';
  }
}

function copy(info: PeerInfo): PeerInfo {
  return { ...info, ...(info.last_error !== undefined && { last_error: { ...info.last_error } }) };
}

function memoryPins(): PeerPins {
  const m = new Map<string, string>();
  return { get: async (id) => m.get(id), set: async (id, key) => { m.set(id, key); } };
}

/** Says which step of dialling failed, in the terms of a link. */
function explain(address: string, phase: Phase, e: GridError): GridError {
  if (e.code === ErrorCodes.CONNECTION_DROPPED || e.code === ErrorCodes.RECONNECT_LIMIT || e.code === ErrorCodes.DISPOSED) {
    if (phase === 'connect') return gridError('NOT_CONNECTED', `could not reach peer ${address}: ${e.message}`);
    if (phase === 'prove') return gridError('PEER_UNVERIFIED', `peer ${address} closed the connection during the identity check (${e.message}); refused`);
    return gridError('NOT_CONNECTED', `peer ${address} closed the connection while linking: ${e.message}`);
  }
  if (phase === 'prove' && e.code !== ErrorCodes.PEER_UNVERIFIED && e.code !== ErrorCodes.ABORTED) {
    // UNKNOWN_TYPE: a node from before identity proofs, or not a grid node; INVALID_MESSAGE: a bad proof.
    return gridError('PEER_UNVERIFIED', `peer ${address} did not prove its identity (${e.code}: ${e.message}); a node is linked only once it proves the id it claims`, { cause: e.code });
  }
  return e;
}
