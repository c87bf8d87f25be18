// Activation only: build the context, register everything through it, nothing heavy here.
import * as vscode from 'vscode';

export function activate(context: vscode.ExtensionContext): void {
  const log = vscode.window.createOutputChannel('Grid', { log: true });
  context.subscriptions.push(log);
  context.subscriptions.push(vscode.commands.registerCommand('grid.showLogs', () => log.show()));
  log.info('Grid Workbench activated');
}

export function deactivate(): void {}
