// A node's limits as a user meets them: sign-in backoff (per user and address, short on the loopback),
// per-user upload quotas and the up-front disk check, training requests refused before a job exists, and
// error messages that never show a server path. Real node on port 0; "remote" clients come from other
// loopback addresses (127.0.0.x) through a TCP proxy, and the sign-in clock is the node's option, so no test sleeps.

import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { GridClient } from '../../src/core/client';
import { GridError } from '../../src/core/errors';
import { TransferBegin } from '../../src/core/protocol/catalogue';
import type { SignInLimitOptions } from '../../src/node/signin-limits';
import { ADMIN_PASSWORD, failure, mlpModel, startTestNode, type TestNode } from '../helpers/node-fixtures';
import { startProxy } from '../helpers/proxy';
import { DIGITS } from '../helpers/training-fixtures';

const PASSWORD = 'a-fine-password';

/** A node whose sign-in limiter reads `clock.t`; only 127.0.0.1 counts as local, so 127.0.0.x (x > 1) is "remote". */
async function limitedNode(t: TestContext, limits: SignInLimitOptions = {}): Promise<{ tn: TestNode; clock: { t: number }; from(address: string): Promise<GridClient> }> {
  const clock = { t: Date.UTC(2030, 0, 1) };
  const tn = await startTestNode({ signInLimits: { now: () => clock.t, isLocal: (a) => a === '127.0.0.1' || a === '::ffff:127.0.0.1', ...limits } });
  const clients: GridClient[] = [];
  const proxies: { close(): Promise<void> }[] = [];
  t.after(async () => {
    for (const c of clients) c.dispose();
    for (const p of proxies) await p.close();
    await tn.close();
  });
  const admin = await tn.admin();
  for (const u of ['alice', 'bob', 'carol']) await admin.addUser(u, PASSWORD);
  return {
    tn,
    clock,
    async from(address: string) {
      let url = tn.node.url;
      if (address !== '127.0.0.1') {
        const proxy = await startProxy(tn.node.port, '127.0.0.1', address);
        proxies.push(proxy);
        url = `ws://127.0.0.1:${proxy.port}`;
      }
      const c = await GridClient.connect(url, { reconnect: { maxAttempts: 0 } });
      clients.push(c);
      return c;
    },
  };
}

test('200 wrong passwords: refused with RATE_LIMITED and retry_after_ms, the right one too until then; other addresses and users are not locked out', async (t) => {
  const { clock, from } = await limitedNode(t);
  const attacker = await from('127.0.0.2');
  const codes = new Map<string, number>();
  let last: GridError | undefined;
  const started = performance.now();
  for (let i = 0; i < 200; i++) {
    last = await failure(attacker.authenticate({ username: 'alice', password: `guess-${i}` }));
    codes.set(last.code, (codes.get(last.code) ?? 0) + 1);
  }
  const ms = performance.now() - started;
  assert.deepEqual(Object.fromEntries(codes), { GRID_ERR_BAD_CREDENTIALS: 5, GRID_ERR_RATE_LIMITED: 195 });
  const retry = last!.details?.retry_after_ms;
  assert.equal(typeof retry, 'number');
  assert.ok((retry as number) > 0 && (retry as number) <= 1000, `first lockout ${String(retry)} ms`);
  assert.match(last!.message, /too many failed sign-ins for "alice" from 127\.0\.0\.2; try again in 1 s/);
  t.diagnostic(`200 attempts took ${Math.round(ms)} ms (5 reached the password check)`);

  const right = await failure(attacker.authenticate({ username: 'alice', password: PASSWORD }));
  assert.equal(right.code, 'GRID_ERR_RATE_LIMITED', 'the right password is refused while locked');

  // The lockout is of alice from that address: alice elsewhere, and bob from the same address, sign in.
  assert.equal((await (await from('127.0.0.1')).authenticate({ username: 'alice', password: PASSWORD })).user, 'alice');
  assert.equal((await (await from('127.0.0.3')).authenticate({ username: 'alice', password: PASSWORD })).user, 'alice');
  assert.equal((await (await from('127.0.0.2')).authenticate({ username: 'bob', password: PASSWORD })).user, 'bob');

  clock.t += retry as number;
  assert.equal((await attacker.authenticate({ username: 'alice', password: PASSWORD })).user, 'alice', 'accepted once the lockout has passed');
});

test('24 clients of one service signing in as one user from one address at once all get in; 24 guesses sent at once get 5 checked', async (t) => {
  const { tn, from } = await limitedNode(t);
  // One service starting 24 workers together, behind one address: none is refused, none is locked out.
  const service = await Promise.all(Array.from({ length: 24 }, () => from('127.0.0.2')));
  const started = performance.now();
  const sessions = await Promise.all(service.map((c) => c.authenticate({ username: 'alice', password: PASSWORD })));
  t.diagnostic(`24 sign-ins at once took ${Math.round(performance.now() - started)} ms (at most 5 checked at a time)`);
  assert.deepEqual(sessions.map((s) => s.user), Array(24).fill('alice'));
  assert.equal(new Set(sessions.map((s) => s.token)).size, 24, 'each client has its own session');
  assert.equal(tn.node.auth.limiter.inFlight, 0, 'nothing left in flight');
  // And the user is not locked out afterwards.
  assert.equal((await (await from('127.0.0.2')).authenticate({ username: 'alice', password: PASSWORD })).user, 'alice');

  // 24 wrong passwords for bob sent together: only the free 5 reach the password check; the lock they set refuses the rest.
  const guessers = await Promise.all(Array.from({ length: 24 }, () => from('127.0.0.3')));
  const guessed = performance.now();
  const results = await Promise.allSettled(guessers.map((c, i) => c.authenticate({ username: 'bob', password: `guess-${i}` })));
  t.diagnostic(`24 guesses at once answered in ${Math.round(performance.now() - guessed)} ms`);
  const codes = new Map<string, number>();
  for (const r of results) {
    assert.equal(r.status, 'rejected');
    const code = ((r as PromiseRejectedResult).reason as GridError).code;
    codes.set(code, (codes.get(code) ?? 0) + 1);
  }
  assert.deepEqual(Object.fromEntries(codes), { GRID_ERR_BAD_CREDENTIALS: 5, GRID_ERR_RATE_LIMITED: 19 });
  const refused = results.map((r) => (r as PromiseRejectedResult).reason as GridError).find((e) => e.code === 'GRID_ERR_RATE_LIMITED')!;
  assert.ok((refused.details!.retry_after_ms as number) > 0);
  assert.equal((await failure(guessers[0]!.authenticate({ username: 'bob', password: PASSWORD }))).code, 'GRID_ERR_RATE_LIMITED', 'bob from that address is locked');
  assert.equal(tn.node.auth.limiter.inFlight, 0);
});

test('sign-ins waiting for a user\'s attempts in flight are bounded: past the queue they are refused with RATE_LIMITED at once', async (t) => {
  const { tn, from } = await limitedNode(t, { pairFreeFailures: 2, maxWaiting: 3 });
  const clients = await Promise.all(Array.from({ length: 12 }, () => from('127.0.0.4')));
  // 2 checked at once, 3 waiting; the other 7 are refused without a check (so their right password does not count).
  const results = await Promise.allSettled(clients.map((c) => c.authenticate({ username: 'carol', password: PASSWORD })));
  const ok = results.filter((r) => r.status === 'fulfilled').length;
  const refused = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected').map((r) => r.reason as GridError);
  assert.equal(ok, 5);
  assert.equal(refused.length, 7);
  for (const e of refused) {
    assert.equal(e.code, 'GRID_ERR_RATE_LIMITED');
    assert.match(e.message, /too many sign-ins in flight for "carol" from 127\.0\.0\.4 \(3 already waiting\); try again in 1 s/);
    assert.equal(e.details!.retry_after_ms, 1000);
  }
  // They were not failures: carol signs in again at once.
  assert.equal((await clients[0]!.authenticate({ username: 'carol', password: PASSWORD })).user, 'carol');
  assert.equal(tn.node.auth.limiter.inFlight, 0);
});

test('remote lockouts double with every further failure up to minutes; loopback ones stop at seconds', async (t) => {
  const { clock, from } = await limitedNode(t);
  const remote = await from('127.0.0.4');
  const local = await from('127.0.0.1');
  const lockouts = async (client: GridClient, user: string, rounds: number): Promise<number[]> => {
    const seen: number[] = [];
    for (let i = 0; i < 5; i++) await failure(client.authenticate({ username: user, password: 'wrong-password' }));
    for (let i = 0; i < rounds; i++) {
      const e = await failure(client.authenticate({ username: user, password: 'wrong-password' }));
      assert.equal(e.code, 'GRID_ERR_RATE_LIMITED');
      const ms = e.details!.retry_after_ms as number;
      seen.push(ms);
      clock.t += ms; // the next wrong password comes right after the lockout: it counts, and doubles the next one
      assert.equal((await failure(client.authenticate({ username: user, password: 'wrong-password' }))).code, 'GRID_ERR_BAD_CREDENTIALS');
    }
    return seen;
  };
  const r = await lockouts(remote, 'carol', 12);
  assert.deepEqual(r, [1000, 2000, 4000, 8000, 16000, 32000, 64000, 128000, 256000, 512000, 900000, 900000]);
  const l = await lockouts(local, 'admin', 6);
  assert.deepEqual(l, [1000, 2000, 4000, 5000, 5000, 5000], 'the local admin waits at most 5 s');
  clock.t += 5000;
  assert.equal((await local.authenticate({ username: 'admin', password: ADMIN_PASSWORD })).user, 'admin');
});

test('the loopback admin, with the default limits, is locked out for seconds at most however many wrong passwords', async (t) => {
  const clock = { t: Date.UTC(2030, 0, 1) };
  const tn = await startTestNode({ signInLimits: { now: () => clock.t } });
  t.after(() => tn.close());
  const c = await tn.anonymous();
  let longest = 0;
  let counted = 0;
  for (let i = 0; i < 60; i++) {
    const e = await failure(c.authenticate({ username: 'admin', password: `guess-${i}` }));
    if (e.code === 'GRID_ERR_BAD_CREDENTIALS') counted++;
    // Let each lockout pass, so the guesses keep counting against the admin.
    if (e.code === 'GRID_ERR_RATE_LIMITED') {
      longest = Math.max(longest, e.details!.retry_after_ms as number);
      clock.t += e.details!.retry_after_ms as number;
    }
  }
  assert.ok(counted >= 30, `${counted} wrong passwords counted`);
  assert.equal(longest, 5000, 'the longest loopback lockout is 5 s');
  assert.equal((await failure(c.authenticate({ username: 'admin', password: 'one-more-guess' }))).code, 'GRID_ERR_BAD_CREDENTIALS');
  assert.equal((await failure(c.authenticate({ username: 'admin', password: ADMIN_PASSWORD }))).code, 'GRID_ERR_RATE_LIMITED');
  clock.t += 5000;
  assert.equal((await c.authenticate({ username: 'admin', password: ADMIN_PASSWORD })).user, 'admin');
});

test('guessing many user names or session tokens from one address locks that address, not others', async (t) => {
  const { from } = await limitedNode(t);
  const sprayer = await from('127.0.0.5');
  const codes: string[] = [];
  for (let i = 0; i < 25; i++) codes.push((await failure(sprayer.authenticate({ username: `user${i}`, password: 'password1' }))).code);
  assert.deepEqual(codes.slice(0, 20), Array(20).fill('GRID_ERR_BAD_CREDENTIALS'));
  assert.deepEqual(codes.slice(20), Array(5).fill('GRID_ERR_RATE_LIMITED'));
  const e = await failure(sprayer.authenticate({ username: 'bob', password: PASSWORD }));
  assert.equal(e.code, 'GRID_ERR_RATE_LIMITED');
  assert.match(e.message, /from 127\.0\.0\.5; try again in/);

  const tokens = await from('127.0.0.6');
  const tokenCodes: string[] = [];
  for (let i = 0; i < 25; i++) tokenCodes.push((await failure(tokens.authenticate({ token: `not-a-token-${i}` }))).code);
  assert.equal(tokenCodes.filter((c) => c === 'GRID_ERR_RATE_LIMITED').length, 5, 'wrong tokens count too');
  const bob = await (await from('127.0.0.1')).authenticate({ username: 'bob', password: PASSWORD });
  assert.equal((await failure(tokens.authenticate({ token: bob.token }))).code, 'GRID_ERR_RATE_LIMITED', 'a locked address waits even with a valid token');
  assert.equal((await (await from('127.0.0.7')).authenticate({ token: bob.token })).user, 'bob');
});

test('one user\'s uploads in flight past their quota get QUOTA_EXCEEDED; another user\'s upload still begins', async (t) => {
  const tn = await startTestNode({ uploadQuotas: { maxUploadsPerOwner: 8, maxBytesPerOwner: 4 * 1024 ** 3 } });
  t.after(() => tn.close());
  const admin = await tn.admin();
  await admin.addUser('alice', PASSWORD);
  await admin.addUser('bob', PASSWORD);
  const alice = await tn.anonymous();
  await alice.authenticate({ username: 'alice', password: PASSWORD });
  const bob = await tn.anonymous();
  await bob.authenticate({ username: 'bob', password: PASSWORD });

  // The original report: 64 transfer-begin by one user used to fill the node for everyone.
  const results = await Promise.allSettled(Array.from({ length: 64 }, () => alice.socket.request(TransferBegin, { size: 1000, chunk_size: 1000 })));
  assert.equal(results.filter((r) => r.status === 'fulfilled').length, 8);
  const refused = results.find((r): r is PromiseRejectedResult => r.status === 'rejected')!.reason as GridError;
  assert.equal(refused.code, 'GRID_ERR_QUOTA_EXCEEDED');
  assert.equal(refused.details?.quota, 'uploads_per_user');
  assert.match(refused.message, /quota uploads_per_user: user alice already has 8 uploads in flight/);

  assert.ok((await bob.socket.request(TransferBegin, { size: 1000, chunk_size: 1000 })).transfer_id, 'bob still begins an upload');
  const tooBig = await failure(bob.socket.request(TransferBegin, { size: 4 * 1024 ** 3, chunk_size: 1024 * 1024 }));
  assert.equal(tooBig.code, 'GRID_ERR_QUOTA_EXCEEDED');
  assert.equal(tooBig.details?.quota, 'upload_bytes_per_user');
  // And bob's whole flow still works: a model is uploaded and hosted.
  assert.equal((await bob.hostModel(mlpModel(4, 3, 2), { id: 'bobs-model' })).owner, 'bob');
});

test('an upload that does not fit the disk is refused at once with INSUFFICIENT_STORAGE; no file is created', async (t) => {
  const tn = await startTestNode({ maxUploadBytes: 2 ** 60 });
  t.after(() => tn.close());
  const admin = await tn.admin();
  const started = performance.now();
  const e = await failure(admin.socket.request(TransferBegin, { size: 2 ** 50, chunk_size: 1024 * 1024 }));
  const ms = performance.now() - started;
  assert.equal(e.code, 'GRID_ERR_INSUFFICIENT_STORAGE');
  assert.match(e.message, /^the node's disk has [\d.]+ [KMGT]iB free; an upload of 1 PiB needs 1 PiB/);
  assert.ok((e.details!.needed_bytes as number) > (e.details!.free_bytes as number));
  assert.ok(ms < 2000, `answered in ${Math.round(ms)} ms`);
  assert.deepEqual(fs.readdirSync(path.join(tn.dir, 'uploads')), []);
  t.diagnostic(`1 PiB refused in ${Math.round(ms)} ms`);
});

test('train with output_model_id ../evil (or a bad model_id / dataset_id, or a missing dataset) is refused at once, and no job exists', async (t) => {
  const tn = await startTestNode({ datasets: [{ name: 'digits', path: DIGITS }] });
  t.after(() => tn.close());
  const admin = await tn.admin();
  await admin.hostModel(mlpModel(64, 8, 10), { id: 'digits-mlp' });
  const base = { model: 'digits-mlp', dataset_id: 'digits', loss: 'cross_entropy', optimizer: 'sgd', epochs: 1, batch_size: 32 } as const;
  const cases: [Record<string, unknown>, string, string][] = [
    [{ output_model_id: '../evil' }, 'GRID_ERR_INVALID_ID', 'output_model_id'],
    [{ model: '../../meta.db' }, 'GRID_ERR_INVALID_ID', 'model_id'],
    [{ dataset_id: '../digits' }, 'GRID_ERR_INVALID_ID', 'dataset_id'],
    [{ dataset_id: 'nope' }, 'GRID_ERR_NOT_FOUND', 'dataset_id'],
    [{ model: 'nope' }, 'GRID_ERR_NOT_FOUND', 'model_id'],
    [{ output_model_id: 'digits-mlp' }, 'GRID_ERR_ALREADY_EXISTS', 'output_model_id'],
    [{ output: 'update', allow_download: true }, 'GRID_ERR_INVALID_MESSAGE', 'allow_download'],
  ];
  for (const [change, code, field] of cases) {
    const started = performance.now();
    const e = await failure(admin.training.start({ ...base, ...change } as never));
    assert.equal(e.code, code, `${JSON.stringify(change)}: ${e.message}`);
    assert.equal(e.details?.field, field);
    assert.ok(e.message.startsWith(field), e.message);
    assert.ok(performance.now() - started < 2000);
  }
  assert.deepEqual(await admin.training.listJobs(), [], 'no job was queued');
  // An uploaded model named with a bad output id is not left behind in the uploads folder.
  assert.equal((await failure(admin.training.start({ ...base, model: mlpModel(64, 8, 10), output_model_id: '../evil' }))).code, 'GRID_ERR_INVALID_ID');
  assert.deepEqual(fs.readdirSync(path.join(tn.dir, 'uploads')), []);
});

test('errors from uploads, models and training name no server path', async (t) => {
  const tn = await startTestNode({ datasets: [{ name: 'digits', path: DIGITS }] });
  t.after(() => tn.close());
  const admin = await tn.admin();
  const messages: string[] = [];
  const seen = (e: GridError) => { messages.push(`${e.code}: ${e.message} ${JSON.stringify(e.details ?? {})}`); return e; };

  // Not a model: onnxruntime names the file it failed to load.
  seen(await failure(admin.hostModel(Buffer.from('these bytes are not an ONNX model'), { id: 'junk' })));
  // A hosted model whose blob vanished behind the node's back: read by training, inference and download.
  await admin.hostModel(mlpModel(64, 8, 10), { id: 'digits-mlp', allowDownload: true, allowRemoteInference: true });
  fs.rmSync(path.join(tn.dir, 'blobs'), { recursive: true, force: true });
  seen(await failure(admin.training.start({ model: 'digits-mlp', dataset_id: 'digits', loss: 'cross_entropy', optimizer: 'sgd', epochs: 1, batch_size: 32 })));
  seen(await failure(admin.runInference('digits-mlp', { x: { dtype: 'float32', dims: [1, 64], data: new Float32Array(64) } })));
  // The uploads folder replaced by a file: the upload cannot begin (used to fail at its commit naming the file).
  fs.rmSync(path.join(tn.dir, 'uploads'), { recursive: true, force: true });
  fs.writeFileSync(path.join(tn.dir, 'uploads'), 'not a folder');
  seen(await failure(admin.hostModel(mlpModel(4, 3, 2), { id: 'small' })));

  assert.equal(messages.length, 4);
  for (const m of messages) {
    assert.ok(!m.includes(tn.dir) && !m.includes(fs.realpathSync(tn.dir)), `a server path reached the client: ${m}`);
    assert.doesNotMatch(m, /\/(tmp|home|var|Users)\//, m);
  }
  t.diagnostic(messages.join('\n'));
});
