// The Models view: every model on every open node, node named in the description; a model with several
// versions lists them under it.
import * as vscode from 'vscode';
import type { Ctx } from '../ctx';
import { ModelItem } from './items';

export class ModelsProvider implements vscode.TreeDataProvider<ModelItem>, vscode.Disposable {
  private readonly ctx: Ctx;
  private readonly emitter = new vscode.EventEmitter<ModelItem | undefined>();
  readonly onDidChangeTreeData = this.emitter.event;
  private readonly sub: vscode.Disposable;

  constructor(ctx: Ctx) {
    this.ctx = ctx;
    this.sub = ctx.onDidChangeNodes(() => this.emitter.fire(undefined));
  }

  getTreeItem(item: ModelItem): vscode.TreeItem {
    return item;
  }

  getChildren(item?: ModelItem): ModelItem[] {
    if (item) return item.versionItems();
    return this.ctx.openConnections.flatMap((c) => c.models.map((m) => new ModelItem(c, m, { showNode: true })));
  }

  dispose(): void {
    this.sub.dispose();
    this.emitter.dispose();
  }
}
