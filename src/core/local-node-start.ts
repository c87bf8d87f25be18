// Starting this user's local node, or joining the one that runs (src/core/local-node.ts has the record).
// Plain Node, so the extension's supervisor (src/extension/local-node.ts), `grid-node --local` and the
// tests share one answer to "is that record a node?": a record is trusted only once the node at its URL
// answers get-id with the record's node_id (a pid alone can be reused after a crash), and a start that
// loses the race for the data dir to another start waits for that node's record and joins it.
import { spawn, type ChildProcess } from 'node:child_process';
import * as readline from 'node:readline';
import { GridClient } from './client';
import { ErrorCodes, GridError, gridError, isErrorCode, toGridError } from './errors';
import { findLocalNode, processAlive, type LocalNodeRecord } from './local-node';

const LISTENING = /^listening on (ws:\/\/\S+)/;
/** How long a record's node has to answer get-id (it runs on this machine: it answers in milliseconds). */
export const CONFIRM_TIMEOUT_MS = 3_000;
/** How long a start waits for the node to print its listening line (a first start creates its store). */
export const START_TIMEOUT_MS = 60_000;
/** How long a start that finds another local node's record (ALREADY_EXISTS) waits for it to answer. */
export const JOIN_TIMEOUT_MS = 60_000;
/**
 * How long a start that lost the data dir waits for the holder's record: a local node starting up
 * writes it within seconds; a holder that writes none in this time is something else (a grid-node
 * without --local on the same data dir, or a start that hangs).
 */
export const HOLDER_TIMEOUT_MS = 10_000;
const POLL_MS = 100;

/**
 * The record in `file` if the node it names answers at its URL with its node_id; undefined otherwise
 * (no record, a dead pid, nothing listening, or another node there).
 */
export async function confirmedLocalNode(file: string, timeoutMs = CONFIRM_TIMEOUT_MS): Promise<LocalNodeRecord | undefined> {
  const record = findLocalNode(file);
  if (record === undefined) return undefined;
  return (await answersAs(record, timeoutMs)) ? record : undefined;
}

/**
 * Whether the node at the record's URL answers get-id with the record's node_id, all within `timeoutMs`
 * (one deadline for the connection and the reply: a listener that accepts and never answers is given up
 * on as fast as one that refuses).
 */
async function answersAs(record: LocalNodeRecord, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  let client: GridClient | undefined;
  try {
    client = await GridClient.connect(record.url, { connect: { handshakeTimeoutMs: Math.max(1, timeoutMs) }, reconnect: { enabled: false } });
    const left = deadline - Date.now();
    if (left <= 0) return false;
    const id = await client.getId({ timeoutMs: left });
    return id.id === record.node_id;
  } catch {
    return false;
  } finally {
    client?.dispose();
  }
}

/**
 * Waits for a confirmed record to appear in `file` (another start is bringing its node up); polls
 * every 100 ms, and gives up with undefined after `timeoutMs`, when `signal` is aborted, or once
 * `worthWaiting` says no (the process that would write the record is gone).
 */
export async function waitForLocalNode(file: string, timeoutMs = JOIN_TIMEOUT_MS, signal?: AbortSignal, worthWaiting?: () => boolean): Promise<LocalNodeRecord | undefined> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (signal?.aborted) return undefined;
    // A probe never outlasts the wait it belongs to.
    const r = await confirmedLocalNode(file, Math.max(1, Math.min(CONFIRM_TIMEOUT_MS, deadline - Date.now())));
    if (r !== undefined) return r;
    if (Date.now() >= deadline || signal?.aborted || (worthWaiting !== undefined && !worthWaiting())) return undefined;
    await sleep(POLL_MS, signal);
  }
}

/** Resolves after `ms`, or at once when `signal` is aborted; leaves no timer behind. */
function sleep(ms: number, signal: AbortSignal | undefined): Promise<void> {
  return new Promise((resolve) => {
    const done = () => { clearTimeout(timer); signal?.removeEventListener('abort', done); resolve(); };
    const timer = setTimeout(done, ms);
    signal?.addEventListener('abort', done, { once: true });
  });
}

export interface SpawnLocalNodeOptions {
  /** dist/grid-node.js */
  script: string;
  /** 0: a free port. */
  port: number;
  /** Extra arguments after `--local --port P --name local` (e.g. --demo-datasets). */
  args?: string[];
  env?: NodeJS.ProcessEnv;
  /** The program that runs the script; default this process's (Electron-as-Node in desktop VS Code). */
  execPath?: string;
  startTimeoutMs?: number;
  /** Each line the node writes to stderr (its pino log), for as long as it runs. */
  onStderrLine?: (line: string) => void;
}

/**
 * Runs `grid-node --local` and resolves with its child and URL once it listens. Rejects with the
 * node's own coded error when it exits first (PORT_IN_USE, DATA_DIR_IN_USE, ALREADY_EXISTS, …), or
 * with TIMEOUT (the child killed) when it does not listen within `startTimeoutMs`.
 */
export function spawnLocalNode(opts: SpawnLocalNodeOptions): Promise<{ child: ChildProcess; url: string }> {
  const startTimeoutMs = opts.startTimeoutMs ?? START_TIMEOUT_MS;
  const child = spawn(opts.execPath ?? process.execPath, [opts.script, '--local', '--port', String(opts.port), '--name', 'local', ...(opts.args ?? [])], {
    // The node creates its admin with a generated password on its first start; nobody here needs it.
    env: { ...(opts.env ?? process.env), ELECTRON_RUN_AS_NODE: '1', GRID_ADMIN_PASSWORD: '' },
    stdio: ['ignore', 'pipe', 'pipe'],
    windowsHide: true,
  });
  let lastError: GridError | undefined;
  readline.createInterface({ input: child.stderr! }).on('line', (l) => {
    const failure = /^grid-node: (GRID_ERR_[A-Z_]+): (.*)$/.exec(l);
    if (failure && isErrorCode(failure[1])) {
      // DATA_DIR_IN_USE names the holder: "… used by another grid node (pid N); …".
      const holder = failure[1] === ErrorCodes.DATA_DIR_IN_USE ? /\(pid (\d+)\)/.exec(failure[2]!) : null;
      lastError = new GridError(failure[1], `the local node did not start: ${failure[2]!}`, holder ? { pid: Number(holder[1]) } : undefined);
    }
    opts.onStderrLine?.(l);
  });
  return new Promise((resolve, reject) => {
    let settled = false;
    const settle = (err: GridError | undefined, url?: string) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      child.off('exit', onExit);
      if (err) reject(err);
      else resolve({ child, url: url! });
    };
    let timedOut: GridError | undefined;
    // Rejects once the child is gone: a start that gave up leaves no process behind.
    const timer = setTimeout(() => {
      timedOut = gridError('TIMEOUT', `the local node did not start listening within ${Math.round(startTimeoutMs / 1000)} s (pid ${child.pid ?? '?'}, killed); see the Grid log`);
      child.kill('SIGKILL');
    }, startTimeoutMs);
    const onExit = (code: number | null, signal: NodeJS.Signals | null) => {
      settle(timedOut ?? lastError ?? gridError('INTERNAL', `the local node exited before listening (exit ${code ?? signal}); see the Grid log`));
    };
    child.once('exit', onExit);
    child.once('error', (err) => settle(gridError('INTERNAL', `could not run the local node with ${opts.execPath ?? process.execPath}: ${err.message}`)));
    readline.createInterface({ input: child.stdout! }).on('line', (l) => {
      const m = LISTENING.exec(l);
      if (m) settle(undefined, m[1]!);
    });
  });
}

export type LocalNodeStart =
  | { joined: true; url: string; record: LocalNodeRecord }
  | { joined: false; url: string; child: ChildProcess };

/**
 * Joins this user's local node when its record is confirmed, else starts one. A start that finds
 * another start ahead of it joins that node: ALREADY_EXISTS (its record is there) waits for the record
 * to be confirmed; DATA_DIR_IN_USE (a process holds the data dir and has written no record yet) waits
 * while that process lives, at most HOLDER_TIMEOUT_MS, and starts again once if it exits (a start that
 * failed). A holder that writes no record is named in the error: it is not a local node starting up.
 */
export async function startOrJoinLocalNode(recordFile: string, opts: SpawnLocalNodeOptions & { joinTimeoutMs?: number; holderTimeoutMs?: number; signal?: AbortSignal }): Promise<LocalNodeStart> {
  const running = await confirmedLocalNode(recordFile);
  if (running !== undefined) return { joined: true, url: running.url, record: running };
  for (let attempt = 0; ; attempt++) {
    throwIfAborted(opts.signal);
    try {
      const { child, url } = await spawnLocalNode(opts);
      return { joined: false, url, child };
    } catch (err) {
      const e = toGridError(err);
      if (e.code === ErrorCodes.ALREADY_EXISTS) {
        const other = await waitForLocalNode(recordFile, opts.joinTimeoutMs ?? JOIN_TIMEOUT_MS, opts.signal);
        throwIfAborted(opts.signal);
        if (other === undefined) throw e;
        return { joined: true, url: other.url, record: other };
      }
      if (e.code !== ErrorCodes.DATA_DIR_IN_USE) throw e;
      const holder = typeof e.details?.pid === 'number' ? e.details.pid : undefined;
      const timeoutMs = opts.holderTimeoutMs ?? HOLDER_TIMEOUT_MS;
      const other = await waitForLocalNode(recordFile, timeoutMs, opts.signal, holder === undefined ? undefined : () => processAlive(holder));
      if (other !== undefined) return { joined: true, url: other.url, record: other };
      throwIfAborted(opts.signal);
      // The holder exited without a record (a start that failed): the data dir is free, start once more.
      if (holder !== undefined && !processAlive(holder) && attempt === 0) continue;
      const dir = typeof e.details?.dir === 'string' ? e.details.dir : /data dir (\S+)/.exec(e.message)?.[1] ?? 'the data dir';
      throw new GridError(ErrorCodes.DATA_DIR_IN_USE, holder === undefined || !processAlive(holder)
        ? `${e.message} (and no local node record appeared${holder === undefined ? ` within ${Math.round(timeoutMs / 1000)} s` : ': that process exited without one, on a second start as well'})`
        : `the local node did not start: its data dir ${dir} is held by process ${holder}, which is not a local node starting up (no local-node record within ${Math.round(timeoutMs / 1000)} s): a grid-node started without --local on that data dir, or a start that hangs; stop it or pass another --data-dir`,
      { ...e.details, ...(holder !== undefined && { pid: holder }) }, { cause: e });
    }
  }
}

function throwIfAborted(signal: AbortSignal | undefined): void {
  if (signal?.aborted) throw gridError('ABORTED', 'the local node start was cancelled');
}
