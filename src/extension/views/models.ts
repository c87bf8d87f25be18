// The Models view: every model on every open node, node named in the description; a model with several
// versions lists them under it.
import * as vscode from 'vscode';
import type { Ctx } from '../ctx';
import { EncryptedModelItem, ModelItem } from './items';
import { encryptedItems } from './nodes';

export class ModelsProvider implements vscode.TreeDataProvider<ModelItem | EncryptedModelItem>, vscode.Disposable {
  private readonly ctx: Ctx;
  private readonly emitter = new vscode.EventEmitter<ModelItem | EncryptedModelItem | undefined>();
  readonly onDidChangeTreeData = this.emitter.event;
  private readonly sub: vscode.Disposable;

  constructor(ctx: Ctx) {
    this.ctx = ctx;
    this.sub = ctx.onDidChangeNodes(() => this.emitter.fire(undefined));
  }

  getTreeItem(item: ModelItem | EncryptedModelItem): vscode.TreeItem {
    return item;
  }

  getChildren(item?: ModelItem | EncryptedModelItem): (ModelItem | EncryptedModelItem)[] {
    if (item) return item instanceof ModelItem ? item.versionItems() : [];
    // An encrypted model once, on the row of the share holder that leads its queries (either, when only one is open).
    const seen = new Set<string>();
    const encrypted = this.ctx.openConnections.flatMap((c) => encryptedItems(this.ctx, c, true)).sort((a, b) => a.info.party - b.info.party)
      .filter((e) => !seen.has(e.info.pair_tag) && seen.add(e.info.pair_tag));
    return [...this.ctx.openConnections.flatMap((c) => c.models.map((m) => new ModelItem(c, m, { showNode: true }))), ...encrypted];
  }

  dispose(): void {
    this.sub.dispose();
    this.emitter.dispose();
  }
}
