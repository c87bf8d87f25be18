// One share holder's side of an encrypted evaluation: the plan's layers on this party's shares, talking
// to the other share holder (openings) and the crypto provider (comparisons) through a channel. Both
// share holders run this with the same plan, batch, schedule and shared seed.

import { beaverMatmul, beaverMul, beaverOpen, beaverOpened, concat, ringOf } from './beaver';
import { maskCompare, signShare } from './compare';
import { parseBundle, type MatmulPart, type ReluPart } from './correlations';
import { add, sub } from './ring';
import { im2col, poolWindows, rowsToChannels } from './conv';
import { SCALE } from './fixed';
import { scheduleOf, paramCount, rowSize, weightIndices, type SmpcPlan } from './plan';
import { SharedPrg } from './prg';
import type { Party } from './shares';
import { truncate } from './truncate';

/** How a share holder reaches the others during one evaluation; tags are unique within it. */
export interface PartyChannel {
  /** Sends `mine` to the other share holder and returns what it sent for the same tag. */
  exchange(tag: number, mine: Uint8Array): Promise<Uint8Array>;
  /** Sends masked comparison values to the crypto provider and returns this party's ring shares of its answer. */
  compare(step: number, masked: Uint8Array): Promise<Uint8Array>;
}

export interface EvaluateOptions {
  plan: SmpcPlan;
  party: Party;
  /** This party's share of the parameter vector (fixed point). */
  params: BigInt64Array;
  /** This party's share of the input, [batch, ...input shape] (fixed point). */
  input: BigInt64Array;
  batch: number;
  /** This party's correlated randomness for scheduleOf(plan, batch). */
  bundle: Uint8Array;
  /** 32 bytes both share holders hold and the provider does not. */
  seed: Uint8Array;
  channel: PartyChannel;
  signal?: AbortSignal;
  /**
   * Weights masked once per model (masks.ts): this party's share of each weight's mask B, by parameter
   * index, and the opened F = W − B once known. With `open`, the evaluation first opens F (one
   * exchange) and fills `f`.
   */
  masks?: { b: Map<number, BigInt64Array>; f: Map<number, BigInt64Array>; open: boolean };
}

/** Tag of the one opening of the masked weights (above every step's tags). */
export const MASK_OPEN_TAG = 1 << 20;

/** Evaluates the plan on shares; returns this party's share of the output [batch, ...output shape]. */
export async function evaluateShare(o: EvaluateOptions): Promise<BigInt64Array> {
  const { plan, party, batch, channel } = o;
  if (o.params.length !== paramCount(plan)) throw new RangeError(`the parameter share holds ${o.params.length} values, the plan ${paramCount(plan)}`);
  if (o.input.length !== batch * rowSize(plan.input.shape)) throw new RangeError(`the input share holds ${o.input.length} values, not ${batch} rows of ${rowSize(plan.input.shape)}`);
  const masks = o.masks;
  const schedule = scheduleOf(plan, batch, masks !== undefined);
  const parts = parseBundle(schedule, o.bundle);
  const offsets: number[] = [];
  plan.params.reduce((off, p) => { offsets.push(off); return off + p.size; }, 0);
  const paramOf = (i: number) => o.params.subarray(offsets[i]!, offsets[i]! + plan.params[i]!.size);
  let x = o.input;
  let step = 0;
  if (masks !== undefined && masks.open) {
    const weights = weightIndices(plan);
    const mine = concat(...weights.map((w) => sub(paramOf(w), maskShare(masks, w))));
    const theirs = ringOf(await channel.exchange(MASK_OPEN_TAG, mine));
    const both = add(ringOf(mine), theirs);
    let off = 0;
    for (const w of weights) { masks.f.set(w, both.slice(off, off + plan.params[w]!.size)); off += plan.params[w]!.size; }
  }
  // One dealt part per step, in schedule order; openings are tagged 2·step and 2·step + 1.
  const linear = async (input: BigInt64Array, weight: number, m: number, k: number, n: number, bias: BigInt64Array | undefined) => {
    const index = step++;
    const dealt = parts[index] as MatmulPart;
    let e: BigInt64Array, f: BigInt64Array, t: MatmulPart;
    if (masks !== undefined) {
      // The weight's mask was opened once: only X − A is opened now.
      t = { a: dealt.a, b: maskShare(masks, weight), c: dealt.c };
      f = masks.f.get(weight) ?? missing(weight);
      const mine = sub(input, t.a);
      e = add(mine, ringOf(await channel.exchange(2 * index, concat(mine)), mine.length));
    } else {
      t = dealt;
      const w = paramOf(weight);
      const mine = beaverOpen(input, w, t);
      ({ e, f } = beaverOpened(mine, await channel.exchange(2 * index, mine), input.length, w.length));
    }
    const y = truncate(party, beaverMatmul(party, e, f, t, m, k, n));
    if (bias !== undefined) for (let i = 0; i < y.length; i++) y[i] = y[i]! + bias[i % n]!;
    return y;
  };
  const relu = async (v: BigInt64Array) => {
    const index = step++;
    const t = parts[index] as ReluPart;
    // Open c = v + r to the other share holder.
    const cMine = add(v, t.r);
    const cTheirs = ringOf(await channel.exchange(2 * index, concat(cMine)), v.length);
    const c = add(cMine, cTheirs);
    const { masked, gamma } = maskCompare(party, c, t.rBits, new SharedPrg(o.seed, `relu/${index}`));
    const fromProvider = ringOf(await channel.compare(index, masked), v.length);
    const positive = signShare(party, fromProvider, gamma);
    // ReLU(v) = v · (1 − MSB(v)): one elementwise Beaver product; the factor is 0/1, so no truncation.
    const mine = beaverOpen(v, positive, t.triple);
    const theirs = await channel.exchange(2 * index + 1, mine);
    const { e, f } = beaverOpened(mine, theirs, v.length, v.length);
    return beaverMul(party, e, f, t.triple);
  };
  for (const layer of plan.layers) {
    o.signal?.throwIfAborted();
    if (layer.op === 'reshape') continue;
    if (layer.op === 'linear') {
      x = await linear(x, layer.weight, batch, layer.in, layer.out, layer.bias === undefined ? undefined : paramOf(layer.bias));
    } else if (layer.op === 'relu') {
      x = await relu(x);
    } else if (layer.op === 'conv') {
      const [c, h, w] = layer.in as [number, number, number];
      const [kh, kw] = layer.kernel as [number, number];
      const { cols, oh, ow } = im2col(x, batch, c, h, w, kh, kw, layer.pads, layer.strides);
      const y = await linear(cols, layer.weight, batch * oh * ow, c * kh * kw, layer.out, layer.bias === undefined ? undefined : paramOf(layer.bias));
      x = rowsToChannels(y, batch, layer.out, oh, ow);
    } else {
      const [c, h, w] = layer.in as [number, number, number];
      const { windows } = poolWindows(x, batch, c, h, w, layer.kernel[0]!, layer.kernel[1]!, layer.strides[0]!, layer.strides[1]!);
      if (layer.op === 'avgpool') {
        // Sum, times round(2^16 / window) (public), truncated: the mean at ±1 ulp plus the constant's rounding.
        const sum = windows.reduce((acc, v) => add(acc, v));
        const scale = BigInt(Math.round(SCALE / windows.length));
        x = truncate(party, sum.map((v) => v * scale) as BigInt64Array);
      } else {
        // Tournament: max(a, b) = b + ReLU(a − b), every pair of a round in one batched comparison.
        let round = windows;
        while (round.length > 1) {
          const pairs = Math.floor(round.length / 2);
          const n = round[0]!.length;
          const diff = new BigInt64Array(pairs * n);
          for (let p = 0; p < pairs; p++) diff.set(sub(round[2 * p]!, round[2 * p + 1]!), p * n);
          const r = await relu(diff);
          const next = Array.from({ length: pairs }, (_, p) => add(round[2 * p + 1]!, r.subarray(p * n, (p + 1) * n)));
          if (round.length % 2 === 1) next.push(round.at(-1)!);
          round = next;
        }
        x = round[0]!;
      }
    }
  }
  return x;
}

function maskShare(masks: NonNullable<EvaluateOptions['masks']>, weight: number): BigInt64Array {
  return masks.b.get(weight) ?? missing(weight);
}

function missing(weight: number): never {
  throw new RangeError(`no mask share of weight ${weight}: the model's masks were not fetched or opened`);
}
