// The model-centric FL engine: hosting, worker authentication, cycle assignment (PyGrid's accept/reject
// rules plus the server_config keys PyGrid ignored), reports and the closing of a cycle, by count when a
// report arrives or by time on a timer. Errors carry PyGrid's own strings where PyGrid had one, so an old
// client shows the message it knows; their codes are ours (handlers.ts puts both on the wire).
//
// Durability: every decision is a committed row before it is answered (store.ts). A cycle's running sum
// lives in memory and is rebuilt from the stored diffs at start; closing writes the checkpoint blob, then
// one transaction (checkpoint + cycle completed + next cycle), so a kill at any point averages each cycle
// exactly once.

import { createHash, randomUUID } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { readFile } from 'node:fs/promises';
import { Readable } from 'node:stream';
import { gridError } from '../../core/errors';
import type { Logger } from '../../core/logger';
import { checkClientConfig, checkServerConfig, minReports, requiresSpeedTest, type ServerConfig } from './config';
import { verifyWorkerToken, type FlAuthConfig } from './auth';
import { AddressLimiter } from './limits';
import { looksLikeOnnx, paramsOf, withNewParams, type ModelFormat } from './params';
import { packDiff, RunningSum, unpackDiff } from './averaging';
import { checkShapes, decodeState, decodeText, type StateTensor } from './state';
import type { FlAsset, FlCycle, FlProcess, FlStore } from './store';

/** PyGrid's own error strings (reference §1.4-§1.8), shown by syft.js, KotlinSyft and PySyft as they are. */
export const PYGRID = {
  processExists: 'FL Process already exists.',
  authRequired: "Authentication is required, please pass an 'auth_token'.",
  authInvalid: "The 'auth_token' you sent is invalid.",
  processNotFound: 'Not found any process related with this cycle and worker ID.',
  invalidRequestKey: 'Invalid request key!',
} as const;

export interface HostInput {
  owner: string;
  /** A State or an ONNX model (bytes), already decoded from hex/base64 or taken from an upload. */
  model: Uint8Array;
  plans: Record<string, Record<string, Uint8Array>>;
  protocols: Record<string, Record<string, Uint8Array>>;
  averagingPlan: Uint8Array | undefined;
  clientConfig: unknown;
  serverConfig: unknown;
  /** The hosted ONNX model (id and version) the bytes came from: checkpoints become its next versions. */
  linked?: { id: string; version: string } | undefined;
}

export interface CycleRequest {
  worker_id: string;
  model: string;
  version?: string | undefined;
  ping?: unknown;
  download?: unknown;
  upload?: unknown;
}

export type CycleReply =
  | { status: 'accepted'; request_key: string; version: string; model: string; plans: Record<string, number>; protocols: Record<string, number>; client_config: Record<string, unknown>; model_id: number }
  | { status: 'rejected'; reason: string; timeout?: string };

/** How a worker's auth token is checked (src/node/fl/auth.ts). */
export type AuthCheck = (config: Record<string, unknown> | undefined, token: string | undefined) => Promise<{ ok: true } | { ok: false; error: string }>;

// verifyWorkerToken (src/node/fl/auth.ts) on the config checkServerConfig passed through checkFlAuthConfig.
export const checkAuth: AuthCheck = (config, token) => verifyWorkerToken(config as FlAuthConfig | undefined, token);

interface Runtime {
  process: FlProcess;
  cycle: FlCycle | undefined;
  sum: RunningSum | undefined;
  timer: NodeJS.Timeout | undefined;
  /** Workers decided by random pool selection in this cycle (not kept across restarts). */
  randomSeen: number;
  /** Set from the moment a close starts: later reports of that cycle are refused, not half-counted. */
  closing: Promise<void> | undefined;
}

/** What the editor's tree follows besides 'changed' (src/node/fl/events.ts): each worker's answer (with a refusal's reason) and report. */
export type FlActivity = { kind: 'worker'; processId: number; cycle: number | undefined; workerId: string; status: 'accepted' | 'rejected' | 'reported'; reason?: string };

export interface FlEngineOptions {
  store: FlStore;
  log: Logger;
  auth?: AuthCheck;
  /** authenticate + cycle-request a minute from one address (default 600). */
  requestsPerMinute?: number;
  /**
   * Stores a checkpoint of a linked process as the next version of its model (parent: `parentVersion`),
   * calling `commit(version)` inside the model's own transaction.
   */
  publish?(process: FlProcess, checkpoint: { number: number; bytes: Uint8Array }, parentVersion: string, commit: (version: string) => Promise<void>): Promise<void>;
  now?(): number;
  /** Called after each cycle-request answer and counted report (the node's fl-worker events). */
  onActivity?(a: FlActivity): void;
}

/** Python's str(timedelta): "H:MM:SS" or "H:MM:SS.ffffff", with "N day(s), " before past a day. */
export function timedeltaString(ms: number): string {
  const us = Math.max(0, Math.round(ms * 1000));
  const days = Math.floor(us / 86_400_000_000);
  let rest = us - days * 86_400_000_000;
  const h = Math.floor(rest / 3_600_000_000); rest -= h * 3_600_000_000;
  const m = Math.floor(rest / 60_000_000); rest -= m * 60_000_000;
  const s = Math.floor(rest / 1_000_000); rest -= s * 1_000_000;
  const hms = `${h}:${String(m).padStart(2, '0')}:${String(s).padStart(2, '0')}${rest > 0 ? `.${String(rest).padStart(6, '0')}` : ''}`;
  return days > 0 ? `${days} day${days === 1 ? '' : 's'}, ${hms}` : hms;
}

/** How soon a cycle whose close failed (a full disk, say) is tried again. */
const CLOSE_RETRY_MS = 5000;

/** setTimeout's longest delay; longer cycle ends are reached by re-arming. */
const MAX_TIMER_MS = 2 ** 31 - 1;

export interface CycleClosed { processId: number; cycle: number; checkpoint: number; reports: number; done: boolean }

/**
 * Emits 'cycle-closed' (CycleClosed) after a cycle's checkpoint is committed, and 'cycle-overdue' when a
 * cycle's end passed without enough reports to close it (it closes at the report that makes enough),
 * and 'changed' (the process id) whenever what fl-list-processes shows of a process changed.
 */
export class FlEngine extends EventEmitter<{ 'cycle-closed': [CycleClosed]; 'cycle-overdue': [{ processId: number; cycle: number; reports: number; needed: number }]; changed: [number] }> {
  private readonly store: FlStore;
  private readonly log: Logger;
  private readonly auth: AuthCheck;
  private readonly now: () => number;
  private readonly onActivity: (a: FlActivity) => void;
  private readonly runtimes = new Map<number, Runtime>();
  /** Runtimes being read from the store. */
  private readonly loading = new Map<number, Promise<Runtime>>();
  /** Reports checked and waiting for the next batched commit (flushReports). */
  private readonly pendingReports: PendingReport[] = [];
  private readonly limiter: AddressLimiter;
  private readonly publish: FlEngineOptions['publish'];
  /** Per process: the checkpoints being stored as model versions (one at a time, in order). */
  private readonly publishing = new Map<number, Promise<void>>();
  private closed = false;

  constructor(opts: FlEngineOptions) {
    super();
    this.store = opts.store;
    this.log = opts.log;
    this.auth = opts.auth ?? checkAuth;
    this.now = opts.now ?? Date.now;
    this.onActivity = opts.onActivity ?? (() => undefined);
    this.limiter = new AddressLimiter(opts.requestsPerMinute ?? 600, this.now);
    this.publish = opts.publish;
  }

  /** Picks every process's open cycle back up: the running sum from its stored diffs, its timer, and a close that is due. */
  async start(): Promise<void> {
    for (const p of await this.store.processes()) {
      const rt = await this.runtime(p.id);
      if (rt.cycle === undefined) continue;
      this.log.info({ process: `${p.name}@${p.version}`, cycle: rt.cycle.sequence, reports: rt.sum?.reports ?? 0 }, 'FL cycle resumed');
      this.maybeClose(rt);
    }
    // Checkpoints committed before a kill but not yet stored as model versions.
    for (const p of await this.store.processes()) if (p.linkedModel !== undefined) this.publishCheckpoints(p);
  }

  // --- hosting ---------------------------------------------------------------------------------------

  async host(input: HostInput): Promise<FlProcess> {
    const clientConfig = checkClientConfig(input.clientConfig);
    const serverConfig = checkServerConfig(input.serverConfig);
    if (await this.store.findProcess(clientConfig.name, clientConfig.version)) throw gridError('ALREADY_EXISTS', PYGRID.processExists);
    const format: ModelFormat = input.model[0] === 0x08 ? 'onnx' : 'state';
    const { specs } = paramsOf(format, input.model);
    const assets: Omit<FlAsset, 'id'>[] = [];
    for (const [kind, group] of [['plan', input.plans], ['protocol', input.protocols]] as const) {
      for (const [name, variants] of Object.entries(group)) {
        for (const [variant, bytes] of Object.entries(variants)) assets.push({ kind, name, variant, bytes });
      }
    }
    if (input.averagingPlan !== undefined) {
      if (!looksLikeOnnx(input.averagingPlan)) {
        throw gridError('INVALID_MODEL', 'averaging_plan is a PySyft-serialized Plan, which only PySyft can run: this node cannot run it. Leave averaging_plan out (the node averages the diffs element-wise, weighted by each worker\'s samples) or give an ONNX averaging graph');
      }
      assets.push({ kind: 'averaging', name: 'averaging_plan', variant: 'onnx', bytes: input.averagingPlan });
    }
    const { sha256 } = await this.store.blobs.write(Readable.from([input.model]));
    const now = this.now();
    const process = await this.store.createProcess({ name: clientConfig.name, version: clientConfig.version, owner: input.owner, format, params: specs, clientConfig, serverConfig, linkedModel: input.linked?.id }, assets, sha256, endOf(serverConfig, now), now, input.linked?.version);
    if (process === undefined) throw gridError('ALREADY_EXISTS', PYGRID.processExists);
    this.runtimes.delete(process.id);
    await this.runtime(process.id);
    this.log.info({ process: `${process.name}@${process.version}`, id: process.id, owner: input.owner, format, params: specs.length }, 'FL process hosted');
    this.emit('changed', process.id);
    return process;
  }

  // --- workers ---------------------------------------------------------------------------------------

  async authenticate(data: { auth_token?: string | null | undefined; model_name: string; model_version?: string | null | undefined }, address: string): Promise<{ status: 'success'; worker_id: string; requires_speed_test: boolean }> {
    this.limiter.take(address, 'authenticate');
    const process = await this.store.findProcess(data.model_name, data.model_version ?? undefined);
    if (process === undefined) throw gridError('NOT_FOUND', PYGRID.processNotFound);
    const token = typeof data.auth_token === 'string' && data.auth_token.length > 0 ? data.auth_token : undefined;
    const result = await this.auth(process.serverConfig.authentication, token);
    if (!result.ok) throw gridError('BAD_CREDENTIALS', result.error);
    const workerId = await this.store.addWorker(process.id, address, this.now());
    return { status: 'success', worker_id: workerId, requires_speed_test: requiresSpeedTest(process.serverConfig) };
  }

  async cycleRequest(data: CycleRequest, address: string): Promise<CycleReply> {
    this.limiter.take(address, 'cycle-request');
    const reply = await this.answerCycleRequest(data);
    const processId = reply.status === 'accepted' ? reply.model_id : (await this.store.findProcess(data.model, data.version ?? undefined))!.id;
    this.onActivity({
      kind: 'worker', processId, cycle: this.runtimes.get(processId)?.cycle?.sequence, workerId: data.worker_id, status: reply.status,
      ...(reply.status === 'rejected' && { reason: reply.reason }),
    });
    return reply;
  }

  private async answerCycleRequest(data: CycleRequest): Promise<CycleReply> {
    const worker = await this.store.worker(data.worker_id);
    if (worker === undefined) throw gridError('NOT_FOUND', PYGRID.processNotFound);
    const process = await this.store.findProcess(data.model, data.version ?? undefined);
    if (process === undefined) throw gridError('NOT_FOUND', PYGRID.processNotFound);
    if (worker.processId !== process.id) {
      throw gridError('FORBIDDEN', `worker ${data.worker_id} authenticated for another FL process; authenticate for ${process.name} ${process.version} first`);
    }
    const cfg = process.serverConfig;
    const speeds = checkSpeeds(data, requiresSpeedTest(cfg));
    const rt = await this.runtime(process.id);
    const cycle = rt.cycle;
    const now = this.now();
    const reject = (reason: string): CycleReply => {
      const out: CycleReply = { status: 'rejected', reason };
      // PyGrid: a timeout until the cycle ends, only while cycles remain.
      if (cycle?.endMs !== undefined) {
        const left = Math.max(0, cycle.endMs - now);
        out.timeout = timedeltaString(left);
      }
      return out;
    };
    if (cycle === undefined) return { status: 'rejected', reason: `FL process ${process.name} ${process.version} is done: all ${cfg.num_cycles ?? 0} cycles completed` };
    if (rt.closing !== undefined) return reject('the cycle is closing; ask again for the next one');
    if (await this.store.assignment(cycle.id, worker.id) !== undefined) return reject('this worker is already in this cycle');
    const reuse = cfg.do_not_reuse_workers_until_cycle;
    if (reuse !== undefined && reuse > 0 && await this.store.workedRecently(process.id, worker.id, cycle.sequence, reuse)) {
      return reject(`this worker took part in one of the last ${reuse} cycles (do_not_reuse_workers_until_cycle)`);
    }
    if (cfg.minimum_download_speed !== undefined && !(speeds.download >= cfg.minimum_download_speed)) {
      return reject(`download speed ${speeds.download} is below the minimum of ${cfg.minimum_download_speed}`);
    }
    if (cfg.minimum_upload_speed !== undefined && !(speeds.upload >= cfg.minimum_upload_speed)) {
      return reject(`upload speed ${speeds.upload} is below the minimum of ${cfg.minimum_upload_speed}`);
    }
    const assigned = await this.store.assignedCount(cycle.id);
    // Not capped by max_diffs: workers drop out, and the first max_diffs reports close the cycle anyway.
    const capacity = cfg.max_workers ?? Infinity;
    if (assigned >= capacity) return reject(`the cycle is full (${assigned} of ${capacity} workers)`);
    if (cfg.pool_selection === 'random' && capacity !== Infinity) {
      // A uniform random sample of the pool (selection sampling, Knuth's Algorithm S): with N workers
      // authenticated for the process and `seen` of them already decided this cycle, the next one gets
      // one of the free places with probability free / (N − seen). When every worker asks, exactly
      // max_workers are chosen, each set equally likely.
      const pool = Math.max(await this.store.workerCount(process.id) - rt.randomSeen, 1);
      const free = capacity - assigned;
      rt.randomSeen += 1;
      if (free < pool && Math.random() >= free / pool) return reject('not selected this cycle (pool_selection random)');
    }
    const requestKey = createHash('sha256').update(randomUUID()).digest('hex');
    await this.store.assign(cycle.id, worker.id, requestKey, now);
    this.emit('changed', process.id);
    return {
      status: 'accepted', request_key: requestKey, version: process.version, model: process.name,
      plans: await this.store.assetIds(process.id, 'plan'), protocols: await this.store.assetIds(process.id, 'protocol'),
      client_config: process.clientConfig, model_id: process.id,
    };
  }

  /**
   * A worker's diff (base64 State, diff = old − new). Idempotent per request key: a repeat is answered
   * success and not counted again. A diff that does not decode, has the wrong shapes or a non-finite value
   * is refused before it touches the sum.
   */
  async report(data: { worker_id: string; request_key: string; diff: string; num_samples?: number | undefined }): Promise<{ status: 'success' }> {
    const a = await this.store.assignmentByKey(data.request_key);
    if (a === undefined || a.workerId !== data.worker_id) throw gridError('FORBIDDEN', PYGRID.invalidRequestKey);
    if (a.reportedMs !== undefined) return { status: 'success' };
    const cycle = (await this.store.cycle(a.cycleId))!;
    const rt = await this.runtime(cycle.processId);
    if (cycle.completedMs !== undefined || rt.cycle?.id !== cycle.id || rt.closing !== undefined) throw cycleClosed(cycle.sequence);
    const weight = data.num_samples ?? 1;
    // A whole count of local rows: a worker's weight in the average is what it says it trained on, so an
    // absurd count (1e308) must not overflow the sum or silence every other worker.
    if (!Number.isInteger(weight) || weight <= 0 || weight > MAX_NUM_SAMPLES) {
      throw gridError('INVALID_MESSAGE', `num_samples must be a whole number from 1 to ${MAX_NUM_SAMPLES}, got ${weight}`);
    }
    const bytes = decodeText(data.diff, 'base64');
    if (bytes === undefined) throw gridError('INVALID_TENSOR', 'the diff is not base64 text');
    const diff = decodeState(bytes, 'the diff');
    checkShapes(diff, rt.process.params.map((p) => p.dims));
    return new Promise((resolve, reject) => {
      this.pendingReports.push({ rt, cycleId: cycle.id, sequence: cycle.sequence, requestKey: data.request_key, workerId: data.worker_id, diff, weight, resolve, reject });
      if (this.pendingReports.length === 1) setImmediate(() => void this.flushReports());
    });
  }

  /**
   * Commits the reports that arrived since the last flush in one transaction (one fsync for all of
   * them: the database syncs every commit), then adds them to their cycles' sums and answers them. A
   * report is answered only once it is committed; one whose cycle began closing meanwhile is refused.
   */
  private async flushReports(): Promise<void> {
    const batch = this.pendingReports.splice(0);
    const now = this.now();
    let recorded: (boolean | undefined)[];
    try {
      recorded = await this.store.db.transaction(async () => {
        const out: (boolean | undefined)[] = [];
        for (const r of batch) {
          out.push(r.rt.cycle?.id !== r.cycleId || r.rt.closing !== undefined ? undefined : await this.store.recordReport(r.requestKey, packDiff(r.diff), r.weight, now));
        }
        return out;
      });
    } catch (err) {
      for (const r of batch) r.reject(err);
      return;
    }
    const touched = new Set<Runtime>();
    batch.forEach((r, i) => {
      if (recorded[i] === undefined) return r.reject(cycleClosed(r.sequence));
      if (recorded[i]) {
        r.rt.sum!.add(r.diff, r.weight);
        touched.add(r.rt);
        this.onActivity({ kind: 'worker', processId: r.rt.process.id, cycle: r.sequence, workerId: r.workerId, status: 'reported' });
      }
      r.resolve({ status: 'success' });
    });
    for (const rt of touched) {
      this.emit('changed', rt.process.id);
      this.maybeClose(rt);
    }
  }

  /**
   * The process a download with this worker id and request key may read (PyGrid: the key of the worker
   * in the process's last open cycle). FORBIDDEN with PyGrid's "Invalid request key!" otherwise.
   */
  async checkKey(workerId: string, requestKey: string, modelId?: number): Promise<FlProcess> {
    const a = await this.store.assignmentByKey(requestKey);
    if (a === undefined || a.workerId !== workerId) throw gridError('FORBIDDEN', PYGRID.invalidRequestKey);
    const cycle = (await this.store.cycle(a.cycleId))!;
    if (modelId !== undefined && cycle.processId !== modelId) throw gridError('FORBIDDEN', PYGRID.invalidRequestKey);
    if (cycle.completedMs !== undefined) throw gridError('CYCLE_CLOSED', `cycle ${cycle.sequence} of this FL process has already closed; request a new cycle`);
    return (await this.runtime(cycle.processId)).process;
  }

  /** The bytes of a checkpoint (`latest`, an alias or a number) of a process. */
  async checkpointBytes(processId: number, which: number | string = 'latest'): Promise<{ bytes: Uint8Array; number: number } | undefined> {
    const c = await this.store.checkpoint(processId, which);
    if (c === undefined) return undefined;
    return { bytes: await readFile(this.store.blobs.pathOf(c.sha256)), number: c.number };
  }

  /**
   * Stores the process's checkpoints that are not model versions yet as the linked model's next versions,
   * in order, each with the previous one as its parent. Queued per process; failures are logged and
   * retried at the next close or start.
   */
  private publishCheckpoints(p: FlProcess): void {
    const publish = this.publish;
    if (publish === undefined || p.linkedModel === undefined) return;
    const run = async () => {
      let parent: string | undefined;
      for (const c of await this.store.checkpoints(p.id)) {
        if (c.modelVersion !== undefined) { parent = c.modelVersion; continue; }
        if (parent === undefined || this.closed) return;
        const bytes = await readFile(this.store.blobs.pathOf(c.sha256));
        await publish(p, { number: c.number, bytes }, parent, (version) => this.store.setModelVersion(p.id, c.number, version));
        parent = (await this.store.checkpoint(p.id, c.number))?.modelVersion;
        this.log.info({ process: `${p.name}@${p.version}`, checkpoint: c.number, model: `${p.linkedModel}@${parent}` }, 'FL checkpoint stored as a model version');
      }
    };
    const prev = this.publishing.get(p.id) ?? Promise.resolve();
    const next = prev.then(run).catch((err: unknown) => {
      this.log.error({ err, process: p.id }, 'storing an FL checkpoint as a model version failed; retried at the next close or restart');
    });
    this.publishing.set(p.id, next);
  }

  /** Resolves when every checkpoint queued for a model version has been stored (or failed). */
  async published(processId: number): Promise<void> {
    await this.publishing.get(processId);
  }

  /** Stops the timers (the node is closing); cycles continue at the next start. Idempotent. */
  async close(): Promise<void> {
    // Reports already checked are committed (and answered) before the database closes.
    if (this.pendingReports.length > 0) await this.flushReports();
    this.closed = true;
    const pending: Promise<void>[] = [...this.publishing.values()];
    for (const rt of this.runtimes.values()) {
      if (rt.timer) clearTimeout(rt.timer);
      rt.timer = undefined;
      if (rt.closing) pending.push(rt.closing.catch(() => undefined));
    }
    await Promise.all(pending);
  }

  // --- cycles ----------------------------------------------------------------------------------------

  private async runtime(processId: number): Promise<Runtime> {
    const rt = this.runtimes.get(processId);
    if (rt !== undefined) return rt;
    // One load per process, however many requests ask for it meanwhile.
    let loading = this.loading.get(processId);
    if (loading === undefined) {
      loading = (async () => {
        const process = await this.store.process(processId);
        if (process === undefined) throw gridError('NOT_FOUND', PYGRID.processNotFound);
        const loaded: Runtime = { process, cycle: undefined, sum: undefined, timer: undefined, closing: undefined, randomSeen: 0 };
        await this.open(loaded, await this.store.openCycle(processId));
        this.runtimes.set(processId, loaded);
        return loaded;
      })().finally(() => this.loading.delete(processId));
      this.loading.set(processId, loading);
    }
    return loading;
  }

  /** Makes `cycle` the runtime's open cycle: its running sum from the stored diffs, and its timer. */
  private async open(rt: Runtime, cycle: FlCycle | undefined): Promise<void> {
    rt.cycle = cycle;
    rt.sum = undefined;
    rt.randomSeen = 0;
    if (rt.timer) clearTimeout(rt.timer);
    rt.timer = undefined;
    if (cycle === undefined) return;
    const shapes = rt.process.params.map((p) => p.dims);
    rt.sum = new RunningSum(shapes);
    for await (const r of this.store.reportedDiffs(cycle.id)) rt.sum.add(unpackDiff(r.diff, shapes), r.weight);
    this.arm(rt);
  }

  private arm(rt: Runtime): void {
    const end = rt.cycle?.endMs;
    if (end === undefined || this.closed) return;
    const wait = Math.min(MAX_TIMER_MS, Math.max(0, end - this.now()));
    rt.timer = setTimeout(() => {
      rt.timer = undefined;
      if (this.now() < end) return this.arm(rt);
      this.maybeClose(rt);
      if (rt.closing === undefined && rt.cycle !== undefined) {
        const needed = minReports(rt.process.serverConfig);
        this.log.info({ process: rt.process.id, cycle: rt.cycle.sequence, reports: rt.sum?.reports ?? 0, needed }, 'FL cycle ended with too few reports; it closes when enough arrive');
        this.emit('cycle-overdue', { processId: rt.process.id, cycle: rt.cycle.sequence, reports: rt.sum?.reports ?? 0, needed });
      }
    }, wait);
    rt.timer.unref();
  }

  /** Closes the open cycle when it is ready: enough reports, and max_diffs reached or its end passed. */
  private maybeClose(rt: Runtime): void {
    const cycle = rt.cycle;
    const sum = rt.sum;
    if (cycle === undefined || sum === undefined || rt.closing !== undefined || this.closed) return;
    const cfg = rt.process.serverConfig;
    const enough = sum.reports >= minReports(cfg);
    const full = cfg.max_diffs !== undefined && sum.reports >= cfg.max_diffs;
    const timeUp = cycle.endMs !== undefined && this.now() >= cycle.endMs;
    if (!enough || !(full || timeUp)) return;
    rt.closing = this.closeCycle(rt, cycle, sum).then(
      () => { rt.closing = undefined; },
      (err: unknown) => {
        rt.closing = undefined;
        this.log.error({ err, process: rt.process.id, cycle: cycle.sequence }, `closing an FL cycle failed; it stays open and is retried in ${CLOSE_RETRY_MS / 1000} s`);
        if (this.closed) return;
        if (rt.timer) clearTimeout(rt.timer);
        rt.timer = setTimeout(() => { rt.timer = undefined; this.maybeClose(rt); }, CLOSE_RETRY_MS);
        rt.timer.unref();
      },
    );
  }

  private async closeCycle(rt: Runtime, cycle: FlCycle, sum: RunningSum): Promise<void> {
    const p = rt.process;
    const latest = await this.store.checkpoint(p.id);
    if (latest === undefined) throw gridError('INTERNAL', `FL process ${p.id} has no checkpoint`);
    const oldBytes = await readFile(this.store.blobs.pathOf(latest.sha256));
    const old: StateTensor[] = paramsOf(p.format, oldBytes).tensors;
    const reports = sum.reports;
    const averaged = sum.apply(old);
    const overflowed = keepFinite(averaged, old);
    if (overflowed > 0) {
      this.log.warn({ process: `${p.name}@${p.version}`, cycle: cycle.sequence, values: overflowed }, 'FL average left float32 range for some parameters; kept their old values');
    }
    const next = withNewParams(p.format, oldBytes, p.params, averaged);
    const { sha256 } = await this.store.blobs.write(Readable.from([next]));
    const now = this.now();
    const cfg = p.serverConfig;
    const completed = await this.store.completedCycles(p.id) + 1;
    const more = (cfg.num_cycles ?? 0) === 0 || completed < cfg.num_cycles!;
    const number = await this.store.closeCycle(cycle, sha256, reports, now, more ? { endMs: endOf(cfg, now) } : null);
    if (number === undefined) return;
    this.log.info({ process: `${p.name}@${p.version}`, cycle: cycle.sequence, reports, weight: sum.weight, checkpoint: number, done: !more }, 'FL cycle averaged');
    await this.open(rt, await this.store.openCycle(p.id));
    this.emit('changed', p.id);
    if (p.linkedModel !== undefined) this.publishCheckpoints(p);
    this.emit('cycle-closed', { processId: p.id, cycle: cycle.sequence, checkpoint: number, reports, done: !more });
  }
}

interface PendingReport {
  rt: Runtime;
  cycleId: number;
  sequence: number;
  requestKey: string;
  workerId: string;
  diff: StateTensor[];
  weight: number;
  resolve(reply: { status: 'success' }): void;
  reject(err: unknown): void;
}

/** The largest `num_samples` a report may carry (a worker's local rows). */
const MAX_NUM_SAMPLES = 10_000_000;

/**
 * Replaces every value of `next` that is not finite (old − mean(diff) past float32's range, from diffs that
 * are each finite) with the old value, so a checkpoint never carries Inf/NaN to workers; how many there were.
 */
function keepFinite(next: StateTensor[], old: readonly StateTensor[]): number {
  let n = 0;
  next.forEach((t, i) => {
    const d = t.data;
    for (let k = 0; k < d.length; k++) {
      if (!Number.isFinite(d[k]!)) { d[k] = old[i]!.data[k]!; n++; }
    }
  });
  return n;
}

function cycleClosed(sequence: number) {
  return gridError('CYCLE_CLOSED', `cycle ${sequence} of this FL process has already closed; request a new cycle`);
}

function endOf(cfg: ServerConfig, now: number): number | undefined {
  return cfg.cycle_length === undefined ? undefined : now + Math.round(cfg.cycle_length * 1000);
}

/**
 * PyGrid's checks of ping/download/upload (§1.6): a given value must be a number ≥ 0 ("'<field>' needs to
 * be a positive number"); a missing one is an error only while a speed test is required. KotlinSyft's
 * `ping: -1` without a speed test is accepted.
 */
function checkSpeeds(data: CycleRequest, required: boolean): { ping: number; download: number; upload: number } {
  const out = { ping: 0, download: 0, upload: 0 };
  for (const field of ['ping', 'download', 'upload'] as const) {
    const v = data[field];
    if (v === undefined || v === null) {
      if (required) throw gridError('INVALID_MESSAGE', `'${field}' is required`);
      continue;
    }
    if (field === 'ping' && v === -1 && !required) continue;
    if (typeof v !== 'number' || !Number.isFinite(v) || v < 0) throw gridError('INVALID_MESSAGE', `'${field}' needs to be a positive number`);
    out[field] = v;
  }
  return out;
}
