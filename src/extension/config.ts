// One typed view of the `grid.*` settings. Getters read the live configuration, so a value is never
// stale; settings that only take effect on the next connection say so in their doc comment.
import * as vscode from 'vscode';
import type { ReconnectOptions } from '../core/socket/backoff';

export interface NodeEntry {
  name: string;
  url: string;
}

const SECTION = 'grid';

export class Config {
  private get cfg(): vscode.WorkspaceConfiguration {
    return vscode.workspace.getConfiguration(SECTION);
  }

  /** The configured nodes, without malformed entries (a hand-edited settings.json can hold anything). */
  get nodes(): NodeEntry[] {
    const raw = this.cfg.get<unknown>('nodes', []);
    if (!Array.isArray(raw)) return [];
    return raw.filter((n): n is NodeEntry => typeof n?.name === 'string' && typeof n?.url === 'string');
  }

  async setNodes(nodes: NodeEntry[]): Promise<void> {
    await this.cfg.update('nodes', nodes, vscode.ConfigurationTarget.Global);
  }

  /** Milliseconds a request waits for its reply. Takes effect on the next request. */
  get requestTimeoutMs(): number {
    return this.cfg.get<number>('requestTimeoutMs', 20_000);
  }

  /** Handshake timeout of one connection attempt. Needs a reconnect. */
  get connectTimeoutMs(): number {
    return this.cfg.get<number>('connectTimeoutMs', 10_000);
  }

  /** Heartbeat interval; a node missing a pong is reconnected. Needs a reconnect. */
  get heartbeatMs(): number {
    return this.cfg.get<number>('heartbeatMs', 15_000);
  }

  /** Reconnect policy. Needs a reconnect. */
  get reconnect(): ReconnectOptions {
    const max = this.cfg.get<number>('reconnect.maxAttempts', 0);
    return {
      enabled: this.cfg.get<boolean>('reconnect.enabled', true),
      // 0 in settings means "no limit": JSON settings cannot hold Infinity.
      maxAttempts: max > 0 ? max : Infinity,
      initialDelayMs: this.cfg.get<number>('reconnect.initialDelayMs', 250),
      maxDelayMs: this.cfg.get<number>('reconnect.maxDelayMs', 30_000),
    };
  }

  /** Port of the embedded local node; 0 picks a free one. Needs a local node restart. */
  get localNodePort(): number {
    return this.cfg.get<number>('localNode.port', 0);
  }

  /** Register the UCI demo datasets on the local node. Needs a local node restart. */
  get localNodeDemoDatasets(): boolean {
    return this.cfg.get<boolean>('localNode.demoDatasets', true);
  }

  /** Settings whose change calls for reconnecting open connections. */
  static needsReconnect(e: vscode.ConfigurationChangeEvent): boolean {
    return ['connectTimeoutMs', 'heartbeatMs', 'reconnect'].some((k) => e.affectsConfiguration(`${SECTION}.${k}`));
  }

  static affectsNodes(e: vscode.ConfigurationChangeEvent): boolean {
    return e.affectsConfiguration(`${SECTION}.nodes`);
  }
}
