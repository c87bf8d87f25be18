// The crypto provider's side: deals Beaver triples and comparison randomness, half to each share
// holder, and answers the online step of each comparison (compute/smpc/compare.ts). It never receives a
// share of a weight or an input. Bundles for a schedule it has seen are dealt ahead, so a query usually
// finds its randomness ready; every bundle is handed out once and deleted: triples are never reused.
// It deals only for uploads it knows (each holder fetched its mask shares at upload, both naming the same
// holders and weights; the record, kept in the node's database, names the two holders and the weights' sizes), only to those two holders, and
// only products by those weights; dealing runs in slices between which the event loop serves other
// requests, so one large request cannot stall the provider node.

import { concat, dealAsync, dealCost, maskKey, maskKeyMessage, maskOf, providerCompare, bundleSize, type DealerSecrets, type Step } from '../../compute/smpc';
import type { NodeIdentity } from '../identity';
import { gridError, toGridError } from '../../core/errors';
import type { Logger } from '../../core/logger';
import { SmpcCompare, SmpcDeal, SmpcForget, SmpcMask, SmpcPrepare, SmpcRelease } from '../../core/protocol/smpc-messages';
import { withAttachment, type GridRouter, type HandlerContext } from '../rpc/server';
import type { Store } from '../store/sql';
import { attestedNode } from './attest';

export interface ProviderLimits {
  /** Bundles dealt and not yet used up. */
  maxBundles: number;
  /** Largest half-bundle, bytes (it travels in one frame). */
  maxBundleBytes: number;
  /** How long a bundle (and a half-answered comparison) waits for the other share holder. */
  ttlMs: number;
  /** Schedules whose bundles are dealt ahead, bundles kept ready per schedule, and the largest bundle pooled (bytes, both halves). */
  poolSchedules: number;
  poolDepth: number;
  poolMaxBundleBytes: number;
  /** Bytes of randomness held for bundles not used up yet (both halves), across all share holders. */
  maxHeldBytes: number;
  /** Bundles not used up yet that one share-holder node may have asked for. */
  maxBundlesPerHolder: number;
  /** Ring multiplications one deal may cost (its products and ReLU triples): bounds the CPU of one request. */
  maxDealMultiplies: number;
  /** Uploads this provider deals for in which one share-holder node is either party, and in all. */
  maxUploadsPerHolder: number;
  maxUploads: number;
  /**
   * Uploads one holder announced (smpc-mask) whose other holder has not yet: nothing is dealt for them,
   * they expire after pendingTtlMs, and one node may have maxPendingPerHolder of them (maxPending in all).
   */
  maxPendingPerHolder: number;
  maxPending: number;
  pendingTtlMs: number;
}

export const DEFAULT_PROVIDER_LIMITS: ProviderLimits = {
  maxBundles: 256, maxBundleBytes: 48 * 1024 * 1024, ttlMs: 120_000, poolSchedules: 8, poolDepth: 2, poolMaxBundleBytes: 8 * 1024 * 1024,
  // Any node that proves an id may ask: what one asks for is bounded, and what all hold together.
  maxHeldBytes: 512 * 1024 * 1024, maxBundlesPerHolder: 64, maxDealMultiplies: 1 << 30, maxUploadsPerHolder: 1024,
  maxUploads: 65_536, maxPendingPerHolder: 16, maxPending: 1024, pendingTtlMs: 60_000,
};

/** An upload the provider deals for: its two holders (party 0, party 1) and its weights' sizes by parameter index. */
interface Upload { holders: [string, string]; weights: Map<number, number> }

/** An upload only one of its holders has announced so far: registered when the other one's smpc-mask matches. */
interface PendingUpload extends Upload {
  /** The holder that announced it (charged for it), and its party. */
  by: string;
  party: 0 | 1;
  timer: NodeJS.Timeout;
  /** Settles when the upload is registered (true) or the record goes (false): a prepare waits on it. */
  settled: Promise<boolean>;
  settle(registered: boolean): void;
}

interface Dealt { bundles: [Uint8Array, Uint8Array]; secrets: DealerSecrets }

interface Bundle {
  dealt: Dealt;
  steps: number;
  holders: [string, string];
  fetched: [boolean, boolean];
  /** Comparisons waiting for the other party: step → the first party's masked values and answer. */
  compares: Map<number, { party: 0 | 1; masked: Uint8Array; answer: (shares: [BigInt64Array, BigInt64Array] | Error) => void; done: Promise<[BigInt64Array, BigInt64Array]> }>;
  answered: Set<number>;
  timer: NodeJS.Timeout;
  /** Bytes it was charged (both halves), and the node that asked for it first. */
  bytes: number;
  askedBy: string;
}

export class CryptoProvider {
  private readonly bundles = new Map<string, Bundle>();
  private readonly pool = new Map<string, Dealt[]>();
  private closed = false;
  private heldBytes = 0;
  private readonly perHolder = new Map<string, number>();
  /** Deals under way, by bundle id: a release (or the requester's cancel) stops them. */
  private readonly dealing = new Map<string, { stop: AbortController; done: Promise<void> }>();
  /** Pool keys being dealt ahead (one filler per key). */
  private readonly filling = new Set<string>();
  private readonly uploads = new Map<string, Upload>();
  /** Uploads announced by one holder only, by mask nonce, and how many each node announced. */
  private readonly pending = new Map<string, PendingUpload>();
  private readonly pendingBy = new Map<string, number>();
  /** Stops the pool's dealing ahead on close. */
  private readonly closing = new AbortController();

  /** Uploads being registered, one after another (a check and its insert are not split by another's). */
  private registering: Promise<unknown> = Promise.resolve();

  constructor(private readonly identity: NodeIdentity, private readonly db: Store, private readonly log: Logger, private readonly limits: ProviderLimits = DEFAULT_PROVIDER_LIMITS) {}

  /** The uploads it deals for, as recorded before a restart. */
  async load(): Promise<void> {
    for (const r of await this.db.all('SELECT mask_nonce, holder0, holder1, weights FROM smpc_uploads')) {
      const weights = JSON.parse(String(r.weights)) as { index: number; size: number }[];
      this.uploads.set(String(r.mask_nonce), { holders: [String(r.holder0), String(r.holder1)], weights: new Map(weights.map((w) => [w.index, w.size])) });
    }
  }

  /**
   * Records one holder's smpc-mask. An upload is registered (dealt for, kept in the database) only once
   * both of its holders announced it with the same holders and weights: a node cannot make the provider
   * keep records on behalf of nodes that never asked. Until then it is pending: bounded per node and in
   * all, and dropped after pendingTtlMs. Everything is counted against the calling node (`me`).
   */
  private announce(me: string, party: 0 | 1, nonce: string, holders: [string, string], weights: { index: number; size: number }[]): Promise<void> {
    // One at a time: each reads the counts the one before it wrote (the database is asynchronous).
    const done = this.registering.then(() => this.announceNow(me, party, nonce, holders, weights));
    this.registering = done.catch(() => undefined);
    return done;
  }

  private async announceNow(me: string, party: 0 | 1, nonce: string, holders: [string, string], weights: { index: number; size: number }[]): Promise<void> {
    const same = (u: Upload) => u.holders[0] === holders[0] && u.holders[1] === holders[1] && u.weights.size === weights.length && weights.every((w) => u.weights.get(w.index) === w.size);
    const known = this.uploads.get(nonce);
    if (known !== undefined) {
      if (!same(known)) throw gridError('FORBIDDEN', `smpc-mask: upload ${nonce} was registered with other share holders or weights`);
      return;
    }
    const pending = this.pending.get(nonce);
    if (pending !== undefined) {
      if (!same(pending)) throw gridError('FORBIDDEN', `smpc-mask: upload ${nonce} was announced with other share holders or weights`);
      if (pending.party === party) return;
      for (const h of holders) await this.checkUploadQuota(h);
      await this.db.run('INSERT INTO smpc_uploads (mask_nonce, holder0, holder1, weights, created) VALUES (?, ?, ?, ?, ?)', [nonce, holders[0], holders[1], JSON.stringify(weights), new Date().toISOString()]);
      this.uploads.set(nonce, { holders, weights: new Map(weights.map((w) => [w.index, w.size])) });
      this.dropPending(nonce, pending, true);
      return;
    }
    await this.checkUploadQuota(me);
    const mine = this.pendingBy.get(me) ?? 0;
    if (mine >= this.limits.maxPendingPerHolder) {
      throw gridError('QUOTA_EXCEEDED', `the crypto provider waits for the other share holder of ${mine} uploads announced by node ${me}, the most it keeps for one node; retry once those uploads completed or expired (${this.limits.pendingTtlMs} ms)`, { limit: this.limits.maxPendingPerHolder });
    }
    if (this.pending.size >= this.limits.maxPending) throw gridError('BUSY', `the crypto provider waits for ${this.pending.size} uploads to complete; try again shortly`);
    let settle!: (registered: boolean) => void;
    const settled = new Promise<boolean>((resolve) => { settle = resolve; });
    const timer = setTimeout(() => {
      this.log.debug({ mask_nonce: nonce, by: me }, 'smpc upload expired before its other share holder announced it');
      this.dropPending(nonce, p, false);
    }, this.limits.pendingTtlMs);
    timer.unref();
    const p: PendingUpload = { holders, weights: new Map(weights.map((w) => [w.index, w.size])), by: me, party, timer, settled, settle };
    this.pending.set(nonce, p);
    this.pendingBy.set(me, mine + 1);
  }

  /** Refuses a new upload for `holder` once it has as many as one node may (or the provider has its most). */
  private async checkUploadQuota(holder: string): Promise<void> {
    const count = Number((await this.db.get('SELECT COUNT(*) AS n FROM smpc_uploads WHERE holder0 = ? OR holder1 = ?', [holder, holder]))?.n ?? 0);
    if (count >= this.limits.maxUploadsPerHolder) {
      throw gridError('QUOTA_EXCEEDED', `the crypto provider deals for ${count} encrypted models of share holder ${holder}, the most it keeps for one node; delete some`, { limit: this.limits.maxUploadsPerHolder });
    }
    if (this.uploads.size >= this.limits.maxUploads) {
      throw gridError('QUOTA_EXCEEDED', `the crypto provider deals for ${this.uploads.size} encrypted models, its limit; delete some`, { limit: this.limits.maxUploads });
    }
  }

  private dropPending(nonce: string, p: PendingUpload, registered: boolean): void {
    if (this.pending.get(nonce) !== p) return;
    clearTimeout(p.timer);
    this.pending.delete(nonce);
    const n = (this.pendingBy.get(p.by) ?? 1) - 1;
    if (n > 0) this.pendingBy.set(p.by, n);
    else this.pendingBy.delete(p.by);
    p.settle(registered);
  }

  /**
   * The upload a deal is for, refused (SMPC_UNKNOWN_UPLOAD) unless the provider knows it, `holders` are
   * its two holders in order, and every masked product multiplies by one of its weights at that weight's size.
   */
  private known(what: string, nonce: string | undefined, holders: readonly [string, string], schedule: readonly Step[]): Upload {
    const u = nonce === undefined ? undefined : this.uploads.get(nonce);
    if (u === undefined) {
      throw gridError('SMPC_UNKNOWN_UPLOAD', `${what}: the crypto provider ${this.identity.id} deals for no encrypted model ${nonce === undefined ? '(no mask_nonce was given)' : `of upload ${nonce}`}; serve the model again naming this node as its provider`);
    }
    if (u.holders[0] !== holders[0] || u.holders[1] !== holders[1]) {
      throw gridError('SMPC_UNKNOWN_UPLOAD', `${what}: nodes ${holders[0]} and ${holders[1]} are not the share holders (party 0, party 1) of upload ${nonce}`);
    }
    for (const [i, st] of schedule.entries()) {
      if (st.kind !== 'matmul') continue;
      if (st.mask === undefined || u.weights.get(st.mask) !== st.k * st.n) {
        throw gridError('SMPC_UNKNOWN_UPLOAD', `${what}: step ${i} is not a product by a weight of upload ${nonce}`);
      }
    }
    return u;
  }

  /** Refuses a schedule whose dealing would cost more than one request may. */
  private bounded(what: string, schedule: readonly Step[]): void {
    const size = bundleSize(schedule);
    if (size > this.limits.maxBundleBytes) {
      throw gridError('PAYLOAD_TOO_LARGE', `${what}: this schedule needs ${size} bytes of randomness per share holder, above the provider's ${this.limits.maxBundleBytes}; query in smaller batches`);
    }
    const cost = dealCost(schedule);
    if (cost > this.limits.maxDealMultiplies) {
      throw gridError('PAYLOAD_TOO_LARGE', `${what}: dealing this schedule costs ${cost} ring multiplications, above the provider's ${this.limits.maxDealMultiplies}; query in smaller batches`);
    }
  }

  /** The mask key of an upload and its two holders: the provider's deterministic signature, hashed. */
  private maskKey(nonce: string, holders: readonly [string, string]): Uint8Array {
    return maskKey(this.identity.sign(maskKeyMessage(nonce, holders)));
  }

  register(router: GridRouter): void {
    router.handle(SmpcDeal, (data, ctx) => this.onDeal(data, ctx));
    router.handle(SmpcCompare, (data, ctx) => this.onCompare(data, ctx));
    router.handle(SmpcMask, async (data, ctx) => {
      const me = this.holder(ctx, 'smpc-mask');
      if (data.holders[data.party] !== me) throw gridError('FORBIDDEN', `smpc-mask: node ${me} is not party ${data.party} of these masks`);
      if (data.holders[0] === data.holders[1]) throw gridError('INVALID_INPUT', 'smpc-mask: the two share holders must be different nodes');
      const total = data.weights.reduce((n, w) => n + w.size, 0);
      if (8 * total > this.limits.maxBundleBytes) throw gridError('PAYLOAD_TOO_LARGE', `smpc-mask: ${total} weights are above the provider's limit`);
      await this.announce(me, data.party, data.mask_nonce, data.holders, data.weights);
      const key = this.maskKey(data.mask_nonce, data.holders);
      return withAttachment({ mask_nonce: data.mask_nonce }, concat(...data.weights.map((w) => maskOf(key, w.index, w.size).shares[data.party])));
    });
    // A share holder announcing the schedule of queries to come (at upload): deal them ahead.
    router.handle(SmpcPrepare, async (data, ctx) => {
      const me = this.holder(ctx, 'smpc-prepare');
      this.bounded('smpc-prepare', data.schedule);
      if (data.peer_id === undefined || data.peer_id === me) throw gridError('INVALID_INPUT', 'smpc-prepare needs the other holder\'s peer_id');
      const holders: [string, string] = [me, data.peer_id];
      // Sent right after this holder's smpc-mask: the other holder's may still be on its way.
      const pending = data.mask_nonce === undefined ? undefined : this.pending.get(data.mask_nonce);
      if (pending !== undefined && pending.holders[0] === me) await pending.settled;
      this.known('smpc-prepare', data.mask_nonce, holders, data.schedule);
      this.refill(JSON.stringify([data.schedule, data.mask_nonce, holders]), data.schedule, this.maskFn(data.mask_nonce!, holders));
      return {};
    });
    // A share holder whose model was deleted: no more deals for that upload.
    router.handle(SmpcForget, async (data, ctx) => {
      const me = this.holder(ctx, 'smpc-forget');
      const p = this.pending.get(data.mask_nonce);
      if (p !== undefined && p.holders.includes(me)) {
        this.dropPending(data.mask_nonce, p, false);
        return { forgotten: true };
      }
      const u = this.uploads.get(data.mask_nonce);
      if (u === undefined) return { forgotten: false };
      if (!u.holders.includes(me)) throw gridError('FORBIDDEN', `smpc-forget: node ${me} is not a share holder of upload ${data.mask_nonce}`);
      await this.db.run('DELETE FROM smpc_uploads WHERE mask_nonce = ?', [data.mask_nonce]);
      this.uploads.delete(data.mask_nonce);
      for (const key of [...this.pool.keys()]) if (key.includes(`"${data.mask_nonce}"`)) this.pool.delete(key);
      return { forgotten: true };
    });
    // A query that ended before using its bundle (cancelled, failed): the randomness goes now, not at its TTL.
    router.handle(SmpcRelease, (data, ctx) => {
      const me = this.holder(ctx, 'smpc-release');
      const b = this.bundles.get(data.bundle_id);
      const pending = this.dealing.get(data.bundle_id);
      if (b !== undefined && !b.holders.includes(me)) throw gridError('FORBIDDEN', `smpc-release: bundle ${data.bundle_id} belongs to other share holders`);
      pending?.stop.abort(gridError('ABORTED', `bundle ${data.bundle_id} was released`));
      if (b !== undefined) this.drop(data.bundle_id, b, gridError('ABORTED', `bundle ${data.bundle_id} was released by node ${me}`));
      return { released: b !== undefined || pending !== undefined };
    });
  }

  close(): void {
    this.closed = true;
    this.closing.abort(gridError('DISPOSED', 'the crypto provider is shutting down'));
    for (const d of this.dealing.values()) d.stop.abort(gridError('DISPOSED', 'the crypto provider is shutting down'));
    for (const [id, b] of this.bundles) this.drop(id, b, gridError('DISPOSED', 'the crypto provider is shutting down'));
    for (const [nonce, p] of this.pending) this.dropPending(nonce, p, false);
    this.pool.clear();
  }

  private holder(ctx: HandlerContext, what: string): string {
    const id = attestedNode(ctx);
    if (id === undefined) throw gridError('FORBIDDEN', `${what} is for share-holder nodes that proved their id on this connection (node-attest)`);
    return id;
  }

  private async onDeal(data: { bundle_id: string; party: 0 | 1; peer_id: string; schedule: Step[]; mask_nonce?: string | undefined }, ctx: HandlerContext) {
    const me = this.holder(ctx, 'smpc-deal');
    if (me === data.peer_id) throw gridError('INVALID_INPUT', 'smpc-deal: the two share holders must be different nodes');
    const holders: [string, string] = data.party === 0 ? [me, data.peer_id] : [data.peer_id, me];
    this.known('smpc-deal', data.mask_nonce, holders, data.schedule);
    this.bounded('smpc-deal', data.schedule);
    const size = bundleSize(data.schedule);
    let b = this.bundles.get(data.bundle_id);
    let pooled = false;
    const pending = b === undefined ? this.dealing.get(data.bundle_id) : undefined;
    if (pending !== undefined) {
      // The other holder asked first and its bundle is still being dealt: this half comes with it.
      await pending.done;
      b = this.bundles.get(data.bundle_id);
      if (b === undefined) throw gridError('ABORTED', `smpc-deal: bundle ${data.bundle_id} was released while it was dealt`);
      if (b.holders[data.party] !== me || b.holders[1 - data.party] !== data.peer_id) throw gridError('FORBIDDEN', `smpc-deal: bundle ${data.bundle_id} belongs to other share holders`);
    } else if (b === undefined) {
      if (this.bundles.size + this.dealing.size >= this.limits.maxBundles) throw gridError('BUSY', `the crypto provider holds ${this.bundles.size} unused bundles; try again shortly`);
      if ((this.perHolder.get(me) ?? 0) >= this.limits.maxBundlesPerHolder) throw gridError('BUSY', `the crypto provider holds ${this.limits.maxBundlesPerHolder} unused bundles for node ${me}, the most it keeps for one node; try again shortly`);
      if (this.heldBytes + 2 * size > this.limits.maxHeldBytes) throw gridError('BUSY', `the crypto provider holds ${this.heldBytes} bytes of unused randomness; try again shortly`);
      // Masked bundles depend on the upload and its holders: pooled under all three.
      const key = JSON.stringify([data.schedule, data.mask_nonce, holders]);
      const maskFn = this.maskFn(data.mask_nonce!, holders);
      const ready = this.pool.get(key)?.shift();
      pooled = ready !== undefined;
      const id = data.bundle_id;
      // Charged while it is dealt, so requests at once cannot pass the bounds together.
      this.heldBytes += 2 * size;
      this.perHolder.set(me, (this.perHolder.get(me) ?? 0) + 1);
      let dealt: Dealt;
      // Settled once this bundle is in `bundles` (or failed): the other holder's deal waits on it.
      let settle = () => {};
      if (ready !== undefined) {
        dealt = ready;
      } else {
        const stop = new AbortController();
        const work = dealAsync(data.schedule, maskFn, AbortSignal.any([stop.signal, this.closing.signal]));
        this.dealing.set(id, { stop, done: new Promise<void>((resolve) => { settle = resolve; }) });
        const cancelled = () => stop.abort(ctx.signal.reason);
        ctx.signal.addEventListener('abort', cancelled, { once: true });
        try {
          dealt = await work;
        } catch (err) {
          this.uncharge(me, 2 * size);
          settle();
          throw toGridError(err);
        } finally {
          ctx.signal.removeEventListener('abort', cancelled);
          this.dealing.delete(id);
        }
      }
      if (ctx.aborted || this.closed) {
        this.uncharge(me, 2 * size);
        settle();
        throw gridError('ABORTED', `smpc-deal: bundle ${id} was cancelled while it was dealt`);
      }
      b = {
        dealt, steps: data.schedule.length, holders, fetched: [false, false], compares: new Map(), answered: new Set(),
        timer: setTimeout(() => this.drop(id, this.bundles.get(id)!, gridError('TIMEOUT', `bundle ${id} expired`)), this.limits.ttlMs),
        bytes: 2 * size, askedBy: me,
      };
      b.timer.unref();
      this.bundles.set(id, b);
      settle();
      this.refill(key, data.schedule, maskFn);
    } else if (b.holders[data.party] !== me || b.holders[1 - data.party] !== data.peer_id) {
      throw gridError('FORBIDDEN', `smpc-deal: bundle ${data.bundle_id} belongs to other share holders`);
    }
    if (b.fetched[data.party]) throw gridError('FORBIDDEN', `smpc-deal: party ${data.party}'s half of bundle ${data.bundle_id} was handed out already; randomness is never dealt twice`);
    b.fetched[data.party] = true;
    const half = b.dealt.bundles[data.party];
    // Only the provider's secrets stay; the half leaves with this reply.
    b.dealt.bundles[data.party] = new Uint8Array(0);
    if (b.fetched[0] && b.fetched[1] && b.dealt.secrets.size === 0) this.drop(data.bundle_id, b);
    ctx.log.debug({ bundle: data.bundle_id, party: data.party, bytes: half.length, pooled }, 'smpc bundle dealt');
    return withAttachment({ bundle_id: data.bundle_id, size: half.length, pooled }, half);
  }

  private uncharge(holder: string, bytes: number): void {
    this.heldBytes -= bytes;
    const n = (this.perHolder.get(holder) ?? 1) - 1;
    if (n > 0) this.perHolder.set(holder, n);
    else this.perHolder.delete(holder);
  }

  private async onCompare(data: { bundle_id: string; party: 0 | 1; step: number }, ctx: HandlerContext) {
    const me = this.holder(ctx, 'smpc-compare');
    const b = this.bundles.get(data.bundle_id);
    if (b === undefined) throw gridError('NOT_FOUND', `smpc-compare: no bundle ${data.bundle_id} (expired or used up)`);
    if (b.holders[data.party] !== me) throw gridError('FORBIDDEN', `smpc-compare: node ${me} is not party ${data.party} of bundle ${data.bundle_id}`);
    const msb = b.dealt.secrets.get(data.step);
    if (msb === undefined || b.answered.has(data.step)) throw gridError('INVALID_INPUT', `smpc-compare: bundle ${data.bundle_id} has no open comparison at step ${data.step}`);
    const masked = ctx.attachment;
    if (masked === undefined) throw gridError('INVALID_INPUT', 'smpc-compare carries the masked values as its attachment; none was sent');
    let waiting = b.compares.get(data.step);
    if (waiting === undefined) {
      let answer!: (v: [BigInt64Array, BigInt64Array] | Error) => void;
      const done = new Promise<[BigInt64Array, BigInt64Array]>((resolve, reject) => { answer = (v) => (v instanceof Error ? reject(v) : resolve(v)); });
      done.catch(() => {});
      waiting = { party: data.party, masked, answer, done };
      b.compares.set(data.step, waiting);
    } else {
      if (waiting.party === data.party) throw gridError('INVALID_INPUT', `smpc-compare: party ${data.party} sent step ${data.step} twice`);
      b.compares.delete(data.step);
      b.answered.add(data.step);
      b.dealt.secrets.delete(data.step);
      const [m0, m1] = data.party === 0 ? [masked, waiting.masked] : [waiting.masked, masked];
      try {
        waiting.answer(providerCompare(m0, m1, msb));
      } catch (err) {
        waiting.answer(gridError('INVALID_INPUT', `smpc-compare: ${(err as Error).message}`));
      }
      if (b.dealt.secrets.size === 0 && b.fetched[0] && b.fetched[1]) this.drop(data.bundle_id, b);
    }
    const shares = await waiting.done;
    const mine = shares[data.party];
    return withAttachment({ bundle_id: data.bundle_id, step: data.step }, new Uint8Array(mine.buffer, mine.byteOffset, mine.byteLength));
  }

  /** Deals the next bundles for a schedule after the current request, so the next query finds them ready. */
  private maskFn(nonce: string, holders: readonly [string, string]): (index: number, size: number) => BigInt64Array {
    const key = this.maskKey(nonce, holders);
    return (index, size) => maskOf(key, index, size).b;
  }

  private refill(key: string, schedule: Step[], maskFn?: (index: number, size: number) => BigInt64Array): void {
    // Memory held ahead stays bounded: at most poolSchedules × poolDepth × poolMaxBundleBytes.
    if (2 * bundleSize(schedule) > this.limits.poolMaxBundleBytes) return;
    if (!this.pool.has(key) && this.pool.size >= this.limits.poolSchedules) return;
    const list = this.pool.get(key) ?? [];
    this.pool.set(key, list);
    if (this.filling.has(key)) return;
    this.filling.add(key);
    void (async () => {
      try {
        while (!this.closed && this.pool.get(key) === list && list.length < this.limits.poolDepth) list.push(await dealAsync(schedule, maskFn, this.closing.signal));
      } catch { /* closing */ } finally {
        this.filling.delete(key);
      }
    })();
  }

  private drop(id: string, b: Bundle, err?: Error): void {
    clearTimeout(b.timer);
    for (const w of b.compares.values()) w.answer(err ?? gridError('ABORTED', `bundle ${id} was dropped`));
    if (this.bundles.delete(id)) this.uncharge(b.askedBy, b.bytes);
    if (err !== undefined) this.log.debug({ bundle: id, err: err.message }, 'smpc bundle dropped');
  }
}
