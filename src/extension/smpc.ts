// Encrypted serving in VS Code (docs/smpc.md): "Serve Encrypted Model…" (an .onnx file and three of the
// connected nodes: two share holders and a crypto provider), and inference on an encrypted model, which
// Run Inference hands here when the model it picked is encrypted.
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as vscode from 'vscode';
import { gridError } from '../core/errors';
import type { SmpcModelInfo } from '../core/protocol/smpc-messages';
import type { NamedTensors } from '../core/protocol/tensor';
import { ID_PATTERN } from '../core/protocol/model-ref';
import type { NodeConnection } from './connection';
import type { Ctx } from './ctx';
import { heavy } from './heavy';
import { guarded, nodeFromArg, pickFile, requireNode, type Cmd, type Flow } from './pickers';

interface ServeEncryptedArgs {
  file?: string;
  id?: string;
  /** The two share holders (node names or URLs): the first leads each query. */
  holders?: [string, string];
  /** The crypto provider (a node name or URL). */
  provider?: string;
}

const ROLES = ['share holder 1', 'share holder 2', 'crypto provider'] as const;

export function serveEncrypted(ctx: Ctx): Cmd {
  return guarded(ctx, 'Could not serve the model encrypted', async (arg: vscode.Uri | ServeEncryptedArgs | undefined, flow: Flow) => {
    const a: ServeEncryptedArgs = arg instanceof vscode.Uri ? { file: arg.fsPath } : arg ?? {};
    Object.assign(flow.answers, a);
    // The nodes are checked before any question: without three of them nothing else is worth asking.
    const named = a.holders || a.provider ? [a.holders?.[0], a.holders?.[1], a.provider].map((n) => (n === undefined ? undefined : nodeFromArg(ctx, { node: n }))) : [];
    named.forEach((c, i) => { if (c) requireNode(c, i < 2 ? 'signedIn' : 'open', `make it the ${ROLES[i]}`); });
    const open = ctx.openConnections;
    if (named.filter(Boolean).length < 3 && open.length < 3) {
      throw gridError('NOT_CONNECTED', `encrypted serving needs three connected nodes (two share holders and a crypto provider); ${open.length} ${open.length === 1 ? 'is' : 'are'} connected: add more with "Grid: Add Node…" or "Grid: Connect"`);
    }
    const file = a.file ?? await pickFile(ctx, { title: 'Serve a model encrypted', glob: '**/*.onnx', placeHolder: 'The ONNX model to split into secret shares', filters: { 'ONNX models': ['onnx'] }, openLabel: 'Serve Encrypted' });
    if (file === undefined) return undefined;
    flow.answers.file = file;
    const id = a.id ?? await ctx.ask({ title: 'Serve a model encrypted', prompt: 'The model\'s id on the share holders', value: path.basename(file).replace(/\.onnx$/i, '') });
    if (id === undefined) return undefined;
    if (!ID_PATTERN.test(id)) throw gridError('INVALID_INPUT', `"${id}" is not a model id: use letters, digits, ".", "_" and "-"`);
    flow.answers.id = id;
    const nodes: NodeConnection[] = [];
    for (let i = 0; i < 3; i++) {
      const role = ROLES[i]!;
      const given = named[i];
      if (given && nodes.some((n) => sameNode(n, given))) {
        throw gridError('INVALID_INPUT', `${given.name} cannot be both ${ROLES[nodes.findIndex((n) => sameNode(n, given))]} and ${role}: encrypted serving needs three different nodes`);
      }
      const conn = given ?? await pickRole(ctx, role, i < 2, nodes);
      if (!conn) return undefined;
      nodes.push(conn);
    }
    flow.answers.holders = [nodes[0]!.url, nodes[1]!.url];
    flow.answers.provider = nodes[2]!.url;
    const [h0, h1, p] = nodes as [NodeConnection, NodeConnection, NodeConnection];
    const bytes = fs.readFileSync(file);
    const served = await vscode.window.withProgress({ location: vscode.ProgressLocation.Notification, title: `Serving ${id} encrypted on ${h0.name} and ${h1.name}` }, () => heavy().serveEncrypted(bytes, {
      id, holders: [{ client: h0.client, url: h0.url }, { client: h1.client, url: h1.url }], provider: { client: p.client, url: p.url }, timeoutMs: Math.max(60_000, ctx.config.requestTimeoutMs),
    }));
    // The holders announce it (smpc events); a node that does not is listed again for the tree.
    await Promise.all([h0.refresh(), h1.refresh()]);
    ctx.log.info({ model: id, holders: [h0.url, h1.url], provider: p.url, params: served.params }, `served ${id} encrypted`);
    void vscode.window.showInformationMessage(`Served ${id} encrypted: ${served.params} parameters split between ${h0.name} and ${h1.name}; crypto provider ${p.name}. No node can read the model.`);
    return { model_id: served.model_id, holders: served.holders, provider: served.provider, params: served.params };
  });
}

function sameNode(a: NodeConnection, b: NodeConnection): boolean {
  return a === b || (a.identity !== undefined && a.identity.id === b.identity?.id);
}

async function pickRole(ctx: Ctx, role: string, holder: boolean, taken: NodeConnection[]): Promise<NodeConnection | undefined> {
  const usable = ctx.openConnections.filter((c) => (!holder || c.isSignedIn) && !taken.some((t) => sameNode(t, c)));
  if (usable.length === 0) {
    throw gridError('NOT_CONNECTED', `no other connected${holder ? ', signed-in' : ''} node is left to be the ${role}: encrypted serving needs three different nodes; add one with "Grid: Add Node…"${holder ? ' and sign in with "Grid: Authenticate"' : ''}`);
  }
  const picked = await ctx.pick(usable.map((c) => ({ label: c.name, description: c.url, conn: c })), {
    title: `Serve a model encrypted: the ${role}`,
    placeHolder: holder ? `Pick the node that keeps one secret share of the weights (${role})` : 'Pick the node that deals the randomness (it never receives a share)',
  });
  return picked?.conn;
}

/** The connection to an encrypted model's other share holder: open, else listed (by the node id it last proved). */
function otherHolder(ctx: Ctx, info: SmpcModelInfo): NodeConnection | undefined {
  return ctx.openConnections.find((c) => c.identity?.id === info.peer.id) ?? ctx.connections.find((c) => c.knownId === info.peer.id);
}

/**
 * Deletes an encrypted model from both its share holders (the tree's and palette's Delete Model… on it):
 * `conn` and the other holder when it is connected and signed in; else from `conn` only, and says so.
 */
export async function deleteEncryptedModel(ctx: Ctx, conn: NodeConnection, info: SmpcModelInfo): Promise<{ model_id: string; holders: string[] }> {
  const other = otherHolder(ctx, info);
  const both = other !== undefined && other.isSignedIn;
  await heavy().deleteEncrypted(info.model_id, both ? [conn.client, other.client] : [conn.client]);
  ctx.log.info({ node: conn.url, other: info.peer.address, model: info.model_id, both }, `deleted encrypted model ${info.model_id}`);
  if (!both) {
    void vscode.window.showWarningMessage(`Deleted ${info.model_id} from ${conn.name}; its other share holder (${info.peer.address}) is not connected and signed in here, so it still keeps its half: connect to it and delete it there too.`);
  }
  return { model_id: info.model_id, holders: both ? [conn.url, other.url] : [conn.url] };
}

/** Runs an encrypted model on `conn` and its other share holder, which must be connected too; `signal` cancels it. */
export async function inferEncryptedModel(ctx: Ctx, conn: NodeConnection, info: SmpcModelInfo, feeds: NamedTensors, signal?: AbortSignal): Promise<NamedTensors> {
  // Open, else listed: then the message names the action that opens it.
  const other = otherHolder(ctx, info);
  if (!other) {
    throw gridError('NOT_CONNECTED', `"${info.model_id}" is encrypted and runs on both its share holders: connect to the other one (${info.peer.address}) with "Grid: Add Node…" first`);
  }
  requireNode(other, 'signedIn', `run the encrypted model "${info.model_id}"`);
  const input = feeds[info.input.name];
  if (input === undefined) throw gridError('INVALID_INPUT', `encrypted model "${info.model_id}" takes one input, "${info.input.name}"`);
  const y = await heavy().inferEncrypted(info.model_id, input, { holders: [conn.client, other.client], timeoutMs: Math.max(120_000, ctx.config.requestTimeoutMs), ...(signal && { signal }) });
  return { [info.output.name]: y };
}
