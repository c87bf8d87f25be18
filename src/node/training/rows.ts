// Training jobs as rows of the node's database (migration 7), so every replica on a shared database sees
// the same jobs and a job outlives the process that ran it. A job is claimed by one replica at a time:
// `claimed_by` (a replica id, new per process) and `attempts` (moved by every claim) name the run that may
// write it, and `lease_expires` (renewed by that replica's heartbeat) says until when. Every write a run
// makes is conditional on that claim, so a replica that lost its job (killed, paused, cut off) can
// neither store a result nor write events once another replica took the job over.
//
// A job's bytes (uploaded model and parameters, an update job's result) are rows of training_job_blobs
// (migration 10), written at submit and at the end only: heartbeats and progress rewrite the job's row, which
// stays small.
//
// Lease times are the database's clock (not each replica's), so replicas need no synchronised clocks.
// Statements are the portable ones of store/sql.ts except three per-engine bits: that clock, SKIP LOCKED,
// and the one-statement event write of append() on PostgreSQL.

import { gridError } from '../../core/errors';
import type { ModelInfo } from '../../core/protocol/messages';
import type { JobEvent, JobInfo, JobProgress, JobResult, JobState, TrainRequest } from '../../core/protocol/training-messages';
import type { Row, Store } from '../store/sql';

/** Notified (JSON `JobEvent[]`, one job's) when events are committed. */
export const EVENTS_CHANNEL = 'training-job-events';
/** Notified (a job id, or '' for "look") when a job may be claimed, or a running job should stop. */
export const WAKE_CHANNEL = 'training-jobs';
export const CANCEL_CHANNEL = 'training-job-cancel';

export const FINISHED_STATES: ReadonlySet<JobState> = new Set(['succeeded', 'failed', 'cancelled']);

export interface JobSpec {
  owner: string;
  /** The owner's role: an admin may add versions to anyone's model. */
  role: string;
  request: TrainRequest;
  /** The hosted model version it trains (its record at submit time). */
  parent?: ModelInfo;
  /** The label column's name. */
  label: string;
}

/** A job's row without its byte columns. */
export interface JobRow {
  id: string;
  spec: JobSpec;
  state: JobState;
  created: string;
  started: string | undefined;
  finished: string | undefined;
  claimedBy: string | undefined;
  attempts: number;
  cancelRequested: boolean;
  lastSeq: number;
  progress: JobProgress | undefined;
  result: JobResult | undefined;
  error: { code: string; message: string } | undefined;
}

/** One run of a job: the claim every write of that run is conditional on. */
export interface Claim {
  id: string;
  replica: string;
  attempt: number;
}

/** Rows a claim reads at a time. */
const CLAIM_PAGE = 16;

const COLUMNS = 'id, owner, role, request, parent, label, state, created, started, finished, claimed_by, attempts, cancel_requested, last_seq, progress, result, error';

const json = <T>(v: Row[string]): T | undefined => (v === null || v === undefined ? undefined : JSON.parse(String(v)) as T);
const bytes = (v: Row[string] | undefined): Uint8Array | undefined => (v === null || v === undefined ? undefined : v as Uint8Array);
const text = (v: Row[string]): string | undefined => (v === null || v === undefined ? undefined : String(v));

function toRow(r: Row): JobRow {
  const parent = json<ModelInfo>(r.parent);
  return {
    id: String(r.id),
    spec: { owner: String(r.owner), role: String(r.role), request: json<TrainRequest>(r.request)!, label: String(r.label), ...(parent && { parent }) },
    state: String(r.state) as JobState,
    created: String(r.created),
    started: text(r.started),
    finished: text(r.finished),
    claimedBy: text(r.claimed_by),
    attempts: Number(r.attempts),
    cancelRequested: Number(r.cancel_requested) !== 0,
    lastSeq: Number(r.last_seq),
    progress: json<JobProgress>(r.progress),
    result: json<JobResult>(r.result),
    error: json<{ code: string; message: string }>(r.error),
  };
}

export function jobInfo(row: JobRow): JobInfo {
  const r = row.spec.request;
  const out: JobInfo = {
    id: row.id, state: row.state, owner: row.spec.owner, dataset_id: r.dataset_id,
    output: r.output ?? 'model', epochs: r.epochs, created: row.created, last_seq: row.lastSeq,
  };
  if (row.spec.parent) out.model_id = `${row.spec.parent.id}@${row.spec.parent.version}`;
  if (row.started) out.started = row.started;
  if (row.finished) out.finished = row.finished;
  if (row.progress) out.progress = row.progress;
  if (row.result) out.result = row.result;
  if (row.error) out.error = row.error;
  return out;
}

/** What a run writes when its job ends. */
export interface Finish {
  state: 'succeeded' | 'failed' | 'cancelled';
  result?: JobResult;
  error?: { code: string; message: string };
  /** output 'update': the trained parameters (encodeNamedTensors), for job-params. */
  params?: Uint8Array;
}

export class JobRows {
  private readonly db: Store;
  /** Milliseconds since the epoch by the database's clock, as SQL. */
  private readonly now: string;
  /** Locks the rows a claim looks at, skipping those another replica is claiming (PostgreSQL). */
  private readonly skipLocked: string;

  constructor(db: Store) {
    this.db = db;
    this.now = db.kind === 'postgres'
      ? 'CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)'
      : "CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)";
    // The embedded store has one process (and one connection): nothing to skip.
    this.skipLocked = db.kind === 'postgres' ? 'FOR UPDATE SKIP LOCKED' : '';
  }

  /** A new job, queued, or (`claim`) already claimed by the replica that took the request. */
  async insert(id: string, spec: JobSpec, inputs: { model?: Uint8Array; params?: Uint8Array }, event: JobEvent, claim?: { replica: string; leaseMs: number }): Promise<JobRow> {
    const created = new Date();
    await this.db.transaction(async () => {
      await this.db.run(`INSERT INTO training_jobs (id, owner, role, request, parent, label, output_model_id, state, created, created_ms, last_seq)
        VALUES (?, ?, ?, ?, ?, ?, ?, 'queued', ?, ?, ?)`,
      [id, spec.owner, spec.role, JSON.stringify(spec.request), spec.parent ? JSON.stringify(spec.parent) : null, spec.label, spec.request.output_model_id ?? null,
        created.toISOString(), created.getTime(), event.seq]);
      await this.db.run('INSERT INTO training_job_blobs (job_id, model_bytes, params_bytes) VALUES (?, ?, ?)', [id, inputs.model ?? null, inputs.params ?? null]);
      await this.insertEvents(id, [event]);
      if (claim === undefined) await this.db.notify(WAKE_CHANNEL, id);
      else {
        await this.db.run(`UPDATE training_jobs SET state = 'running', claimed_by = ?, lease_expires = ${this.now} + ?, attempts = 1, started = ? WHERE id = ?`,
          [claim.replica, claim.leaseMs, new Date().toISOString(), id]);
      }
    });
    return (await this.get(id))!;
  }

  async get(id: string): Promise<JobRow | undefined> {
    const r = await this.db.get(`SELECT ${COLUMNS} FROM training_jobs WHERE id = ?`, [id]);
    return r === undefined ? undefined : toRow(r);
  }

  /** Newest first; `owner` undefined: everyone's. */
  async list(owner: string | undefined, limit: number): Promise<JobRow[]> {
    const rows = owner === undefined
      ? await this.db.all(`SELECT ${COLUMNS} FROM training_jobs ORDER BY created_ms DESC, id LIMIT ?`, [limit])
      : await this.db.all(`SELECT ${COLUMNS} FROM training_jobs WHERE owner = ? ORDER BY created_ms DESC, id LIMIT ?`, [owner, limit]);
    return rows.map(toRow);
  }

  async countQueued(): Promise<number> {
    return Number((await this.db.get("SELECT COUNT(*) AS n FROM training_jobs WHERE state = 'queued'"))!.n);
  }

  /** Whether a job not yet finished will store a model under `id`. */
  async outputPending(id: string): Promise<boolean> {
    return await this.db.get("SELECT 1 AS x FROM training_jobs WHERE output_model_id = ? AND state IN ('queued', 'running') LIMIT 1", [id]) !== undefined;
  }

  /** Forgets finished jobs beyond the newest `keep` (their events go with them). */
  async forgetOld(keep: number): Promise<void> {
    await this.db.run(`DELETE FROM training_jobs WHERE state IN ('succeeded', 'failed', 'cancelled') AND id NOT IN
      (SELECT id FROM training_jobs WHERE state IN ('succeeded', 'failed', 'cancelled') ORDER BY created_ms DESC LIMIT ?)`, [keep]);
  }

  /**
   * Claims the oldest job that is queued, or running under a lease that expired (its replica died or
   * stalled), that this replica is not running already (`running`: a lease that lapsed while this replica
   * was alive is renewed by its heartbeat, not claimed again), and that `accept` takes (this replica can
   * read its dataset); undefined when there is none. Looks past rows it leaves, a page at a time, so jobs
   * this replica cannot run never hide newer ones it can.
   */
  async claim(replica: string, leaseMs: number, accept: (row: JobRow) => Promise<boolean>, running: ReadonlySet<string> = new Set()): Promise<{ row: JobRow; claim: Claim; inputs: { model?: Uint8Array; params?: Uint8Array } } | undefined> {
    return this.db.transaction(async () => {
      let after: { ms: number; id: string } | undefined;
      for (;;) {
        const page = await this.db.all(`SELECT ${COLUMNS}, created_ms FROM training_jobs
          WHERE (state = 'queued' OR (state = 'running' AND lease_expires < ${this.now}))
            ${after === undefined ? '' : 'AND (created_ms > ? OR (created_ms = ? AND id > ?))'}
          ORDER BY created_ms, id LIMIT ${CLAIM_PAGE} ${this.skipLocked}`, after === undefined ? [] : [after.ms, after.ms, after.id]);
        for (const c of page) {
          const row = toRow(c);
          if (running.has(row.id) || !await accept(row)) continue;
          const r = await this.db.get(`UPDATE training_jobs SET state = 'running', claimed_by = ?, lease_expires = ${this.now} + ?, attempts = attempts + 1,
              started = COALESCE(started, ?), progress = NULL
            WHERE id = ? AND (state = 'queued' OR (state = 'running' AND lease_expires < ${this.now}))
            RETURNING ${COLUMNS}`, [replica, leaseMs, new Date().toISOString(), row.id]);
          if (r === undefined) continue;
          const claimed = toRow(r);
          return { row: claimed, claim: { id: claimed.id, replica, attempt: claimed.attempts }, inputs: await this.inputs(claimed.id) };
        }
        if (page.length < CLAIM_PAGE) return undefined;
        const last = page.at(-1)!;
        after = { ms: Number(last.created_ms), id: String(last.id) };
      }
    });
  }

  /**
   * Renews the leases of `replica`'s running jobs; returns those it still holds (id → attempt, and
   * whether a cancel was asked for), so a job that was taken over is stopped here.
   */
  async heartbeat(replica: string, leaseMs: number): Promise<Map<string, { attempt: number; cancel: boolean }>> {
    await this.db.run(`UPDATE training_jobs SET lease_expires = ${this.now} + ? WHERE claimed_by = ? AND state = 'running'`, [leaseMs, replica]);
    const held = await this.db.all("SELECT id, attempts, cancel_requested FROM training_jobs WHERE claimed_by = ? AND state = 'running'", [replica]);
    return new Map(held.map((r) => [String(r.id), { attempt: Number(r.attempts), cancel: Number(r.cancel_requested) !== 0 }]));
  }

  /** Embedded store at start: the process that held the running jobs is gone; let them be claimed at once. */
  async expireAll(): Promise<number> {
    return this.db.run("UPDATE training_jobs SET lease_expires = 0 WHERE state = 'running'");
  }

  /** Writes events (and the latest progress) of a run; GRID_ERR_ABORTED when the run no longer holds its job. */
  async append(claim: Claim, events: JobEvent[], progress: JobProgress | undefined, maxEvents: number): Promise<void> {
    if (events.length === 0) return;
    if (this.db.kind !== 'postgres') {
      await this.db.transaction(async () => {
        await this.holds(claim, events.at(-1)!.seq, progress);
        await this.insertEvents(claim.id, events, maxEvents);
      });
      return;
    }
    // PostgreSQL: one statement, so the job's row is never locked by a transaction left open. A replica
    // paused between two statements of a transaction (a stopped VM, a long GC) would hold the lock, and
    // the replicas that should take its job over would skip the job until the server ends that session.
    const n = await this.db.run(`WITH held AS (
        UPDATE training_jobs SET last_seq = ?, progress = COALESCE(?, progress)
        WHERE id = ? AND claimed_by = ? AND attempts = ? AND state = 'running' RETURNING id)
      INSERT INTO training_job_events (job_id, seq, event)
        SELECT held.id, e.seq, e.event FROM held, json_to_recordset(CAST(? AS json)) AS e(seq bigint, event text)`,
    [events.at(-1)!.seq, progress ? JSON.stringify(progress) : null, claim.id, claim.replica, claim.attempt,
      JSON.stringify(events.map((ev) => ({ seq: ev.seq, event: JSON.stringify(ev) })))]);
    if (n === 0) throw lost(claim);
    await this.trimAndNotify(claim.id, events, maxEvents);
  }

  /** Ends a run: its final state, result and event, only while the run still holds the job (else GRID_ERR_ABORTED, nothing written). */
  async finish(claim: Claim, finish: Finish, events: JobEvent[], progress: JobProgress | undefined, maxEvents: number): Promise<void> {
    await this.db.transaction(async () => {
      const n = await this.db.run(`UPDATE training_jobs SET state = ?, finished = ?, result = ?, error = ?, last_seq = ?, progress = COALESCE(?, progress), lease_expires = NULL
        WHERE id = ? AND claimed_by = ? AND attempts = ? AND state = 'running'`,
      [finish.state, new Date().toISOString(), finish.result ? JSON.stringify(finish.result) : null, finish.error ? JSON.stringify(finish.error) : null,
        events.at(-1)!.seq, progress ? JSON.stringify(progress) : null, claim.id, claim.replica, claim.attempt]);
      if (n === 0) throw lost(claim);
      await this.db.run('UPDATE training_job_blobs SET model_bytes = NULL, params_bytes = NULL, result_params = ? WHERE job_id = ?', [finish.params ?? null, claim.id]);
      await this.insertEvents(claim.id, events, maxEvents);
    });
  }

  /** Gives a running job back to the queue (its replica is shutting down): another replica, or this node's next start, runs it. */
  async release(claim: Claim, events: JobEvent[], maxEvents: number): Promise<void> {
    await this.db.transaction(async () => {
      const n = await this.db.run(`UPDATE training_jobs SET state = 'queued', claimed_by = NULL, lease_expires = NULL, progress = NULL, last_seq = ?
        WHERE id = ? AND claimed_by = ? AND attempts = ? AND state = 'running'`, [events.at(-1)!.seq, claim.id, claim.replica, claim.attempt]);
      if (n === 0) throw lost(claim);
      await this.insertEvents(claim.id, events, maxEvents);
      await this.db.notify(WAKE_CHANNEL, claim.id);
    });
  }

  /**
   * Cancels a job from any replica: a queued job (or one whose replica died) is cancelled here at once;
   * a running one is asked to stop, and its replica writes the end. Returns whether it was ended here.
   */
  async cancel(id: string, event: (seq: number) => JobEvent, error: { code: string; message: string }, maxEvents: number): Promise<boolean> {
    return this.db.transaction(async () => {
      const r = await this.db.get(`UPDATE training_jobs SET state = 'cancelled', finished = ?, error = ?, last_seq = last_seq + 1, lease_expires = NULL
        WHERE id = ? AND (state = 'queued' OR (state = 'running' AND lease_expires < ${this.now})) RETURNING last_seq`,
      [new Date().toISOString(), JSON.stringify(error), id]);
      if (r !== undefined) {
        await this.db.run('UPDATE training_job_blobs SET model_bytes = NULL, params_bytes = NULL WHERE job_id = ?', [id]);
        await this.insertEvents(id, [event(Number(r.last_seq))], maxEvents);
        return true;
      }
      const asked = await this.db.run("UPDATE training_jobs SET cancel_requested = 1 WHERE id = ? AND state = 'running'", [id]);
      if (asked > 0) await this.db.notify(CANCEL_CHANNEL, id);
      return false;
    });
  }

  /** The job's events after `afterSeq` still held, and how many newer than it were already dropped. */
  async since(id: string, afterSeq: number): Promise<{ missed: number; events: JobEvent[] }> {
    const rows = await this.db.all('SELECT seq, event FROM training_job_events WHERE job_id = ? AND seq > ? ORDER BY seq', [id, afterSeq]);
    const events = rows.map((r) => JSON.parse(String(r.event)) as JobEvent);
    const first = events[0]?.seq;
    return { missed: first === undefined ? 0 : Math.max(0, first - afterSeq - 1), events };
  }

  async resultParams(id: string): Promise<Uint8Array | undefined> {
    return bytes((await this.db.get('SELECT result_params FROM training_job_blobs WHERE job_id = ?', [id]))?.result_params);
  }

  /** A job's uploaded inputs, read by the run that claimed it. */
  private async inputs(id: string): Promise<{ model?: Uint8Array; params?: Uint8Array }> {
    const r = await this.db.get('SELECT model_bytes, params_bytes FROM training_job_blobs WHERE job_id = ?', [id]);
    const model = bytes(r?.model_bytes);
    const params = bytes(r?.params_bytes);
    return { ...(model && { model }), ...(params && { params }) };
  }

  /** Inside a transaction: moves the run's last_seq (and progress) if it still holds the job, else throws. */
  private async holds(claim: Claim, lastSeq: number, progress: JobProgress | undefined): Promise<void> {
    const n = await this.db.run(`UPDATE training_jobs SET last_seq = ?, progress = COALESCE(?, progress)
      WHERE id = ? AND claimed_by = ? AND attempts = ? AND state = 'running'`,
    [lastSeq, progress ? JSON.stringify(progress) : null, claim.id, claim.replica, claim.attempt]);
    if (n === 0) throw lost(claim);
  }

  /** Inside a transaction: the events, the history trimmed to `maxEvents`, and one notification per few events. */
  private async insertEvents(id: string, events: JobEvent[], maxEvents = Infinity): Promise<void> {
    for (const ev of events) await this.db.run('INSERT INTO training_job_events (job_id, seq, event) VALUES (?, ?, ?)', [id, ev.seq, JSON.stringify(ev)]);
    await this.trimAndNotify(id, events, maxEvents);
  }

  private async trimAndNotify(id: string, events: JobEvent[], maxEvents: number): Promise<void> {
    const last = events.at(-1)!.seq;
    if (Number.isFinite(maxEvents) && last > maxEvents) await this.db.run('DELETE FROM training_job_events WHERE job_id = ? AND seq <= ?', [id, last - maxEvents]);
    // A notification holds at most ~7.9 kB: events go in groups well below that.
    for (let i = 0; i < events.length; i += 8) await this.db.notify(EVENTS_CHANNEL, JSON.stringify(events.slice(i, i + 8)));
  }
}

/** The run no longer holds its job: another replica took it over (or it was cancelled meanwhile). */
export function lost(claim: Claim) {
  return gridError('ABORTED', `training job ${claim.id} is no longer held by this replica (run ${claim.attempt}); another replica took it over`, { job_id: claim.id, reason: 'claim-lost' });
}

export function isLost(err: unknown): boolean {
  return (err as { details?: { reason?: unknown } }).details?.reason === 'claim-lost';
}
