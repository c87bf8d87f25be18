// The authenticate reply names the session's role: the extension's pickers offer an admin every model
// and an ordinary user only what the model's flags allow (src/extension/connection.ts mayUse).
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { ADMIN_PASSWORD, startTestNode, type TestNode } from '../helpers/node-fixtures';

let node: TestNode;
before(async () => { node = await startTestNode(); });
after(() => node.close());

test('an admin signs in as role "admin", an added user as role "user"', async () => {
  const admin = await node.admin();
  assert.equal((await admin.authenticate({ username: 'admin', password: ADMIN_PASSWORD })).role, 'admin');
  await admin.addUser('alice', 'alice-password-1');
  const anon = await node.anonymous();
  assert.equal((await anon.authenticate({ username: 'alice', password: 'alice-password-1' })).role, 'user');
});
