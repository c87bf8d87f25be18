// The SMPC links of a node: verified peer links (peers.ts: the peer proved its id) on which this node
// has proved its own id too (attest.ts), so both ends know who they talk to.

import { ErrorCodes, gridError, toGridError } from '../../core/errors';
import type { SmpcNodeRef } from '../../core/protocol/smpc-messages';
import type { GridSocket } from '../../core/socket/grid-socket';
import type { NodeIdentity } from '../identity';
import type { PeerLinks } from '../peers';
import { attest } from './attest';

export class SmpcLinks {
  private readonly attested = new WeakMap<GridSocket, Promise<void>>();

  constructor(private readonly peers: PeerLinks, private readonly self: NodeIdentity, private readonly timeoutMs: number) {}

  /**
   * A socket to `node` on which both ends proved their ids; dials (or redials) when needed. A link that
   * is replaced or drops while this node proves itself on it is tried once more, on a fresh link.
   */
  async socket(node: SmpcNodeRef, role: string): Promise<GridSocket> {
    for (let tries = 1; ; tries++) {
      try {
        return await this.proved(node);
      } catch (err) {
        const e = toGridError(err);
        const lost = e.code === ErrorCodes.DISPOSED || e.code === ErrorCodes.CONNECTION_DROPPED;
        if (tries < 2 && lost) continue;
        throw gridError('SMPC_ABORTED', `cannot reach the ${role} ${node.id} at ${node.address}: ${e.code}: ${e.message}`, { node: node.id, cause: e.code });
      }
    }
  }

  private async proved(node: SmpcNodeRef): Promise<GridSocket> {
    let socket = this.peers.socketOf(node.id);
    if (socket === undefined) {
      await this.peers.connect(node.address, { id: node.id, timeoutMs: this.timeoutMs });
      socket = this.peers.socketOf(node.id);
      if (socket === undefined) throw gridError('NOT_CONNECTED', `the link to ${node.address} dropped as it opened`);
    }
    let proof = this.attested.get(socket);
    if (proof === undefined) {
      proof = attest(socket, this.self, node.id, this.timeoutMs);
      this.attested.set(socket, proof);
      const s = socket;
      proof.catch(() => this.attested.delete(s));
    }
    await proof;
    return socket;
  }
}
