// Encrypted model serving from the client side (docs/smpc.md). The model owner's client compiles the
// ONNX model into a public plan (refusing unsupported operators before anything leaves this process),
// fixed-point encodes the parameters, splits them into two additive shares and sends one to each share
// holder; the querying client shares its input the same way and is the only one to reconstruct.
//
// This lives in federation (core + compute) rather than in GridClient: the share arithmetic and the ONNX
// reader are compute, and core may not import compute (eslint.config.mjs). GridClient stays the
// transport; these functions take a GridClient per node.

import { randomBytes } from 'node:crypto';
import { compileSmpcModel, decode, encode, paramCount, reconstruct, ringOf, rowSize, share, type SmpcPlan } from '../compute/smpc';
import type { GridClient } from '../core/client';
import { gridError, GridError, toGridError } from '../core/errors';
import type { Tensor } from '../core/protocol/tensor';
import type { ModelSignature } from '../core/protocol/messages';
import { SmpcCancel, SmpcDelete, SmpcHostShare, SmpcInfer, SmpcModel, SmpcModels, type SmpcModelInfo } from '../core/protocol/smpc-messages';

/** A node taking part: its client, and the address the other nodes reach it at. */
export interface SmpcNode { client: GridClient; url: string }

export interface ServeEncryptedOptions {
  id: string;
  /** The two share holders: party 0 (which leads each query) and party 1. */
  holders: [SmpcNode, SmpcNode];
  /** The crypto provider: deals randomness, never receives a share. Only its address and id are used. */
  provider: SmpcNode;
  timeoutMs?: number;
}

export interface EncryptedModel {
  model_id: string;
  holders: [{ id: string; address: string }, { id: string; address: string }];
  provider: { id: string; address: string };
  plan: SmpcPlan;
  /** Parameters shared (one ring element each, per holder). */
  params: number;
}

/** Serves `model` (ONNX bytes) encrypted: one additive share of its parameters on each holder. */
export async function serveEncrypted(model: Uint8Array, o: ServeEncryptedOptions): Promise<EncryptedModel> {
  // First: a model the evaluator cannot run is refused before anything is shared.
  const { plan, params } = compileSmpcModel(model);
  const flat = new Float64Array(paramCount(plan));
  params.reduce((off, p) => { flat.set(p, off); return off + p.length; }, 0);
  const ids = await Promise.all([...o.holders, o.provider].map(async (n) => (await n.client.getId()).id));
  if (new Set(ids).size !== 3) throw gridError('INVALID_INPUT', 'encrypted serving needs three different nodes: two share holders and a crypto provider');
  const refs = ids.map((id, i) => ({ id, address: [...o.holders, o.provider][i]!.url }));
  const encoded = encode(flat, 'parameter');
  const shares = share(encoded);
  encoded.fill(0n);
  const pairTag = randomBytes(16).toString('hex');
  const maskNonce = randomBytes(16).toString('hex');
  const timeout = o.timeoutMs ?? 60_000;
  await Promise.all(o.holders.map((h, party) => h.client.socket.request(SmpcHostShare, {
    model_id: o.id, party: party as 0 | 1, pair_tag: pairTag, mask_nonce: maskNonce, plan, peer: refs[1 - party]!, provider: refs[2]!,
  }, { attachment: bytesOf(shares[party]!), timeout })));
  return { model_id: o.id, holders: [refs[0]!, refs[1]!], provider: refs[2]!, plan, params: flat.length };
}

/** What a share holder says about an encrypted model (no share values). */
export async function encryptedModelInfo(client: GridClient, id: string): Promise<SmpcModelInfo> {
  return (await client.socket.request(SmpcModel, { model_id: id })).model;
}

/** Every encrypted model `client`'s node holds a share of (none from a node without encrypted serving). */
export async function encryptedModels(client: GridClient): Promise<SmpcModelInfo[]> {
  return (await client.socket.request(SmpcModels, {})).models;
}

/** An encrypted model's signature as a plain model's: one float32 input and output, batch first. */
export function encryptedSignature(info: SmpcModelInfo): ModelSignature {
  return {
    inputs: [{ name: info.input.name, dtype: 'float32', dims: [null, ...info.input.shape] }],
    outputs: [{ name: info.output.name, dtype: 'float32', dims: [null, ...info.output.shape] }],
  };
}

/**
 * Deletes an encrypted model from its share holders (its owner or an admin): each deletes its share and
 * tells the crypto provider to deal no more for it. `holders` are the nodes to ask (one or both): a
 * holder that holds no such model answers GRID_ERR_NOT_FOUND, which is thrown when none deleted it.
 */
export async function deleteEncrypted(id: string, holders: readonly GridClient[]): Promise<{ model_id: string; deleted: number }> {
  const results = await Promise.allSettled(holders.map((h) => h.socket.request(SmpcDelete, { model_id: id })));
  const deleted = results.filter((r) => r.status === 'fulfilled').length;
  const failed = results.map((r) => (r.status === 'rejected' ? toGridError(r.reason) : undefined)).filter((e) => e !== undefined && e.code !== 'GRID_ERR_NOT_FOUND');
  if (failed.length > 0) throw failed[0]!;
  if (deleted === 0) throw gridError('NOT_FOUND', `no share holder asked holds an encrypted model "${id}"`, { model_id: id });
  return { model_id: id, deleted };
}

export interface InferEncryptedOptions {
  /** The share holders, in either order (each says which party it is). */
  holders: [GridClient, GridClient];
  timeoutMs?: number;
  /**
   * Cancels the query: both holders stop, and release the randomness the crypto provider reserved for it,
   * before this rejects with GRID_ERR_ABORTED.
   */
  signal?: AbortSignal;
}

/**
 * Runs `input` (float32 [batch, ...input shape]) through an encrypted model: shares it, has both holders
 * evaluate, reconstructs. Any failure (a holder gone, malformed or wrong-length shares) is
 * GRID_ERR_SMPC_ABORTED (or SMPC_SHARES_MISMATCH): never a partial or wrong answer.
 */
export async function inferEncrypted(id: string, input: Tensor, o: InferEncryptedOptions): Promise<Tensor<'float32'>> {
  if (input.dtype !== 'float32' && input.dtype !== 'float64') throw new TypeError(`input must be float32 or float64, got ${input.dtype}`);
  const infos = await Promise.all(o.holders.map((h) => encryptedModelInfo(h, id)));
  const [a, b] = infos as [SmpcModelInfo, SmpcModelInfo];
  if (a.party === b.party || a.pair_tag !== b.pair_tag) {
    throw gridError('SMPC_SHARES_MISMATCH', `the two nodes' shares of "${id}" do not belong together (${a.party === b.party ? `both are party ${a.party}` : 'different uploads'}); serve the model again`);
  }
  const ordered = a.party === 0 ? o.holders : [o.holders[1], o.holders[0]] as const;
  const width = rowSize(a.input.shape);
  const batch = input.dims[0];
  if (input.dims.length < 2 || batch === undefined || batch < 1 || input.data.length !== batch * width) {
    throw gridError('INVALID_INPUT', `encrypted model "${id}" takes [batch, ${a.input.shape.join(', ')}]; got [${input.dims.join(', ')}]`);
  }
  const shares = share(encode(input.data as Float32Array, 'input'));
  const queryId = randomBytes(16).toString('hex');
  const timeout = o.timeoutMs ?? 120_000;
  const outWidth = rowSize(a.output.shape);
  const cancelled = () => gridError('ABORTED', `encrypted inference on "${id}" was cancelled; its share holders stopped and released its randomness`);
  if (o.signal?.aborted) throw cancelled();
  // Both holders are asked at once; the first failure ends the query (the other holder's half is useless alone).
  const replies = ordered.map((h, party) => h.socket.call(SmpcInfer, { model_id: id, query_id: queryId, batch }, { attachment: bytesOf(shares[party]!), timeout, ...(o.signal && { signal: o.signal }) })
    .catch((err: unknown) => { throw Object.assign(toGridError(err), { party }); }));
  let settled;
  try {
    settled = await Promise.all(replies);
  } catch (err) {
    for (const r of replies) r.catch(() => {});
    if (o.signal?.aborted) {
      // The request's cancel stops each holder; smpc-cancel answers once it has (bounded: a holder gone is skipped).
      await Promise.all(ordered.map((h) => h.socket.request(SmpcCancel, { query_id: queryId }, { timeout: Math.min(timeout, 30_000) }).catch(() => undefined)));
      throw cancelled();
    }
    const e = err as GridError & { party: number };
    if (e.code === 'GRID_ERR_SMPC_SHARES_MISMATCH') throw e;
    throw new GridError('GRID_ERR_SMPC_ABORTED', `encrypted inference on "${id}" failed, no output: share holder ${e.party}: ${e.code}: ${e.message}`, { cause: e.code, party: e.party });
  }
  const outs = settled.map((r, party) => {
    if (r.data.party !== party || r.data.query_id !== queryId || r.attachment === undefined || r.attachment.length !== batch * outWidth * 8) {
      throw gridError('SMPC_ABORTED', `share holder ${party} answered query ${queryId} with a malformed output share (${r.attachment?.length ?? 0} bytes, expected ${batch * outWidth * 8}); no output`);
    }
    return ringOf(r.attachment, batch * outWidth);
  });
  const y = decode(reconstruct(outs[0]!, outs[1]!));
  return { dtype: 'float32', dims: [batch, ...a.output.shape], data: Float32Array.from(y) };
}

function bytesOf(a: BigInt64Array): Uint8Array {
  return new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
}
