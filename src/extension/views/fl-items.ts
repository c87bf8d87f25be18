// The FL rows of the Nodes view: under a node its "FL Processes"; under each process (name@version) its
// cycles (the open one first, with assigned/reported counts; then the completed ones) and its
// checkpoints; under a cycle the workers the node answered (accepted / rejected with its reason /
// reported). contextValue: `fl-process`, `fl-checkpoint` (Download Checkpoint), `fl-cycle`, `fl-worker:<status>`.
import * as vscode from 'vscode';
import type { FlProcessInfo } from '../../core/protocol/fl-messages';
import type { FlWorkerNote, NodeConnection } from '../connection';

type Checkpoint = FlProcessInfo['checkpoints'][number];

export class FlGroupItem extends vscode.TreeItem {
  readonly kind = 'fl-group';
  readonly connection: NodeConnection;

  constructor(conn: NodeConnection) {
    const n = conn.flProcesses.length;
    super('FL Processes', n === 0 ? vscode.TreeItemCollapsibleState.Collapsed : vscode.TreeItemCollapsibleState.Expanded);
    this.connection = conn;
    // A new id when the first process arrives, so VS Code opens the group then (as GroupItem does).
    this.id = `fl:${conn.url}:${n === 0 ? 'empty' : 'items'}`;
    this.description = String(n);
    this.iconPath = new vscode.ThemeIcon('organization');
    this.contextValue = 'group:fl';
  }

  children(): vscode.TreeItem[] {
    const c = this.connection;
    return c.flProcesses.length
      ? c.flProcesses.map((p) => new FlProcessItem(c, p))
      : [note(`none-fl:${c.url}`, 'no FL processes — host one (Grid: Host FL Process)')];
  }
}

function cycleOf(p: FlProcessInfo): string {
  const total = typeof p.server_config.num_cycles === 'number' && p.server_config.num_cycles > 0 ? p.server_config.num_cycles : undefined;
  if (p.cycle === null) return `done · ${p.completed_cycles} cycle${p.completed_cycles === 1 ? '' : 's'}`;
  return `cycle ${p.cycle.sequence}${total !== undefined ? `/${total}` : ''} · ${p.cycle.assigned} assigned · ${p.cycle.reported} reported`;
}

export class FlProcessItem extends vscode.TreeItem {
  readonly kind = 'fl-process';
  readonly connection: NodeConnection;
  readonly process: FlProcessInfo;

  constructor(conn: NodeConnection, p: FlProcessInfo) {
    super(`${p.name}@${p.version}`, vscode.TreeItemCollapsibleState.Expanded);
    this.connection = conn;
    this.process = p;
    this.id = `fl-process:${conn.url}:${p.model_id}`;
    this.description = cycleOf(p);
    this.iconPath = new vscode.ThemeIcon(p.cycle === null ? 'pass' : 'sync');
    this.contextValue = 'fl-process';
    const md = new vscode.MarkdownString(`**${p.name}@${p.version}** on ${conn.name} — hosted by ${p.owner}, ${p.format === 'onnx' ? 'ONNX model' : 'syft-proto State'}, ${p.created}\n\nAveraging: ${p.averaging === 'plan' ? 'the host\'s ONNX averaging plan' : 'FedAvg, weighted by samples'}\n\n`);
    md.appendCodeblock(JSON.stringify({ server_config: p.server_config, client_config: p.client_config }, null, 2), 'json');
    this.tooltip = md;
  }

  children(): vscode.TreeItem[] {
    const c = this.connection;
    const p = this.process;
    const out: vscode.TreeItem[] = [];
    if (p.cycle !== null) out.push(new FlCycleItem(c, p, p.cycle.sequence, { open: true, assigned: p.cycle.assigned, reported: p.cycle.reported }));
    // Each close wrote a checkpoint that names its cycle: the completed cycles, newest first.
    for (const k of [...p.checkpoints].reverse()) if (k.cycle !== null) out.push(new FlCycleItem(c, p, k.cycle, { open: false, reported: k.reports }));
    const late = c.flWorkersOf(p.model_id, null);
    for (const w of late) out.push(new FlWorkerItem(c, p, null, w));
    out.push(new FlCheckpointsItem(c, p));
    return out;
  }
}

export class FlCycleItem extends vscode.TreeItem {
  readonly kind = 'fl-cycle';
  readonly connection: NodeConnection;
  readonly process: FlProcessInfo;
  readonly sequence: number;

  constructor(conn: NodeConnection, p: FlProcessInfo, sequence: number, counts: { open: boolean; assigned?: number; reported: number }) {
    const workers = conn.flWorkersOf(p.model_id, sequence);
    super(`cycle ${sequence}`, workers.length > 0 ? vscode.TreeItemCollapsibleState.Expanded : vscode.TreeItemCollapsibleState.None);
    this.connection = conn;
    this.process = p;
    this.sequence = sequence;
    // With workers it expands: a new id, so a row drawn leaf-first opens (VS Code keeps state per id).
    this.id = `fl-cycle:${conn.url}:${p.model_id}:${sequence}:${workers.length > 0 ? 'workers' : 'none'}`;
    this.description = counts.open
      ? `open · ${counts.assigned ?? 0} assigned · ${counts.reported} reported${p.cycle?.end ? ` · ends ${p.cycle.end}` : ''}`
      : `completed · ${counts.reported} report${counts.reported === 1 ? '' : 's'} averaged`;
    this.iconPath = new vscode.ThemeIcon(counts.open ? 'debug-start' : 'check');
    this.contextValue = counts.open ? 'fl-cycle:open' : 'fl-cycle:completed';
  }

  children(): vscode.TreeItem[] {
    return this.connection.flWorkersOf(this.process.model_id, this.sequence).map((w) => new FlWorkerItem(this.connection, this.process, this.sequence, w));
  }
}

const WORKER_ICON: Record<FlWorkerNote['status'], vscode.ThemeIcon> = {
  accepted: new vscode.ThemeIcon('loading~spin'),
  rejected: new vscode.ThemeIcon('circle-slash', new vscode.ThemeColor('list.warningForeground')),
  reported: new vscode.ThemeIcon('pass', new vscode.ThemeColor('testing.iconPassed')),
};

export class FlWorkerItem extends vscode.TreeItem {
  readonly kind = 'fl-worker';
  readonly note: FlWorkerNote;

  constructor(conn: NodeConnection, p: FlProcessInfo, cycle: number | null, w: FlWorkerNote) {
    super(`worker ${w.workerId.slice(0, 8)}`, vscode.TreeItemCollapsibleState.None);
    this.note = w;
    this.id = `fl-worker:${conn.url}:${p.model_id}:${cycle ?? 'done'}:${w.workerId}`;
    this.description = w.status === 'rejected' ? `rejected: ${w.reason ?? 'no reason given'}` : w.status;
    this.tooltip = `worker ${w.workerId}: ${this.description}`;
    this.iconPath = WORKER_ICON[w.status];
    this.contextValue = `fl-worker:${w.status}`;
  }
}

export class FlCheckpointsItem extends vscode.TreeItem {
  readonly kind = 'fl-checkpoints';
  readonly connection: NodeConnection;
  readonly process: FlProcessInfo;

  constructor(conn: NodeConnection, p: FlProcessInfo) {
    super('Checkpoints', vscode.TreeItemCollapsibleState.Expanded);
    this.connection = conn;
    this.process = p;
    this.id = `fl-checkpoints:${conn.url}:${p.model_id}:${p.checkpoints.length}`;
    this.description = String(p.checkpoints.length);
    this.iconPath = new vscode.ThemeIcon('history');
    this.contextValue = 'group:fl-checkpoints';
  }

  children(): vscode.TreeItem[] {
    return [...this.process.checkpoints].reverse().map((k) => new FlCheckpointItem(this.connection, this.process, k));
  }
}

export class FlCheckpointItem extends vscode.TreeItem {
  readonly kind = 'fl-checkpoint';
  readonly connection: NodeConnection;
  readonly process: FlProcessInfo;
  readonly checkpoint: Checkpoint;

  constructor(conn: NodeConnection, p: FlProcessInfo, k: Checkpoint) {
    super(`checkpoint ${k.number}`, vscode.TreeItemCollapsibleState.None);
    this.connection = conn;
    this.process = p;
    this.checkpoint = k;
    this.id = `fl-checkpoint:${conn.url}:${p.model_id}:${k.number}`;
    const latest = p.checkpoints.at(-1)?.number === k.number;
    this.description = [latest ? 'latest' : undefined, k.cycle === null ? 'the hosted model' : `after cycle ${k.cycle} (${k.reports} reports)`, k.created].filter(Boolean).join(' · ');
    this.iconPath = new vscode.ThemeIcon('package');
    this.contextValue = 'fl-checkpoint';
  }
}

function note(id: string, text: string): vscode.TreeItem {
  const item = new vscode.TreeItem(text, vscode.TreeItemCollapsibleState.None);
  item.id = id;
  item.contextValue = 'note';
  return item;
}

export type FlTreeItem = FlGroupItem | FlProcessItem | FlCycleItem | FlWorkerItem | FlCheckpointsItem | FlCheckpointItem;

/** The FL rows' children (NodesProvider asks here for any FL row). */
export function flChildren(item: unknown): vscode.TreeItem[] | undefined {
  if (item instanceof FlGroupItem || item instanceof FlProcessItem || item instanceof FlCycleItem || item instanceof FlCheckpointsItem) return item.children();
  if (item instanceof FlWorkerItem || item instanceof FlCheckpointItem) return [];
  return undefined;
}
