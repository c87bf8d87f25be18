// Two share holders and a crypto provider in one process, joined by in-memory channels: for testing the
// protocol's arithmetic without sockets (the node tests run it over real links).

import { deal, evaluateShare, maskOf, providerCompare, ringOf, scheduleOf, weightIndices, type EvaluateOptions, type PartyChannel, type SmpcPlan } from '../../src/compute/smpc';
import { randomBytes } from 'node:crypto';

function deferred<T>() {
  let resolve!: (v: T) => void;
  const promise = new Promise<T>((r) => { resolve = r; });
  return { promise, resolve };
}

type Masks = NonNullable<EvaluateOptions['masks']>;

/** The two holders' mask state for a model, as the provider's mask key `key` derives it (masks.ts). */
export function localMasks(plan: SmpcPlan, key: Uint8Array): { key: Uint8Array; parties: [Masks, Masks] } {
  const parties: [Masks, Masks] = [{ b: new Map(), f: new Map(), open: true }, { b: new Map(), f: new Map(), open: true }];
  for (const w of weightIndices(plan)) {
    const { shares } = maskOf(key, w, plan.params[w]!.size);
    parties[0].b.set(w, shares[0]);
    parties[1].b.set(w, shares[1]);
  }
  return { key, parties };
}

/** Runs both parties on their shares; returns both output shares. With `masks`, weights are masked once (opened on the first call). */
export async function evaluateLocally(plan: SmpcPlan, batch: number, params: [BigInt64Array, BigInt64Array], input: [BigInt64Array, BigInt64Array], masks?: ReturnType<typeof localMasks>): Promise<[BigInt64Array, BigInt64Array]> {
  const { bundles, secrets } = deal(scheduleOf(plan, batch, masks !== undefined), masks && ((i, size) => maskOf(masks.key, i, size).b));
  const seed = randomBytes(32);
  const boxes = new Map<string, ReturnType<typeof deferred<Uint8Array>>>();
  const box = (k: string) => { let b = boxes.get(k); if (!b) { b = deferred(); boxes.set(k, b); } return b; };
  const channel = (party: 0 | 1): PartyChannel => ({
    exchange(tag, mine) {
      box(`x${tag}/${party}`).resolve(mine);
      return box(`x${tag}/${1 - party}`).promise;
    },
    async compare(step, masked) {
      box(`c${step}/${party}`).resolve(masked);
      if (party === 0) {
        const [m0, m1] = await Promise.all([box(`c${step}/0`).promise, box(`c${step}/1`).promise]);
        const [s0, s1] = providerCompare(m0, m1, secrets.get(step)!);
        box(`r${step}/0`).resolve(new Uint8Array(s0.buffer));
        box(`r${step}/1`).resolve(new Uint8Array(s1.buffer));
      }
      return box(`r${step}/${party}`).promise;
    },
  });
  const run = (party: 0 | 1) => evaluateShare({ plan, party, params: params[party], input: input[party], batch, bundle: bundles[party], seed, channel: channel(party), ...(masks && { masks: masks.parties[party] }) });
  const [y0, y1] = await Promise.all([run(0), run(1)]);
  if (masks) for (const m of masks.parties) m.open = false;
  return [ringOf(new Uint8Array(y0.buffer, y0.byteOffset, y0.byteLength)), y1];
}
