// The embedded local node: dist/grid-node.js in a child process of the extension host (its own Node
// when the host is plain Node, Electron-as-Node in desktop VS Code), data under the extension's global
// storage, a free loopback port, the demo datasets registered. Its pino lines go to the Grid log.
// If it dies on its own it is restarted on the same port (a bounded number of times), so open
// connections simply reconnect. Its URL and pid are written next to the data dir, so a second VS Code
// window joins the running node instead of failing on the locked data dir.
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as readline from 'node:readline';
import * as vscode from 'vscode';
import { GridError, gridError, isErrorCode } from '../core/errors';
import type { Log } from './log';

const PASSWORD_KEY = 'grid.localNode.adminPassword';
const LISTENING = /^listening on (ws:\/\/\S+)/;
const STOP_GRACE_MS = 5_000;
const MAX_RESTARTS = 3;
const RESTART_WINDOW_MS = 60_000;

export interface LocalNodeOptions {
  /** dist/grid-node.js */
  script: string;
  /** Where the node keeps its data (below the extension's global storage). */
  dataDir: string;
  /** {url, pid} of the running node, for other windows. */
  discoveryFile: string;
  port: number;
  demoDatasets: boolean;
  secrets: vscode.SecretStorage;
  log: Log;
}

const PINO_LEVELS: Record<number, 'debug' | 'info' | 'warn' | 'error'> = { 10: 'debug', 20: 'debug', 30: 'info', 40: 'warn', 50: 'error', 60: 'error' };

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** The node another window started on this data dir, if its process still runs. */
export function runningLocalNode(discoveryFile: string): { url: string; pid: number } | undefined {
  try {
    const d = JSON.parse(fs.readFileSync(discoveryFile, 'utf8')) as { url?: unknown; pid?: unknown };
    if (typeof d.url === 'string' && typeof d.pid === 'number' && alive(d.pid)) return { url: d.url, pid: d.pid };
  } catch { /* none, or unreadable: start our own */ }
  return undefined;
}

export class LocalNode implements vscode.Disposable {
  private readonly opts: LocalNodeOptions;
  private child: ChildProcess | undefined;
  private urlValue: string | undefined;
  private stopping = false;
  private disposed = false;
  private restarts: number[] = [];
  private starting: Promise<string> | undefined;
  /** Set when this window joined a node another window runs (it is not ours to stop). */
  private joinedPid: number | undefined;
  private readonly exited = new vscode.EventEmitter<{ code: number | null; signal: NodeJS.Signals | null; restarting: boolean }>();
  /** Fires when the process ends; `restarting` tells whether the supervisor brings it back. */
  readonly onDidExit = this.exited.event;
  private readonly restarted = new vscode.EventEmitter<string>();
  readonly onDidRestart = this.restarted.event;

  constructor(opts: LocalNodeOptions) {
    this.opts = opts;
  }

  get url(): string | undefined {
    return this.urlValue;
  }

  get pid(): number | undefined {
    return this.child?.pid ?? this.joinedPid;
  }

  get isRunning(): boolean {
    return (this.child !== undefined || this.joinedPid !== undefined) && this.urlValue !== undefined;
  }

  /** Whether the node runs in another window's process (joined, not started, by this window). */
  get isJoined(): boolean {
    return this.joinedPid !== undefined;
  }

  /** The admin password the extension chose for its node (created on first use, kept in SecretStorage). */
  async adminPassword(): Promise<string> {
    const stored = await this.opts.secrets.get(PASSWORD_KEY);
    if (stored) return stored;
    const created = randomBytes(24).toString('base64url');
    await this.opts.secrets.store(PASSWORD_KEY, created);
    return created;
  }

  /** Starts the node; resolves with its ws:// URL. */
  async start(): Promise<string> {
    if (this.disposed) throw gridError('DISPOSED', 'the local node supervisor was disposed');
    if (this.isRunning && this.urlValue) return this.urlValue;
    const other = runningLocalNode(this.opts.discoveryFile);
    if (other) {
      this.joinedPid = other.pid;
      this.urlValue = other.url;
      this.opts.log.info({ url: other.url, pid: other.pid }, 'joining the local grid node another window started');
      return other.url;
    }
    // A second Start while the first is still coming up waits for the same process.
    this.starting ??= (async () => {
      this.stopping = false;
      try {
        return await this.spawn(this.opts.port);
      } finally {
        this.starting = undefined;
      }
    })();
    return this.starting;
  }

  private async spawn(port: number): Promise<string> {
    const { script, dataDir, log } = this.opts;
    if (!fs.existsSync(script)) throw gridError('INTERNAL', `the grid node program is missing: ${script} (was the extension built?)`);
    fs.mkdirSync(dataDir, { recursive: true });
    const password = await this.adminPassword();
    const args = [script, '--port', String(port), '--data-dir', dataDir, '--name', 'local'];
    if (this.opts.demoDatasets) {
      // The node finds media/datasets above its own dist/ folder; a package without it still starts.
      if (fs.existsSync(path.join(path.dirname(script), '..', 'media', 'datasets', 'iris.csv'))) args.push('--demo-datasets');
      else log.warn('the demo datasets are not in this installation (media/datasets); the local node starts without them');
    }
    log.info({ script, dataDir, port }, 'starting the local grid node');
    const child = spawn(process.execPath, args, {
      // GRID_ADMIN_PASSWORD only matters on the first start, when the node creates its admin user.
      env: { ...process.env, ELECTRON_RUN_AS_NODE: '1', GRID_ADMIN_PASSWORD: password },
      stdio: ['ignore', 'pipe', 'pipe'],
      windowsHide: true,
    });
    this.child = child;
    let lastError: GridError | undefined;
    const stderr = readline.createInterface({ input: child.stderr! });
    stderr.on('line', (l) => {
      const failure = /^grid-node: (GRID_ERR_[A-Z_]+): (.*)$/.exec(l);
      if (failure && isErrorCode(failure[1])) lastError = new GridError(failure[1], `the local node did not start: ${failure[2]!}`);
      this.forwardLog(l);
    });
    return new Promise<string>((resolve, reject) => {
      let listening = false;
      const stdout = readline.createInterface({ input: child.stdout! });
      stdout.on('line', (l) => {
        const m = LISTENING.exec(l);
        if (m && !listening) {
          listening = true;
          this.urlValue = m[1]!;
          log.info({ url: this.urlValue, pid: child.pid }, 'the local grid node is listening');
          try {
            fs.writeFileSync(this.opts.discoveryFile, JSON.stringify({ url: this.urlValue, pid: child.pid }));
          } catch (err) {
            log.warn({ err }, 'could not record the local node for other windows');
          }
          resolve(this.urlValue);
        }
      });
      child.once('error', (err) => {
        if (!listening) reject(gridError('INTERNAL', `could not run the local node with ${process.execPath}: ${err.message}`));
      });
      child.once('exit', (code, signal) => {
        if (this.child === child) this.child = undefined;
        if (!listening) {
          this.urlValue = undefined;
          reject(lastError ?? gridError('INTERNAL', `the local node exited before listening (exit ${code ?? signal}); see the Grid log`));
          return;
        }
        this.onExit(child, code, signal, port);
      });
    });
  }

  /** Removes the discovery file if it names `child` (another window may have written its own since). */
  private forgetDiscovery(child: ChildProcess): void {
    try {
      const d = JSON.parse(fs.readFileSync(this.opts.discoveryFile, 'utf8')) as { pid?: unknown };
      if (d.pid === child.pid) fs.rmSync(this.opts.discoveryFile, { force: true });
    } catch { /* nothing recorded */ }
  }

  private onExit(child: ChildProcess, code: number | null, signal: NodeJS.Signals | null, port: number): void {
    const { log } = this.opts;
    const now = Date.now();
    this.restarts = this.restarts.filter((t) => now - t < RESTART_WINDOW_MS);
    const restarting = !this.stopping && !this.disposed && this.restarts.length < MAX_RESTARTS;
    if (this.stopping || this.disposed) log.info({ code, signal }, 'the local grid node stopped');
    else log.warn({ code, signal }, restarting ? 'the local grid node exited unexpectedly; restarting it on the same port' : 'the local grid node keeps exiting; not restarting it');
    const lastUrl = this.urlValue;
    if (!restarting) {
      this.urlValue = undefined;
      this.forgetDiscovery(child);
    }
    this.exited.fire({ code, signal, restarting });
    if (!restarting || lastUrl === undefined) return;
    this.restarts.push(now);
    const samePort = Number(new URL(lastUrl).port) || port;
    this.spawn(samePort).then(
      (url) => this.restarted.fire(url),
      (err: unknown) => {
        this.urlValue = undefined;
        log.error({ err }, 'the local grid node could not be restarted');
        this.exited.fire({ code: null, signal: null, restarting: false });
      },
    );
  }

  /** Pino JSON lines become log lines at their level; anything else is passed through. */
  private forwardLog(l: string): void {
    const { log } = this.opts;
    if (l.trim() === '' || /password/i.test(l)) return;
    try {
      const rec = JSON.parse(l) as { level?: number; msg?: string; time?: number; pid?: number; hostname?: string; name?: string };
      const level = PINO_LEVELS[rec.level ?? 30] ?? 'info';
      const { msg, level: _l, time: _t, pid: _p, hostname: _h, name: _n, ...fields } = rec;
      log[level](fields, `[local node] ${msg ?? ''}`);
    } catch {
      log.info(`[local node] ${l}`);
    }
  }

  /** Stops the node (SIGTERM, then SIGKILL after a grace period); idempotent. */
  stop(): Promise<void> {
    const child = this.child;
    this.stopping = true;
    this.urlValue = undefined;
    // A joined node belongs to the window that started it.
    this.joinedPid = undefined;
    if (!child || child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
    return new Promise<void>((resolve) => {
      const timer = setTimeout(() => child.kill('SIGKILL'), STOP_GRACE_MS);
      child.once('exit', () => {
        clearTimeout(timer);
        resolve();
      });
      child.kill('SIGTERM');
    });
  }

  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    void this.stop();
    this.exited.dispose();
    this.restarted.dispose();
  }
}

export function localNodePaths(context: vscode.ExtensionContext): { script: string; dataDir: string; discoveryFile: string } {
  return {
    // The bundled extension and the node program sit in the same dist/ folder, in the repo and in the VSIX.
    script: path.join(context.extensionPath, 'dist', 'grid-node.js'),
    dataDir: path.join(context.globalStorageUri.fsPath, 'local-node'),
    discoveryFile: path.join(context.globalStorageUri.fsPath, 'local-node.json'),
  };
}
