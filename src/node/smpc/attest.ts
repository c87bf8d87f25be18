// A dialling node proves its id to the node it dialled (peers.ts proves only the other way): the dialled
// node hands out a fresh challenge per connection, the dialler signs it with its Ed25519 node key, and
// the connection is then known to speak for that node id. SMPC messages between nodes need it: a share
// holder answers openings only to its partner, the crypto provider hands randomness only to the holders.

import { randomBytes, verify } from 'node:crypto';
import { gridError } from '../../core/errors';
import { NodeAttest, NodeChallenge } from '../../core/protocol/smpc-messages';
import type { GridSocket } from '../../core/socket/grid-socket';
import type { GridRouter, HandlerContext } from '../rpc/server';
import { importPublicKey, isDerivedId, nodeIdOf, proofMessage, type NodeIdentity } from '../identity';

const CHALLENGE = 'smpc_challenge';
const NODE_ID = 'attested_node_id';

export function registerAttest(router: GridRouter, identity: NodeIdentity): void {
  router.handle(NodeChallenge, (_data, ctx) => {
    const challenge = randomBytes(32).toString('base64url');
    ctx.connection.session[CHALLENGE] = challenge;
    return { challenge };
  });

  router.handle(NodeAttest, (data, ctx) => {
    const challenge = ctx.connection.session[CHALLENGE];
    // One challenge, one attempt.
    delete ctx.connection.session[CHALLENGE];
    if (typeof challenge !== 'string') throw gridError('PEER_UNVERIFIED', 'node-attest needs a node-challenge on this connection first');
    const key = importPublicKey(data.public_key);
    if (key === undefined) throw gridError('PEER_UNVERIFIED', 'node-attest: the public key is not an Ed25519 key');
    if (!isDerivedId(data.id) || nodeIdOf(key.canonical) !== data.id) {
      throw gridError('PEER_UNVERIFIED', `node-attest: id ${data.id} is not the id of the key it signed with (encrypted serving needs key-derived node ids)`);
    }
    let ok = false;
    try {
      ok = verify(null, proofMessage(challenge, data.id, identity.id), key.key, Buffer.from(data.signature, 'base64url'));
    } catch { /* a malformed signature is a wrong one */ }
    if (!ok) throw gridError('PEER_UNVERIFIED', `node-attest: the signature does not prove id ${data.id}`);
    ctx.connection.session[NODE_ID] = data.id;
    return { id: data.id };
  });
}

/** The node id this connection proved with node-attest, or undefined. */
export function attestedNode(ctx: HandlerContext): string | undefined {
  const id = ctx.connection.session[NODE_ID];
  return typeof id === 'string' ? id : undefined;
}

/** Refuses a request unless its connection proved that it is node `expected`. */
export function requireNode(ctx: HandlerContext, expected: string, what: string): void {
  const id = attestedNode(ctx);
  if (id !== expected) {
    throw gridError('FORBIDDEN', `${what} is accepted only from node ${expected}${id === undefined ? '; this connection has not proved a node id' : `, not from node ${id}`}`);
  }
}

/** Proves this node's identity on a socket it dialled (once per socket). */
export async function attest(socket: GridSocket, self: NodeIdentity, peerId: string, timeout: number): Promise<void> {
  const { challenge } = await socket.request(NodeChallenge, {}, { timeout });
  await socket.request(NodeAttest, {
    id: self.id,
    public_key: self.publicKey,
    signature: self.sign(proofMessage(challenge, self.id, peerId)).toString('base64url'),
  }, { timeout });
}
