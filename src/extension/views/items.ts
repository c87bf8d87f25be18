// Tree items shared by the Nodes and Models views. `contextValue` drives the menus in package.json:
// `node:<state>[:local]`, `model[:download][:infer][:train]` (a version row: `model-version…`), so a menu
// entry shows only where it can work.
import * as vscode from 'vscode';
import type { DatasetInfo, ModelInfo, PeerInfo } from '../../core/protocol/messages';
import { refOf } from '../../core/protocol/model-ref';
import type { SmpcModelInfo, SmpcNodeRef } from '../../core/protocol/smpc-messages';
import type { JobInfo } from '../../core/protocol/training-messages';
import type { DroppedNote, NodeConnection, NodeState } from '../connection';

const STATE_ICON: Record<NodeState, vscode.ThemeIcon> = {
  connected: new vscode.ThemeIcon('pass-filled', new vscode.ThemeColor('testing.iconPassed')),
  connecting: new vscode.ThemeIcon('loading~spin'),
  reconnecting: new vscode.ThemeIcon('sync~spin', new vscode.ThemeColor('list.warningForeground')),
  unauthenticated: new vscode.ThemeIcon('lock', new vscode.ThemeColor('list.warningForeground')),
  error: new vscode.ThemeIcon('error', new vscode.ThemeColor('list.errorForeground')),
  disconnected: new vscode.ThemeIcon('debug-disconnect'),
};

export function formatBytes(n: number): string {
  if (n < 1024) return `${n} B`;
  const units = ['KiB', 'MiB', 'GiB', 'TiB'];
  let v = n / 1024;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
  return `${v.toFixed(v < 10 ? 1 : 0)} ${units[i]}`;
}

function dims(d: (number | string | null)[]): string {
  return `[${d.map((x) => (x === null ? '?' : String(x))).join(', ')}]`;
}

export function signatureLine(m: ModelInfo): string {
  const side = (vs: ModelInfo['signature']['inputs']) => vs.map((v) => `${v.name}: ${v.dtype}${dims(v.dims)}`).join(', ');
  return `(${side(m.signature.inputs)}) → (${side(m.signature.outputs)})`;
}

export class NodeItem extends vscode.TreeItem {
  readonly kind = 'node';
  readonly connection: NodeConnection;

  /** `aliases`: other entries for the same node (same node id), shown on this row instead of their own. */
  constructor(conn: NodeConnection, aliases: readonly NodeConnection[] = []) {
    super(conn.name, vscode.TreeItemCollapsibleState.Expanded);
    this.connection = conn;
    this.id = `node:${conn.url}`;
    const who = conn.user ? ` · ${conn.user}` : '';
    const also = aliases.length > 0 ? ` · also ${aliases.map((a) => a.name).join(', ')}` : '';
    this.description = `${conn.state}${who} · ${conn.url.replace(/^wss?:\/\//, '')}${also}`;
    this.iconPath = STATE_ICON[conn.state];
    this.contextValue = `node:${conn.state}${conn.local ? ':local' : ''}`;
    const tip = new vscode.MarkdownString(`**${conn.name}** — ${conn.url}\n\nstate: **${conn.state}**`);
    if (conn.stateReason) tip.appendMarkdown(`\n\n${conn.stateReason}`);
    if (conn.identity) tip.appendMarkdown(`\n\nnode id \`${conn.identity.id}\` · grid node ${conn.identity.version}`);
    for (const a of aliases) tip.appendMarkdown(`\n\nalso in the list as **${a.name}** — ${a.url}: the same node (same node id), shown once; commands naming ${a.name} use this connection`);
    if (conn.dropped) tip.appendMarkdown(`\n\nsat out ${conn.dropped.what}: ${conn.dropped.error.message} (${conn.dropped.error.code})`);
    this.tooltip = tip;
    if (conn.state === 'disconnected' || conn.state === 'error') this.collapsibleState = conn.state === 'error' ? vscode.TreeItemCollapsibleState.Expanded : vscode.TreeItemCollapsibleState.None;
  }
}

/** The reason a node is not usable, with the action that may fix it. */
export class ReasonItem extends vscode.TreeItem {
  readonly kind = 'reason';
  readonly connection: NodeConnection;

  constructor(conn: NodeConnection) {
    super(conn.stateReason ?? conn.state, vscode.TreeItemCollapsibleState.None);
    this.connection = conn;
    this.id = `reason:${conn.url}`;
    this.description = conn.stateReasonCode;
    this.tooltip = `${conn.stateReason ?? ''}${conn.stateReasonCode ? ` (${conn.stateReasonCode})` : ''}`;
    const signIn = conn.state === 'unauthenticated';
    this.iconPath = new vscode.ThemeIcon(signIn ? 'key' : 'refresh');
    this.contextValue = signIn ? 'reason:signin' : 'reason:retry';
    this.command = signIn
      ? { command: 'grid.authenticate', title: 'Authenticate', arguments: [conn] }
      : { command: 'grid.connect', title: 'Retry', arguments: [conn] };
  }
}

/** Why the node sat out its latest FedAvg run (the node's own reason, in VS Code's words). */
export class DroppedItem extends vscode.TreeItem {
  readonly kind = 'dropped';
  readonly connection: NodeConnection;

  constructor(conn: NodeConnection, note: DroppedNote) {
    super(`sat out ${note.what}: ${note.error.message}`, vscode.TreeItemCollapsibleState.None);
    this.connection = conn;
    this.id = `dropped:${conn.url}`;
    this.description = note.error.code;
    this.tooltip = `${conn.name} sat out ${note.what}: ${note.error.message} (${note.error.code})`;
    this.iconPath = new vscode.ThemeIcon('warning', new vscode.ThemeColor('list.warningForeground'));
    this.contextValue = 'dropped';
  }
}

export type GroupKind = 'models' | 'datasets' | 'peers' | 'jobs';

export class GroupItem extends vscode.TreeItem {
  readonly kind = 'group';
  readonly connection: NodeConnection;
  readonly group: GroupKind;

  constructor(conn: NodeConnection, group: GroupKind, count: number | undefined) {
    super(group[0]!.toUpperCase() + group.slice(1), count === 0 || count === undefined ? vscode.TreeItemCollapsibleState.Collapsed : vscode.TreeItemCollapsibleState.Expanded);
    this.connection = conn;
    this.group = group;
    // Drawn first while the lists load (no count: folded), then with its items: a new id lets VS Code open
    // it then, instead of keeping the folded state it remembers for an id (a newcomer saw "Datasets 4", shut).
    this.id = `${group}:${conn.url}:${count === 0 || count === undefined ? 'empty' : 'items'}`;
    if (count !== undefined) this.description = String(count);
    this.iconPath = new vscode.ThemeIcon({ models: 'symbol-class', datasets: 'database', peers: 'plug', jobs: 'pulse' }[group]);
    this.contextValue = `group:${group}`;
  }
}

/** What a model's menus offer: `model[:download][:infer][:train]` (package.json matches `^model`). */
function modelContext(kind: 'model' | 'model-version', conn: NodeConnection, model: ModelInfo): string {
  // The owner and admins always may download and run their model; the flags say whether everyone else may.
  return `${kind}${conn.mayUse(model, 'download') ? ':download' : ''}${conn.mayUse(model, 'infer') ? ':infer' : ''}${conn.supportsTraining ? ':train' : ''}`;
}

/**
 * A model (its latest version; the versions under it when it has several), or with `version` set one
 * version of it. Commands act on `model`: the latest for a model row, that version for a version row.
 */
export class ModelItem extends vscode.TreeItem {
  readonly kind = 'model';
  readonly connection: NodeConnection;
  readonly model: ModelInfo;
  /** One version (a row under its model), not the model as a whole. */
  readonly isVersion: boolean;
  readonly showNode: boolean;

  constructor(conn: NodeConnection, model: ModelInfo, opts: { showNode: boolean; version?: boolean }) {
    const isVersion = opts.version === true;
    const count = model.versions ?? 1;
    super(isVersion ? `${model.id}@${model.version}` : model.id, !isVersion && count > 1 ? vscode.TreeItemCollapsibleState.Collapsed : vscode.TreeItemCollapsibleState.None);
    this.connection = conn;
    this.model = model;
    this.isVersion = isVersion;
    this.showNode = opts.showNode;
    this.id = `${opts.showNode ? 'all' : 'node'}-model:${conn.url}:${model.id}${isVersion ? `@${model.version}` : ''}`;
    const perms = [model.allow_remote_inference ? 'inference' : undefined, model.allow_download ? 'download' : undefined].filter(Boolean).join(', ') || 'private';
    const latest = model.latest_version === model.version;
    this.description = isVersion
      ? [latest ? 'latest' : undefined, model.parent ? `from ${model.parent}` : undefined, formatBytes(model.size), perms].filter(Boolean).join(' · ')
      : `${opts.showNode ? `${conn.name} · ` : ''}v${model.version}${count > 1 ? ` · ${count} versions` : ''} · ${formatBytes(model.size)} · ${perms}`;
    this.iconPath = new vscode.ThemeIcon(isVersion ? 'versions' : 'symbol-class');
    this.contextValue = modelContext(isVersion ? 'model-version' : 'model', conn, model);
    const md = new vscode.MarkdownString(`**${model.id}@${model.version}** — ${model.name}, version ${model.version}${count > 1 ? ` of ${count}${latest ? ' (latest)' : ''}` : ''} on ${conn.name}\n\n`);
    if (model.parent) md.appendMarkdown(`from \`${model.parent}\`${model.job_id ? ` by training job \`${model.job_id}\`` : ''}\n\n`);
    md.appendMarkdown('| | name | dtype | shape |\n|---|---|---|---|\n');
    for (const v of model.signature.inputs) md.appendMarkdown(`| in | ${v.name} | ${v.dtype} | ${dims(v.dims)} |\n`);
    for (const v of model.signature.outputs) md.appendMarkdown(`| out | ${v.name} | ${v.dtype} | ${dims(v.dims)} |\n`);
    md.appendMarkdown(`\n${formatBytes(model.size)} · sha256 \`${model.sha256.slice(0, 16)}…\` · owner ${model.owner}\n\n`);
    md.appendMarkdown(`remote inference: ${model.allow_remote_inference ? 'allowed' : 'not allowed'} · download: ${model.allow_download ? 'allowed' : 'not allowed'}`);
    this.tooltip = md;
    this.command = { command: 'grid.showModelDetails', title: 'Show Details', arguments: [this] };
  }

  /** The rows under a model with several versions: each version, newest first. */
  versionItems(): ModelItem[] {
    if (this.isVersion || (this.model.versions ?? 1) < 2) return [];
    return this.connection.versionsOf(this.model.id).map((m) => new ModelItem(this.connection, m, { showNode: this.showNode, version: true }));
  }
}

/** An encrypted model as the inference command sees a model: its id and signature (one float32 input, batch first). */
export function encryptedAsModel(info: SmpcModelInfo): ModelInfo {
  const io = (v: { name: string; shape: number[] }) => [{ name: v.name, dtype: 'float32' as const, dims: [null, ...v.shape] }];
  return {
    id: info.model_id, name: info.model_id, version: '1', signature: { inputs: io(info.input), outputs: io(info.output) },
    size: 0, sha256: '', allow_download: false, allow_remote_inference: true, owner: info.owner, created: info.created,
  };
}

/**
 * A model served encrypted (docs/smpc.md), as one of its share holders lists it: marked with both share
 * holders and the crypto provider (by their names in the list, else their addresses). `nameOf` resolves a
 * node id to that name.
 */
export class EncryptedModelItem extends vscode.TreeItem {
  readonly kind = 'encrypted';
  readonly connection: NodeConnection;
  readonly info: SmpcModelInfo;

  constructor(conn: NodeConnection, info: SmpcModelInfo, opts: { showNode: boolean; nameOf: (ref: SmpcNodeRef) => string }) {
    super(info.model_id, vscode.TreeItemCollapsibleState.None);
    this.connection = conn;
    this.info = info;
    this.id = `${opts.showNode ? 'all' : 'node'}-encrypted:${conn.url}:${info.model_id}`;
    const here = { id: conn.identity?.id ?? '', address: conn.url };
    const holders = (info.party === 0 ? [here, info.peer] : [info.peer, here]).map((r) => (r === here ? conn.name : opts.nameOf(r)));
    const provider = opts.nameOf(info.provider);
    this.description = `${opts.showNode ? `${conn.name} · ` : ''}encrypted · share holders ${holders.join(', ')} · provider ${provider}`;
    this.iconPath = new vscode.ThemeIcon('lock');
    // Its owner and admins may delete it (from both share holders): `encrypted:infer:delete`.
    this.contextValue = conn.mayDeleteEncrypted(info) ? 'encrypted:infer:delete' : 'encrypted:infer';
    this.tooltip = new vscode.MarkdownString(`**${info.model_id}** — served encrypted: no node holds its weights in the clear

`
      + `share holders: **${holders[0]}** (party 0, leads each query), **${holders[1]}** (party 1) · crypto provider: **${provider}**

`
      + `in: ${info.input.name} float32 [batch, ${info.input.shape.join(', ')}] · out: ${info.output.name} float32 [batch, ${info.output.shape.join(', ')}]

`
      + `owner ${info.owner} · served ${info.created}`);
  }
}

export class DatasetItem extends vscode.TreeItem {
  readonly kind = 'dataset';
  readonly connection: NodeConnection;
  readonly dataset: DatasetInfo;

  constructor(conn: NodeConnection, d: DatasetInfo) {
    super(d.name, vscode.TreeItemCollapsibleState.None);
    this.connection = conn;
    this.dataset = d;
    this.id = `dataset:${conn.url}:${d.id}`;
    const cols = d.schema.columns ? `${d.schema.columns.length} columns` : d.schema.dims ? `${d.schema.dtype ?? ''}[${d.schema.dims.join(', ')}]` : '';
    this.description = `${d.schema.rows} rows${cols ? ` · ${cols}` : ''} · ${d.tags.join(', ')}`;
    this.tooltip = new vscode.MarkdownString(`**${d.name}** (${d.format}, ${formatBytes(d.size)})\n\n${d.description}\n\ntags: ${d.tags.join(', ')}${d.schema.label ? `\n\nlabel column: ${d.schema.label}` : ''}`);
    this.iconPath = new vscode.ThemeIcon('database');
    this.contextValue = 'dataset';
  }
}

export class PeerItem extends vscode.TreeItem {
  readonly kind = 'peer';

  constructor(conn: NodeConnection, p: PeerInfo) {
    super(p.name, vscode.TreeItemCollapsibleState.None);
    this.id = `peer:${conn.url}:${p.id}`;
    this.description = `${p.status} · ${p.address}`;
    this.tooltip = `${p.name} (${p.id}) at ${p.address}: ${p.status} since ${p.connected_at}`;
    this.iconPath = new vscode.ThemeIcon(p.status === 'open' ? 'plug' : 'debug-disconnect');
    this.contextValue = 'peer';
  }
}

const JOB_ICON: Record<JobInfo['state'], vscode.ThemeIcon> = {
  queued: new vscode.ThemeIcon('clock'),
  running: new vscode.ThemeIcon('loading~spin'),
  succeeded: new vscode.ThemeIcon('pass', new vscode.ThemeColor('testing.iconPassed')),
  failed: new vscode.ThemeIcon('error', new vscode.ThemeColor('list.errorForeground')),
  cancelled: new vscode.ThemeIcon('circle-slash'),
};

const pct = (x: number) => `${(x * 100).toFixed(1)}%`;

/** One line for a job's state and latest numbers (also the Train command's progress message). */
export function jobSummary(job: JobInfo): string {
  const p = job.progress;
  const r = job.result;
  if (r) return `${job.state} · loss ${r.metrics.loss.toFixed(4)} · accuracy ${pct(r.metrics.accuracy)}${r.test ? ` · test ${pct(r.test.accuracy)}` : ''}${r.model ? ` → ${refOf(r.model)}` : ''}`;
  if (p) return `${job.state} · epoch ${p.epoch}/${p.epochs} · loss ${p.loss.toFixed(4)} · accuracy ${pct(p.accuracy)}`;
  return job.error ? `${job.state} · ${job.error.code}` : job.state;
}

export class JobItem extends vscode.TreeItem {
  readonly kind = 'job';
  readonly connection: NodeConnection;
  readonly job: JobInfo;

  constructor(conn: NodeConnection, job: JobInfo) {
    super(`${job.model_id ?? 'uploaded model'} on ${job.dataset_id}`, vscode.TreeItemCollapsibleState.None);
    this.connection = conn;
    this.job = job;
    this.id = `job:${conn.url}:${job.id}`;
    this.description = jobSummary(job);
    this.iconPath = JOB_ICON[job.state];
    this.tooltip = `job ${job.id} by ${job.owner}, ${job.epochs} epochs, created ${job.created}${job.error ? `\n${job.error.code}: ${job.error.message}` : ''}`;
    this.contextValue = `job:${job.state}`;
  }
}

/** A leaf that only says something (an empty group, a missing capability). */
export class NoteItem extends vscode.TreeItem {
  readonly kind = 'note';

  constructor(id: string, text: string) {
    super(text, vscode.TreeItemCollapsibleState.None);
    this.id = id;
    this.contextValue = 'note';
  }
}

export type GridTreeItem = NodeItem | ReasonItem | DroppedItem | GroupItem | ModelItem | EncryptedModelItem | DatasetItem | PeerItem | JobItem | NoteItem;
