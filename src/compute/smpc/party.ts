// One share holder's side of an encrypted evaluation: the plan's layers on this party's shares, talking
// to the other share holder (openings) and the crypto provider (comparisons) through a channel. Both
// share holders run this with the same plan, batch, schedule and shared seed.

import { beaverMatmul, beaverMul, beaverOpen, beaverOpened, concat, ringOf } from './beaver';
import { maskCompare, signShare } from './compare';
import { parseBundle, type MatmulPart, type ReluPart } from './correlations';
import { add } from './ring';
import { scheduleOf, paramCount, rowSize, type SmpcPlan } from './plan';
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
}

/** Evaluates the plan on shares; returns this party's share of the output [batch, ...output shape]. */
export async function evaluateShare(o: EvaluateOptions): Promise<BigInt64Array> {
  const { plan, party, batch, channel } = o;
  if (o.params.length !== paramCount(plan)) throw new RangeError(`the parameter share holds ${o.params.length} values, the plan ${paramCount(plan)}`);
  if (o.input.length !== batch * rowSize(plan.input.shape)) throw new RangeError(`the input share holds ${o.input.length} values, not ${batch} rows of ${rowSize(plan.input.shape)}`);
  const schedule = scheduleOf(plan, batch);
  const parts = parseBundle(schedule, o.bundle);
  const offsets: number[] = [];
  plan.params.reduce((off, p) => { offsets.push(off); return off + p.size; }, 0);
  const paramOf = (i: number) => o.params.subarray(offsets[i]!, offsets[i]! + plan.params[i]!.size);
  let x = o.input;
  let step = 0;
  for (const layer of plan.layers) {
    o.signal?.throwIfAborted();
    if (layer.op === 'reshape') continue;
    const index = step++;
    if (layer.op === 'linear') {
      const t = parts[index] as MatmulPart;
      const w = paramOf(layer.weight);
      const mine = beaverOpen(x, w, t);
      const theirs = await channel.exchange(2 * index, mine);
      const { e, f } = beaverOpened(mine, theirs, x.length, w.length);
      x = truncate(party, beaverMatmul(party, e, f, t, batch, layer.in, layer.out));
      if (layer.bias !== undefined) {
        const b = paramOf(layer.bias);
        const withBias = new BigInt64Array(x.length);
        for (let i = 0; i < x.length; i++) withBias[i] = x[i]! + b[i % layer.out]!;
        x = withBias;
      }
    } else {
      const t = parts[index] as ReluPart;
      // Open c = x + r to the other share holder.
      const cMine = add(x, t.r);
      const cTheirs = ringOf(await channel.exchange(2 * index, concat(cMine)), x.length);
      const c = add(cMine, cTheirs);
      const { masked, gamma } = maskCompare(party, c, t.rBits, new SharedPrg(o.seed, `relu/${index}`));
      const fromProvider = ringOf(await channel.compare(index, masked), x.length);
      const positive = signShare(party, fromProvider, gamma);
      // ReLU(x) = x · (1 − MSB(x)): one elementwise Beaver product; the factor is 0/1, so no truncation.
      const mine = beaverOpen(x, positive, t.triple);
      const theirs = await channel.exchange(2 * index + 1, mine);
      const { e, f } = beaverOpened(mine, theirs, x.length, x.length);
      x = beaverMul(party, e, f, t.triple);
    }
  }
  return x;
}
