// This user's local node (src/core/local-node.ts): one per user and machine, found through its runtime
// record. If one runs (started by `npm run start`, `grid-node --local`, or another window) this window
// joins it; otherwise it starts dist/grid-node.js --local in a child process of the extension host (its
// own Node when the host is plain Node, Electron-as-Node in desktop VS Code): the per-user data dir, a free
// loopback port, the demo datasets. Its pino lines go to the Grid log. If it dies on its own it is
// restarted on the same port (a bounded number of times), so open connections simply reconnect. The
// record's token signs this window in as the node's admin: no password to keep or type.
import type { ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as vscode from 'vscode';
import { gridError } from '../core/errors';
import { findLocalNode, localNodeFile, processAlive, type LocalNodeRecord } from '../core/local-node';
import { spawnLocalNode, startOrJoinLocalNode, waitForLocalNode, type SpawnLocalNodeOptions } from '../core/local-node-start';
import type { Log } from './log';
const STOP_GRACE_MS = 5_000;
const MAX_RESTARTS = 3;
const RESTART_WINDOW_MS = 60_000;
/** How often a joined node's pid is checked. */
const JOINED_WATCH_MS = 1_000;
/** How long a joined node whose process is gone has to reappear at its URL (its program restarting it). */
const REJOIN_TIMEOUT_MS = 10_000;

export interface LocalNodeExit {
  code: number | null;
  signal: NodeJS.Signals | null;
  restarting: boolean;
  /** It went away on its own (crashed too often, could not restart, a joined node's program ended) and nothing brings it back. */
  gaveUp: boolean;
  /** Why, in words for the user, when `gaveUp`. */
  reason?: string;
}


export interface LocalNodeOptions {
  /** dist/grid-node.js */
  script: string;
  /** The local node's runtime record (written by the node itself). */
  recordFile: string;
  /** Read at every start and restart: the settings apply when the node next starts. 0: a free port. */
  settings: () => { port: number; demoDatasets: boolean };
  log: Log;
}

const PINO_LEVELS: Record<number, 'debug' | 'info' | 'warn' | 'error'> = { 10: 'debug', 20: 'debug', 30: 'info', 40: 'warn', 50: 'error', 60: 'error' };

export class LocalNode implements vscode.Disposable {
  private readonly opts: LocalNodeOptions;
  private child: ChildProcess | undefined;
  private urlValue: string | undefined;
  private stopping = false;
  private disposed = false;
  private restarts: number[] = [];
  private starting: Promise<string> | undefined;
  /** Aborted by stop() and dispose(): a start waiting to join another start's node gives up. */
  private startAbort: AbortController | undefined;
  /** Set when this window joined a node another window runs (it is not ours to stop). */
  private joinedPid: number | undefined;
  /** While joined: checks that the joined node's process still runs. */
  private joinedWatch: NodeJS.Timeout | undefined;
  /** Aborts a wait for a joined node's restart (stop, dispose, a new watch). */
  private joinedAbort: AbortController | undefined;
  private readonly exited = new vscode.EventEmitter<LocalNodeExit>();
  /**
   * Fires when the process ends (a joined node's too: its pid is watched); `restarting` tells whether
   * the supervisor brings it back, `gaveUp` that it went away on its own and nothing brings it back.
   */
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

  /**
   * The record of the node this supervisor runs or joined (its token signs in as admin), read afresh: a
   * restarted node has a new token. Only a record of that process at that URL: the node's id was
   * confirmed when it was started or joined, and a record of another pid (reused after a crash) or
   * another URL is not handed its token.
   */
  record(): LocalNodeRecord | undefined {
    const pid = this.child?.pid ?? this.joinedPid;
    if (pid === undefined || this.urlValue === undefined) return undefined;
    const r = findLocalNode(this.opts.recordFile);
    return r !== undefined && r.url === this.urlValue && r.pid === pid ? r : undefined;
  }

  /** Starts the node, or joins the one that runs; resolves with its ws:// URL. */
  async start(): Promise<string> {
    if (this.disposed) throw gridError('DISPOSED', 'the local node supervisor was disposed');
    if (this.isRunning && this.urlValue && (this.child !== undefined || this.record() !== undefined)) return this.urlValue;
    if (this.joinedPid !== undefined) { this.joinedPid = undefined; this.urlValue = undefined; }
    // A second Start while the first is still coming up waits for the same process.
    this.starting ??= (async () => {
      this.stopping = false;
      const abort = new AbortController();
      this.startAbort = abort;
      try {
        const { port, demoDatasets } = this.opts.settings();
        const started = await startOrJoinLocalNode(this.opts.recordFile, { ...this.spawnOptions(port, demoDatasets), signal: abort.signal });
        if (started.joined) {
          // Stopped (or the window closed) while it waited for the node: nothing is joined or watched.
          if (this.stopping || this.disposed) throw gridError('ABORTED', 'the local node was stopped while it was starting');
          // Another program's node (another window, `grid-node --local`, npm run start), confirmed by its id.
          this.joinedPid = started.record.pid;
          this.urlValue = started.url;
          this.watchJoined(started.record.pid);
          this.opts.log.info({ url: started.url, pid: started.record.pid, data: started.record.data_dir }, 'joining the local grid node that already runs');
          return started.url;
        }
        if (this.stopping || this.disposed) {
          // Stopped while it came up: it is not left running unsupervised.
          started.child.kill('SIGTERM');
          throw gridError('ABORTED', 'the local node was stopped while it was starting');
        }
        this.adopt(started.child, started.url, port);
        return started.url;
      } finally {
        this.starting = undefined;
        if (this.startAbort === abort) this.startAbort = undefined;
      }
    })();
    return this.starting;
  }

  private spawnOptions(port: number, demoDatasets: boolean): SpawnLocalNodeOptions {
    const { script, log } = this.opts;
    if (!fs.existsSync(script)) throw gridError('INTERNAL', `the grid node program is missing: ${script} (was the extension built?)`);
    const args: string[] = [];
    if (demoDatasets) {
      // The node finds media/datasets above its own dist/ folder; a package without it still starts.
      if (fs.existsSync(path.join(path.dirname(script), '..', 'media', 'datasets', 'iris.csv'))) args.push('--demo-datasets');
      else log.warn('the demo datasets are not in this installation (media/datasets); the local node starts without them');
    }
    log.info({ script, port }, 'starting the local grid node');
    return { script, port, args, onStderrLine: (l) => this.forwardLog(l) };
  }

  /** Supervises a node this window started: its exit restarts it (bounded) or is reported. */
  private adopt(child: ChildProcess, url: string, port: number): void {
    this.child = child;
    this.urlValue = url;
    this.opts.log.info({ url, pid: child.pid }, 'the local grid node is listening');
    child.once('exit', (code, signal) => {
      if (this.child === child) this.child = undefined;
      this.onExit(code, signal, port);
    });
  }

  /** Restarts the node on `port` (the one it had), supervised as before. */
  private async restart(port: number): Promise<string> {
    const { demoDatasets } = this.opts.settings();
    const { child, url } = await spawnLocalNode(this.spawnOptions(port, demoDatasets));
    this.adopt(child, url, port);
    return url;
  }

  private onExit(code: number | null, signal: NodeJS.Signals | null, port: number): void {
    const { log } = this.opts;
    const now = Date.now();
    this.restarts = this.restarts.filter((t) => now - t < RESTART_WINDOW_MS);
    const restarting = !this.stopping && !this.disposed && this.restarts.length < MAX_RESTARTS;
    if (this.stopping || this.disposed) log.info({ code, signal }, 'the local grid node stopped');
    else log.warn({ code, signal }, restarting ? 'the local grid node exited unexpectedly; restarting it on the same port' : 'the local grid node keeps exiting; not restarting it');
    const lastUrl = this.urlValue;
    // The node removes its record when it stops; one killed leaves a record of a dead pid, which nobody trusts.
    if (!restarting) this.urlValue = undefined;
    const gaveUp = !restarting && !this.stopping && !this.disposed;
    this.exited.fire({ code, signal, restarting, gaveUp, ...(gaveUp && { reason: `it exited ${this.restarts.length + 1} times within a minute (last: ${code !== null ? `exit ${code}` : signal ?? 'unknown'}) and is not restarted again` }) });
    if (!restarting || lastUrl === undefined) return;
    this.restarts.push(now);
    const samePort = Number(new URL(lastUrl).port) || port;
    this.restart(samePort).then(
      (url) => this.restarted.fire(url),
      (err: unknown) => {
        this.urlValue = undefined;
        log.error({ err }, 'the local grid node could not be restarted');
        const gaveUp = !this.stopping && !this.disposed;
        this.exited.fire({ code: null, signal: null, restarting: false, gaveUp, ...(gaveUp && { reason: `it exited and could not be restarted: ${err instanceof Error ? err.message : String(err)}` }) });
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
    this.startAbort?.abort();
    this.urlValue = undefined;
    // A joined node belongs to the window that started it.
    this.joinedPid = undefined;
    this.unwatchJoined();
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

  /**
   * Watches a joined node's process (another program's child: no exit event reaches this window). When
   * it is gone the node may only be restarting under its own supervisor (its record is missing for a
   * moment): a confirmed record at the same URL within REJOIN_TIMEOUT_MS is the same node under a new pid
   * and token (onDidRestart: sign in again); none means the node is gone.
   */
  private watchJoined(pid: number): void {
    this.unwatchJoined();
    const abort = new AbortController();
    this.joinedAbort = abort;
    this.joinedWatch = setInterval(() => {
      if (this.joinedPid !== pid || processAlive(pid)) return;
      // The wait stays abortable (stop, dispose): only the interval ends here.
      clearInterval(this.joinedWatch);
      this.joinedWatch = undefined;
      void this.rejoin(pid, abort.signal);
    }, JOINED_WATCH_MS);
    this.joinedWatch.unref();
  }

  private async rejoin(pid: number, signal: AbortSignal): Promise<void> {
    const url = this.urlValue;
    const r = await waitForLocalNode(this.opts.recordFile, REJOIN_TIMEOUT_MS, signal).catch(() => undefined);
    // Stopped, closed, or started again meanwhile: that decides.
    if (signal.aborted || this.joinedPid !== pid || this.urlValue !== url) return;
    if (r !== undefined && r.url === url) {
      this.joinedPid = r.pid;
      this.watchJoined(r.pid);
      this.opts.log.info({ url, pid: r.pid, was: pid }, 'the local grid node this window joined was restarted by its program');
      this.restarted.fire(r.url);
      return;
    }
    this.joinedPid = undefined;
    this.urlValue = undefined;
    this.opts.log.warn({ pid }, 'the local grid node this window joined has exited');
    this.exited.fire({ code: null, signal: null, restarting: false, gaveUp: true, reason: `the program that ran it (pid ${pid}) has exited` });
  }

  private unwatchJoined(): void {
    if (this.joinedWatch !== undefined) clearInterval(this.joinedWatch);
    this.joinedWatch = undefined;
    this.joinedAbort?.abort();
    this.joinedAbort = undefined;
  }

  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    void this.stop();
    this.exited.dispose();
    this.restarted.dispose();
  }
}

export function localNodePaths(context: vscode.ExtensionContext): { script: string; recordFile: string } {
  return {
    // The bundled extension and the node program sit in the same dist/ folder, in the repo and in the VSIX.
    script: path.join(context.extensionPath, 'dist', 'grid-node.js'),
    recordFile: localNodeFile(),
  };
}
