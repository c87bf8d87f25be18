// Node-to-node links (PyGrid's connect-node): this node opens its own GridSocket to a peer, learns its
// id with get-id, and keeps the link up with the socket's reconnect policy. Subscribers hear
// peer-connected / peer-disconnected as the link's state changes.

import { ErrorCodes, GridError, gridError, toGridError } from '../core/errors';
import type { Logger } from '../core/logger';
import { GetId, type PeerInfo } from '../core/protocol/messages';
import { GridSocket, type SocketStatus } from '../core/socket/grid-socket';
import type { NodeEvents } from './events';
import type { NodeIdentity } from './handlers';

interface Peer {
  info: PeerInfo;
  socket: GridSocket;
}

export interface ConnectPeerOptions {
  id?: string;
  auth?: { username: string; password: string } | { token: string };
  signal?: AbortSignal;
  /** How long the first connection may take. Default 10 s. */
  timeoutMs?: number;
}

export class PeerLinks {
  private readonly peers = new Map<string, Peer>();
  private readonly self: NodeIdentity;
  private readonly events: NodeEvents;
  private readonly log: Logger;
  private closed = false;

  constructor(opts: { self: NodeIdentity; events: NodeEvents; log: Logger }) {
    this.self = opts.self;
    this.events = opts.events;
    this.log = opts.log;
  }

  list(): PeerInfo[] {
    return [...this.peers.values()].map((p) => ({ ...p.info }));
  }

  async connect(address: string, opts: ConnectPeerOptions = {}): Promise<PeerInfo> {
    if (this.closed) throw gridError('DISPOSED', 'the node is shutting down');
    const existing = [...this.peers.values()].find((p) => p.info.address === address);
    if (existing !== undefined && existing.info.status !== 'closed') return { ...existing.info };
    const socket = new GridSocket({ logger: this.log });
    const timeoutMs = opts.timeoutMs ?? 10_000;
    const abort = new AbortController();
    const timer = setTimeout(() => abort.abort(), timeoutMs);
    const onOuterAbort = () => abort.abort();
    opts.signal?.addEventListener('abort', onOuterAbort, { once: true });
    try {
      await Promise.race([
        // Fail fast on a wrong address; once linked, onStatus keeps retrying without a limit.
        socket.connect(address, { heartbeatMs: 15_000 }, { maxAttempts: 2, initialDelayMs: 250 }),
        new Promise<never>((_, reject) => abort.signal.addEventListener('abort', () => reject(
          gridError('NOT_CONNECTED', `could not reach peer ${address} within ${timeoutMs} ms`)), { once: true })),
      ]);
      if (opts.auth !== undefined) {
        try {
          await socket.authenticate(opts.auth, { signal: abort.signal });
        } catch (err) {
          const e = toGridError(err);
          throw new GridError(e.code, `peer ${address} refused the credentials: ${e.message}`, e.details);
        }
      }
      const who = await socket.request(GetId, undefined, { signal: abort.signal });
      if (opts.id !== undefined && opts.id !== who.id) {
        throw gridError('NOT_FOUND', `the node at ${address} has id ${who.id}, not ${opts.id}`, { expected: opts.id, actual: who.id });
      }
      const info: PeerInfo = { id: who.id, name: who.name, address, status: 'open', connected_at: new Date().toISOString() };
      const old = this.peers.get(who.id);
      if (old !== undefined) old.socket.dispose();
      const peer: Peer = { info, socket };
      this.peers.set(who.id, peer);
      socket.on('status', (st: SocketStatus) => this.onStatus(peer, st));
      this.log.info({ peer: who.id, address }, 'peer connected');
      this.events.emit({ event: 'peer-connected', peer: { ...info } });
      return { ...info };
    } catch (err) {
      socket.dispose();
      const e = toGridError(err);
      if (e.code === ErrorCodes.ABORTED && opts.signal?.aborted) throw gridError('ABORTED', `connect-node to ${address} was cancelled`);
      if (e.code === ErrorCodes.RECONNECT_LIMIT) throw gridError('NOT_CONNECTED', `could not reach peer ${address}: ${e.message}`);
      throw e;
    } finally {
      clearTimeout(timer);
      opts.signal?.removeEventListener('abort', onOuterAbort);
    }
  }

  private onStatus(peer: Peer, st: SocketStatus): void {
    if (st.state === 'closed' && st.reconnectionLimitReached && !this.closed) {
      // The link was up once, so the peer exists: keep trying (a restarting node comes back).
      peer.socket.connect(peer.info.address, { heartbeatMs: 15_000 }, { maxAttempts: Infinity, initialDelayMs: 1000, maxDelayMs: 30_000 }).catch(() => {});
    }
    const status: PeerInfo['status'] = st.state === 'idle' ? 'closed' : st.state;
    if (status === peer.info.status) return;
    const wasOpen = peer.info.status === 'open';
    peer.info.status = status;
    if (status === 'open') this.events.emit({ event: 'peer-connected', peer: { ...peer.info } });
    else if (wasOpen) this.events.emit({ event: 'peer-disconnected', peer: { ...peer.info } });
  }

  /** The live socket to a peer, for node-to-node operations. */
  socketOf(id: string): GridSocket | undefined {
    return this.peers.get(id)?.socket;
  }

  get selfId(): string {
    return this.self.id;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const p of this.peers.values()) p.socket.dispose();
    this.peers.clear();
  }
}
