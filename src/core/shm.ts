// Shared memory for local clients (Triton's system-shared-memory extension is the model): a client on the
// node's machine puts big tensors in a file on tmpfs (/dev/shm), registers it once per connection, and
// then only (region, offset, length) crosses the socket. What client and node must agree on lives here:
// the per-user folder, the region names, the reserved header and the loopback test.
//
// Node.js has no mmap, so both sides read and write the file with positional fs calls: on tmpfs a
// readSync/writeSync of 784 KiB costs about what a memcpy does (bench numbers in docs/protocol.md).

import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

/** Region files are `region-<random>`: nothing else in the folder is ever registered. */
export const REGION_NAME_PATTERN = /^region-[A-Za-z0-9_-]{16,64}$/;

/**
 * The first bytes of a region hold the nonce its client sent in shm-register, which proves to the node
 * that it reads the very file the client wrote (not a same-named file across a tunnel or in a container).
 */
export const REGION_HEADER_BYTES = 64;
export const NONCE_BYTES = 32;

/** Offsets inside a region are kept 64-byte aligned, so tensors decode without a copy. */
export const REGION_ALIGN = 64;

/**
 * The per-user folder of region files: GRID_SHM_DIR, else /dev/shm/grid-workbench-<uid> (tmpfs: never
 * written back to a disk), else <tmpdir>/grid-workbench-shm-<uid>. Undefined where there are no uids (Windows).
 */
export function sharedMemoryDir(env: NodeJS.ProcessEnv = process.env): string | undefined {
  if (env.GRID_SHM_DIR) return path.resolve(env.GRID_SHM_DIR);
  const uid = process.getuid?.();
  if (uid === undefined) return undefined;
  try {
    if (fs.statSync('/dev/shm').isDirectory()) return `/dev/shm/grid-workbench-${uid}`;
  } catch { /* no /dev/shm */ }
  return path.join(os.tmpdir(), `grid-workbench-shm-${uid}`);
}

/**
 * Why `dir` cannot hold this user's regions (undefined when it can): it must be a real directory (not a
 * symlink), owned by this process's user, and closed to everyone else (mode 0700), so no other user can
 * put a file there or read one. Checked by the client before it creates a region and by the node before
 * it opens one.
 */
export function privateDirProblem(dir: string): string | undefined {
  let st: fs.Stats;
  try {
    st = fs.lstatSync(dir);
  } catch (err) {
    return `${dir} cannot be read (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`;
  }
  if (st.isSymbolicLink()) return `${dir} is a symlink`;
  if (!st.isDirectory()) return `${dir} is not a directory`;
  if (st.uid !== process.getuid?.()) return `${dir} belongs to uid ${st.uid}, not to this user`;
  if ((st.mode & 0o077) !== 0) return `${dir} is open to other users (mode ${(st.mode & 0o777).toString(8)}, expected 700)`;
  return undefined;
}

/** True for an address of this machine's loopback interface (how the node sees a local client). */
export function isLoopbackAddress(address: string): boolean {
  const a = address.startsWith('::ffff:') ? address.slice(7) : address;
  return a === '::1' || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(a);
}

/** True when a node URL names this machine (ws://127.0.0.1:…, ws://localhost:…, ws://[::1]:…). */
export function isLocalUrl(url: string): boolean {
  let host: string;
  try {
    host = new URL(url).hostname;
  } catch {
    return false;
  }
  if (host.startsWith('[') && host.endsWith(']')) host = host.slice(1, -1);
  return host === 'localhost' || isLoopbackAddress(host);
}
