// Encrypted serving from notebook cells (docs/smpc.md): `grid.serveEncrypted(file, { id, holders, provider })`,
// and `grid.infer` on a model a node holds only one share of, which runs the protocol with the other
// share holder among the notebook's nodes. No vscode import, like bridge.ts.
import { readFile } from 'node:fs/promises';
import { basename, extname } from 'node:path';
import { ErrorCodes, gridError, toGridError } from '../../core/errors';
import type { Tensor } from '../../core/protocol/tensor';
import { bindInputValues } from '../../compute/tensor-io';
import { encryptedModelInfo, encryptedSignature, inferEncrypted, serveEncrypted, type EncryptedModel } from '../../federation/smpc';
import type { BridgeNode } from './bridge';

export interface SmpcBridgeHost {
  /** A node by name or URL (the notebook's current one when undefined). */
  node(name: string | undefined): BridgeNode;
  /** Every node of the notebook. */
  list(): BridgeNode[];
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
  const [h0, h1, p] = nodes as [BridgeNode, BridgeNode, BridgeNode];
  const served = await serveEncrypted(bytes, { id, holders: [{ client: h0.client, url: h0.url }, { client: h1.client, url: h1.url }], provider: { client: p.client, url: p.url } });
  return { model_id: served.model_id, holders: served.holders, provider: served.provider, params: served.params };
}

/**
 * `grid.infer` on `id` when `node` holds a share of an encrypted model of that id: its output tensor,
 * reconstructed here; undefined when it holds none (the caller reports its plain NOT_FOUND). `timeoutMs`:
 * the cell's own, else 2 minutes (the protocol takes longer than a plain request).
 */
export async function inferIfEncrypted(host: SmpcBridgeHost, node: BridgeNode, id: string, input: unknown, timeoutMs: number | undefined): Promise<Tensor | undefined> {
  let info;
  try {
    info = await encryptedModelInfo(node.client, id);
  } catch (err) {
    const code = toGridError(err).code;
    if (code === ErrorCodes.NOT_FOUND || code === ErrorCodes.UNKNOWN_TYPE) return undefined;
    throw err;
  }
  const feeds = bindInputValues({ id, signature: encryptedSignature(info) }, input, 'grid.infer');
  const all = host.list();
  const ids = await Promise.all(all.map(async (n) => (n !== node && n.isOpen ? (await n.client.getId().catch(() => undefined))?.id : undefined)));
  const other = all[ids.indexOf(info.peer.id)];
  if (other === undefined) {
    throw gridError('NOT_CONNECTED', `"${id}" is encrypted and runs on both its share holders: connect to the other one first, await grid.connect("${info.peer.address}")`);
  }
  return inferEncrypted(id, feeds[info.input.name]!, { holders: [node.client, other.client], timeoutMs: timeoutMs ?? 120_000 });
}
