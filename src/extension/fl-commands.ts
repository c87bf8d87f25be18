// The FL commands: Host FL Process, Join as Worker, Download Checkpoint. Each takes a tree item or an
// options object (scripts, tests) and asks for what it is not given, like the commands in commands.ts.
import * as path from 'node:path';
import * as vscode from 'vscode';
import { ErrorCodes, gridError, toGridError } from '../core/errors';
import type { FlProcessInfo } from '../core/protocol/fl-messages';
import type { NodeConnection } from './connection';
import type { Ctx } from './ctx';
import { DEFAULT_CLIENT_CONFIG, SERVER_CONFIG_PRESETS } from './fl-presets';
import { heavy } from './heavy';
import { runFlWorker, type FlJoinOutcome } from './fl-join';
import { guarded, nodeFromArg, pickNode, withProgress, type Cmd, type Flow } from './pickers';
import { FlCheckpointItem, FlGroupItem, FlProcessItem } from './views/fl-items';

interface HostArgs {
  node?: string;
  file?: string;
  name?: string;
  version?: string;
  serverConfig?: Record<string, unknown>;
  clientConfig?: Record<string, unknown>;
  /** An ONNX averaging plan (a file) the node runs at each cycle close in place of FedAvg. */
  averagingPlan?: string;
}

interface ProcessArgs {
  node?: string;
  /** `name` or `name@version`. */
  process?: string;
}

interface JoinArgs extends ProcessArgs {
  /** A local .csv / .csv.gz / .npy file: its rows never leave this machine. */
  data?: string;
  labels?: string;
  labelColumn?: number;
  featureScale?: number;
  authToken?: string;
  seed?: number;
}

interface CheckpointArgs extends ProcessArgs {
  /** A number or an alias (latest). */
  checkpoint?: number | string;
  dest?: string;
}

const options = <T>(arg: unknown): T => (typeof arg === 'object' && arg !== null && !(arg instanceof vscode.TreeItem) && !(arg instanceof vscode.Uri) && !('entry' in arg) ? arg as T : {} as T);

/** A JSON object typed into an input box, checked as it is typed. */
async function askJson(title: string, prompt: string, value: Record<string, unknown>): Promise<Record<string, unknown> | undefined> {
  const text = await vscode.window.showInputBox({
    title, prompt, value: JSON.stringify(value), ignoreFocusOut: true,
    validateInput: (v) => {
      try {
        const parsed: unknown = JSON.parse(v);
        return parsed !== null && typeof parsed === 'object' && !Array.isArray(parsed) ? undefined : 'a JSON object, e.g. {"num_cycles": 3}';
      } catch (err) {
        return `not JSON yet: ${(err as Error).message}`;
      }
    },
  });
  return text === undefined ? undefined : JSON.parse(text) as Record<string, unknown>;
}

function hostFl(ctx: Ctx): Cmd {
  return guarded(ctx, 'Could not host the FL process', async (arg: unknown, flow: Flow) => {
    const a = options<HostArgs>(arg);
    Object.assign(flow.answers, a);
    const named = arg instanceof vscode.Uri ? undefined : arg instanceof FlGroupItem ? ctx.primary(arg.connection) : nodeFromArg(ctx, arg);
    if (named) await pickNode(ctx, named, { need: 'signedIn', toDo: 'host an FL process', title: '', flow });
    let file = a.file ?? (arg instanceof vscode.Uri ? arg.fsPath : undefined);
    if (file === undefined) {
      const folder = vscode.workspace.workspaceFolders?.[0]?.uri;
      const picked = await vscode.window.showOpenDialog({ title: 'Host an FL process from an ONNX model', canSelectMany: false, filters: { 'ONNX models': ['onnx'] }, openLabel: 'Host', ...(folder && { defaultUri: folder }) });
      if (!picked?.[0]) return undefined;
      file = picked[0].fsPath;
    }
    flow.answers.file = file;
    const conn = named ?? await pickNode(ctx, undefined, { need: 'signedIn', toDo: 'host an FL process', title: `Host ${path.basename(file)} as an FL process on…`, flow });
    if (!conn) return undefined;
    const title = `Host ${path.basename(file)} on ${conn.name}`;
    const name = a.name ?? await vscode.window.showInputBox({
      title, prompt: 'Process name (workers join it by name@version)', value: path.basename(file, path.extname(file)), ignoreFocusOut: true,
      validateInput: (v) => (v.trim().length > 0 && !v.includes('@') ? undefined : 'a name, without "@"'),
    });
    if (name === undefined) return undefined;
    flow.answers.name = name.trim();
    const taken = (v: string) => conn.flProcesses.some((p) => p.name === name.trim() && p.version === v);
    const version = a.version ?? await vscode.window.showInputBox({
      title, prompt: 'Version', value: '1.0', ignoreFocusOut: true,
      validateInput: (v) => (v.trim().length === 0 ? 'a version, e.g. 1.0' : taken(v.trim()) ? `${conn.name} already hosts ${name.trim()}@${v.trim()}: pick another version` : undefined),
    });
    if (version === undefined) return undefined;
    flow.answers.version = version.trim();
    let serverConfig = a.serverConfig;
    if (serverConfig === undefined) {
      const preset = await vscode.window.showQuickPick(SERVER_CONFIG_PRESETS.map((p) => ({ label: p.label, detail: p.detail, config: p.config })), { title: `${title}: server_config`, placeHolder: 'A starting point; you can edit the JSON next' });
      if (!preset) return undefined;
      serverConfig = await askJson(`${title}: server_config`, 'The node\'s rules (cycle_length in s, num_cycles, min/max_diffs, min/max_workers, pool_selection, …)', preset.config);
      if (serverConfig === undefined) return undefined;
    }
    flow.answers.serverConfig = serverConfig;
    let clientConfig = a.clientConfig;
    if (clientConfig === undefined && a.serverConfig === undefined) {
      clientConfig = await askJson(`${title}: client_config`, 'What workers train with (batch_size, lr, epochs, max_updates, optimizer)', DEFAULT_CLIENT_CONFIG);
      if (clientConfig === undefined) return undefined;
    }
    if (clientConfig !== undefined) flow.answers.clientConfig = clientConfig;
    let planFile = a.averagingPlan;
    if (planFile === undefined && a.serverConfig === undefined) {
      const how = await vscode.window.showQuickPick([
        { label: 'FedAvg', detail: 'The mean of the workers\' diffs, weighted by their samples (PyGrid\'s default)', plan: false },
        { label: 'ONNX averaging plan…', detail: 'A graph the node runs at each cycle close: inputs old/<param> and diff/<param>, outputs <param> (e.g. a server learning rate)', plan: true },
      ], { title: `${title}: averaging`, placeHolder: 'How the node turns a cycle\'s reports into the next checkpoint' });
      if (!how) return undefined;
      if (how.plan) {
        const picked = await vscode.window.showOpenDialog({ title: 'The ONNX averaging plan', canSelectMany: false, filters: { 'ONNX models': ['onnx'] }, openLabel: 'Use as averaging plan', defaultUri: vscode.Uri.file(path.dirname(file)) });
        if (!picked?.[0]) return undefined;
        planFile = picked[0].fsPath;
      }
    }
    if (planFile !== undefined) flow.answers.averagingPlan = planFile;
    const averagingPlan = planFile === undefined ? undefined : await vscode.workspace.fs.readFile(vscode.Uri.file(planFile)).then((b) => b, () => {
      throw gridError('INVALID_INPUT', `no averaging plan at ${planFile}: pick an ONNX file`);
    });
    const cfg = serverConfig;
    const modelFile = file;
    const p = await withProgress(`Hosting ${name.trim()}@${version.trim()} on ${conn.name}`, (signal, report) => heavy().hostFlProcess(conn.client, modelFile, {
      name: name.trim(), version: version.trim(), serverConfig: cfg, ...(clientConfig !== undefined && { clientConfig }), ...(averagingPlan !== undefined && { averagingPlan }), signal, onProgress: report,
    }));
    ctx.log.info({ node: conn.url, process: `${p.name}@${p.version}`, id: p.model_id }, `hosted FL process ${p.name}@${p.version} on ${conn.name}`);
    void vscode.window.showInformationMessage(`${p.name}@${p.version} is hosted on ${conn.name}: workers can join it (Grid: Join as Worker).`, 'Join as Worker').then((picked) => {
      if (picked === 'Join as Worker') void vscode.commands.executeCommand('grid.joinFlProcess', { node: conn.url, process: `${p.name}@${p.version}` });
    });
    return p;
  });
}

/** The FL process a command acts on: a tree item's, `{node, process}`, or the user's pick across open nodes. */
async function pickProcess(ctx: Ctx, arg: unknown, title: string, flow: Flow, filter: (p: FlProcessInfo) => boolean = () => true): Promise<{ conn: NodeConnection; process: FlProcessInfo } | undefined> {
  const chosen = (conn: NodeConnection, process: FlProcessInfo) => {
    flow.node = conn;
    Object.assign(flow.answers, { node: conn.url, process: `${process.name}@${process.version}` });
    return { conn, process };
  };
  if (arg instanceof FlProcessItem || arg instanceof FlCheckpointItem) {
    const conn = ctx.primary(arg.connection);
    flow.node = conn;
    return chosen(conn, conn.flProcesses.find((p) => p.model_id === arg.process.model_id) ?? arg.process);
  }
  const a = options<ProcessArgs>(arg);
  if (a.process !== undefined) {
    const at = a.process.lastIndexOf('@');
    const name = at > 0 ? a.process.slice(0, at) : a.process;
    const version = at > 0 ? a.process.slice(at + 1) : undefined;
    const pool = a.node !== undefined ? [nodeFromArg(ctx, a)!] : ctx.openConnections;
    for (const conn of pool) {
      if (!conn.isOpen) throw gridError('NOT_CONNECTED', `${conn.name} is ${conn.state}: connect to it first (Grid: Connect)`);
      await conn.whenSynced();
      const fits = (p: FlProcessInfo) => p.name === name && (version === undefined || p.version === version);
      // Just hosted (its event still on the way), the node knows it before this window does.
      const found = conn.flProcesses.filter(fits).at(-1) ?? (conn.supportsFl ? (await heavy().flProcesses(conn.client, name, version)).filter(fits).at(-1) : undefined);
      if (found) return chosen(conn, found);
    }
    throw gridError('NOT_FOUND', `no connected node hosts an FL process ${a.process}: host one (Grid: Host FL Process)`);
  }
  const open = ctx.openConnections;
  if (open.length === 0) throw gridError('NOT_CONNECTED', 'no grid node is connected: start the local node or connect to a node first');
  const items = open.flatMap((c) => c.flProcesses.filter(filter).map((p) => ({ label: `${p.name}@${p.version}`, description: `${c.name} · ${p.cycle === null ? 'done' : `cycle ${p.cycle.sequence}`}`, conn: c, process: p })));
  if (items.length === 0) throw gridError('NOT_FOUND', 'no FL process on the connected nodes fits: host one (Grid: Host FL Process)');
  const picked = items.length === 1 ? items[0] : await vscode.window.showQuickPick(items, { title, placeHolder: 'Pick an FL process' });
  return picked ? chosen(picked.conn, picked.process) : undefined;
}

const pct = (x: number) => `${(x * 100).toFixed(1)}%`;

function joinFl(ctx: Ctx): Cmd {
  return guarded(ctx, 'Could not join the FL process', async (arg: unknown, flow: Flow): Promise<FlJoinOutcome | undefined> => {
    const a = options<JoinArgs>(arg);
    Object.assign(flow.answers, a);
    const target = await pickProcess(ctx, arg, 'Join an FL process as a worker', flow, (p) => p.cycle !== null);
    if (!target) return undefined;
    const { conn, process: p } = target;
    const ref = `${p.name}@${p.version}`;
    if (p.cycle === null) throw gridError('NOT_FOUND', `${ref} on ${conn.name} is done: all its cycles have run; host a new version (Grid: Host FL Process)`);
    let data = a.data;
    if (data === undefined) {
      const folder = vscode.workspace.workspaceFolders?.[0]?.uri;
      const picked = await vscode.window.showOpenDialog({ title: `Your local data to train ${ref} on (it stays on this machine)`, canSelectMany: false, filters: { 'Datasets (CSV, NumPy)': ['csv', 'gz', 'npy'] }, openLabel: 'Train on this', ...(folder && { defaultUri: folder }) });
      if (!picked?.[0]) return undefined;
      data = picked[0].fsPath;
    }
    flow.answers.data = data;
    const dataFile = data;
    // A process that checks its workers' JWTs (the listing names the kind, never the key) needs one.
    let authToken = a.authToken;
    const auth = p.server_config.authentication;
    if (authToken === undefined && Array.isArray(auth) && auth.length > 0) {
      authToken = await ctx.ask({ title: `Join ${ref} on ${conn.name}`, prompt: `The auth token (a JWT, ${auth.join('/')}) the process's owner gave you`, password: true });
      if (authToken === undefined) return undefined;
    }
    const workerToken = authToken;
    const outcome = await vscode.window.withProgress({ location: vscode.ProgressLocation.Notification, title: `Worker for ${ref} on ${conn.name}`, cancellable: true }, (progress, token) => {
      const controller = new AbortController();
      const sub = token.onCancellationRequested(() => controller.abort());
      progress.report({ message: `asking for a place in cycle ${p.cycle?.sequence ?? '?'}…` });
      let shown = 0;
      return runFlWorker({
        url: conn.url, name: p.name, version: p.version, data: dataFile,
        ...(a.labels !== undefined && { labels: a.labels }), ...(a.labelColumn !== undefined && { labelColumn: a.labelColumn }),
        ...(a.featureScale !== undefined && { featureScale: a.featureScale }), ...(workerToken !== undefined && { authToken: workerToken }),
        ...(a.seed !== undefined && { seed: a.seed }), timeoutMs: Math.max(ctx.config.requestTimeoutMs, 20_000),
      }, {
        signal: controller.signal,
        onProgress: (m) => {
          if (m.kind === 'accepted') { progress.report({ message: `accepted: training ${m.rows} rows, ${m.epochs} epoch(s), batch ${m.batchSize}` }); return; }
          const done = Math.floor((((m.epoch - 1) * m.batches + m.batch) / (m.epochs * m.batches)) * 100);
          progress.report({ increment: Math.max(0, done - shown), message: `epoch ${m.epoch}/${m.epochs} · loss ${m.loss.toFixed(4)} · accuracy ${pct(m.accuracy)}` });
          shown = Math.max(shown, done);
        },
      }).finally(() => sub.dispose());
    }).then(undefined, (err: unknown) => {
      // The process refused the worker's token: signing in to the node would not help, another token would.
      const e = toGridError(err);
      if (e.code !== ErrorCodes.BAD_CREDENTIALS) throw e;
      throw gridError('INVALID_INPUT', `${ref} on ${conn.name} refused this worker's auth token: ${e.message} Join again (Retry) with the token the process's owner gave you`);
    });
    if (outcome.kind === 'rejected') {
      ctx.log.info({ node: conn.url, process: ref, reason: outcome.reason }, `${conn.name} turned the worker away from ${ref}: ${outcome.reason}`);
      const again = { ...flow.answers };
      void vscode.window.showWarningMessage(`${conn.name} did not take this worker into ${ref}: ${outcome.reason}${outcome.timeout ? ` (the cycle ends in ${outcome.timeout})` : ''}`, 'Try Again').then((picked) => {
        if (picked === 'Try Again') void vscode.commands.executeCommand('grid.joinFlProcess', again);
      });
    } else {
      ctx.log.info({ node: conn.url, process: ref, worker: outcome.workerId, samples: outcome.numSamples }, `reported to ${ref}`);
      void vscode.window.showInformationMessage(`Reported to ${ref} on ${conn.name}: ${outcome.numSamples} samples, ${outcome.steps} updates in ${outcome.seconds.toFixed(1)} s, local accuracy ${pct(outcome.accuracy)}.`);
    }
    return outcome;
  });
}

function downloadFlCheckpoint(ctx: Ctx): Cmd {
  return guarded(ctx, 'Could not download the checkpoint', async (arg: unknown, flow: Flow) => {
    const a = options<CheckpointArgs>(arg);
    Object.assign(flow.answers, a);
    const target = await pickProcess(ctx, arg, 'Download a checkpoint of an FL process', flow);
    if (!target) return undefined;
    const { conn, process: p } = target;
    const ref = `${p.name}@${p.version}`;
    let which: number | string | undefined = arg instanceof FlCheckpointItem ? arg.checkpoint.number : a.checkpoint;
    if (which === undefined) {
      const picked = await vscode.window.showQuickPick([...p.checkpoints].reverse().map((k, i) => ({
        label: `checkpoint ${k.number}`, description: [i === 0 ? 'latest' : undefined, k.cycle === null ? 'the hosted model' : `after cycle ${k.cycle} (${k.reports} reports)`].filter(Boolean).join(' · '), number: k.number,
      })), { title: `Download a checkpoint of ${ref}` });
      if (!picked) return undefined;
      which = picked.number;
    }
    flow.answers.checkpoint = which;
    let dest = a.dest;
    if (dest === undefined) {
      const folder = vscode.workspace.workspaceFolders?.[0]?.uri;
      const ext = p.format === 'onnx' ? 'onnx' : 'pb';
      const uri = await vscode.window.showSaveDialog({
        title: `Download checkpoint ${which} of ${ref}`, saveLabel: 'Download', filters: p.format === 'onnx' ? { 'ONNX models': ['onnx'] } : { 'syft-proto State': ['pb'] },
        ...(folder && { defaultUri: vscode.Uri.joinPath(folder, `${p.name}-${p.version}-checkpoint-${which}.${ext}`) }),
      });
      if (!uri) return undefined;
      dest = uri.fsPath;
    }
    flow.answers.dest = dest;
    const file = dest;
    const checkpoint = which;
    const size = await withProgress(`Downloading checkpoint ${checkpoint} of ${ref}`, (signal) => heavy().downloadCheckpoint(conn.client, { name: p.name, version: p.version }, checkpoint, file, { signal }));
    ctx.log.info({ node: conn.url, process: ref, checkpoint, file, size }, `downloaded checkpoint ${checkpoint} of ${ref}`);
    void vscode.window.showInformationMessage(`Downloaded checkpoint ${checkpoint} of ${ref} (${size} bytes) to ${file}`, 'Reveal').then((picked) => {
      if (picked === 'Reveal') void vscode.commands.executeCommand('revealFileInOS', vscode.Uri.file(file));
    });
    return file;
  });
}

/** The FL commands, by id (spread into COMMANDS). */
export const FL_COMMANDS: Record<string, (ctx: Ctx) => Cmd> = {
  'grid.hostFlProcess': hostFl,
  'grid.joinFlProcess': joinFl,
  'grid.downloadFlCheckpoint': downloadFlCheckpoint,
};
