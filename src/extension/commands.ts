// Every command: a small factory `name(ctx): Cmd`, registered from the one table at the bottom.
// Each command takes an optional argument — a tree item (menus), a NodeConnection (tree item actions)
// or an options object (scripts, tests, other extensions) — and asks interactively for whatever is
// missing. Failures are shown with their code and fitting actions; the command then resolves undefined.
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as vscode from 'vscode';
import { gridError } from '../core/errors';
import type { ModelInfo } from '../core/protocol/messages';
import { refOf } from '../core/protocol/model-ref';
import type { Ctx } from './ctx';
import { FL_COMMANDS } from './fl-commands';
import { heavy } from './heavy';
import { serveNotebookModel } from './jupyter';
import { newNotebook, restartKernel } from './notebook';
import { guarded, isConnection, nodeFromArg, pickFile, pickModel, pickNode, withProgress, workspaceFiles, type Cmd, type Flow, type ModelArgs, type NodeArg } from './pickers';
import { serveTo, type ServeArgs } from './serve';
import { deleteEncryptedModel, inferEncryptedModel, serveEncrypted } from './smpc';
import { train } from './train';
import { EncryptedModelItem, formatBytes, ModelItem, signatureLine } from './views/items';

// ---- nodes ------------------------------------------------------------------------------------

function addNode(ctx: Ctx): Cmd {
  return guarded(ctx, 'Could not add the node', async (arg?: { name?: string; url?: string }) => {
    let url = arg?.url;
    if (url === undefined) {
      url = await vscode.window.showInputBox({
        title: 'Connect to a grid node', prompt: 'The node\'s address', placeHolder: 'ws://127.0.0.1:5000', value: 'ws://127.0.0.1:5000',
        validateInput: (v) => (/^wss?:\/\/[^/\s]+/.test(v.trim()) ? undefined : 'a node address looks like ws://host:port'),
      });
      if (url === undefined) return undefined;
      url = url.trim();
    }
    let name = arg?.name;
    if (name === undefined) {
      const suggested = url.replace(/^wss?:\/\//, '').replace(/\/.*$/, '');
      name = await vscode.window.showInputBox({ title: 'Connect to a grid node', prompt: 'A name for the node in the sidebar', value: suggested });
      if (name === undefined) return undefined;
    }
    const conn = await ctx.addNode({ name: name.trim() || url, url });
    return conn.url;
  });
}

function removeNode(ctx: Ctx): Cmd {
  return guarded(ctx, 'Could not remove the node', async (arg?: NodeArg) => {
    // An alias is removed itself, not the node it stands for.
    const conn = nodeFromArg(ctx, arg, { entry: true }) ?? await pickNode(ctx, undefined, { need: 'any', toDo: 'remove it', title: 'Remove a node from the list', candidates: ctx.entries.filter((c) => !c.local) });
    if (!conn) return undefined;
    await ctx.removeNode(conn);
    return conn.url;
  });
}

function connect(ctx: Ctx): Cmd {
  return guarded(ctx, 'Could not connect', async (arg?: NodeArg) => {
    const conn = await pickNode(ctx, arg, { need: 'any', toDo: 'connect', title: 'Connect to a node', candidates: ctx.connections.filter((c) => !c.isOpen) });
    if (!conn) return undefined;
    // Open (and signed in), or the first attempt failed: the tree then shows the node reconnecting
    // with the reason, and the command does not wait for a node that may never come.
    const state = await conn.untilOpenOrFailing(ctx.connect(conn));
    // Open: done once the node's lists are in (they are fetched as the signed-in user, after the sign-in).
    if (conn.isOpen) await conn.whenSynced();
    return state;
  });
}

function disconnect(ctx: Ctx): Cmd {
  return guarded(ctx, 'Could not disconnect', async (arg?: NodeArg) => {
    const conn = await pickNode(ctx, arg, { need: 'any', toDo: 'disconnect', title: 'Disconnect from a node', candidates: ctx.connections.filter((c) => c.state !== 'disconnected') });
    if (!conn) return undefined;
    conn.disconnect();
    return conn.state;
  });
}

function authenticate(ctx: Ctx): Cmd {
  return guarded(ctx, 'Could not sign in', async (arg?: NodeArg & { username?: string; password?: string }) => {
    const conn = await pickNode(ctx, arg, { need: 'open', toDo: 'sign in', title: 'Sign in to a node' });
    if (!conn) return undefined;
    const a = (typeof arg === 'object' && arg !== null && !isConnection(arg) ? arg : {}) as { username?: string; password?: string };
    // This user's own local node signs them in by its runtime record: nothing to type.
    const own = a.username === undefined ? await ctx.credentials(conn) : undefined;
    if (own !== undefined && 'token' in own) {
      await conn.authenticate(own);
      return conn.user;
    }
    const username = a.username ?? await ctx.ask({ title: `Sign in to ${conn.name}`, prompt: 'User name', value: 'admin' });
    if (username === undefined) return undefined;
    const password = a.password ?? await ctx.ask({ title: `Sign in to ${conn.name}`, prompt: `Password of ${username} (kept in VS Code's secret storage)`, password: true });
    if (password === undefined) return undefined;
    await ctx.authenticate(conn, { username, password });
    void vscode.window.showInformationMessage(`Signed in to ${conn.name} as ${conn.user ?? username}.`);
    return conn.user;
  }, (args) => nodeFromArg(ctx, args[0]));
}

function startLocalNode(ctx: Ctx): Cmd {
  return guarded(ctx, 'Could not start the local node', async () => {
    const conn = await vscode.window.withProgress({ location: vscode.ProgressLocation.Window, title: 'Starting the local grid node' }, () => ctx.startLocalNode());
    await conn.whenSynced();
    return conn.url;
  });
}

function stopLocalNode(ctx: Ctx): Cmd {
  return guarded(ctx, 'Could not stop the local node', async () => {
    const joined = await ctx.stopLocalNode();
    if (joined === undefined) return undefined;
    // Not ours to stop: say whose it is, so the user knows what to stop instead.
    const message = `This window disconnected from the local node; it keeps running in another program (pid ${joined.leftRunning}: another VS Code window, grid-node --local or npm run start). Stop it there.`;
    void vscode.window.showInformationMessage(message);
    return message;
  });
}

function showNodeInfo(ctx: Ctx): Cmd {
  return guarded(ctx, 'Could not show the node', async (arg?: NodeArg) => {
    const conn = await pickNode(ctx, arg, { need: 'any', toDo: 'show it', title: 'Show a node' });
    if (!conn) return undefined;
    const info: Record<string, unknown> = {
      name: conn.name, url: conn.url, state: conn.state, ...(conn.stateReason !== undefined && { reason: conn.stateReason }),
      signed_in_as: conn.user ?? null, local: conn.local,
      ...(ctx.aliasesOf(conn).length > 0 && { also_listed_as: ctx.aliasesOf(conn).map((a) => ({ name: a.name, url: a.url })) }),
    };
    if (conn.isOpen) {
      await conn.whenSynced();
      const id = await conn.client.getId();
      Object.assign(info, { node_id: id.id, node_name: id.name, version: id.version, capabilities: id.capabilities });
      Object.assign(info, { models: conn.models.map((m) => m.id), datasets: conn.datasets.map((d) => d.name), peers: conn.peers.map((p) => `${p.name} (${p.status})`) });
    }
    const doc = await vscode.workspace.openTextDocument({ language: 'json', content: `${JSON.stringify(info, null, 2)}\n` });
    await vscode.window.showTextDocument(doc, { preview: true });
    return info;
  });
}

function refresh(ctx: Ctx): Cmd {
  return guarded(ctx, 'Could not refresh', async () => {
    await ctx.syncConfiguredNodes();
    await Promise.all(ctx.openConnections.map((c) => c.refresh()));
  });
}

// ---- models -----------------------------------------------------------------------------------


function serveModel(ctx: Ctx): Cmd {
  return guarded(ctx, 'Could not serve the model', async (arg: NodeArg | vscode.Uri | ServeArgs, flow: Flow) => {
    const a: ServeArgs = typeof arg === 'object' && arg !== null && !(arg instanceof vscode.Uri) && !isConnection(arg) && !(arg instanceof vscode.TreeItem) ? arg as ServeArgs : {};
    const answers = flow.answers as ServeArgs;
    Object.assign(answers, a);
    // A node named up front is checked first: a node not signed in says so before any question.
    const named = arg instanceof vscode.Uri ? undefined : nodeFromArg(ctx, arg);
    if (named) await pickNode(ctx, named, { need: 'signedIn', toDo: 'serve a model', title: '', flow });
    let file = a.file ?? (arg instanceof vscode.Uri ? arg.fsPath : undefined);
    if (file === undefined) {
      file = await pickFile(ctx, { title: 'Serve an ONNX model', glob: '**/*.onnx', placeHolder: 'An ONNX model of the workspace, or Browse…', filters: { 'ONNX models': ['onnx'] }, openLabel: 'Serve' });
      if (file === undefined) return undefined;
    }
    answers.file = file;
    return serveTo(ctx, flow, a, { model: file, label: path.basename(file), suggestedId: path.basename(file, path.extname(file)), ...(named && { named }) });
  });
}


function downloadModel(ctx: Ctx): Cmd {
  return guarded(ctx, 'Could not download the model', async (arg: ModelItem | (ModelArgs & { dest?: string }) | undefined, flow: Flow) => {
    const target = await pickModel(ctx, arg, 'Download a model', 'download', flow);
    if (!target) return undefined;
    const { conn, model } = target;
    const ref = refOf(model);
    let dest = arg instanceof ModelItem ? undefined : arg?.dest;
    if (dest === undefined) {
      dest = await pickDownloadFile(ctx, `Download ${ref} from ${conn.name}`, model);
      if (dest === undefined) return undefined;
    }
    flow.answers.dest = dest;
    const file = dest;
    const info = await withProgress(`Downloading ${ref} from ${conn.name}`, (signal, report) => conn.client.downloadModel(ref, file, { signal, onProgress: report }));
    ctx.log.info({ node: conn.url, model: refOf(info), file, sha256: info.sha256 }, `downloaded ${refOf(info)}; sha256 verified`);
    void vscode.window.showInformationMessage(`Downloaded ${refOf(info)} (${formatBytes(info.size)}, sha256 verified) to ${file}`, 'Reveal').then((p) => {
      if (p === 'Reveal') void vscode.commands.executeCommand('revealFileInOS', vscode.Uri.file(file));
    });
    return file;
  });
}

/**
 * Where a download goes: the workspace folder under the model's name (never over an existing file:
 * then NAME-vN.onnx, NAME-vN-2.onnx, …) in one Enter, or anywhere through the save dialog.
 */
async function pickDownloadFile(ctx: Ctx, title: string, model: ModelInfo): Promise<string | undefined> {
  const folder = vscode.workspace.workspaceFolders?.[0]?.uri;
  const save = () => vscode.window.showSaveDialog({ title, filters: { 'ONNX models': ['onnx'] }, saveLabel: 'Download', ...(folder && { defaultUri: vscode.Uri.joinPath(folder, `${model.id}.onnx`) }) }).then((u) => u?.fsPath);
  // The save dialog is the only way to a folder that is not on this machine's disk.
  if (folder?.scheme !== 'file') return save();
  const names = [`${model.id}.onnx`, `${model.id}-v${model.version}.onnx`];
  let file = names.map((n) => path.join(folder.fsPath, n)).find((f) => !fs.existsSync(f));
  for (let i = 2; file === undefined; i++) {
    const f = path.join(folder.fsPath, `${model.id}-v${model.version}-${i}.onnx`);
    if (!fs.existsSync(f)) file = f;
  }
  const picked = await ctx.pick([
    { label: `$(desktop-download) ${path.basename(file)}`, description: 'in the workspace folder', detail: file, file },
    { label: '$(folder-opened) Save As…', detail: 'another folder or name, with VS Code\'s save dialog', file: undefined },
  ], { title, placeHolder: 'Where to save the model' });
  if (!picked) return undefined;
  return picked.file ?? save();
}

function deleteModel(ctx: Ctx): Cmd {
  return guarded(ctx, 'Could not delete the model', async (arg: ModelItem | EncryptedModelItem | (ModelArgs & { skipConfirmation?: boolean }) | undefined, flow: Flow) => {
    const target = await pickModel(ctx, arg, 'Delete a model', 'delete', flow);
    if (!target) return undefined;
    const { conn, model } = target;
    const a = arg instanceof vscode.TreeItem ? undefined : arg;
    const skip = a?.skipConfirmation === true;
    if (target.encrypted) {
      // Served encrypted: deleted from both share holders, and the crypto provider deals no more for it.
      if (!skip) {
        const ok = await vscode.window.showWarningMessage(`Delete encrypted model "${model.id}" from its share holders?`, { modal: true, detail: `${conn.name} and ${target.encrypted.peer.address} delete their shares; this cannot be undone.` }, 'Delete');
        if (ok !== 'Delete') return undefined;
      }
      flow.answers.skipConfirmation = true;
      return (await deleteEncryptedModel(ctx, conn, target.encrypted)).model_id;
    }
    // A version row or a name@N deletes that version; a model row or a bare name, the model with every version.
    const one = arg instanceof ModelItem ? arg.isVersion : typeof a?.model === 'string' && a.model.includes('@');
    const count = model.versions ?? 1;
    const what = one ? `version ${model.version} of model "${model.id}"` : `model "${model.id}"${count > 1 ? ` and all its ${count} versions` : ''}`;
    if (!skip) {
      const ok = await vscode.window.showWarningMessage(`Delete ${what} from ${conn.name}?`, { modal: true, detail: 'The node deletes its copy; this cannot be undone.' }, 'Delete');
      if (ok !== 'Delete') return undefined;
    }
    flow.answers.skipConfirmation = true;
    await (one ? conn.client.deleteModel(refOf(model)) : conn.client.deleteModel(model.id, count > 1 ? { allVersions: true } : {}));
    ctx.log.info({ node: conn.url, model: one ? refOf(model) : model.id }, `deleted ${what} from ${conn.name}`);
    return one ? refOf(model) : model.id;
  });
}

interface PermissionsArgs extends ModelArgs {
  allowDownload?: boolean;
  allowRemoteInference?: boolean;
}

/** Who else may download or run a model: its owner or an admin changes it; the node refuses anyone else. */
function changeModelPermissions(ctx: Ctx): Cmd {
  return guarded(ctx, 'Could not change the model\'s permissions', async (arg: ModelItem | PermissionsArgs | undefined, flow: Flow) => {
    // Only its owner or an admin may: the same models as for delete.
    const target = await pickModel(ctx, arg, 'Change who may use a model', 'delete', flow);
    if (!target) return undefined;
    const { conn } = target;
    // The tree item may predate a change made elsewhere: start from the node's latest word.
    const model = conn.models.find((m) => m.id === target.model.id) ?? target.model;
    const a: PermissionsArgs = arg instanceof ModelItem || arg === undefined ? {} : arg;
    let allowDownload = a.allowDownload;
    let allowRemoteInference = a.allowRemoteInference;
    if (allowDownload === undefined && allowRemoteInference === undefined) {
      const picks = await vscode.window.showQuickPick([
        { label: 'Allow remote inference', detail: 'other signed-in users may run it on the node', key: 'infer', picked: model.allow_remote_inference },
        { label: 'Allow download', detail: 'other signed-in users may download its file', key: 'download', picked: model.allow_download },
      ], { title: `Who else may use "${model.id}" on ${conn.name}`, placeHolder: `The owner (${model.owner}) and admins always may; checked lets everyone else too`, canPickMany: true });
      if (!picks) return undefined;
      allowRemoteInference = picks.some((p) => p.key === 'infer');
      allowDownload = picks.some((p) => p.key === 'download');
    }
    const info = await conn.client.setModelPermissions(model.id, {
      ...(allowDownload !== undefined && { allowDownload }), ...(allowRemoteInference !== undefined && { allowRemoteInference }),
    });
    ctx.log.info({ node: conn.url, model: info.id, allow_download: info.allow_download, allow_remote_inference: info.allow_remote_inference }, `changed the permissions of ${info.id} on ${conn.name}`);
    const yes = (b: boolean) => (b ? 'yes' : 'no');
    void vscode.window.showInformationMessage(`${info.id} on ${conn.name}: others may run it: ${yes(info.allow_remote_inference)}, download it: ${yes(info.allow_download)}.`);
    return info;
  });
}

function copyModelId(ctx: Ctx): Cmd {
  return guarded(ctx, 'Could not copy the model id', async (arg?: ModelItem | ModelArgs) => {
    const target = await pickModel(ctx, arg, 'Copy a model id', 'view');
    if (!target) return undefined;
    // A version row copies name@N; a model row its name (which means its latest version).
    const id = arg instanceof ModelItem && arg.isVersion ? refOf(target.model) : typeof (arg as ModelArgs | undefined)?.model === 'string' ? (arg as ModelArgs).model! : target.model.id;
    await vscode.env.clipboard.writeText(id);
    return id;
  });
}

function showModelDetails(ctx: Ctx): Cmd {
  return guarded(ctx, 'Could not show the model', async (arg?: ModelItem | ModelArgs) => {
    const target = await pickModel(ctx, arg, 'Show a model', 'view');
    if (!target) return undefined;
    const { conn, model } = target;
    const doc = await vscode.workspace.openTextDocument({ language: 'json', content: `${JSON.stringify({ node: conn.name, node_url: conn.url, ...model }, null, 2)}\n` });
    await vscode.window.showTextDocument(doc, { preview: true });
    return model;
  });
}

interface InferArgs extends ModelArgs {
  /** Input files, `[NAME=]PATH` (.npy, .pb, .json). */
  inputs?: string[];
  /** Inputs as JSON text (instead of files). */
  json?: string;
  /** Inputs from the active editor's JSON, as the interactive "active editor" choice. */
  fromActiveEditor?: boolean;
}

function runInference(ctx: Ctx): Cmd {
  return guarded(ctx, 'Inference failed', async (arg: ModelItem | EncryptedModelItem | InferArgs | undefined, flow: Flow) => {
    const target = await pickModel(ctx, arg, 'Run inference', 'infer', flow);
    if (!target) return undefined;
    const { conn, model } = target;
    const a: InferArgs = arg instanceof vscode.TreeItem || arg === undefined ? {} : arg;
    const io = heavy();
    let inputs;
    if (a.inputs !== undefined) inputs = io.inputsFromFiles(model, a.inputs);
    else if (a.json !== undefined) inputs = io.inputsFromJsonText(model, a.json, 'the JSON argument');
    else {
      const editor = vscode.window.activeTextEditor;
      const fromEditor = editor && (editor.document.languageId === 'json' || editor.document.languageId === 'jsonc') ? editor.document : undefined;
      if (a.fromActiveEditor && !fromEditor) throw gridError('INVALID_INPUT', 'the active editor holds no JSON document to read the inputs from');
      // A one-input model takes a tensor file of the workspace in one pick; any model, files from the dialog.
      const tensors = model.signature.inputs.length === 1 ? await workspaceFiles('**/*.{npy,pb}') : [];
      const source = a.fromActiveEditor ? { key: 'editor', file: undefined } : await ctx.pick<vscode.QuickPickItem & { key: string; file?: string }>([
        ...tensors.map((t) => ({ ...t, key: 'file' })),
        ...(tensors.length > 0 ? [{ label: '', kind: vscode.QuickPickItemKind.Separator, key: '' }] : []),
        { label: tensors.length > 0 ? '$(folder-opened) Browse for input files…' : 'Input files…', detail: '.npy, .pb (ONNX TensorProto) or .json, one per input in order, or named NAME=…', key: 'files', alwaysShow: true },
        ...(fromEditor ? [{ label: `The active editor (${path.basename(fromEditor.fileName)})`, detail: '{"input": tensor} or, for one input, the tensor itself', key: 'editor', alwaysShow: true }] : []),
      ], { title: `Inputs for ${model.id}: ${signatureLine(model)}`, placeHolder: tensors.length > 0 ? 'A tensor file of the workspace (.npy, .pb), or browse' : 'Where the inputs come from', matchOnDescription: true });
      if (!source) return undefined;
      if (source.key === 'editor') {
        flow.answers.json = fromEditor!.getText();
        inputs = io.inputsFromJsonText(model, fromEditor!.getText(), path.basename(fromEditor!.fileName));
      } else if (source.file !== undefined) {
        flow.answers.inputs = [source.file];
        inputs = io.inputsFromFiles(model, [source.file]);
      } else {
        const files = await vscode.window.showOpenDialog({ title: `Inputs for ${model.id}`, canSelectMany: true, filters: { Tensors: ['npy', 'pb', 'json'] }, openLabel: 'Run' });
        if (!files?.length) return undefined;
        flow.answers.inputs = files.map((f) => f.fsPath);
        inputs = io.inputsFromFiles(model, files.map((f) => f.fsPath));
      }
    }
    if (a.inputs !== undefined) flow.answers.inputs = a.inputs;
    if (a.json !== undefined) flow.answers.json = a.json;
    const feeds = inputs;
    const t0 = performance.now();
    const encrypted = target.encrypted;
    const outputs = encrypted ? await vscode.window.withProgress({ location: vscode.ProgressLocation.Notification, title: `Running ${model.id} encrypted on ${conn.name} and its other share holder`, cancellable: true }, (_p, token) => {
      // Cancel stops both share holders and frees the randomness the crypto provider reserved for the query.
      const controller = new AbortController();
      const sub = token.onCancellationRequested(() => controller.abort());
      return inferEncryptedModel(ctx, conn, encrypted, feeds, controller.signal).finally(() => sub.dispose());
    })
      : await vscode.window.withProgress({ location: vscode.ProgressLocation.Notification, title: `Running ${model.id} on ${conn.name}`, cancellable: true }, (_p, token) => {
      const controller = new AbortController();
      const sub = token.onCancellationRequested(() => controller.abort());
      // The version whose signature bound the inputs is the version that runs.
      return conn.client.runInference(refOf(model), feeds, { signal: controller.signal, timeoutMs: ctx.config.requestTimeoutMs }).finally(() => sub.dispose());
    });
    const result = io.renderOutputs(outputs, { model: model.id, node: conn.name, durationMs: performance.now() - t0 }, path.join(ctx.extCtx.globalStorageUri.fsPath, 'results'));
    const doc = await vscode.workspace.openTextDocument({ language: 'json', content: result.json });
    await vscode.window.showTextDocument(doc, { preview: false });
    for (const image of result.images) await vscode.commands.executeCommand('vscode.open', vscode.Uri.file(image), { viewColumn: vscode.ViewColumn.Beside, preview: false });
    return { document: doc.uri.toString(), images: result.images };
  });
}

function showLogs(ctx: Ctx): Cmd {
  return () => ctx.log.show();
}

/** Every command, by id; main.ts registers them all. */
export const COMMANDS: Record<string, (ctx: Ctx) => Cmd> = {
  'grid.addNode': addNode,
  'grid.removeNode': removeNode,
  'grid.connect': connect,
  'grid.disconnect': disconnect,
  'grid.authenticate': authenticate,
  'grid.startLocalNode': startLocalNode,
  'grid.stopLocalNode': stopLocalNode,
  'grid.showNodeInfo': showNodeInfo,
  'grid.refresh': refresh,
  'grid.serveModel': serveModel,
  'grid.serveNotebookModel': serveNotebookModel,
  'grid.downloadModel': downloadModel,
  'grid.deleteModel': deleteModel,
  'grid.changeModelPermissions': changeModelPermissions,
  'grid.copyModelId': copyModelId,
  'grid.showModelDetails': showModelDetails,
  'grid.runInference': runInference,
  'grid.serveEncrypted': serveEncrypted,
  'grid.train': train,
  'grid.newNotebook': newNotebook,
  'grid.restartKernel': restartKernel,
  'grid.showLogs': showLogs,
  ...FL_COMMANDS,
};
