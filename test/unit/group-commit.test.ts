// GroupCommit over a real database file: a batch is answered after its COMMIT, and a committed hook that
// throws (a listener of the FL engine's events, say) still leaves every caller of the batch answered.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as path from 'node:path';
import { MetaDb } from '../../src/node/store/db';
import { GroupCommit } from '../../src/node/store/group-commit';
import { tempDir } from '../helpers/node-fixtures';

test('a committed hook that throws: the batch stays committed and every caller is still answered', async () => {
  const db = new MetaDb(path.join(tempDir('grid-group-commit-'), 'meta.db'));
  try {
    db.run('CREATE TABLE t (v INTEGER)');
    let hookCalls = 0;
    const commits = new GroupCommit(db, { committed: () => { hookCalls++; throw new Error('a listener failed'); } });
    const a = commits.run(() => db.run('INSERT INTO t (v) VALUES (1)'));
    const b = commits.run(() => { throw new Error('b refused'); });
    const c = commits.run(() => db.run('INSERT INTO t (v) VALUES (3)'));
    // flush is what the queued setImmediate calls; the hook's error reaches it, after the callers are settled.
    assert.throws(() => commits.flush(), /a listener failed/);
    assert.equal(hookCalls, 1);
    assert.equal(await a, 1);
    await assert.rejects(b, /b refused/);
    assert.equal(await c, 1);
    assert.deepEqual(db.all('SELECT v FROM t ORDER BY v').map((r) => r.v), [1, 3]);
  } finally {
    db.close();
  }
});
