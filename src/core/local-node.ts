// The local node: one grid node per user and machine, on the per-user data dir. The node started with
// `grid-node --local` writes a runtime record (its URL, pid, id, and a sign-in token) into a per-user
// runtime dir, readable by this OS user only — the way Jupyter's runtime files and a Unix socket's
// permissions work: whoever can read the file is the same user, and is signed in as the node's admin.
// The start script, the extension, the notebook kernel and the CLI find the node through this file.

import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

export interface LocalNodeRecord {
  url: string;
  pid: number;
  node_id: string;
  name: string;
  data_dir: string;
  /** A session token of the node's admin; valid while this node process runs. */
  token: string;
  user: string;
  /** ISO 8601. */
  started: string;
}

const RECORD_FILE = 'local-node.json';

/** The per-user data folder: GRID_DATA_DIR, $XDG_DATA_HOME/grid-workbench/node, ~/.local/share/… otherwise (%LOCALAPPDATA% on Windows). */
export function defaultDataDir(env: NodeJS.ProcessEnv = process.env): string {
  if (env.GRID_DATA_DIR) return path.resolve(env.GRID_DATA_DIR);
  if (env.XDG_DATA_HOME) return path.join(env.XDG_DATA_HOME, 'grid-workbench', 'node');
  if (process.platform === 'win32' && env.LOCALAPPDATA) return path.join(env.LOCALAPPDATA, 'grid-workbench', 'node');
  return path.join(os.homedir(), '.local', 'share', 'grid-workbench', 'node');
}

/** GRID_RUNTIME_DIR, else $XDG_RUNTIME_DIR/grid-workbench, else `runtime` next to the default data dir (as Jupyter does). */
export function runtimeDir(env: NodeJS.ProcessEnv = process.env): string {
  if (env.GRID_RUNTIME_DIR) return path.resolve(env.GRID_RUNTIME_DIR);
  if (env.XDG_RUNTIME_DIR) return path.join(env.XDG_RUNTIME_DIR, 'grid-workbench');
  return path.join(path.dirname(defaultDataDir({ ...env, GRID_DATA_DIR: '' })), 'runtime');
}

export function localNodeFile(env: NodeJS.ProcessEnv = process.env): string {
  return path.join(runtimeDir(env), RECORD_FILE);
}

/** Whether a process with this pid runs (one of another user's counts too). */
export function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * The running local node, or undefined when none runs (no record, a record of a process that is gone,
 * or a file that is not ours to trust: readable by others, or damaged).
 */
export function findLocalNode(file: string = localNodeFile()): LocalNodeRecord | undefined {
  let text: string;
  try {
    if (process.platform !== 'win32') {
      const st = fs.statSync(file);
      // A record others can read would hand them the admin token; one they can write could point us elsewhere.
      if ((st.mode & 0o077) !== 0 || (typeof process.getuid === 'function' && st.uid !== process.getuid())) return undefined;
    }
    text = fs.readFileSync(file, 'utf8');
  } catch {
    return undefined;
  }
  try {
    const r = JSON.parse(text) as Partial<LocalNodeRecord>;
    if (typeof r.url !== 'string' || typeof r.pid !== 'number' || typeof r.token !== 'string' || typeof r.node_id !== 'string') return undefined;
    if (!processAlive(r.pid)) return undefined;
    return {
      url: r.url, pid: r.pid, node_id: r.node_id, token: r.token,
      name: typeof r.name === 'string' ? r.name : 'local', data_dir: typeof r.data_dir === 'string' ? r.data_dir : '',
      user: typeof r.user === 'string' ? r.user : 'admin', started: typeof r.started === 'string' ? r.started : '',
    };
  } catch {
    return undefined;
  }
}

/** Writes the record atomically (a reader never sees half of it), mode 0600 in a 0700 folder. */
export function writeLocalNodeRecord(file: string, record: LocalNodeRecord): void {
  const dir = path.dirname(file);
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  if (process.platform !== 'win32') fs.chmodSync(dir, 0o700);
  const tmp = `${file}.${process.pid}.tmp`;
  fs.writeFileSync(tmp, `${JSON.stringify(record, null, 2)}\n`, { mode: 0o600 });
  if (process.platform !== 'win32') fs.chmodSync(tmp, 0o600);
  fs.renameSync(tmp, file);
}

/** Removes the record if it still names process `pid` (a newer local node may have replaced it). */
export function removeLocalNodeRecord(file: string, pid: number): void {
  try {
    const r = JSON.parse(fs.readFileSync(file, 'utf8')) as { pid?: unknown };
    if (r.pid === pid) fs.rmSync(file, { force: true });
  } catch { /* nothing recorded */ }
}

/** Whether two node URLs name the same endpoint (localhost and 127.0.0.1 differ on purpose: they may resolve differently). */
export function sameUrl(a: string, b: string): boolean {
  try {
    const x = new URL(a), y = new URL(b);
    return x.protocol === y.protocol && x.hostname === y.hostname && x.port === y.port && x.pathname.replace(/\/$/, '') === y.pathname.replace(/\/$/, '');
  } catch {
    return a === b;
  }
}
