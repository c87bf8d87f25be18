// The status bar item: how many nodes are connected, whether any is reconnecting or failing, and how
// many training jobs run.
// Clicking it opens the Grid sidebar.
import * as vscode from 'vscode';
import type { Ctx } from './ctx';

export class GridStatusBar implements vscode.Disposable {
  private readonly item: vscode.StatusBarItem;
  private readonly sub: vscode.Disposable;
  private readonly ctx: Ctx;

  constructor(ctx: Ctx) {
    this.ctx = ctx;
    this.item = vscode.window.createStatusBarItem('grid.status', vscode.StatusBarAlignment.Left, 10);
    this.item.name = 'Grid';
    this.item.command = 'workbench.view.extension.grid';
    this.sub = ctx.onDidChangeNodes(() => this.update());
    this.update();
  }

  /** The text shown, also read by the e2e tests. */
  get text(): string {
    return this.item.text;
  }

  private update(): void {
    const all = this.ctx.connections;
    const open = all.filter((c) => c.isOpen).length;
    const reconnecting = all.filter((c) => c.state === 'reconnecting' || c.state === 'connecting').length;
    const failing = all.filter((c) => c.state === 'error').length;
    const jobs = all.reduce((n, c) => n + c.jobs.filter((j) => j.state === 'running' || j.state === 'queued').length, 0);
    const icon = failing ? '$(error)' : reconnecting ? '$(sync~spin)' : '$(server-environment)';
    this.item.text = `${icon} Grid ${open}/${all.length}${jobs ? ` $(pulse) ${jobs}` : ''}`;
    this.item.tooltip = `${open} of ${all.length} grid nodes connected${reconnecting ? `, ${reconnecting} (re)connecting` : ''}${failing ? `, ${failing} failing` : ''}; ${jobs} training job${jobs === 1 ? '' : 's'} running`;
    if (all.length === 0) this.item.hide();
    else this.item.show();
  }

  dispose(): void {
    this.sub.dispose();
    this.item.dispose();
  }
}
