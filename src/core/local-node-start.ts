// Starting this user's local node, or joining the one that runs (src/core/local-node.ts has the record).
// Plain Node, so the extension's supervisor (src/extension/local-node.ts), `grid-node --local` and the
// tests share one answer to "is that record a node?": a record is trusted only once the node at its URL
// answers get-id with the record's node_id (a pid alone can be reused after a crash), and a start that
// loses the race for the data dir to another start waits for that node's record and joins it.
import { spawn, type ChildProcess } from 'node:child_process';
import * as readline from 'node:readline';
import { GridClient } from './client';
import { ErrorCodes, GridError, gridError, isErrorCode, toGridError } from './errors';
import { findLocalNode, type LocalNodeRecord } from './local-node';

const LISTENING = /^listening on (ws:\/\/\S+)/;
/** How long a record's node has to answer get-id (it runs on this machine: it answers in milliseconds). */
export const CONFIRM_TIMEOUT_MS = 3_000;
/** How long a start waits for the node to print its listening line (a first start creates its store). */
export const START_TIMEOUT_MS = 60_000;
/** How long a start that lost the data dir to another start waits for that node's record. */
export const JOIN_TIMEOUT_MS = 60_000;
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
 * every 100 ms, and gives up with undefined after `timeoutMs`.
 */
export async function waitForLocalNode(file: string, timeoutMs = JOIN_TIMEOUT_MS): Promise<LocalNodeRecord | undefined> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    // A probe never outlasts the wait it belongs to.
    const r = await confirmedLocalNode(file, Math.max(1, Math.min(CONFIRM_TIMEOUT_MS, deadline - Date.now())));
    if (r !== undefined) return r;
    if (Date.now() >= deadline) return undefined;
    await new Promise((resolve) => setTimeout(resolve, POLL_MS));
  }
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
    if (failure && isErrorCode(failure[1])) lastError = new GridError(failure[1], `the local node did not start: ${failure[2]!}`);
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
 * another start ahead of it (ALREADY_EXISTS: its record is there; DATA_DIR_IN_USE: it holds the data
 * dir and has not written its record yet) waits for that node's record and joins it.
 */
export async function startOrJoinLocalNode(recordFile: string, opts: SpawnLocalNodeOptions & { joinTimeoutMs?: number }): Promise<LocalNodeStart> {
  const running = await confirmedLocalNode(recordFile);
  if (running !== undefined) return { joined: true, url: running.url, record: running };
  try {
    const { child, url } = await spawnLocalNode(opts);
    return { joined: false, url, child };
  } catch (err) {
    const e = toGridError(err);
    if (e.code !== ErrorCodes.ALREADY_EXISTS && e.code !== ErrorCodes.DATA_DIR_IN_USE) throw e;
    const other = await waitForLocalNode(recordFile, opts.joinTimeoutMs ?? JOIN_TIMEOUT_MS);
    if (other === undefined) throw e;
    return { joined: true, url: other.url, record: other };
  }
}
