// The Nodes view: each node with its state; under it the reason it is unusable (with a fix) or its
// Models (each model's versions under it), Datasets, Peers and Jobs. Redrawn when Ctx says something changed (node events, states).
import * as vscode from 'vscode';
import type { Ctx } from '../ctx';
import type { NodeConnection } from '../connection';
import { flChildren, FlGroupItem, type FlTreeItem } from './fl-items';
import { DatasetItem, DroppedItem, EncryptedModelItem, GroupItem, JobItem, ModelItem, NodeItem, NoteItem, PeerItem, ReasonItem, type GridTreeItem } from './items';

export class NodesProvider implements vscode.TreeDataProvider<GridTreeItem | FlTreeItem>, vscode.Disposable {
  private readonly ctx: Ctx;
  private readonly emitter = new vscode.EventEmitter<GridTreeItem | FlTreeItem | undefined>();
  readonly onDidChangeTreeData = this.emitter.event;
  private readonly sub: vscode.Disposable;

  constructor(ctx: Ctx) {
    this.ctx = ctx;
    this.sub = ctx.onDidChangeNodes(() => this.emitter.fire(undefined));
  }

  getTreeItem(item: GridTreeItem | FlTreeItem): vscode.TreeItem {
    return item;
  }

  getChildren(item?: GridTreeItem | FlTreeItem): (GridTreeItem | FlTreeItem)[] {
    // One row per node: entries for a node already shown (same node id) appear on its row as "also NAME".
    if (!item) return this.ctx.connections.map((c) => new NodeItem(c, this.ctx.aliasesOf(c)));
    if (item instanceof NodeItem) {
      const c = item.connection;
      const out: (GridTreeItem | FlTreeItem)[] = [];
      if (c.state === 'error' || c.state === 'unauthenticated' || c.state === 'reconnecting') out.push(new ReasonItem(c));
      if (c.dropped) out.push(new DroppedItem(c, c.dropped));
      if (c.isOpen) {
        out.push(new GroupItem(c, 'models', c.models.length + c.encrypted.length), new GroupItem(c, 'datasets', c.datasets.length), new GroupItem(c, 'peers', c.peers.length));
        out.push(new GroupItem(c, 'jobs', c.supportsTraining ? c.jobs.length : undefined));
        if (c.supportsFl) out.push(new FlGroupItem(c));
      }
      return out;
    }
    if (item instanceof ModelItem) return item.versionItems();
    const fl = flChildren(item);
    if (fl !== undefined) return fl as FlTreeItem[];
    if (item instanceof GroupItem) {
      const c = item.connection;
      switch (item.group) {
        case 'models':
          return c.models.length + c.encrypted.length ? [...c.models.map((m) => new ModelItem(c, m, { showNode: false })), ...encryptedItems(this.ctx, c, false)] : [new NoteItem(`none-models:${c.url}`, 'no models — serve one')];
        case 'datasets':
          return c.datasets.length ? c.datasets.map((d) => new DatasetItem(c, d)) : [new NoteItem(`none-datasets:${c.url}`, 'no datasets registered')];
        case 'peers':
          return c.peers.length ? c.peers.map((p) => new PeerItem(c, p)) : [new NoteItem(`none-peers:${c.url}`, 'no peers linked')];
        case 'jobs':
          if (!c.supportsTraining) return [new NoteItem(`none-jobs:${c.url}`, 'this node does not run training jobs')];
          if (c.state === 'unauthenticated') return [new NoteItem(`none-jobs:${c.url}`, 'sign in to see training jobs')];
          return c.jobs.length ? c.jobs.map((j) => new JobItem(c, j)) : [new NoteItem(`none-jobs:${c.url}`, 'no training jobs — train a model')];
      }
    }
    return [];
  }

  getParent(): undefined {
    return undefined;
  }

  dispose(): void {
    this.sub.dispose();
    this.emitter.dispose();
  }
}

/** A node's encrypted models, the other nodes named as in the list (by node id), else by address. */
export function encryptedItems(ctx: Ctx, c: NodeConnection, showNode: boolean): EncryptedModelItem[] {
  const nameOf = (ref: { id: string; address: string }) => ctx.openConnections.find((o) => o.identity?.id === ref.id)?.name ?? ref.address.replace(/^wss?:\/\//, '');
  return c.encrypted.map((info) => new EncryptedModelItem(c, info, { showNode, nameOf }));
}
