// Serving a model to a node once the model is known, shared by Serve Model… (a file) and Serve Model
// from Notebook Variable… (bytes exported in a Python notebook's kernel, see jupyter.ts).
import * as vscode from 'vscode';
import type { ModelInfo } from '../core/protocol/messages';
import { ID_PATTERN, refOf } from '../core/protocol/model-ref';
import type { NodeConnection } from './connection';
import type { Ctx } from './ctx';
import { pickNode, withProgress, type Flow } from './pickers';
import { signatureLine } from './views/items';

export interface ServeArgs {
  node?: string;
  file?: string;
  id?: string;
  name?: string;
  version?: string;
  /** When the node has a model `id`: serve the file as its next version (asked for when not given). */
  newVersion?: boolean;
  allowDownload?: boolean;
  allowRemoteInference?: boolean;
}

/**
 * The part of Serve Model after the model is known (a file, or bytes exported from a notebook): the
 * node, the model id and the permissions, asked for when `a` does not give them; then the upload with
 * progress. Undefined when the user dismissed a question.
 */
export async function serveTo(ctx: Ctx, flow: Flow, a: ServeArgs, what: { model: string | Uint8Array; label: string; suggestedId: string; named?: NodeConnection }): Promise<ModelInfo | undefined> {
  const answers = flow.answers as ServeArgs;
  const { label } = what;
  const conn = what.named ?? await pickNode(ctx, undefined, { need: 'signedIn', toDo: 'serve a model', title: `Serve ${label} to…`, flow });
  if (!conn) return undefined;
  let id = a.id;
  if (id === undefined) {
    const suggested = what.suggestedId.replace(/[^A-Za-z0-9._-]/g, '-');
    id = await vscode.window.showInputBox({
      title: `Serve ${label} to ${conn.name}`, prompt: 'Model id on the node', value: suggested,
      validateInput: (v) => (ID_PATTERN.test(v)
        ? (conn.models.some((m) => m.id === v) ? { message: `${conn.name} already has a model "${v}": the file becomes its next version`, severity: vscode.InputBoxValidationSeverity.Info } : undefined)
        : 'letters, digits, ".", "_" and "-" only (at most 128)'),
    });
    if (id === undefined) return undefined;
  }
  answers.id = id;
  let allowDownload = a.allowDownload;
  let allowRemoteInference = a.allowRemoteInference;
  if (allowDownload === undefined || allowRemoteInference === undefined) {
    const picks = await vscode.window.showQuickPick([
      { label: 'Allow remote inference', key: 'infer', picked: allowRemoteInference ?? true },
      { label: 'Allow download', key: 'download', picked: allowDownload ?? false },
    ], { title: `Permissions of "${id}"`, canPickMany: true });
    if (!picks) return undefined;
    allowRemoteInference = picks.some((p) => p.key === 'infer');
    allowDownload = picks.some((p) => p.key === 'download');
  }
  Object.assign(answers, { allowDownload, allowRemoteInference });
  const modelId = id;
  const info = await withProgress(`Serving ${modelId} to ${conn.name}`, (signal, report) => conn.client.hostModel(what.model, {
    id: modelId, allowDownload: allowDownload!, allowRemoteInference: allowRemoteInference!, signal, onProgress: report,
    ...(a.name !== undefined && { name: a.name }), ...(a.version !== undefined && { version: a.version }),
    // Picked interactively, an id the node has means a new version of it (the input box said so).
    ...((a.newVersion ?? (a.id === undefined && conn.models.some((m) => m.id === modelId))) && { newVersion: true }),
  }));
  ctx.log.info({ node: conn.url, model: refOf(info), size: info.size }, `served ${refOf(info)} to ${conn.name}`);
  void vscode.window.showInformationMessage(`${refOf(info)} is served by ${conn.name}: ${signatureLine(info)}`);
  return info;
}
