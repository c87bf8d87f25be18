// Sign-in failures counted across the replicas of one node (PostgreSQL): a guesser spreading attempts over
// replicas gets the free failures once, not once per replica, and a success on one replica starts its pair
// afresh on all. Two real replicas (GridNode, each its own data dir and connection pool) on one real
// PostgreSQL started by the test; the sign-in clock is an option of each, so no test sleeps. Clients come
// "from" 203.0.113.x through X-Forwarded-For, which the replicas trust from 127.0.0.1 as they would from a
// load balancer (docs/replicas.md).

import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { GridClient } from '../../src/core/client';
import { GridNode } from '../../src/node/server';
import { ADMIN_PASSWORD, failure, tempDir } from '../helpers/node-fixtures';
import { postgresUnavailable } from '../helpers/postgres';
import { withPostgres } from '../helpers/replicas';

const PASSWORD = 'a-fine-password';
const skip = postgresUnavailable();
if (skip !== undefined) process.stdout.write(`# sign-in replica tests skipped: ${skip}\n`);

async function twoReplicas(t: TestContext) {
  const pg = await withPostgres(t);
  const database = await pg.createDatabase();
  const clock = { t: Date.UTC(2030, 0, 1) };
  const clients: GridClient[] = [];
  const replica = async () => {
    const dataDir = tempDir('grid-signin-replica-');
    const node = await GridNode.start({ port: 0, dataDir, database, adminPassword: ADMIN_PASSWORD, processMetrics: false, trustProxy: ['127.0.0.1'], signInLimits: { now: () => clock.t } });
    t.after(async () => { await node.close(); fs.rmSync(dataDir, { recursive: true, force: true }); });
    return node;
  };
  const a = await replica();
  const b = await replica();
  t.after(() => { for (const c of clients) c.dispose(); });
  /** A client of `node` that the load balancer says is `address`. */
  const from = async (node: GridNode, address: string) => {
    const c = await GridClient.connect(node.url, { reconnect: { maxAttempts: 0 }, connect: { headers: { 'x-forwarded-for': address } } });
    clients.push(c);
    return c;
  };
  const admin = await GridClient.connect(a.url, { reconnect: { maxAttempts: 0 }, credentials: { username: 'admin', password: ADMIN_PASSWORD } });
  clients.push(admin);
  await admin.addUser('alice', PASSWORD);
  return { a, b, clock, from };
}

test('wrong passwords spread over two replicas: the free 5 in all, then alice from that address is locked on both', { skip, timeout: 120_000 }, async (t) => {
  const { a, b, clock, from } = await twoReplicas(t);
  const onA = await from(a, '203.0.113.7');
  const onB = await from(b, '203.0.113.7');
  const codes: string[] = [];
  // Alternating replicas, as a load balancer would spread one guesser's connections.
  for (let i = 0; i < 12; i++) codes.push((await failure((i % 2 === 0 ? onA : onB).authenticate({ username: 'alice', password: `guess-${i}` }))).code);
  assert.deepEqual(codes, [...Array(5).fill('GRID_ERR_BAD_CREDENTIALS'), ...Array(7).fill('GRID_ERR_RATE_LIMITED')]);
  // Failures on A lock alice on B, the right password too, with the same wait.
  const lockedA = await failure(onA.authenticate({ username: 'alice', password: PASSWORD }));
  const lockedB = await failure(onB.authenticate({ username: 'alice', password: PASSWORD }));
  assert.equal(lockedB.code, 'GRID_ERR_RATE_LIMITED');
  assert.match(lockedB.message, /too many failed sign-ins for "alice" from 203\.0\.113\.7; try again in 1 s/);
  assert.equal(lockedA.details!.retry_after_ms, lockedB.details!.retry_after_ms);
  // Another client of the same service, elsewhere, is not locked out on either replica.
  assert.equal((await (await from(b, '203.0.113.8')).authenticate({ username: 'alice', password: PASSWORD })).user, 'alice');

  // After the lockout, one more wrong password on B counts (doubling the next lockout on A too); then a
  // success on A starts the pair afresh on both: 4 wrong passwords on B are checked again.
  clock.t += lockedB.details!.retry_after_ms as number;
  assert.equal((await failure(onB.authenticate({ username: 'alice', password: 'wrong-again' }))).code, 'GRID_ERR_BAD_CREDENTIALS');
  const doubled = await failure(onA.authenticate({ username: 'alice', password: PASSWORD }));
  assert.equal(doubled.details!.retry_after_ms, 2000);
  clock.t += 2000;
  assert.equal((await onA.authenticate({ username: 'alice', password: PASSWORD })).user, 'alice');
  for (let i = 0; i < 4; i++) assert.equal((await failure(onB.authenticate({ username: 'alice', password: `after-${i}` }))).code, 'GRID_ERR_BAD_CREDENTIALS');
  assert.equal((await failure(onA.authenticate({ username: 'alice', password: 'the-fifth' }))).code, 'GRID_ERR_BAD_CREDENTIALS');
  assert.equal((await failure(onB.authenticate({ username: 'alice', password: PASSWORD }))).code, 'GRID_ERR_RATE_LIMITED');
});

test('an address spraying user names over two replicas is locked on both after its 20 free failures', { skip, timeout: 120_000 }, async (t) => {
  const { a, b, from } = await twoReplicas(t);
  const onA = await from(a, '198.51.100.9');
  const onB = await from(b, '198.51.100.9');
  const codes: string[] = [];
  for (let i = 0; i < 30; i++) codes.push((await failure((i % 2 === 0 ? onA : onB).authenticate({ username: `user${i}`, password: 'password1' }))).code);
  assert.equal(codes.filter((c) => c === 'GRID_ERR_BAD_CREDENTIALS').length, 20);
  const e = await failure(onB.authenticate({ token: 'not-a-token' }));
  assert.equal(e.code, 'GRID_ERR_RATE_LIMITED');
  assert.match(e.message, /from 198\.51\.100\.9; try again in/);
});
