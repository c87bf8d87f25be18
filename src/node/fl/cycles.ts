// The model-centric FL engine: hosting, worker authentication, cycle assignment (PyGrid's accept/reject
// rules plus the server_config keys PyGrid ignored), reports and the closing of a cycle, by count when a
// report arrives or by time on a timer. Errors carry PyGrid's own strings where PyGrid had one, so an old
// client shows the message it knows; their codes are ours (handlers.ts puts both on the wire).
//
// Durability: every decision is a committed row before it is answered (store.ts). Decisions and reports
// arriving within one event-loop turn share one transaction (a group commit, store/group-commit.ts): one
// fsync for the batch, each answered after it. Each replica's running sum of a cycle (its partial)
// lives in memory and is stored with each commit that adds to it (store.ts, running sums). Closing is two
// short transactions around the averaging (closeCycle): the first marks the cycle closing by one replica
// (the claim: replicas may all try, one marks it; reports are refused from then on), the averaging of every
// replica's committed partial and the checkpoint's blob happen outside any transaction, and the second
// commits the checkpoint and opens the next cycle if that replica still holds the mark. A closer killed in
// between is taken over, so each cycle is averaged exactly once (docs/replicas.md, Model-centric FL
// across replicas).

import { createHash, randomInt, randomUUID } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { readFile } from 'node:fs/promises';
import { Readable } from 'node:stream';
import { ErrorCodes, gridError, toGridError, type GridError } from '../../core/errors';
import type { Logger } from '../../core/logger';
import { checkClientConfig, checkServerConfig, minReports, requiresSpeedTest, type ServerConfig } from './config';
import { DEFAULT_ENDPOINT_TIMEOUT_MS, endpointAllowed, verifyWorkerToken, type FlAuthConfig } from './auth';
import { AddressLimiter, WorkerRows } from './limits';
import { looksLikeOnnx, paramsOf, withNewParams, type ModelFormat } from './params';
import { DiffBuffers, RunningSum, unpackDiff } from './averaging';
import { checkAveragingPlan, runAveragingPlan } from './averaging-plan';
import { GroupCommit } from '../store/group-commit';
import { RECONNECTED } from '../store/sql';
import { checkShapes, decodeStateText, type StateTensor } from './state';
import type { JsonText } from '../../core/protocol/text-bytes';
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
  /** The owner's role: only an admin may name an `authentication.endpoint` the operator did not list. */
  role?: string | undefined;
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
  /** This replica's partial sum of the cycle's reports (the ones it accepted since it started). */
  sum: RunningSum | undefined;
  /** Which of the cycle's two sum files holds this replica's committed sum; the next commit writes the other. */
  sumSlot: 0 | 1;
  /** How many diffs an older node stored as rows the sum holds (the next stored sum clears them). */
  rowDiffs: number;
  /** The cycle's committed reports, through every replica, as last counted (what closing by count looks at). */
  reports: number;
  /** A count of the reports in flight (recount), and whether another was asked for meanwhile. */
  counting: Promise<void> | undefined;
  recount: boolean;
  timer: NodeJS.Timeout | undefined;
  /**
   * pool_selection random: who was not selected in this cycle (refusalKey: the token's hash where the
   * process checks tokens, else the worker id); the refusal stands until the cycle ends.
   */
  refused: Set<string>;
  /** pool_selection random: the draw collecting this cycle's askers, when one is open. */
  draw: Draw | undefined;
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
  /** pool_selection random: how long a draw collects askers before it picks among them (default 1000 ms). */
  selectionWindowMs?: number;
  /** Worker rows of one process from one address (default 4096); limits.ts WorkerRows. */
  maxWorkersPerAddress?: number;
  /**
   * URLs (prefixes) a non-admin host may name as `server_config.authentication.endpoint`; the node POSTs
   * each worker's token there, from inside its network. Default none: only admins may use an endpoint.
   */
  authEndpoints?: readonly string[];
  /** How long the endpoint check waits for the status line (default 5000 ms). */
  authEndpointTimeoutMs?: number;
  /**
   * Stores a checkpoint of a linked process as the next version of its model (parent: `parentVersion`),
   * calling `commit(version)` inside the model's own transaction.
   */
  publish?(process: FlProcess, checkpoint: { number: number; bytes: Uint8Array }, parentVersion: string, commit: (version: string) => Promise<void>): Promise<void>;
  now?(): number;
  /**
   * PostgreSQL: how long a cycle may stay marked closing by another replica before this one takes its
   * close over (that closer died or hangs between its first and last step; default 120 000 ms). The
   * embedded node takes a mark left by an earlier run over at once (it is the only process).
   */
  closeTakeoverMs?: number;
  /** Tests: awaited between the steps of a close (after the mark commits; after the checkpoint blob is written). */
  closeStep?(step: 'marked' | 'written', at: { processId: number; cycle: number }): Promise<void>;
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
/** Diff buffers kept for reuse (DiffBuffers): the reports a few batches hold at once, ~13 MiB for a 100k-parameter model. */
const MAX_POOLED_DIFFS = 32;

/** closeTakeoverMs's default. */
const CLOSE_TAKEOVER_MS = 120_000;

/** The store notification channel on which replicas tell each other of new processes and closed cycles. */
const CYCLES_CHANNEL = 'fl-cycles';

/** setTimeout's longest delay; longer cycle ends are reached by re-arming. */
const MAX_TIMER_MS = 2 ** 31 - 1;

export interface CycleClosed { processId: number; cycle: number; checkpoint: number; reports: number; done: boolean }

/** A partial sum whose file was gone when its cycle closed: its reports are not in the average (closeCycle). */
export interface CycleSumLost { processId: number; cycle: number; replica: string; reports: number; error: GridError }

/**
 * Emits 'cycle-closed' (CycleClosed) after a cycle's checkpoint is committed, and 'cycle-overdue' when a
 * cycle's end passed without enough reports to close it (it closes at the report that makes enough),
 * and 'changed' (the process id) whenever what fl-list-processes shows of a process changed. Emits
 * 'cycle-sum-lost' (CycleSumLost) when a close found a partial sum's file missing.
 */
export class FlEngine extends EventEmitter<{ 'cycle-closed': [CycleClosed]; 'cycle-sum-lost': [CycleSumLost]; 'cycle-overdue': [{ processId: number; cycle: number; reports: number; needed: number }]; changed: [processId: number, shared?: boolean] }> {
  private readonly store: FlStore;
  private readonly log: Logger;
  private readonly auth: AuthCheck;
  private readonly now: () => number;
  private readonly onActivity: (a: FlActivity) => void;
  private readonly runtimes = new Map<number, Runtime>();
  /** Runtimes being read from the store. */
  private readonly loading = new Map<number, Promise<Runtime>>();
  /** Worker ids, assignments and reports: one transaction per event-loop turn. */
  private readonly commits: GroupCommit;
  /** Runtimes whose sum the batch being committed added to, with how many reports (their sums are stored before its COMMIT). */
  private readonly sumsAdded = new Map<Runtime, number>();
  /** Where reports' diffs are decoded to (MAX_POOLED_DIFFS kept). */
  private readonly diffBuffers = new DiffBuffers(MAX_POOLED_DIFFS);
  /**
   * Worker id → the hash of the token it authenticated with, for processes that check tokens: a refusal
   * is keyed on the token, which a worker cannot renew by authenticating again (refusalKey). In memory,
   * like the refusals themselves; the oldest entries go past MAX_TOKEN_KEYS.
   */
  private readonly tokenKeys = new Map<string, string>();
  /**
   * Request key → what a report needs to know of its assignment before it is decoded: the assignments this
   * replica made (from the commit that stored them) or read, the oldest dropped past MAX_KNOWN_KEYS. Only
   * committed facts that never change (worker, cycle, process), and `reported`, which only becomes true:
   * a report checked against a stale entry is still recorded once (recordReport), and refused in its batch
   * when its cycle closed meanwhile on any replica (lockCycle). Spares every report a read that waited for
   * the group commit in flight, with its frame held meanwhile.
   */
  private readonly knownKeys = new Map<string, KnownKey>();
  /** Assignments made by the batch being committed: known once it committed. */
  private keysAdded: [string, KnownKey][] = [];
  /** Draw entries made by the batch being committed (taken out again if it rolls back). */
  private drawJoins: { draw: Draw; workerId: string; waiter: Waiter }[] = [];
  private readonly limiter: AddressLimiter;
  private readonly workerRows: WorkerRows;
  private readonly publish: FlEngineOptions['publish'];
  private readonly authEndpoints: readonly string[];
  private readonly selectionWindowMs: number;
  private readonly closeTakeoverMs: number;
  private readonly closeStep: FlEngineOptions['closeStep'];
  /** Per process: the checkpoints being stored as model versions (one at a time, in order). */
  private readonly publishing = new Map<number, Promise<void>>();
  /** Stops listening to the other replicas (listenToReplicas). */
  private readonly unlisten: (() => void)[] = [];
  private closed = false;

  constructor(opts: FlEngineOptions) {
    super();
    this.store = opts.store;
    this.log = opts.log;
    const endpointTimeoutMs = opts.authEndpointTimeoutMs ?? DEFAULT_ENDPOINT_TIMEOUT_MS;
    this.auth = opts.auth ?? ((config, token) => verifyWorkerToken(config as FlAuthConfig | undefined, token, { endpointTimeoutMs }));
    this.authEndpoints = opts.authEndpoints ?? [];
    this.selectionWindowMs = opts.selectionWindowMs ?? DEFAULT_SELECTION_WINDOW_MS;
    this.now = opts.now ?? Date.now;
    this.onActivity = opts.onActivity ?? (() => undefined);
    this.limiter = new AddressLimiter(opts.requestsPerMinute ?? 600, this.now);
    this.workerRows = new WorkerRows(opts.maxWorkersPerAddress ?? 4096);
    this.publish = opts.publish;
    this.closeTakeoverMs = opts.closeTakeoverMs ?? CLOSE_TAKEOVER_MS;
    this.closeStep = opts.closeStep;
    this.commits = new GroupCommit(this.store.db, {
      beforeCommit: () => this.storeSums(),
      committed: () => this.sumsCommitted(),
      rolledBack: () => this.sumsRolledBack(),
    });
  }

  /** Picks every process's open cycle back up: its stored running sum, its timer, and a close that is due. */
  async start(): Promise<void> {
    this.listenToReplicas();
    for (const p of await this.store.processes()) {
      const rt = await this.runtime(p.id);
      if (rt.cycle === undefined) continue;
      this.log.info({ process: `${p.name}@${p.version}`, cycle: rt.cycle.sequence, reports: rt.reports }, 'FL cycle resumed');
      this.maybeClose(rt);
    }
    // Checkpoints committed before a kill but not yet stored as model versions.
    for (const p of await this.store.processes()) if (p.linkedModel !== undefined) this.publishCheckpoints(p);
  }

  // --- hosting ---------------------------------------------------------------------------------------

  async host(input: HostInput): Promise<FlProcess> {
    const clientConfig = checkClientConfig(input.clientConfig);
    const serverConfig = checkServerConfig(input.serverConfig);
    const endpoint = (serverConfig.authentication as FlAuthConfig | undefined)?.endpoint;
    if (endpoint !== undefined && input.role !== 'admin' && !endpointAllowed(endpoint, this.authEndpoints)) {
      // The node would POST every worker's token to it from inside its network (a server-side request forgery).
      throw gridError('FORBIDDEN', `server_config.authentication.endpoint ${JSON.stringify(endpoint.slice(0, 200))} is not one this node's operator allows (fl.authEndpoints / --fl-auth-endpoint); only an admin may host a process that checks tokens at another endpoint`, { key: 'server_config.authentication.endpoint' });
    }
    if (await this.store.findProcess(clientConfig.name, clientConfig.version)) throw gridError('ALREADY_EXISTS', PYGRID.processExists);
    const format: ModelFormat = input.model[0] === 0x08 ? 'onnx' : 'state';
    const { specs, tensors } = paramsOf(format, input.model);
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
      await checkAveragingPlan(input.averagingPlan, specs, tensors);
      assets.push({ kind: 'averaging', name: 'averaging_plan', variant: 'onnx', bytes: input.averagingPlan });
    }
    const { sha256 } = await this.store.blobs.write(Readable.from([input.model]));
    const now = this.now();
    const process = await this.store.createProcess({ name: clientConfig.name, version: clientConfig.version, owner: input.owner, format, params: specs, clientConfig, serverConfig, linkedModel: input.linked?.id }, assets, sha256, endOf(serverConfig, now), now, input.linked?.version);
    if (process === undefined) throw gridError('ALREADY_EXISTS', PYGRID.processExists);
    this.runtimes.delete(process.id);
    await this.runtime(process.id);
    this.log.info({ process: `${process.name}@${process.version}`, id: process.id, owner: input.owner, format, params: specs.length }, 'FL process hosted');
    // The other replicas arm its cycle's timer too (any of them may close it).
    await this.announce(process.id).catch((err: unknown) => this.log.warn({ err, process: process.id }, 'could not tell the other replicas of a new FL process; they load it at its first request'));
    this.emit('changed', process.id, true);
    return process;
  }

  // --- workers ---------------------------------------------------------------------------------------

  /** `connection`: the socket it came on (WS); the same one authenticating again for the same process and token gets the same worker. */
  async authenticate(data: { auth_token?: string | null | undefined; model_name: string; model_version?: string | null | undefined }, address: string, connection?: object): Promise<{ status: 'success'; worker_id: string; requires_speed_test: boolean }> {
    this.limiter.take(address, 'authenticate');
    const process = await this.store.findProcess(data.model_name, data.model_version ?? undefined);
    if (process === undefined) throw gridError('NOT_FOUND', PYGRID.processNotFound);
    // Loaded before the batch: its work must not wait for a load outside it (store/group-commit.ts).
    const rt = await this.runtime(process.id);
    const token = typeof data.auth_token === 'string' && data.auth_token.length > 0 ? data.auth_token : undefined;
    const result = await this.auth(process.serverConfig.authentication, token);
    if (!result.ok) throw gridError('BAD_CREDENTIALS', result.error);
    // Worker rows are written in the next group commit (one fsync per burst), answered after it.
    const workerId = await this.commits.run(async () => {
      const known = this.workerRows.known(connection, process.id, token);
      if (known !== undefined && await this.store.worker(known) !== undefined) return known;
      await this.workerRows.makeRoom(this.store, connection, process, address, () => this.evictionCycle(rt), this.now());
      const added = await this.store.addWorker(process.id, address, this.now());
      this.workerRows.remember(connection, process.id, token, added);
      return added;
    });
    if (process.serverConfig.authentication !== undefined && token !== undefined) {
      this.tokenKeys.delete(workerId);
      this.tokenKeys.set(workerId, `token:${createHash('sha256').update(token).digest('hex')}`);
      if (this.tokenKeys.size > MAX_TOKEN_KEYS) this.tokenKeys.delete(this.tokenKeys.keys().next().value!);
    }
    return { status: 'success', worker_id: workerId, requires_speed_test: requiresSpeedTest(process.serverConfig) };
  }

  /**
   * In a batch, before a worker row is evicted to make room (limits.ts WorkerRows): the open cycle, locked
   * as for an assignment (lockOpenCycle), so no replica assigns a worker between the choice of the row and
   * its delete; 'closing' while it closes (not locked then).
   */
  private async evictionCycle(rt: Runtime): Promise<FlCycle | 'closing' | undefined> {
    const cycle = await this.lockOpenCycle(rt);
    return cycle !== undefined && (rt.closing !== undefined || cycle.closingMs !== undefined) ? 'closing' : cycle;
  }

  /**
   * Decided inside a group commit (so a burst is counted against max_workers one by one), answered after
   * it; with pool_selection random, answered when the draw the request entered ends.
   */
  async cycleRequest(data: CycleRequest, address: string): Promise<CycleReply> {
    this.limiter.take(address, 'cycle-request');
    // Queued at once, nothing awaited before: a PyGrid client matches a socket's replies of one type by
    // their order, and the batch answers in the order it was queued.
    // A draw's answer comes after the batch that entered it: awaited outside it, or the draw's own batch would wait for this one.
    const decided = await this.commits.run(() => this.answerCycleRequest(data));
    const reply = await decided.reply;
    return this.noteAnswer(data, decided.processId, reply);
  }

  private noteAnswer(data: CycleRequest, processId: number, reply: CycleReply): CycleReply {
    if (reply.status === 'accepted') this.emit('changed', reply.model_id);
    this.onActivity({
      kind: 'worker', processId, cycle: this.runtimes.get(processId)?.cycle?.sequence, workerId: data.worker_id, status: reply.status,
      ...(reply.status === 'rejected' && { reason: reply.reason }),
    });
    return reply;
  }

  /** In a batch; a draw's answer (`reply` a promise) comes when the draw ends. */
  private async answerCycleRequest(data: CycleRequest): Promise<{ processId: number; reply: CycleReply | Promise<CycleReply> }> {
    const process = await this.store.findProcess(data.model, data.version ?? undefined);
    if (process === undefined) throw gridError('NOT_FOUND', PYGRID.processNotFound);
    // A made-up worker id is refused before it takes the cycle's lock (held to the batch's commit).
    let worker = await this.store.worker(data.worker_id);
    if (worker === undefined) throw gridError('NOT_FOUND', PYGRID.processNotFound);
    const rt = await this.runtime(process.id, true);
    const cycle = await this.lockOpenCycle(rt);
    // Read again under the cycle's lock where replicas share the database: one evicting this worker
    // (evictionCycle) has committed by now or not begun.
    if (this.store.db.kind === 'postgres') worker = await this.store.worker(data.worker_id);
    if (worker === undefined) throw gridError('NOT_FOUND', PYGRID.processNotFound);
    if (worker.processId !== process.id) {
      throw gridError('FORBIDDEN', `worker ${data.worker_id} authenticated for another FL process; authenticate for ${process.name} ${process.version} first`);
    }
    const cfg = process.serverConfig;
    const speeds = checkSpeeds(data, requiresSpeedTest(cfg));
    const now = this.now();
    const processId = process.id;
    const reject = (reason: string) => ({ processId, reply: refusal(cycle, reason, now) });
    if (cycle === undefined) return { processId, reply: { status: 'rejected', reason: `FL process ${process.name} ${process.version} is done: all ${cfg.num_cycles ?? 0} cycles completed` } };
    if (rt.closing !== undefined || cycle.closingMs !== undefined) return reject('the cycle is closing; ask again for the next one');
    if (await this.store.assignment(cycle.id, worker.id) !== undefined) return reject('this worker is already in this cycle');
    if (rt.refused.has(this.refusalKey(worker.id))) return reject(NOT_SELECTED);
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
    // random: the askers of a short window are drawn from together (enterDraw), not decided one by one.
    if (cfg.pool_selection === 'random' && capacity !== Infinity) return { processId, reply: this.enterDraw(rt, cycle, worker.id) };
    return { processId, reply: await this.assignWorker(process, cycle, worker.id, now) };
  }

  /**
   * In a batch, before an assignment: the runtime's open cycle, locked for counting its workers (store
   * lockCycle). When another replica closed it meanwhile, the runtime moves on to the next cycle first.
   */
  private async lockOpenCycle(rt: Runtime): Promise<FlCycle | undefined> {
    for (let tries = 0; tries < 3; tries++) {
      const cycle = rt.cycle;
      if (cycle === undefined || rt.closing !== undefined) return cycle;
      if (await this.store.lockCycle(cycle.id, 'assign')) return cycle;
      // No report of this batch added to it (they would hold its lock, and it could not have closed).
      if (this.sumsAdded.has(rt)) return cycle;
      const open = await this.store.openCycle(rt.process.id);
      // Still open: another replica is closing it (markClosing); refused like this replica's own close.
      if (open !== undefined && open.id === cycle.id) {
        cycle.closingMs = open.closingMs ?? this.now();
        return cycle;
      }
      await this.open(rt, open);
    }
    return rt.cycle;
  }

  /**
   * What a "not selected" refusal is kept under: the token's hash where the process checks tokens (a new
   * worker id from authenticating again with the same token is still refused), else the worker id.
   */
  private refusalKey(workerId: string): string {
    return this.tokenKeys.get(workerId) ?? workerId;
  }

  private async assignWorker(process: FlProcess, cycle: FlCycle, workerId: string, now: number): Promise<CycleReply> {
    const requestKey = createHash('sha256').update(randomUUID()).digest('hex');
    await this.store.assign(cycle.id, workerId, requestKey, now);
    this.keysAdded.push([requestKey, { workerId, cycleId: cycle.id, processId: process.id, reported: false }]);
    return {
      status: 'accepted', request_key: requestKey, version: process.version, model: process.name,
      plans: await this.store.assetIds(process.id, 'plan'), protocols: await this.store.assetIds(process.id, 'protocol'),
      client_config: process.clientConfig, model_id: process.id,
    };
  }

  /**
   * pool_selection random. The pool is the workers asking in this cycle, not every worker the process
   * ever saw: an asker joins the open draw (the first one opens it, for selectionWindowMs); when it ends,
   * the free places go to a uniform random sample of everyone in it, and the rest are refused for the rest
   * of the cycle (rt.refused; their retries get the same answer, with the time left as `timeout`). Askers
   * come in bursts (PyGrid clients come back when their `timeout` ends, at the cycle's start), so each
   * burst is one draw; a draw with no more askers than places accepts them all.
   */
  private enterDraw(rt: Runtime, cycle: FlCycle, workerId: string): Promise<CycleReply> {
    let draw = rt.draw;
    // A draw left over from an earlier cycle is settled (its askers told to ask again), never joined.
    if (draw !== undefined && draw.cycleId !== cycle.id) {
      void this.runDraw(rt, draw);
      draw = undefined;
    }
    if (draw === undefined) {
      const opened: Draw = { cycleId: cycle.id, entrants: new Map(), timer: undefined };
      opened.timer = setTimeout(() => { void this.runDraw(rt, opened); }, this.selectionWindowMs);
      opened.timer.unref();
      rt.draw = draw = opened;
    }
    const waiting = draw.entrants.get(workerId);
    if (waiting === undefined && draw.entrants.size >= MAX_DRAW_ENTRANTS) {
      return Promise.resolve(refusal(cycle, `${MAX_DRAW_ENTRANTS} workers are already in this cycle's draw; ask again`, this.now()));
    }
    return new Promise((resolve, reject) => {
      const waiter: Waiter = { resolve, reject };
      if (waiting !== undefined) waiting.push(waiter);
      else draw.entrants.set(workerId, [waiter]);
      this.drawJoins.push({ draw, workerId, waiter });
    });
  }

  /**
   * Ends a draw. Its assignments are one batch of the group commit (counted against max_workers like any
   * other); each asker is answered after it committed.
   */
  private async runDraw(rt: Runtime, draw: Draw): Promise<void> {
    if (rt.draw === draw) rt.draw = undefined;
    if (draw.timer) clearTimeout(draw.timer);
    const entrants = [...draw.entrants];
    const answer = (waiters: Waiter[], reply: CycleReply) => { for (const w of waiters) w.resolve(reply); };
    const refuseAll = (reason: string) => { for (const [, waiters] of entrants) answer(waiters, { status: 'rejected', reason }); };
    if (this.closed) return refuseAll('the node is shutting down; ask again');
    let answers: { waiters: Waiter[]; reply: CycleReply | undefined; err?: unknown }[] | undefined;
    try {
      answers = await this.commits.run(async () => {
        const cycle = rt.cycle;
        const now = this.now();
        if (cycle === undefined || cycle.id !== draw.cycleId || rt.closing !== undefined) return undefined;
        if (!await this.store.lockCycle(cycle.id, 'assign')) return undefined;
        const capacity = rt.process.serverConfig.max_workers ?? Infinity;
        let free = Math.max(0, capacity - await this.store.assignedCount(cycle.id));
        // Fisher–Yates with the crypto generator: each set of `free` askers equally likely.
        for (let i = entrants.length - 1; i > 0; i--) {
          const j = randomInt(i + 1);
          [entrants[i], entrants[j]] = [entrants[j]!, entrants[i]!];
        }
        const out: { waiters: Waiter[]; reply: CycleReply | undefined; err?: unknown }[] = [];
        for (const [workerId, waiters] of entrants) {
          if (free > 0) {
            // The row may be gone since the worker asked (evictStaleWorker): its place goes to the next one.
            if (await this.store.worker(workerId) === undefined) {
              out.push({ waiters, reply: undefined, err: gridError('NOT_FOUND', PYGRID.processNotFound) });
              continue;
            }
            // Its own savepoint: one that fails leaves the others' rows, and its place to the next one.
            await this.store.db.run('SAVEPOINT drawn');
            try {
              out.push({ waiters, reply: await this.assignWorker(rt.process, cycle, workerId, now) });
              await this.store.db.run('RELEASE SAVEPOINT drawn');
              free--;
            } catch (err) {
              await this.store.db.run('ROLLBACK TO SAVEPOINT drawn');
              await this.store.db.run('RELEASE SAVEPOINT drawn');
              this.log.error({ err, process: rt.process.id, cycle: cycle.sequence, worker: workerId }, 'assigning a drawn FL worker failed');
              out.push({ waiters, reply: undefined, err: toGridError(err) });
            }
          } else {
            rt.refused.add(this.refusalKey(workerId));
            out.push({ waiters, reply: refusal(cycle, NOT_SELECTED, now) });
          }
        }
        return out;
      });
    } catch (err) {
      for (const [, waiters] of entrants) for (const w of waiters) w.reject(err);
      return;
    }
    if (answers === undefined) return refuseAll('the cycle closed during the draw; ask again for the next one');
    for (const a of answers) {
      if (a.reply !== undefined) answer(a.waiters, a.reply);
      else for (const w of a.waiters) w.reject(a.err);
    }
  }

  /**
   * A worker's diff (base64 State, diff = old − new). Idempotent per request key: a repeat is answered
   * success and not counted again. A diff that does not decode, has the wrong shapes or a non-finite value
   * is refused before it touches the sum.
   */
  report(data: { worker_id: string; request_key: string; diff: string | JsonText; num_samples?: number | undefined }): Promise<{ status: 'success' }> {
    // The diff text (a view of the report's frame, half a megabyte) is held only until it is decoded, not
    // while its batch commits: an async function keeps its arguments to the end, and a frame that lived
    // that long was promoted and counted against the old generation, one full GC every ~25 reports.
    const { diff, ...ids } = data;
    return this.takeReport(ids, { diff });
  }

  private async takeReport(data: { worker_id: string; request_key: string; num_samples?: number | undefined }, held: { diff: string | JsonText | undefined }): Promise<{ status: 'success' }> {
    // A known key of the runtime's open cycle needs no read: that cycle is what its row would say (the
    // batch checks it again under its lock). Any other is read as it is now (an old cycle's assignment
    // goes when its worker's row is evicted).
    let a = this.knownKeys.get(data.request_key);
    if (a === undefined || this.runtimes.get(a.processId)?.cycle?.id !== a.cycleId) a = await this.readKey(data.request_key);
    if (a === undefined || a.workerId !== data.worker_id) throw gridError('FORBIDDEN', PYGRID.invalidRequestKey);
    if (a.reported) return { status: 'success' };
    let rt = await this.runtime(a.processId);
    let cycle = rt.cycle;
    if (cycle?.id !== a.cycleId) {
      cycle = (await this.store.cycle(a.cycleId))!;
      rt = await this.runtime(cycle.processId);
      if (cycle.completedMs !== undefined) throw cycleClosed(cycle.sequence);
      // A cycle another replica opened that this one has not heard of yet.
      if (rt.cycle === undefined || rt.cycle.id < cycle.id) await this.refresh(cycle.processId);
    }
    if (rt.cycle?.id !== cycle.id || rt.closing !== undefined) throw cycleClosed(cycle.sequence);
    const weight = data.num_samples ?? 1;
    const { request_key: requestKey, worker_id: workerId } = data;
    // A whole count of local rows: a worker's weight in the average is what it says it trained on, so an
    // absurd count (1e308) must not overflow the sum or silence every other worker.
    if (!Number.isInteger(weight) || weight <= 0 || weight > MAX_NUM_SAMPLES) {
      throw gridError('INVALID_MESSAGE', `num_samples must be a whole number from 1 to ${MAX_NUM_SAMPLES}, got ${weight}`);
    }
    // A diff carries exactly the model's values: a State claiming more is refused before it is decoded.
    // Its floats go to a reused buffer, given back once the report is counted or refused (below).
    let floats: ArrayBuffer | undefined;
    const place = (n: number) => (floats = this.diffBuffers.take(n));
    let added: boolean;
    try {
      const diff = takeDiff(held, rt.process, place);
      // Recorded and added to the sum in the next group commit, which stores the sum (storeSums) before
      // COMMIT: answered only once durable. One whose cycle began closing meanwhile is refused. The closures
      // hold the ids, not `data`: its half-megabyte diff text is garbage once decoded.
      added = await this.commits.run(async () => {
        if (rt.cycle?.id !== cycle.id || rt.closing !== undefined) throw cycleClosed(cycle.sequence);
        // Another replica's close holds the lock until it commits; then the cycle is completed here too.
        if (!await this.store.lockCycle(cycle.id, 'report')) {
          setImmediate(() => { void this.refresh(rt.process.id).catch(() => undefined); });
          throw cycleClosed(cycle.sequence);
        }
        if (!await this.store.recordReport(requestKey, weight, this.now())) {
          // Reported before (the first report stands), or the assignment is gone: its worker was evicted
          // (on any replica) after this replica learned the key. A gone key is refused as an unknown one,
          // so the worker authenticates again instead of being told a diff nobody counted was taken.
          if (await this.store.assignmentByKey(requestKey) !== undefined) return false;
          this.knownKeys.delete(requestKey);
          throw gridError('FORBIDDEN', PYGRID.invalidRequestKey);
        }
        rt.sum!.add(diff, weight);
        this.sumsAdded.set(rt, (this.sumsAdded.get(rt) ?? 0) + 1);
        return true;
      });
    } finally {
      // The batch has run (or never will): nothing reads the diff again.
      if (floats !== undefined) this.diffBuffers.give(floats);
    }
    // Recorded now, by this report or (not added) one before it: a repeat is answered success at once.
    a.reported = true;
    if (added) this.onActivity({ kind: 'worker', processId: rt.process.id, cycle: cycle.sequence, workerId, status: 'reported' });
    return { status: 'success' as const };
  }

  /** An assignment read from the store (another replica made it, or this one forgot it), then known. */
  private async readKey(requestKey: string): Promise<KnownKey | undefined> {
    const a = await this.store.assignmentByKey(requestKey);
    if (a === undefined) {
      this.knownKeys.delete(requestKey);
      return undefined;
    }
    const cycle = await this.store.cycle(a.cycleId);
    if (cycle === undefined) return undefined;
    const known: KnownKey = { workerId: a.workerId, cycleId: a.cycleId, processId: cycle.processId, reported: a.reportedMs !== undefined };
    this.knowKey(requestKey, known);
    return known;
  }

  private knowKey(requestKey: string, known: KnownKey): void {
    this.knownKeys.delete(requestKey);
    this.knownKeys.set(requestKey, known);
    if (this.knownKeys.size > MAX_KNOWN_KEYS) this.knownKeys.delete(this.knownKeys.keys().next().value!);
  }

  /** Before a group commit's COMMIT: each sum it added to, into the cycle's other sum file, named in the transaction. */
  private async storeSums(): Promise<void> {
    for (const [rt, added] of this.sumsAdded) {
      const slot = rt.sumSlot === 0 ? 1 : 0;
      // Read before the write is awaited: the file is what the row below names, whatever moves meanwhile.
      const cycle = rt.cycle!;
      const sum = rt.sum!;
      try {
        await this.store.writeSum(cycle.id, slot, sum.bytes());
      } catch (err) {
        // The whole batch rolls back: its callers get a coded error saying what failed, not a raw errno.
        const e = err as NodeJS.ErrnoException;
        throw gridError(e.code === 'ENOSPC' ? 'INSUFFICIENT_STORAGE' : 'INTERNAL', `the node could not store the running sum of ${rt.process.name} ${rt.process.version} cycle ${cycle.sequence} (${e.code ?? e.message}); nothing of this batch was recorded: send it again`);
      }
      await this.store.setSumRecord(cycle.id, { slot, reports: sum.reports, weight: sum.weight }, rt.rowDiffs);
      // Every replica's reports, as this transaction sees them (replicas recount after COMMIT). With one
      // writer (the embedded store) that is the count before the batch and the batch's own: nothing else
      // records a report, and no eviction takes an assignment of the open cycle (evictStaleWorker), so the
      // count loadSum read stays exact without reading the cycle's assignments again every batch.
      rt.reports = this.store.db.kind === 'postgres' ? await this.store.reportedCount(cycle.id) : rt.reports + added;
    }
  }

  private sumsCommitted(): void {
    const added = [...this.sumsAdded.keys()];
    this.sumsAdded.clear();
    this.drawJoins = [];
    for (const [key, known] of this.keysAdded) this.knowKey(key, known);
    this.keysAdded = [];
    // Every slot first: the committed sum files are now the other ones, whatever a listener does below
    // (a slot left unswitched would have the next commit overwrite the committed sum in place).
    for (const rt of added) {
      rt.sumSlot = rt.sumSlot === 0 ? 1 : 0;
      rt.rowDiffs = 0;
    }
    for (const rt of added) {
      try {
        this.emit('changed', rt.process.id);
        this.maybeClose(rt);
        // Reports other replicas committed at the same time are not in the count this batch saw.
        if (rt.closing === undefined && this.store.db.kind === 'postgres') this.count(rt);
      } catch (err) {
        this.log.error({ err, process: rt.process.id }, 'after an FL commit: a listener of the engine\'s events failed');
      }
    }
  }

  /** A failed commit (a full disk, say): the sums it added to go back to what is committed. */
  private async sumsRolledBack(): Promise<void> {
    const added = [...this.sumsAdded.keys()];
    this.sumsAdded.clear();
    this.keysAdded = [];
    for (const rt of added) {
      const cycle = rt.cycle;
      if (cycle === undefined) continue;
      const loaded = await this.loadSum(rt.process, cycle);
      if (rt.cycle === cycle) Object.assign(rt, loaded);
    }

    // Cycle-requests of the batch that joined a draw: their callers get the batch's error, so they leave the draw.
    for (const { draw, workerId, waiter } of this.drawJoins) {
      const waiters = draw.entrants.get(workerId);
      if (waiters === undefined) continue;
      const left = waiters.filter((w) => w !== waiter);
      if (left.length > 0) draw.entrants.set(workerId, left);
      else draw.entrants.delete(workerId);
    }
    this.drawJoins = [];
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
        let raced = false;
        try {
          await publish(p, { number: c.number, bytes }, parent, (version) => this.store.setModelVersion(p.id, c.number, version));
        } catch (err) {
          // Another replica stored it first (setModelVersion): its version stands, this one rolled back.
          if (toGridError(err).code !== ErrorCodes.ALREADY_EXISTS || (await this.store.checkpoint(p.id, c.number))?.modelVersion === undefined) throw err;
          raced = true;
        }
        parent = (await this.store.checkpoint(p.id, c.number))?.modelVersion;
        if (!raced) this.log.info({ process: `${p.name}@${p.version}`, checkpoint: c.number, model: `${p.linkedModel}@${parent}` }, 'FL checkpoint stored as a model version');
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
    // What is queued (reports already checked, workers, assignments) is committed and answered before the database closes.
    await this.commits.flush();
    this.closed = true;
    for (const stop of this.unlisten.splice(0)) stop();
    const pending: Promise<void>[] = [...this.publishing.values()];
    for (const rt of this.runtimes.values()) {
      if (rt.draw !== undefined) await this.runDraw(rt, rt.draw);
      if (rt.timer) clearTimeout(rt.timer);
      rt.timer = undefined;
      if (rt.closing) pending.push(rt.closing.catch(() => undefined));
    }
    await Promise.all(pending);
    this.store.closeSums();
  }

  // --- cycles ----------------------------------------------------------------------------------------

  /**
   * The process's runtime, loaded once. `inBatch`: called from a group commit's work, which must not wait
   * for a load started outside the batch (with the embedded store that load waits for the batch): it
   * loads on its own, in the batch's transaction.
   */
  private async runtime(processId: number, inBatch = false): Promise<Runtime> {
    const rt = this.runtimes.get(processId);
    if (rt !== undefined) return rt;
    if (inBatch) return this.adopt(await this.load(processId));
    // One load per process, however many requests ask for it meanwhile.
    let loading = this.loading.get(processId);
    if (loading === undefined) {
      loading = this.load(processId).then((loaded) => this.adopt(loaded)).finally(() => this.loading.delete(processId));
      this.loading.set(processId, loading);
    }
    return loading;
  }

  private async load(processId: number): Promise<Runtime> {
    const process = await this.store.process(processId);
    if (process === undefined) throw gridError('NOT_FOUND', PYGRID.processNotFound);
    const loaded: Runtime = {
      process, cycle: undefined, sum: undefined, sumSlot: 1, rowDiffs: 0, reports: 0, counting: undefined, recount: false,
      timer: undefined, closing: undefined, refused: new Set(), draw: undefined,
    };
    await this.open(loaded, await this.store.openCycle(processId));
    return loaded;
  }

  /** The first runtime loaded for a process is the one kept (a second load's timer is stopped). */
  private adopt(loaded: Runtime): Runtime {
    const kept = this.runtimes.get(loaded.process.id);
    if (kept === undefined) {
      this.runtimes.set(loaded.process.id, loaded);
      return loaded;
    }
    if (loaded.timer) clearTimeout(loaded.timer);
    loaded.timer = undefined;
    return kept;
  }

  /** Makes `cycle` the runtime's open cycle: its committed running sum, and its timer (all set at once, once loaded). */
  private async open(rt: Runtime, cycle: FlCycle | undefined): Promise<void> {
    const loaded = cycle === undefined ? { sum: undefined, sumSlot: 1 as const, rowDiffs: 0, reports: 0 } : await this.loadSum(rt.process, cycle);
    rt.cycle = cycle;
    Object.assign(rt, loaded);
    rt.refused = new Set();
    // A draw of the cycle before is answered now (told to ask again), not joined by this cycle's askers.
    if (rt.draw !== undefined && rt.draw.cycleId !== cycle?.id) void this.runDraw(rt, rt.draw);
    if (rt.timer) clearTimeout(rt.timer);
    rt.timer = undefined;
    if (cycle === undefined) return;
    this.arm(rt);
  }

  /**
   * This replica's committed partial sum of the cycle, plus any diffs stored as rows by an older node;
   * and the cycle's reports through every replica.
   */
  private async loadSum(process: FlProcess, cycle: FlCycle): Promise<Pick<Runtime, 'sum' | 'sumSlot' | 'rowDiffs' | 'reports'>> {
    const shapes = process.params.map((p) => p.dims);
    const sum = new RunningSum(shapes);
    const stored = await this.store.sumRecord(cycle.id);
    if (stored !== undefined) sum.load(this.store.readSum(cycle.id, stored.slot), stored.reports, stored.weight);
    let rowDiffs = 0;
    for await (const r of this.store.reportedDiffs(cycle.id)) {
      sum.add(unpackDiff(r.diff, shapes), r.weight);
      rowDiffs++;
    }
    return { sum, sumSlot: stored?.slot ?? 1, rowDiffs, reports: await this.store.reportedCount(cycle.id) };
  }

  /**
   * Another replica may have closed the runtime's cycle (and opened the next) or hosted a process: its
   * notification (or a report for a cycle this replica does not know yet) brings the runtime up to date.
   * Runs as its own item of the group commit, so no batch is adding to the sum it replaces.
   */
  private async refresh(processId: number): Promise<void> {
    if (this.closed) return;
    const rt = this.runtimes.get(processId);
    if (rt === undefined) {
      await this.runtime(processId).then((loaded) => this.maybeClose(loaded), () => undefined);
      return;
    }
    await this.commits.run(async () => {
      if (rt.closing !== undefined || this.sumsAdded.has(rt)) return;
      const open = await this.store.openCycle(processId);
      if (open?.id !== rt.cycle?.id) await this.open(rt, open);
      // Another replica began closing it: this one takes the close over if that one does not finish.
      else if (open !== undefined && rt.cycle !== undefined) rt.cycle.closingMs = open.closingMs;
    });
    this.maybeClose(rt);
  }

  /** On PostgreSQL: hears the other replicas' new processes and closed cycles (see refresh). */
  private listenToReplicas(): void {
    const db = this.store.db;
    if (db.kind !== 'postgres') return;
    const heard = (processId: number) => {
      this.refresh(processId).catch((err: unknown) => this.log.warn({ err, process: processId }, 'catching up with an FL change of another replica failed; the next request or timer tries again'));
    };
    this.unlisten.push(db.listen(CYCLES_CHANNEL, (payload) => {
      let note: { from?: unknown; process?: unknown };
      try { note = JSON.parse(payload) as typeof note; } catch { return; }
      if (note.from !== this.store.replica && typeof note.process === 'number') heard(note.process);
    }));
    // Notifications sent while the listening connection was down were missed: catch up with everything.
    this.unlisten.push(db.listen(RECONNECTED, () => {
      this.store.processes().then((ps) => { for (const p of ps) heard(p.id); }, () => undefined);
    }));
  }

  /** Tells the other replicas that a process's cycles changed (sent at the COMMIT of the current transaction). */
  private async announce(processId: number): Promise<void> {
    if (this.store.db.kind !== 'postgres') return;
    await this.store.db.notify(CYCLES_CHANNEL, JSON.stringify({ from: this.store.replica, process: processId }));
  }

  private arm(rt: Runtime): void {
    const end = rt.cycle?.endMs;
    if (end === undefined || this.closed) return;
    const wait = Math.min(MAX_TIMER_MS, Math.max(0, end - this.now()));
    rt.timer = setTimeout(() => {
      rt.timer = undefined;
      if (this.now() < end) return this.arm(rt);
      // Reports may have come through other replicas: counted from the database first.
      this.count(rt, () => {
        this.maybeClose(rt);
        if (rt.closing === undefined && rt.cycle !== undefined && rt.cycle.endMs === end) {
          const needed = minReports(rt.process.serverConfig);
          this.log.info({ process: rt.process.id, cycle: rt.cycle.sequence, reports: rt.reports, needed }, 'FL cycle ended with too few reports; it closes when enough arrive');
          this.emit('cycle-overdue', { processId: rt.process.id, cycle: rt.cycle.sequence, reports: rt.reports, needed });
        }
      });
    }, wait);
    rt.timer.unref();
  }

  /**
   * Counts the cycle's committed reports (every replica's) into rt.reports, then calls `then`. A count
   * asked for while one runs is made once more after it.
   */
  private count(rt: Runtime, then: () => void = () => this.maybeClose(rt)): void {
    if (rt.counting !== undefined) { rt.recount = true; void rt.counting.then(then); return; }
    rt.counting = (async () => {
      do {
        rt.recount = false;
        const cycle = rt.cycle;
        if (cycle === undefined) return;
        const n = await this.store.reportedCount(cycle.id);
        if (rt.cycle === cycle) rt.reports = Math.max(rt.reports, n);
      } while (rt.recount);
    })().catch((err: unknown) => {
      this.log.warn({ err, process: rt.process.id }, 'counting an FL cycle\'s reports failed; counted again at the next report or timer');
    }).finally(() => { rt.counting = undefined; });
    void rt.counting.then(then);
  }

  /** Closes the open cycle when it is ready: enough reports, and max_diffs reached or its end passed. */
  private maybeClose(rt: Runtime): void {
    const cycle = rt.cycle;
    if (cycle === undefined || rt.sum === undefined || rt.closing !== undefined || this.closed) return;
    const cfg = rt.process.serverConfig;
    const enough = rt.reports >= minReports(cfg);
    const full = cfg.max_diffs !== undefined && rt.reports >= cfg.max_diffs;
    const timeUp = cycle.endMs !== undefined && this.now() >= cycle.endMs;
    // A cycle marked closing (by this replica before a failure or restart, or by another) is closed whatever the count says.
    if (cycle.closingMs === undefined && (!enough || !(full || timeUp))) return;
    // From here on reports of the cycle are refused; the close starts once the batch in flight (whose
    // reports may be past that check) committed or rolled back, with the sum that left.
    const settled = this.commits.run(() => undefined);
    rt.closing = settled.then(() => (rt.cycle === cycle ? this.closeCycle(rt, cycle) : undefined)).then(
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

  /**
   * The sum of a cycle's committed reports, whichever replica took each: every replica's committed
   * partial sum (a dead replica's too: the sums are in the shared blob dir), plus diffs an older node
   * stored as rows. Read after the cycle is marked closing, so no report commits meanwhile. A partial
   * whose file is gone (its committed row names a file that was synced before that row committed, so it
   * was lost, not late) is left out and returned in `lost`: retrying would never find it.
   */
  private async cycleSum(p: FlProcess, cycle: FlCycle): Promise<{ sum: RunningSum; lost: CycleSumLost[] }> {
    const shapes = p.params.map((x) => x.dims);
    const sum = new RunningSum(shapes);
    const lost: CycleSumLost[] = [];
    for (const part of await this.store.partials(cycle.id)) {
      let bytes: Buffer;
      try {
        bytes = this.store.readSum(cycle.id, part.slot, part.replica);
      } catch (err) {
        const e = toGridError(err);
        if (e.code !== ErrorCodes.NOT_FOUND) throw err;
        lost.push({ processId: p.id, cycle: cycle.sequence, replica: part.replica, reports: part.reports, error: e });
        continue;
      }
      sum.merge(bytes, part.reports, part.weight);
    }
    for await (const r of this.store.reportedDiffs(cycle.id)) sum.add(unpackDiff(r.diff, shapes), r.weight);
    return { sum, lost };
  }

  /**
   * Averages and closes a cycle in three steps, none of which holds a lock while it averages:
   * (a) a short transaction marks the cycle closing by this replica (store markClosing, under the row's
   * FOR UPDATE: it waits for report batches in flight, and every later report is refused as for a closed
   * cycle), so the partial sums stop changing; (b) outside any transaction, the partials are summed, the
   * average (FedAvg or the host's ONNX plan) computed and the checkpoint blob written; (c) a short
   * transaction commits the checkpoint, completes the cycle and opens the next, only if this replica still
   * holds the mark. Replicas whose timers fire together all try; one marks it, the others wait for its
   * announcement. A closer killed between (a) and (c) leaves a mark and at most an unnamed blob: another
   * replica takes the close over once the mark is older than closeTakeoverMs (the embedded node at its
   * next start), and a slow closer whose mark was taken finds its (c) matching nothing: averaged once.
   */
  private async closeCycle(rt: Runtime, cycle: FlCycle): Promise<void> {
    const p = rt.process;
    const cfg = p.serverConfig;
    const at = { processId: p.id, cycle: cycle.sequence };
    const markedAt = this.now();
    // The embedded node is one process: a mark not of this run is a dead run's.
    const staleBefore = this.store.db.kind === 'embedded' ? Infinity : markedAt - this.closeTakeoverMs;
    const mark = await this.store.db.transaction(async () => {
      const m = await this.store.markClosing(cycle.id, markedAt, staleBefore);
      if (m.state === 'mine') await this.announce(p.id);
      return m;
    });
    if (mark.state === 'closed') {
      // Another replica closed it: catch up with the cycle it opened (after this close is settled).
      setImmediate(() => { void this.refresh(p.id).catch(() => undefined); });
      return;
    }
    if (mark.state === 'busy') {
      cycle.closingMs = mark.sinceMs;
      // Its announcement of the next cycle (refresh) clears this timer; else the close is taken over then.
      if (rt.timer) clearTimeout(rt.timer);
      rt.timer = setTimeout(() => { rt.timer = undefined; this.maybeClose(rt); }, Math.max(0, mark.sinceMs + this.closeTakeoverMs - this.now()) + 1);
      rt.timer.unref();
      return;
    }
    cycle.closingMs ??= markedAt;
    if (mark.taken) this.log.warn({ process: `${p.name}@${p.version}`, cycle: cycle.sequence }, 'FL cycle close taken over from a closer that did not finish');
    await this.closeStep?.('marked', at);

    const { sum, lost } = await this.cycleSum(p, cycle);
    // A lost partial does not hold the cycle (its reports are refused already, so it would never close):
    // it closes with the reports that remain, and the loss is logged with its code and emitted.
    for (const l of lost) {
      this.log.error({ err: l.error, code: l.error.code, process: `${p.name}@${p.version}`, cycle: cycle.sequence, replica: l.replica, reports: l.reports }, 'an FL running sum is missing: the cycle closes without its reports');
      this.emit('cycle-sum-lost', l);
    }
    const latest = await this.store.checkpoint(p.id);
    if (latest === undefined) throw gridError('INTERNAL', `FL process ${p.id} has no checkpoint`);
    const oldBytes = await readFile(this.store.blobs.pathOf(latest.sha256));
    const old: StateTensor[] = paramsOf(p.format, oldBytes).tensors;
    // The host's ONNX averaging plan when it gave one (averaging-plan.ts), else FedAvg: old − mean(diff).
    const plan = sum.reports > 0 ? await this.store.averagingPlan(p.id) : undefined;
    const averaged = plan === undefined ? sum.apply(old) : await runAveragingPlan(plan, p.params, old, sum);
    const overflowed = keepFinite(averaged, old);
    if (overflowed > 0) {
      this.log.warn({ process: `${p.name}@${p.version}`, cycle: cycle.sequence, values: overflowed }, 'FL average left float32 range for some parameters; kept their old values');
    }
    const next = withNewParams(p.format, oldBytes, p.params, averaged);
    const { sha256 } = await this.store.blobs.write(Readable.from([next]));
    await this.closeStep?.('written', at);

    const closed = await this.store.db.transaction(async () => {
      const now = this.now();
      const completed = await this.store.completedCycles(p.id) + 1;
      const more = (cfg.num_cycles ?? 0) === 0 || completed < cfg.num_cycles!;
      const number = await this.store.closeCycle(cycle, sha256, sum.reports, now, more ? { endMs: endOf(cfg, now) } : null);
      if (number === undefined) return undefined;
      await this.announce(p.id);
      return { number, more };
    });
    if (closed === undefined) {
      // Another replica took the close over and closed it: catch up with the cycle it opened.
      this.log.warn({ process: `${p.name}@${p.version}`, cycle: cycle.sequence }, 'FL cycle was closed by another replica that took this close over; this average is dropped');
      setImmediate(() => { void this.refresh(p.id).catch(() => undefined); });
      return;
    }
    const { number, more } = closed;
    const reports = sum.reports;
    try { this.store.removeSums(cycle.id); } catch (err) { this.log.warn({ err, cycle: cycle.id }, 'removing a closed FL cycle\'s sum files failed; the next start removes them'); }
    this.log.info({ process: `${p.name}@${p.version}`, cycle: cycle.sequence, reports, weight: sum.weight, checkpoint: number, done: !more }, 'FL cycle averaged');
    await this.open(rt, await this.store.openCycle(p.id));
    this.emit('changed', p.id, true);
    if (p.linkedModel !== undefined) this.publishCheckpoints(p);
    this.emit('cycle-closed', { processId: p.id, cycle: cycle.sequence, checkpoint: number, reports, done: !more });
  }
}

type Waiter = { resolve(reply: CycleReply): void; reject(err: unknown): void };

/** pool_selection random: the askers of one window of a cycle (enterDraw). */
interface Draw {
  cycleId: number;
  /** worker id → its pending cycle-requests (a worker asking twice in one window waits for one answer). */
  entrants: Map<string, Waiter[]>;
  timer: NodeJS.Timeout | undefined;
}

const DEFAULT_SELECTION_WINDOW_MS = 1000;
/** Token hashes remembered for refusals (tokenKeys); a worker past it is refused by its id only. */
const MAX_TOKEN_KEYS = 100_000;

/**
 * Decodes a report's diff and drops the holder's text (in its own function: no register of the async
 * report keeps the text while it waits for its batch).
 */
function takeDiff(held: { diff: string | JsonText | undefined }, process: FlProcess, place: (n: number) => ArrayBuffer): StateTensor[] {
  const text = held.diff!;
  held.diff = undefined;
  const diff = decodeStateText(text, 'the diff', { maxValues: process.params.reduce((n, p) => n + p.dims.reduce((a, d) => a * d, 1), 0) }, place);
  if (diff === undefined) throw gridError('INVALID_TENSOR', 'the diff is not base64 text');
  checkShapes(diff, process.params.map((p) => p.dims));
  return diff;
}

/** What a report is checked against before its diff is decoded (FlEngine.knownKeys). */
interface KnownKey { workerId: string; cycleId: number; processId: number; reported: boolean }

/** Request keys kept in memory (~200 bytes each); a report with a key dropped from them reads it. */
const MAX_KNOWN_KEYS = 100_000;
/** Askers one draw holds; past it, askers are told to ask again (not refused for the cycle). */
const MAX_DRAW_ENTRANTS = 100_000;
const NOT_SELECTED = 'not selected this cycle (pool_selection random); ask again when the timeout ends';

/** A refusal; PyGrid: with a timeout until the cycle ends (its `str(timedelta)`), only while cycles remain. */
function refusal(cycle: FlCycle | undefined, reason: string, now: number): CycleReply {
  const out: CycleReply = { status: 'rejected', reason };
  if (cycle?.endMs !== undefined) out.timeout = timedeltaString(Math.max(0, cycle.endMs - now));
  return out;
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
