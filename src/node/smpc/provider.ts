// The crypto provider's side: deals Beaver triples and comparison randomness, half to each share
// holder, and answers the online step of each comparison (compute/smpc/compare.ts). It never receives a
// share of a weight or an input. Bundles for a schedule it has seen are dealt ahead, so a query usually
// finds its randomness ready; every bundle is handed out once and deleted: triples are never reused.

import { concat, deal, maskKey, maskKeyMessage, maskOf, providerCompare, bundleSize, type DealerSecrets, type Step } from '../../compute/smpc';
import type { NodeIdentity } from '../identity';
import { gridError } from '../../core/errors';
import type { Logger } from '../../core/logger';
import { SmpcCompare, SmpcDeal, SmpcMask, SmpcPrepare } from '../../core/protocol/smpc-messages';
import { withAttachment, type GridRouter, type HandlerContext } from '../rpc/server';
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
}

export const DEFAULT_PROVIDER_LIMITS: ProviderLimits = {
  maxBundles: 256, maxBundleBytes: 48 * 1024 * 1024, ttlMs: 120_000, poolSchedules: 8, poolDepth: 2, poolMaxBundleBytes: 8 * 1024 * 1024,
  // Any node that proves an id may ask: what one asks for is bounded, and what all hold together.
  maxHeldBytes: 512 * 1024 * 1024, maxBundlesPerHolder: 64,
};

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

  constructor(private readonly identity: NodeIdentity, private readonly log: Logger, private readonly limits: ProviderLimits = DEFAULT_PROVIDER_LIMITS) {}

  /** The mask key of an upload and its two holders: the provider's deterministic signature, hashed. */
  private maskKey(nonce: string, holders: readonly [string, string]): Uint8Array {
    return maskKey(this.identity.sign(maskKeyMessage(nonce, holders)));
  }

  register(router: GridRouter): void {
    router.handle(SmpcDeal, (data, ctx) => this.onDeal(data, ctx));
    router.handle(SmpcCompare, (data, ctx) => this.onCompare(data, ctx));
    router.handle(SmpcMask, (data, ctx) => {
      const me = this.holder(ctx, 'smpc-mask');
      if (data.holders[data.party] !== me) throw gridError('FORBIDDEN', `smpc-mask: node ${me} is not party ${data.party} of these masks`);
      if (data.holders[0] === data.holders[1]) throw gridError('INVALID_INPUT', 'smpc-mask: the two share holders must be different nodes');
      const total = data.weights.reduce((n, w) => n + w.size, 0);
      if (8 * total > this.limits.maxBundleBytes) throw gridError('PAYLOAD_TOO_LARGE', `smpc-mask: ${total} weights are above the provider's limit`);
      const key = this.maskKey(data.mask_nonce, data.holders);
      return withAttachment({ mask_nonce: data.mask_nonce }, concat(...data.weights.map((w) => maskOf(key, w.index, w.size).shares[data.party])));
    });
    // A share holder announcing the schedule of queries to come (at upload): deal them ahead.
    router.handle(SmpcPrepare, (data, ctx) => {
      const me = this.holder(ctx, 'smpc-prepare');
      const size = bundleSize(data.schedule);
      if (size > this.limits.maxBundleBytes) throw gridError('PAYLOAD_TOO_LARGE', `smpc-prepare: ${size} bytes per share holder is above the provider's ${this.limits.maxBundleBytes}`);
      const masked = data.schedule.some((s) => s.kind === 'matmul' && s.mask !== undefined);
      if (!masked) { this.refill(JSON.stringify([data.schedule, null, null]), data.schedule); return {}; }
      if (data.mask_nonce === undefined || data.peer_id === undefined || data.peer_id === me) throw gridError('INVALID_INPUT', 'smpc-prepare: masked products need mask_nonce and the other holder\'s peer_id');
      const holders: [string, string] = [me, data.peer_id];
      this.refill(JSON.stringify([data.schedule, data.mask_nonce, holders]), data.schedule, this.maskFn(data.mask_nonce, holders));
      return {};
    });
  }

  close(): void {
    this.closed = true;
    for (const [id, b] of this.bundles) this.drop(id, b, gridError('DISPOSED', 'the crypto provider is shutting down'));
    this.pool.clear();
  }

  private holder(ctx: HandlerContext, what: string): string {
    const id = attestedNode(ctx);
    if (id === undefined) throw gridError('FORBIDDEN', `${what} is for share-holder nodes that proved their id on this connection (node-attest)`);
    return id;
  }

  private onDeal(data: { bundle_id: string; party: 0 | 1; peer_id: string; schedule: Step[]; mask_nonce?: string | undefined }, ctx: HandlerContext) {
    const me = this.holder(ctx, 'smpc-deal');
    if (me === data.peer_id) throw gridError('INVALID_INPUT', 'smpc-deal: the two share holders must be different nodes');
    const size = bundleSize(data.schedule);
    if (size > this.limits.maxBundleBytes) {
      throw gridError('PAYLOAD_TOO_LARGE', `smpc-deal: this schedule needs ${size} bytes of randomness per share holder, above the provider's ${this.limits.maxBundleBytes}; query in smaller batches`);
    }
    let b = this.bundles.get(data.bundle_id);
    let pooled = false;
    if (b === undefined) {
      if (this.bundles.size >= this.limits.maxBundles) throw gridError('BUSY', `the crypto provider holds ${this.bundles.size} unused bundles; try again shortly`);
      if ((this.perHolder.get(me) ?? 0) >= this.limits.maxBundlesPerHolder) throw gridError('BUSY', `the crypto provider holds ${this.limits.maxBundlesPerHolder} unused bundles for node ${me}, the most it keeps for one node; try again shortly`);
      if (this.heldBytes + 2 * size > this.limits.maxHeldBytes) throw gridError('BUSY', `the crypto provider holds ${this.heldBytes} bytes of unused randomness; try again shortly`);
      const holders: [string, string] = data.party === 0 ? [me, data.peer_id] : [data.peer_id, me];
      const masked = data.schedule.some((s) => s.kind === 'matmul' && s.mask !== undefined);
      if (masked && data.mask_nonce === undefined) throw gridError('INVALID_INPUT', 'smpc-deal: a schedule with masked products needs the mask_nonce of its upload');
      // Masked bundles depend on the upload and its holders: pooled under all three.
      const key = JSON.stringify([data.schedule, masked ? data.mask_nonce : null, masked ? holders : null]);
      const maskFn = masked ? this.maskFn(data.mask_nonce!, holders) : undefined;
      const ready = this.pool.get(key)?.shift();
      pooled = ready !== undefined;
      const dealt = ready ?? deal(data.schedule, maskFn);
      const id = data.bundle_id;
      b = {
        dealt, steps: data.schedule.length, holders, fetched: [false, false], compares: new Map(), answered: new Set(),
        timer: setTimeout(() => this.drop(id, this.bundles.get(id)!, gridError('TIMEOUT', `bundle ${id} expired`)), this.limits.ttlMs),
        bytes: 2 * size, askedBy: me,
      };
      this.heldBytes += b.bytes;
      this.perHolder.set(me, (this.perHolder.get(me) ?? 0) + 1);
      b.timer.unref();
      this.bundles.set(id, b);
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
    setImmediate(() => {
      if (this.closed) return;
      while (list.length < this.limits.poolDepth) list.push(deal(schedule, maskFn));
    });
  }

  private drop(id: string, b: Bundle, err?: Error): void {
    clearTimeout(b.timer);
    for (const w of b.compares.values()) w.answer(err ?? gridError('ABORTED', `bundle ${id} was dropped`));
    if (this.bundles.delete(id)) {
      this.heldBytes -= b.bytes;
      const n = (this.perHolder.get(b.askedBy) ?? 1) - 1;
      if (n > 0) this.perHolder.set(b.askedBy, n);
      else this.perHolder.delete(b.askedBy);
    }
    if (err !== undefined) this.log.debug({ bundle: id, err: err.message }, 'smpc bundle dropped');
  }
}
