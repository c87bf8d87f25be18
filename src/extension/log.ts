// The Grid output channel, wearing the core Logger interface (pino's argument order), so the
// GridSocket and the local node supervisor log into the same place a user opens with "Show Logs".
import * as vscode from 'vscode';
import type { Logger } from '../core/logger';

function line(obj: object | string, msg?: string): string {
  if (typeof obj === 'string') return msg === undefined ? obj : `${obj} ${msg}`;
  const fields = Object.keys(obj).length > 0 ? ` ${JSON.stringify(obj, (_k, v: unknown) => (v instanceof Error ? v.message : v))}` : '';
  return `${msg ?? ''}${fields}`;
}

export class Log implements Logger, vscode.Disposable {
  readonly channel: vscode.LogOutputChannel;

  constructor(name = 'Grid') {
    this.channel = vscode.window.createOutputChannel(name, { log: true });
  }

  debug(obj: object | string, msg?: string): void {
    this.channel.debug(line(obj, msg));
  }

  info(obj: object | string, msg?: string): void {
    this.channel.info(line(obj, msg));
  }

  warn(obj: object | string, msg?: string): void {
    this.channel.warn(line(obj, msg));
  }

  error(obj: object | string, msg?: string): void {
    this.channel.error(line(obj, msg));
  }

  /** Text as it came (the local node's own log lines). */
  append(text: string): void {
    this.channel.append(text);
  }

  show(): void {
    this.channel.show(true);
  }

  dispose(): void {
    this.channel.dispose();
  }
}
