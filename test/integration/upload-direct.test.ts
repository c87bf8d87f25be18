// The node's upload store writes whole blocks with O_DIRECT (src/node/rpc/upload-file.ts) from pools of
// aligned buffers, one pool per chunk size and a few sizes at once. A size no upload uses any more gives its
// place up: uploads in odd chunk sizes must not leave the default size writing through the page cache.
// Observed as the kernel sees it: the flags of the node's open file descriptors (Linux only).

import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { closeSync, constants, mkdtempSync, openSync, readdirSync, readFileSync, readlinkSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { UploadStore } from '../../src/node/rpc/uploads';

const O_DIRECT = 0o40000; // x86-64 and arm64 Linux

/**
 * Why `dir`'s filesystem takes no O_DIRECT open, or undefined when it takes one. Asked of the kernel with a
 * plain open, not through the store: a store that stopped writing direct must fail the test, not skip it.
 */
function noDirectIo(dir: string): string | undefined {
  const flag = (constants as { O_DIRECT?: number }).O_DIRECT;
  if (flag === undefined) return 'this system has no O_DIRECT';
  const probe = join(dir, '.o-direct-probe');
  try {
    closeSync(openSync(probe, constants.O_WRONLY | constants.O_CREAT | flag, 0o600));
    return undefined;
  } catch (err) {
    return `the filesystem of ${dir} takes no O_DIRECT (${(err as NodeJS.ErrnoException).code ?? String(err)})`;
  } finally {
    rmSync(probe, { force: true });
  }
}

/** Whether this process holds `path` open with O_DIRECT, from /proc/self/fdinfo. */
function openDirect(path: string): boolean {
  for (const fd of readdirSync('/proc/self/fd')) {
    let target: string;
    try { target = readlinkSync(`/proc/self/fd/${fd}`); } catch { continue; }
    if (target !== path) continue;
    const flags = /flags:\s+(\d+)/.exec(readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8'));
    if (flags && (parseInt(flags[1]!, 8) & O_DIRECT) !== 0) return true;
  }
  return false;
}

/** Uploads `size` bytes in `chunkSize` chunks; returns the store's path of the upload while it is open. */
async function upload(store: UploadStore, size: number, chunkSize: number, check?: (path: string) => void): Promise<void> {
  const { transfer_id: id } = await store.begin(undefined, size, chunkSize);
  const h = createHash('sha256');
  for (let i = 0; i * chunkSize < size; i++) {
    const body = Buffer.alloc(Math.min(chunkSize, size - i * chunkSize), i + 1);
    h.update(body);
    await new Promise<void>((resolve) => {
      store.chunk(id, i, body, () => resolve(), chunkSize);
      // Acknowledged on every chunk (ackBytes = chunkSize); the last one may be acknowledged with the rest.
    });
    if (i === 0 && check) check(join(store.dir, `${id}.part`));
  }
  const done = await store.commit(id, h.digest('hex'));
  rmSync(store.take(id).path, { force: true });
  assert.equal(done.size, size);
}

const dir = mkdtempSync(join(tmpdir(), 'grid-upload-direct-'));
after(() => rmSync(dir, { recursive: true, force: true }));

test('1 MiB chunks are written straight to disk (O_DIRECT), and still are after uploads in four other chunk sizes', { skip: process.platform !== 'linux' }, async (t) => {
  const skip = noDirectIo(dir);
  if (skip !== undefined) return t.skip(skip);
  // A store of its own first, so the next one starts with no pools.
  const first = new UploadStore({ dir: join(dir, 'first') });
  let direct = false;
  try {
    await upload(first, 2 * 1024 * 1024, 1024 * 1024, (p) => { direct = openDirect(p); });
  } finally {
    await first.close();
  }
  assert.ok(direct, `a 1 MiB-chunk upload is written with O_DIRECT (a plain open with O_DIRECT works in ${dir})`);
  const store = new UploadStore({ dir: join(dir, 'uploads') });
  try {
    for (const kib of [8, 12, 16, 20]) await upload(store, 64 * 1024, kib * 1024);
    let directAfter = false;
    await upload(store, 2 * 1024 * 1024, 1024 * 1024, (p) => { directAfter = openDirect(p); });
    assert.ok(directAfter, 'the 1 MiB-chunk upload is written with O_DIRECT after four other sizes were used');
  } finally {
    await store.close();
  }
});
