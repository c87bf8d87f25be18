// One node process per data dir. node-sqlite3-wasm locks with a `<db>.lock` directory (no OS locks),
// so two processes on one dir would see SQLITE_BUSY, and a kill -9 mid-transaction leaves that
// directory behind forever. We own the dir through `node.pid`; a stale pid means the previous owner
// died, and only then is its leftover sqlite lock directory safe to remove.

import * as fs from 'node:fs';
import * as path from 'node:path';
import { gridError } from '../../core/errors';

function alive(pid: number): boolean {
  try { process.kill(pid, 0); return true; } catch (err) { return (err as NodeJS.ErrnoException).code === 'EPERM'; }
}

export interface DataDirLock { readonly pidFile: string; release(): void }

/** Dirs held by this process: a pid file naming our own pid is not stale if we still hold it. */
const held = new Set<string>();

/** Takes the data dir for this process; throws GRID_ERR_DATA_DIR_IN_USE when a live process holds it. */
export function lockDataDir(dir: string, staleSqliteLocks: readonly string[]): DataDirLock {
  fs.mkdirSync(dir, { recursive: true });
  const pidFile = path.join(dir, 'node.pid');
  const key = fs.realpathSync(dir);
  if (held.has(key)) throw gridError('DATA_DIR_IN_USE', `data dir ${dir} is used by another grid node in this process; close it first or pass another data dir`, { pid: process.pid, dir });
  for (let attempt = 0; ; attempt++) {
    try {
      fs.writeFileSync(pidFile, String(process.pid), { flag: 'wx' });
      break;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST' || attempt > 2) throw err;
      const owner = Number(fs.readFileSync(pidFile, 'utf8').trim());
      if (Number.isInteger(owner) && owner > 0 && owner !== process.pid && alive(owner)) {
        throw gridError('DATA_DIR_IN_USE', `data dir ${dir} is used by another grid node (pid ${owner}); stop it or pass another --data-dir`, { pid: owner, dir });
      }
      fs.rmSync(pidFile, { force: true });
    }
  }
  // We hold the dir now: any sqlite lock directory left is from a dead process.
  for (const l of staleSqliteLocks) fs.rmSync(l, { recursive: true, force: true });
  held.add(key);
  let released = false;
  return {
    pidFile,
    release() {
      if (released) return;
      released = true;
      held.delete(key);
      try {
        if (fs.readFileSync(pidFile, 'utf8').trim() === String(process.pid)) fs.rmSync(pidFile, { force: true });
      } catch { /* already gone */ }
    },
  };
}
