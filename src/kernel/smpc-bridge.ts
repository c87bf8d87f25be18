// Encrypted serving from notebook cells (docs/smpc.md), for both notebook bridges (the VS Code one over
// the extension's connections, the Jupyter kernel's over its own): `grid.serveEncrypted(file, { id,
// holders, provider })`, and `grid.infer` / `grid.deleteModel` on a model a node holds only one share
// of, which run with the other share holder among the notebook's nodes.
import { readFile } from 'node:fs/promises';
import { basename, extname } from 'node:path';
import type { GridClient } from '../core/client';
import { ErrorCodes, gridError, toGridError } from '../core/errors';
import type { SmpcModelInfo } from '../core/protocol/smpc-messages';
import type { Tensor } from '../core/protocol/tensor';
import { bindInputValues } from '../compute/tensor-io';
import { deleteEncrypted, encryptedModelInfo, encryptedSignature, inferEncrypted, serveEncrypted, type EncryptedModel } from '../federation/smpc';

/** A notebook's node, as encrypted serving needs it. */
export interface SmpcBridgeNode {
  readonly name: string;
  readonly url: string;
  readonly isOpen: boolean;
  readonly client: GridClient;
}

export interface SmpcBridgeHost {
  /** A node by name or URL (the notebook's current one when undefined). */
  node(name: string | undefined): SmpcBridgeNode;
  /** Every node of the notebook. */
  list(): SmpcBridgeNode[];
  /** A path from a cell, resolved from the notebook's folder. */
  path(p: string): string;
}

const usage = (what: string) => gridError('INVALID_INPUT', `grid.serveEncrypted ${what}`);

export async function serveEncryptedCall(host: SmpcBridgeHost, model: unknown, o: Record<string, unknown>): Promise<Omit<EncryptedModel, 'plan'>> {
  const holders = o.holders;
  if (!Array.isArray(holders) || holders.length !== 2 || !holders.every((h) => typeof h === 'string') || typeof o.provider !== 'string') {
    throw usage('needs { holders: [node, node], provider: node }: two share holders and a crypto provider, by name or URL');
  }
  let bytes: Uint8Array;
  let id = typeof o.id === 'string' && o.id.length > 0 ? o.id : undefined;
  if (typeof model === 'string') {
    bytes = await readFile(host.path(model));
    id ??= basename(model, extname(model));
  } else if (model instanceof Uint8Array) {
    bytes = model;
    if (id === undefined) throw usage('needs { id } to serve model bytes');
  } else {
    throw usage('expects an .onnx file path or ONNX bytes, then { id, holders, provider }');
  }
  const names = [...(holders as string[]), o.provider];
  const nodes = names.map((n) => host.node(n));
  const twice = nodes.findIndex((n, i) => nodes.indexOf(n) !== i);
  if (twice >= 0) throw usage(`names ${nodes[twice]!.name} twice: the two share holders and the crypto provider must be three different nodes`);
  const [h0, h1, p] = nodes as [SmpcBridgeNode, SmpcBridgeNode, SmpcBridgeNode];
  const served = await serveEncrypted(bytes, { id, holders: [{ client: h0.client, url: h0.url }, { client: h1.client, url: h1.url }], provider: { client: p.client, url: p.url } });
  return { model_id: served.model_id, holders: served.holders, provider: served.provider, params: served.params };
}

/** What `node` holds of an encrypted model `id`; undefined when it holds none (or has no encrypted serving). */
async function heldInfo(node: SmpcBridgeNode, id: string): Promise<SmpcModelInfo | undefined> {
  try {
    return await encryptedModelInfo(node.client, id);
  } catch (err) {
    const code = toGridError(err).code;
    if (code === ErrorCodes.NOT_FOUND || code === ErrorCodes.UNKNOWN_TYPE) return undefined;
    throw err;
  }
}

/** The notebook's node that is `info`'s other share holder, if connected. */
async function otherHolder(host: SmpcBridgeHost, node: SmpcBridgeNode, info: SmpcModelInfo): Promise<SmpcBridgeNode | undefined> {
  const all = host.list();
  const ids = await Promise.all(all.map(async (n) => (n !== node && n.isOpen ? (await n.client.getId().catch(() => undefined))?.id : undefined)));
  return all[ids.indexOf(info.peer.id)];
}

/**
 * `grid.infer` on `id` when `node` holds a share of an encrypted model of that id: its output tensor,
 * reconstructed here; undefined when it holds none (the caller reports its plain NOT_FOUND). `timeoutMs`:
 * the cell's own, else 2 minutes (the protocol takes longer than a plain request). Interrupting the
 * cell (`signal`) stops both holders and frees the provider's randomness.
 */
export async function inferIfEncrypted(host: SmpcBridgeHost, node: SmpcBridgeNode, id: string, input: unknown, timeoutMs: number | undefined, signal?: AbortSignal): Promise<Tensor | undefined> {
  const info = await heldInfo(node, id);
  if (info === undefined) return undefined;
  const feeds = bindInputValues({ id, signature: encryptedSignature(info) }, input, 'grid.infer');
  const other = await otherHolder(host, node, info);
  if (other === undefined) {
    throw gridError('NOT_CONNECTED', `"${id}" is encrypted and runs on both its share holders: connect to the other one first, await grid.connect("${info.peer.address}")`);
  }
  return inferEncrypted(id, feeds[info.input.name]!, { holders: [node.client, other.client], timeoutMs: timeoutMs ?? 120_000, ...(signal && { signal }) });
}

/**
 * `grid.deleteModel` on `id` when `node` holds a share of an encrypted model of that id: deleted from
 * both share holders (the other must be among the notebook's nodes); undefined when it holds none.
 */
export async function deleteIfEncrypted(host: SmpcBridgeHost, node: SmpcBridgeNode, id: string): Promise<{ model_id: string; deleted: true; encrypted: true } | undefined> {
  const info = await heldInfo(node, id);
  if (info === undefined) return undefined;
  const other = await otherHolder(host, node, info);
  if (other === undefined) {
    throw gridError('NOT_CONNECTED', `"${id}" is encrypted: it is deleted from both its share holders; connect to the other one first, await grid.connect("${info.peer.address}")`);
  }
  await deleteEncrypted(id, [node.client, other.client]);
  return { model_id: id, deleted: true, encrypted: true };
}
