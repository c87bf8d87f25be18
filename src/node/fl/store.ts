// The FL tables (migration 3 in store/migrations.ts): processes with their plans and protocols, cycles, workers,
// assignments (PyGrid's WorkerCycle: one request key per worker per cycle) and checkpoints, whose bytes
// are content-addressed blobs under <data>/fl.
//
// An open cycle's reports are durable as running sums, not as their diffs. Each replica (each process:
// a new name every start) keeps its own partial sum of the cycle's reports it accepted: each group commit
// writes the float64 sum (one model's worth, whatever the number of reports in the batch) to the one of
// its two files `<blobs>/fl-sums/<cycle>.<replica>.<slot>` that its committed row in fl_partials does not
// name, syncs it, and commits the report rows with that row naming the file. A kill at any point leaves
// the committed row naming a complete file that holds exactly that replica's committed reports; the
// files are in the shared blob dir, so the replica that closes the cycle (under the cycle's row lock,
// lockCycle) reads every replica's partial, a dead one's too. Rows with a diff (written before this
// scheme) still count: a start adds them to its partial, or the close adds them.

import { randomUUID } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { gridError } from '../../core/errors';
import { BlobStore } from '../store/blobs';
import { BlobPins } from '../store/shared-sweep';
import type { Row, Store } from '../store/sql';
import type { ClientConfig, ServerConfig } from './config';
import type { ModelFormat, ParamSpec } from './params';

export interface FlProcess {
  id: number;
  name: string;
  version: string;
  owner: string;
  format: ModelFormat;
  params: ParamSpec[];
  clientConfig: ClientConfig;
  serverConfig: ServerConfig;
  created: string;
  /** A hosted model (its id) whose next versions the checkpoints become, with lineage. */
  linkedModel: string | undefined;
}

export interface FlCycle {
  id: number;
  processId: number;
  sequence: number;
  startMs: number;
  endMs: number | undefined;
  completedMs: number | undefined;
  /** When a replica began closing it (closeCycle's first step); reports are refused from then on. */
  closingMs: number | undefined;
}

export interface FlAssignment {
  cycleId: number;
  workerId: string;
  requestKey: string;
  assignedMs: number;
  reportedMs: number | undefined;
  weight: number | undefined;
}

export interface FlCheckpoint { processId: number; number: number; alias: string; sha256: string; cycle: number | undefined; reports: number; created: string; modelVersion: string | undefined }

/** What markClosing found: the cycle completed, now marked closing by this replica, or by another since `sinceMs`. */
export type CloseMark = { state: 'closed' } | { state: 'mine'; taken: boolean } | { state: 'busy'; sinceMs: number; closer: string };

/** The committed running sum of an open cycle: which of its two files holds it, and what it covers. */
export interface FlSumRecord { slot: 0 | 1; reports: number; weight: number }

export interface FlAsset { id: number; kind: 'plan' | 'protocol' | 'averaging'; name: string; variant: string; bytes: Uint8Array }

const openFd = promisify(fs.open);
const writeFd = promisify((fd: number, b: Uint8Array, off: number, len: number, pos: number, cb: (err: NodeJS.ErrnoException | null, n: number) => void) => fs.write(fd, b, off, len, pos, cb));
const fdatasyncFd = promisify(fs.fdatasync);
const fsyncFd = promisify(fs.fsync);

/** The first key of a cycle's advisory lock (the second is its id). */
const CYCLE_LOCK = 0x666c;

const num = (v: Row[string]) => Number(v);
const optNum = (v: Row[string]) => (v === null || v === undefined ? undefined : Number(v));

function toProcess(r: Row): FlProcess {
  return {
    id: num(r.id), name: String(r.name), version: String(r.version), owner: String(r.owner),
    format: String(r.model_format) as ModelFormat, params: JSON.parse(String(r.shapes)) as ParamSpec[],
    clientConfig: JSON.parse(String(r.client_config)) as ClientConfig, serverConfig: JSON.parse(String(r.server_config)) as ServerConfig,
    created: String(r.created), linkedModel: r.linked_model === null || r.linked_model === undefined ? undefined : String(r.linked_model),
  };
}

function toCycle(r: Row): FlCycle {
  return { id: num(r.id), processId: num(r.process_id), sequence: num(r.sequence), startMs: num(r.start_ms), endMs: optNum(r.end_ms), completedMs: optNum(r.completed_ms), closingMs: optNum(r.closing_ms) };
}

function toAssignment(r: Row): FlAssignment {
  return {
    cycleId: num(r.cycle_id), workerId: String(r.worker_id), requestKey: String(r.request_key), assignedMs: num(r.assigned_ms),
    reportedMs: optNum(r.reported_ms), weight: optNum(r.weight),
  };
}

function toCheckpoint(r: Row): FlCheckpoint {
  return { processId: num(r.process_id), number: num(r.number), alias: String(r.alias), sha256: String(r.sha256), cycle: optNum(r.cycle), reports: num(r.reports), created: String(r.created), modelVersion: r.model_version === null || r.model_version === undefined ? undefined : String(r.model_version) };
}

export class FlStore {
  readonly db: Store;
  readonly blobs: BlobStore;

  /** This replica's name in the partial sums it stores (a new one every start: a sum is never written by two processes). */
  readonly replica: string;
  private readonly sumsDir: string;
  /** Where a node from before the shared sums kept its running sums (`<data-dir>/fl-sums`): moved at start (sweepSums). */
  private readonly localSumsDir: string;
  /** This replica's sum files that writeSum keeps open, by path. */
  private readonly sumFds = new Map<string, number>();

  /**
   * `dataDir`: where the checkpoint blobs and the running sums go (the shared blob dir of replicas), so
   * the replica that closes a cycle reads the partial sums of all, a dead one's too. `localDir`: this
   * replica's own data dir, for its temp files (default `dataDir`).
   */
  constructor(db: Store, dataDir: string, localDir = dataDir) {
    this.db = db;
    this.replica = randomUUID().replaceAll('-', '').slice(0, 16);
    // Its own blob dir: the model store sweeps <data>/blobs of anything its own rows do not name. Replicas
    // (a shared blob dir on a shared database): temp files in this replica's own dir (every start clears
    // them), and blobs pinned before they are placed (store/shared-sweep.ts sweeps them).
    const shared = db.kind === 'postgres' && path.resolve(dataDir) !== path.resolve(localDir);
    this.blobs = new BlobStore(path.join(dataDir, 'fl'), shared ? { tmpDir: path.join(localDir, 'fl-tmp'), pins: new BlobPins(db) } : {});
    this.sumsDir = path.join(dataDir, 'fl-sums');
    this.localSumsDir = path.join(localDir, 'fl-sums');
    fs.mkdirSync(this.sumsDir, { recursive: true });
  }

  /** Removes checkpoint blobs no row names (left by a kill between writing one and committing its row). */
  async sweepBlobs(): Promise<void> {
    this.blobs.sweep(new Set((await this.db.all('SELECT DISTINCT sha256 FROM fl_checkpoints')).map((r) => String(r.sha256))));
  }

  /**
   * Removes the sum files of cycles that are no longer open (their removal is after the close's commit).
   * Files of an open cycle stay, committed or not: in a shared blob dir one may be another replica's,
   * written just before the COMMIT that names it.
   */
  async sweepSums(): Promise<void> {
    await this.moveOlderSums();
    const cycles = new Map((await this.db.all('SELECT id, completed_ms FROM fl_cycles')).map((r) => [num(r.id), r.completed_ms !== null && r.completed_ms !== undefined]));
    let newest = 0;
    for (const id of cycles.keys()) newest = Math.max(newest, id);
    for (const f of fs.readdirSync(this.sumsDir)) {
      const id = Number(f.split('.')[0]);
      // A cycle newer than that read (another replica opened it since) is left alone too.
      const gone = cycles.get(id) ?? (id <= newest);
      if (gone || !Number.isInteger(id)) fs.rmSync(path.join(this.sumsDir, f), { force: true });
    }
  }

  /**
   * A node from before the shared sums kept an open cycle's running sum in its own data dir
   * (`<data-dir>/fl-sums/<cycle>.<slot>`); migration 5 made it the partial of replica ''. With a separate
   * blob dir (`--blobs`) the sums are now read from `<blobs>/fl-sums`: the files such a partial names are
   * moved there (renamed, or copied and synced across file systems), once, before any close reads them.
   */
  private async moveOlderSums(): Promise<void> {
    if (path.resolve(this.localSumsDir) === path.resolve(this.sumsDir) || !fs.existsSync(this.localSumsDir)) return;
    const moved: string[] = [];
    for (const r of await this.db.all("SELECT cycle_id, slot FROM fl_partials WHERE replica = ''")) {
      const name = `${num(r.cycle_id)}.${num(r.slot)}`;
      const from = path.join(this.localSumsDir, name);
      const to = path.join(this.sumsDir, name);
      if (!fs.existsSync(from) || fs.existsSync(to)) continue;
      try {
        fs.renameSync(from, to);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EXDEV') throw err;
        const part = `${to}.part`;
        fs.copyFileSync(from, part);
        const fd = fs.openSync(part, 'r+');
        try { fs.fdatasyncSync(fd); } finally { fs.closeSync(fd); }
        fs.renameSync(part, to);
        fs.rmSync(from, { force: true });
      }
      moved.push(name);
    }
    if (moved.length === 0) return;
    const dir = fs.openSync(this.sumsDir, 'r');
    try { fs.fsyncSync(dir); } finally { fs.closeSync(dir); }
  }

  // --- processes -------------------------------------------------------------------------------------

  /** The process and its first checkpoint and cycle, in one transaction (the blob is already stored). */
  async createProcess(p: Omit<FlProcess, 'id' | 'created'>, assets: Omit<FlAsset, 'id'>[], checkpointSha: string, cycleEndMs: number | undefined, now: number, firstModelVersion?: string): Promise<FlProcess | undefined> {
    return this.db.transaction(async () => {
      if (await this.db.get('SELECT 1 AS x FROM fl_processes WHERE name = ? AND version = ?', [p.name, p.version])) return undefined;
      const created = new Date(now).toISOString();
      const id = num((await this.db.get('INSERT INTO fl_processes (name, version, owner, model_format, shapes, client_config, server_config, created, linked_model) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id',
        [p.name, p.version, p.owner, p.format, JSON.stringify(p.params), JSON.stringify(p.clientConfig), JSON.stringify(p.serverConfig), created, p.linkedModel ?? null]))!.id);
      for (const a of assets) await this.db.run('INSERT INTO fl_assets (process_id, kind, name, variant, bytes) VALUES (?, ?, ?, ?, ?)', [id, a.kind, a.name, a.variant, a.bytes]);
      await this.db.run("INSERT INTO fl_checkpoints (process_id, number, alias, sha256, cycle, reports, created, model_version) VALUES (?, 1, 'latest', ?, NULL, 0, ?, ?)", [id, checkpointSha, created, firstModelVersion ?? null]);
      await this.db.run('INSERT INTO fl_cycles (process_id, sequence, start_ms, end_ms) VALUES (?, 1, ?, ?)', [id, now, cycleEndMs ?? null]);
      return { ...p, id, created };
    });
  }

  async process(id: number): Promise<FlProcess | undefined> {
    const r = await this.db.get('SELECT * FROM fl_processes WHERE id = ?', [id]);
    return r === undefined ? undefined : toProcess(r);
  }

  /** PyGrid's lookup: name + version, or the last hosted with that name when no version is given. */
  async findProcess(name: string, version?: string): Promise<FlProcess | undefined> {
    const r = version === undefined
      ? await this.db.get('SELECT * FROM fl_processes WHERE name = ? ORDER BY id DESC LIMIT 1', [name])
      : await this.db.get('SELECT * FROM fl_processes WHERE name = ? AND version = ?', [name, version]);
    return r === undefined ? undefined : toProcess(r);
  }

  async processes(): Promise<FlProcess[]> {
    return (await this.db.all('SELECT * FROM fl_processes ORDER BY id')).map(toProcess);
  }

  async asset(processId: number, kind: FlAsset['kind'], id: number, variant?: string): Promise<FlAsset | undefined> {
    // A plan's id names the plan; each variant (list, tfjs, torchscript) is a row under the same name.
    const named = await this.db.get('SELECT name FROM fl_assets WHERE id = ? AND process_id = ? AND kind = ?', [id, processId, kind]);
    if (named === undefined) return undefined;
    const rows = await this.db.all('SELECT * FROM fl_assets WHERE process_id = ? AND kind = ? AND name = ? ORDER BY id', [processId, kind, String(named.name)]);
    const r = rows.find((x) => String(x.variant) === variant) ?? rows.find((x) => String(x.variant) === 'list') ?? rows[0];
    return r === undefined ? undefined : { id: num(r.id), kind, name: String(r.name), variant: String(r.variant), bytes: r.bytes as Uint8Array };
  }

  /** The host's ONNX averaging plan, when it gave one (run when a cycle closes: averaging-plan.ts). */
  async averagingPlan(processId: number): Promise<Uint8Array | undefined> {
    const r = await this.db.get("SELECT bytes FROM fl_assets WHERE process_id = ? AND kind = 'averaging' ORDER BY id LIMIT 1", [processId]);
    return r === undefined ? undefined : r.bytes as Uint8Array;
  }

  async hasAveragingPlan(processId: number): Promise<boolean> {
    return (await this.db.get("SELECT 1 AS one FROM fl_assets WHERE process_id = ? AND kind = 'averaging' LIMIT 1", [processId])) !== undefined;
  }

  /** {name: id} of a process's plans or protocols (the id of each name's first row). */
  async assetIds(processId: number, kind: 'plan' | 'protocol'): Promise<Record<string, number>> {
    const out: Record<string, number> = {};
    for (const r of await this.db.all('SELECT name, MIN(id) AS id FROM fl_assets WHERE process_id = ? AND kind = ? GROUP BY name ORDER BY name', [processId, kind])) {
      out[String(r.name)] = num(r.id);
    }
    return out;
  }

  // --- cycles ----------------------------------------------------------------------------------------

  /** The last cycle not completed (PyGrid's validation rule), or undefined when the process is done. */
  async openCycle(processId: number): Promise<FlCycle | undefined> {
    const r = await this.db.get('SELECT * FROM fl_cycles WHERE process_id = ? AND completed_ms IS NULL ORDER BY sequence DESC LIMIT 1', [processId]);
    return r === undefined ? undefined : toCycle(r);
  }

  async cycle(id: number): Promise<FlCycle | undefined> {
    const r = await this.db.get('SELECT * FROM fl_cycles WHERE id = ?', [id]);
    return r === undefined ? undefined : toCycle(r);
  }

  async completedCycles(processId: number): Promise<number> {
    return num((await this.db.get('SELECT COUNT(*) AS n FROM fl_cycles WHERE process_id = ? AND completed_ms IS NOT NULL', [processId]))!.n);
  }

  /**
   * The first step of a close (call it in a short transaction): takes the cycle's row FOR UPDATE (on
   * PostgreSQL it waits for the report batches holding it FOR SHARE, and every later one sees the mark and
   * is refused: lockCycle) and marks it closing by this replica. A mark another replica set is taken over
   * once older than `staleBeforeMs` (that closer died or hangs; its last step then matches nothing).
   */
  async markClosing(cycleId: number, now: number, staleBeforeMs: number): Promise<CloseMark> {
    const lock = this.db.kind === 'postgres' ? ' FOR UPDATE' : '';
    const r = await this.db.get(`SELECT completed_ms, closing_ms, closer FROM fl_cycles WHERE id = ?${lock}`, [cycleId]);
    if (r === undefined || optNum(r.completed_ms) !== undefined) return { state: 'closed' };
    const since = optNum(r.closing_ms);
    const closer = r.closer === null || r.closer === undefined ? undefined : String(r.closer);
    if (since !== undefined && closer === this.replica) return { state: 'mine', taken: false };
    if (since !== undefined && closer !== undefined && since >= staleBeforeMs) return { state: 'busy', sinceMs: since, closer };
    await this.db.run('UPDATE fl_cycles SET closing_ms = ?, closer = ? WHERE id = ?', [now, this.replica, cycleId]);
    return { state: 'mine', taken: since !== undefined };
  }

  /**
   * The last step of a close, in one transaction: the new checkpoint becomes `latest`, the cycle is
   * completed, its diffs are dropped, and the next cycle opens (unless `nextEndMs` is null: the process is
   * done). Only while this replica holds the cycle's closing mark (markClosing): a cycle completed, or
   * taken over by another closer, is left alone (undefined): nothing is averaged twice.
   */
  async closeCycle(cycle: FlCycle, checkpointSha: string, reports: number, now: number, next: { endMs: number | undefined } | null): Promise<number | undefined> {
    return this.db.transaction(async () => {
      // Conditional: on PostgreSQL a second closer's UPDATE waits for the first's COMMIT, then matches nothing.
      if (await this.db.run('UPDATE fl_cycles SET completed_ms = ? WHERE id = ? AND completed_ms IS NULL AND closer = ?', [now, cycle.id, this.replica]) !== 1) return undefined;
      const number = num((await this.db.get('SELECT COALESCE(MAX(number), 0) + 1 AS n FROM fl_checkpoints WHERE process_id = ?', [cycle.processId]))!.n);
      await this.db.run("UPDATE fl_checkpoints SET alias = '' WHERE process_id = ? AND alias = 'latest'", [cycle.processId]);
      await this.db.run("INSERT INTO fl_checkpoints (process_id, number, alias, sha256, cycle, reports, created) VALUES (?, ?, 'latest', ?, ?, ?, ?)",
        [cycle.processId, number, checkpointSha, cycle.sequence, reports, new Date(now).toISOString()]);
      await this.db.run('UPDATE fl_assignments SET diff = NULL WHERE cycle_id = ?', [cycle.id]);
      await this.db.run('DELETE FROM fl_partials WHERE cycle_id = ?', [cycle.id]);
      if (next !== null) {
        await this.db.run('INSERT INTO fl_cycles (process_id, sequence, start_ms, end_ms) VALUES (?, ?, ?, ?)', [cycle.processId, cycle.sequence + 1, now, next.endMs ?? null]);
      }
      return number;
    });
  }

  // --- workers and assignments -----------------------------------------------------------------------

  async addWorker(processId: number, address: string, now: number): Promise<string> {
    const id = randomUUID();
    await this.db.run('INSERT INTO fl_workers (id, process_id, address, created_ms) VALUES (?, ?, ?, ?)', [id, processId, address, now]);
    return id;
  }

  async worker(id: string): Promise<{ id: string; processId: number } | undefined> {
    const r = await this.db.get('SELECT id, process_id FROM fl_workers WHERE id = ?', [id]);
    return r === undefined ? undefined : { id: String(r.id), processId: num(r.process_id) };
  }

  /** How many worker rows of the process came from `address`. */
  async workersAt(processId: number, address: string): Promise<number> {
    return num((await this.db.get('SELECT COUNT(*) AS n FROM fl_workers WHERE process_id = ? AND address = ?', [processId, address]))!.n);
  }

  /**
   * Deletes the oldest worker row of the process from `address` that was created before `beforeMs` and has
   * no assignment in cycle `cycleId` (its past assignments go with it); false when there is none.
   */
  async evictStaleWorker(processId: number, address: string, beforeMs: number, cycleId: number | undefined): Promise<boolean> {
    const r = await this.db.get(
      'SELECT id FROM fl_workers w WHERE process_id = ? AND address = ? AND created_ms < ? AND NOT EXISTS (SELECT 1 FROM fl_assignments a WHERE a.worker_id = w.id AND a.cycle_id = ?) ORDER BY created_ms, id LIMIT 1',
      [processId, address, beforeMs, cycleId ?? -1]);
    if (r === undefined) return false;
    return await this.db.run('DELETE FROM fl_workers WHERE id = ?', [String(r.id)]) === 1;
  }

  async workerCount(processId: number): Promise<number> {
    return num((await this.db.get('SELECT COUNT(*) AS n FROM fl_workers WHERE process_id = ?', [processId]))!.n);
  }

  async assignment(cycleId: number, workerId: string): Promise<FlAssignment | undefined> {
    const r = await this.db.get('SELECT cycle_id, worker_id, request_key, assigned_ms, reported_ms, weight FROM fl_assignments WHERE cycle_id = ? AND worker_id = ?', [cycleId, workerId]);
    return r === undefined ? undefined : toAssignment(r);
  }

  async assignmentByKey(requestKey: string): Promise<FlAssignment | undefined> {
    const r = await this.db.get('SELECT cycle_id, worker_id, request_key, assigned_ms, reported_ms, weight FROM fl_assignments WHERE request_key = ?', [requestKey]);
    return r === undefined ? undefined : toAssignment(r);
  }

  async assignedCount(cycleId: number): Promise<number> {
    return num((await this.db.get('SELECT COUNT(*) AS n FROM fl_assignments WHERE cycle_id = ?', [cycleId]))!.n);
  }

  /** Whether the worker was ever accepted into a cycle of the process. */
  async everWorked(processId: number, workerId: string): Promise<boolean> {
    return await this.db.get(
      'SELECT 1 AS x FROM fl_assignments a JOIN fl_cycles c ON c.id = a.cycle_id WHERE a.worker_id = ? AND c.process_id = ? LIMIT 1',
      [workerId, processId]) !== undefined;
  }

  /** Whether the worker took part in one of the `n` cycles before `sequence` (do_not_reuse_workers_until_cycle). */
  async workedRecently(processId: number, workerId: string, sequence: number, n: number): Promise<boolean> {
    return await this.db.get(
      'SELECT 1 AS x FROM fl_assignments a JOIN fl_cycles c ON c.id = a.cycle_id WHERE a.worker_id = ? AND c.process_id = ? AND c.sequence < ? AND c.sequence >= ? LIMIT 1',
      [workerId, processId, sequence, sequence - n]) !== undefined;
  }

  async assign(cycleId: number, workerId: string, requestKey: string, now: number): Promise<void> {
    await this.db.run('INSERT INTO fl_assignments (cycle_id, worker_id, request_key, assigned_ms) VALUES (?, ?, ?, ?)', [cycleId, workerId, requestKey, now]);
  }

  /**
   * Records a report (its diff is in the cycle's running sum: writeSum + setSum in the same transaction);
   * false when the assignment already has one (the first report stands).
   */
  async recordReport(requestKey: string, weight: number, now: number): Promise<boolean> {
    return await this.db.run('UPDATE fl_assignments SET reported_ms = ?, weight = ? WHERE request_key = ? AND reported_ms IS NULL', [now, weight, requestKey]) === 1;
  }

  // --- running sums (see the top of this file) --------------------------------------------------------

  /** This replica's committed partial sum of a cycle, when it stored one. */
  async sumRecord(cycleId: number): Promise<FlSumRecord | undefined> {
    const r = await this.db.get('SELECT slot, reports, weight FROM fl_partials WHERE cycle_id = ? AND replica = ?', [cycleId, this.replica]);
    return r === undefined ? undefined : { slot: num(r.slot) === 0 ? 0 : 1, reports: num(r.reports), weight: num(r.weight) };
  }

  /** Every replica's committed partial sum of a cycle (read by the one that closes it, holding the cycle's row lock). */
  async partials(cycleId: number): Promise<(FlSumRecord & { replica: string })[]> {
    return (await this.db.all('SELECT replica, slot, reports, weight FROM fl_partials WHERE cycle_id = ? ORDER BY replica', [cycleId]))
      .map((r) => ({ replica: String(r.replica), slot: num(r.slot) === 0 ? 0 as const : 1 as const, reports: num(r.reports), weight: num(r.weight) }));
  }

  /**
   * Names the file of this replica's partial sum that holds its committed reports; call it in the
   * transaction that records them. `rowDiffs`: how many diffs stored as rows by an older node the sum
   * took in (loadSum); they are cleared here so they count once, and if another replica cleared them
   * first (it holds them too) this transaction fails and the sum is reloaded without them.
   */
  async setSumRecord(cycleId: number, record: FlSumRecord, rowDiffs = 0): Promise<void> {
    await this.db.run('INSERT INTO fl_partials (cycle_id, replica, slot, reports, weight) VALUES (?, ?, ?, ?, ?) ON CONFLICT (cycle_id, replica) DO UPDATE SET slot = excluded.slot, reports = excluded.reports, weight = excluded.weight',
      [cycleId, this.replica, record.slot, record.reports, record.weight]);
    if (rowDiffs > 0 && await this.db.run('UPDATE fl_assignments SET diff = NULL WHERE cycle_id = ? AND diff IS NOT NULL', [cycleId]) !== rowDiffs) {
      throw gridError('BUSY', `the stored diffs of FL cycle ${cycleId} were taken into another replica's running sum first; send the report again`);
    }
  }

  /**
   * Takes a cycle's locks in the current transaction, on PostgreSQL (the embedded store has one writer,
   * and its transaction already excludes every other): a `report` takes the cycle's row FOR SHARE
   * (reports of all replicas go together; a close waits for them and they wait for a close); an `assign`
   * takes it FOR SHARE too, then the cycle's advisory lock, so max_workers is counted by one replica at a
   * time; a `close` takes the row FOR UPDATE. Always the row first: no two transactions take them in
   * opposite orders. False when the cycle is gone, completed or closing (markClosing): a report then is
   * refused as for a closed cycle, and its close reads partial sums no report changes any more.
   */
  async lockCycle(cycleId: number, purpose: 'report' | 'assign' | 'close'): Promise<boolean> {
    const postgres = this.db.kind === 'postgres';
    const lock = !postgres ? '' : purpose === 'close' ? ' FOR UPDATE' : ' FOR SHARE';
    const r = await this.db.get(`SELECT completed_ms, closing_ms FROM fl_cycles WHERE id = ?${lock}`, [cycleId]);
    const open = r !== undefined && optNum(r.completed_ms) === undefined && optNum(r.closing_ms) === undefined;
    if (open && postgres && purpose === 'assign') await this.db.get('SELECT pg_advisory_xact_lock(?::int, ?::int) AS x', [CYCLE_LOCK, cycleId]);
    return open;
  }

  /** `<cycle>.<replica>.<slot>`; the partial of replica '' (an older node's sum) is `<cycle>.<slot>`. */
  private sumFile(cycleId: number, slot: 0 | 1, replica = this.replica): string {
    return path.join(this.sumsDir, replica === '' ? `${cycleId}.${slot}` : `${cycleId}.${replica}.${slot}`);
  }

  /**
   * Writes this replica's sum of a cycle to one of its files and syncs it (and, when the file is new, its
   * directory), off the event loop: the loop keeps reading and decoding the next reports meanwhile. The
   * caller commits the transaction naming the file only once this resolves. `bytes` must not change
   * until then (the group commit's batch work that adds to the sum has finished before it is stored).
   * The file stays open for the next batch's write (closeSums, removeSums close it).
   */
  async writeSum(cycleId: number, slot: 0 | 1, bytes: Uint8Array): Promise<void> {
    const file = this.sumFile(cycleId, slot);
    let fd = this.sumFds.get(file);
    if (fd === undefined) {
      // In place once it exists: the same size every time, so only its data needs syncing.
      let created = false;
      try {
        fd = await openFd(file, 'r+');
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
        fd = await openFd(file, 'w');
        created = true;
      }
      if (created) {
        try {
          const dir = await openFd(this.sumsDir, 'r');
          try { await fsyncFd(dir); } finally { fs.closeSync(dir); }
        } catch (err) {
          fs.closeSync(fd);
          throw err;
        }
      }
      // Kept only once its directory entry is durable: a failed sync is tried again by the next batch.
      this.sumFds.set(file, fd);
    }
    for (let at = 0; at < bytes.length;) at += await writeFd(fd, bytes, at, bytes.length - at, at);
    await fdatasyncFd(fd);
  }

  /** Closes the sum files kept open by writeSum (of one cycle, or all); idempotent. */
  closeSums(cycleId?: number): void {
    const prefix = cycleId === undefined ? '' : path.join(this.sumsDir, `${cycleId}.`);
    for (const [file, fd] of this.sumFds) {
      if (!file.startsWith(prefix)) continue;
      this.sumFds.delete(file);
      try { fs.closeSync(fd); } catch { /* already closed */ }
    }
  }

  /**
   * A partial sum's file (this replica's unless `replica` is given). A file its committed row names but
   * that is gone (lost with a disk or a data dir) is a coded error naming the cycle and the file.
   */
  readSum(cycleId: number, slot: 0 | 1, replica = this.replica): Buffer {
    const file = this.sumFile(cycleId, slot, replica);
    try {
      return fs.readFileSync(file);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
      throw gridError('NOT_FOUND', `the running sum of FL cycle ${cycleId} stored by ${replica === '' ? 'an older node' : `replica ${replica}`} is missing: ${file}`, { cycle: cycleId, file });
    }
  }

  /** Removes every replica's sum files of a closed cycle (after the close committed; a kill before leaves them to the sweep at start). */
  removeSums(cycleId: number): void {
    this.closeSums(cycleId);
    const prefix = `${cycleId}.`;
    for (const f of fs.readdirSync(this.sumsDir)) if (f.startsWith(prefix)) fs.rmSync(path.join(this.sumsDir, f), { force: true });
  }

  /** The reported diffs a cycle still holds as rows (written before running sums were stored), one at a time. */
  async *reportedDiffs(cycleId: number): AsyncGenerator<{ weight: number; diff: Uint8Array }> {
    const keys = await this.db.all('SELECT request_key FROM fl_assignments WHERE cycle_id = ? AND reported_ms IS NOT NULL AND diff IS NOT NULL ORDER BY reported_ms', [cycleId]);
    for (const k of keys) {
      const r = await this.db.get('SELECT weight, diff FROM fl_assignments WHERE request_key = ?', [k.request_key]);
      if (r !== undefined && r.diff !== null) yield { weight: num(r.weight), diff: r.diff as Uint8Array };
    }
  }

  async reportedCount(cycleId: number): Promise<number> {
    return num((await this.db.get('SELECT COUNT(*) AS n FROM fl_assignments WHERE cycle_id = ? AND reported_ms IS NOT NULL', [cycleId]))!.n);
  }

  // --- checkpoints -----------------------------------------------------------------------------------

  /** A checkpoint by number or alias (`latest` when neither is given). */
  async checkpoint(processId: number, which: number | string = 'latest'): Promise<FlCheckpoint | undefined> {
    const r = typeof which === 'number'
      ? await this.db.get('SELECT * FROM fl_checkpoints WHERE process_id = ? AND number = ?', [processId, which])
      : await this.db.get('SELECT * FROM fl_checkpoints WHERE process_id = ? AND alias = ? ORDER BY number DESC LIMIT 1', [processId, which]);
    return r === undefined ? undefined : toCheckpoint(r);
  }

  /**
   * Records which version of the linked model a checkpoint became (called inside the model's own
   * transaction). Conditional: when the checkpoint already became a version (another replica published
   * it first; on PostgreSQL this UPDATE waits for that one's COMMIT, then matches nothing) it throws
   * ALREADY_EXISTS, so the model's transaction rolls back and one checkpoint stays one version.
   */
  async setModelVersion(processId: number, number: number, version: string): Promise<void> {
    if (await this.db.run('UPDATE fl_checkpoints SET model_version = ? WHERE process_id = ? AND number = ? AND model_version IS NULL', [version, processId, number]) !== 1) {
      throw gridError('ALREADY_EXISTS', `FL checkpoint ${number} of process ${processId} is already a model version (stored by another replica); version ${version} is not added`);
    }
  }

  async checkpoints(processId: number): Promise<FlCheckpoint[]> {
    return (await this.db.all('SELECT * FROM fl_checkpoints WHERE process_id = ? ORDER BY number', [processId])).map(toCheckpoint);
  }
}
