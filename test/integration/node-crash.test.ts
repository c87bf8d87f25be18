// The crash suite: kill -9 a real grid-node process (the built dist/grid-node.js) at seeded random points
// of an upload, a hosting, a training job storing its result and a delete, restart it on the same data
// dir, and check what a user would notice: every listed model loads, runs and matches its sha256; an
// operation the node acknowledged survived; nothing half-written is left in uploads/, tmp/, training/
// or the blob dir; the users can still sign in. GRID_CRASH_SEED=<n> replays a run.
//
// Kill points are observed events (N upload acks, a reply, a job event, a file appearing or vanishing
// in the data dir, a number of setImmediate turns), or a seeded delay used only as the kill point itself.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { createInterface } from 'node:readline';
import { GridClient } from '../../src/core/client';
import { GridError } from '../../src/core/errors';
import { DeleteModel, HostModel, type ModelInfo } from '../../src/core/protocol/messages';
import type { Tensor } from '../../src/core/protocol/tensor';
import { GridSocket } from '../../src/core/socket/grid-socket';
import { bufferSource } from '../../src/core/socket/transfer';
import { mlp } from '../../src/compute/plan';
import { ADMIN_PASSWORD, mlpModel, tempDir } from '../helpers/node-fixtures';
import { startNodeScript, type Started } from '../helpers/processes';
import { EmbeddedStore } from '../../src/node/store/db';
import { lockDataDir } from '../../src/node/store/lock';
import { DIGITS } from '../helpers/training-fixtures';

const NODE_MAIN = path.join(__dirname, '../../dist/grid-node.js');
const IRIS = path.join(path.dirname(DIGITS), 'iris.csv');
const ADMIN = { username: 'admin', password: ADMIN_PASSWORD };
const BOB = { username: 'bob', password: 'bob-long-enough-password' };
const DEADLINE_MS = 20_000;

/** mulberry32: small, seedable, good enough to pick kill points. */
function prng(seed: number): { next(): number; int(lo: number, hi: number): number; pick<T>(xs: readonly T[]): T } {
  let s = seed >>> 0;
  const next = () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 0x100000000;
  };
  const int = (lo: number, hi: number) => lo + Math.floor(next() * (hi - lo + 1));
  return { next, int, pick: (xs) => xs[int(0, xs.length - 1)]! };
}

const turns = async (n: number) => { for (let i = 0; i < n; i++) await new Promise<void>((r) => setImmediate(r)); };
const delay = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Resolves when `cond` holds after a change in `dir` (checked once up front); rejects at the deadline. */
function whenInDir(dir: string, cond: () => boolean, what: string): { done: Promise<void>; close(): void } {
  fs.mkdirSync(dir, { recursive: true });
  let watcher: fs.FSWatcher | undefined;
  let timer: NodeJS.Timeout | undefined;
  const close = () => { watcher?.close(); clearTimeout(timer); };
  const done = new Promise<void>((resolve, reject) => {
    const check = () => { if (cond()) { close(); resolve(); } };
    watcher = fs.watch(dir, check);
    timer = setTimeout(() => { close(); reject(new Error(`${what} did not happen within ${DEADLINE_MS} ms`)); }, DEADLINE_MS);
    check();
  });
  return { done, close };
}

function filesIn(dir: string): string[] {
  if (!fs.existsSync(dir)) return [];
  return fs.readdirSync(dir, { recursive: true }).map(String).filter((f) => fs.statSync(path.join(dir, f)).isFile()).sort();
}

function blobPath(dir: string, sha256: string): string {
  return path.join(dir, 'blobs', sha256.slice(0, 2), sha256);
}

/** A float32 input for every model input, symbolic dims as 1. */
function feedsFor(info: ModelInfo): Record<string, Tensor> {
  const feeds: Record<string, Tensor> = {};
  for (const input of info.signature.inputs) {
    const dims = input.dims.map((d) => (typeof d === 'number' && d > 0 ? d : 1));
    feeds[input.name] = { dtype: 'float32', dims, data: new Float32Array(dims.reduce((a, b) => a * b, 1)).fill(0.25) };
  }
  return feeds;
}

type Kind = 'upload' | 'host' | 'train' | 'delete';
const TRAIN_VARIANTS = ['result-file', 'db-write-1', 'db-write-2', 'last-epoch', 'succeeded'] as const;

interface Expectations {
  /** Models the node acknowledged (host-model reply, training job succeeded): they must survive. */
  present: Set<string>;
  /** Models whose delete the node acknowledged: they must stay gone. */
  absent: Set<string>;
  /** Trained models: their training record must be there with them. */
  trained: Set<string>;
}

test('kill -9 at random points of upload, hosting, training-result storage and delete never leaves a half-visible model, an orphan file or a lost user', { timeout: 240_000 }, async (t) => {
  assert.ok(fs.existsSync(NODE_MAIN), `${NODE_MAIN} is missing: run \`node scripts/build.mjs\` first (npm test does)`);
  const seed = process.env.GRID_CRASH_SEED !== undefined ? Number(process.env.GRID_CRASH_SEED) >>> 0 : Math.floor(Math.random() * 0x100000000);
  const rnd = prng(seed);
  t.diagnostic(`crash suite seed ${seed} (GRID_CRASH_SEED=${seed} replays it)`);
  const dir = tempDir('grid-crash-');
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));

  const args = ['--port', '0', '--data-dir', dir, '--log-level', 'warn', '--dataset', `iris=${IRIS}`];
  const env = { ...process.env, GRID_ADMIN_PASSWORD: ADMIN_PASSWORD };
  let node: Started = await startNodeScript(NODE_MAIN, args, env);
  t.after(() => node.kill('SIGKILL'));
  const violations: string[] = [];
  /** A violation is reported at the cycle that caused it, not again at every later check. */
  const reported = new Set<string>();
  const expect: Expectations = { present: new Set(), absent: new Set(), trained: new Set() };
  const log: string[] = [];

  {
    const admin = await GridClient.connect(node.url, { reconnect: { maxAttempts: 0 }, credentials: ADMIN });
    await admin.addUser(BOB.username, BOB.password);
    await admin.hostModel(mlp([4, 8, 3], { seed: 1 }), { id: 'parent', allowRemoteInference: true });
    expect.present.add('parent');
    admin.dispose();
  }

  /** After a restart: what a user would notice, plus the data dir holding nothing unreferenced. */
  const checkInvariants = async (cycle: string): Promise<void> => {
    const fail = (what: string) => {
      if (reported.has(what)) return;
      reported.add(what);
      violations.push(`${cycle}: ${what}`);
    };
    const admin = await GridClient.connect(node.url, { reconnect: { maxAttempts: 0 }, credentials: ADMIN });
    try {
      const bob = await GridClient.connect(node.url, { reconnect: { maxAttempts: 0 }, credentials: BOB }).catch((e: unknown) => e as Error);
      if (bob instanceof Error) fail(`bob cannot sign in: ${bob.message}`); else bob.dispose();
      // A restart runs the jobs it found queued or running again (jobs are rows): what they leave behind is
      // checked once they end, not while one is between writing its model's blob and committing its row.
      for (const j of await admin.training.listJobs()) if (j.state === 'queued' || j.state === 'running') await admin.training.wait(j.id).catch(() => undefined);
      const models = await admin.listModels();
      const ids = new Set(models.map((m) => m.id));
      for (const id of expect.present) if (!ids.has(id)) fail(`model "${id}" was acknowledged but is gone`);
      for (const id of expect.absent) if (ids.has(id)) fail(`model "${id}" was deleted (acknowledged) but is listed again`);
      for (const m of models) {
        const file = blobPath(dir, m.sha256);
        if (!fs.existsSync(file)) { fail(`model "${m.id}" is listed but its blob is missing`); continue; }
        const bytes = fs.readFileSync(file);
        if (bytes.length !== m.size) fail(`model "${m.id}": blob holds ${bytes.length} bytes, listed as ${m.size}`);
        if (createHash('sha256').update(bytes).digest('hex') !== m.sha256) fail(`model "${m.id}": blob sha256 differs from the listed one`);
        const info = await admin.modelInfo(m.id).catch((e: GridError) => e);
        if (info instanceof Error) { fail(`model "${m.id}" is listed but model-info fails: ${info.message}`); continue; }
        if (m.allow_remote_inference) {
          const out = await admin.runInference(m.id, feedsFor(m)).catch((e: GridError) => e);
          if (out instanceof Error) fail(`model "${m.id}" is listed but does not run: ${out.code} ${out.message}`);
        }
        if (expect.trained.has(m.id)) {
          const record = await admin.training.modelTraining(m.id).catch((e: GridError) => e);
          if (record instanceof Error) fail(`trained model "${m.id}" has no training record: ${record.message}`);
        }
      }
      const blobs = filesIn(path.join(dir, 'blobs')).map((f) => path.basename(f));
      const wanted = new Set(models.map((m) => m.sha256));
      for (const b of blobs) if (!wanted.has(b)) fail(`orphan blob ${b.slice(0, 12)}… (no listed model has it)`);
      for (const sub of ['uploads', 'tmp', 'training']) {
        const left = filesIn(path.join(dir, sub));
        if (left.length > 0) fail(`${sub}/ still holds ${left.join(', ')} after the start-up sweep`);
      }
    } finally {
      admin.dispose();
    }
  };

  const restart = async () => {
    await node.kill('SIGKILL');
    node = await startNodeScript(NODE_MAIN, args, env);
  };

  /** A socket signed in as admin that does not reconnect: the kill ends it. */
  const adminSocket = async () => {
    const s = new GridSocket();
    await s.connect(node.url, { heartbeatMs: 0 }, { maxAttempts: 0 });
    await s.authenticate(ADMIN);
    return s;
  };

  const scenarios: Record<Kind, (n: number) => Promise<string>> = {
    // Killed while chunks are arriving: after N acknowledgements, or some turns after the first one.
    async upload(n) {
      const bytes = mlpModel(784, 1280, 10, 100 + n); // ~4 MB: four 1 MiB acks
      const s = await adminSocket();
      const afterAcks = rnd.int(1, 3);
      const extraTurns = rnd.next() < 0.5 ? rnd.int(0, 50) : 0;
      let acks = 0;
      let killing: Promise<void> | undefined;
      const up = s.upload(bufferSource(bytes), { onProgress: () => {
        if (++acks === afterAcks) killing = turns(extraTurns).then(() => node.kill('SIGKILL'));
      } }).then(() => 'committed', (e: GridError) => e.code);
      const outcome = await up;
      await killing;
      s.dispose();
      if (outcome === 'committed') await node.kill('SIGKILL'); // all acks came first: killed after the commit instead
      return `after ${afterAcks} acks + ${extraTurns} turns (upload ${outcome})`;
    },

    // The upload is committed; killed while host-model validates, moves and records the model.
    async host(n) {
      const hidden = rnd.pick([16, 256, 1600]); // 1600: > 4 MiB, checked on the model thread
      const bytes = mlpModel(64, hidden, 10, 200 + n);
      const id = `hosted-${n}`;
      const s = await adminSocket();
      const up = await s.upload(bufferSource(bytes));
      const variant = rnd.pick(['turns', 'delay', 'blob-moved', 'reply'] as const);
      const partFile = filesIn(path.join(dir, 'uploads'))[0];
      const moved = partFile !== undefined ? whenInDir(path.join(dir, 'uploads'), () => !fs.existsSync(path.join(dir, 'uploads', partFile)), 'the upload moving into the blob store') : undefined;
      moved?.done.catch(() => {});
      const reply = s.request(HostModel, { model_id: id, transfer_id: up.transfer_id, allow_remote_inference: true }, { timeout: DEADLINE_MS });
      const replied = reply.then(() => true, () => false);
      let point: string;
      if (variant === 'turns') { const k = rnd.int(0, 300); await turns(k); point = `${k} turns after host-model`; }
      else if (variant === 'delay') { const ms = rnd.int(0, hidden > 1000 ? 150 : 30); await delay(ms); point = `${ms} ms after host-model`; }
      else if (variant === 'blob-moved' && moved) { await Promise.race([moved.done, replied]); point = 'when the upload left uploads/ (blob renamed, row not yet)'; }
      else { await replied; point = 'on the host-model reply'; }
      await node.kill('SIGKILL');
      moved?.close();
      if (await replied) expect.present.add(id);
      s.dispose();
      return `${point}, ${bytes.length} B model (${(await replied) ? 'acknowledged' : 'not acknowledged'})`;
    },

    // A training job on iris finishing and storing its model: killed when its result file appears (written,
    // not yet hosted), on the Nth write to the metadata db or its log after that file moved into blobs/
    // (N = 1 or 2: in the middle of committing the model's row, or just after it), a seeded delay after
    // its last epoch event, or on its 'succeeded' event. Each run has each of these once.
    async train(n) {
      const variant = TRAIN_VARIANTS[(trainRotation + n) % TRAIN_VARIANTS.length]!;
      const id = `trained-${n}`;
      const client = await GridClient.connect(node.url, { reconnect: { maxAttempts: 0 }, connect: { heartbeatMs: 0 }, credentials: ADMIN });
      const epochs = rnd.int(2, 4);
      const trainingDir = path.join(dir, 'training');
      const resultFile = whenInDir(trainingDir, () => filesIn(trainingDir).length > 0, 'the training result file appearing');
      resultFile.done.catch(() => {});
      let succeeded = false;
      let point = '';
      const watchers: fs.FSWatcher[] = [];
      const job = await client.training.start({
        model: 'parent', dataset_id: 'iris', feature_scale: 0.25, loss: 'cross_entropy', optimizer: 'adam', lr: 0.02,
        epochs, batch_size: 16, seed: n, output_model_id: id, allow_remote_inference: true,
      });
      const killed = new Promise<void>((resolve) => {
        const kill = (why: string) => { if (point === '') { point = why; void node.kill('SIGKILL').then(resolve); } };
        if (variant === 'result-file') void resultFile.done.then(() => kill('when training/<job>.onnx appeared'), () => {});
        if (variant === 'db-write-1' || variant === 'db-write-2') {
          let moved = false;
          let dbWrites = 0;
          void resultFile.done.then(() => {
            const onTraining = () => { if (filesIn(trainingDir).length === 0) moved = true; };
            watchers.push(fs.watch(trainingDir, onTraining));
            onTraining();
          }, () => {});
          const nth = variant === 'db-write-1' ? 1 : 2;
          watchers.push(fs.watch(dir, (_event, file) => {
            if (moved && file !== null && file.startsWith('meta.db') && !file.endsWith('.lock') && ++dbWrites === nth) {
              kill(`on write ${nth} to ${file} after the result moved into blobs/`);
            }
          }));
        }
        void client.training.wait(job.id, { onEvent: (ev) => {
          if (variant === 'last-epoch' && ev.kind === 'epoch' && ev.epoch === epochs) {
            const ms = rnd.int(0, 15);
            void delay(ms).then(() => kill(`${ms} ms after the last epoch event`));
          }
          if (ev.kind === 'state' && ev.state === 'succeeded') {
            succeeded = true;
            kill('on the job\'s succeeded event');
          }
        } }).catch((e: GridError) => {
          // After the kill the watch drops; before it, a failed job is a failure of its own.
          if (point === '') violations.push(`train cycle ${n + 1}: the job failed before its kill point: ${e.code} ${e.message}`);
        }).finally(() => kill('when the job ended before its kill point'));
      });
      await killed;
      resultFile.close();
      for (const w of watchers) w.close();
      client.dispose();
      expect.trained.add(id);
      if (succeeded) expect.present.add(id);
      return `${point} (${epochs} epochs, ${succeeded ? 'succeeded seen' : 'not seen to succeed'})`;
    },

    // A fresh model deleted: killed some turns or a delay after delete-model, when its blob goes, or on the reply.
    async delete(n) {
      const id = `doomed-${n}`;
      const bytes = mlpModel(32, 64, 4, 300 + n);
      const s = await adminSocket();
      const up = await s.upload(bufferSource(bytes));
      const { model } = await s.request(HostModel, { model_id: id, transfer_id: up.transfer_id, allow_remote_inference: true });
      const variant = rnd.pick(['turns', 'delay', 'blob-removed', 'reply'] as const);
      const blobGone = whenInDir(path.dirname(blobPath(dir, model.sha256)), () => !fs.existsSync(blobPath(dir, model.sha256)), 'the blob being removed');
      blobGone.done.catch(() => {});
      const replied = s.request(DeleteModel, { model_id: id }, { timeout: DEADLINE_MS }).then(() => true, () => false);
      let point: string;
      if (variant === 'turns') { const k = rnd.int(0, 100); await turns(k); point = `${k} turns after delete-model`; }
      else if (variant === 'delay') { const ms = rnd.int(0, 10); await delay(ms); point = `${ms} ms after delete-model`; }
      else if (variant === 'blob-removed') { await Promise.race([blobGone.done, replied]); point = 'when its blob went'; }
      else { await replied; point = 'on the delete-model reply'; }
      await node.kill('SIGKILL');
      blobGone.close();
      if (await replied) expect.absent.add(id);
      s.dispose();
      return `${point} (${(await replied) ? 'acknowledged' : 'not acknowledged'})`;
    },
  };

  // Three cycles of each kind (of training, one per kill point) in a seeded order; kill points drawn from the seed.
  const order: Kind[] = (['upload', 'host', 'train', 'delete'] as const).flatMap((k) => (k === 'train' ? TRAIN_VARIANTS.map(() => k) : [k, k, k]));
  for (let i = order.length - 1; i > 0; i--) { const j = rnd.int(0, i); [order[i], order[j]] = [order[j]!, order[i]!]; }
  const trainRotation = rnd.int(0, TRAIN_VARIANTS.length - 1);
  const seen: Record<Kind, number> = { upload: 0, host: 0, train: 0, delete: 0 };
  const started = performance.now();
  for (const [i, kind] of order.entries()) {
    const what = await scenarios[kind](seen[kind]++);
    log.push(`${i + 1}. ${kind}: killed ${what}`);
    await restart();
    await checkInvariants(`cycle ${i + 1} (${kind}, killed ${what})`);
  }
  for (const line of log) t.diagnostic(line);
  t.diagnostic(`crash suite: seed ${seed}, ${order.length} kill -9/restart cycles in ${((performance.now() - started) / 1000).toFixed(1)} s, ${violations.length} invariant violations`);
  assert.deepEqual(violations, [], `invariant violations (GRID_CRASH_SEED=${seed} replays this run)`);
});

// The node's metadata db on its own, killed while a commit is being written: each kill lands on a write
// to the database or its log, seen through the file system, so it falls between the page writes of a
// commit, which a random time rarely does. Reopened, the db must be intact and hold whole transactions.
test('the metadata db killed -9 in the middle of writing a commit reopens intact, holding only whole transactions', { timeout: 120_000 }, async (t) => {
  const seed = process.env.GRID_CRASH_SEED !== undefined ? Number(process.env.GRID_CRASH_SEED) >>> 0 : Math.floor(Math.random() * 0x100000000);
  const rnd = prng(seed);
  const dir = tempDir('grid-crash-db-');
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const file = path.join(dir, 'meta.db');
  const ROWS = 200; // rows per transaction: a commit writes dozens of pages
  // The real EmbeddedStore in a child process, committing batches and saying so after each.
  const writer = `
    const { EmbeddedStore } = require(${JSON.stringify(path.join(__dirname, '../../src/node/store/db.ts'))});
    const db = new EmbeddedStore(${JSON.stringify(file)});
    (async () => {
      await db.run('CREATE TABLE IF NOT EXISTS crash_rows (k TEXT PRIMARY KEY, v TEXT NOT NULL)');
      await db.run('CREATE INDEX IF NOT EXISTS crash_rows_v ON crash_rows (v)');
      for (let n = 1; ; n++) {
        await db.transaction(async () => { for (let i = 0; i < ${ROWS}; i++) await db.run('INSERT INTO crash_rows VALUES (?, ?)', [n + '-' + i + '-' + Math.random(), 'v'.repeat(900) + Math.random()]); });
        process.stdout.write('committed ' + n + '\\n');
      }
    })();`;
  const rounds = 6;
  const offset = rnd.int(0, 1);
  const problems: string[] = [];
  for (let round = 0; round < rounds; round++) {
    const child = spawn(process.execPath, ['--import', 'tsx', '-e', writer], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    child.stderr.setEncoding('utf8').on('data', (d: string) => { stderr += d; });
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    const after = rnd.int(1, 4);
    // Alternately on a write to the database file itself (a commit, or a checkpoint) and to its log.
    const targets = (round + offset) % 2 === 0 ? ['meta.db'] : ['meta.db-wal', 'meta.db-journal'];
    let armed = false;
    const watcher = fs.watch(dir, (_event, name) => {
      if (armed && name !== null && targets.includes(name)) { watcher.close(); child.kill('SIGKILL'); }
    });
    createInterface({ input: child.stdout }).on('line', (line) => { if (Number(line.split(' ')[1]) >= after) armed = true; });
    const deadline = setTimeout(() => child.kill('SIGKILL'), DEADLINE_MS);
    await exited;
    clearTimeout(deadline);
    watcher.close();
    assert.ok(armed, `the writer ended before committing ${after} batches: ${stderr}`);
    // Reopened as the node does: take the dir, clear the dead writer's sqlite lock, open.
    const lock = lockDataDir(dir, [EmbeddedStore.lockDirOf(file)]);
    let db: EmbeddedStore | undefined;
    try {
      db = new EmbeddedStore(file);
      try {
        const check = (await db.all('PRAGMA integrity_check')).map((r) => String(r.integrity_check)).join('; ');
        const rows = Number((await db.get('SELECT count(*) AS n FROM crash_rows'))!.n);
        const indexed = Number((await db.get("SELECT count(*) AS n FROM crash_rows INDEXED BY crash_rows_v WHERE v > ''"))!.n);
        if (check !== 'ok' || rows % ROWS !== 0 || indexed !== rows) problems.push(`round ${round + 1} (killed on a write to ${targets[0]}): integrity ${check.slice(0, 120)}, ${rows} rows, ${indexed} in the index`);
      } finally {
        await db.close();
      }
    } catch (err) {
      problems.push(`round ${round + 1} (killed on a write to ${targets[0]}): ${(err as Error).message}`);
    } finally {
      lock.release();
    }
  }
  t.diagnostic(`metadata db: seed ${seed}, ${rounds} kill -9 mid-commit rounds, ${problems.length} damaged`);
  assert.deepEqual(problems, [], `the db was damaged by a kill (GRID_CRASH_SEED=${seed} replays the kill points)`);
});
