// Two share holders and a crypto provider in one process, joined by in-memory channels: for testing the
// protocol's arithmetic without sockets (the node tests run it over real links).

import { deal, evaluateShare, providerCompare, ringOf, scheduleOf, type PartyChannel, type SmpcPlan } from '../../src/compute/smpc';
import { randomBytes } from 'node:crypto';

function deferred<T>() {
  let resolve!: (v: T) => void;
  const promise = new Promise<T>((r) => { resolve = r; });
  return { promise, resolve };
}

/** Runs both parties on their shares; returns both output shares. */
export async function evaluateLocally(plan: SmpcPlan, batch: number, params: [BigInt64Array, BigInt64Array], input: [BigInt64Array, BigInt64Array]): Promise<[BigInt64Array, BigInt64Array]> {
  const { bundles, secrets } = deal(scheduleOf(plan, batch));
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
  const run = (party: 0 | 1) => evaluateShare({ plan, party, params: params[party], input: input[party], batch, bundle: bundles[party], seed, channel: channel(party) });
  const [y0, y1] = await Promise.all([run(0), run(1)]);
  return [ringOf(new Uint8Array(y0.buffer, y0.byteOffset, y0.byteLength)), y1];
}
