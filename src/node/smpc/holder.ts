// A share holder's side of encrypted serving: keeps its share of a model's parameters, and evaluates
// queries with the other share holder (party 0 leads: it fetches randomness, starts the query on party 1
// and drives the openings) and the crypto provider. Only the querying client reconstructs the output.

import { randomBytes } from 'node:crypto';
import { evaluateShare, paramCount, ringOf, rowSize, scheduleOf, checkPlan, weightIndices, type PartyChannel, type SmpcPlan } from '../../compute/smpc';
import { gridError, GridError, toGridError } from '../../core/errors';
import type { Logger } from '../../core/logger';
import {
  SmpcCancel, SmpcCompare, SmpcDeal, SmpcDelete, SmpcExchange, SmpcForget, SmpcHostShare, SmpcInfer, SmpcJoin, SmpcMask, SmpcModel, SmpcModels,
  SmpcPrepare, SmpcRelease, type SmpcModelInfo, type SmpcNodeRef,
} from '../../core/protocol/smpc-messages';
import type { GridSocket } from '../../core/socket/grid-socket';
import type { NodeEvents } from '../events';
import { withAttachment, type GridRouter, type HandlerContext } from '../rpc/server';
import { requireNode } from './attest';
import type { SmpcLinks } from './links';
import type { ShareStore } from './store';

interface HeldModel {
  info: SmpcModelInfo;
  plan: SmpcPlan;
  params: BigInt64Array;
  maskNonce: string;
  /** This holder's shares of the weights' masks (from the provider), and the opened W − B once known (masks.ts). */
  masks: { b: Map<number, BigInt64Array>; f: Map<number, BigInt64Array> };
  /** Bytes of share held (parameters and masks), charged to the owner. */
  bytes: number;
}

/** An smpc-host-share request. */
interface HostShare { model_id: string; party: 0 | 1; pair_tag: string; mask_nonce: string; plan: SmpcPlan; peer: SmpcNodeRef; provider: SmpcNodeRef }

/** How long a delete (or a query's release of its bundle) waits for the crypto provider to hear of it. */
const FORGET_TIMEOUT_MS = 5000;

/** A query this holder runs (either party): who started it, how to stop it, and when it has ended. */
interface Running {
  user: string;
  stop: AbortController;
  ended: Promise<unknown>;
}

export interface HolderOptions {
  links: SmpcLinks;
  selfId: string;
  log: Logger;
  where(): string;
  /** How long one step waits for the other share holder or the provider. */
  stepTimeoutMs: number;
  /** Encrypted models held at once. */
  maxModels: number;
  /** Encrypted models, and bytes of share, one user may place on this holder. */
  maxModelsPerOwner: number;
  maxBytesPerOwner: number;
  /** Encrypted queries run at once (as either party). */
  maxQueries: number;
  store: ShareStore;
  events: NodeEvents;
}

function deferred<T>() {
  let resolve!: (v: T) => void, reject!: (e: unknown) => void;
  const promise = new Promise<T>((res, rej) => { resolve = res; reject = rej; });
  promise.catch(() => {});
  return { promise, resolve, reject };
}

/** Party 1's view of a query: its input, and the mailbox of openings party 0 drives. */
class FollowerQuery {
  readonly started = deferred<void>();
  readonly result = deferred<BigInt64Array>();
  private readonly mine = new Map<number, ReturnType<typeof deferred<Uint8Array>>>();
  private readonly theirs = new Map<number, ReturnType<typeof deferred<Uint8Array>>>();
  joined = false;
  /** Aborted when the query fails: its requests to the provider stop. */
  readonly stop = new AbortController();
  /** The provider's bundle for this query, once party 0 named it (released if the query fails). */
  bundle: { provider: GridSocket; id: string } | undefined;
  /** The evaluation, once started: settles when it has stopped using the bundle. */
  evaluation: Promise<unknown> = Promise.resolve();
  private failure: unknown;

  constructor(readonly model: HeldModel, readonly input: BigInt64Array, readonly batch: number, private readonly timeoutMs: number) {}

  private box(m: Map<number, ReturnType<typeof deferred<Uint8Array>>>, tag: number) {
    let d = m.get(tag);
    if (d === undefined) {
      d = deferred();
      // A failed query's later steps fail at once, so its evaluation ends now, not at the step timeout.
      if (this.failure !== undefined) d.reject(this.failure);
      m.set(tag, d);
    }
    return d;
  }

  /** This party's side of an opening: posts its value, waits for party 0's. */
  exchange(tag: number, value: Uint8Array): Promise<Uint8Array> {
    this.box(this.mine, tag).resolve(value);
    return this.timed(this.box(this.theirs, tag).promise, `party 0's opening ${tag}`);
  }

  /** Party 0's request for an opening: takes its value, answers with this party's. */
  incoming(tag: number, value: Uint8Array): Promise<Uint8Array> {
    this.box(this.theirs, tag).resolve(value);
    return this.timed(this.box(this.mine, tag).promise, `this holder's opening ${tag}`);
  }

  fail(err: unknown): void {
    this.failure ??= err ?? gridError('SMPC_ABORTED', 'the query failed');
    this.stop.abort(this.failure);
    for (const d of [...this.mine.values(), ...this.theirs.values()]) d.reject(err);
    this.started.reject(err);
    this.result.reject(err);
  }

  private timed<T>(p: Promise<T>, what: string): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const t = setTimeout(() => reject(gridError('SMPC_ABORTED', `waited ${this.timeoutMs} ms for ${what}; the other share holder stopped answering`)), this.timeoutMs);
      p.then((v) => { clearTimeout(t); resolve(v); }, (e) => { clearTimeout(t); reject(e); });
    });
  }
}

export class ShareHolder {
  private readonly models = new Map<string, HeldModel>();
  private readonly queries = new Map<string, FollowerQuery>();
  /** smpc-joins from party 0 that came before the client's smpc-infer of their query (two connections, no order between them). */
  private readonly arrivals = new Map<string, ReturnType<typeof deferred<void>>>();
  /** Every query running here, by query id (party 0's and party 1's), for smpc-cancel. */
  private readonly running = new Map<string, Running>();
  /**
   * Uploads under way (between the checks and the durable write), by model id: their owner and bytes
   * count in the quotas, so uploads at once cannot pass them together.
   */
  private readonly hosting = new Map<string, { owner: string; bytes: number }>();
  private readonly o: HolderOptions;

  constructor(o: HolderOptions) {
    this.o = o;
  }

  /** Shares written before a restart: served again; W − B is opened anew on the first query. */
  async load(): Promise<void> {
    for (const s of await this.o.store.load()) {
      this.models.set(s.info.model_id, { info: s.info, plan: s.plan, params: s.params, maskNonce: s.maskNonce, masks: { b: s.masks, f: new Map() }, bytes: s.bytes });
    }
    if (this.models.size > 0) this.o.log.info({ models: this.models.size }, 'encrypted model shares loaded');
  }

  register(router: GridRouter): void {
    router.handle(SmpcHostShare, (data, ctx) => this.host(data, ctx));
    router.handle(SmpcModel, (data, ctx) => {
      user(ctx, 'smpc-model');
      return { model: this.model(data.model_id).info };
    });
    router.handle(SmpcModels, (_data, ctx) => {
      user(ctx, 'smpc-models');
      return { models: [...this.models.values()].map((m) => m.info) };
    });
    router.handle(SmpcInfer, (data, ctx) => this.infer(data, ctx));
    router.handle(SmpcDelete, (data, ctx) => this.delete(data.model_id, ctx));
    router.handle(SmpcCancel, async (data, ctx) => {
      const u = user(ctx, 'smpc-cancel');
      const q = this.running.get(data.query_id);
      if (q === undefined) return { query_id: data.query_id, cancelled: false };
      if (q.user !== u && ctx.connection.session.role !== 'admin') throw gridError('FORBIDDEN', `smpc-cancel: query ${data.query_id} was started by another user`);
      q.stop.abort(gridError('ABORTED', `encrypted query ${data.query_id} was cancelled by the client`));
      await q.ended;
      return { query_id: data.query_id, cancelled: true };
    });
    router.handle(SmpcJoin, (data, ctx) => this.join(data, ctx));
    router.handle(SmpcExchange, async (data, ctx) => {
      const q = this.queries.get(data.query_id);
      if (q === undefined || !q.joined) throw gridError('NOT_FOUND', `smpc-exchange: no query ${data.query_id} is running here`);
      requireNode(ctx, q.model.info.peer.id, 'smpc-exchange');
      if (ctx.attachment === undefined) throw gridError('INVALID_INPUT', 'smpc-exchange carries the opening as its attachment; none was sent');
      // Party 0 cancelling its opening request means it stopped the query.
      const off = () => q.fail(gridError('ABORTED', `query ${data.query_id} was stopped by share holder 0`));
      ctx.signal.addEventListener('abort', off, { once: true });
      const mine = await q.incoming(data.tag, ctx.attachment).finally(() => ctx.signal.removeEventListener('abort', off));
      return withAttachment({ query_id: data.query_id, tag: data.tag }, mine);
    });
  }

  close(): void {
    for (const q of this.running.values()) q.stop.abort(gridError('DISPOSED', 'the share holder is shutting down'));
    for (const a of this.arrivals.values()) a.reject(gridError('DISPOSED', 'the share holder is shutting down'));
    this.arrivals.clear();
    for (const q of this.queries.values()) q.fail(gridError('DISPOSED', 'the share holder is shutting down'));
    this.queries.clear();
  }

  private model(id: string): HeldModel {
    const m = this.models.get(id);
    if (m === undefined) throw gridError('NOT_FOUND', `node ${this.o.where()} holds no share of an encrypted model "${id}"`, { model_id: id });
    return m;
  }

  private async host(data: HostShare, ctx: HandlerContext) {
    const s = user(ctx, 'smpc-host-share');
    if (this.models.has(data.model_id) || this.hosting.has(data.model_id)) throw gridError('ALREADY_EXISTS', `node ${this.o.where()} already holds a share of encrypted model "${data.model_id}"`);
    if (this.models.size + this.hosting.size >= this.o.maxModels) throw gridError('QUOTA_EXCEEDED', `node ${this.o.where()} holds ${this.models.size} encrypted models, its limit`);
    try {
      checkPlan(data.plan);
    } catch (err) {
      throw gridError('INVALID_INPUT', `smpc-host-share: the plan is inconsistent: ${(err as Error).message}`);
    }
    const n = paramCount(data.plan);
    if (ctx.attachment === undefined || ctx.attachment.length !== n * 8) {
      throw gridError('INVALID_INPUT', `smpc-host-share: the plan has ${n} parameters, so the share attachment must be ${n * 8} bytes; got ${ctx.attachment?.length ?? 0}`);
    }
    if (new Set([data.peer.id, data.provider.id, this.selfId]).size !== 3) {
      throw gridError('INVALID_INPUT', 'smpc-host-share: the two share holders and the crypto provider must be three different nodes');
    }
    // What this user holds here already, with this upload: parameters and the weights' mask shares.
    const bytes = 8 * (n + weightIndices(data.plan).reduce((t, i) => t + data.plan.params[i]!.size, 0));
    const mine = [...this.models.values()].map((m) => ({ owner: m.info.owner, bytes: m.bytes })).concat([...this.hosting.values()]).filter((m) => m.owner === s);
    const held = mine.reduce((t, m) => t + m.bytes, 0);
    if (mine.length >= this.o.maxModelsPerOwner) {
      throw gridError('QUOTA_EXCEEDED', `node ${this.o.where()} holds ${mine.length} encrypted models of ${s}, the most it keeps for one user; delete one (grid delete ID) first`, { limit: this.o.maxModelsPerOwner, models: mine.length });
    }
    if (held + bytes > this.o.maxBytesPerOwner) {
      throw gridError('QUOTA_EXCEEDED', `node ${this.o.where()} would hold ${held + bytes} bytes of encrypted model shares of ${s}, above its ${this.o.maxBytesPerOwner} per user; delete one (grid delete ID) first`, { limit: this.o.maxBytesPerOwner, bytes: held, asked: bytes });
    }
    this.hosting.set(data.model_id, { owner: s, bytes });
    try {
      return await this.hostChecked(data, ctx, s, n, bytes);
    } finally {
      this.hosting.delete(data.model_id);
    }
  }

  private async hostChecked(data: HostShare, ctx: HandlerContext, s: string, n: number, bytes: number) {
    // The links are checked now (identities proved both ways), so a bad address fails the upload, not the first query.
    if (data.party === 0) await this.o.links.socket(data.peer, 'other share holder');
    const provider = await this.o.links.socket(data.provider, 'crypto provider');
    const holders: [string, string] = data.party === 0 ? [this.selfId, data.peer.id] : [data.peer.id, this.selfId];
    // This holder's shares of the weights' masks: W − B is opened with the other holder on the first query.
    const weights = weightIndices(data.plan).map((index) => ({ index, size: data.plan.params[index]!.size }));
    const b = new Map<number, BigInt64Array>();
    if (weights.length === 0) throw gridError('INVALID_INPUT', 'smpc-host-share: the plan has no weights (no Gemm, MatMul or Conv); there is nothing to serve encrypted');
    const got = await call(provider, 'the crypto provider', () => provider.call(SmpcMask, { mask_nonce: data.mask_nonce, party: data.party, holders, weights }, { timeout: this.o.stepTimeoutMs }));
    try {
      const all = ringOf(attachmentOf(got.attachment, 'the crypto provider'), weights.reduce((t, w) => t + w.size, 0));
      let off = 0;
      for (const w of weights) { b.set(w.index, all.slice(off, off + w.size)); off += w.size; }
      return await this.hostMasked(data, ctx, s, n, bytes, provider, b);
    } catch (err) {
      // The provider has a record of this upload now: it should not keep it for a share never held.
      await this.forget(provider, data.mask_nonce, data.model_id);
      throw err;
    }
  }

  /** The rest of an upload once this holder has its mask shares. */
  private async hostMasked(data: HostShare, ctx: HandlerContext, s: string, n: number, bytes: number, provider: GridSocket, b: Map<number, BigInt64Array>) {
    const attachment = ctx.attachment!;
    // The first single-row query should find its randomness dealt already.
    if (data.party === 0) {
      provider.request(SmpcPrepare, { schedule: scheduleOf(data.plan, 1, true), mask_nonce: data.mask_nonce, peer_id: data.peer.id }, { timeout: this.o.stepTimeoutMs })
        .catch((err: unknown) => this.o.log.warn({ model_id: data.model_id, err: toGridError(err).message }, 'the crypto provider could not deal ahead'));
    }
    const info: SmpcModelInfo = {
      model_id: data.model_id, party: data.party, pair_tag: data.pair_tag, peer: data.peer, provider: data.provider, owner: s,
      input: data.plan.input, output: data.plan.output, created: new Date().toISOString(),
    };
    const params = ringOf(Uint8Array.from(attachment), n);
    // Durable before it is answered: a restart keeps what the owner was told is served.
    await this.o.store.put({ info, plan: data.plan, maskNonce: data.mask_nonce, params, masks: b, bytes });
    this.models.set(data.model_id, { info, plan: data.plan, params, maskNonce: data.mask_nonce, masks: { b, f: new Map() }, bytes });
    ctx.log.info({ model_id: data.model_id, party: data.party, params: n, owner: s }, 'encrypted model share hosted');
    this.o.events.emit({ event: 'smpc-model-added', model: info }, signedIn);
    return { model: info };
  }

  /** The owner (or an admin) deletes this node's share; the provider is told to deal no more for it. */
  private async delete(id: string, ctx: HandlerContext) {
    const u = user(ctx, 'smpc-delete');
    const m = this.model(id);
    if (m.info.owner !== u && ctx.connection.session.role !== 'admin') {
      throw gridError('FORBIDDEN', `node ${this.o.where()} refused to delete encrypted model "${id}": it belongs to ${m.info.owner}`, { model_id: id, owner: m.info.owner });
    }
    // Disk first: a delete that fails leaves the model served, never one that comes back after a restart.
    await this.o.store.delete(id);
    this.models.delete(id);
    ctx.log.info({ model_id: id, by: u }, 'encrypted model share deleted');
    this.o.events.emit({ event: 'smpc-model-removed', model_id: id }, signedIn);
    await this.forget(this.o.links.socket(m.info.provider, 'crypto provider'), m.maskNonce, id);
    return { model_id: id, deleted: true as const };
  }

  /** Tells the provider to deal no more for an upload: before the answer, briefly (a provider that is down keeps a record no holder will use). */
  private async forget(provider: GridSocket | Promise<GridSocket>, maskNonce: string, modelId: string): Promise<void> {
    const told = Promise.resolve(provider).then((p) => p.request(SmpcForget, { mask_nonce: maskNonce }, { timeout: FORGET_TIMEOUT_MS }));
    await Promise.race([told, new Promise((_, reject) => setTimeout(reject, FORGET_TIMEOUT_MS, gridError('TIMEOUT', 'no answer')).unref())])
      .catch((err: unknown) => this.o.log.warn({ model_id: modelId, err: toGridError(err).message }, 'the crypto provider was not told to forget an encrypted model\'s upload'));
  }

  private get selfId(): string {
    return this.o.selfId;
  }

  private async infer(data: { model_id: string; query_id: string; batch: number }, ctx: HandlerContext) {
    const u = user(ctx, 'smpc-infer');
    const model = this.model(data.model_id);
    const width = rowSize(model.plan.input.shape);
    if (ctx.attachment === undefined || ctx.attachment.length !== data.batch * width * 8) {
      throw gridError('INVALID_INPUT', `smpc-infer: ${data.batch} rows of ${width} values make a ${data.batch * width * 8}-byte input share; got ${ctx.attachment?.length ?? 0} bytes`);
    }
    if (this.running.has(data.query_id)) throw gridError('ALREADY_EXISTS', `query ${data.query_id} is already running here`);
    if (this.running.size >= this.o.maxQueries) throw gridError('BUSY', `node ${this.o.where()} runs ${this.running.size} encrypted queries already; try again shortly`);
    const input = ringOf(Uint8Array.from(ctx.attachment), data.batch * width);
    const started = performance.now();
    // Stopped by smpc-cancel, or by the client's cancel of this request (or its connection closing).
    const stop = new AbortController();
    const cancelled = () => stop.abort(gridError('ABORTED', `encrypted query ${data.query_id} was cancelled by the client`));
    ctx.signal.addEventListener('abort', cancelled, { once: true });
    const work = model.info.party === 0 ? this.lead(model, data, input, stop.signal) : this.follow(model, data, input, stop.signal);
    this.running.set(data.query_id, { user: u, stop, ended: work.then(() => undefined, () => undefined) });
    let out: BigInt64Array;
    try {
      out = await work;
    } finally {
      ctx.signal.removeEventListener('abort', cancelled);
      this.running.delete(data.query_id);
    }
    const dims = [data.batch, ...model.plan.output.shape];
    return withAttachment(
      { model_id: data.model_id, query_id: data.query_id, party: model.info.party, dims, duration_ms: performance.now() - started },
      new Uint8Array(out.buffer, out.byteOffset, out.byteLength),
    );
  }

  /** Party 0: randomness from the provider, the query started on party 1, then the evaluation. */
  private async lead(model: HeldModel, q: { query_id: string; batch: number; model_id: string }, input: BigInt64Array, signal: AbortSignal): Promise<BigInt64Array> {
    const { links, stepTimeoutMs: timeout } = this.o;
    const [peer, provider] = await Promise.all([links.socket(model.info.peer, 'other share holder'), links.socket(model.info.provider, 'crypto provider')]);
    const bundleId = randomBytes(16).toString('hex');
    const seed = randomBytes(32);
    const schedule = scheduleOf(model.plan, q.batch, true);
    try {
      signal.throwIfAborted();
      const [dealt, joined] = await Promise.all([
        call(provider, 'the crypto provider', () => provider.call(SmpcDeal, { bundle_id: bundleId, party: 0, peer_id: model.info.peer.id, schedule, mask_nonce: model.maskNonce }, { timeout, signal })),
        call(peer, 'the other share holder', () => peer.request(SmpcJoin, {
          model_id: model.info.model_id, query_id: q.query_id, pair_tag: model.info.pair_tag, bundle_id: bundleId, batch: q.batch, seed: seed.toString('base64url'),
          open_mask: !masksOpened(model),
        }, { timeout, signal })),
      ]);
      const channel: PartyChannel = {
        exchange: async (tag, mine) => {
          const r = await call(peer, 'the other share holder', () => peer.call(SmpcExchange, { query_id: q.query_id, tag }, { attachment: mine, timeout, signal }));
          return attachmentOf(r.attachment, 'the other share holder');
        },
        compare: async (step, masked) => {
          const r = await call(provider, 'the crypto provider', () => provider.call(SmpcCompare, { bundle_id: bundleId, party: 0, step }, { attachment: masked, timeout, signal }));
          return attachmentOf(r.attachment, 'the crypto provider');
        },
      };
      return await this.evaluate(model, q.batch, input, attachmentOf(dealt.attachment, 'the crypto provider'), seed, channel, joined.open_mask);
    } catch (err) {
      await this.release(provider, bundleId);
      throw signal.aborted ? signal.reason : err;
    }
  }

  /** Tells the provider a bundle will not be used (cancelled or failed query); best effort, never throws. */
  private async release(provider: GridSocket, bundleId: string): Promise<void> {
    try {
      // Briefly: a provider that does not answer has the bundle expire, and the query's error is not held up.
      await provider.request(SmpcRelease, { bundle_id: bundleId }, { timeout: Math.min(this.o.stepTimeoutMs, FORGET_TIMEOUT_MS) });
    } catch (err) {
      this.o.log.debug({ bundle: bundleId, err: toGridError(err).message }, 'the crypto provider was not told to release a bundle (it expires)');
    }
  }

  /** Waits (bounded: the step timeout, maxQueries at once) for the client's smpc-infer of a query party 0 has joined already. */
  private async arrival(queryId: string, signal: AbortSignal): Promise<FollowerQuery> {
    if (this.arrivals.has(queryId)) throw gridError('ALREADY_EXISTS', `smpc-join: query ${queryId} was joined already`);
    if (this.arrivals.size >= this.o.maxQueries) throw gridError('BUSY', `node ${this.o.where()} waits for ${this.arrivals.size} encrypted queries already; try again shortly`);
    const d = deferred<void>();
    this.arrivals.set(queryId, d);
    const t = setTimeout(() => d.reject(gridError('NOT_FOUND', `smpc-join: the client did not send query ${queryId} to this share holder within ${this.o.stepTimeoutMs} ms`)), this.o.stepTimeoutMs);
    // Party 0 gave up on the query (its client cancelled it): stop waiting.
    const gone = () => d.reject(gridError('ABORTED', `smpc-join: share holder 0 stopped query ${queryId}`));
    signal.addEventListener('abort', gone, { once: true });
    try {
      await d.promise;
    } finally {
      signal.removeEventListener('abort', gone);
      clearTimeout(t);
      this.arrivals.delete(queryId);
    }
    const query = this.queries.get(queryId);
    if (query === undefined) throw gridError('NOT_FOUND', `smpc-join: query ${queryId} ended before it started`);
    return query;
  }

  /** Party 1: waits for party 0's smpc-join, then evaluates with it. */
  private async follow(model: HeldModel, q: { query_id: string; batch: number }, input: BigInt64Array, signal: AbortSignal): Promise<BigInt64Array> {
    const query = new FollowerQuery(model, input, q.batch, this.o.stepTimeoutMs);
    this.queries.set(q.query_id, query);
    this.arrivals.get(q.query_id)?.resolve();
    const stopped = () => query.fail(signal.reason);
    signal.addEventListener('abort', stopped, { once: true });
    const timer = setTimeout(() => query.fail(gridError('SMPC_ABORTED', `share holder ${model.info.peer.id} (party 0) did not start query ${q.query_id} within ${this.o.stepTimeoutMs} ms`)), this.o.stepTimeoutMs);
    query.started.promise.then(() => clearTimeout(timer), () => clearTimeout(timer));
    try {
      return await query.result.promise;
    } catch (err) {
      // The evaluation stops at its next step (every wait of a failed query rejects); then the bundle goes.
      await query.evaluation;
      if (query.bundle !== undefined) await this.release(query.bundle.provider, query.bundle.id);
      throw signal.aborted ? signal.reason : err;
    } finally {
      signal.removeEventListener('abort', stopped);
      clearTimeout(timer);
      this.queries.delete(q.query_id);
    }
  }

  private async join(data: { model_id: string; query_id: string; pair_tag: string; bundle_id: string; batch: number; seed: string; open_mask: boolean }, ctx: HandlerContext) {
    const held = this.queries.get(data.query_id)?.model ?? this.models.get(data.model_id);
    if (held === undefined) throw gridError('NOT_FOUND', `smpc-join: node ${this.o.where()} holds no share of "${data.model_id}"`);
    requireNode(ctx, held.info.peer.id, 'smpc-join');
    const query = this.queries.get(data.query_id) ?? await this.arrival(data.query_id, ctx.signal);
    const model = query.model;
    if (query.joined) throw gridError('ALREADY_EXISTS', `smpc-join: query ${data.query_id} was joined already`);
    if (model.info.model_id !== data.model_id || data.batch !== query.batch) {
      const e = gridError('SMPC_ABORTED', `query ${data.query_id}: the two share holders were asked different things (model ${data.model_id} × ${data.batch} rows vs ${model.info.model_id} × ${query.batch})`);
      query.fail(e);
      throw e;
    }
    if (data.pair_tag !== model.info.pair_tag) {
      const e = gridError('SMPC_SHARES_MISMATCH', `the shares of "${data.model_id}" on the two share holders do not belong together (they come from different uploads); serve the model again to both`);
      query.fail(e);
      throw e;
    }
    query.joined = true;
    const provider = await this.o.links.socket(model.info.provider, 'crypto provider').catch((err) => { query.fail(err); throw err; });
    const timeout = this.o.stepTimeoutMs;
    const signal = query.stop.signal;
    query.bundle = { provider, id: data.bundle_id };
    let dealt;
    try {
      dealt = await call(provider, 'the crypto provider', () => provider.call(SmpcDeal, {
        bundle_id: data.bundle_id, party: 1, peer_id: model.info.peer.id, schedule: scheduleOf(model.plan, query.batch, true), mask_nonce: model.maskNonce,
      }, { timeout, signal }));
    } catch (err) {
      query.fail(err);
      throw err;
    }
    const channel: PartyChannel = {
      exchange: (tag, mine) => query.exchange(tag, mine),
      compare: async (step, masked) => {
        const r = await call(provider, 'the crypto provider', () => provider.call(SmpcCompare, { bundle_id: data.bundle_id, party: 1, step }, { attachment: masked, timeout, signal }));
        return attachmentOf(r.attachment, 'the crypto provider');
      },
    };
    // Either holder lacking W − B (a first query, or one that failed before it opened) makes both open it.
    const openMask = data.open_mask || !masksOpened(model);
    query.started.resolve();
    // Party 0 leads every step over this connection: when it closes, the query is over at once (not at the step timeout).
    const off = ctx.connection.onClosed(() => query.fail(gridError('SMPC_ABORTED', `query ${data.query_id}: share holder 0 (${model.info.peer.address}) disconnected mid-query; no output`)));
    query.result.promise.then(off, off);
    query.evaluation = this.evaluate(model, query.batch, query.input, attachmentOf(dealt.attachment, 'the crypto provider'), Buffer.from(data.seed, 'base64url'), channel, openMask)
      .then((out) => query.result.resolve(out), (err) => query.fail(err));
    // A party 0 that stops answering without closing (a hung process) is ended by the step timeout (SMPC_ABORTED).
    return { query_id: data.query_id, open_mask: openMask };
  }

  private async evaluate(model: HeldModel, batch: number, input: BigInt64Array, bundle: Uint8Array, seed: Uint8Array, channel: PartyChannel, openMask: boolean): Promise<BigInt64Array> {
    try {
      return await evaluateShare({
        plan: model.plan, party: model.info.party, params: model.params, input, batch, bundle, seed, channel,
        masks: { b: model.masks.b, f: model.masks.f, open: openMask },
      });
    } catch (err) {
      if (err instanceof GridError) throw err.code === 'GRID_ERR_SMPC_ABORTED' || err.code === 'GRID_ERR_SMPC_SHARES_MISMATCH' || err.code === 'GRID_ERR_ABORTED' ? err : gridError('SMPC_ABORTED', `encrypted evaluation stopped: ${err.code}: ${err.message}`);
      // A RangeError here is a malformed opening, share or bundle: never an answer.
      throw gridError('SMPC_ABORTED', `encrypted evaluation stopped: ${(err as Error).message}`);
    }
  }
}


/** Encrypted models are shown to signed-in sessions only (smpc-models needs one too). */
const signedIn = (who: { user: string; role: string } | undefined) => who !== undefined;

/** Whether W − B of every weight is known here. */
function masksOpened(model: HeldModel): boolean {
  return model.masks.f.size === model.masks.b.size;
}

function user(ctx: HandlerContext, what: string): string {
  const u = ctx.connection.session.user;
  if (typeof u !== 'string') throw gridError('UNAUTHENTICATED', `${what} needs an authenticated session: authenticate first`);
  return u;
}

async function call<T>(socket: GridSocket, who: string, f: () => Promise<T>): Promise<T> {
  try {
    return await f();
  } catch (err) {
    const e = toGridError(err);
    if (e.code === 'GRID_ERR_SMPC_ABORTED' || e.code === 'GRID_ERR_SMPC_SHARES_MISMATCH') throw e;
    throw gridError('SMPC_ABORTED', `${who} (${socket.status.url ?? '?'}) failed during the encrypted evaluation: ${e.code}: ${e.message}`, { cause: e.code });
  }
}

function attachmentOf(a: Uint8Array | undefined, who: string): Uint8Array {
  if (a === undefined) throw gridError('SMPC_ABORTED', `${who} answered without the binary part the protocol needs`);
  return a;
}
