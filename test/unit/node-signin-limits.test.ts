// The sign-in limiter on its own, with attempts settled by hand: how many guesses can be in flight at once,
// what waits, and what a success or a failure lets through. The clock is an option; no test sleeps.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { GridError } from '../../src/core/errors';
import { SignInLimiter, type SignInAttempt } from '../../src/node/signin-limits';

const T0 = Date.UTC(2030, 0, 1);

/** Settles once the microtask queue has drained, so an attempt that can be admitted has been. */
const drained = () => new Promise<void>((resolve) => setImmediate(resolve));

/** Starts `n` attempts; `admitted` fills as they are let in, `refused` as they are turned away. */
function launch(limiter: SignInLimiter, n: number, user: string | undefined, address: string) {
  const admitted: SignInAttempt[] = [];
  const refused: GridError[] = [];
  const settled = Array.from({ length: n }, () => limiter.begin(user, address).then((a) => { admitted.push(a); }, (e: GridError) => { refused.push(e); }));
  return { admitted, refused, settled };
}

test('only the free number of attempts for one user and address are in flight at once; the rest wait', async () => {
  const limiter = new SignInLimiter({ now: () => T0 });
  const { admitted, refused } = launch(limiter, 24, 'alice', '203.0.113.7');
  await drained();
  assert.equal(admitted.length, 5);
  assert.equal(refused.length, 0);
  assert.equal(limiter.inFlight, 5);
  // A success resets the pair: the waiters go in, five at a time, and all succeed.
  while (admitted.length > 0) {
    admitted.shift()!.succeeded();
    await drained();
  }
  assert.equal(refused.length, 0);
  assert.equal(limiter.inFlight, 0);
});

test('failed guesses in flight lock the pair; their waiters are refused and never checked', async () => {
  const limiter = new SignInLimiter({ now: () => T0 });
  const { admitted, refused } = launch(limiter, 24, 'alice', '203.0.113.7');
  await drained();
  const checked = admitted.splice(0);
  assert.equal(checked.length, 5);
  for (const a of checked.slice(0, 4)) a.failed();
  await drained();
  assert.equal(admitted.length, 0, '4 failures + 1 in flight: nothing more is admitted');
  checked[4]!.failed();
  await drained();
  assert.equal(admitted.length, 0);
  assert.equal(refused.length, 19);
  for (const e of refused) {
    assert.equal(e.code, 'GRID_ERR_RATE_LIMITED');
    assert.equal(e.details?.retry_after_ms, 1000);
  }
  // Settling twice changes nothing.
  checked[0]!.succeeded();
  await assert.rejects(limiter.begin('alice', '203.0.113.7'), (e: GridError) => e.code === 'GRID_ERR_RATE_LIMITED');
});

test('after a lockout passes, one attempt at a time is checked', async () => {
  const clock = { t: T0 };
  const limiter = new SignInLimiter({ now: () => clock.t });
  for (let i = 0; i < 5; i++) (await limiter.begin('bob', '203.0.113.8')).failed();
  clock.t += 1000;
  const { admitted, refused } = launch(limiter, 3, 'bob', '203.0.113.8');
  await drained();
  assert.equal(admitted.length, 1);
  admitted[0]!.failed();
  await drained();
  assert.equal(admitted.length, 1);
  assert.equal(refused.length, 2);
  assert.equal(refused[0]!.details?.retry_after_ms, 2000, 'the next lockout doubled');
});

test('the queue of waiting attempts is bounded, and so is the wait', async () => {
  const limiter = new SignInLimiter({ now: () => T0, pairFreeFailures: 1, maxWaiting: 2, maxWaitMs: 50 });
  const { admitted, refused, settled } = launch(limiter, 5, 'carol', '203.0.113.9');
  await drained();
  assert.equal(admitted.length, 1);
  assert.equal(refused.length, 2, 'past 2 waiting, refused at once');
  assert.match(refused[0]!.message, /too many sign-ins in flight for "carol" from 203\.0\.113\.9 \(2 already waiting\)/);
  // The two waiting give up after maxWaitMs (the limiter's own real timer, 50 ms).
  await Promise.all(settled);
  assert.equal(refused.length, 4);
  assert.match(refused[3]!.message, /waited 50 ms for them/);
  admitted[0]!.succeeded();
  assert.equal(limiter.inFlight, 0);
});

test('tokens count only against the address, whose failures a success does not reset', async () => {
  const limiter = new SignInLimiter({ now: () => T0, addressFreeFailures: 3 });
  for (let i = 0; i < 2; i++) (await limiter.begin(undefined, '198.51.100.1')).failed();
  (await limiter.begin('dave', '198.51.100.1')).succeeded();
  (await limiter.begin(undefined, '198.51.100.1')).failed();
  await assert.rejects(limiter.begin('erin', '198.51.100.1'), /too many failed sign-ins from 198\.51\.100\.1/);
});
